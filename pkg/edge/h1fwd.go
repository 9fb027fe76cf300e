// One exchange of the edge's own HTTP/1.1 path (issue 14): a checked
// request head (h1.go) written again to a tunnel's stream, the bodies
// copied with their framing, the response head read with bounds and
// written again to the visitor. No http.ResponseWriter, no background
// read of the visitor's connection, no clone of the request.

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
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/tunnelhq/tunnel/pkg/oidc"
)

// rewriteHead is rewrite (proxy.go) and what ReverseProxy does around it,
// for the edge's own path, on the request's own header: hop-by-hop headers
// out (Te: trailers kept), the visitor's forwarding headers out, the
// query cleaned, then X-Forwarded-For, -Host and -Proto from the real
// connection (a trusted proxy's X-Forwarded-For extended, its -Proto
// kept), the tunnel's password and session cookie out, the signed-in
// identity in. remoteAddr is the peer's address; tls whether the visitor
// came over TLS. TestH1_RewriteMatchesReverseProxy holds the two paths to
// the same headers.
func rewriteHead(r *h1Request, t target, remoteAddr string, tls bool) {
	h := r.Header
	inXFF := h["X-Forwarded-For"]
	inXFP := h.Get("X-Forwarded-Proto")
	trailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	removeHopHeaders(h)
	if trailers {
		h["Te"] = []string{"trailers"}
	}
	for k := range h {
		if isForwardingHeader(k) {
			delete(h, k)
		}
	}
	r.URL.RawQuery = cleanQuery(r.URL.RawQuery)
	var prior []string
	if t.forwarded {
		prior = inXFF
	}
	if t.stripAuth {
		delete(h, "Authorization")
	}
	if t.email != "" {
		oidc.StripCookies(h)
		h.Set(oidc.IdentityHeader, t.email)
	}
	set := make([]string, 3) // the three values, in one allocation
	if ip, _, err := net.SplitHostPort(remoteAddr); err == nil {
		if len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		set[0] = ip
		h["X-Forwarded-For"] = set[0:1:1]
	}
	set[1] = t.host
	h["X-Forwarded-Host"] = set[1:2:2]
	switch {
	case t.forwarded && inXFP != "":
		set[2] = inXFP
	case tls:
		set[2] = "https"
	default:
		set[2] = "http"
	}
	h["X-Forwarded-Proto"] = set[2:3:3]
}

// maxQueryParams is where ReverseProxy starts re-encoding a query (Go's
// default limit on the parameters url.ParseQuery reads).
const maxQueryParams = 1000

// cleanQuery drops the query parameters a service could read differently
// from the edge (a ';' separator, a bad % escape), as ReverseProxy does:
// such a query is parsed and encoded again, which keeps the parseable
// parameters only.
func cleanQuery(q string) string {
	if strings.Count(q, "&")+1 > maxQueryParams {
		return reencodeQuery(q)
	}
	for i := 0; i < len(q); {
		switch q[i] {
		case ';':
			return reencodeQuery(q)
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return reencodeQuery(q)
			}
			i += 3
		default:
			i++
		}
	}
	return q
}

func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// h1Result is what one exchange did, for the access log, the metrics and
// the connection loop.
type h1Result struct {
	status    int   // the status written to the visitor; 0: none
	bytesIn   int64 // request body bytes read from the visitor
	bytesOut  int64 // response body bytes written to the visitor
	keepAlive bool  // the visitor's connection may carry another request
	// unflushed: the answer is complete but its tail is still in the
	// visitor's writer, for the caller to flush once it has counted the
	// request.
	unflushed bool
	// fastHead: the response head was read by the edge's own reader
	// (h1resp.go), not by net/http's.
	fastHead bool
}

// errBadChunking: the visitor's chunked body is malformed.
var errBadChunking = errors.New("malformed chunked request body")

