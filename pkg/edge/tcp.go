// TCP tunnels: a visitor's "tunnel connect" on the one TLS port (ALPN
// proto.ConnectALPN), authorised before anything reaches the tunnel's client.

package edge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/limit"
	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// refuseWait bounds how long a refusal waits for the visitor to read it
// and hang up, so the refusal is not lost to a TCP reset.
const refuseWait = time.Second

// handleConnect serves one visitor of a TCP tunnel: it reads the Connect
// frame within the handshake timeout, holding the connection's handshake
// slot (package limit) until the visitor is authorised, so anonymous
// attempts cost what any handshake costs and no more. Every refusal about
// the tunnel is the same bad_token, whether the tunnel does not exist or
// the token may not reach it, and no stream is opened to the tunnel's
// client before the token is checked. An authorised visitor takes a stream
// slot of the tunnel like an HTTP request does, and its bytes are relayed
// with half-closes passed on both ways.
func (s *Server) handleConnect(ctx context.Context, conn *tls.Conn, guard *limit.Conn) {
	defer conn.Close()
	remote := conn.RemoteAddr().String()
	log := s.log.With().Str("remote_addr", remote).Logger()
	conn.SetDeadline(time.Now().Add(s.cfg.Mux.HandshakeTimeout))
	stopHS := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	c, err := proto.ReadAs[*proto.Connect](conn)
	if err != nil {
		stopHS()
		guard.HandshakeDone()
		if isBadInput(err) {
			log.Warn().Err(err).Msg("connect refused")
			s.refuseConnect(conn, &proto.Error{Code: proto.CodeBadRequest, Message: "malformed connect"})
		} else {
			log.Debug().Err(err).Msg("connect failed")
		}
		return
	}
	if c.Version != proto.Version {
		stopHS()
		guard.HandshakeDone()
		s.refuseConnect(conn, &proto.Error{Code: proto.CodeUnsupportedVersion,
			Message: fmt.Sprintf("visitor speaks %d, server speaks %d", c.Version, proto.Version)})
		return
	}
	rt, who, perr := s.authorizeConnect(ctx, c, guard, log)
	stopHS()
	guard.HandshakeDone()
	if perr != nil {
		log.Debug().Str("tunnel", c.Tunnel).Str("code", string(perr.Code)).Msg("connect refused")
		s.ops.metrics.Connection(proto.KindTCP, "refused", 0, 0)
		s.refuseConnect(conn, perr)
		return
	}
	s.serveTunnelConn(ctx, conn, rt, c.Tunnel, proto.KindTCP, who, func() error {
		if err := proto.WriteFrame(conn, &proto.StreamAck{}); err != nil {
			return err
		}
		return conn.SetDeadline(time.Time{})
	})
}

// isBadInput reports whether err is a peer's protocol violation rather
// than a connection that ended.
func isBadInput(err error) bool {
	return errors.Is(err, proto.ErrMalformed) || errors.Is(err, proto.ErrUnknownType) ||
		errors.Is(err, proto.ErrFrameTooLarge) || errors.Is(err, proto.ErrUnexpected) ||
		errors.Is(err, proto.ErrTruncatedFrame)
}

// refuseConnect writes e to the visitor and closes its side, waiting
// briefly for the visitor to hang up.
func (s *Server) refuseConnect(conn *tls.Conn, e *proto.Error) {
	conn.SetDeadline(time.Now().Add(refuseWait))
	if err := proto.WriteFrame(conn, e); err != nil {
		return
	}
	conn.CloseWrite()
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 4096))
}

// errConnectRefused is every refusal about the tunnel itself: a visitor
// cannot tell a tunnel that does not exist from one it may not reach.
func errConnectRefused(tunnel string) *proto.Error {
	return &proto.Error{Code: proto.CodeBadToken,
		Message: fmt.Sprintf("no TCP tunnel %q that this token may reach", tunnel)}
}

