package proxymgr

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// ListenerError says that a listener of a sidecar's proxy cannot be bound,
// so the sidecar's registration is refused. It matches structs.ErrConflict
// when something holds the address (the HTTP API answers 409), and is a
// *structs.ValidationError when the address is not one this host can bind
// (400); other failures (out of file descriptors) are neither.
type ListenerError struct {
	// Sidecar is the service ID of the sidecar.
	Sidecar string
	// Listener is "public", or "upstream NAME" for the listener of the
	// upstream with destination NAME.
	Listener string
	// Addr is the host:port asked for.
	Addr string
	// Err is net.Listen's error.
	Err error
	// holder names what of this agent holds the address, or is "".
	holder string
}

func (e *ListenerError) Error() string {
	listener := e.Listener
	if name, ok := strings.CutPrefix(listener, "upstream "); ok {
		listener = fmt.Sprintf("upstream %q", name)
	}
	reason := e.Err.Error()
	if se := (*os.SyscallError)(nil); errors.As(e.Err, &se) {
		reason = se.Err.Error()
	}
	if e.holder != "" {
		reason += " (by " + e.holder + ")"
	}
	return fmt.Sprintf("sidecar %q: cannot bind its %s listener on %s: %s", e.Sidecar, listener, e.Addr, reason)
}

// Unwrap returns Err and the class of the failure.
func (e *ListenerError) Unwrap() []error {
	var dns *net.DNSError
	switch {
	case errors.Is(e.Err, syscall.EADDRINUSE):
		return []error{e.Err, structs.ErrConflict}
	case errors.Is(e.Err, syscall.EADDRNOTAVAIL), errors.Is(e.Err, syscall.EACCES), errors.Is(e.Err, syscall.EPERM), errors.As(e.Err, &dns):
		return []error{e.Err, &structs.ValidationError{Reason: e.Error()}}
	}
	return []error{e.Err}
}

// conflictError is an error that matches structs.ErrConflict without
// saying "conflict" in its message.
type conflictError struct{ msg string }

func (e *conflictError) Error() string { return e.msg }

func (e *conflictError) Unwrap() error { return structs.ErrConflict }

// errClosed answers changes asked of a manager that is shut down.
var errClosed = errors.New("the proxy manager is shut down")
