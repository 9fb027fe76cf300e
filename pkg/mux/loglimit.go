package mux

import (
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"
)

// A session logs at most logBurst lines of a kind at once, then one per
// logEvery, each saying how many were suppressed since the last: whatever a
// peer does, what it makes us log per session is bounded by time, not by
// what it sends. yamux alone logged a line per ping it could not answer
// (288,000 lines, 48 MB, from one connection), per frame for a stream that
// is gone and per stream past its backlog.
const (
	logBurst = 5
	logEvery = time.Minute
)

// logLimit is one such budget.
type logLimit struct {
	mu         sync.Mutex
	used       int
	last       time.Time // the last line logged past the burst
	suppressed int
}

// allow reports whether to log a line now, and how many were suppressed
// before it.
func (l *logLimit) allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.used < logBurst {
		l.used++
		return true, 0
	}
	if now := time.Now(); now.Sub(l.last) >= logEvery {
		l.last, suppressed, l.suppressed = now, l.suppressed, 0
		return true, suppressed
	}
	l.suppressed++
	return false, 0
}

// flush returns the lines suppressed and not yet reported, and resets the count.
func (l *logLimit) flush() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.suppressed
	l.suppressed = 0
	return n
}

// yamuxLog is one session's bridge from the lines yamux logs through a
// *log.Logger to zerolog events at warn, within a logLimit.
type yamuxLog struct {
	l     zerolog.Logger
	limit logLimit
}

func (w *yamuxLog) Write(p []byte) (int, error) {
	if ok, n := w.limit.allow(); ok {
		ev := w.l.Warn()
		if n > 0 {
			ev = ev.Int("suppressed", n)
		}
		ev.Msg(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// close reports the lines suppressed since the last one logged.
func (w *yamuxLog) close() {
	if n := w.limit.flush(); n > 0 {
		w.l.Warn().Int("suppressed", n).Msg("yamux: more lines suppressed")
	}
}

// Printable returns s for a log line or a terminal: control characters
// (escape sequences, newlines) and invisible formatting characters (bidi
// overrides) dropped, at most max bytes, cut at a rune. The peer's strings
// (a GoAway reason, a tunnel name) pass through it here, and the client
// passes what tunneld sent through it before printing: a compromised
// tunneld with a valid certificate must not write to the user's terminal.
func Printable(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == unicode.ReplacementChar {
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
