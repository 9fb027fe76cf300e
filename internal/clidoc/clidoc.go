package clidoc

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/internal/buildinfo"
)

// completeFlag is the hidden flag urfave/cli answers with completions when
// EnableBashCompletion is set; it must be the last argument.
const completeFlag = "--generate-bash-completion"

// Install adds to app: the version (buildinfo.Get) and its printer, shell
// completion (EnableBashCompletion, Complete on every command, and the
// "completion" command) and the hidden "man" command printing the man page
// in section manSection (1 for a user command, 8 for a daemon). Call it on
// a fully built app, once: it appends to app.Commands, after the
// program's own commands.
//
// The version printer is urfave/cli's package variable cli.VersionPrinter;
// Install sets it, and every program here sets the same one.
func Install(app *cli.App, manSection int) {
	app.Version = buildinfo.Get().Version
	cli.VersionPrinter = func(c *cli.Context) {
		_ = buildinfo.Get().Write(c.App.Writer, c.App.Name)
	}
	app.EnableBashCompletion = true
	app.Commands = append(app.Commands, completionCommand(app.Name), manCommand(manSection))
	app.BashComplete = Complete
	setComplete(app.Commands)
}

func setComplete(cmds []*cli.Command) {
	for _, c := range cmds {
		if c.BashComplete == nil {
			c.BashComplete = Complete
		}
		setComplete(c.Subcommands)
	}
}

// Complete prints, one a line, what may come next on the command line of
// c's command, for the completion scripts: the flags of that command if
// the word being completed starts with "-", nothing after a flag that takes
// a value (the shell then completes file names), and its visible
// subcommands otherwise. The shell filters them by the partial word.
//
// The scripts call the program as "WORDS... PARTIAL --generate-bash-completion",
// where PARTIAL is "-" when the word being completed starts with "-" and ""
// otherwise; it reads those from os.Args, as urfave/cli's own completer does,
// because by now urfave/cli has parsed the flags away.
func Complete(c *cli.Context) {
	args := os.Args
	if n := len(args); n > 0 && args[n-1] == completeFlag {
		args = args[:n-1]
	}
	var partial, prev string
	if n := len(args); n >= 2 {
		partial = args[n-1]
	}
	if n := len(args); n >= 3 {
		prev = args[n-2]
	}
	w := c.App.Writer
	switch {
	case strings.HasPrefix(partial, "-"):
		for _, f := range c.Command.Flags {
			if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
				continue
			}
			for _, name := range f.Names() {
				fmt.Fprintln(w, dashes(name)+name)
			}
		}
	case takesValue(c.Command.Flags, prev):
		// The value of a flag such as --server: nothing to offer.
	default:
		for _, sub := range c.Command.Subcommands {
			if sub.Hidden || sub.Name == "help" {
				continue
			}
			for _, name := range sub.Names() {
				fmt.Fprintln(w, name)
			}
		}
	}
}

// dashes is "-" before a one-letter flag name and "--" before a longer one.
func dashes(name string) string {
	if len([]rune(name)) == 1 {
		return "-"
	}
	return "--"
}

// takesValue reports whether word is one of flags written without its
// value ("--server", not "--server=x"), and that flag needs a value.
func takesValue(flags []cli.Flag, word string) bool {
	if !strings.HasPrefix(word, "-") || strings.Contains(word, "=") {
		return false
	}
	name := strings.TrimLeft(word, "-")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			v, ok := f.(cli.DocGenerationFlag)
			return ok && v.TakesValue()
		}
	}
	return false
}
