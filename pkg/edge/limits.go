// Limits that keep one hostile or broken peer from starving everyone else:
// handshakes in progress (in all and per source address), tunnel sessions per
// source address, tunnels per token across its sessions, concurrent streams
// per tunnel and per visitor source within a tunnel, and growing delays after
// failed authentication. (Slow visitors: visitors.go.)
//
// A "source address" is the client's IP address, or its /64 for IPv6, since
// one IPv6 host usually has a whole /64 to pick addresses from.

package edge

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/expiring"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// retryAfter is what a visitor refused for a busy tunnel is told to wait.
const retryAfter = time.Second

// authFreeFailures is how many failed authentications a source address gets
// before its attempts are delayed: a person mistyping a token is not slowed.
const authFreeFailures = 3

// authForget is how long a source address must go without a failed
// authentication before its count starts over. It also delimits a "burst"
// for logging.
const authForget = 10 * time.Minute

// maxTrackedSources caps the failed-authentication table, so a flood from
// many addresses cannot grow it without end. Beyond it, new addresses are not
// delayed (the per-address handshake limit still bounds each of them). It
// also caps the log-once memory of refused connections, which forgets the
// least recently logged source instead.
const maxTrackedSources = 100_000

// sourceKey is the address a limit counts against: the IP, or its /64 for
// IPv6. An address that cannot be parsed counts as the zero prefix, so
// unparsable peers share one budget rather than escaping the limits.
func sourceKey(addr net.Addr) netip.Prefix {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Prefix{}
	}
	return addrKey(ap.Addr())
}

// addrKey is sourceKey for an address already parsed.
func addrKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// limits is the Server's bookkeeping for every limit in this file. It is
// safe for concurrent use.
type limits struct {
	cfg Config
	log zerolog.Logger
	now func() time.Time
	rec RateLimitRecorder // counts every refusal or delay, by kind

	// The counters of what is in use (handshakes, sessions, tunnels,
	// streams, waiters) are plain maps, not expiring ones: an entry lives
	// exactly as long as what it counts, and evicting one would free a slot
	// still held. They are bounded by the limits they count against.
	mu            sync.Mutex
	handshakes    int
	handshakesBy  map[netip.Prefix]int
	sessionsBy    map[netip.Prefix]int
	tunnelsBy     map[string]map[*mux.ServerSession]int   // owner → live session → tunnels
	sweepAt       int                                     // sweep tunnelsBy when it grows past this
	streamsBy     map[string]int                          // tunnel name → streams in use
	visitorsBy    map[visitorKey]int                      // tunnel and visitor source → streams in use
	waitersBy     map[visitorKey][]*shareWaiter           // requests waiting for their source's share, oldest first
	authFailures  *expiring.Table[netip.Prefix, int]      // source → failures, until authForget after its last
	refusedBursts *expiring.Table[netip.Prefix, struct{}] // for a minute after a source's refused connection was logged
}

func newLimits(cfg Config, log zerolog.Logger, rec RateLimitRecorder) *limits {
	return &limits{
		cfg:           cfg,
		log:           log,
		rec:           rec,
		now:           time.Now,
		handshakesBy:  make(map[netip.Prefix]int),
		sessionsBy:    make(map[netip.Prefix]int),
		tunnelsBy:     make(map[string]map[*mux.ServerSession]int),
		streamsBy:     make(map[string]int),
		visitorsBy:    make(map[visitorKey]int),
		waitersBy:     make(map[visitorKey][]*shareWaiter),
		authFailures:  expiring.New[netip.Prefix, int](maxTrackedSources, authForget),
		refusedBursts: expiring.New[netip.Prefix, struct{}](maxTrackedSources, time.Minute),
	}
}

// connGuard holds one connection's share of the limits. release gives all
// of it back; it is idempotent, like handshakeDone.
type connGuard struct {
	l       *limits
	src     netip.Prefix
	mu      sync.Mutex
	inHS    bool
	session bool
}

// admitConn takes a handshake slot for a new connection, or reports false
// when the server or the connection's source address has too many
// handshakes in progress. Refused connections are closed without a word:
// anything more would cost the resources the limit protects.
func (l *limits) admitConn(remote net.Addr) (*connGuard, bool) {
	src := sourceKey(remote)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.handshakes >= l.cfg.MaxHandshakes || l.handshakesBy[src] >= l.cfg.MaxHandshakesPerIP {
		l.rec.RateLimited("handshake")
		l.logRefusedLocked(src)
		return nil, false
	}
	l.handshakes++
	l.handshakesBy[src]++
	return &connGuard{l: l, src: src, inHS: true}, true
}

