// TLS passthrough tunnels: a visitor's ClientHello naming a TLS tunnel is
// piped whole to its client, never terminated here.

package edge

import (
	"context"
	"io"
	"net"
	"time"

	"github.com/tunnelhq/tunnel/pkg/limit"
	"github.com/tunnelhq/tunnel/pkg/name"
	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/sni"
)

// passthrough reads the ClientHello on raw (within hctx's deadline, the
// TLS handshake timeout) and, if its server name is a TLS tunnel's, pipes
// the connection to that tunnel and reports passed: the connection is then
// done with. Otherwise it returns the connection for the edge's own TLS
// handshake, with the bytes read replayed in front of it. Anything the SNI
// reader does not understand goes that way too, so crypto/tls refuses it
// as before (a plain-HTTP request still gets its 400). A TLS tunnel whose
// client is away is waited for (Config.OfflineWait), then closed: its name
// never reaches the edge's certificates, so no ACME order is ever made
// for it.
func (s *Server) passthrough(hctx, ctx context.Context, raw net.Conn, guard *limit.Conn) (replay net.Conn, passed bool) {
	if d, ok := hctx.Deadline(); ok {
		raw.SetReadDeadline(d)
	}
	serverName, read, err := sni.Read(raw)
	raw.SetReadDeadline(time.Time{})
	replay = &replayConn{Conn: raw, pending: read}
	if err != nil || serverName == "" {
		return replay, false
	}
	label, err := name.FromHost(serverName, s.cfg.Domain)
	if err != nil || label == "" || s.registry.Kind(label) != proto.KindTLS {
		return replay, false
	}
	guard.HandshakeDone() // the handshake is the tunnel's service's now
	rt, err := s.proxy.lookup(ctx, label)
	if err != nil {
		s.log.Debug().Err(err).Str("host", serverName).Str("remote_addr", raw.RemoteAddr().String()).Msg("tls tunnel not served")
		s.ops.metrics.Connection(proto.KindTLS, "error", 0, 0)
		raw.Close()
		return nil, true
	}
	if ti, ok := tunnelOf(rt, label); !ok || ti.kind != proto.KindTLS {
		raw.Close()
		return nil, true
	}
	s.serveTunnelConn(ctx, replay, rt, label, proto.KindTLS, "", func() error { return nil })
	return nil, true
}

// replayConn is a connection whose first bytes, already read, are read
// again: the ClientHello the SNI reader took. CloseWrite reaches the TCP
// connection, so a passthrough tunnel passes half-closes on.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// WriteTo lets io.Copy from the connection use the TCP connection's own
// path (splice, sendfile) once the replayed bytes are out.
func (c *replayConn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(c.pending) > 0 {
		n, err := w.Write(c.pending)
		total += int64(n)
		c.pending = c.pending[n:]
		if err != nil {
			return total, err
		}
	}
	n, err := io.Copy(w, c.Conn)
	return total + n, err
}

func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
