package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/internal/testwait"
)

// h1Service is a real HTTP service on loopback, the far end of a tunnel's
// streams, counting the connections it was given.
type h1Service struct {
	addr  string
	conns atomic.Int64
}

func newH1Service(t testing.TB, h http.Handler) *h1Service {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &h1Service{addr: ln.Addr().String()}
	var conns sync.WaitGroup
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.conns.Add(1)
			conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			conns.Done()
		}
	}}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
		conns.Wait()
	})
	return s
}

// pool is a stream pool whose streams are TCP connections to the service.
func (s *h1Service) pool() *streamPool {
	return &streamPool{
		dial: func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", s.addr)
		},
		max:  4,
		idle: time.Minute,
	}
}

// h1Front serves visitors on loopback with the edge's own path, every
// request forwarded to pool for the tunnel "t" at host: the connection
// loop without the routing the Server does around it.
type h1Front struct {
	addr string
	// exchanges reports each exchange's result and error.
	exchanges chan h1Outcome
	// slowHeads: every response head goes to net/http's reader.
	slowHeads bool
}

type h1Outcome struct {
	res h1Result
	err error
}

func newH1Front(t testing.TB, pool *streamPool, host string) *h1Front {
	t.Helper()
	return newH1FrontReading(t, pool, host, false)
}

// newH1FrontReading is newH1Front whose response heads all go to
// net/http's reader when slowHeads.
func newH1FrontReading(t testing.TB, pool *streamPool, host string, slowHeads bool) *h1Front {
	t.Helper()
	// Cleanups run last first: the pool closes after the front's
	// connections have ended.
	t.Cleanup(pool.close)
	f := &h1Front{exchanges: make(chan h1Outcome, 64), slowHeads: slowHeads}
	f.addr = testnet.Serve(t, func(c net.Conn) { f.serve(c, pool, host) })
	return f
}

// newProxyFront is net/http's path in miniature, for comparing the own
// path with: a server whose handler sends every request through
// ReverseProxy with rewrite, to tg over pool. It returns its address.
func newProxyFront(t testing.TB, pool *streamPool, tg target) string {
	t.Helper()
	t.Cleanup(pool.close)
	rp := &httputil.ReverseProxy{Rewrite: rewrite, Transport: pool, BufferPool: copyBufPool{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rp.ServeHTTP(w, r.WithContext(withTarget(r.Context(), tg)))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func (f *h1Front) serve(c net.Conn, pool *streamPool, host string) {
	defer c.Close()
	hr := headReader{br: bufio.NewReader(c), max: 64 << 10}
	vw := bufio.NewWriter(c)
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		r, err := hr.read()
		if err != nil {
			var he *headError
			if errors.As(err, &he) {
				writeHeadError(c, he)
			}
			return
		}
		c.SetReadDeadline(time.Time{})
		rewriteHead(r, target{name: "t", host: host}, c.RemoteAddr().String(), false)
		x := &h1Exchange{conn: c, vr: hr.br, vw: vw, req: r, host: host, maxTrailer: 64 << 10, slowHead: f.slowHeads}
		res, err := pool.forwardH1(context.Background(), "t", x)
		if err == nil && res.unflushed {
			vw.Flush()
		}
		if f.exchanges != nil {
			f.exchanges <- h1Outcome{res, err}
		}
		if err != nil || !res.keepAlive {
			return
		}
	}
}

func (f *h1Front) client(t testing.TB) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", f.addr)
		},
		ExpectContinueTimeout: time.Minute,
		MaxConnsPerHost:       1,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (f *h1Front) outcome(t *testing.T) h1Outcome {
	t.Helper()
	select {
	case o := <-f.exchanges:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no exchange within 10s")
		return h1Outcome{}
	}
}

func TestH1_ForwardKeepsBothConnections(t *testing.T) {
	svc := newH1Service(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s %s", r.Method, r.Host, r.RequestURI, r.Header.Get("X-Forwarded-Host"))
	}))
	f := newH1Front(t, svc.pool(), "t.example")
	c := f.client(t)
	for i := range 3 {
		res, err := c.Get(fmt.Sprintf("http://t.example/p%d?q=1", i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if want := fmt.Sprintf("GET t.example /p%d?q=1 t.example", i); string(b) != want {
			t.Fatalf("got %q, want %q", b, want)
		}
		if o := f.outcome(t); o.err != nil || !o.res.keepAlive || o.res.status != 200 {
			t.Fatalf("exchange %d: %+v", i, o)
		}
	}
	if n := svc.conns.Load(); n != 1 {
		t.Fatalf("the service got %d connections, want 1: the stream was not kept", n)
	}
}

func echoBody(w http.ResponseWriter, r *http.Request) {
	sum := sha256.New()
	n, err := io.Copy(sum, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%d %x %q %q", n, sum.Sum(nil), r.TransferEncoding, r.Trailer.Get("X-T"))
}

func TestH1_ForwardRequestBodies(t *testing.T) {
	svc := newH1Service(t, http.HandlerFunc(echoBody))
	f := newH1Front(t, svc.pool(), "t.example")
	c := f.client(t)
	big := make([]byte, 3<<20)
	rand.Read(big)
	sum := sha256.Sum256(big)
	for _, tc := range []struct {
		name   string
		body   func() io.Reader
		expect bool
		want   string
	}{
		{"length", func() io.Reader { return bytes.NewReader(big) }, false, fmt.Sprintf("%d %x [] \"\"", len(big), sum)},
		{"chunked", func() io.Reader { return io.MultiReader(bytes.NewReader(big)) }, false, fmt.Sprintf("%d %x [\"chunked\"] \"\"", len(big), sum)},
		{"expect continue", func() io.Reader { return bytes.NewReader(big) }, true, fmt.Sprintf("%d %x [] \"\"", len(big), sum)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, "http://t.example/up", tc.body())
			if tc.expect {
				req.Header.Set("Expect", "100-continue")
			}
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if string(b) != tc.want {
				t.Fatalf("got %q, want %q", b, tc.want)
			}
			o := f.outcome(t)
			if o.err != nil || o.res.bytesIn != int64(len(big)) || !o.res.keepAlive {
				t.Fatalf("exchange: %+v", o)
			}
		})
	}
}

