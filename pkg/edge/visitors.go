// Slow and stalled visitors: a visitor that stops sending its request body
// or stops taking its response holds a slot of the tunnel, a goroutine, and
// for a response also the stream's receive buffer in yamux (up to
// Mux.StreamWindow: the client keeps pushing while nobody reads) and the
// proxy's copy buffers. Three bounds keep that cost fixed:
//
//   - progress: a read of the body or a write (or flush) of the response
//     that makes no progress for VisitorIdleTimeout is cut. Only operations
//     in progress are timed, so a long download that keeps moving, or a
//     response that is quiet between writes (server-sent events), is left
//     alone. Upgraded connections are copied outside these wrappers.
//   - share: one visitor source holds at most MaxRequestsPerVisitor of a
//     tunnel's MaxStreamsPerTunnel slots (limits.acquireStream).
//   - budget: a write blocked for stallGrace counts as holding what a
//     stream window costs (bufferCost) plus stallOverhead; over SlowReaderBudget in all, the edge cuts
//     stalled writes of the source holding the most, longest stalled first.
//     A response the visitor abandoned (cut, reset, or gone) keeps counting
//     for lingerFor: its stream keeps what the client pushed into it until
//     the client closes its side or yamux gives up on it. While the books
//     are over the budget, sources holding more than an equal share of it
//     get 429 and lose their stalled responses; the others are left alone.
//
// Cutting means a deadline in the past through http.ResponseController: the
// HTTP/1 connection fails its blocked read or write and is closed, the
// HTTP/2 stream is reset (a write) or its body ends (a read).

package edge

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/metrics"
	"github.com/tunnelhq/tunnel/pkg/mux"
)

const (
	// stallGrace is how long a write to a visitor must be blocked before
	// it counts against SlowReaderBudget: a visitor that keeps up finishes
	// a write in the time its kernel buffers take, well under it.
	stallGrace = time.Second
	// stallOverhead is what a stalled response holds besides its stream's
	// receive window: the proxy's 32 KiB copy buffer, the Transport's
	// 4 KiB read and write buffers, the server's 4 KiB response buffer,
	// and slack for yamux's buffer growing past the window.
	stallOverhead = 64 << 10
	// warnEvery spaces the warnings that the budget is being enforced.
	warnEvery = time.Minute
	// lingerFor is how long an abandoned response's stream may keep its
	// receive buffer after the proxy closed it: yamux frees it when the
	// client closes its side too (at once for a client that honours the
	// stream header's close_on_fin), or when tunneld resets the stream at
	// mux.ServerStreamCloseTimeout at the latest.
	lingerFor = mux.ServerStreamCloseTimeout
)

// bufferCost is the memory yamux takes to hold n bytes a client pushed into
// a stream nobody reads: its receive buffer grows by doubling, so its
// capacity runs past what it holds. Measured: 128 stalled downloads at the
// default 1 MiB window raised tunneld's RSS by 188 MiB, 1.47 MiB each.
func bufferCost(n int64) int64 { return n + n/2 }

// pacer keeps the server-wide books of stalled writes and enforces
// VisitorIdleTimeout and SlowReaderBudget. It is safe for concurrent use.
type pacer struct {
	idle   time.Duration
	grace  time.Duration
	charge int64 // per stalled write
	budget int64
	log    zerolog.Logger
	rec    RateLimitRecorder

	mu        sync.Mutex
	stalled   map[*visit]struct{}
	stalledBy map[netip.Prefix]int   // stalled writes per source
	heldBy    map[netip.Prefix]int64 // bytes per source, stalled and lingering
	lingering []linger               // oldest first
	total     int64
	warned    time.Time
}

// linger is an abandoned response still counted for its stream's buffer.
type linger struct {
	src   netip.Prefix
	bytes int64
	until time.Time
}

