package main

// What the client tells a user who got something wrong: each message says
// what is wrong and what to do, as soon as it can be known.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/pkg/mux"
)

// certHint says what to do about tunneld's refused certificate: which
// setting to change, and to what.
func certHint(e *mux.CertificateError) string {
	var hints []string
	if e.WrongHost {
		_, port, err := net.SplitHostPort(e.Server)
		if err != nil {
			port = "PORT"
		}
		host := "NAME"
		for _, n := range e.Names {
			if net.ParseIP(n) == nil && !strings.HasPrefix(n, "*.") {
				host = n
				break
			}
		}
		hints = append(hints, fmt.Sprintf("connect by a name the certificate covers: --server %s (TUNNEL_SERVER)", net.JoinHostPort(host, port)))
	}
	if e.Unknown && e.CAFile == "" {
		hints = append(hints, "no --ca was given, so only the system's roots are trusted: pass the PEM file of the CA "+
			"that signed tunneld's certificate with --ca FILE (TUNNEL_CA), or --dev for a local tunneld --dev")
	} else if e.Unknown {
		hints = append(hints, fmt.Sprintf("check --ca (TUNNEL_CA), which gave %s: it must hold the CA that signed tunneld's certificate "+
			"(for tunneld --dev, the ca.pem in its --certs-dir, made anew if that directory was removed)", e.CAFile))
	}
	return strings.Join(hints, "; and ")
}

