package agent_test

import (
	"testing"

	"github.com/trellismesh/trellis/internal/testutil"
)

func freePorts(t *testing.T, n int) []int { return testutil.FreePorts(t, n) }
