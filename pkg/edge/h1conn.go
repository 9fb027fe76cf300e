// The connection loop of the edge's own HTTP/1.1 path (issue 14): it
// reads each request head itself (h1.go) and forwards the requests it can
// to their tunnel's stream (h1fwd.go); a connection whose request it does
// not serve goes, with every byte read so far, to net/http's server for
// the rest of its life. See "HTTP/1.1 without net/http" in doc.go.

package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunnelhq/tunnel/pkg/limit"
	"github.com/tunnelhq/tunnel/pkg/metrics"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// h1WatchAfter is how long an exchange runs before the visitor's
// connection gets a read beside it, to see a visitor that left (a slow
// service, a long poll, a stream of events). net/http's server makes that
// read for every request; most are over well before this.
const h1WatchAfter = 200 * time.Millisecond

// h1Conns are the connections the own path serves, for a graceful
// shutdown as net/http's Shutdown does its own: idle ones are closed,
// active ones finish their exchange first.
type h1Conns struct {
	mu      sync.Mutex
	conns   map[*h1Conn]struct{}
	closing atomic.Bool // set under mu, read without it by setIdle
	wg      sync.WaitGroup
	// handoffs counts the connections handed to net/http, for tests
	// that must know which path a request took.
	handoffs atomic.Int64
	// fastHeads counts the response heads the edge's own reader read
	// (h1resp.go), for tests that must know which reader took one.
	fastHeads atomic.Int64
}

// add tracks c, or reports false when shutdown has begun.
func (t *h1Conns) add(c *h1Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing.Load() {
		return false
	}
	if t.conns == nil {
		t.conns = make(map[*h1Conn]struct{})
	}
	t.conns[c] = struct{}{}
	t.wg.Add(1)
	return true
}

func (t *h1Conns) remove(c *h1Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	t.wg.Done()
}

// setIdle marks c as waiting for a request (idle) or in one; false: the
// server is shutting down, and c, idle, must close. No lock: c stores its
// state before it reads closing, and shutdown stores closing before it
// reads the states, so either c sees closing or shutdown sees c idle
// (and closes it). A mutex here was taken twice per request by every
// connection.
func (t *h1Conns) setIdle(c *h1Conn, idle bool) bool {
	c.idle.Store(idle)
	return !idle || !t.closing.Load()
}

// shutdown closes the idle connections and waits for the others to end
// their exchange, for grace at most; then it closes what is left. It
// reports whether all ended within grace.
func (t *h1Conns) shutdown(grace time.Duration) bool {
	t.mu.Lock()
	t.closing.Store(true)
	for c := range t.conns {
		if c.idle.Load() {
			c.conn.Close()
		}
	}
	t.mu.Unlock()
	done := make(chan struct{})
	go func() {
		t.wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
	}
	t.mu.Lock()
	for c := range t.conns {
		c.conn.Close()
	}
	t.mu.Unlock()
	<-done
	return false
}

// h1Conn is one visitor connection on the own path.
type h1Conn struct {
	s      *Server
	t      *h1Conns // the listener's connections, c among them
	conn   net.Conn
	tls    *tls.ConnectionState // nil: plain HTTP
	queue  *connQueue           // net/http's server, for what the own path does not serve
	plain  bool                 // the plain-HTTP listener: ACME's HTTP-01 goes to net/http
	remote string
	idle   atomic.Bool // see h1Conns.setIdle
	// unread: the last request's body was not read in full, so the
	// connection is closed the way net/http closes it then
	// (closeWriteAndWait).
	unread bool

	wire h1Wire
	vr   *bufio.Reader
	vw   *bufio.Writer
	hr   headReader

	// The watcher: a read of the visitor's connection beside a long
	// exchange (h1WatchAfter).
	watchTimer *time.Timer
	wmu        sync.Mutex
	cur        *h1Exchange // the exchange in progress; nil: none
	watching   bool
	watchDone  chan struct{}
}