// authorizeConnect finds the TCP tunnel c names and checks c's token
// against it: the owner's own token, a token the owner allowed, or one the
// tokens file grants the name. Failures count against the source's auth
// delay, as a bad client token does. who names the visitor for the access
// log: its token's label, or "allowed" for a token the owner listed.
func (s *Server) authorizeConnect(ctx context.Context, c *proto.Connect, g *limit.Conn, log zerolog.Logger) (Route, string, *proto.Error) {
	if d := s.limits.AuthDelay(g.Source()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, "", &proto.Error{Code: proto.CodeDraining, Message: "server is shutting down"}
		}
	}
	rt, who := s.connectTarget(ctx, c)
	if rt == nil {
		s.limits.AuthFailed(g.Source(), log)
		return nil, "", errConnectRefused(c.Tunnel)
	}
	return rt, who, nil
}

// connectTarget returns the route serving c.Tunnel as a TCP tunnel (a
// session here, or on another node of a cluster) if c.Token may reach it,
// and who the token is; nil otherwise.
//
// The token is checked against the tokens file first, whatever the tunnel,
// so that the time taken says nothing about which names exist. A tunnel
// whose owner is away (reconnecting) is waited for, up to OfflineWait, only
// for a token the tokens file knows: to anyone else an away tunnel is
// refused at once, like one that does not exist.
func (s *Server) connectTarget(ctx context.Context, c *proto.Connect) (Route, string) {
	if c.Token == "" {
		return nil, ""
	}
	var id *token.Identity
	if s.cfg.Auth != nil {
		id, _ = s.cfg.Auth.Authenticate(c.Token)
	}
	if s.registry.Kind(c.Tunnel) != proto.KindTCP {
		return nil, ""
	}
	rt, _ := s.registry.Lookup(c.Tunnel)
	if rt == nil && id != nil {
		var err error
		if rt, err = s.proxy.lookup(ctx, c.Tunnel); err != nil {
			return nil, ""
		}
	}
	if rt == nil {
		return nil, ""
	}
	ti, ok := tunnelOf(rt, c.Tunnel)
	if !ok || ti.kind != proto.KindTCP {
		return nil, ""
	}
	switch {
	case id != nil && id.ID == ti.owner:
		return rt, id.Label
	case id != nil && id.MayConnect(c.Tunnel):
		return rt, id.Label
	}
	sum := sha256.Sum256([]byte(c.Token))
	allowed := 0
	for _, h := range ti.allow {
		allowed |= subtle.ConstantTimeCompare(sum[:], h[:])
	}
	if allowed == 1 {
		if id != nil {
			return rt, id.Label
		}
		return rt, "allowed"
	}
	return nil, ""
}

// routeTunnel is what a TCP or TLS visitor's checks need of a route's
// tunnel: its kind, its owner, and the tokens its owner allowed.
type routeTunnel struct {
	kind, owner string
	allow       [][sha256.Size]byte
}

// tunnelOf returns what rt knows of its tunnel name: a local session's
// fields, or another node's record.
func tunnelOf(rt Route, name string) (routeTunnel, bool) {
	switch r := rt.(type) {
	case *Session:
		return routeTunnel{kind: r.Kind(name), owner: r.Owner, allow: r.allow[name]}, true
	case *poolRoute:
		// Every member has the same kind and allowed tokens (poolFits).
		ms := r.list()
		if r.name != name || len(ms) == 0 {
			return routeTunnel{}, false
		}
		return tunnelOf(ms[0], name)
	case *remoteRoute:
		if r.name != name {
			return routeTunnel{}, false
		}
		return routeTunnel{kind: r.kind, owner: r.owner, allow: r.allow}, true
	}
	return routeTunnel{}, false
}

