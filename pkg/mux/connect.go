package mux

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/proto"
)

// ConnectConfig configures Connect and ServeConnect: "tunnel connect", the
// visitor's side of a TCP tunnel.
type ConnectConfig struct {
	// Server is tunneld's address, host:port; or several, separated by
	// commas, tried in a random order (see ClientConfig.Server).
	Server string
	// TLS holds the roots that verify tunneld's certificate (nil RootCAs:
	// the system's) and the ServerName (empty: the host of the server
	// dialled). NextProtos
	// is set by Connect. Verification is never skipped.
	TLS *tls.Config
	// CAFile names the file TLS.RootCAs was read from, for the message of
	// a CertificateError; it is not read.
	CAFile string
	// Tunnel is the TCP tunnel's name.
	Tunnel string
	// Token proves the visitor may reach the tunnel: its owner's, one the
	// owner allowed, or one tunneld's tokens file grants the name.
	Token string
	// Timeout bounds the dial, the TLS handshake and tunneld's answer
	// (which waits for the tunnel's local service); 0 means 10s.
	Timeout time.Duration
	// Logger logs each connection served by ServeConnect.
	Logger zerolog.Logger
}

// Validate reports the first missing or bad setting.
func (c ConnectConfig) Validate() error {
	if err := validServers(c.Server); err != nil {
		return err
	}
	if c.Tunnel == "" {
		return errors.New("mux: connect: tunnel name missing")
	}
	if c.Timeout < 0 {
		return fmt.Errorf("mux: connect: timeout %v: want 0 (the default) or more", c.Timeout)
	}
	return nil
}

// Connect dials tunneld over TLS with ALPN proto.ConnectALPN, asks for the
// TCP tunnel cfg.Tunnel with cfg.Token and returns the connection once the
// tunnel's local service is connected: from then on it carries the
// service's bytes, and its CloseWrite (a TLS close_notify) is a half-close
// that reaches the service. A refusal is a *proto.Error (bad_token for a
// tunnel that does not exist or that the token may not reach); a
// certificate tunneld should not have is a *CertificateError. The caller
// closes the connection.
func Connect(ctx context.Context, cfg ConnectConfig) (*tls.Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	tlsCfg := &tls.Config{}
	if cfg.TLS != nil {
		tlsCfg = cfg.TLS.Clone()
	}
	tlsCfg.NextProtos = []string{proto.ConnectALPN}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, _, err := dialTLS(dctx, tlsDial{
		servers: cfg.Server, timeout: timeout, tls: tlsCfg,
		alpn: proto.ConnectALPN, what: "a tunneld with TCP tunnels", caFile: cfg.CAFile,
	})
	if err != nil {
		return nil, err
	}
	deadline, _ := dctx.Deadline()
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(dctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := proto.WriteFrame(conn, &proto.Connect{Version: proto.Version, Tunnel: cfg.Tunnel, Token: cfg.Token}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect to %s: %w", cfg.Tunnel, handshakeErr(dctx, err))
	}
	if _, err := proto.ReadAs[*proto.StreamAck](conn); err != nil {
		conn.Close()
		var perr *proto.Error
		if errors.As(err, &perr) {
			return nil, perr
		}
		return nil, fmt.Errorf("connect to %s: %w", cfg.Tunnel, handshakeErr(dctx, err))
	}
	if !stop() {
		conn.Close()
		return nil, fmt.Errorf("connect to %s: %w", cfg.Tunnel, dctx.Err())
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// Pipe copies between a and b in both directions, passing a half-close
// on (CloseWrite, where the connection has it), until both directions are
// done, then closes both. It returns the bytes copied b->a and a->b.
// "tunnel connect" uses it for stdin/stdout and for each --listen
// connection.
func Pipe(a, b net.Conn) (toA, toB int64) {
	toB, toA = pipe(a, b, false, nil)
	return toA, toB
}

// ServeConnect accepts connections on ln until ctx ends, and connects each
// to the TCP tunnel (Connect), piping both ways with half-closes passed on.
// A connection whose Connect fails is closed and the failure logged; a
// refusal that cannot change (bad_token) is logged at Warn. It closes ln,
// waits for the connections it serves, which ctx's end cuts, and returns
// nil when ctx ends or the accept error otherwise.
func ServeConnect(ctx context.Context, ln net.Listener, cfg ConnectConfig) error {
	if err := cfg.Validate(); err != nil {
		ln.Close()
		return err
	}
	log := cfg.Logger
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		wg.Add(1)
		go serveConnectConn(ctx, &wg, c, cfg, log)
	}
}

// serveConnectConn connects one local connection to the tunnel.
func serveConnectConn(ctx context.Context, wg *sync.WaitGroup, local net.Conn, cfg ConnectConfig, log zerolog.Logger) {
	defer wg.Done()
	log = log.With().Str("remote_addr", local.RemoteAddr().String()).Logger()
	remote, err := Connect(ctx, cfg)
	if err != nil {
		local.Close()
		var perr *proto.Error
		if errors.As(err, &perr) {
			log.Warn().Str("code", Printable(string(perr.Code), maxLoggedString)).
				Str("reason", Printable(perr.Message, maxLoggedString)).Msg("server refused the connection")
			return
		}
		log.Warn().Err(err).Msg("connect failed")
		return
	}
	stop := context.AfterFunc(ctx, func() { local.Close(); remote.Close() })
	defer stop()
	start := time.Now()
	in, out := Pipe(local, remote)
	log.Debug().Int64("bytes_in", in).Int64("bytes_out", out).Dur("duration", time.Since(start)).Msg("connection closed")
}
