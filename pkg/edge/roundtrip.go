package edge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"
)

// Why the edge sends requests over a stream itself instead of through an
// http.Transport: the Transport gives every connection a reader and a writer
// goroutine and hands each request and response between them and the
// caller over channels, four goroutine switches per request on top of the
// session's own. Profiles of small requests through tunneld put that
// machinery at a tenth of the tunnel's CPU. A stream is already a reliable
// ordered pipe with its own flow control; what is left to do per request is
// writing it, reading the response on the caller's goroutine, and keeping
// the stream for the next request when both sides allow.
//
// What it keeps from the Transport's behaviour: request bodies are written
// beside the response read, so a service that answers before reading a
// large upload is not stuck behind it; 1xx responses but 100 go to the
// ClientTrace's Got1xxResponse (ReverseProxy forwards them to the visitor);
// 101 Switching Protocols returns the stream as the body (ReverseProxy
// pipes the upgrade); a request that fails on a kept stream the client
// closed meanwhile is retried once on a new stream when it can be sent
// again; response headers are bounded. What it drops: waiting for a 100
// Continue before sending a body (ExpectContinueTimeout, which was a second
// and which a visitor that asked for 100-continue already got from the
// edge's server when the body was first read).

const (
	// idleStreamTimeout closes a kept stream nobody took for this long,
	// releasing the client's connection to its local service.
	idleStreamTimeout = 60 * time.Second
	// maxResponseHeader bounds the response head a client may send (the
	// same bound net/http puts on a request head).
	maxResponseHeader = 1 << 20
	// max1xx bounds informational responses before the final one.
	max1xx = 5
)

var errResponseHeaderTooLarge = errors.New("response header too large")

// streamPool sends requests over a route's streams and keeps the finished
// ones for the next request to the same tunnel: at most max per tunnel
// name. A stream is opened for one name (its StreamHeader names the
// tunnel, and the client connected it to that tunnel's local service), so
// it is kept and reused under that name only; one session often serves
// several names.
type streamPool struct {
	dial func(ctx context.Context, addr string) (net.Conn, error)
	max  int
	idle time.Duration // how long a stream is kept unused: idleStreamTimeout

	mu      sync.Mutex
	kept    map[string][]*pconn // by tunnel name, most recently used last
	closed  bool                // keep none from now on
	reaping bool                // a reap is scheduled
}

// pconn is one stream with its buffers.
type pconn struct {
	pool   *streamPool
	name   string // the tunnel it was opened for
	conn   net.Conn
	lr     limitReader
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	reused bool
	// head is the visitor's response head the edge's own reader wrote
	// (readPlainHead), and body the framing of its body: the stream's
	// own, reset by each exchange, so no allocation per response.
	head  []byte
	typed bool // head has a Content-Type
	body  lengthBody
}

func (p *streamPool) newConn(ctx context.Context, name string) (*pconn, error) {
	conn, err := p.dial(ctx, name+":80")
	if err != nil {
		return nil, err
	}
	pc := &pconn{pool: p, name: name, conn: conn}
	pc.lr.r = conn
	// Buffers of a stream's lifetime, as the Transport's were: pooling
	// them per request cost more in allocations than it saved, since the
	// pool empties at every GC under load.
	pc.br = bufio.NewReaderSize(&pc.lr, 4<<10)
	pc.bw = bufio.NewWriterSize(conn, 4<<10)
	return pc, nil
}

// take returns a kept stream, or nil; one past the idle time is closed and
// skipped. With check, so is one the client closed while it was kept (its
// local service dropped the connection). The check costs a handful of
// allocations (yamux boxes deadlines and arms a timer), so only requests
// that cannot be retried pay it: a replayable request that meets a closed
// stream is sent again on a new one (RoundTrip).
func (p *streamPool) take(name string, check bool) *pconn {
	now := time.Now()
	for {
		p.mu.Lock()
		list := p.kept[name]
		n := len(list)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		pc := list[n-1]
		list[n-1] = nil
		p.kept[name] = list[:n-1]
		p.mu.Unlock()
		if now.Sub(pc.idleAt) < p.idle && (!check || pc.alive()) {
			pc.reused = true
			return pc
		}
		pc.conn.Close()
	}
}

// alive reports whether a kept stream can carry a request: the client has
// neither closed it nor sent anything on it. A read with a deadline in the
// past answers without waiting: EOF if it is closed, a byte if something
// came unasked, a timeout if all is well.
func (pc *pconn) alive() bool {
	var one [1]byte
	pc.conn.SetReadDeadline(time.Unix(1, 0))
	n, err := pc.conn.Read(one[:])
	pc.conn.SetReadDeadline(time.Time{})
	var ne net.Error
	return n == 0 && errors.As(err, &ne) && ne.Timeout()
}