// TestH1_ChunkedTrailersNotPassed: the visitor's chunk extensions and
// trailers are read, checked and dropped; the service gets the edge's own
// chunks.
func TestH1_ChunkedTrailersNotPassed(t *testing.T) {
	svc := newH1Service(t, http.HandlerFunc(echoBody))
	f := newH1Front(t, svc.pool(), "t.example")
	c := dialFront(t, f.addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: t.example\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"+
		"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: v\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	sum := sha256.Sum256([]byte("abcde"))
	if want := fmt.Sprintf("5 %x [\"chunked\"] \"\"", sum); string(b) != want {
		t.Fatalf("got %q, want %q", b, want)
	}
}

func TestH1_ForwardResponses(t *testing.T) {
	svc := newH1Service(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream":
			w.Header().Set("Trailer", "X-Sum")
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
			}
			w.Header().Set("X-Sum", "3")
		case "/untyped":
			w.Header()["Content-Type"] = nil // no type: sniffed by the edge
			io.WriteString(w, "<html><body>hi</body></html>")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Connection", "X-Hop")
			w.Header().Set("X-Hop", "1")
			w.Header().Set("Keep-Alive", "timeout=5")
			io.WriteString(w, "plain")
		}
	}))
	f := newH1Front(t, svc.pool(), "t.example")
	c := f.client(t)
	get := func(path string) (*http.Response, string) {
		t.Helper()
		res, err := c.Get("http://t.example" + path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if o := f.outcome(t); o.err != nil {
			t.Fatalf("%s: %v", path, o.err)
		}
		return res, string(b)
	}
	res, body := get("/stream")
	if body != "data: 0\n\ndata: 1\n\ndata: 2\n\n" || res.Trailer.Get("X-Sum") != "3" || len(res.TransferEncoding) != 1 {
		t.Fatalf("stream: body %q trailer %v encoding %v", body, res.Trailer, res.TransferEncoding)
	}
	res, body = get("/untyped")
	if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" || body != "<html><body>hi</body></html>" {
		t.Fatalf("untyped: type %q body %q", ct, body)
	}
	res, _ = get("/empty")
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("empty: %d", res.StatusCode)
	}
	res, body = get("/")
	if body != "plain" || res.Header.Get("X-Hop") != "" || res.Header.Get("Keep-Alive") != "" || res.Header.Get("Date") == "" {
		t.Fatalf("plain: body %q header %v", body, res.Header)
	}
	req, _ := http.NewRequest(http.MethodHead, "http://t.example/", nil)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if o := f.outcome(t); o.err != nil || res.ContentLength != 5 {
		t.Fatalf("head: %v, length %d", o.err, res.ContentLength)
	}
}

