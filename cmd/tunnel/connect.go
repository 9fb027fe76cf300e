package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/internal/logging"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/name"
)

// tcpCommand is "tunnel tcp": TCP tunnels, which nothing public listens
// for; visitors with a token the owner allows reach them with "tunnel
// connect".
func tcpCommand() *cli.Command {
	return &cli.Command{
		Name:      "tcp",
		Usage:     "expose local TCP services (SSH, databases) to the visitors you allow",
		ArgsUsage: "TARGET [TARGET...]",
		Description: "TARGET is as for http. Nothing public listens for a TCP tunnel: a visitor reaches it with\n" +
			"\"tunnel connect NAME.DOMAIN\" and a token: yours, one given with --allow-token, or one that\n" +
			"tunneld's tokens file grants the name (tunneld token add --connect NAME). Anyone else is\n" +
			"refused by tunneld, and this client never hears of them:\n\n" +
			"  tunnel --dev tcp --name pi-ssh 22\n" +
			"  ssh -o ProxyCommand='tunnel --dev connect %h' pi@pi-ssh.localhost",
		Flags: append(httpFlags(),
			&cli.StringSliceFlag{Name: "allow-token", EnvVars: []string{"TUNNEL_ALLOW_TOKENS"},
				Usage: "a token, besides yours, that may connect (only its SHA-256 is sent); repeat for more, at most 16"}),
		OnUsageError: onUsageError,
		Action:       runHTTP,
	}
}

// tlsCommand is "tunnel tls": TLS passthrough tunnels.
func tlsCommand() *cli.Command {
	return &cli.Command{
		Name:      "tls",
		Usage:     "expose local TLS services that hold their own certificate, untouched by tunneld",
		ArgsUsage: "TARGET [TARGET...]",
		Description: "TARGET is as for http, and must speak TLS with a certificate for NAME.DOMAIN. tunneld reads\n" +
			"only the server name of each visitor's TLS handshake and pipes the connection whole to it: it\n" +
			"never sees the plaintext and orders no certificate for the name:\n\n" +
			"  tunnel --dev tls --name secure 8443",
		Flags:        httpFlags(),
		OnUsageError: onUsageError,
		Action:       runHTTP,
	}
}

// connectCommand is "tunnel connect": the visitor's side of a TCP tunnel.
func connectCommand() *cli.Command {
	return &cli.Command{
		Name:      "connect",
		Usage:     "reach a TCP tunnel: pipe stdin and stdout to it, or serve it on a local port",
		ArgsUsage: "NAME.DOMAIN",
		Description: "Dials tunneld (--server, else NAME.DOMAIN:443) with the token (--token) and connects to the TCP\n" +
			"tunnel NAME. Without --listen it pipes stdin and stdout, for ssh:\n\n" +
			"  ssh -o ProxyCommand='tunnel connect %h' pi@pi-ssh.example.com\n\n" +
			"With --listen it serves a local port, each connection its own:\n\n" +
			"  tunnel connect --listen 127.0.0.1:5432 db.example.com\n\n" +
			"A refusal (no such tunnel, or a token it does not allow) exits 3.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", EnvVars: []string{"TUNNEL_CONNECT_LISTEN"}, DefaultText: "none: stdin and stdout",
				Usage: "serve the tunnel on this local host:port, one tunnel connection per local one"},
		},
		OnUsageError: onUsageError,
		Action:       runConnect,
	}
}

// runConnect is "tunnel connect".
func runConnect(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("connect takes one argument, NAME.DOMAIN (the TCP tunnel's host)")
	}
	o, err := resolve(c)
	if err != nil {
		return err
	}
	log, err := logging.New(o.logLevel, o.logFormat, os.Stderr)
	if err != nil {
		return err
	}
	cfg, err := o.connectConfig(c.Args().First())
	if err != nil {
		return err
	}
	cfg.Logger = log
	listen := c.String("listen")
	if listen == "" {
		conn, err := mux.Connect(c.Context, cfg)
		if err != nil {
			return err
		}
		pipeStdio(conn)
		return nil
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	log.Info().Str("addr", ln.Addr().String()).Str("tunnel", cfg.Tunnel).Msg("listening")
	return mux.ServeConnect(c.Context, ln, cfg)
}

// connectConfig makes the mux.ConnectConfig of the options for host, the
// TCP tunnel's NAME.DOMAIN (or NAME.DOMAIN:PORT). Without --server the
// tunnel's own host is dialled, on port 443 unless it names one, and its
// TLS server name is DOMAIN: the apex's certificate, since tunneld orders
// none for a TCP tunnel's name.
func (o options) connectConfig(host string) (mux.ConnectConfig, error) {
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		h, port = host, "443"
	}
	label, domain, _ := strings.Cut(h, ".")
	if err := name.Validate(label); err != nil {
		return mux.ConnectConfig{}, fmt.Errorf("connect %q: %w", host, err)
	}
	roots, err := rootCAs(o.ca, o.devCA)
	if err != nil {
		return mux.ConnectConfig{}, err
	}
	cfg := mux.ConnectConfig{Server: o.server, TLS: &tls.Config{RootCAs: roots}, CAFile: o.ca, Tunnel: label, Token: o.token}
	if cfg.Server == "" {
		if domain == "" {
			return mux.ConnectConfig{}, fmt.Errorf("connect %q: want NAME.DOMAIN, or --server (TUNNEL_SERVER) to say where tunneld is", host)
		}
		cfg.Server = net.JoinHostPort(h, port)
		cfg.TLS.ServerName = domain
	}
	if err := checkServers(cfg.Server); err != nil {
		return mux.ConnectConfig{}, err
	}
	return cfg, nil
}

// pipeStdio copies stdin to conn and conn to stdout. The end of stdin
// half-closes conn; the end of conn's output ends the command, even if
// stdin stays open (ssh keeps its end of the pipe until we exit), so the
// stdin copy may be left blocked in a read the process exit ends.
func pipeStdio(conn *tls.Conn) {
	go func() {
		if _, err := io.Copy(conn, os.Stdin); err == nil {
			conn.CloseWrite()
		} else {
			conn.Close()
		}
	}()
	io.Copy(os.Stdout, conn)
	conn.Close()
}
