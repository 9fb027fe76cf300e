// Command tunnel exposes local web services through a tunneld server:
// each one is reached at https://NAME.DOMAIN.
//
// Flags, env vars and the --config file become a mux.ClientConfig by one
// rule (config.go); the work is mux.RunForever; SIGINT and SIGTERM drain,
// and a second one quits (signal.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/internal/buildinfo"
	"github.com/tunnelhq/tunnel/internal/clidoc"
	"github.com/tunnelhq/tunnel/internal/logging"
	"github.com/tunnelhq/tunnel/pkg/inspect"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// version is the client's release, sent to the server in Hello; make
// build sets it with the linker (internal/buildinfo).
var version = buildinfo.Get().Version

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
	app := &cli.App{
		Name:  "tunnel",
		Usage: "expose local web services at https://NAME.DOMAIN through a tunneld server",
		UsageText: "tunnel [global options] http|tcp|tls [--name NAME] TARGET [TARGET...]\n" +
			"tunnel [global options] connect [--listen HOST:PORT] NAME.DOMAIN",
		Description: "Each public URL is printed on stdout, one line per tunnel, once the server has granted\n" +
			"them; nothing else goes to stdout. Logs go to stderr.\n\n" +
			"The client reconnects by itself, forever, with the same names: an unreachable or restarting\n" +
			"server, a lost link or a name held by another client are retried, never fatal.\n\n" +
			"Exit codes:\n" +
			"  0  stopped by SIGINT or SIGTERM\n" +
			"  1  bad usage or configuration, found at start-up, or at the first connection when tunneld's\n" +
			"     certificate is not signed by a CA the client trusts (--ca) or not for --server's host\n" +
			"  3  the server refused for good (bad token, name not allowed or invalid, ...): retrying cannot help\n" +
			"  130  a second SIGINT (Ctrl-C) cut the drain short (143: a second SIGTERM)\n\n" +
			"The first SIGINT or SIGTERM lets requests in flight finish within --drain-timeout; a second quits at once.\n" +
			"Each setting comes from its flag, else its env var, else --config FILE, else its default.\n\n" +
			"Try it locally, next to \"tunneld --dev\":  tunnel --dev http --name wiki 8080\n" +
			"Several tunnels from a file:  tunnel --config tunnels.json",
		HideHelpCommand: true,
		OnUsageError:    onUsageError,
		Flags:           globalFlags(),
		Action:          runOrHelp(runHTTP),
		Commands: []*cli.Command{{
			Name:      "http",
			Usage:     "expose local HTTP services",
			ArgsUsage: "TARGET [TARGET...]",
			Description: "TARGET is PORT, HOST:PORT, NAME=PORT or NAME=HOST:PORT; PORT alone means localhost:PORT.\n" +
				"Without NAME (or --name) the server picks a random name. Several targets share one session:\n\n" +
				"  tunnel --dev http wiki=8080 blog=127.0.0.1:9090",
			Flags:        append(append(httpFlags(), accessFlags()...), domainFlag()),
			OnUsageError: onUsageError,
			Action:       runHTTP,
		}, tcpCommand(), tlsCommand(), connectCommand()},
	}
	// --version, "tunnel completion", the hidden "tunnel man" (section 1).
	clidoc.Install(app, 1)
	return app
}

// runOrHelp is bare "tunnel": it runs the tunnels (run) when TUNNEL_TARGETS
// or a config file gives some, as "tunnel http" would, and shows the help
// otherwise, or for "tunnel help". Any other argument stands where a
// command should ("tunnel htp 8080"): a usage error, not the help on
// stdout with exit code 0, which a script would take for success.
func runOrHelp(run cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		switch {
		case c.Args().First() == "help":
			return cli.ShowAppHelp(c)
		case c.Args().Present():
			return unknownCommand(c.App, c.Args().First())
		case !hasTunnels(c):
			return cli.ShowAppHelp(c)
		}
		return run(c)
	}
}

