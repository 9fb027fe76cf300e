// Command tunnel exposes local web services through a tunneld server:
// each one is reached at https://NAME.DOMAIN.
//
// Flags become a mux.ClientConfig (config.go); the work is mux.RunForever.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/internal/logging"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes, documented in the app's Description and the README.
const (
	exitOK      = 0 // stopped by SIGINT or SIGTERM
	exitError   = 1 // bad usage or configuration
	exitRefused = 3 // the server refused the tunnels for good: retrying cannot help
)

func main() {
	// Every duration the client logs (retry_in, a stream's duration, ...)
	// is written with its unit, "850ms" or "1.5s", not as a bare number of
	// milliseconds that a reader cannot tell from seconds. Set once, here,
	// before anything logs: it is zerolog's global, and packages must not
	// set globals (STYLE.md).
	zerolog.DurationFieldFormat = zerolog.DurationFormatString
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newApp().RunContext(ctx, os.Args)
	var perr *proto.Error
	var uerr *usageError
	var cerr *mux.CertificateError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &uerr):
		fmt.Fprintln(os.Stderr, "tunnel:", mux.Printable(usageMessage(os.Args, uerr), 2*maxPrintedText))
		return exitError
	case errors.As(err, &cerr):
		// Our own words about what the server presented (made printable
		// by mux), then what to change.
		fmt.Fprintln(os.Stderr, "tunnel:", mux.Printable(err.Error(), 2*maxPrintedText))
		fmt.Fprintln(os.Stderr, "tunnel:", certHint(cerr))
		return exitError
	case errors.As(err, &perr):
		fmt.Fprintf(os.Stderr, "tunnel: server refused: %s: %s\n", mux.Printable(string(perr.Code), maxPrintedName), mux.Printable(perr.Message, maxPrintedText))
		if mux.IsPermanent(err) {
			return exitRefused
		}
		return exitError
	case ctx.Err() != nil:
		return exitOK // interrupted while connecting
	default:
		fmt.Fprintln(os.Stderr, "tunnel:", mux.Printable(err.Error(), maxPrintedText))
		return exitError
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:      "tunnel",
		Usage:     "expose local web services at https://NAME.DOMAIN through a tunneld server",
		UsageText: "tunnel [global options] http [--name NAME] TARGET [TARGET...]",
		Version:   version,
		Description: "Each public URL is printed on stdout, one line per tunnel, once the server has granted\n" +
			"them; nothing else goes to stdout. Logs go to stderr.\n\n" +
			"The client reconnects by itself, forever, with the same names: an unreachable or restarting\n" +
			"server, a lost link or a name held by another client are retried, never fatal.\n\n" +
			"Exit codes:\n" +
			"  0  stopped by SIGINT or SIGTERM\n" +
			"  1  bad usage or configuration, found at start-up, or at the first connection when tunneld's\n" +
			"     certificate is not signed by a CA the client trusts (--ca) or not for --server's host\n" +
			"  3  the server refused for good (bad token, name not allowed or invalid, ...): retrying cannot help\n\n" +
			"Try it locally, next to \"tunneld --dev\":  tunnel --dev http --name wiki 8080\n" +
			"Several tunnels from a file:  tunnel --config tunnels.json",
		HideHelpCommand: true,
		OnUsageError:    onUsageError,
		Flags:           globalFlags(),
		Action: func(c *cli.Context) error {
			if c.String("config") == "" || c.Args().Present() {
				return cli.ShowAppHelp(c)
			}
			return runHTTP(c) // the tunnels come from the file
		},
		Commands: []*cli.Command{{
			Name:      "http",
			Usage:     "expose local HTTP services",
			ArgsUsage: "TARGET [TARGET...]",
			Description: "TARGET is PORT, HOST:PORT, NAME=PORT or NAME=HOST:PORT; PORT alone means localhost:PORT.\n" +
				"Without NAME (or --name) the server picks a random name. Several targets share one session:\n\n" +
				"  tunnel --dev http wiki=8080 blog=127.0.0.1:9090",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "name", EnvVars: []string{"TUNNEL_NAME"},
					Usage: "name to ask for, served at NAME.DOMAIN (only with a single TARGET)"},
				&cli.StringFlag{Name: "targets", EnvVars: []string{"TUNNEL_TARGETS"},
					Usage: "TARGETs separated by spaces or commas, used when none are given as arguments"},
			},
			OnUsageError: onUsageError,
			Action:       runHTTP,
		}},
	}
}

// runHTTP runs the tunnels. On a terminal, unless --quiet, a live view
// at the bottom of stderr shows them, with the logs scrolling above it.
func runHTTP(c *cli.Context) error {
	if c.Bool("quiet") || !logging.StderrIsTerminal() {
		log, err := logging.New(c.String("log-level"), c.String("log-format"), os.Stderr)
		if err != nil {
			return err
		}
		cfg, err := clientConfig(c, log, os.Stdout)
		if err != nil {
			return err
		}
		if err := withMetrics(c.Context, c.String("metrics-listen"), &cfg, log); err != nil {
			return err
		}
		warnIdleTargets(c.Context, log, cfg.Tunnels)
		return mux.RunForever(c.Context, cfg)
	}
	v := newView(os.Stderr)
	log, err := logging.New(c.String("log-level"), c.String("log-format"), v)
	if err != nil {
		return err
	}
	cfg, err := clientConfig(c, log, v.above(os.Stdout))
	if err != nil {
		return err
	}
	v.configure(cfg.Server, cfg.Tunnels)
	ready := cfg.OnReady
	cfg.OnReady = func(w *proto.Welcome) {
		v.ready(w)
		ready(w)
	}
	cfg.OnStream = v.onStream
	if err := withMetrics(c.Context, c.String("metrics-listen"), &cfg, log); err != nil {
		return err
	}
	ctx, stop := context.WithCancel(c.Context)
	done := make(chan struct{})
	go func() {
		defer close(done)
		v.run(ctx)
	}()
	warnIdleTargets(c.Context, log, cfg.Tunnels)
	err = mux.RunForever(c.Context, cfg)
	stop()
	<-done
	v.stopped(err)
	return err
}