// h1Wire is the visitor's connection under the buffers: it times body
// reads and response writes by the request's Visit, keeps what a head
// read brings in while record is on (to hand it to net/http), and gives
// first what the watcher read.
type h1Wire struct {
	conn   net.Conn
	visit  *limit.Visit // nil between requests
	record bool
	raw    []byte
	back   []byte
}

func (w *h1Wire) Read(p []byte) (n int, err error) {
	switch {
	case len(w.back) > 0:
		n = copy(p, w.back)
		w.back = w.back[n:]
	case w.visit != nil:
		w.visit.BeginRead()
		n, err = w.conn.Read(p)
		w.visit.EndRead(err)
	default:
		n, err = w.conn.Read(p)
	}
	if w.record {
		w.raw = append(w.raw, p[:n]...)
	}
	return n, err
}

func (w *h1Wire) Write(p []byte) (int, error) {
	v := w.visit
	if v == nil {
		return w.conn.Write(p)
	}
	v.BeginWrite()
	n, err := w.conn.Write(p)
	v.EndWrite(n, err)
	return n, err
}

// h1Handoff is a connection handed to net/http: Read gives the bytes the
// own path read first. tls is the handshake's state, which net/http sees
// only on a *tls.Conn (see withTLSState).
type h1Handoff struct {
	net.Conn
	pending []byte
	tls     *tls.ConnectionState
}

func (c *h1Handoff) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

type tlsStateKey struct{}

// handoffContext is http.Server's ConnContext: a handed-off TLS
// connection's state, for withTLSState.
func handoffContext(ctx context.Context, c net.Conn) context.Context {
	if h, ok := c.(*h1Handoff); ok && h.tls != nil {
		return context.WithValue(ctx, tlsStateKey{}, h.tls)
	}
	return ctx
}

// withTLSState gives a request of a handed-off TLS connection its TLS
// state, as net/http gives it on a *tls.Conn: ReverseProxy's
// X-Forwarded-Proto is taken from it.
func withTLSState(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if st, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
				r.TLS = st
			}
		}
		next.ServeHTTP(w, r)
	})
}

// serveH1 serves a visitor's HTTP/1.x connection until it ends or is
// handed to net/http (queue). state is the TLS handshake's, nil for plain
// HTTP; plain: the connection came to the plain-HTTP listener.
func (s *Server) serveH1(conn net.Conn, state *tls.ConnectionState, queue *connQueue, plain bool, t *h1Conns) {
	c := &h1Conn{s: s, t: t, conn: conn, tls: state, queue: queue, plain: plain, remote: conn.RemoteAddr().String()}
	if !t.add(c) {
		conn.Close()
		return
	}
	defer t.remove(c)
	if !c.loop(t) {
		conn.Close()
	}
}

// containPanic, deferred in each connection's goroutine (handleConn, the
// plain-HTTP listener's), keeps a panic there to that connection: it is
// logged with its stack, the connection is closed, and tunneld goes on
// serving everyone else, as
// net/http's server does for its connections. The own path parses what
// visitors send; a bug in it must cost one connection, not the server.
// The deferred calls between the panic and here (slots, books) have run.
func (s *Server) containPanic(conn net.Conn) {
	v := recover()
	if v == nil {
		return
	}
	conn.Close()
	if v == http.ErrAbortHandler { // net/http's way to abort quietly
		return
	}
	s.log.Error().Str("remote", conn.RemoteAddr().String()).Str("panic", fmt.Sprint(v)).
		Bytes("stack", debug.Stack()).Msg("panic serving a visitor connection; closed it")
}