// serveTunnelConn relays an accepted visitor connection of a TCP or TLS
// tunnel (kind) to rt: it takes one of the tunnel's stream slots within
// the visitor's share, opens a stream, calls ready once the client's local
// service is connected (the Connect answer, for TCP), and copies both ways
// until both are done. The connection counts in the tunnel's figures (one
// "request"), the metrics and the access log.
func (s *Server) serveTunnelConn(ctx context.Context, conn net.Conn, rt Route, tunnel, kind, who string, ready func() error) {
	start := time.Now()
	remote := conn.RemoteAddr().String()
	log := s.log.With().Str("remote_addr", remote).Str("tunnel", tunnel).Str("session_id", rt.String()).Logger()
	fail := func(e *proto.Error, err error) {
		log.Debug().Err(err).Msg("tunnel connection failed")
		s.ops.metrics.Connection(kind, "error", 0, 0)
		if kind == proto.KindTCP && e != nil {
			if tc, ok := conn.(*tls.Conn); ok {
				s.refuseConnect(tc, e)
			}
		}
	}
	slot, refusal := s.limits.AcquireStream(ctx, tunnel, limit.SourceKey(conn.RemoteAddr()))
	if refusal != "" {
		fail(&proto.Error{Code: proto.CodeRateLimited, Message: "the tunnel has too many connections (" + refusal + ")"}, errors.New(refusal))
		return
	}
	defer slot.Release()
	octx, cancel := context.WithTimeout(ctx, s.cfg.Mux.HandshakeTimeout)
	openStart := time.Now()
	var st net.Conn
	var err error
	if pool, ok := rt.(*poolRoute); ok {
		// The connection counts under the member that serves it.
		var m Route
		if st, m, err = pool.openMember(octx, &proto.StreamHeader{Tunnel: tunnel, RemoteAddr: remote},
			func() { s.ops.poolSkips.Add(1) }); m != nil {
			rt = m
		}
	} else {
		st, err = rt.Open(octx, &proto.StreamHeader{Tunnel: tunnel, RemoteAddr: remote})
	}
	cancel()
	s.ops.streamOpened(openStart, err)
	if err != nil {
		var perr *proto.Error
		if !errors.As(err, &perr) {
			perr = &proto.Error{Code: proto.CodeLocalUnreachable, Message: "the tunnel's client did not answer"}
		}
		fail(perr, err)
		return
	}
	if err := ready(); err != nil {
		st.Close()
		fail(nil, err)
		return
	}
	counts := s.ops.counters(rt, tunnel)
	if counts != nil {
		counts.InFlight.Add(1)
	}
	// The session's end (its Close at our shutdown, or the client gone)
	// ends the stream, and with it both copies.
	in, out := relay(conn, st)
	if counts != nil {
		counts.InFlight.Add(-1)
		counts.Requests.Add(1)
		counts.BytesIn.Add(in)
		counts.BytesOut.Add(out)
	}
	s.ops.metrics.Connection(kind, "ok", in, out)
	if s.ops.access != nil {
		s.ops.access.Info().Str("proto", kind).Str("tunnel", tunnel).Str("session_id", rt.String()).
			Str("remote_addr", remote).Str("visitor", who).Int64("bytes_in", in).Int64("bytes_out", out).
			Dur("duration", time.Since(start)).Msg("connection")
	}
}

// relay copies between the visitor's connection and the tunnel's stream
// in both directions. A direction that ends cleanly half-closes its
// destination (a TLS close_notify, a yamux FIN) and the other keeps going;
// one that fails closes both. It returns when both are done, having closed
// both, with the bytes from the visitor (in) and to it (out).
func relay(visitor, stream net.Conn) (in, out int64) {
	done := make(chan int64, 1)
	go func() { done <- copyHalf(stream, visitor) }()
	out = copyHalf(visitor, stream)
	in = <-done
	visitor.Close()
	stream.Close()
	return in, out
}

// copyHalf copies src to dst, then half-closes dst; on an error it closes
// both, which ends the other direction too.
func copyHalf(dst, src net.Conn) int64 {
	n, err := io.Copy(dst, src)
	if err != nil {
		dst.Close()
		src.Close()
		return n
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	return n
}