func newPacer(cfg Config, log zerolog.Logger, m *metrics.Set) *pacer {
	p := &pacer{
		idle:      cfg.VisitorIdleTimeout,
		grace:     min(stallGrace, cfg.VisitorIdleTimeout/2),
		charge:    bufferCost(int64(cfg.Mux.StreamWindow)) + stallOverhead,
		budget:    cfg.SlowReaderBudget,
		log:       log,
		rec:       m,
		stalled:   make(map[*visit]struct{}),
		stalledBy: make(map[netip.Prefix]int),
		heldBy:    make(map[netip.Prefix]int64),
	}
	if m != nil {
		err := m.GaugeFunc("slow_reader_bytes",
			"Bytes counted against --slow-reader-budget: responses whose write to the visitor is blocked, and abandoned ones whose stream may still hold data.",
			func() float64 {
				p.mu.Lock()
				defer p.mu.Unlock()
				return float64(p.total)
			})
		if err != nil {
			// Another Server shares these metrics and reports its own.
			log.Debug().Err(err).Msg("slow reader gauge not registered")
		}
	}
	return p
}

// visitorSource is the source address limits count a visitor request
// against: the connection's peer, or the visitor behind a trusted proxy.
func (s *Server) visitorSource(r *http.Request) netip.Prefix {
	addr := s.visitorAddr(r)
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return addrKey(ap.Addr())
	}
	if a, err := netip.ParseAddr(addr); err == nil {
		return addrKey(a)
	}
	return netip.Prefix{}
}

// paced wraps the visitor handler: every request's body reads and response
// writes are timed by s.pacer.
func (s *Server) paced(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// One allocation for the visit and its wrappers.
		v := &visit{p: s.pacer, src: s.visitorSource(r), remote: r.RemoteAddr,
			rc: *http.NewResponseController(w), http1: r.ProtoMajor == 1}
		v.w = pacedWriter{ResponseWriter: w, v: v}
		if v.http1 {
			// The deadline the previous request on this connection left
			// for its final flush (see end) must not cut this one.
			v.rc.SetWriteDeadline(time.Time{})
		}
		defer v.end(r.Context(), w.Header())
		if r.Body != nil && r.Body != http.NoBody {
			v.body = pacedBody{ReadCloser: r.Body, v: v}
			v.bodyOpen = r.ContentLength != 0
			r2 := new(http.Request)
			*r2 = *r
			r2.Body = &v.body
			r = r2
		}
		next.ServeHTTP(&v.w, r)
	})
}

// visit is one request's progress: the read or write in progress, if any,
// and whether the write counts as stalled.
type visit struct {
	p      *pacer
	src    netip.Prefix
	remote string
	rc     http.ResponseController // of the writer below w
	http1  bool
	w      pacedWriter
	body   pacedBody

	mu       sync.Mutex
	ended    bool // the handler returned: rc must not be used by timers
	hijacked bool
	wStart   time.Time // start of the write in progress; zero: none
	wSeq     uint64    // counts writes, so a cut aims at the one it meant
	wTimer   *time.Timer
	rStart   time.Time // start of the body read in progress; zero: none
	rTimer   *time.Timer
	bodyOpen bool // the body may have more to read
	proxied  bool // the request went to a tunnel: a stream holds its response
	written  atomic.Int64
	failed   atomic.Bool // a write or flush failed: the response was not delivered

	// Guarded by p.mu; inBooks is also read without it.
	inBooks   atomic.Bool
	stalledAt time.Time
	seqAt     uint64
}

func (v *visit) beginWrite() {
	v.mu.Lock()
	v.wStart = time.Now()
	v.wSeq++
	if v.wTimer == nil {
		v.wTimer = time.AfterFunc(v.p.grace, v.writeTimer)
	} else {
		v.wTimer.Reset(v.p.grace)
	}
	v.mu.Unlock()
}

// wrote counts what a write delivered. (ReverseProxy may flush from a
// timer's goroutine.)
func (v *visit) wrote(n int, err error) {
	v.written.Add(int64(n))
	if err != nil && !errors.Is(err, http.ErrNotSupported) {
		v.failed.Store(true)
	}
}

