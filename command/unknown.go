package command

import (
	"fmt"
	"slices"
	"strings"

	"github.com/trellismesh/trellis/internal/suggest"
)

// UnknownCommand returns an error when args name no command of names (the
// keys of Registry): a first word that is no command, or a word after a
// group of commands ("intention bogus") that is none of its subcommands.
// The error says what was given and, when a command is close, suggests
// it. Flags (words starting with '-') and what follows them are left to
// the commands.
func UnknownCommand(names []string, args []string) error {
	prefix := ""
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			return nil
		}
		children := subcommands(names, prefix)
		if len(children) == 0 {
			return nil // a command, which takes its own arguments
		}
		if !slices.Contains(children, a) {
			msg := fmt.Sprintf("unknown command %q", joinWords("trellis", prefix, a))
			switch s := closest(a, children); {
			case s != "":
				msg += fmt.Sprintf(": did you mean %q?", joinWords("trellis", prefix, s))
			case prefix != "":
				msg += fmt.Sprintf(" (the subcommands of trellis %s are %s)", prefix, strings.Join(children, ", "))
			default:
				msg += " (trellis -h lists the commands)"
			}
			return fmt.Errorf("%s", msg)
		}
		prefix = joinWords(prefix, a)
	}
	return nil
}

// joinWords joins the non-empty words with spaces.
func joinWords(words ...string) string {
	return strings.Join(slices.DeleteFunc(words, func(w string) bool { return w == "" }), " ")
}

// subcommands returns the next words after prefix ("" for the top level)
// of the commands in names, sorted.
func subcommands(names []string, prefix string) []string {
	var out []string
	for _, n := range names {
		rest := n
		if prefix != "" {
			var ok bool
			if rest, ok = strings.CutPrefix(n, prefix+" "); !ok {
				continue
			}
		}
		word, _, _ := strings.Cut(rest, " ")
		if !slices.Contains(out, word) {
			out = append(out, word)
		}
	}
	slices.Sort(out)
	return out
}

// closest returns the word of words nearest to w, when it is near enough
// to be a typo (an edit distance of at most 2, or 1 for short words).
func closest(w string, words []string) string {
	best, bestD := "", 3
	if len(w) <= 4 {
		bestD = 2
	}
	for _, c := range words {
		if d := suggest.Distance(strings.ToLower(w), c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}