// loop reads and serves requests; it reports whether it handed the
// connection to net/http.
func (c *h1Conn) loop(t *h1Conns) (handedOff bool) {
	s := c.s
	c.wire.conn = c.conn
	c.vr = bufio.NewReaderSize(&c.wire, 4<<10)
	c.vw = bufio.NewWriterSize(&c.wire, 4<<10)
	c.hr = headReader{br: c.vr, max: s.cfg.MaxHeaderBytes}
	defer func() {
		c.wmu.Lock()
		if c.watchTimer != nil {
			c.watchTimer.Stop()
		}
		c.wmu.Unlock()
	}()
	for first := true; ; first = false {
		// From here until a request is served, every byte read is kept
		// for net/http, starting with those already buffered.
		c.wire.raw = append(c.wire.raw[:0], peekBuffered(c.vr)...)
		c.wire.record = true
		if !t.setIdle(c, true) {
			return false
		}
		if c.vr.Buffered() == 0 {
			// As net/http waits: IdleTimeout for the next request, the
			// head's own bound for the first.
			wait := s.cfg.IdleTimeout
			if first {
				wait = s.cfg.ReadHeaderTimeout
			}
			c.conn.SetReadDeadline(time.Now().Add(wait))
			if _, err := c.vr.Peek(1); err != nil {
				return false
			}
		}
		t.setIdle(c, false)
		c.conn.SetReadDeadline(time.Now().Add(s.cfg.ReadHeaderTimeout))
		r, err := c.hr.read()
		if err != nil {
			if err == io.EOF || isTimeout(err) || errors.Is(err, net.ErrClosed) {
				return false // as net/http: closed without an answer
			}
			// A head the own path refuses: net/http reads it again and
			// answers it as it always has.
			return c.handoff()
		}
		c.conn.SetReadDeadline(time.Time{})
		r.RemoteAddr, r.TLS = c.remote, c.tls // the access rules read the visitor's address
		tg, ok := s.h1Route(r, c.plain)
		if !ok {
			return c.handoff()
		}
		c.wire.record = false
		if !c.serve(r, tg) {
			if c.unread {
				c.closeWriteAndWait()
			}
			return false
		}
	}
}

// peekBuffered is what br holds and has not given yet.
func peekBuffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// handoff hands the connection to net/http's server with every byte read
// since the current request began.
func (c *h1Conn) handoff() bool {
	c.t.handoffs.Add(1)
	c.conn.SetReadDeadline(time.Time{})
	pending := append(c.wire.raw, c.wire.back...)
	c.queue.push(&h1Handoff{Conn: c.conn, pending: pending, tls: c.tls})
	return true
}

// h1Target is where the own path sends a request: the tunnel name label
// of the session sess, whose public host is host, and the access rules
// the request passed (nil: the tunnel has none).
type h1Target struct {
	label, host string
	sess        *Session
	rules       *accessRules
}

// h1Route says whether the own path serves r, and where to: a request
// that asks for no upgrade, to a live HTTP tunnel of a session of this
// node (custom domains included) whose access rules let it through at
// once (see admitsAtOnce). Everything else (tunneld's own answers, pools,
// other nodes' routes, refusals, logins, a password not checked lately,
// upgrades, CONNECT, ACME's HTTP-01) stays with net/http's path.
func (s *Server) h1Route(r *h1Request, plain bool) (h1Target, bool) {
	if r.upgrade || r.Method == http.MethodConnect {
		return h1Target{}, false
	}
	if plain && s.acme != nil && strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
		return h1Target{}, false
	}
	key, host, err := s.routeHost(r.Host)
	if err != nil || key == "" {
		return h1Target{}, false
	}
	if k := s.registry.Kind(key); k != "" && k != proto.KindHTTP {
		return h1Target{}, false
	}
	rt, _ := s.registry.Lookup(key)
	sess, ok := rt.(*Session)
	if !ok {
		return h1Target{}, false
	}
	label := tunnelFor(rt, key)
	rules := sess.access(label)
	if !s.admitsAtOnce(&r.Request, rules) {
		return h1Target{}, false
	}
	return h1Target{label: label, host: host, sess: sess, rules: rules}, true
}