func (v *visit) endWrite() {
	v.mu.Lock()
	v.wStart = time.Time{}
	v.wTimer.Stop()
	v.mu.Unlock()
	if v.inBooks.Load() {
		v.p.unstall(v)
	}
}

// writeTimer runs when a write has been in progress for the grace period,
// and again at the idle timeout.
func (v *visit) writeTimer() {
	p := v.p
	p.mu.Lock() // p.mu before v.mu, always
	v.mu.Lock()
	if v.ended || v.wStart.IsZero() {
		v.mu.Unlock()
		p.mu.Unlock()
		return
	}
	blocked := time.Since(v.wStart)
	switch {
	case blocked >= p.idle:
		seq := v.wSeq
		v.mu.Unlock()
		p.unstallLocked(v)
		p.mu.Unlock()
		if v.cutWrite(seq) {
			p.rec.RateLimited("visitor_idle")
			p.log.Debug().Str("source", v.src.String()).Str("remote_addr", v.remote).Dur("duration", blocked).
				Msg("visitor took nothing of its response for the idle timeout; response cut")
		}
		return
	case blocked < p.grace:
		v.wTimer.Reset(p.grace - blocked)
		v.mu.Unlock()
		p.mu.Unlock()
		return
	}
	v.wTimer.Reset(p.idle - blocked)
	if !v.inBooks.Load() {
		v.inBooks.Store(true)
		v.stalledAt, v.seqAt = v.wStart, v.wSeq
		p.stalled[v] = struct{}{}
		p.stalledBy[v.src]++
		p.hold(v.src, p.charge)
	}
	v.mu.Unlock()
	victims := p.overBudgetLocked()
	p.mu.Unlock()
	for _, c := range victims {
		if c.v.cutWrite(c.seq) {
			p.rec.RateLimited("slow_reader")
			p.log.Debug().Str("source", c.v.src.String()).Str("remote_addr", c.v.remote).Dur("duration", time.Since(c.since)).
				Msg("slow reader budget exceeded; stalled response cut")
		}
	}
}

type cut struct {
	v     *visit
	seq   uint64
	since time.Time
}

// overBudgetLocked takes stalled writes out of the books until the rest fit
// the budget, and returns them to be cut: the source holding the most loses
// its longest stalled write first, and only sources holding more than an
// equal share of the budget lose any, so that a greedy address pays for the
// budget and a slow visitor elsewhere does not.
func (p *pacer) overBudgetLocked() []cut {
	var out []cut
	for p.total > p.budget {
		var src netip.Prefix
		var most int64
		for s := range p.stalledBy {
			if h := p.heldBy[s]; h > most {
				src, most = s, h
			}
		}
		if most <= p.fairShareLocked() {
			break
		}
		var victim *visit
		for v := range p.stalled {
			if v.src == src && (victim == nil || v.stalledAt.Before(victim.stalledAt)) {
				victim = v
			}
		}
		if victim == nil {
			break
		}
		out = append(out, cut{victim, victim.seqAt, victim.stalledAt})
		p.unstallLocked(victim)
	}
	if len(out) > 0 && time.Since(p.warned) >= warnEvery {
		p.warned = time.Now()
		p.log.Warn().Int64("budget", p.budget).Int("stalled", len(p.stalled)).Int("lingering", len(p.lingering)).Int("cut", len(out)).
			Msg("slow reader budget exceeded; cutting stalled responses of the addresses holding the most (logged once a minute)")
	}
	return out
}

// fairShareLocked is an equal share of the budget among the sources holding
// some of it.
func (p *pacer) fairShareLocked() int64 {
	return p.budget / int64(max(len(p.heldBy), 1))
}

func (p *pacer) unstall(v *visit) {
	p.mu.Lock()
	p.unstallLocked(v)
	p.mu.Unlock()
}