// httpFlags are the flags of "tunnel http" (with accessFlags), "tcp" and
// "tls".
func httpFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "name", EnvVars: []string{"TUNNEL_NAME"},
			Usage: "name to ask for, served at NAME.DOMAIN (only with a single TARGET)"},
		&cli.StringFlag{Name: "targets", EnvVars: []string{"TUNNEL_TARGETS"},
			Usage: "TARGETs separated by spaces or commas, used when none are given as arguments"},
		&cli.BoolFlag{Name: "pool", EnvVars: []string{"TUNNEL_POOL"},
			Usage: "share each named tunnel with your other clients that ask for it with --pool: tunneld spreads visitors over them (the token must allow pools)"},
	}
}

// domainFlag is "tunnel http"'s --domain.
func domainFlag() cli.Flag {
	return &cli.StringFlag{Name: "domain", EnvVars: []string{"TUNNEL_DOMAIN"},
		Usage: "custom domain to serve besides NAME.DOMAIN (only with a single TARGET), once the token may claim it and its DNS points at the tunnel: a CNAME to NAME.DOMAIN, or a TXT record at _tunnel.DOMAIN holding the token's label"}
}

// runHTTP runs the tunnels. On a terminal, unless --quiet, a live view
// at the bottom of stderr shows them, with the logs scrolling above it.
// The first SIGINT or SIGTERM drains, the second exits at once (signal.go).
func runHTTP(c *cli.Context) error {
	o, err := resolve(c)
	if err != nil {
		return err
	}
	var v *view
	var stderr, stdout io.Writer = os.Stderr, os.Stdout
	if !o.quiet && logging.StderrIsTerminal() {
		v = newView(os.Stderr)
		stderr, stdout = v, v.above(os.Stdout)
	}
	log, err := logging.New(o.logLevel, o.logFormat, stderr)
	if err != nil {
		return err
	}
	cfg, err := o.clientConfig(log, stdout)
	if err != nil {
		return err
	}
	if v != nil {
		v.configure(cfg.Server, cfg.Tunnels)
		ready := cfg.OnReady
		cfg.OnReady = func(w *proto.Welcome) {
			v.ready(w)
			ready(w)
		}
		cfg.OnStream = v.onStream
	}
	var onExchange func(inspect.Summary)
	if v != nil {
		onExchange = v.onRequest
	}
	ins, err := startInspector(o, &cfg, log, onExchange)
	if err != nil {
		return err
	}
	if ins != nil {
		// The inspector outlives RunForever's drain, and stops after it.
		log.Info().Str("addr", ins.ln.Addr().String()).Str("url", ins.publicURL()).Msg("inspector serving")
		if ins.url != ins.publicURL() {
			fmt.Fprintln(stderr, "inspector (its token was made up, as --inspect is off loopback):", ins.url)
		}
		if v != nil {
			v.inspecting(ins.publicURL())
		}
		ictx, stopInspector := context.WithCancel(context.Background())
		ins.run(ictx)
		defer func() {
			stopInspector()
			if err := ins.wait(); err != nil {
				log.Error().Err(err).Msg("inspector failed")
			}
		}()
	}
	// open counts the streams connected to their local service, for the
	// drain notice.
	var open atomic.Int64
	onStream := cfg.OnStream
	cfg.OnStream = func(ev mux.StreamEvent) {
		switch {
		case !ev.Closed:
			open.Add(1)
		case ev.Err == nil: // a refused stream was never open
			open.Add(-1)
		}
		if onStream != nil {
			onStream(ev)
		}
	}
	if err := withMetrics(c.Context, o.metricsListen, &cfg, log); err != nil {
		return err
	}

	ctx, stop := stopOnSignal(c.Context, func(sig os.Signal) {
		if v != nil {
			v.draining(time.Now().Add(cfg.DrainTimeout), againHint(sig))
		}
		if notice := drainNotice(sig, open.Load(), cfg.DrainTimeout); notice != "" {
			fmt.Fprintln(stderr, notice)
		}
	}, func(code int) {
		if v != nil {
			v.quit()
		}
		os.Exit(code)
	})
	defer stop()
	warnIdleTargets(ctx, log, cfg.Tunnels)
	if v == nil {
		return mux.RunForever(ctx, cfg)
	}
	// The view runs until RunForever returns, not until ctx ends: it shows
	// the drain.
	viewCtx, stopView := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		v.run(viewCtx)
	}()
	err = mux.RunForever(ctx, cfg)
	stopView()
	<-done
	v.stopped(err)
	return err
}