// serve forwards one request on the own path, with the books, pacing and
// slots of net/http's path, and reports whether the connection carries
// another request.
func (c *h1Conn) serve(r *h1Request, tg h1Target) (keep bool) {
	s := c.s
	rec := metrics.Request{Host: r.Host, Method: r.Method, Path: r.URL.Path, Proto: r.Proto, RemoteAddr: c.remote}
	s.ops.metrics.Begin(&rec)
	recorded := false
	defer func() {
		if !recorded {
			s.ops.metrics.Record(s.ops.access, &rec)
		}
	}()

	v := s.pacer.Start(s.visitorSource(&r.Request), c.remote, c.conn)
	c.wire.visit = v
	defer func() { c.wire.visit = nil }()
	lost := false
	defer func() { v.End(lost, nil) }()

	hasBody := r.chunked || r.ContentLength > 0
	t := target{name: tg.label, host: tg.host, route: tg.sess,
		visitor: s.visitorAddr(&r.Request), forwarded: s.forwardedBy(c.remote),
		stripAuth: tg.rules.stripsAuth()}
	ctx := withTarget(context.Background(), t)
	slot, err := s.acquireSlot(ctx, v, tg.label)
	if err != nil {
		rec.Status, rec.Out = c.answer(r, tg.host, err, nil)
		c.unread = hasBody
		return !hasBody && !r.close
	}
	defer slot.Release()
	rec.Routed(tg.label, tg.sess.String(), s.ops.counters(tg.sess, tg.label))
	rewriteHead(r, t, c.remote, c.tls != nil)

	x := &h1Exchange{conn: c.conn, vr: c.vr, vw: c.vw, req: r, host: tg.host, maxTrailer: s.cfg.MaxHeaderBytes}
	var res h1Result
	for attempt := 0; ; attempt++ {
		sp, ok := s.proxy.pools.m.Load(t.route)
		if !ok {
			err = fmt.Errorf("route %s: %w", t.route, errTunnelOffline)
			break
		}
		c.watchFrom(x)
		res, err = sp.(*streamPool).forwardH1(ctx, tg.label, x)
		c.stopWatch()
		if err == nil || attempt == maxReroutes || !errors.Is(err, errRouteDown) || x.gone.Load() {
			break
		}
		// The route went down before a stream was opened, so nothing
		// of the request was sent: it goes to the name's new route, as
		// pools.RoundTrip sends it on net/http's path.
		if t.route, err = s.h1Reroute(ctx, tg.label, tg.rules); err != nil {
			break
		}
		ctx = withTarget(context.Background(), t)
	}
	rec.Status, rec.In, rec.Out = res.status, res.bytesIn, res.bytesOut
	if res.fastHead {
		c.t.fastHeads.Add(1)
	}
	c.unread = hasBody && !x.bodyRead.Load()
	switch {
	case x.gone.Load() && res.status == 0:
		// The visitor left before any answer: net/http's path logs it as
		// a bare 502 nobody reads.
		s.log.Debug().Err(err).Str("host", tg.host).Str("remote_addr", c.remote).Msg("visitor gone")
		rec.Status, lost = http.StatusBadGateway, true
		return false
	case err != nil && res.status == 0:
		rec.Status, rec.Out = c.answer(r, tg.host, err, ctx)
		return !hasBody && !r.close
	case err != nil:
		// The head is out: the visitor's connection is closed under the
		// rest, as net/http's path aborts it.
		s.log.Debug().Err(err).Str("host", tg.host).Str("remote_addr", c.remote).Msg("response cut")
		rec.Aborted, lost = true, true
		return false
	}
	if res.unflushed {
		// Counted before the visitor sees the end of its answer, as
		// net/http's path counts a request before its buffered writer
		// is flushed: whoever reads the status page or the metrics
		// after an answer finds it there.
		s.ops.metrics.Record(s.ops.access, &rec)
		recorded = true
		if c.vw.Flush() != nil {
			return false
		}
	}
	return res.keepAlive && !x.gone.Load()
}

// rstAvoidanceDelay is how long a connection closed with a request body
// unread waits after its FIN before it is closed, as net/http's server
// waits: the visitor has time to read the answer before the unread bytes
// make the kernel reset the connection.
const rstAvoidanceDelay = 500 * time.Millisecond

// closeWriteAndWait is net/http's: the visitor gets a FIN after the
// answer, and the connection is closed (by the caller) a moment later.
func (c *h1Conn) closeWriteAndWait() {
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	time.Sleep(rstAvoidanceDelay)
}

