package inspect

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/mux"
)

// Inspector records the HTTP exchanges of the streams it copies and serves
// them (Handler). Its methods are safe to call concurrently.
type Inspector struct {
	cfg Config
	log zerolog.Logger
	st  *store
}

// New returns an Inspector. It starts nothing: mux calls its copiers, and
// Handler serves the page and the API.
func New(cfg Config) (*Inspector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With().Str("component", "inspect").Logger()
	return &Inspector{cfg: cfg, log: log, st: newStore(cfg.MaxMemory, cfg.OnExchange)}, nil
}

// Copier is a mux.ClientConfig.Copier: each stream gets a copier that
// records its HTTP exchanges.
func (in *Inspector) Copier(info mux.StreamInfo) mux.StreamCopier {
	return &streamCopier{
		in:      in,
		info:    info,
		queue:   make(chan *pending, 16),
		outDone: make(chan struct{}),
	}
}

// Stats returns the bytes the recorded exchanges hold (in flight or
// stored) and how many are stored.
func (in *Inspector) Stats() (used int64, exchanges int) { return in.st.stats() }

// streamCopier follows one stream: CopyIn reads requests, CopyOut their
// responses, in order; queue hands each request to CopyOut.
type streamCopier struct {
	in   *Inspector
	info mux.StreamInfo

	queue   chan *pending // requests waiting for their response; closed by CopyIn
	outDone chan struct{} // closed when CopyOut stops reading responses (raw, or returned): CopyIn stops queueing
	outOnce sync.Once
	ended   atomic.Int32 // CopyIn and CopyOut that returned; the second cleans up
}

// stopOut says CopyOut reads no more responses: requests queued from now
// on would wait forever, so CopyIn stops queueing and copies raw.
func (c *streamCopier) stopOut() { c.outOnce.Do(func() { close(c.outDone) }) }

// rawOut copies the rest of the responses raw.
func (c *streamCopier) rawOut(cw *countWriter, wr *watchedReader) (int64, error) {
	c.stopOut()
	return raw(cw, wr)
}

// unsolicitedWait is how long the service's bytes may wait for the request
// they answer to be parsed (a service may answer before the request's
// headers are all read); bytes with no request after it (a 408 on an idle
// connection, say) end the recording, and the rest is copied raw.
const unsolicitedWait = time.Second

// next returns the request the service's next response answers; false
// when there is none: CopyIn has ended, or none came within
// unsolicitedWait.
func (c *streamCopier) next() (*pending, bool) {
	select {
	case p, ok := <-c.queue:
		return p, ok
	default:
	}
	t := time.NewTimer(unsolicitedWait)
	defer t.Stop()
	select {
	case p, ok := <-c.queue:
		return p, ok
	case <-t.C:
		return nil, false
	}
}

// finish is deferred by CopyIn and CopyOut: the second to return records
// the requests left without a response (queue is closed by then).
func (c *streamCopier) finish() {
	if c.ended.Add(1) < 2 {
		return
	}
	for p := range c.queue {
		c.record(p, nil, "no response: the stream ended first")
	}
}

// pending is an exchange being recorded. Pendings are reused (pendings):
// once recorded, nothing refers to one, and with the store full what the
// inspector allocates per exchange sets how often the collector runs.
type pending struct {
	ex      Exchange // its headers are reqHdr and respHdr, encoded
	reqHdr  []byte
	respHdr []byte // CopyOut's buffer, valid until record returns
	reqBody capture
	reqDone chan struct{} // one value when the request body is read (or cannot be); capacity 1
}

var pendings = sync.Pool{New: func() any { return &pending{reqDone: make(chan struct{}, 1)} }}

// reqRead tells record that the request body is read, or cannot be.
func (p *pending) reqRead() { p.reqDone <- struct{}{} }

// release gives p back to pendings: its exchange is recorded (or was
// never queued).
func (p *pending) release() {
	hdr := p.reqHdr[:0]
	if cap(hdr) > 4<<10 {
		hdr = nil // a rare large head is not kept for the next
	}
	*p = pending{reqHdr: hdr, reqDone: p.reqDone}
	pendings.Put(p)
}

// watchedReader remembers the error its reader returned, so that a parse
// error can be told from a read error; a clean EOF is remembered too.
type watchedReader struct {
	r   io.Reader
	err error
}

