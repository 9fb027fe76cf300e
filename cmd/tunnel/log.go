package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// stderrIsTerminal says whether stderr is a terminal.
func stderrIsTerminal() bool {
	return isatty.IsTerminal(os.Stderr.Fd()) || isatty.IsCygwinTerminal(os.Stderr.Fd())
}

// newLogger builds the one logger of the process, on out (stderr, or the
// live view that prints above itself on stderr). format is auto (pretty on
// a terminal, JSON otherwise), pretty or json.
func newLogger(level, format string, out io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: want trace, debug, info, warn, error or disabled", level)
	}
	w := out
	pretty := zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
	switch format {
	case "auto":
		if stderrIsTerminal() {
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
