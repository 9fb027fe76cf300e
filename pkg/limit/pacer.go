// Slow and stalled visitors: a visitor that stops sending its request body
// or stops taking its response holds a slot of the tunnel, a goroutine, and
// for a response also the stream's receive buffer in yamux (up to
// StreamWindow: the client keeps pushing while nobody reads) and the
// proxy's copy buffers. Three bounds keep that cost fixed:
//
//   - progress: a read of the body or a write (or flush) of the response
//     that makes no progress for VisitorIdleTimeout is cut. Only operations
//     in progress are timed, so a long download that keeps moving, or a
//     response that is quiet between writes (server-sent events), is left
//     alone. Upgraded connections are copied outside these wrappers.
//   - share: one visitor source holds at most MaxRequestsPerVisitor of a
//     tunnel's MaxStreamsPerTunnel slots (Limits.AcquireStream).
//   - budget: a write blocked for stallGrace counts as holding what a
//     stream window costs (bufferCost) plus stallOverhead; over
//     SlowReaderBudget in all, the pacer cuts stalled writes of the source
//     holding the most, longest stalled first.
//     A response the visitor abandoned (cut, reset, or gone) keeps counting
//     for Linger: its stream keeps what the client pushed into it until
//     the client closes its side or yamux gives up on it. While the books
//     are over the budget, sources holding more than an equal share of it
//     get 429 and lose their stalled responses; the others are left alone.
//
// Cutting means a deadline in the past through http.ResponseController: the
// HTTP/1 connection fails its blocked read or write and is closed, the
// HTTP/2 stream is reset (a write) or its body ends (a read).

package limit

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
)

// bufferCost is the memory yamux takes to hold n bytes a client pushed into
// a stream nobody reads: its receive buffer grows by doubling, so its
// capacity runs past what it holds. Measured: 128 stalled downloads at the
// default 1 MiB window raised tunneld's RSS by 188 MiB, 1.47 MiB each.
func bufferCost(n int64) int64 { return n + n/2 }

