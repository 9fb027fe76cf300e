package edge

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// headRow is one request head and what the edge's reader makes of it.
type headRow struct {
	name string
	head string
	// status: 0 accepted; else the refusal's status.
	status int
	// netRefuses: net/http's server refuses it too, and the edge's answer
	// must be the same bytes. false on a refused row: the edge is stricter
	// than net/http there (an ambiguous shape net/http tolerates).
	netRefuses bool
	// for accepted rows
	length  int64
	chunked bool
	close   bool
	host    string
}

const maxTestHead = 4 << 10

func headRows() []headRow {
	long := strings.Repeat("a", maxTestHead+4096)
	return []headRow{
		{name: "get", head: "GET /x?y=1 HTTP/1.1\r\nHost: a.example\r\n\r\n", host: "a.example"},
		{name: "post with a length", head: "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\n", length: 5, host: "a.example"},
		{name: "chunked", head: "POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n", length: -1, chunked: true, host: "a.example"},
		{name: "chunked in capitals", head: "POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: CHUNKED\r\n\r\n", length: -1, chunked: true, host: "a.example"},
		{name: "the same length twice", head: "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", length: 5, host: "a.example"},
		{name: "http/1.0 without host closes", head: "GET / HTTP/1.0\r\n\r\n", close: true},
		{name: "connection close", head: "GET / HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, close\r\n\r\n", close: true, host: "a.example"},
		{name: "absolute form names the host", head: "GET http://b.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n", host: "b.example"},
		{name: "expect continue", head: "PUT / HTTP/1.1\r\nHost: a.example\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", length: 3, host: "a.example"},
		{name: "expect continue in http/1.0 is ignored", head: "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", length: 3, close: true},
		{name: "http/1.2 served as 1.1", head: "GET / HTTP/1.2\r\nHost: a\r\n\r\n", host: "a"},
		{name: "value white space trimmed", head: "GET / HTTP/1.1\r\nHost: a.example\r\nX-A: \t v \t\r\n\r\n", host: "a.example"},

		{name: "length and chunked", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", status: 400},
		{name: "lengths that differ", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", status: 400, netRefuses: true},
		{name: "length list", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", status: 400, netRefuses: true},
		{name: "negative length", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", status: 400, netRefuses: true},
		{name: "signed length", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", status: 400, netRefuses: true},
		{name: "hex length", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", status: 400, netRefuses: true},
		{name: "coding list", head: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", status: 501, netRefuses: true},
		{name: "chunked twice", head: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", status: 501, netRefuses: true},
		{name: "identity coding", head: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", status: 501, netRefuses: true},
		{name: "chunked with a space in it", head: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked , \r\n\r\n", status: 501, netRefuses: true},
		{name: "transfer encoding in http/1.0", head: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", status: 400},
		{name: "obs-fold", head: "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", status: 400},
		{name: "obs-fold of transfer encoding", head: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", status: 400},
		{name: "bare lf", head: "GET / HTTP/1.1\nHost: a\n\n", status: 400},
		{name: "bare lf inside", head: "GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n", status: 400},
		// A line ending in a bare CR, then a lone LF: the LF is not that
		// line's CRLF. FuzzH1Head found the first; it panicked the reader.
		{name: "bare cr then lone lf", head: "\r\r\n\n\r\n", status: 400, netRefuses: true},
		{name: "bare cr then lone lf after the request line", head: "GET / HTTP/1.1\r\r\n\nHost: a\r\n\r\n", status: 400, netRefuses: true},
		{name: "bare cr then lone lf after a field", head: "GET / HTTP/1.1\r\nHost: a\r\r\n\n\r\n", status: 400, netRefuses: true},
		{name: "space before colon", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", status: 400, netRefuses: true},
		{name: "bad name", head: "GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n", status: 400, netRefuses: true},
		{name: "cr in a value", head: "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n", status: 400, netRefuses: true},
		{name: "nul in a value", head: "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", status: 400, netRefuses: true},
		{name: "two hosts", head: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status: 400, netRefuses: true},
		{name: "no host", head: "GET / HTTP/1.1\r\n\r\n", status: 400, netRefuses: true},
		{name: "bad host", head: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", status: 400, netRefuses: true},
		{name: "http/2 line", head: "GET / HTTP/2.0\r\nHost: a\r\n\r\n", status: 505, netRefuses: true},
		{name: "http/0.9 line", head: "GET / HTTP/0.9\r\nHost: a\r\n\r\n", status: 505, netRefuses: true},
		{name: "bad version", head: "GET / HTTX/1.1\r\nHost: a\r\n\r\n", status: 400, netRefuses: true},
		{name: "no version", head: "GET /\r\nHost: a\r\n\r\n", status: 400, netRefuses: true},
		{name: "two spaces", head: "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, netRefuses: true},
		{name: "bad method", head: "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, netRefuses: true},
		{name: "empty line first", head: "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, netRefuses: true},
		{name: "expect other", head: "GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", status: 417, netRefuses: true},
		{name: "opaque target", head: "GET a:0 HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
		{name: "user info in the target", head: "GET http://u:p@a/ HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
		{name: "absolute form of another scheme", head: "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
		{name: "head too large", head: "GET / HTTP/1.1\r\nHost: a\r\nX-A: " + long + "\r\n\r\n", status: 431, netRefuses: true},
		{name: "request line too large", head: "GET /" + long + " HTTP/1.1\r\nHost: a\r\n\r\n", status: 431, netRefuses: true},
	}
}

func readHead(t *testing.T, head string) (*h1Request, error) {
	t.Helper()
	hr := headReader{br: bufio.NewReaderSize(strings.NewReader(head), 4<<10), max: maxTestHead}
	return hr.read()
}

func TestH1_HeadRows(t *testing.T) {
	for _, row := range headRows() {
		t.Run(row.name, func(t *testing.T) {
			r, err := readHead(t, row.head)
			if row.status != 0 {
				var he *headError
				if !errors.As(err, &he) {
					t.Fatalf("got %v, want a refusal with %d", err, row.status)
				}
				if he.status != row.status {
					t.Fatalf("got status %d (%v), want %d", he.status, err, row.status)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if r.ContentLength != row.length || r.chunked != row.chunked || r.close != row.close || r.Host != row.host {
				t.Fatalf("got length %d chunked %v close %v host %q, want %d %v %v %q",
					r.ContentLength, r.chunked, r.close, r.Host, row.length, row.chunked, row.close, row.host)
			}
			// net/http reads what the edge accepts the same way.
			nr, err := http.ReadRequest(bufio.NewReader(strings.NewReader(row.head)))
			if err != nil {
				t.Fatalf("net/http refuses what the edge accepts: %v", err)
			}
			if nr.Method != r.Method || nr.URL.String() != r.URL.String() || nr.ContentLength != r.ContentLength || nr.Host != r.Host || nr.Proto != r.Proto {
				t.Fatalf("net/http reads %s %s length %d host %q; the edge %s %s length %d host %q",
					nr.Method, nr.URL, nr.ContentLength, nr.Host, r.Method, r.URL, r.ContentLength, r.Host)
			}
		})
	}
}

// TestH1_RefusalsAnswerAsNetHTTP sends each head the edge and net/http
// both refuse to a real net/http server and compares its answer with the
// edge's, byte for byte (417, which carries a Date, as a parsed response).
func TestH1_RefusalsAnswerAsNetHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Every connection's goroutine is waited for: net/http lingers on
	// one it answered 431.
	var conns sync.WaitGroup
	srv := &http.Server{
		Handler:        http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "accepted") }),
		MaxHeaderBytes: maxTestHead,
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				conns.Done()
			}
		},
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
		conns.Wait()
	})
	for _, row := range headRows() {
		if !row.netRefuses {
			continue
		}
		t.Run(row.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, row.head); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil && len(got) == 0 {
				t.Fatalf("read net/http's answer: %v", err)
			}
			_, rerr := readHead(t, row.head)
			var he *headError
			if !errors.As(rerr, &he) {
				t.Fatalf("edge accepted: %v", rerr)
			}
			var want bytes.Buffer
			writeHeadError(&want, he)
			if he.status == http.StatusExpectationFailed {
				gr, err1 := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), nil)
				wr, err2 := http.ReadResponse(bufio.NewReader(bytes.NewReader(want.Bytes())), nil)
				if err1 != nil || err2 != nil {
					t.Fatalf("parse answers: %v, %v", err1, err2)
				}
				gr.Header.Del("Date")
				wr.Header.Del("Date")
				if gr.StatusCode != wr.StatusCode || !equalHeader(gr.Header, wr.Header) {
					t.Fatalf("net/http answers %d %v, the edge %d %v", gr.StatusCode, gr.Header, wr.StatusCode, wr.Header)
				}
				return
			}
			if want.String() != string(got) {
				t.Fatalf("net/http answers %q, the edge %q", got, want.String())
			}
		})
	}
}

func equalHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if strings.Join(v, "\x00") != strings.Join(b[k], "\x00") {
			return false
		}
	}
	return true
}

func TestH1_StrayCRLFAfterPOSTOnly(t *testing.T) {
	two := "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
	hr := headReader{br: bufio.NewReader(strings.NewReader(two)), max: maxTestHead}
	if _, err := hr.read(); err != nil {
		t.Fatal(err)
	}
	if r, err := hr.read(); err != nil || r.Method != http.MethodGet {
		t.Fatalf("after a POST: got %v, %v; want the GET", r, err)
	}
	afterGet := "GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
	hr = headReader{br: bufio.NewReader(strings.NewReader(afterGet)), max: maxTestHead}
	if _, err := hr.read(); err != nil {
		t.Fatal(err)
	}
	var he *headError
	if _, err := hr.read(); !errors.As(err, &he) || he.status != http.StatusBadRequest {
		t.Fatalf("after a GET: got %v, want 400", err)
	}
}

func TestH1_EndOfConnection(t *testing.T) {
	hr := headReader{br: bufio.NewReader(strings.NewReader("")), max: maxTestHead}
	if _, err := hr.read(); err != io.EOF {
		t.Fatalf("nothing sent: got %v, want io.EOF", err)
	}
	hr = headReader{br: bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\nHost: a\r\n")), max: maxTestHead}
	if _, err := hr.read(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("head cut short: got %v, want io.ErrUnexpectedEOF", err)
	}
}

// normalise writes r's head the way the edge sends it to a service.
func normalise(t testing.TB, r *h1Request) []byte {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := writeRequestHead(w, r, r.Host); err != nil {
		t.Fatalf("write head: %v", err)
	}
	w.Flush()
	return b.Bytes()
}

// FuzzH1Head: the head reader never panics; what it accepts, net/http
// accepts too with the same method, target and framing; and the head the
// edge writes from it reads back (by net/http and by the edge) to the
// same request, so a service cannot see another request than the edge did.
func FuzzH1Head(f *testing.F) {
	for _, row := range headRows() {
		f.Add([]byte(row.head))
	}
	f.Add([]byte("GET /a;b/c:d@e!$&'()*+,=~?x=%zz&y=/?# HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("GET /a%2Fb?x HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"))
	f.Add([]byte("GET /? HTTP/1.1\r\ncontent-length: 0\r\nX-lower-Case: 1\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("GET /a%20b?c=d;e HTTP/1.1\r\nHost: a:8080\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		hr := headReader{br: bufio.NewReaderSize(bytes.NewReader(head), 512), max: 1024}
		r, err := hr.read()
		if err != nil {
			return
		}
		nr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("edge accepts, net/http refuses: %v", err)
		}
		if nr.Method != r.Method || nr.RequestURI != r.RequestURI || nr.Proto != r.Proto {
			t.Fatalf("net/http reads %s %s %s, the edge %s %s %s", nr.Method, nr.RequestURI, nr.Proto, r.Method, r.RequestURI, r.Proto)
		}
		if *nr.URL != *r.URL {
			t.Fatalf("net/http reads the target as %#v, the edge %#v", *nr.URL, *r.URL)
		}
		if nr.ProtoAtLeast(1, 1) && nr.ContentLength != r.ContentLength {
			t.Fatalf("net/http reads length %d, the edge %d", nr.ContentLength, r.ContentLength)
		}
		if r.Method == http.MethodConnect || r.RequestURI == "*" || r.Host == "" {
			return // not requests the edge forwards itself
		}
		out := normalise(t, r)
		again := headReader{br: bufio.NewReader(bytes.NewReader(out)), max: len(out)}
		r2, err := again.read()
		if err != nil {
			t.Fatalf("the edge refuses its own head %q: %v", out, err)
		}
		n2, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(out)))
		if err != nil {
			t.Fatalf("net/http refuses the edge's head %q: %v", out, err)
		}
		for _, got := range []*http.Request{&r2.Request, n2} {
			if got.Method != r.Method || got.URL.RequestURI() != r.URL.RequestURI() || got.Host != r.Host {
				t.Fatalf("written head %q reads as %s %s host %q, want %s %s host %q",
					out, got.Method, got.URL.RequestURI(), got.Host, r.Method, r.URL.RequestURI(), r.Host)
			}
		}
		if r2.chunked != r.chunked || (r.ContentLength > 0 && r2.ContentLength != r.ContentLength) {
			t.Fatalf("written head %q frames as chunked %v length %d, want %v %d", out, r2.chunked, r2.ContentLength, r.chunked, r.ContentLength)
		}
		if n2.ContentLength != r2.ContentLength {
			t.Fatalf("written head %q: net/http reads length %d, the edge %d", out, n2.ContentLength, r2.ContentLength)
		}
		if !equalHeader(r2.Header, r.Header) {
			t.Fatalf("written head %q: headers %v, want %v", out, r2.Header, r.Header)
		}
	})
}

// A panic in a visitor connection's goroutine costs that connection only:
// logged with its stack, the connection closed, the goroutine ended
// normally (a panic not recovered would end the test binary here).
func TestH1_PanicContainedToItsConnection(t *testing.T) {
	var logs bytes.Buffer
	s, _, _ := acmeServer(t, time.Minute, 0, &logs)
	for _, v := range []any{"a parser bug", http.ErrAbortHandler} {
		near, far := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer s.containPanic(near)
			panic(v)
		}()
		<-done
		if _, err := far.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("%v: the visitor's side read %v, want io.EOF (closed)", v, err)
		}
		far.Close()
	}
	out := logs.String()
	if strings.Count(out, "panic serving a visitor connection") != 1 ||
		!strings.Contains(out, "a parser bug") || !strings.Contains(out, "h1_internal_test.go") {
		t.Fatalf("want one log line with the panic and its stack (http.ErrAbortHandler quiet), got:\n%s", out)
	}
}
