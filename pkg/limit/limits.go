package limit

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/expiring"
)

// Config holds the bounds. tunneld's edge.Config has the same fields, with
// their defaults and validation; the edge copies them here. Zero values are
// not meaningful: every count and duration must be positive.
type Config struct {
	// MaxHandshakes caps connections in their handshake (TLS, and a
	// client's Hello) across the server.
	MaxHandshakes int
	// MaxHandshakesPerIP caps handshakes in progress from one source.
	MaxHandshakesPerIP int
	// MaxSessionsPerIP caps tunnel client sessions from one source.
	MaxSessionsPerIP int
	// MaxStreamsPerTunnel caps the visitor requests in flight through one
	// tunnel.
	MaxStreamsPerTunnel int
	// MaxRequestsPerVisitor caps the requests in flight through one tunnel
	// from one visitor source; above MaxStreamsPerTunnel it changes nothing.
	MaxRequestsPerVisitor int
	// AuthFailDelay is the wait imposed on a source's next authentication
	// after AuthFreeFailures failures, doubling with each further failure.
	AuthFailDelay time.Duration
	// AuthFailMaxDelay caps AuthFailDelay's growth.
	AuthFailMaxDelay time.Duration

	// VisitorIdleTimeout bounds how long a read of a visitor's request
	// body or a write of its response may make no progress (Pacer).
	VisitorIdleTimeout time.Duration
	// SlowReaderBudget bounds, in bytes, what stalled and abandoned
	// responses may hold in all (Pacer).
	SlowReaderBudget int64
	// StreamWindow is a tunnel stream's receive window in bytes: what a
	// client may push into a stream nobody reads (Pacer).
	StreamWindow int64
	// Linger is how long an abandoned response's stream may keep its
	// receive buffer: until the server resets a stream whose client does
	// not close its side (mux.ServerStreamCloseTimeout) (Pacer).
	Linger time.Duration
}

// DefaultConfig returns the bounds tunneld runs with unless told otherwise
// (edge.DefaultConfig takes them from here, and tunneld's flags from
// there). StreamWindow and Linger are the session's, so the caller sets
// them from its mux configuration.
func DefaultConfig() Config {
	return Config{
		MaxHandshakes:         4096,
		MaxHandshakesPerIP:    256,
		MaxSessionsPerIP:      16,
		MaxStreamsPerTunnel:   256,
		MaxRequestsPerVisitor: 16,
		AuthFailDelay:         250 * time.Millisecond,
		AuthFailMaxDelay:      5 * time.Second,
		VisitorIdleTimeout:    60 * time.Second,
		SlowReaderBudget:      256 << 20,
	}
}

// Recorder is what the limits report each refusal or delay to. kind names
// what was limited: "handshake", "session", "auth", "stream", "visitor",
// "visitor_idle", "slow_reader", "slow_reader_refused", "visitor_auth". It is a small
// fixed set, fit for a metric label. Nil records nothing.
type Recorder interface {
	RateLimited(kind string)
}

type nopRecorder struct{}

func (nopRecorder) RateLimited(string) {}

// RetryAfter is what a visitor refused for a busy tunnel is told to wait.
const RetryAfter = time.Second

// AuthFreeFailures is how many failed authentications a source address gets
// before its attempts are delayed: a person mistyping a token is not slowed.
const AuthFreeFailures = 3

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

// SourceKey is the address a limit counts against: the IP, or its /64 for
// IPv6. An address that cannot be parsed counts as the zero prefix, so
// unparsable peers share one budget rather than escaping the limits.
func SourceKey(addr net.Addr) netip.Prefix {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Prefix{}
	}
	return AddrKey(ap.Addr())
}

// AddrKey is SourceKey for an address already parsed.
func AddrKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// Session is a tunnel client's session as the tunnels-per-token count sees
// it: it counts until Done is closed.
type Session interface {
	Done() <-chan struct{}
}