// logRefusedLocked logs a refused connection once per source per minute, so
// a flood does not become a flood of log lines.
func (l *limits) logRefusedLocked(src netip.Prefix) {
	now := l.now()
	if _, ok := l.refusedBursts.Get(src, now); ok {
		return
	}
	l.refusedBursts.Put(src, struct{}{}, now)
	l.log.Warn().Str("source", src.String()).Int("handshakes", l.handshakes).
		Msg("too many handshakes in progress; refusing connections (logged once a minute per source)")
}

// handshakeDone gives back the connection's handshake slot: the TLS
// handshake is over for a visitor, or the Hello is answered for a client.
func (g *connGuard) handshakeDone() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.inHS {
		return
	}
	g.inHS = false
	g.l.mu.Lock()
	g.l.handshakes--
	decr(g.l.handshakesBy, g.src)
	g.l.mu.Unlock()
}

// startSession counts the connection as a tunnel session of its source, or
// reports false when the source has MaxSessionsPerIP already.
func (g *connGuard) startSession() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.session {
		return true
	}
	g.l.mu.Lock()
	defer g.l.mu.Unlock()
	if g.l.sessionsBy[g.src] >= g.l.cfg.MaxSessionsPerIP {
		return false
	}
	g.l.sessionsBy[g.src]++
	g.session = true
	return true
}

// release gives back everything the connection holds.
func (g *connGuard) release() {
	g.handshakeDone()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.session {
		g.session = false
		g.l.mu.Lock()
		decr(g.l.sessionsBy, g.src)
		g.l.mu.Unlock()
	}
}

func decr[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}

// authDelay is how long src's next authentication must wait: nothing for
// its first authFreeFailures failures, then AuthFailDelay doubling with each
// further failure up to AuthFailMaxDelay.
func (l *limits) authDelay(src netip.Prefix) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	failures, _ := l.authFailures.Get(src, l.now())
	return backoff(failures, l.cfg.AuthFailDelay, l.cfg.AuthFailMaxDelay)
}

func backoff(failures int, base, max time.Duration) time.Duration {
	n := failures - authFreeFailures
	if n < 0 {
		return 0
	}
	d := base
	for ; n > 0 && d < max; n-- {
		d *= 2
	}
	return min(d, max)
}

// authFailed records a failed authentication from src and logs the start of
// a burst: the first failure that makes src's next attempt wait. Later
// failures of the same burst are logged at debug level only.
func (l *limits) authFailed(src netip.Prefix, log zerolog.Logger) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	failures, _ := l.authFailures.Get(src, now)
	failures++
	if !l.authFailures.PutIfRoom(src, failures, now) {
		return
	}
	next := backoff(failures, l.cfg.AuthFailDelay, l.cfg.AuthFailMaxDelay)
	if failures == authFreeFailures {
		log.Warn().Str("source", src.String()).Int("failures", failures).Dur("delay", next).
			Msg("repeated authentication failures; delaying further attempts from this source (logged once per burst)")
	} else {
		log.Debug().Str("source", src.String()).Int("failures", failures).Dur("delay", next).Msg("authentication failed")
	}
}