// shrinkAfter: a kept stream that carried a response this large drops its
// receive buffer (yamux grows it up to twice the stream window during a
// bulk transfer and keeps it otherwise). Smaller ones keep theirs: it is
// about the size of the next small response, and dropping it every time
// cost an allocation and its growth per request.
const shrinkAfter = 64 << 10

// put keeps pc for the next request, or closes it when the pool is full or
// closed.
func (p *streamPool) put(pc *pconn, bodyBytes int64) {
	if bodyBytes >= shrinkAfter {
		if s, ok := pc.conn.(interface{ Shrink() }); ok {
			s.Shrink()
		}
	}
	pc.idleAt = time.Now()
	p.mu.Lock()
	if p.closed || len(p.kept[pc.name]) >= p.max {
		p.mu.Unlock()
		pc.conn.Close()
		return
	}
	if p.kept == nil {
		p.kept = make(map[string][]*pconn)
	}
	p.kept[pc.name] = append(p.kept[pc.name], pc)
	if !p.reaping {
		p.reaping = true
		time.AfterFunc(p.idle, p.reap)
	}
	p.mu.Unlock()
}

// reap closes the streams kept longer than idleStreamTimeout and schedules
// itself again while any are kept.
func (p *streamPool) reap() {
	now := time.Now()
	p.mu.Lock()
	var stale []*pconn
	var oldest time.Time // of the streams still kept
	for name, list := range p.kept {
		// Each list is in the order its streams were put back, so the
		// stale ones lead it.
		i := 0
		for i < len(list) && now.Sub(list[i].idleAt) >= p.idle {
			i++
		}
		stale = append(stale, list[:i]...)
		if i == len(list) {
			delete(p.kept, name)
			continue
		}
		rest := append(list[:0], list[i:]...)
		clear(list[len(rest):])
		p.kept[name] = rest
		if oldest.IsZero() || rest[0].idleAt.Before(oldest) {
			oldest = rest[0].idleAt
		}
	}
	p.reaping = !oldest.IsZero()
	if p.reaping {
		time.AfterFunc(p.idle-now.Sub(oldest), p.reap)
	}
	p.mu.Unlock()
	for _, pc := range stale {
		pc.conn.Close()
	}
}

// close closes every kept stream and keeps none from now on. Streams in
// use finish their requests.
func (p *streamPool) close() {
	p.mu.Lock()
	kept := p.kept
	p.kept = nil
	p.closed = true
	p.mu.Unlock()
	for _, list := range kept {
		for _, pc := range list {
			pc.conn.Close()
		}
	}
}

// RoundTrip sends req over a kept stream or a new one and returns the
// response, whose body reads from the stream on the caller's goroutine.
func (p *streamPool) RoundTrip(req *http.Request) (*http.Response, error) {
	name := req.URL.Host // the tunnel's name (rewrite)
	replayable := isReplayable(req)
	for attempt := 0; ; attempt++ {
		pc := p.take(name, !replayable)
		if pc == nil {
			var err error
			if pc, err = p.newConn(req.Context(), name); err != nil {
				return nil, err
			}
		}
		res, err := pc.roundTrip(req)
		if err == nil {
			return res, nil
		}
		var rerr *retryableError
		if attempt == 0 && errors.As(err, &rerr) {
			continue
		}
		if rerr != nil {
			err = rerr.err
		}
		return nil, err
	}
}

// retryableError: a kept stream failed before the request could have
// reached the service, and the request can be sent again.
type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// unansweredError: a stream failed before any byte of the response came
// back (the client went away with the request in flight). A pool sends a
// request that can be sent again to another member (memberFailed).
type unansweredError struct{ err error }

func (e *unansweredError) Error() string { return e.err.Error() }
func (e *unansweredError) Unwrap() error { return e.err }