func (w *watchedReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// countWriter counts what it writes on and remembers its error.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

// parseBufSize is the parser's buffer, two per stream for the stream's
// life: it holds a usual request's or response's headers (net/http allows
// 1 MiB of them; a longer line is read in parts). It is small because
// tunneld keeps streams open between requests: at 16 KiB, 256 kept
// streams held 8 MiB of the client's memory limit, and a full store then
// left the collector no room (make bench, the inspector at 256
// connections: a collection every 30 ms).
const parseBufSize = 4 << 10

// copyBufs are the bodies' copy buffers: 128 KiB, as pkg/mux's large one,
// so that a download goes out in 128 KiB yamux frames as without the
// inspector (each read of a body is written on as it is).
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}

// ioResult is the end of a copy: the bytes written and the first error of
// reading src or writing dst; a clean EOF of src is nil.
func ioResult(cw *countWriter, wr *watchedReader) (int64, error) {
	if cw.err != nil {
		return cw.n, cw.err
	}
	if wr.err != nil && wr.err != io.EOF {
		return cw.n, wr.err
	}
	return cw.n, nil
}

// raw copies the rest of src to cw once the parser stopped following: what
// the parser's buffer holds was written on already (the tee).
func raw(cw *countWriter, wr *watchedReader) (int64, error) {
	if wr.err == nil {
		bp := copyBufs.Get().(*[]byte)
		io.CopyBuffer(cw, wr, *bp)
		copyBufs.Put(bp)
	}
	return ioResult(cw, wr)
}

// CopyIn copies the visitor's requests to the local service, recording each.
func (c *streamCopier) CopyIn(dst io.Writer, src io.Reader) (int64, error) {
	cw := &countWriter{w: dst}
	wr := &watchedReader{r: src}
	hr := &headReader{br: bufio.NewReaderSize(io.TeeReader(wr, cw), parseBufSize)}
	queued := true
	defer c.finish()
	defer func() {
		if queued {
			close(c.queue)
		}
	}()
	var lr io.LimitedReader
	for {
		if _, err := hr.br.Peek(1); err != nil {
			return ioResult(cw, wr) // the end, between requests
		}
		h, err := hr.request()
		if err != nil {
			// Not HTTP/1.x (HTTP/2's preface reads as "PRI *
			// HTTP/2.0"), or not a request net/http would read:
			// nothing to record; CopyOut goes raw too when the queue
			// closes.
			return raw(cw, wr)
		}
		p := c.newPending(h, hr.hdr)
		select {
		case c.queue <- p:
		case <-c.outDone:
			// The responses are no longer read: nothing more to record.
			p.release()
			close(c.queue)
			queued = false
			return raw(cw, wr)
		}
		if p.ex.Upgrade {
			p.reqRead()
			close(c.queue)
			queued = false
			return raw(cw, wr)
		}
		err = copyBody(&p.reqBody, hr, h.chunked, h.length, &lr)
		p.reqRead()
		if err != nil {
			return raw(cw, wr) // a bad chunk, or the stream broke
		}
	}
}

// copyBody copies a body framed as chunked or length (-1: until the
// stream ends) from hr to body.
func copyBody(body *capture, hr *headReader, chunked bool, length int64, lr *io.LimitedReader) error {
	var src io.Reader
	switch {
	case chunked:
		src = httputil.NewChunkedReader(hr.br)
	case length == 0:
		return nil
	case length <= int64(hr.br.Size()):
		return copyBuffered(body, hr.br, length)
	case length > 0:
		*lr = io.LimitedReader{R: hr.br, N: length}
		src = lr
	default:
		src = hr.br
	}
	bp := copyBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(body, src, *bp)
	copyBufs.Put(bp)
	switch {
	case err != nil:
		return err
	case chunked:
		return hr.trailer()
	case length > 0 && lr.N > 0:
		return io.ErrUnexpectedEOF
	}
	return nil
}

// copyBuffered copies a body of n bytes, at most br's buffer, from br to
// body: straight from br's buffer, as a small body is read with its head
// (a copy buffer, 128 KiB, would be the largest thing the exchange
// allocates, and a download wants it: copyBody).
func copyBuffered(body *capture, br *bufio.Reader, n int64) error {
	for n > 0 {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err == io.EOF {
				return io.ErrUnexpectedEOF
			} else if err != nil {
				return err
			}
		}
		b, _ := br.Peek(int(min(int64(br.Buffered()), n)))
		body.Write(b)
		br.Discard(len(b))
		n -= int64(len(b))
	}
	return nil
}