// h1Exchange is one request on the edge's own path: the visitor's
// connection and buffers, the stream it goes to. The visitor's writer is
// shared by the body writer (100 Continue) and the response, under mu.
type h1Exchange struct {
	conn net.Conn // the visitor's connection
	vr   *bufio.Reader
	vw   *bufio.Writer
	req  *h1Request
	host string // the tunnel's public host: the Host the service sees
	pc   *pconn
	// maxTrailer bounds the trailer section of a chunked request body
	// (Config.MaxHeaderBytes, as for the head).
	maxTrailer int

	mu       sync.Mutex
	answered bool // the final response head is written: no 100 after it
	// bodySent: the request body's writer sent all of it to the stream.
	bodySent atomic.Bool
	// bodyRead: the request body's writer read all of it from the
	// visitor, whose connection is then free for the watcher's read.
	bodyRead atomic.Bool
	// live is the stream in use, for visitorGone; gone: the watcher saw
	// the visitor leave.
	live atomic.Pointer[pconn]
	gone atomic.Bool
	// slowHead: every response head goes to net/http's reader, for tests
	// that hold the edge's own reader to it.
	slowHead bool
	// out is the response on its way to the visitor (forward).
	out responseOut
}

// visitorGone ends the exchange of a visitor that left: its stream is
// closed, so the response read fails and the slot is freed.
func (x *h1Exchange) visitorGone() {
	x.gone.Store(true)
	if pc := x.live.Load(); pc != nil {
		pc.conn.Close()
	}
}