// usageError is a command line that did not parse. run prints it as one
// short line on stderr, with the way to fix it (see usageMessage), instead
// of urfave/cli's whole help on stdout, which is for URLs only.
type usageError struct {
	err error
	// sub is true when the error came from "tunnel http"'s flags, false
	// for the global ones.
	sub bool
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// onUsageError is the app's and the http command's cli.OnUsageErrorFunc.
func onUsageError(_ *cli.Context, err error, isSubcommand bool) error {
	return &usageError{err: err, sub: isSubcommand}
}

// flagInError finds the flag a Go flag-parsing error is about: "flag
// provided but not defined: -name", "flag needs an argument: -server",
// "invalid value "x" for flag -peer-timeout: ...".
var flagInError = regexp.MustCompile(`(flag provided but not defined: |flag needs an argument: |for flag )-{1,2}([^\s:=]+)`)

// usageMessage is what run prints for a usage error, given the command
// line (os.Args). An unknown flag that belongs to the other level (a flag
// of "tunnel http" given before http, or a global one after it) gets the
// command line with the flag moved to its place.
func usageMessage(args []string, e *usageError) string {
	help := "tunnel --help"
	if e.sub {
		help = "tunnel http --help"
	}
	msg := e.err.Error()
	m := flagInError.FindStringSubmatch(msg)
	if m == nil {
		return seeHelp(msg, help)
	}
	flagName := m[2]
	msg = strings.Replace(msg, m[0], m[1]+"--"+flagName, 1)
	if !strings.HasPrefix(m[1], "flag provided but not defined") {
		return seeHelp(msg, help)
	}
	app := newApp()
	global, http := app.Flags, app.Commands[0].Flags
	switch {
	case !e.sub && findFlag(http, flagName) != nil:
		return fmt.Sprintf("--%s is a flag of `tunnel http`, so it goes after http: %s",
			flagName, moveFlag(args, flagName, findFlag(http, flagName), true))
	case e.sub && findFlag(global, flagName) != nil:
		return fmt.Sprintf("--%s is a global flag, so it goes before http: %s",
			flagName, moveFlag(args, flagName, findFlag(global, flagName), false))
	}
	return seeHelp(msg, help)
}

// seeHelp ends a usage message with where to read more; a message that
// ends with a question ("did you mean http?") reads on without a semicolon.
func seeHelp(msg, help string) string {
	if strings.HasSuffix(msg, "?") {
		return msg + " see " + help
	}
	return msg + "; see " + help
}

// unknownCommand is the usage error for arg, found where app's command
// should be. It names the command meant when arg is close to one (a typo),
// and only then: a guess at anything else would mislead.
func unknownCommand(app *cli.App, arg string) error {
	err := fmt.Errorf("unknown command %q", arg)
	for _, c := range app.VisibleCommands() {
		if editDistance(arg, c.Name) <= 2 {
			err = fmt.Errorf("unknown command %q: did you mean %s?", arg, c.Name)
			break
		}
	}
	return &usageError{err: err}
}

// editDistance is the Levenshtein distance between a and b: the fewest
// bytes to insert, delete or replace to turn one into the other.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// isFlagArg reports whether arg, an argument, is one of tunnel's flags
// ("--name", "-dev", "--name=wiki").
func isFlagArg(arg string) bool {
	if !strings.HasPrefix(arg, "-") {
		return false
	}
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	app := newApp()
	return findFlag(app.Flags, name) != nil || findFlag(app.Commands[0].Flags, name) != nil
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// moveFlag returns the command line args with the flag name (and its
// value, unless it is a bool flag or written --flag=value) moved to just
// after "http" (toSub) or just before it, for the user to copy.
func moveFlag(args []string, name string, f cli.Flag, toSub bool) string {
	if len(args) == 0 {
		return ""
	}
	rest := args[1:]
	var moved, kept []string
	at := -1
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		bare := strings.TrimLeft(a, "-")
		if at < 0 && strings.HasPrefix(a, "-") && (bare == name || strings.HasPrefix(bare, name+"=")) {
			at = len(kept)
			moved = append(moved, a)
			if _, isBool := f.(*cli.BoolFlag); !isBool && bare == name && i+1 < len(rest) {
				i++
				moved = append(moved, rest[i])
			}
			continue
		}
		kept = append(kept, a)
	}
	if at < 0 {
		return strings.Join(shellWords(args), " ")
	}
	out := []string{"tunnel"}
	switch i := slices.Index(kept, "http"); {
	case i < 0:
		out = append(out, kept[:at]...)
		out = append(out, "http")
		out = append(out, moved...)
		out = append(out, kept[at:]...)
	case toSub:
		out = append(out, kept[:i+1]...)
		out = append(out, moved...)
		out = append(out, kept[i+1:]...)
	default:
		out = append(out, kept[:i]...)
		out = append(out, moved...)
		out = append(out, kept[i:]...)
	}
	return strings.Join(shellWords(out), " ")
}

// shellWords quotes each word for a POSIX shell where it needs it, and
// hides the value of --token: a command line printed back to the user
// must not put the secret on their screen or in a log.
var plainWord = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

func shellWords(words []string) []string {
	out := make([]string, len(words))
	hide := false
	for i, w := range words {
		switch {
		case hide:
			w, hide = "***", false
		case w == "--token" || w == "-token":
			hide = true
		case strings.HasPrefix(w, "--token=") || strings.HasPrefix(w, "-token="):
			w = w[:strings.IndexByte(w, '=')+1] + "***"
		case !plainWord.MatchString(w):
			w = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		out[i] = mux.Printable(w, maxPrintedText)
	}
	return out
}

// targetProbeTimeout bounds the start-up check of the local services.
const targetProbeTimeout = time.Second

// warnIdleTargets dials each tunnel's local service once, at start-up, and
// warns about those that do not answer: "tunnel ready" for a service that
// is not running leaves the user to find out from a visitor's error page.
// It only warns: the service may well start after the tunnel.
func warnIdleTargets(ctx context.Context, log zerolog.Logger, tunnels []mux.Tunnel) {
	ctx, cancel := context.WithTimeout(ctx, targetProbeTimeout)
	defer cancel()
	errs := make([]error, len(tunnels))
	var wg sync.WaitGroup
	for i, t := range tunnels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", t.Target)
			if err == nil {
				conn.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			continue
		}
		t := tunnels[i]
		ev := log.Warn().Str("target", t.Target)
		if t.Name != "" {
			ev = ev.Str("tunnel", t.Name)
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			ev.Msg("nothing listens on " + t.Target + " yet: visitors get an error page until it does")
			continue
		}
		ev.Err(err).Msg("cannot reach " + t.Target + " yet: visitors get an error page until it answers")
	}
}
