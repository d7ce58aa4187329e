// Package version holds the build information of the trellis binary: the
// release version and the git commit, both set at link time with -ldflags.
package version

import "fmt"

// These are set with -ldflags "-X github.com/trellismesh/trellis/version.Version=…".
var (
	// Version is the release version, without a leading "v".
	Version = "0.1.0"
	// Prerelease marks a build that is not a release ("dev" for local builds).
	Prerelease = "dev"
	// GitCommit is the commit the binary was built from, when known.
	GitCommit = ""
)

// String returns the human form of the version, such as "v0.1.0-dev (abc1234)".
func String() string {
	s := "v" + Version
	if Prerelease != "" {
		s += "-" + Prerelease
	}
	if GitCommit != "" {
		c := GitCommit
		if len(c) > 8 {
			c = c[:8]
		}
		s += fmt.Sprintf(" (%s)", c)
	}
	return s
}

// Short returns the version without the commit, as gossip metadata and the
// members list carry it: "0.1.0" or "0.1.0-dev".
func Short() string {
	if Prerelease != "" {
		return Version + "-" + Prerelease
	}
	return Version
}