// admitLimited is admit with the limits around it: sessions per source, the
// delay after failed authentications, and tunnels per token across
// sessions. It gives back g's handshake slot when it returns.
func (s *Server) admitLimited(ctx context.Context, ms *mux.ServerSession, hello *proto.Hello, remote string, g *connGuard) (*Session, *proto.Error) {
	defer g.handshakeDone()
	if !g.startSession() {
		s.limits.rec.RateLimited("session")
		return nil, &proto.Error{Code: proto.CodeRateLimited,
			Message: fmt.Sprintf("too many tunnel sessions from your address (at most %d)", s.cfg.MaxSessionsPerIP)}
	}
	if hello.Token != "" {
		if d := s.limits.authDelay(g.src); d > 0 {
			s.limits.rec.RateLimited("auth")
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
	sess, perr := s.admit(ms, hello, remote)
	if perr != nil {
		if perr.Code == proto.CodeBadToken && hello.Token != "" {
			s.limits.authFailed(g.src, s.log.With().Str("remote_addr", remote).Logger())
		}
		return nil, perr
	}
	if perr := s.limits.addTunnels(sess); perr != nil {
		s.unregister(sess)
		return nil, perr
	}
	return sess, nil
}

// addTunnels counts sess's tunnels against its owner's limit across all of
// the owner's live sessions. Sessions that have ended (replaced by this one,
// or gone) no longer count; they are swept here, so nothing needs to tell
// the limits when a session ends.
func (l *limits) addTunnels(sess *Session) *proto.Error {
	max := l.cfg.MaxTunnelsPerToken
	if sess.tokenMaxTunnels > 0 {
		max = sess.tokenMaxTunnels
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	live := l.tunnelsBy[sess.accountKey()] // anonymous clients: per source address
	total := 0
	for ms, n := range live {
		select {
		case <-ms.Done():
			delete(live, ms)
		default:
			total += n
		}
	}
	if total+len(sess.Names) > max {
		return &proto.Error{Code: proto.CodeTooManyTunnels,
			Message: fmt.Sprintf("this token has %d tunnels open and asked for %d more, at most %d allowed", total, len(sess.Names), max)}
	}
	if live == nil {
		live = make(map[*mux.ServerSession]int)
		l.tunnelsBy[sess.accountKey()] = live
	}
	live[sess.mux] = len(sess.Names)
	// Owners whose sessions have all ended are dropped on their next
	// connect; sweep the rest now and then so the map stays small. The
	// next sweep waits until the map has doubled, so with many owners
	// connected a connect costs O(1) amortised instead of a walk over
	// every owner under the lock each visitor request takes.
	if len(l.tunnelsBy) > 1024 && len(l.tunnelsBy) > l.sweepAt {
		for owner, m := range l.tunnelsBy {
			for ms := range m {
				select {
				case <-ms.Done():
					delete(m, ms)
				default:
				}
			}
			if len(m) == 0 {
				delete(l.tunnelsBy, owner)
			}
		}
		l.sweepAt = 2 * len(l.tunnelsBy)
	}
	return nil
}

// Why acquireStream refused a request.
const (
	refusedTunnel  = "stream"  // the tunnel has MaxStreamsPerTunnel in flight
	refusedVisitor = "visitor" // the source has its MaxRequestsPerVisitor share
)

// visitorKey is one visitor source's requests to one tunnel.
type visitorKey struct {
	name string
	src  netip.Prefix
}

// perVisitor is the share of a tunnel's slots one source may hold.
func (l *limits) perVisitor() int {
	return min(l.cfg.MaxRequestsPerVisitor, l.cfg.MaxStreamsPerTunnel)
}

// A request over its source's share waits for one of that source's own
// requests to finish, instead of being refused: a browser that asks for a
// gallery of images at once over HTTP/2 gets them all, a few at a time. At
// most visitorQueue requests of one source wait per tunnel, each for at most
// visitorQueueWait; a waiting request holds no stream and no buffer, only
// the goroutine net/http already gave it.
const (
	visitorQueue     = 256
	visitorQueueWait = 30 * time.Second
)

// shareWaiter is a request waiting for its source's share. When a slot is
// handed to it, granted is set and ready closed, both under limits.mu.
type shareWaiter struct {
	ready   chan struct{}
	granted bool
}

// acquireStream takes one of the tunnel's MaxStreamsPerTunnel stream slots
// for a request from the visitor source src, within that source's share
// (MaxRequestsPerVisitor), or reports why not: refusedTunnel at once when
// all the slots are in use, refusedVisitor when src holds its share and
// either visitorQueue of its requests already wait or ctx ends or
// visitorQueueWait passes before one of its requests finishes.
func (l *limits) acquireStream(ctx context.Context, name string, src netip.Prefix) (release func(), refusal string) {
	key := visitorKey{name, src}
	l.mu.Lock()
	if l.streamsBy[name] >= l.cfg.MaxStreamsPerTunnel {
		l.mu.Unlock()
		l.rec.RateLimited(refusedTunnel)
		return nil, refusedTunnel
	}
	if l.visitorsBy[key] < l.perVisitor() {
		l.streamsBy[name]++
		l.visitorsBy[key]++
		l.mu.Unlock()
		return l.releaser(key), ""
	}
	if len(l.waitersBy[key]) >= visitorQueue {
		l.mu.Unlock()
		l.rec.RateLimited(refusedVisitor)
		return nil, refusedVisitor
	}
	w := &shareWaiter{ready: make(chan struct{})}
	l.waitersBy[key] = append(l.waitersBy[key], w)
	l.mu.Unlock()

	timer := time.NewTimer(visitorQueueWait)
	defer timer.Stop()
	select {
	case <-w.ready:
		return l.releaser(key), ""
	case <-ctx.Done():
	case <-timer.C:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if w.granted { // handed a slot as the wait ended
		return l.releaser(key), ""
	}
	ws := l.waitersBy[key]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(l.waitersBy, key)
	} else {
		l.waitersBy[key] = ws
	}
	l.rec.RateLimited(refusedVisitor)
	return nil, refusedVisitor
}

// releaser gives back a slot of key's tunnel and source, once: to the
// source's oldest waiting request if there is one (the counts stay), else
// to the counts.
func (l *limits) releaser(key visitorKey) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if ws := l.waitersBy[key]; len(ws) > 0 {
				w := ws[0]
				if len(ws) == 1 {
					delete(l.waitersBy, key)
				} else {
					l.waitersBy[key] = ws[1:]
				}
				w.granted = true
				close(w.ready)
				return
			}
			decr(l.streamsBy, key.name)
			decr(l.visitorsBy, key)
		})
	}
}
