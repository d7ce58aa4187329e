package structs

import (
	"errors"
	"fmt"
)

// Sentinel errors of the catalog and the RPC layer. Match them with errors.Is;
// across the internal RPC they travel as an ErrorCode and are rebuilt.
var (
	// ErrNoLeader means no server currently knows a leader, so a write or a
	// consistent read cannot be served. Retry later.
	ErrNoLeader = errors.New("no cluster leader")
	// ErrNotLeader means this server is not the leader and cannot forward.
	ErrNotLeader = errors.New("not the leader")
	// ErrUnknownMethod means the RPC method name is not served.
	ErrUnknownMethod = errors.New("unknown RPC method")
	// ErrShutdown means the server is shutting down.
	ErrShutdown = errors.New("server shutting down")
	// ErrNotFound means the named object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUnknownDatacenter means a request named a datacenter this cluster does not serve.
	ErrUnknownDatacenter = errors.New("unknown datacenter")
	// ErrLeadershipLost means the leader lost its leadership while a write
	// was being committed: the write may or may not have been applied, so
	// it is not sent again on the caller's behalf.
	ErrLeadershipLost = errors.New("leadership lost while committing the write; it may or may not have been applied")
	// ErrReplyLost means the connection to the server that was serving a
	// request was lost after the request was sent and before its reply:
	// the request may have run, so a write is not sent again on the
	// caller's behalf unless it is idempotent.
	ErrReplyLost = errors.New("connection lost before the reply; the request may or may not have run")
	// ErrConflict means a write would create something that exists already
	// (an intention for the same source and destination). The HTTP API
	// answers it with 409.
	ErrConflict = errors.New("conflict")
)

// ValidationError says that a request is malformed: which field, and why.
// The HTTP API answers it with 400; it never reaches the Raft log.
type ValidationError struct {
	// Field names the offending field in the API's spelling, e.g. "Service.Port".
	Field string
	// Reason says what is wrong and what is expected.
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
}

// Invalid returns a *ValidationError for field.
func Invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ErrorCode names an error class on the wire, so the receiving side can
// rebuild a sentinel instead of matching strings.
type ErrorCode string

// Error codes carried by the internal RPC.
const (
	CodeNone              ErrorCode = ""
	CodeNoLeader          ErrorCode = "no-leader"
	CodeNotLeader         ErrorCode = "not-leader"
	CodeUnknownMethod     ErrorCode = "unknown-method"
	CodeShutdown          ErrorCode = "shutdown"
	CodeNotFound          ErrorCode = "not-found"
	CodeUnknownDatacenter ErrorCode = "unknown-datacenter"
	CodeConflict          ErrorCode = "conflict"
	CodeLeadershipLost    ErrorCode = "leadership-lost"
	CodeReplyLost         ErrorCode = "reply-lost"
	CodeValidation        ErrorCode = "validation"
	CodeInternal          ErrorCode = "internal"
)

var codeSentinels = map[ErrorCode]error{
	CodeNoLeader:          ErrNoLeader,
	CodeNotLeader:         ErrNotLeader,
	CodeUnknownMethod:     ErrUnknownMethod,
	CodeShutdown:          ErrShutdown,
	CodeNotFound:          ErrNotFound,
	CodeUnknownDatacenter: ErrUnknownDatacenter,
	CodeConflict:          ErrConflict,
	CodeLeadershipLost:    ErrLeadershipLost,
	CodeReplyLost:         ErrReplyLost,
}

// CodeOf returns the wire code of err.
func CodeOf(err error) ErrorCode {
	if err == nil {
		return CodeNone
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		return CodeValidation
	}
	for code, s := range codeSentinels {
		if errors.Is(err, s) {
			return code
		}
	}
	return CodeInternal
}

// RemoteError is an error received over the internal RPC. It keeps the remote
// message and unwraps to the sentinel its code names.
type RemoteError struct {
	Code    ErrorCode
	Message string
	// Field and Reason are set for CodeValidation.
	Field, Reason string
}

func (e *RemoteError) Error() string { return e.Message }

// Unwrap returns the sentinel or *ValidationError the code stands for.
func (e *RemoteError) Unwrap() error {
	if e.Code == CodeValidation {
		return &ValidationError{Field: e.Field, Reason: e.Reason}
	}
	return codeSentinels[e.Code]
}

// ToRemote turns err into its wire form.
func ToRemote(err error) *RemoteError {
	if err == nil {
		return nil
	}
	re := &RemoteError{Code: CodeOf(err), Message: err.Error()}
	var ve *ValidationError
	if errors.As(err, &ve) {
		re.Field, re.Reason = ve.Field, ve.Reason
	}
	return re
}