// forward sends the request over x.pc and its response to the visitor. An
// error with res.status 0 means nothing was written to the visitor: the
// caller answers it (502, 504), or, for a *retryableError, sends the
// request again once on a new stream. The stream is put back in its pool
// or closed; the visitor's connection is the caller's, to close when
// res.keepAlive is false. The caller sets the visitor's read deadline
// before each read: forward may leave it in the past, to stop a body
// writer the service did not wait for.
func (x *h1Exchange) forward() (res h1Result, err error) {
	pc, r := x.pc, x.req
	hasBody := r.chunked || r.ContentLength > 0
	var written chan bodyDone
	// replay: a kept stream the client closed meanwhile fails before
	// the service could have seen the request; one without a body and
	// of a method that may be repeated is then sent again on a new
	// stream by the caller (a *retryableError), as roundtrip.go does.
	replay := pc.reused && !hasBody && isReplayable(&r.Request)
	if err := writeRequestHead(pc.bw, r, x.host); err != nil {
		pc.conn.Close()
		return res, fmt.Errorf("send request: %w", err)
	}
	if hasBody {
		// Sent beside the response read, so a service that answers
		// before it has read the body is not stuck behind it.
		written = make(chan bodyDone, 1)
		go x.copyRequestBody(written)
	} else if err := pc.bw.Flush(); err != nil {
		pc.conn.Close()
		err = &unansweredError{err} // as roundtrip.go marks it, for a pool's next member
		if replay {
			err = &retryableError{err}
		}
		return res, fmt.Errorf("send request: %w", err)
	}
	// waitBody ends the body writer and tells whether the whole body
	// went to the service. One still running when the exchange is over
	// (the service answered first, or failed) is stopped: the stream is
	// closed and the visitor's read cut short.
	waitBody := func() bodyDone {
		if written == nil {
			return bodyDone{read: true, ok: true}
		}
		select {
		case d := <-written:
			return d
		default:
		}
		if x.bodySent.Load() {
			return <-written // all sent; the writer is about to say so
		}
		pc.conn.Close()
		x.conn.SetReadDeadline(time.Unix(1, 0))
		d := <-written
		d.ok = false
		return d
	}
	fail := func(err error) (h1Result, error) {
		pc.conn.Close()
		d := waitBody()
		res.bytesIn = d.n
		return res, err
	}

	// The response head: the edge's own reader takes a plain one
	// (h1resp.go), net/http's reader the rest, from the same bytes.
	var (
		resp *http.Response // net/http's; nil when the head was plain
		ph   plainHead
		fast bool
	)
	for n1xx := 0; ; n1xx++ {
		pc.lr.n = maxResponseHeader
		if !x.slowHead {
			// A plain head has a length or no body: the visitor's
			// connection ends only if the visitor asked.
			if ph, fast = pc.readPlainHead(r.Method, r.connection(r.close)); fast {
				break
			}
		}
		resp, err = http.ReadResponse(pc.br, &r.Request)
		if err != nil {
			if pc.lr.n <= 0 {
				err = errResponseHeaderTooLarge
			}
			if n1xx == 0 && pc.lr.n == maxResponseHeader {
				err = &unansweredError{err}
			}
			if replay && n1xx == 0 && pc.lr.n == maxResponseHeader {
				err = &retryableError{err}
			}
			return fail(fmt.Errorf("read response: %w", err))
		}
		code := resp.StatusCode
		if code < 100 || code > 199 {
			break
		}
		if code == http.StatusSwitchingProtocols {
			// The edge's own path carries no upgrade (the connection
			// loop leaves those to net/http): a 101 here is a
			// service answering something not asked.
			return fail(errors.New("read response: 101 Switching Protocols to a request that asked no upgrade"))
		}
		if n1xx >= max1xx {
			return fail(errors.New("read response: too many 1xx responses"))
		}
		if code == http.StatusContinue {
			continue // the edge sends its own 100, when it reads the body
		}
		// Early hints and the like go on to the visitor, as
		// ReverseProxy passes them.
		removeHopHeaders(resp.Header)
		x.mu.Lock()
		werr := writeStatusHead(x.vw, code, resp.Header)
		if werr == nil {
			werr = x.vw.Flush()
		}
		x.mu.Unlock()
		if werr != nil {
			return fail(fmt.Errorf("write 1xx: %w", werr))
		}
	}
	pc.lr.n = math.MaxInt64

	if fast {
		res.fastHead = true
		x.out = x.plainOut(ph)
	} else {
		x.out = x.responseOut(resp)
	}
	out := x.out

	// The body, flushed as it comes when its length is unknown (streams,
	// server-sent events), as ReverseProxy does.
	var copyErr error
	if out.bodyAllowed {
		res.bytesOut, copyErr = copyResponseBody(x.vw, out.body, out.flush, out.trailer, out.chunk, x)
	} else {
		copyErr = x.writeHead(nil)
		if copyErr == nil {
			copyErr = x.vw.Flush()
		}
	}
	// Only this goroutine sets answered: no lock to read it.
	if !x.answered {
		return fail(fmt.Errorf("write response head: %w", copyErr))
	}
	res.status = out.code
	// The tail of a complete answer stays in the visitor's writer: the
	// caller counts the request before the visitor can see its end.
	// waitBody cuts only the visitor's reads, and ends the body writer
	// (and so its use of x.vw) before it returns.
	serviceDone := copyErr == nil
	res.unflushed = serviceDone
	d := waitBody()
	res.bytesIn = d.n
	keepStream := serviceDone && d.ok && !out.serviceClose && pc.br.Buffered() == 0 && !x.gone.Load()
	if resp != nil {
		resp.Body.Close()
	}
	// A head buffer grown by a rare large head is not kept with the
	// stream (readPlainHead starts each head afresh in any case).
	if cap(pc.head) > maxKeptHead {
		pc.head = nil
	}
	x.out = responseOut{}
	if keepStream {
		pc.reused = false
		pc.pool.put(pc, res.bytesOut)
	} else {
		pc.conn.Close()
	}
	if copyErr != nil {
		return res, fmt.Errorf("copy response: %w", copyErr)
	}
	// The visitor's connection is at its next request once its whole
	// body was read, whether or not the service took all of it.
	res.keepAlive = !out.closeVisitor && d.read && d.err == nil
	return res, nil
}

