package mux

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/tunnelhq/tunnel/pkg/proto"
)

// Tunnel is one tunnel a client asks for.
type Tunnel struct {
	// Name is the name asked for; empty lets the server pick one.
	Name string
	// Target is the local service, host:port, that visitors reach.
	Target string
	// Access, if not nil, are the visitor access rules tunneld enforces
	// for the tunnel, passwords already hashed. Run refuses to serve
	// through a server that does not confirm them (one that predates
	// them), since the service would be open to everyone.
	Access *proto.Access
	// Kind is proto.KindHTTP (empty means it), KindTCP or KindTLS.
	Kind string
	// AllowTokens, for a TCP tunnel, are tokens besides the owner's own
	// that may reach it with "tunnel connect". Only their SHA-256 hashes
	// are sent.
	AllowTokens []string
	// Domain, for an HTTP tunnel, is a custom domain to serve besides
	// NAME.DOMAIN. Run refuses to serve through a server that does not
	// name its URL in the Welcome (one that predates custom domains),
	// since the owner would wait for visitors that never come.
	Domain string
	// Pool asks to share Name with the owner's other clients that ask for
	// it with Pool (proto.TunnelRequest.Pool): tunneld spreads visitors
	// over them. It needs a Name. Run refuses to serve through a server
	// that does not confirm the pool (one that predates pools would take
	// the name over from the other clients instead).
	Pool bool
}

// kind is t's proto kind, KindHTTP when unset.
func (t Tunnel) kind() string {
	if t.Kind == "" {
		return proto.KindHTTP
	}
	return t.Kind
}

// ClientConfig configures Run: where tunneld is, how to trust it, and what
// to expose.
type ClientConfig struct {
	Config

	// Server is tunneld's address, host:port; or several, separated by
	// commas (the nodes of a cluster). Each connect tries the servers in
	// a random order, and the addresses a host name resolves to too.
	Server string
	// TLS holds the roots that verify tunneld's certificate (nil RootCAs:
	// the system's) and the ServerName (empty: the host of the server
	// dialled). NextProtos is set by Run. Verification is never skipped.
	TLS *tls.Config
	// CAFile, if set, names the file TLS.RootCAs was read from (besides
	// the system's roots), for the message of a CertificateError; it is
	// not read.
	CAFile string
	// Token authenticates the client; empty connects anonymously.
	Token string
	// ClientVersion is reported to the server, for its logs.
	ClientVersion string
	// Tunnels are the tunnels to open, 1 to proto.MaxTunnels.
	Tunnels []Tunnel
	// OnReady, if set, is called once the server has granted the tunnels,
	// with its Welcome (public URLs in Welcome.Tunnels, in order); by
	// RunForever after every connect.
	OnReady func(*proto.Welcome)
	// OnStream, if set, is called as each data stream opens and ends (see
	// StreamEvent), from the stream's goroutine: it must return quickly.
	OnStream func(StreamEvent)
	// Copier, if set, is asked for a StreamCopier as each data stream of an
	// HTTP tunnel (TCP and TLS tunnels are never inspected) is
	// connected to its local service, from the stream's goroutine; the
	// copier it returns copies the stream's two directions instead of the
	// raw copy (the request inspector, pkg/inspect, reads HTTP in them).
	// Nil, or a nil StreamCopier, leaves the raw copy, byte for byte.
	Copier func(StreamInfo) StreamCopier
	// Backoff paces RunForever's reconnects; the zero value means
	// DefaultBackoff. Run ignores it.
	Backoff Backoff
	// MaxStreams bounds the streams tunneld may have open on the session
	// at once; each costs the client a goroutine and a connection to the
	// local service. A tunneld (compromised, or not ours) that opens more
	// ends the session, and RunForever connects again after its backoff.
	// 0 means 512 per tunnel asked for, and at least 1024: tunneld's
	// default of 256 requests in flight per tunnel plus as many idle
	// streams in its keep-alive pool.
	MaxStreams int
}

// Validate reports the first missing or bad setting.
func (c ClientConfig) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if err := validServers(c.Server); err != nil {
		return err
	}
	if c.MaxStreams < 0 {
		return fmt.Errorf("mux: max streams %d: want 0 (the default) or more", c.MaxStreams)
	}
	if len(c.Tunnels) == 0 || len(c.Tunnels) > proto.MaxTunnels {
		return fmt.Errorf("mux: %d tunnels, want 1 to %d", len(c.Tunnels), proto.MaxTunnels)
	}
	for i, t := range c.Tunnels {
		if _, _, err := net.SplitHostPort(t.Target); err != nil {
			return fmt.Errorf("mux: tunnel %d: target %q: want host:port", i, t.Target)
		}
		if !proto.ValidKind(t.kind()) {
			return fmt.Errorf("mux: tunnel %d: kind %q: want http, tcp or tls", i, t.Kind)
		}
		if len(t.AllowTokens) > 0 && t.kind() != proto.KindTCP {
			return fmt.Errorf("mux: tunnel %d: allowed tokens are for tcp tunnels only", i)
		}
		if !t.Access.Empty() && t.kind() != proto.KindHTTP {
			return fmt.Errorf("mux: tunnel %d: access rules are for http tunnels only", i)
		}
		if t.Pool && t.Name == "" {
			return fmt.Errorf("mux: tunnel %d: a pool needs a name: the clients of a pool share one", i)
		}
		if t.Pool && t.Domain != "" {
			return fmt.Errorf("mux: tunnel %d: a pool cannot serve a custom domain: one client serves a domain", i)
		}
		if t.Domain != "" && t.kind() != proto.KindHTTP {
			return fmt.Errorf("mux: tunnel %d: custom domains are for http tunnels only", i)
		}
		if len(t.AllowTokens) > proto.MaxAllowTokens {
			return fmt.Errorf("mux: tunnel %d: %d allowed tokens, at most %d", i, len(t.AllowTokens), proto.MaxAllowTokens)
		}
	}
	return nil
}

