// Package logging builds the one zerolog logger of a process from the
// --log-level and --log-format flags. It exists because both mains (tunnel
// and tunneld) take the same two flags and must log the same way; it is
// internal because the client must not import server code.
package logging

import (
	"fmt"
	"io"
	stdlog "log"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// StderrIsTerminal says whether stderr is a terminal.
func StderrIsTerminal() bool {
	return isatty.IsTerminal(os.Stderr.Fd()) || isatty.IsCygwinTerminal(os.Stderr.Fd())
}

// New builds the logger on out (stderr, or the client's live view that
// prints above itself on stderr). format is auto (pretty when stderr is a
// terminal, JSON otherwise), pretty or json.
func New(level, format string, out io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: want trace, debug, info, warn, error or disabled", level)
	}
	w := out
	pretty := zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
	switch format {
	case "auto":
		if StderrIsTerminal() {
			w = pretty
		}
	case "pretty":
		w = pretty
	case "json":
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format %q: want auto, pretty or json", format)
	}
	return zerolog.New(w).With().Timestamp().Logger().Level(lvl), nil
}

// Std is a *log.Logger (what net/http and yamux want) whose lines become
// events of l at level lvl.
func Std(l zerolog.Logger, lvl zerolog.Level) *stdlog.Logger {
	return stdlog.New(levelWriter{l, lvl}, "", 0)
}

// levelWriter turns lines logged through a *log.Logger into zerolog events.
type levelWriter struct {
	l   zerolog.Logger
	lvl zerolog.Level
}

func (w levelWriter) Write(p []byte) (int, error) {
	w.l.WithLevel(w.lvl).Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