// TestH1_HTTP10VisitorReadsToClose: a response of unknown length goes to
// an HTTP/1.0 visitor unchunked, ended by closing the connection.
func TestH1_HTTP10VisitorReadsToClose(t *testing.T) {
	svc := newH1Service(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "one ")
		w.(http.Flusher).Flush()
		io.WriteString(w, "two")
	}))
	f := newH1Front(t, svc.pool(), "t.example")
	c := dialFront(t, f.addr)
	io.WriteString(c, "GET / HTTP/1.0\r\nHost: t.example\r\n\r\n")
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := strings.Cut(string(all), "\r\n\r\n")
	if body != "one two" || strings.Contains(head, "chunked") || !strings.Contains(head, "Connection: close") {
		t.Fatalf("got %q", all)
	}
	if o := f.outcome(t); o.err != nil || o.res.keepAlive {
		t.Fatalf("exchange: %+v", o)
	}
}

// TestH1_EarlyAnswerEndsTheUpload: a service that answers before reading
// an upload gets its answer to the visitor at once, and the visitor's
// connection ends after it (the rest of the body is not read).
func TestH1_EarlyAnswerEndsTheUpload(t *testing.T) {
	svc := newH1Service(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	f := newH1Front(t, svc.pool(), "t.example")
	c := dialFront(t, f.addr)
	// The head and a little of a 1 GiB body; the visitor then waits.
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: t.example\r\nContent-Length: 1073741824\r\n\r\nsome")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("got %d, want 413", res.StatusCode)
	}
	o := f.outcome(t)
	if o.err != nil || o.res.keepAlive {
		t.Fatalf("exchange: %+v, want the visitor's connection to end", o)
	}
}

// TestH1_RewriteMatchesReverseProxy sends the same visitor requests
// through the proxy's ReverseProxy path (rewrite, over a stream pool) and
// through the edge's own path, and compares what the service sees.
func TestH1_RewriteMatchesReverseProxy(t *testing.T) {
	type seen struct {
		host, uri string
		header    http.Header
	}
	got := make(chan seen, 2)
	svc := newH1Service(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- seen{r.Host, r.RequestURI, r.Header}
	}))
	heads := []string{
		"GET /a?b=1 HTTP/1.1\r\nHost: t.example\r\nUser-Agent: ua\r\n\r\n",
		"GET /a?b=1;c=2&d=%zz&e=3 HTTP/1.1\r\nHost: t.example\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: t.example\r\nX-Forwarded-For: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\nX-Real-Ip: 6.6.6.6\r\n" +
			"Forwarded: for=6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\nX-Tunnel-User-Email: a@b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: t.example\r\nConnection: X-Foo, keep-alive\r\nX-Foo: 1\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\n" +
			"Te: trailers, deflate\r\nTrailer: X-T\r\nProxy-Authorization: Basic eA==\r\n\r\n",
		"POST /f HTTP/1.1\r\nHost: t.example\r\nContent-Length: 3\r\nAuthorization: Basic dTpw\r\nCookie: a=1; __Host-tunnel-s=x; b=2\r\n\r\nabc",
		"POST /f HTTP/1.1\r\nHost: t.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"PUT /e HTTP/1.1\r\nHost: t.example\r\nContent-Length: 0\r\n\r\n",
		"PUT /e HTTP/1.1\r\nHost: t.example\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"DELETE /e HTTP/1.1\r\nHost: t.example\r\n\r\n",
	}
	for _, tg := range []target{
		{name: "t", host: "t.example"},
		{name: "t", host: "t.example", forwarded: true, stripAuth: true, email: "v@example.com"},
	} {
		edgeAddr := newProxyFront(t, svc.pool(), tg)
		for _, head := range heads {
			viaProxy := sendHead(t, edgeAddr, head, got)

			r, err := readHead(t, head)
			if err != nil {
				t.Fatal(err)
			}
			rewriteHead(r, tg, "127.0.0.1:1234", false)
			viaOwn := sendHeadDirect(t, svc.addr, r, head, got)

			if viaProxy.host != viaOwn.host || viaProxy.uri != viaOwn.uri || !equalHeader(viaProxy.header, viaOwn.header) {
				t.Errorf("forwarded %v\n%q:\nReverseProxy: %s %s %v\nown path:     %s %s %v", tg, head,
					viaProxy.host, viaProxy.uri, viaProxy.header, viaOwn.host, viaOwn.uri, viaOwn.header)
			}
		}
	}
}

// sendHead sends a raw head to addr and returns what the service saw.
func sendHead[T any](t *testing.T, addr, head string, got <-chan T) T {
	t.Helper()
	return sendTo(t, addr, func(w *bufio.Writer) { w.WriteString(head) }, got)
}

// sendHeadDirect writes r's head as the edge's own path does, and its
// body from the raw request, straight to the service.
func sendHeadDirect[T any](t *testing.T, addr string, r *h1Request, raw string, got <-chan T) T {
	t.Helper()
	return sendTo(t, addr, func(w *bufio.Writer) {
		writeRequestHead(w, r, r.Host)
		_, body, _ := strings.Cut(raw, "\r\n\r\n")
		w.WriteString(body)
	}, got)
}