// bodyAllowedFor: a response of code to a request of method may have a
// body (not to HEAD, not 204 or 304).
func bodyAllowedFor(method string, code int) bool {
	return method != http.MethodHead && code != http.StatusNoContent && code != http.StatusNotModified
}

// maxKeptHead bounds the head buffer a kept stream holds on to (most
// response heads are a few hundred bytes).
const maxKeptHead = 1 << 10

// responseOut is how a response goes on to the visitor: its head, once
// the body's first bytes are known, and its body with their framing.
type responseOut struct {
	code         int
	head         responseHead
	bodyAllowed  bool
	body         io.Reader
	flush        bool         // flush after each read: a body of unknown length
	trailer      *http.Header // sent after the last chunk, when chunk
	chunk        bool         // the body goes to the visitor chunked
	closeVisitor bool         // the visitor's connection ends after the body
	serviceClose bool         // the service ends the stream after the body
}

// responseHead writes a response head, given the body's first bytes (nil
// for none), from which a missing Content-Type is sniffed.
type responseHead interface {
	writeHead(w *bufio.Writer, first []byte) error
}

// writeHead writes x.out's head to the visitor, once, before any of the
// body: from here on no 100 Continue may go out.
func (x *h1Exchange) writeHead(first []byte) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.answered = true
	return x.out.head.writeHead(x.vw, first)
}

// responseOut is resp, read by net/http, as net/http's server would write
// it for ReverseProxy: hop-by-hop headers out, announced trailers in, a
// Date, and the body's framing chosen for this visitor.
func (x *h1Exchange) responseOut(resp *http.Response) responseOut {
	r := x.req
	h := resp.Header
	removeHopHeaders(h)
	out := responseOut{
		code:         resp.StatusCode,
		bodyAllowed:  bodyAllowedFor(r.Method, resp.StatusCode),
		body:         resp.Body,
		flush:        resp.ContentLength < 0,
		trailer:      &resp.Trailer,
		closeVisitor: r.close,
		serviceClose: resp.Close,
	}
	length := resp.ContentLength
	if out.bodyAllowed && length < 0 {
		if r.ProtoMinor >= 1 {
			out.chunk = true
		} else {
			out.closeVisitor = true // an HTTP/1.0 visitor reads to the end
		}
	}
	if out.bodyAllowed && length >= 0 {
		h["Content-Length"] = []string{strconv.FormatInt(length, 10)}
	}
	if len(resp.Trailer) > 0 && out.chunk {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h.Add("Trailer", strings.Join(keys, ", "))
	}
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{httpDate()}
	}
	if out.chunk {
		h["Transfer-Encoding"] = []string{"chunked"}
	}
	if conn := r.connection(out.closeVisitor); conn != "" {
		h["Connection"] = []string{conn}
	}
	_, typed := h["Content-Type"]
	out.head = &headerHead{code: resp.StatusCode, h: h, typed: typed}
	return out
}

// headerHead is a response head as a header map, written the way
// net/http's server writes one (sorted).
type headerHead struct {
	code  int
	h     http.Header
	typed bool // h has a Content-Type
}

func (hh *headerHead) writeHead(w *bufio.Writer, first []byte) error {
	if !hh.typed && len(first) > 0 {
		// net/http's server sniffs a type for a body sent without one,
		// from the first write ReverseProxy makes: the first read of
		// the body. So does this path.
		hh.h["Content-Type"] = []string{http.DetectContentType(first)}
	}
	return writeStatusHead(w, hh.code, hh.h)
}

// plainOut is the response whose plain head the edge's own reader read:
// the visitor's head is in x.pc.head already, and the body is
// Content-Length bytes of the stream (or none), so it goes to the visitor
// as it came.
func (x *h1Exchange) plainOut(ph plainHead) responseOut {
	r, pc := x.req, x.pc
	pc.body = lengthBody{r: pc.br, n: max(ph.length, 0)}
	pc.typed = ph.typed
	return responseOut{
		code:         ph.code,
		head:         pc,
		bodyAllowed:  bodyAllowedFor(r.Method, ph.code),
		body:         &pc.body,
		closeVisitor: r.close,
		serviceClose: ph.close,
	}
}