// Limits keeps the books of every bound but the slow-reader one (Pacer):
// handshakes, sessions, tunnels per account, streams per tunnel and per
// visitor source, and failed authentications. It is safe for concurrent
// use.
type Limits struct {
	cfg Config
	log zerolog.Logger
	now func() time.Time
	rec Recorder // counts every refusal or delay, by kind

	// The counters of what is in use (handshakes, sessions, tunnels,
	// streams, waiters) are plain maps, not expiring ones: an entry lives
	// exactly as long as what it counts, and evicting one would free a slot
	// still held. They are bounded by the limits they count against.
	mu            sync.Mutex
	handshakes    int
	handshakesBy  map[netip.Prefix]int
	sessionsBy    map[netip.Prefix]int
	tunnelsBy     map[string]map[Session]int               // account → live session → tunnels
	sweepAt       int                                      // sweep tunnelsBy when it grows past this
	streamsBy     map[string]int                           // tunnel name → streams in use
	visitorsBy    map[visitorKey]int                       // tunnel and visitor source → streams in use
	waitersBy     map[visitorKey][]*Slot                   // requests waiting for their source's share, oldest first
	authFailures  *expiring.Table[netip.Prefix, int]       // source → failures, until authForget after its last
	visitorAuth   *expiring.Table[netip.Prefix, authFails] // visitor source → failed tunnel passwords, until authForget after its last
	refusedBursts *expiring.Table[netip.Prefix, struct{}]  // for a minute after a source's refused connection was logged
}

// New returns empty books for cfg. Refusals are logged to log and counted
// by rec (nil: not counted).
func New(cfg Config, log zerolog.Logger, rec Recorder) *Limits {
	if rec == nil {
		rec = nopRecorder{}
	}
	return &Limits{
		cfg:           cfg,
		log:           log,
		rec:           rec,
		now:           time.Now,
		handshakesBy:  make(map[netip.Prefix]int),
		sessionsBy:    make(map[netip.Prefix]int),
		tunnelsBy:     make(map[string]map[Session]int),
		streamsBy:     make(map[string]int),
		visitorsBy:    make(map[visitorKey]int),
		waitersBy:     make(map[visitorKey][]*Slot),
		authFailures:  expiring.New[netip.Prefix, int](maxTrackedSources, authForget),
		visitorAuth:   expiring.New[netip.Prefix, authFails](maxTrackedSources, authForget),
		refusedBursts: expiring.New[netip.Prefix, struct{}](maxTrackedSources, time.Minute),
	}
}

// Conn holds one connection's share of the limits: a handshake slot, and
// for a tunnel client a session of its source. Its methods are safe for
// concurrent use; Release gives all of it back and is idempotent, like
// HandshakeDone.
type Conn struct {
	l       *Limits
	src     netip.Prefix
	mu      sync.Mutex
	inHS    bool
	session bool
}

// AdmitConn takes a handshake slot for a new connection, or reports false
// when the server or the connection's source address has too many
// handshakes in progress. Refused connections should be closed without a
// word: anything more would cost the resources the limit protects.
func (l *Limits) AdmitConn(remote net.Addr) (*Conn, bool) {
	src := SourceKey(remote)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.handshakes >= l.cfg.MaxHandshakes || l.handshakesBy[src] >= l.cfg.MaxHandshakesPerIP {
		l.rec.RateLimited("handshake")
		l.logRefusedLocked(src)
		return nil, false
	}
	l.handshakes++
	l.handshakesBy[src]++
	return &Conn{l: l, src: src, inHS: true}, true
}

// logRefusedLocked logs a refused connection once per source per minute, so
// a flood does not become a flood of log lines.
func (l *Limits) logRefusedLocked(src netip.Prefix) {
	now := l.now()
	if _, ok := l.refusedBursts.Get(src, now); ok {
		return
	}
	l.refusedBursts.Put(src, struct{}{}, now)
	l.log.Warn().Str("source", src.String()).Int("handshakes", l.handshakes).
		Msg("too many handshakes in progress; refusing connections (logged once a minute per source)")
}

// Source is the source address the connection counts against.
func (g *Conn) Source() netip.Prefix { return g.src }

// HandshakeDone gives back the connection's handshake slot: the TLS
// handshake is over for a visitor, or the Hello is answered for a client.
func (g *Conn) HandshakeDone() {
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

// StartSession counts the connection as a tunnel session of its source, or
// reports (and records, kind "session") false when the source has
// MaxSessionsPerIP already.
func (g *Conn) StartSession() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.session {
		return true
	}
	g.l.mu.Lock()
	defer g.l.mu.Unlock()
	if g.l.sessionsBy[g.src] >= g.l.cfg.MaxSessionsPerIP {
		g.l.rec.RateLimited("session")
		return false
	}
	g.l.sessionsBy[g.src]++
	g.session = true
	return true
}