// Pacer keeps the server-wide books of stalled writes and enforces
// VisitorIdleTimeout and SlowReaderBudget on the requests of the handler it
// wraps (Wrap). It is safe for concurrent use.
type Pacer struct {
	idle      time.Duration
	grace     time.Duration
	charge    int64 // per stalled write
	budget    int64
	lingerFor time.Duration
	log       zerolog.Logger
	rec       Recorder

	mu        sync.Mutex
	stalled   map[*Visit]struct{}
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

// NewPacer returns empty books for cfg's VisitorIdleTimeout,
// SlowReaderBudget, StreamWindow and Linger. Cuts are logged to log and
// counted by rec (nil: not counted). It starts nothing: its timers run only
// while a request's read or write is in progress.
func NewPacer(cfg Config, log zerolog.Logger, rec Recorder) *Pacer {
	if rec == nil {
		rec = nopRecorder{}
	}
	return &Pacer{
		idle:      cfg.VisitorIdleTimeout,
		grace:     min(stallGrace, cfg.VisitorIdleTimeout/2),
		charge:    bufferCost(cfg.StreamWindow) + stallOverhead,
		budget:    cfg.SlowReaderBudget,
		lingerFor: cfg.Linger,
		log:       log,
		rec:       rec,
		stalled:   make(map[*Visit]struct{}),
		stalledBy: make(map[netip.Prefix]int),
		heldBy:    make(map[netip.Prefix]int64),
	}
}

// HeldBytes is what is counted against SlowReaderBudget now: responses
// whose write to the visitor is blocked, and abandoned ones whose stream
// may still hold data. (tunneld exports it as a gauge.)
func (p *Pacer) HeldBytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

// Wrap paces next: every request's body reads and response writes are
// timed, and count against the source that source gives the request.
func (p *Pacer) Wrap(next http.Handler, source func(*http.Request) netip.Prefix) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// One allocation for the visit and its wrappers.
		v := &Visit{p: p, src: source(r), remote: r.RemoteAddr,
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

// Visit is one request's progress under a Pacer: the read or write in
// progress, if any, and whether the write counts as stalled. VisitOf finds
// it from the request's ResponseWriter.
type Visit struct {
	p      *Pacer
	src    netip.Prefix
	remote string
	rc     http.ResponseController // of the writer below w
	// dl sets the deadlines that cut a read or write: &rc, or the
	// visitor's connection itself (Start).
	dl    deadliner
	http1 bool
	w     pacedWriter
	body  pacedBody

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

func (v *Visit) beginWrite() {
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
func (v *Visit) wrote(n int, err error) {
	v.written.Add(int64(n))
	if err != nil && !errors.Is(err, http.ErrNotSupported) {
		v.failed.Store(true)
	}
}

func (v *Visit) endWrite() {
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
func (v *Visit) writeTimer() {
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
	v     *Visit
	seq   uint64
	since time.Time
}

// overBudgetLocked takes stalled writes out of the books until the rest fit
// the budget, and returns them to be cut: the source holding the most loses
// its longest stalled write first, and only sources holding more than an
// equal share of the budget lose any, so that a greedy address pays for the
// budget and a slow visitor elsewhere does not.
func (p *Pacer) overBudgetLocked() []cut {
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
		var victim *Visit
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
func (p *Pacer) fairShareLocked() int64 {
	return p.budget / int64(max(len(p.heldBy), 1))
}

func (p *Pacer) unstall(v *Visit) {
	p.mu.Lock()
	p.unstallLocked(v)
	p.mu.Unlock()
}

func (p *Pacer) unstallLocked(v *Visit) {
	if !v.inBooks.Load() {
		return
	}
	v.inBooks.Store(false)
	delete(p.stalled, v)
	decr(p.stalledBy, v.src)
	p.hold(v.src, -p.charge)
}

// hold adds n bytes (or takes them back, n < 0) to src's books.
func (p *Pacer) hold(src netip.Prefix, n int64) {
	p.total += n
	if h := p.heldBy[src] + n; h > 0 {
		p.heldBy[src] = h
	} else {
		delete(p.heldBy, src)
	}
}

// expireLocked takes lingering responses whose time is up off the books.
func (p *Pacer) expireLocked(now time.Time) {
	i := 0
	for ; i < len(p.lingering) && !now.Before(p.lingering[i].until); i++ {
		p.hold(p.lingering[i].src, -p.lingering[i].bytes)
	}
	if i > 0 {
		p.lingering = append(p.lingering[:0], p.lingering[i:]...)
	}
}

// abandoned books a response the visitor did not take in full: up to a
// stream window of it may wait in the stream for Linger: yamux frees it when
// the client closes its side too (at once for a client that honours the
// stream header's close_on_fin), or when the server resets the stream.
func (p *Pacer) abandoned(src netip.Prefix, remaining int64) {
	n := p.charge - stallOverhead
	if remaining >= 0 {
		n = min(n, bufferCost(remaining))
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked(now)
	p.lingering = append(p.lingering, linger{src, n, now.Add(p.lingerFor)})
	p.hold(src, n)
}

// Admit reports whether src may start another request: always while the
// books are within the budget, and otherwise only if src holds no more
// than an equal share of them. A refusal is recorded (RefusedSlowReader).
func (p *Pacer) Admit(src netip.Prefix) bool {
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
	p.rec.RateLimited(RefusedSlowReader)
	return false
}

// cutWrite fails the write numbered seq if it is still in progress, and
// reports whether it did.
func (v *Visit) cutWrite(seq uint64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ended || v.wStart.IsZero() || v.wSeq != seq {
		return false
	}
	return v.deadlines().SetWriteDeadline(time.Now().Add(-time.Second)) == nil
}

func (v *Visit) beginRead() {
	v.mu.Lock()
	v.rStart = time.Now()
	if v.rTimer == nil {
		v.rTimer = time.AfterFunc(v.p.idle, v.readTimer)
	} else {
		v.rTimer.Reset(v.p.idle)
	}
	v.mu.Unlock()
}

func (v *Visit) endRead(err error) {
	v.mu.Lock()
	v.rStart = time.Time{}
	v.rTimer.Stop()
	v.bodyOpen = err == nil
	v.mu.Unlock()
}

// readTimer runs when a body read may have waited the idle timeout.
func (v *Visit) readTimer() {
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
	err := v.deadlines().SetReadDeadline(time.Now().Add(-time.Second))
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
func (v *Visit) end(ctx context.Context, h http.Header) {
	hijacked, bodyOpen := v.stop(v.failed.Load() || ctx.Err() != nil, h)
	if hijacked {
		return
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

// stop stops the timers and takes the visit off the books; a proxied
// response that was not delivered (lost) is booked as abandoned, h its
// header (for its announced length). It reports whether the connection
// was hijacked, and whether the body may have more to read.
func (v *Visit) stop(lost bool, h http.Header) (hijacked, bodyOpen bool) {
	v.mu.Lock()
	v.ended = true
	if v.wTimer != nil {
		v.wTimer.Stop()
	}
	if v.rTimer != nil {
		v.rTimer.Stop()
	}
	hijacked, bodyOpen = v.hijacked, v.bodyOpen
	v.mu.Unlock()
	if v.inBooks.Load() {
		v.p.unstall(v)
	}
	if hijacked {
		return true, bodyOpen
	}
	if v.proxied && lost {
		remaining := int64(-1)
		if cl, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil {
			remaining = max(cl-v.written.Load(), 0)
		}
		if remaining != 0 {
			v.p.abandoned(v.src, remaining)
		}
	}
	return false, bodyOpen
}

func (v *Visit) deadlines() deadliner {
	if v.dl != nil {
		return v.dl
	}
	return &v.rc
}

// deadliner is what cuts a visitor's blocked read or write.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// Start paces one request of a handler that writes to the visitor's
// connection itself (tunneld's own HTTP/1.1 path) rather than through a
// ResponseWriter: it calls BeginRead and EndRead around each read of the
// request body from conn, BeginWrite and EndWrite around each write of
// the response to it, and End when the request is over. A cut sets a
// deadline in the past on conn. src and remote are as Wrap has them.
func (p *Pacer) Start(src netip.Prefix, remote string, conn deadliner) *Visit {
	return &Visit{p: p, src: src, remote: remote, dl: conn, http1: true}
}

// BeginRead starts timing a read of the request body (Start).
func (v *Visit) BeginRead() { v.beginRead() }

// EndRead ends the read BeginRead timed; err is its error.
func (v *Visit) EndRead(err error) { v.endRead(err) }

// BeginWrite starts timing a write of the response (Start).
func (v *Visit) BeginWrite() { v.beginWrite() }

// EndWrite ends the write BeginWrite timed: n bytes delivered, err its
// error.
func (v *Visit) EndWrite(n int, err error) {
	v.endWrite()
	v.wrote(n, err)
}

// End ends a visit begun with Start: lost says the response was not
// delivered in full, h is its header (its Content-Length is the length
// announced). The caller clears the connection's deadlines for its next
// request.
func (v *Visit) End(lost bool, h http.Header) { v.stop(lost, h) }

// pacedWriter times the visit's writes and flushes. Unwrap lets
// http.ResponseController reach the writer below for the rest.
type pacedWriter struct {
	http.ResponseWriter
	v *Visit
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
	v *Visit
}

func (b *pacedBody) Read(p []byte) (int, error) {
	b.v.beginRead()
	n, err := b.ReadCloser.Read(p)
	b.v.endRead(err)
	return n, err
}

// VisitOf finds the Visit of the request w answers, under any wrappers put
// on the Pacer's writer since (found through Unwrap), or nil if the request
// is not paced.
func VisitOf(w http.ResponseWriter) *Visit {
	for {
		switch x := w.(type) {
		case *pacedWriter:
			return x.v
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return nil
		}
	}
}

// Source is the source address the visit counts against.
func (v *Visit) Source() netip.Prefix { return v.src }

// Proxied marks the request as sent to a tunnel: a stream holds its
// response, so a response the visitor abandons is booked (see Linger). Call
// it before the handler returns, from the handler's goroutine.
func (v *Visit) Proxied() { v.proxied = true }