func (p *pacer) unstallLocked(v *visit) {
	if !v.inBooks.Load() {
		return
	}
	v.inBooks.Store(false)
	delete(p.stalled, v)
	decr(p.stalledBy, v.src)
	p.hold(v.src, -p.charge)
}

// hold adds n bytes (or takes them back, n < 0) to src's books.
func (p *pacer) hold(src netip.Prefix, n int64) {
	p.total += n
	if h := p.heldBy[src] + n; h > 0 {
		p.heldBy[src] = h
	} else {
		delete(p.heldBy, src)
	}
}

// expireLocked takes lingering responses whose time is up off the books.
func (p *pacer) expireLocked(now time.Time) {
	i := 0
	for ; i < len(p.lingering) && !now.Before(p.lingering[i].until); i++ {
		p.hold(p.lingering[i].src, -p.lingering[i].bytes)
	}
	if i > 0 {
		p.lingering = append(p.lingering[:0], p.lingering[i:]...)
	}
}

// abandoned books a response the visitor did not take in full: up to a
// stream window of it may wait in the stream for lingerFor.
func (p *pacer) abandoned(src netip.Prefix, remaining int64) {
	n := p.charge - stallOverhead
	if remaining >= 0 {
		n = min(n, bufferCost(remaining))
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked(now)
	p.lingering = append(p.lingering, linger{src, n, now.Add(lingerFor)})
	p.hold(src, n)
}

// admit reports whether src may start another request: always while the
// books are within the budget, and otherwise only if src holds no more
// than an equal share of them.
func (p *pacer) admit(src netip.Prefix) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked(time.Now())
	if p.total <= p.budget || p.heldBy[src] <= p.fairShareLocked() {
		return true
	}
	if time.Since(p.warned) >= warnEvery {
		p.warned = time.Now()
		p.log.Warn().Int64("budget", p.budget).Int("stalled", len(p.stalled)).Int("lingering", len(p.lingering)).
			Str("source", src.String()).Msg("slow reader budget exceeded; refusing requests from addresses that hold it (logged once a minute)")
	}
	return false
}

// cutWrite fails the write numbered seq if it is still in progress, and
// reports whether it did.
func (v *visit) cutWrite(seq uint64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ended || v.wStart.IsZero() || v.wSeq != seq {
		return false
	}
	return v.rc.SetWriteDeadline(time.Now().Add(-time.Second)) == nil
}

func (v *visit) beginRead() {
	v.mu.Lock()
	v.rStart = time.Now()
	if v.rTimer == nil {
		v.rTimer = time.AfterFunc(v.p.idle, v.readTimer)
	} else {
		v.rTimer.Reset(v.p.idle)
	}
	v.mu.Unlock()
}

func (v *visit) endRead(err error) {
	v.mu.Lock()
	v.rStart = time.Time{}
	v.rTimer.Stop()
	v.bodyOpen = err == nil
	v.mu.Unlock()
}

// readTimer runs when a body read may have waited the idle timeout.
func (v *visit) readTimer() {
	v.mu.Lock()
	if v.ended || v.rStart.IsZero() {
		v.mu.Unlock()
		return
	}
	if waited := time.Since(v.rStart); waited < v.p.idle {
		v.rTimer.Reset(v.p.idle - waited)
		v.mu.Unlock()
		return
	}
	err := v.rc.SetReadDeadline(time.Now().Add(-time.Second))
	v.mu.Unlock()
	if err == nil {
		v.p.rec.RateLimited("visitor_idle")
		v.p.log.Debug().Str("source", v.src.String()).Str("remote_addr", v.remote).Dur("duration", v.p.idle).
			Msg("visitor sent nothing of its request body for the idle timeout; request cut")
	}
}

