// The edge's side of package limit: what needs the Server, a Session or a
// request's routing. The bounds themselves, and why, are in package limit.

package edge

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/limit"
	"github.com/tunnelhq/tunnel/pkg/metrics"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// limitConfig is what package limit needs of cfg.
func limitConfig(cfg Config) limit.Config {
	return limit.Config{
		MaxHandshakes:         cfg.MaxHandshakes,
		MaxHandshakesPerIP:    cfg.MaxHandshakesPerIP,
		MaxSessionsPerIP:      cfg.MaxSessionsPerIP,
		MaxStreamsPerTunnel:   cfg.MaxStreamsPerTunnel,
		MaxRequestsPerVisitor: cfg.MaxRequestsPerVisitor,
		AuthFailDelay:         cfg.AuthFailDelay,
		AuthFailMaxDelay:      cfg.AuthFailMaxDelay,
		VisitorIdleTimeout:    cfg.VisitorIdleTimeout,
		SlowReaderBudget:      cfg.SlowReaderBudget,
		StreamWindow:          int64(cfg.Mux.StreamWindow),
		// An abandoned response's stream keeps its buffer until the
		// client closes its side, or tunneld resets it at the latest.
		Linger: mux.ServerStreamCloseTimeout,
	}
}

// newPacer builds the Server's pacer and exports what it holds as a gauge.
func newPacer(cfg Config, log zerolog.Logger, m *metrics.Set) *limit.Pacer {
	var rec limit.Recorder
	if m != nil {
		rec = m
	}
	p := limit.NewPacer(limitConfig(cfg), log, rec)
	if m != nil {
		err := m.GaugeFunc("slow_reader_bytes",
			"Bytes counted against --slow-reader-budget: responses whose write to the visitor is blocked, and abandoned ones whose stream may still hold data.",
			func() float64 { return float64(p.HeldBytes()) })
		if err != nil {
			// Another Server shares these metrics and reports its own.
			log.Debug().Err(err).Msg("slow reader gauge not registered")
		}
	}
	return p
}

// admitLimited is admit with the limits around it: sessions per source, the
// delay after failed authentications, and tunnels per token across
// sessions. It gives back g's handshake slot when it returns.
func (s *Server) admitLimited(ctx context.Context, ms *mux.ServerSession, hello *proto.Hello, remote string, g *limit.Conn) (*Session, *proto.Error) {
	defer g.HandshakeDone()
	if !g.StartSession() {
		return nil, &proto.Error{Code: proto.CodeRateLimited,
			Message: fmt.Sprintf("too many tunnel sessions from your address (at most %d)", s.cfg.MaxSessionsPerIP)}
	}
	if hello.Token != "" {
		if d := s.limits.AuthDelay(g.Source()); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, &proto.Error{Code: proto.CodeDraining, Message: "server is shutting down"}
			case <-ms.Done():
				t.Stop()
				return nil, &proto.Error{Code: proto.CodeBadRequest, Message: "session closed"}
			}
		}
	}
	sess, perr := s.admit(ctx, ms, hello, remote)
	if perr != nil {
		if perr.Code == proto.CodeBadToken && hello.Token != "" {
			s.limits.AuthFailed(g.Source(), s.log.With().Str("remote_addr", remote).Logger())
		}
		return nil, perr
	}
	if perr := s.addTunnels(sess); perr != nil {
		s.unregister(sess)
		return nil, perr
	}
	return sess, nil
}

// addTunnels counts sess's tunnels against its owner's limit (the token's
// own, or MaxTunnelsPerToken) across all of the owner's live sessions;
// anonymous clients count per source address (accountKey).
func (s *Server) addTunnels(sess *Session) *proto.Error {
	max := s.cfg.MaxTunnelsPerToken
	if sess.tokenMaxTunnels > 0 {
		max = sess.tokenMaxTunnels
	}
	// On a cluster, the account's tunnels on other nodes count too (from
	// the node's view of the table: see package cluster on the bound).
	foreign := 0
	if fc, ok := s.registry.(interface{ foreignTunnels(string) int }); ok {
		foreign = fc.foreignTunnels(sess.accountKey())
	}
	if open, ok := s.limits.AddTunnels(sess.accountKey(), sess.mux, len(sess.Names), max-foreign); !ok {
		open += foreign
		return &proto.Error{Code: proto.CodeTooManyTunnels,
			Message: fmt.Sprintf("this token has %d tunnels open and asked for %d more, at most %d allowed", open, len(sess.Names), max)}
	}
	return nil
}

// visitorSource is the source address limits count a visitor request
// against: the connection's peer, or the visitor behind a trusted proxy.
func (s *Server) visitorSource(r *http.Request) netip.Prefix {
	addr := s.visitorAddr(r)
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return limit.AddrKey(ap.Addr())
	}
	if a, err := netip.ParseAddr(addr); err == nil {
		return limit.AddrKey(a)
	}
	return netip.Prefix{}
}

// paced wraps the visitor handler: every request's body reads and response
// writes are timed by s.pacer.
func (s *Server) paced(next http.Handler) http.Handler {
	return s.pacer.Wrap(next, s.visitorSource)
}

// acquireVisitor takes a slot of the tunnel name for the request, within
// its source's share, or says why not: errTunnelBusy when the tunnel is
// full, errVisitorShare when the visitor has its share, errSlowReader when
// it holds some of a full SlowReaderBudget. The caller releases the slot.
func (s *Server) acquireVisitor(w http.ResponseWriter, r *http.Request, name string) (*limit.Slot, error) {
	return s.acquireSlot(r.Context(), limit.VisitOf(w), name) // the proxy runs under paced, always
}

// acquireSlot is acquireVisitor for the visit v, paced by s.pacer.
func (s *Server) acquireSlot(ctx context.Context, v *limit.Visit, name string) (*limit.Slot, error) {
	src := v.Source()
	if !s.pacer.Admit(src) {
		return nil, errSlowReader
	}
	slot, refusal := s.limits.AcquireStream(ctx, name, src)
	switch refusal {
	case "":
		v.Proxied()
		return slot, nil
	case limit.RefusedVisitor:
		return nil, errVisitorShare
	default:
		return nil, errTunnelBusy
	}
}
