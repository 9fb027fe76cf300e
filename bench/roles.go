package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/tunnelhq/tunnel/pkg/devcert"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// Roles the harness binary plays when started with TUNNEL_BENCH_ROLE set.
// Each ends when its stdin closes (the harness stops it) or on SIGTERM.
var roles = map[string]func(ctx context.Context, args []string) error{
	"pipe-server":    pipeServer,
	"pipe-client":    pipeClient,
	"hold":           holdSessions,
	"slow-backend":   slowBackend,
	"victim-backend": victimBackendRole,
}

// runRole runs the role named in the environment; ok is false when none is.
func runRole() (ok bool, err error) {
	name := os.Getenv(roleEnv)
	if name == "" {
		return false, nil
	}
	role, found := roles[name]
	if !found {
		return true, fmt.Errorf("unknown role %q", name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The harness closes our stdin to stop us.
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	return true, role(ctx, os.Args[1:])
}

// clientTLS trusts the dev CA in certsDir, as tunnel --dev does.
func clientTLS(certsDir string) (*tls.Config, error) {
	pem, err := os.ReadFile(filepath.Join(certsDir, devcert.CAFile))
	if err != nil {
		return nil, fmt.Errorf("read dev CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("dev CA: no certificate found")
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{proto.ALPN}}, nil
}

// pipeServer is the server half of the bare TLS + yamux pipe: one TLS port
// for one mux client and one plain TCP port whose connections each become a
// stream to that client. No HTTP, no names, no registry: the floor under
// what tunneld adds. It prints "MUXADDR VISITORADDR" once listening.
func pipeServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("pipe-server", flag.ContinueOnError)
	certsDir := fs.String("certs-dir", "", "dev certificates")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tlsCfg, err := devcert.TLSConfig(*certsDir, "localhost")
	if err != nil {
		return err
	}
	tlsCfg.NextProtos = []string{proto.ALPN}
	muxLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	visLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		muxLn.Close()
		return err
	}
	fmt.Printf("%s %s\n", muxLn.Addr(), visLn.Addr())

	g, ctx := errgroup.WithContext(ctx)
	context.AfterFunc(ctx, func() { muxLn.Close(); visLn.Close() })
	raw, err := muxLn.Accept()
	if err != nil {
		visLn.Close()
		return fmt.Errorf("accept mux client: %w", err)
	}
	// What pkg/mux offers a server, as tunneld uses it: TLS over a WireConn.
	conn := tls.Server(mux.WireConn(raw), tlsCfg)
	cfg := mux.DefaultConfig()
	cfg.Logger = zerolog.Nop()
	sess, hello, err := mux.Server(ctx, conn, cfg)
	if err != nil {
		visLn.Close()
		return err
	}
	defer sess.Close()
	w := &proto.Welcome{SessionID: "pipe"}
	for _, t := range hello.Tunnels {
		w.Tunnels = append(w.Tunnels, proto.TunnelInfo{Name: "pipe", Kind: t.Kind, URL: "tcp://" + visLn.Addr().String()})
	}
	if err := sess.Accept(w); err != nil {
		visLn.Close()
		return err
	}
	g.Go(func() error {
		var conns sync.WaitGroup
		defer conns.Wait()
		for {
			c, err := visLn.Accept()
			if err != nil {
				return nil
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				st, err := sess.Open(ctx, &proto.StreamHeader{Tunnel: "pipe", RemoteAddr: c.RemoteAddr().String()})
				if err != nil {
					c.Close()
					return
				}
				pipeConns(st, c)
			}()
		}
	})
	<-ctx.Done()
	visLn.Close()
	sess.Close()
	return g.Wait()
}

// pipeClient is the client half of the pipe: mux.Run, exactly what tunnel
// runs, with the stream target given. It prints "ready" once connected.
func pipeClient(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("pipe-client", flag.ContinueOnError)
	certsDir := fs.String("certs-dir", "", "dev certificates")
	server := fs.String("server", "", "pipe-server mux address")
	target := fs.String("target", "", "local target")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tlsCfg, err := clientTLS(*certsDir)
	if err != nil {
		return err
	}
	cfg := mux.ClientConfig{
		Config:  mux.DefaultConfig(),
		Server:  *server,
		TLS:     tlsCfg,
		Tunnels: []mux.Tunnel{{Name: "pipe", Target: *target}},
		OnReady: func(*proto.Welcome) { fmt.Println("ready") },
	}
	cfg.Logger = zerolog.Nop()
	return mux.Run(ctx, cfg)
}

// pipeConns copies both ways and half-closes as each direction ends, as
// mux's own pipe does (copied here: it is unexported there).
func pipeConns(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		copyHalf(a, b)
	}()
	copyHalf(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

func copyHalf(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	if _, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf); err != nil {
		dst.Close()
		src.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	dst.Close()
}

// holdSessions connects -n light clients to tunneld (TLS + Hello +
// Welcome, one anonymous tunnel each) and holds them idle until stopped.
// It prints "ready N" once all are connected.
func holdSessions(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	certsDir := fs.String("certs-dir", "", "dev certificates")
	server := fs.String("server", "", "tunneld address")
	n := fs.Int("n", 100, "sessions")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := raiseNoFile(); err != nil {
		return err
	}
	tlsCfg, err := clientTLS(*certsDir)
	if err != nil {
		return err
	}
	sessions := make([]*mux.ClientSession, *n)
	defer func() {
		for _, s := range sessions {
			if s != nil {
				s.Close()
			}
		}
	}()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range sessions {
		g.Go(func() error {
			s, err := connectOnce(gctx, *server, tlsCfg)
			sessions[i] = s
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	fmt.Printf("ready %d\n", *n)
	<-ctx.Done()
	return nil
}

// connectOnce is one client connect: TLS, Hello, Welcome.
func connectOnce(ctx context.Context, server string, tlsCfg *tls.Config) (*mux.ClientSession, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: tlsCfg}
	conn, err := d.DialContext(ctx, "tcp", server)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", server, err)
	}
	cfg := mux.DefaultConfig()
	cfg.Logger = zerolog.Nop()
	hello := &proto.Hello{Version: proto.Version, ClientVersion: "bench",
		Tunnels: []proto.TunnelRequest{{Kind: proto.KindHTTP}}}
	s, err := mux.Client(ctx, conn, hello, cfg)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	return s, nil
}
