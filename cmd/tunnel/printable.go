package main

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds on what tunneld sends that the client prints: names and URLs are
// at most 253 bytes in the protocol, messages 1 KiB.
const (
	maxPrintedName = 253
	maxPrintedText = 512
)

// printable returns s, which tunneld sent (a URL, a tunnel name, a refusal's
// message), fit for a terminal or stdout: without control characters
// (escape sequences that would repaint or retitle the terminal, newlines
// that would forge lines for a script reading stdout) or invisible
// formatting ones (bidi overrides), at most max bytes, cut at a rune. A
// compromised tunneld with a valid certificate must not write to the
// user's terminal. Copied from pkg/mux, which applies it to its logs.
func printable(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > max {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}