func (c *streamCopier) newPending(h head, hdr []byte) *pending {
	visitor := c.info.Visitor
	if h.visitor != "" {
		visitor = h.visitor
	}
	p := pendings.Get().(*pending)
	p.ex = Exchange{
		Tunnel:   c.info.Tunnel,
		Target:   c.info.Target,
		StreamID: c.info.StreamID,
		Visitor:  visitor,
		Start:    time.Now(),
		Method:   h.method,
		URL:      h.target,
		Host:     h.host,
		Proto:    h.proto,
		Upgrade:  h.upgrade,
	}
	p.reqHdr = append(p.reqHdr[:0], hdr...)
	p.reqBody.init(c.in.st, c.in.cfg.MaxBody, h.length)
	return p
}

// CopyOut copies the local service's responses to the visitor, recording
// each with its request.
func (c *streamCopier) CopyOut(dst io.Writer, src io.Reader) (n int64, err error) {
	defer c.finish()
	defer c.stopOut()
	cw := &countWriter{w: dst}
	wr := &watchedReader{r: src}
	hr := &headReader{br: bufio.NewReaderSize(io.TeeReader(wr, cw), parseBufSize)}
	var lr io.LimitedReader
	for {
		// Wait for the service's next bytes before its request: an idle
		// keep-alive connection the service closes must end the stream
		// at once, as the raw copy does.
		if _, err := hr.br.Peek(1); err != nil {
			return ioResult(cw, wr)
		}
		p, ok := c.next()
		if !ok {
			return c.rawOut(cw, wr) // not a request we could read, or no request at all
		}
		h, err := hr.response()
		for err == nil && h.status < 200 && h.status != http.StatusSwitchingProtocols {
			h, err = hr.response() // 100 Continue and the like precede the answer
		}
		if err != nil {
			c.record(p, nil, responseErr(wr, cw))
			return c.rawOut(cw, wr)
		}
		p.ex.Status, p.ex.RespProto, p.respHdr = h.status, h.proto, hr.hdr
		if h.status == http.StatusSwitchingProtocols {
			c.record(p, nil, "")
			return c.rawOut(cw, wr)
		}
		length := h.responseLength(p.ex.Method)
		var body capture
		body.init(c.in.st, c.in.cfg.MaxBody, length)
		if length != -2 {
			err = copyBody(&body, hr, h.chunked, length, &lr)
		}
		if err != nil {
			c.record(p, &body, responseErr(wr, cw))
			return c.rawOut(cw, wr)
		}
		upgrade := p.ex.Upgrade // p is reused once recorded
		c.record(p, &body, "")
		if upgrade {
			return c.rawOut(cw, wr) // an upgrade refused: CopyIn copies raw already
		}
	}
}

func responseErr(wr *watchedReader, cw *countWriter) string {
	switch {
	case cw.err != nil:
		return "the visitor's connection failed: " + cw.err.Error()
	case wr.err == io.EOF:
		return "the local service closed the connection before its response ended"
	case wr.err != nil && errors.Is(wr.err, net.ErrClosed):
		return "the stream was closed before the response ended"
	case wr.err != nil:
		return "reading the response: " + wr.err.Error()
	default:
		return "the response is not HTTP/1.1 the inspector can read"
	}
}

// record stores p's exchange with the response body, once its request
// body is read (or CopyIn gave up on it), and releases p: the caller
// must not use it after.
func (c *streamCopier) record(p *pending, resp *capture, errText string) {
	<-p.reqDone
	p.ex.Duration = time.Since(p.ex.Start)
	p.ex.ReqBody = p.reqBody.body()
	cost := p.reqBody.cost()
	if resp != nil {
		p.ex.RespBody = resp.body()
		cost += resp.cost()
	}
	p.ex.Err = errText
	c.in.st.add(&p.ex, p.reqHdr, p.respHdr, cost)
	p.respHdr = nil // CopyOut's buffer, reused
	// No URL: its query may hold a secret, and the page is the place to
	// see it.
	c.in.log.Debug().Uint32("stream_id", p.ex.StreamID).Str("host", c.info.Tunnel).Str("method", p.ex.Method).
		Int("status", p.ex.Status).Dur("duration", p.ex.Duration).Msg("exchange recorded")
	p.release()
}