// h1Reroute looks the tunnel name up again for a request whose route
// went down: its new route, if it is a session of this node with the
// access rules the request passed, as proxy.lookup's reroute requires.
func (s *Server) h1Reroute(ctx context.Context, name string, passed *accessRules) (Route, error) {
	rt, err := s.proxy.lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	if sess, ok := rt.(*Session); !ok || !sameRules(passed, sess.access(name)) {
		return nil, fmt.Errorf("tunnel %q came back on another kind of route or with other access rules: %w", name, errTunnelOffline)
	}
	return rt, nil
}

// answer writes the edge's own answer to r for err (proxy.answer's status
// and page); proxied, the request's context with its target, when r was
// sent on to its tunnel (the error is logged then), or nil. It returns
// the status and the body's length.
func (c *h1Conn) answer(r *h1Request, host string, err error, proxied context.Context) (int, int64) {
	w := &h1Answer{h: make(http.Header)}
	req := &r.Request
	if proxied != nil {
		req = req.WithContext(proxied)
	}
	c.s.proxy.answer(w, req, host, err)
	closing := r.close || r.chunked || r.ContentLength > 0
	if conn := r.connection(closing); conn != "" {
		w.h["Connection"] = []string{conn}
	}
	if _, ok := w.h["Date"]; !ok {
		w.h["Date"] = []string{httpDate()}
	}
	w.h["Content-Length"] = []string{strconv.Itoa(len(w.body))}
	writeStatusHead(c.vw, w.status, w.h)
	if r.Method != http.MethodHead {
		c.vw.Write(w.body)
	}
	if err := c.vw.Flush(); err != nil {
		c.s.log.Debug().Err(err).Str("remote_addr", c.remote).Msg("write answer")
	}
	return w.status, int64(len(w.body))
}

// h1Answer is the ResponseWriter proxy.answer writes the edge's own
// answers to, on the own path: held, then written with its length.
type h1Answer struct {
	h      http.Header
	status int
	body   []byte
}

func (a *h1Answer) Header() http.Header { return a.h }

func (a *h1Answer) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
}

func (a *h1Answer) Write(p []byte) (int, error) {
	a.WriteHeader(http.StatusOK)
	a.body = append(a.body, p...)
	return len(p), nil
}

// watchFrom arms the watcher for x: if x still runs after h1WatchAfter,
// and its request body is read, a read of the visitor's connection
// watches for the visitor leaving (watch).
func (c *h1Conn) watchFrom(x *h1Exchange) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.cur = x
	if c.watchTimer == nil {
		c.watchTimer = time.AfterFunc(h1WatchAfter, c.startWatch)
	} else {
		c.watchTimer.Reset(h1WatchAfter)
	}
}

// startWatch is the watch timer's: it starts the read, or waits again
// while the request body is still being read (its reader sees a visitor
// leave by itself).
func (c *h1Conn) startWatch() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	x := c.cur
	if x == nil || c.watching {
		return
	}
	if (x.req.chunked || x.req.ContentLength > 0) && !x.bodyRead.Load() {
		c.watchTimer.Reset(h1WatchAfter)
		return
	}
	c.watching = true
	c.watchDone = make(chan struct{})
	go c.watch(x, c.watchDone)
}

// watch reads the visitor's connection while x runs. An end of it (EOF,
// reset) means the visitor left: x's stream is closed, so the exchange
// ends and its slot is freed. A byte read (the next request, early) is
// kept for the next head read. stopWatch ends the read.
func (c *h1Conn) watch(x *h1Exchange, done chan struct{}) {
	defer close(done)
	var b [1]byte
	n, err := c.conn.Read(b[:])
	if n > 0 {
		c.wire.back = append(c.wire.back, b[0])
		return
	}
	if err != nil && !isTimeout(err) {
		x.visitorGone()
	}
}

// stopWatch disarms the watcher and ends its read, if it started.
func (c *h1Conn) stopWatch() {
	c.wmu.Lock()
	c.watchTimer.Stop()
	c.cur = nil
	watching, done := c.watching, c.watchDone
	c.watching = false
	c.wmu.Unlock()
	if watching {
		c.conn.SetReadDeadline(time.Unix(1, 0))
		<-done
	}
}