// Release gives back everything the connection holds.
func (g *Conn) Release() {
	g.HandshakeDone()
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

// AuthDelay is how long src's next authentication must wait: nothing for
// its first AuthFreeFailures failures, then AuthFailDelay doubling with
// each further failure up to AuthFailMaxDelay. A delay is recorded (kind
// "auth"): call it once per authentication.
func (l *Limits) AuthDelay(src netip.Prefix) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	failures, _ := l.authFailures.Get(src, l.now())
	d := backoff(failures, l.cfg.AuthFailDelay, l.cfg.AuthFailMaxDelay)
	if d > 0 {
		l.rec.RateLimited("auth")
	}
	return d
}

func backoff(failures int, base, max time.Duration) time.Duration {
	n := failures - AuthFreeFailures
	if n < 0 {
		return 0
	}
	d := base
	for ; n > 0 && d < max; n-- {
		d *= 2
	}
	return min(d, max)
}

// AuthFailed records a failed authentication from src and logs the start of
// a burst: the first failure that makes src's next attempt wait. Later
// failures of the same burst are logged at debug level only.
func (l *Limits) AuthFailed(src netip.Prefix, log zerolog.Logger) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	failures, _ := l.authFailures.Get(src, now)
	failures++
	if !l.authFailures.PutIfRoom(src, failures, now) {
		return
	}
	next := backoff(failures, l.cfg.AuthFailDelay, l.cfg.AuthFailMaxDelay)
	if failures == AuthFreeFailures {
		log.Warn().Str("source", src.String()).Int("failures", failures).Dur("delay", next).
			Msg("repeated authentication failures; delaying further attempts from this source (logged once per burst)")
	} else {
		log.Debug().Str("source", src.String()).Int("failures", failures).Dur("delay", next).Msg("authentication failed")
	}
}

// AddTunnels counts n tunnels of sess against its account's limit of most
// across all of the account's live sessions, or reports false and the
// tunnels the account has open already. Sessions that have ended (replaced
// by this one, or gone) no longer count; they are swept here, so nothing
// needs to tell the limits when a session ends.
func (l *Limits) AddTunnels(account string, sess Session, n, most int) (open int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	live := l.tunnelsBy[account]
	total := 0
	for s, k := range live {
		select {
		case <-s.Done():
			delete(live, s)
		default:
			total += k
		}
	}
	if total+n > most {
		return total, false
	}
	if live == nil {
		live = make(map[Session]int)
		l.tunnelsBy[account] = live
	}
	live[sess] = n
	// Accounts whose sessions have all ended are dropped on their next
	// connect; sweep the rest now and then so the map stays small. The
	// next sweep waits until the map has doubled, so with many accounts
	// connected a connect costs O(1) amortised instead of a walk over
	// every account under the lock each visitor request takes.
	if len(l.tunnelsBy) > 1024 && len(l.tunnelsBy) > l.sweepAt {
		for acct, m := range l.tunnelsBy {
			for s := range m {
				select {
				case <-s.Done():
					delete(m, s)
				default:
				}
			}
			if len(m) == 0 {
				delete(l.tunnelsBy, acct)
			}
		}
		l.sweepAt = 2 * len(l.tunnelsBy)
	}
	return total, true
}

// Why AcquireStream (or Pacer.Admit) refused a request; each is also the
// kind recorded.
const (
	RefusedTunnel     = "stream"              // the tunnel has MaxStreamsPerTunnel in flight
	RefusedVisitor    = "visitor"             // the source has its MaxRequestsPerVisitor share
	RefusedSlowReader = "slow_reader_refused" // the SlowReaderBudget is full and the source holds some of it
)

// visitorKey is one visitor source's requests to one tunnel.
type visitorKey struct {
	name string
	src  netip.Prefix
}

