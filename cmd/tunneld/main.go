// Command tunneld is the public side of tunnel: it serves one TLS port on
// which tunnel clients connect and visitors reach https://NAME.DOMAIN.
//
// Flags become an edge.Config (config.go); everything else lives in pkg/edge.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/tunnelhq/tunnel/internal/clidoc"
	"github.com/tunnelhq/tunnel/internal/logging"
	"github.com/tunnelhq/tunnel/pkg/certs"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/metrics"
	"github.com/tunnelhq/tunnel/pkg/peer"
)

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp().RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "tunneld:", err)
		return 1
	}
	return 0
}

func newApp() *cli.App {
	app := &cli.App{
		Name:  "tunneld",
		Usage: "serve tunnels: visitors reach https://NAME.DOMAIN, tunnel clients connect on the same TLS port",
		UsageText: "tunneld [options]              serve (see GLOBAL OPTIONS)\n" +
			"tunneld token add [options]    add a client token to the tokens file\n" +
			"tunneld certs [options]        make the dev CA and certificates",
		Description: "tunneld listens on one TLS port (--listen). Tunnel clients and visitors share it; the TLS\n" +
			"ALPN protocol tells them apart. It logs to stderr only; the log line \"serving\" carries the\n" +
			"bound address (useful with --listen 127.0.0.1:0). SIGINT or SIGTERM shuts it down gracefully\n" +
			"and it exits 0; any startup or serving error exits 1.\n\n" +
			"Try it locally:  tunneld --dev   (HTTPS on 127.0.0.1:8443, names under localhost,\n" +
			"dev CA and certificates made in --certs-dir on first run, anonymous clients allowed)",
		HideHelpCommand: true,
		Flags:           append(append(append(serveFlags(), clusterFlags()...), adminFlags()...), oidcFlags()...),
		Action:          serve,
		Commands:        []*cli.Command{tokenCommand(), certsCommand()},
	}
	// --version, "tunneld completion", the hidden "tunneld man" (section 8).
	clidoc.Install(app, 8)
	return app
}

// serve is the main command: bind, build the edge, serve until a signal.
func serve(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("unexpected argument %q (see --help)", c.Args().First())
	}
	log, err := logging.New(c.String("log-level"), c.String("log-format"), os.Stderr)
	if err != nil {
		return err
	}
	cfg, addr, err := serverConfig(c, log)
	if err != nil {
		return err
	}
	cs, err := clusterConfig(c, log, cfg.NameHold)
	if err != nil {
		return err
	}
	// srv is set once built; the node links serve other nodes' forwarded
	// streams through it, and accept none before Serve starts them.
	var srv *edge.Server
	var node *clusterNode
	if cs != nil {
		// Without --cluster-etcd none of this runs: no etcd client exists.
		// The cluster is left (its lease revoked, so its names go on hold
		// at once) after the servers have returned.
		if node, err = startClusterNode(c.Context, cs, &cfg, log,
			func(ctx context.Context, req *peer.Request) (net.Conn, error) {
				return srv.OpenLocal(ctx, req.Session, &req.Header)
			}); err != nil {
			return err
		}
		defer node.Close()
	}
	// The access log, one line per request, goes through a buffer that is
	// written out at 64 KiB, every second and at the end; every other line
	// is written at once. Its logger is built like log, over the buffer.
	// With --access-log=false there is neither buffer nor flusher.
	var accessBuf *metrics.LogBuffer
	if cfg.AccessLog {
		accessBuf = metrics.NewLogBuffer(os.Stderr, metrics.LogBufferSize)
		// Close, once the servers have returned (g.Wait below) or on an
		// early return, writes what the buffer holds; lines of requests
		// still ending then go straight out. Its error, like any failed log
		// write before, does not change the exit code.
		defer accessBuf.Close()
		accessLog, err := logging.New(c.String("log-level"), c.String("log-format"), accessBuf)
		if err != nil {
			return err
		}
		cfg.AccessLogger = &accessLog
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s (--listen): %w", addr, err)
	}
	if !c.IsSet("public-port") {
		// The bound port, not the flag's, so that --listen :0 still prints
		// URLs that work.
		if tcp, ok := ln.Addr().(*net.TCPAddr); ok {
			cfg.PublicPort = tcp.Port
		}
	}
	login, err := oidcLogin(c.Context, c, cfg.Domain, cfg.PublicPort, log)
	if err != nil {
		ln.Close()
		return err
	}
	if login != nil {
		defer login.Close()
		cfg.OIDC = login
	}
	httpAddr := c.String("http-listen")
	if c.Bool("dev") && !c.IsSet("http-listen") {
		httpAddr = ""
	}
	var plainLn net.Listener
	if httpAddr != "" {
		if plainLn, err = net.Listen("tcp", httpAddr); err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (--http-listen): %w", httpAddr, err)
		}
	}
	srv, err = edge.NewServer(cfg)
	if err != nil {
		ln.Close()
		if plainLn != nil {
			plainLn.Close()
		}
		return err
	}
	admin, adminLn, err := listenAdmin(c, log, srv)
	if err != nil {
		ln.Close()
		if plainLn != nil {
			plainLn.Close()
		}
		return err
	}
	// Serve logs "serving" with the bound address, closes ln, and returns
	// nil once ctx ends and the graceful shutdown is done; ServePlain does
	// the same for --http-listen and admin.Serve for --admin-listen. If one
	// fails, the others are stopped.
	g, ctx := errgroup.WithContext(c.Context)
	g.Go(func() error { return srv.Serve(ctx, ln) })
	if plainLn != nil {
		g.Go(func() error { return srv.ServePlain(ctx, plainLn) })
	}
	if admin != nil {
		g.Go(func() error { return admin.Serve(ctx, adminLn) })
	}
	if node != nil {
		if err := node.links.Register(srv.Metrics().GaugeFunc, srv.Metrics().CounterFunc); err != nil {
			log.Warn().Err(err).Msg("node link metrics not registered")
		}
		g.Go(func() error { return node.serve(ctx) })
	}
	g.Go(func() error { reloadOnHangup(ctx, cfg.StaticCerts, cfg.Domain, log); return nil })
	if accessBuf != nil {
		g.Go(func() error { return accessBuf.Run(ctx, metrics.LogFlushEvery) })
	}
	return g.Wait()
}

// reloadOnHangup reloads the static certificates on every SIGHUP until ctx
// ends. A failed reload, such as one whose certificates no longer cover
// domain, keeps the certificates in use.
func reloadOnHangup(ctx context.Context, static *certs.Static, domain string, log zerolog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if static == nil {
			log.Info().Msg("SIGHUP: no --cert to reload")
			continue
		}
		if err := static.Reload(); err != nil {
			log.Error().Err(certAdvice(err, domain)).Msg("SIGHUP: certificates not reloaded; the previous ones stay in use")
			continue
		}
		log.Info().Msg("SIGHUP: certificates reloaded")
	}
}