// writeHead writes the head readPlainHead left in pc.head, with a
// Content-Type sniffed as net/http's server does (see headerHead) when
// the service gave none.
func (pc *pconn) writeHead(w *bufio.Writer, first []byte) error {
	w.Write(pc.head)
	if !pc.typed && len(first) > 0 {
		w.WriteString("Content-Type: ")
		w.WriteString(http.DetectContentType(first))
		w.WriteString("\r\n")
	}
	_, err := w.WriteString("\r\n")
	return err
}

// writeStatusHead writes a status line and h, the way net/http's server
// does ("HTTP/1.1 200 OK", sorted headers).
func writeStatusHead(w *bufio.Writer, code int, h http.Header) error {
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(code))
	w.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		w.WriteString(text)
	} else {
		w.WriteString("status code ")
		w.WriteString(strconv.Itoa(code))
	}
	w.WriteString("\r\n")
	if err := h.Write(w); err != nil {
		return err
	}
	_, err := w.WriteString("\r\n")
	return err
}

// copyResponseBody copies body to w, chunked if chunk, and with the
// trailers (read once the body is, since net/http's reader fills them in
// then) after the last chunk. head writes the response head, once, given
// the body's first bytes (nil for an empty body) before any of them is
// written. With flush, w is flushed after each read (a body of unknown
// length).
func copyResponseBody(w *bufio.Writer, body io.Reader, flush bool, trailer *http.Header, chunk bool,
	head interface{ writeHead(first []byte) error }) (int64, error) {
	buf := copyBufs.Get().(*[copyBufSize]byte)
	defer copyBufs.Put(buf)
	var n int64
	headDone := false
	for {
		m, rerr := body.Read(buf[:])
		if !headDone && (m > 0 || rerr != nil) {
			headDone = true
			if err := head.writeHead(buf[:m]); err != nil {
				return n, err
			}
		}
		if m > 0 {
			var werr error
			if chunk {
				fmt.Fprintf(w, "%x\r\n", m)
				w.Write(buf[:m])
				_, werr = w.WriteString("\r\n")
			} else {
				_, werr = w.Write(buf[:m])
			}
			n += int64(m)
			if werr == nil && flush {
				werr = w.Flush()
			}
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return n, rerr
		}
	}
	if !chunk {
		return n, nil
	}
	w.WriteString("0\r\n")
	if trailer != nil && len(*trailer) > 0 {
		if err := trailer.Write(w); err != nil {
			return n, err
		}
	}
	_, err := w.WriteString("\r\n")
	return n, err
}

// bodyDone is how the request body's copy ended: n bytes read from the
// visitor, read when all of it was (so the visitor's connection is at the
// next request), ok when all of it went to the service, err the visitor's
// side (a malformed or cut body) if any.
type bodyDone struct {
	n    int64
	read bool
	ok   bool
	err  error
}