// Run dials tunneld over TLS, opens the tunnels and serves them until ctx
// ends (returns nil) or the session ends (returns Serve's error). A refusal
// by the server comes back as a *proto.Error; its Code.Permanent() says
// whether trying again can help. A certificate that no trusted CA signed, or
// that does not cover the server's host, comes back as a *CertificateError.
// Run connects once; RunForever reconnects.
func Run(ctx context.Context, cfg ClientConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	sess, targets, err := connect(ctx, cfg, cfg.Tunnels)
	if err != nil {
		return err
	}
	defer sess.Close()
	if cfg.OnReady != nil {
		cfg.OnReady(sess.Welcome())
	}
	return sess.Serve(ctx, targets)
}

// connect dials tunneld, asks for tunnels and returns the session with the
// map from each granted name to its local target.
func connect(ctx context.Context, cfg ClientConfig, tunnels []Tunnel) (*ClientSession, map[string]string, error) {
	tlsCfg := &tls.Config{}
	if cfg.TLS != nil {
		tlsCfg = cfg.TLS.Clone()
	}
	tlsCfg.NextProtos = []string{proto.ALPN}
	// The timeout covers the TLS handshake too: a server that accepts TCP
	// but never answers must not stall a reconnecting client.
	conn, server, err := dialTLS(ctx, tlsDial{
		servers: cfg.Server, timeout: cfg.DialTimeout, tls: tlsCfg,
		alpn: proto.ALPN, what: "a tunneld", caFile: cfg.CAFile, wrap: WireConn,
	})
	if err != nil {
		return nil, nil, err
	}
	hello := &proto.Hello{Version: proto.Version, ClientVersion: cfg.ClientVersion, Token: cfg.Token}
	for _, t := range tunnels {
		req := proto.TunnelRequest{Name: t.Name, Kind: t.kind(), Access: t.Access, Domain: t.Domain, Pool: t.Pool}
		for _, tok := range t.AllowTokens {
			sum := sha256.Sum256([]byte(tok))
			req.AllowTokens = append(req.AllowTokens, hex.EncodeToString(sum[:]))
		}
		hello.Tunnels = append(hello.Tunnels, req)
	}
	mc := cfg.Config
	mc.maxStreams = cfg.MaxStreams
	sess, err := Client(ctx, conn, hello, mc)
	if err != nil {
		var perr *proto.Error
		if errors.As(err, &perr) {
			return nil, nil, perr
		}
		return nil, nil, fmt.Errorf("handshake with %s: %w", server, err)
	}
	sess.onStream = cfg.OnStream
	sess.copier = cfg.Copier
	w := sess.Welcome()
	if perr := unenforced(tunnels, w); perr != nil {
		sess.Close()
		return nil, nil, perr
	}
	targets := make(map[string]string, len(tunnels))
	names := make([]string, 0, len(w.Tunnels))
	for i, t := range w.Tunnels {
		targets[t.Name] = tunnels[i].Target
		if cfg.Copier != nil && tunnels[i].kind() == proto.KindHTTP {
			if sess.copied == nil {
				sess.copied = make(map[string]bool)
			}
			sess.copied[t.Name] = true
		}
		names = append(names, Printable(t.Name, maxLoggedString))
	}
	sess.log.Info().Str("server", server).Str("names", strings.Join(names, ",")).Msg("connected")
	return sess, targets, nil
}

// unenforced is the refusal to serve when the server granted a tunnel
// without confirming the access rules asked for it: a server that predates
// them ignores them, and would let every visitor through. It is a
// permanent error, as the server's own refusals of bad rules are. So is a
// pool the server did not confirm: two clients that each believe they
// share the name would take it from each other at every reconnect.
func unenforced(tunnels []Tunnel, w *proto.Welcome) *proto.Error {
	for i, t := range w.Tunnels {
		if !tunnels[i].Access.Empty() && !t.Access {
			return &proto.Error{Code: proto.CodeBadRequest, Message: fmt.Sprintf(
				"the server does not enforce access rules (it predates them): not serving %s, which would be open to everyone",
				Printable(t.URL, maxLoggedString))}
		}
		if a := tunnels[i].Access; a != nil && len(a.OIDCAllow) > 0 && !t.OIDC {
			return &proto.Error{Code: proto.CodeBadRequest, Message: fmt.Sprintf(
				"the server does not enforce --oidc-allow (it predates OpenID Connect login): not serving %s, which would be open to everyone it does not otherwise refuse",
				Printable(t.URL, maxLoggedString))}
		}
		if d := tunnels[i].Domain; d != "" && t.DomainURL == "" {
			return &proto.Error{Code: proto.CodeBadRequest, Message: fmt.Sprintf(
				"the server does not serve the custom domain %s (it does not serve custom domains)",
				Printable(d, maxLoggedString))}
		}
		if tunnels[i].Pool && !t.Pool {
			return &proto.Error{Code: proto.CodePoolNotAllowed, Message: fmt.Sprintf(
				"the server did not confirm the pool (it predates pools, and took %s over from the other clients): not serving it",
				Printable(t.URL, maxLoggedString))}
		}
	}
	return nil
}