// end runs when the handler returns. It stops the timers and gives what
// net/http still does after the handler a deadline: flushing the last of
// the response, and reading what is left of an unread body.
func (v *visit) end(ctx context.Context, h http.Header) {
	v.mu.Lock()
	v.ended = true
	if v.wTimer != nil {
		v.wTimer.Stop()
	}
	if v.rTimer != nil {
		v.rTimer.Stop()
	}
	hijacked, bodyOpen := v.hijacked, v.bodyOpen
	v.mu.Unlock()
	if v.inBooks.Load() {
		v.p.unstall(v)
	}
	if hijacked {
		return
	}
	if v.proxied && (v.failed.Load() || ctx.Err() != nil) {
		remaining := int64(-1)
		if cl, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil {
			remaining = max(cl-v.written.Load(), 0)
		}
		if remaining != 0 {
			v.p.abandoned(v.src, remaining)
		}
	}
	deadline := time.Now().Add(v.p.idle)
	v.rc.SetWriteDeadline(deadline)
	if bodyOpen && v.http1 {
		// net/http reads up to 256 KiB of an unread body before it
		// answers on a kept-alive HTTP/1 connection. (HTTP/2 resets the
		// stream instead.)
		v.rc.SetReadDeadline(deadline)
	}
}

// pacedWriter times the visit's writes and flushes. Unwrap lets
// http.ResponseController reach the writer below for the rest.
type pacedWriter struct {
	http.ResponseWriter
	v *visit
}

func (w *pacedWriter) Write(p []byte) (int, error) {
	w.v.beginWrite()
	n, err := w.ResponseWriter.Write(p)
	w.v.endWrite()
	w.v.wrote(n, err)
	return n, err
}

func (w *pacedWriter) WriteHeader(code int) {
	// A 1xx goes out at once (and an HTTP/2 HEADERS frame may wait on the
	// connection): time it like a write.
	w.v.beginWrite()
	w.ResponseWriter.WriteHeader(code)
	w.v.endWrite()
}

func (w *pacedWriter) FlushError() error {
	w.v.beginWrite()
	err := w.v.rc.Flush()
	w.v.endWrite()
	w.v.wrote(0, err)
	return err
}

func (w *pacedWriter) Flush() { w.FlushError() }

func (w *pacedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := w.v.rc.Hijack()
	if err == nil {
		w.v.mu.Lock()
		w.v.hijacked = true
		w.v.mu.Unlock()
	}
	return c, rw, err
}

func (w *pacedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// pacedBody times the visit's body reads.
type pacedBody struct {
	io.ReadCloser
	v *visit
}

func (b *pacedBody) Read(p []byte) (int, error) {
	b.v.beginRead()
	n, err := b.ReadCloser.Read(p)
	b.v.endRead(err)
	return n, err
}

// refusedSlowReader: the books of SlowReaderBudget are full and the source
// holds some of them.
const refusedSlowReader = "slow_reader_refused"

// acquireVisitor takes a slot of the tunnel name for the request, within
// its source's share, or says why not: errTunnelBusy when the tunnel is
// full, errVisitorShare when the visitor has its share, errSlowReader when
// it holds some of a full SlowReaderBudget.
func (s *Server) acquireVisitor(w http.ResponseWriter, r *http.Request, name string) (release func(), err error) {
	pw := pacedOf(w)
	var src netip.Prefix
	if pw != nil {
		src = pw.v.src
	} else {
		src = s.visitorSource(r)
	}
	if !s.pacer.admit(src) {
		s.limits.rec.RateLimited(refusedSlowReader)
		return nil, errSlowReader
	}
	release, refusal := s.limits.acquireStream(r.Context(), name, src)
	switch refusal {
	case "":
		if pw != nil {
			pw.v.proxied = true
		}
		return release, nil
	case refusedVisitor:
		return nil, errVisitorShare
	default:
		return nil, errTunnelBusy
	}
}

// pacedOf finds the visit's writer under any wrappers put on it since.
func pacedOf(w http.ResponseWriter) *pacedWriter {
	for {
		switch x := w.(type) {
		case *pacedWriter:
			return x
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return nil
		}
	}
}
