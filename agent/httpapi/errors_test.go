package httpapi

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/raftstore/structs"
)

// The errors of a change of leader reach the caller as Consul's clients
// expect them (500), and say whether a write may have been applied.
func TestErrorStatus_changeOfLeader(t *testing.T) {
	t.Parallel()
	s := &Server{}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("register: %w", structs.ErrNoLeader), "No cluster leader"},
		{fmt.Errorf("apply Register: %w", structs.ErrLeadershipLost), "may or may not have been applied"},
		{&structs.RemoteError{Code: structs.CodeLeadershipLost, Message: "x"}, "may or may not have been applied"},
		{fmt.Errorf("unreachable: Intention.Apply: %w", structs.ErrReplyLost), "lost before its reply; the write may or may not"},
		{&structs.RemoteError{Code: structs.CodeReplyLost, Message: "x"}, "lost before its reply; the write may or may not"},
	} {
		code, msg := s.errorStatus(tc.err)
		if code != http.StatusInternalServerError || !strings.Contains(msg, tc.want) {
			t.Errorf("%v: %d %q; want 500 with %q", tc.err, code, msg, tc.want)
		}
	}
}
