package mux

import (
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/yamux"
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
// *log.Logger to zerolog events, at the level yamuxLevel gives each, within
// a logLimit. Lines at a level the logger drops do not use the budget.
type yamuxLog struct {
	l     zerolog.Logger
	limit logLimit
	// sess is the session, once it exists (startSession): a line it logs
	// while it is shutting down is about its own end.
	sess atomic.Pointer[yamux.Session]
	// worst is the highest level among the lines suppressed since the last
	// report (zero: debug), so the report is as loud as they would have been.
	worst atomic.Int32
}

func (w *yamuxLog) Write(p []byte) (int, error) {
	s := w.sess.Load()
	lvl, msg := yamuxLevel(strings.TrimSpace(string(p)), s != nil && s.IsClosed())
	if lvl < w.l.GetLevel() || lvl < zerolog.GlobalLevel() {
		return len(p), nil
	}
	ok, n := w.limit.allow()
	if !ok {
		for {
			old := w.worst.Load()
			if int32(lvl) <= old || w.worst.CompareAndSwap(old, int32(lvl)) {
				break
			}
		}
		return len(p), nil
	}
	ev := w.l.WithLevel(lvl)
	if n > 0 {
		ev = ev.Int("suppressed", n)
	}
	ev.Msg(msg)
	return len(p), nil
}

// close reports the lines suppressed since the last one logged, at the
// level of the worst of them.
func (w *yamuxLog) close() {
	if n := w.limit.flush(); n > 0 {
		lvl := zerolog.Level(w.worst.Swap(int32(zerolog.DebugLevel)))
		w.l.WithLevel(lvl).Int("suppressed", n).Msg("yamux: more lines suppressed")
	}
}

// connGone are the texts of the errors that mean the connection under the
// session is closed or was cut. yamux formats the error at the end of its
// line with %v, so the line's end is all there is to match.
var connGone = []string{
	net.ErrClosed.Error(),      // use of closed network connection
	syscall.ECONNRESET.Error(), // connection reset by peer
	syscall.EPIPE.Error(),      // broken pipe
	io.EOF.Error(),
	io.ErrUnexpectedEOF.Error(),
	yamux.ErrSessionShutdown.Error(),
	yamux.ErrConnectionReset.Error(),
}

// yamuxLevel gives the level of a line yamux logged, and the line without
// its "[ERR] " or "[WARN] " mark (it keeps "yamux: "). yamux calls most
// things an error, but its lines are never a fault on our side:
//
//   - once the session is shutting down (ended), or when the error says
//     the connection is closed, reset or at its end, the line is news of
//     an end that the session's owner logs anyway, with the reason
//     ("session ended; reconnecting", "tunnel disconnected"): debug. This
//     is "Failed to write body: use of closed network connection" when a
//     drain ends with a transfer in flight;
//   - anything else, [ERR] or [WARN], is the peer or the link misbehaving
//     (a frame for a stream that is gone, a window exceeded, a keepalive
//     that timed out): warn.
func yamuxLevel(line string, ended bool) (zerolog.Level, string) {
	mark, msg := "", line
	if strings.HasPrefix(line, "[") {
		if i := strings.Index(line, "] "); i > 0 {
			mark, msg = line[1:i], line[i+2:]
		}
	}
	if ended {
		return zerolog.DebugLevel, msg
	}
	for _, gone := range connGone {
		if strings.HasSuffix(msg, ": "+gone) {
			return zerolog.DebugLevel, msg
		}
	}
	switch mark {
	case "DEBUG", "TRACE":
		return zerolog.DebugLevel, msg
	case "INFO":
		return zerolog.InfoLevel, msg
	default:
		return zerolog.WarnLevel, msg
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