func (pc *pconn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	stop := context.AfterFunc(ctx, func() { pc.conn.Close() })
	hasBody := req.Body != nil && req.Body != http.NoBody
	var written chan error
	fail := func(err error) (*http.Response, error) {
		// The stream is closed and never used again, so a body writer
		// still running may be left to end by itself: it is blocked on
		// the stream, which now fails, or on the visitor's body, which
		// net/http closes when the handler returns. Waiting for it would
		// hold the answer hostage to a visitor that stopped sending.
		stop()
		pc.conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if hasBody {
		// Sent beside the response read, as the Transport does.
		written = make(chan error, 1)
		go func() {
			err := req.Write(pc.bw)
			if err == nil {
				err = pc.bw.Flush()
			}
			if err != nil {
				pc.conn.Close() // the response will not come whole either
			}
			written <- err
		}()
	} else {
		err := req.Write(pc.bw)
		if err == nil {
			err = pc.bw.Flush()
		}
		if err != nil {
			err = &unansweredError{err}
			if pc.reused && isReplayable(req) {
				err = &retryableError{err}
			}
			return fail(fmt.Errorf("send request: %w", err))
		}
	}
	trace := httptrace.ContextClientTrace(ctx)
	var res *http.Response
	for n1xx := 0; ; n1xx++ {
		pc.lr.n = maxResponseHeader
		var err error
		res, err = http.ReadResponse(pc.br, req)
		if err != nil {
			if pc.lr.n <= 0 {
				err = errResponseHeaderTooLarge
			}
			if n1xx == 0 && pc.lr.n == maxResponseHeader {
				err = &unansweredError{err}
			}
			if pc.reused && n1xx == 0 && pc.lr.n == maxResponseHeader && isReplayable(req) {
				// Nothing came back: the client closed the kept stream
				// as the request went out.
				err = &retryableError{err}
			}
			return fail(fmt.Errorf("read response: %w", err))
		}
		code := res.StatusCode
		if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
			break
		}
		if n1xx >= max1xx {
			return fail(errors.New("read response: too many 1xx responses"))
		}
		// A 100 Continue is not passed on: the visitor that asked for one
		// got it from the edge's own server when the body writer first
		// read its body, and a second would be noise.
		if code != http.StatusContinue && trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, map[string][]string(res.Header)); err != nil {
				return fail(err)
			}
		}
	}
	pc.lr.n = math.MaxInt64
	if res.StatusCode == http.StatusSwitchingProtocols {
		// The stream is the upgraded connection from now on: it is never
		// kept, and closing the body closes it.
		if written != nil {
			// The body's writer would share the upgraded stream.
			return fail(errors.New("read response: 101 Switching Protocols to a request with a body"))
		}
		stop()
		res.Body = &upgradedBody{Reader: io.MultiReader(pc.br, pc.conn), conn: pc.conn}
		return res, nil
	}
	res.Body = &streamBody{pc: pc, body: res.Body, stop: stop, written: written,
		keep: !res.Close && !req.Close, eof: res.Body == http.NoBody}
	return res, nil
}

// isReplayable: req may be sent again after a failed attempt (what
// http.Request's unexported isReplayable says: no body, and a method that
// is idempotent or marked so).
func isReplayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// streamBody is a response body read from its stream. Read to its end, it
// gives the stream back for the next request when the response and the
// request allow it; closed early, it closes the stream.
type streamBody struct {
	pc      *pconn
	body    io.ReadCloser
	stop    func() bool // of the context.AfterFunc closing the stream
	written chan error  // the request body's writer, or nil
	keep    bool
	n       int64 // bytes read
	mu      sync.Mutex
	done    bool
	eof     bool
}

func (b *streamBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.mu.Lock()
		b.eof = true
		b.mu.Unlock()
		b.finish()
	}
	return n, err
}

func (b *streamBody) Close() error {
	b.finish()
	return nil
}

// finish hands the stream back or closes it, once.
func (b *streamBody) finish() {
	b.mu.Lock()
	if b.done {
		b.mu.Unlock()
		return
	}
	b.done = true
	eof := b.eof
	b.mu.Unlock()
	stopped := b.stop()
	pc := b.pc
	keep := b.keep && eof && stopped && pc.br.Buffered() == 0
	if b.written != nil {
		select {
		case err := <-b.written:
			keep = keep && err == nil
		default:
			// The service answered before the request body was all
			// sent: the stream is mid-request, never reusable. The
			// writer ends by itself (see fail in roundTrip).
			keep = false
		}
	}
	if !keep {
		pc.conn.Close()
		return
	}
	pc.reused = false
	pc.pool.put(pc, b.n)
}

// upgradedBody is the stream after 101 Switching Protocols, with what the
// response read had already buffered in front.
type upgradedBody struct {
	io.Reader
	conn net.Conn
}

func (b *upgradedBody) Write(p []byte) (int, error) { return b.conn.Write(p) }
func (b *upgradedBody) Close() error                { return b.conn.Close() }

// limitReader fails reads once n bytes have been read, so a response head
// cannot grow without bound; the body reads with n at its maximum.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errResponseHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