// PerVisitor is the share of a tunnel's slots one source may hold.
func (l *Limits) PerVisitor() int {
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

// Slot is one of a tunnel's stream slots, held by one request of one
// visitor source (AcquireStream). A request over its source's share waits
// as a Slot not yet granted: when a slot is handed to it, granted is set and
// ready closed, both under Limits.mu.
type Slot struct {
	l     *Limits
	key   visitorKey
	ready chan struct{} // nil: granted at once, never waited

	// Guarded by l.mu.
	granted, released bool
}

// AcquireStream takes one of the tunnel's MaxStreamsPerTunnel stream slots
// for a request from the visitor source src, within that source's share
// (PerVisitor), or reports (and records) why not: RefusedTunnel at once
// when all the slots are in use, RefusedVisitor when src holds its share
// and either visitorQueue of its requests already wait or ctx ends or
// visitorQueueWait passes before one of its requests finishes. The Slot's
// Release gives it back. (A Slot rather than a release func: a func
// carrying its own once-only state cost each request two allocations.)
func (l *Limits) AcquireStream(ctx context.Context, name string, src netip.Prefix) (slot *Slot, refusal string) {
	key := visitorKey{name, src}
	l.mu.Lock()
	if l.streamsBy[name] >= l.cfg.MaxStreamsPerTunnel {
		l.mu.Unlock()
		l.rec.RateLimited(RefusedTunnel)
		return nil, RefusedTunnel
	}
	if l.visitorsBy[key] < l.PerVisitor() {
		l.streamsBy[name]++
		l.visitorsBy[key]++
		l.mu.Unlock()
		return &Slot{l: l, key: key, granted: true}, ""
	}
	if len(l.waitersBy[key]) >= visitorQueue {
		l.mu.Unlock()
		l.rec.RateLimited(RefusedVisitor)
		return nil, RefusedVisitor
	}
	w := &Slot{l: l, key: key, ready: make(chan struct{})}
	l.waitersBy[key] = append(l.waitersBy[key], w)
	l.mu.Unlock()

	timer := time.NewTimer(visitorQueueWait)
	defer timer.Stop()
	select {
	case <-w.ready:
		return w, ""
	case <-ctx.Done():
	case <-timer.C:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if w.granted { // handed a slot as the wait ended
		return w, ""
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
	l.rec.RateLimited(RefusedVisitor)
	return nil, RefusedVisitor
}

// Release gives the slot back, once (it is safe to call more than once):
// to its source's oldest waiting request if there is one (the counts
// stay), else to the counts.
func (s *Slot) Release() {
	l := s.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.released {
		return
	}
	s.released = true
	if ws := l.waitersBy[s.key]; len(ws) > 0 {
		w := ws[0]
		if len(ws) == 1 {
			delete(l.waitersBy, s.key)
		} else {
			l.waitersBy[s.key] = ws[1:]
		}
		w.granted = true
		close(w.ready)
		return
	}
	decr(l.streamsBy, s.key.name)
	decr(l.visitorsBy, s.key)
}

// VisitorAuthFreeFailures is how many wrong passwords for tunnels (basic
// auth, checked by the edge) a visitor source may send before it is refused
// for a while: a person mistyping is not slowed, a guesser is.
const VisitorAuthFreeFailures = 5

// The wait imposed on a visitor source past its free failures: it starts at
// visitorAuthDelay after the last failure and doubles with each further one
// up to visitorAuthMaxDelay. The refusal costs nothing (no hash is checked
// while it lasts), so unlike AuthDelay the request is answered at once, not
// held.
const (
	visitorAuthDelay    = time.Second
	visitorAuthMaxDelay = time.Minute
)

// authFails is a visitor source's record of wrong passwords.
type authFails struct {
	n    int
	last time.Time
}

// VisitorAuthWait is how long the visitor source src must still wait before
// a password it sends for a tunnel is checked: zero unless it sent more than
// VisitorAuthFreeFailures wrong ones lately. A positive wait is counted as
// a "visitor_auth" refusal.
func (l *Limits) VisitorAuthWait(src netip.Prefix) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	f, _ := l.visitorAuth.Get(src, now)
	if f.n < VisitorAuthFreeFailures {
		return 0
	}
	d := visitorAuthDelay
	for n := f.n - VisitorAuthFreeFailures; n > 0 && d < visitorAuthMaxDelay; n-- {
		d *= 2
	}
	wait := f.last.Add(min(d, visitorAuthMaxDelay)).Sub(now)
	if wait <= 0 {
		return 0
	}
	l.rec.RateLimited("visitor_auth")
	return wait
}

// VisitorAuthFailed records a wrong password for a tunnel from the visitor
// source src, and logs the failure that starts its wait (once per burst).
// The table is bounded like the client one: past maxTrackedSources, new
// sources are not recorded.
func (l *Limits) VisitorAuthFailed(src netip.Prefix, log zerolog.Logger) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	f, _ := l.visitorAuth.Get(src, now)
	f.n++
	f.last = now
	if !l.visitorAuth.PutIfRoom(src, f, now) {
		return
	}
	if f.n == VisitorAuthFreeFailures {
		log.Warn().Str("source", src.String()).Int("failures", f.n).
			Msg("repeated wrong tunnel passwords; refusing further attempts from this source for a while (logged once per burst)")
	}
}
