package inspect

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
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

// pending is an exchange being recorded.
type pending struct {
	ex      *Exchange
	req     *http.Request // for ReadResponse: a HEAD has no body
	reqBody *capture
	reqDone chan struct{} // closed when the request body is read (or cannot be)
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

// parseBufSize is the parser's buffer: it holds a request's or response's
// headers (net/http allows 1 MiB of them; a longer line is read in parts).
const parseBufSize = 16 << 10

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
	br := bufio.NewReaderSize(io.TeeReader(wr, cw), parseBufSize)
	queued := true
	defer c.finish()
	defer func() {
		if queued {
			close(c.queue)
		}
	}()
	for {
		if _, err := br.Peek(1); err != nil {
			return ioResult(cw, wr) // the end, between requests
		}
		req, err := http.ReadRequest(br)
		if err != nil || req.ProtoMajor != 1 {
			// Not HTTP/1.x (HTTP/2's preface parses as "PRI *
			// HTTP/2.0"): nothing to record; CopyOut goes raw too
			// when the queue closes.
			return raw(cw, wr)
		}
		p := c.newPending(req)
		select {
		case c.queue <- p:
		case <-c.outDone:
			// The responses are no longer read: nothing more to record.
			close(p.reqDone)
			close(c.queue)
			queued = false
			return raw(cw, wr)
		}
		if p.ex.Upgrade {
			close(p.reqDone)
			close(c.queue)
			queued = false
			return raw(cw, wr)
		}
		bp := copyBufs.Get().(*[]byte)
		_, err = io.CopyBuffer(p.reqBody, req.Body, *bp)
		copyBufs.Put(bp)
		close(p.reqDone)
		if err != nil {
			return raw(cw, wr) // a bad chunk, or the stream broke
		}
	}
}

func (c *streamCopier) newPending(req *http.Request) *pending {
	visitor := c.info.Visitor
	if xff := req.Header.Get("X-Forwarded-For"); xff != "" {
		first, _, _ := strings.Cut(xff, ",")
		visitor = strings.TrimSpace(first)
	}
	ex := &Exchange{
		Tunnel:    c.info.Tunnel,
		Target:    c.info.Target,
		StreamID:  c.info.StreamID,
		Visitor:   visitor,
		Start:     time.Now(),
		Method:    req.Method,
		URL:       req.RequestURI,
		Host:      req.Host,
		Proto:     req.Proto,
		ReqHeader: req.Header,
		Upgrade:   isUpgrade(req.Header),
	}
	return &pending{ex: ex, req: req, reqBody: newCapture(c.in.st, c.in.cfg.MaxBody).sizeHint(req.ContentLength), reqDone: make(chan struct{})}
}

// isUpgrade reports whether h asks to switch protocols (Connection:
// upgrade), as a WebSocket handshake does.
func isUpgrade(h http.Header) bool {
	for _, v := range h["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// CopyOut copies the local service's responses to the visitor, recording
// each with its request.
func (c *streamCopier) CopyOut(dst io.Writer, src io.Reader) (n int64, err error) {
	defer c.finish()
	defer c.stopOut()
	cw := &countWriter{w: dst}
	wr := &watchedReader{r: src}
	br := bufio.NewReaderSize(io.TeeReader(wr, cw), parseBufSize)
	for {
		// Wait for the service's next bytes before its request: an idle
		// keep-alive connection the service closes must end the stream
		// at once, as the raw copy does.
		if _, err := br.Peek(1); err != nil {
			return ioResult(cw, wr)
		}
		p, ok := c.next()
		if !ok {
			return c.rawOut(cw, wr) // not a request we could read, or no request at all
		}
		resp, err := http.ReadResponse(br, p.req)
		for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			resp, err = http.ReadResponse(br, p.req) // 100 Continue and the like precede the answer
		}
		if err != nil {
			c.record(p, nil, responseErr(wr, cw))
			return c.rawOut(cw, wr)
		}
		p.ex.Status, p.ex.RespProto, p.ex.RespHeader = resp.StatusCode, resp.Proto, resp.Header
		if resp.StatusCode == http.StatusSwitchingProtocols {
			c.record(p, nil, "")
			return c.rawOut(cw, wr)
		}
		body := newCapture(c.in.st, c.in.cfg.MaxBody).sizeHint(resp.ContentLength)
		bp := copyBufs.Get().(*[]byte)
		_, err = io.CopyBuffer(body, resp.Body, *bp)
		copyBufs.Put(bp)
		if err != nil {
			c.record(p, body, responseErr(wr, cw))
			return c.rawOut(cw, wr)
		}
		c.record(p, body, "")
		if p.ex.Upgrade {
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
// body is read (or CopyIn gave up on it).
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
	c.in.st.add(p.ex, cost)
	// No URL: its query may hold a secret, and the page is the place to
	// see it.
	c.in.log.Debug().Uint32("stream_id", p.ex.StreamID).Str("host", c.info.Tunnel).Str("method", p.ex.Method).
		Int("status", p.ex.Status).Dur("duration", p.ex.Duration).Msg("exchange recorded")
}
