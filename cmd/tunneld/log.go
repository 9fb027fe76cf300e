package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// newLogger builds the one logger of the process, on stderr. format is
// auto (pretty on a terminal, JSON otherwise), pretty or json.
func newLogger(level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: want trace, debug, info, warn, error or disabled", level)
	}
	var w io.Writer = os.Stderr
	pretty := zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}
	switch format {
	case "auto":
		if isatty.IsTerminal(os.Stderr.Fd()) || isatty.IsCygwinTerminal(os.Stderr.Fd()) {
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