// dialFront dials addr with a 10 s deadline on everything; the test's
// end closes the connection.
func dialFront(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// sendTo writes one request to addr with write, reads the answer, and
// returns what the service reported seeing.
func sendTo[T any](t *testing.T, addr string, write func(*bufio.Writer), got <-chan T) T {
	t.Helper()
	c := dialFront(t, addr)
	defer c.Close()
	w := bufio.NewWriter(c)
	write(w)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return testwait.Recv(t, got, 10*time.Second)
}

// rawService answers each connection with handle, for services that do
// what net/http's server never does.
type rawService struct {
	addr  string
	conns atomic.Int64
}

func newRawService(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) *rawService {
	t.Helper()
	s := &rawService{}
	s.addr = testnet.Serve(t, func(c net.Conn) {
		s.conns.Add(1)
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		handle(c, bufio.NewReader(c))
	})
	return s
}

func (s *rawService) pool() *streamPool {
	return (&h1Service{addr: s.addr}).pool()
}

// TestH1_KeptStreamClosedIsRetried: the service closes each connection
// after one answer without saying so; the next GET meets the kept stream
// closed and is sent again on a new one.
func TestH1_KeptStreamClosedIsRetried(t *testing.T) {
	svc := newRawService(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	f := newH1Front(t, svc.pool(), "t.example")
	c := f.client(t)
	for i := range 3 {
		res, err := c.Get("http://t.example/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if o := f.outcome(t); o.err != nil || string(b) != "ok" {
			t.Fatalf("request %d: %q, %v", i, b, o.err)
		}
	}
	if n := svc.conns.Load(); n != 3 {
		t.Fatalf("the service got %d connections, want 3", n)
	}
}

func TestH1_InformationalResponses(t *testing.T) {
	svc := newRawService(t, func(c net.Conn, br *bufio.Reader) {
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch r.URL.Path {
			case "/hints":
				io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			case "/many":
				io.WriteString(c, strings.Repeat("HTTP/1.1 102 Processing\r\n\r\n", max1xx+1)+"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			case "/huge":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Huge: "+strings.Repeat("h", maxResponseHeader)+"\r\n\r\n")
			}
		}
	})
	f := newH1Front(t, svc.pool(), "t.example")

	c := f.client(t)
	var hints []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, fmt.Sprint(code, h.Get("Link")))
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://t.example/hints", nil)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if o := f.outcome(t); o.err != nil || len(hints) != 1 || hints[0] != "103</s.css>" {
		t.Fatalf("got 1xx %q, %v; want the 103 alone", hints, o.err)
	}

	for _, path := range []string{"/many", "/huge"} {
		cc, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(cc, "GET "+path+" HTTP/1.1\r\nHost: t.example\r\n\r\n")
		o := f.outcome(t)
		cc.Close()
		if o.err == nil || o.res.status != 0 {
			t.Fatalf("%s: got %+v, want an error before any answer", path, o)
		}
		if path == "/huge" && !errors.Is(o.err, errResponseHeaderTooLarge) {
			t.Fatalf("%s: got %v, want %v", path, o.err, errResponseHeaderTooLarge)
		}
	}
}

// BenchmarkH1Exchange compares the front of one small request, the same
// service and client around it: the edge's own path (head reader, rewrite,
// exchange) against net/http's server with the proxy's ReverseProxy and
// rewrite over the same stream pool. Streams are TCP connections to the
// service here (no yamux, no TLS, no limits or metrics); "direct" is the
// client and the service alone, so each front costs its figure less
// direct's.
//
//	go test -run '^$' -bench BenchmarkH1Exchange -benchmem ./pkg/edge
func BenchmarkH1Exchange(b *testing.B) {
	page := make([]byte, 1<<10)
	svc := newH1Service(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(page) }))
	run := func(b *testing.B, addr string) {
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			},
			MaxIdleConnsPerHost: 64,
		}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				res, err := c.Get("http://t.example/")
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		})
	}
	// direct is the client and the service alone: what the two fronts
	// add is their figure less this one.
	b.Run("direct", func(b *testing.B) { run(b, svc.addr) })
	b.Run("own", func(b *testing.B) {
		f := newH1Front(b, svc.pool(), "t.example")
		f.exchanges = nil
		run(b, f.addr)
	})
	b.Run("reverseproxy", func(b *testing.B) {
		run(b, newProxyFront(b, svc.pool(), target{name: "t", host: "t.example"}))
	})
}