// copyRequestBody sends the request body to the stream, framed as the
// head said: Content-Length bytes, or chunks re-encoded by the edge (the
// visitor's chunk extensions and trailers are not passed on). A visitor
// that asked for 100 Continue gets it first, unless the response has
// begun.
func (x *h1Exchange) copyRequestBody(done chan<- bodyDone) {
	var d bodyDone
	defer func() { done <- d }()
	r, pc := x.req, x.pc
	if r.expectContinue {
		x.mu.Lock()
		if !x.answered {
			x.vw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := x.vw.Flush(); err != nil {
				x.mu.Unlock()
				d.err = err
				pc.conn.Close()
				return
			}
		}
		x.mu.Unlock()
	}
	var src io.Reader
	if r.chunked {
		src = httputil.NewChunkedReader(x.vr)
	} else {
		src = io.LimitReader(x.vr, r.ContentLength)
	}
	buf := copyBufs.Get().(*[copyBufSize]byte)
	defer copyBufs.Put(buf)
	var werr error
	for {
		if werr == nil && x.vr.Buffered() == 0 && pc.bw.Buffered() > 0 {
			// What is written goes to the service before the visitor's
			// next bytes are waited for: the head first of all, which a
			// service may answer without the body.
			werr = pc.bw.Flush()
		}
		m, rerr := src.Read(buf[:])
		if m > 0 && werr == nil {
			if r.chunked {
				fmt.Fprintf(pc.bw, "%x\r\n", m)
				pc.bw.Write(buf[:m])
				_, werr = pc.bw.WriteString("\r\n")
			} else {
				_, werr = pc.bw.Write(buf[:m])
			}
		}
		d.n += int64(m)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if r.chunked && !isTimeout(rerr) && !errors.Is(rerr, net.ErrClosed) {
				rerr = fmt.Errorf("%w: %w", errBadChunking, rerr)
			}
			d.err = rerr
			pc.conn.Close()
			return
		}
		if werr != nil {
			// The stream failed; the response read sees it too.
			// Nothing more of the body can go anywhere.
			d.err = nil
			pc.conn.Close()
			return
		}
	}
	if !r.chunked && d.n < r.ContentLength {
		d.err = io.ErrUnexpectedEOF
		pc.conn.Close()
		return
	}
	if r.chunked {
		if err := x.discardTrailer(); err != nil {
			d.err = err
			pc.conn.Close()
			return
		}
	}
	d.read = true
	x.bodyRead.Store(true)
	if r.chunked && werr == nil {
		_, werr = pc.bw.WriteString("0\r\n\r\n")
	}
	if werr == nil {
		werr = pc.bw.Flush()
	}
	if werr != nil {
		pc.conn.Close()
		return
	}
	d.ok = true
	x.bodySent.Store(true)
}

// discardTrailer reads the trailer section after a chunked body's last
// chunk, checking each line as a header line, within maxTrailer bytes.
func (x *h1Exchange) discardTrailer() error {
	budget := x.maxTrailer
	var line []byte
	for {
		var err error
		if line, err = readLine(x.vr, line[:0], &budget); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if len(line) == 0 {
			return nil
		}
		if err := addHeaderLine(http.Header{}, string(line), make([]string, 1)); err != nil {
			return err
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// forwardH1 sends x's request over a kept stream of the tunnel name or a
// new one (x.pc is set here), and once more on a new stream when a kept
// one failed before the service could have seen the request; as
// RoundTrip does for the ReverseProxy path. ctx bounds a new stream's
// dial and carries the request's target (see dialTunnel).
func (p *streamPool) forwardH1(ctx context.Context, name string, x *h1Exchange) (h1Result, error) {
	hasBody := x.req.chunked || x.req.ContentLength > 0
	replayable := !hasBody && isReplayable(&x.req.Request)
	for attempt := 0; ; attempt++ {
		pc := p.take(name, !replayable)
		if pc == nil {
			var err error
			if pc, err = p.newConn(ctx, name); err != nil {
				return h1Result{}, err
			}
		}
		x.pc = pc
		x.live.Store(pc)
		if x.gone.Load() {
			pc.conn.Close()
		}
		res, err := x.forward()
		var rerr *retryableError
		if err != nil && attempt == 0 && errors.As(err, &rerr) {
			continue
		}
		return res, err
	}
}

// dateCache holds the Date header value of the current second.
var dateCache atomic.Pointer[cachedDate]

type cachedDate struct {
	sec  int64
	text string
}

// httpDate is now as a Date header value, formatted once a second.
func httpDate() string {
	now := time.Now()
	if d := dateCache.Load(); d != nil && d.sec == now.Unix() {
		return d.text
	}
	d := &cachedDate{sec: now.Unix(), text: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.text
}
