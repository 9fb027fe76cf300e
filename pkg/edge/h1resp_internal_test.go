package edge

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// respRow is a service's answer to one request on the own path: whether
// the edge's own reader should take its (final) head, or leave it to
// http.ReadResponse.
type respRow struct {
	name string
	req  string // the visitor's request head; GET / when empty
	resp string // the service's bytes, after which it half-closes
	fast bool   // the own reader takes the final head
}

const getReq = "GET / HTTP/1.1\r\nHost: t.example\r\n\r\n"

func respRows() []respRow {
	long := strings.Repeat("v", 3000) // a head that fits the stream's buffer
	huge := strings.Repeat("v", 5000) // one that does not
	date := "Date: Tue, 01 Dec 2026 00:00:00 GMT\r\n"
	head := "HEAD / HTTP/1.1\r\nHost: t.example\r\n\r\n"
	return []respRow{
		// Plain: the own reader takes them.
		{"plain", "", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n" + date + "\r\nhello", true},
		{"lower and upper case keys", "", "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-custom-header: a\r\nX-CUSTOM-HEADER: b\r\nx-Mixed-CASE: c\r\nETAG: \"e\"\r\n\r\nhello", true},
		{"empty values", "", "HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Spaces:   \r\nContent-Type:\r\nContent-Length: 2\r\n\r\nok", true},
		{"values trimmed", "", "HTTP/1.1 200 OK\r\nX-A: \t a  b \t\r\nContent-Length:\t2 \r\n\r\nok", true},
		{"obs-text in a value", "", "HTTP/1.1 200 OK\r\nX-A: caf\xc3\xa9\xff\r\nContent-Length: 2\r\n\r\nok", true},
		{"no reason", "", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", true},
		{"own reason", "", "HTTP/1.1 200 Fine, thanks\r\nContent-Length: 2\r\n\r\nok", true},
		{"status without text", "", "HTTP/1.1 599 Whatever\r\nContent-Length: 0\r\n\r\n", true},
		{"server error", "", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\n\r\nbad", true},
		{"hop-by-hop headers", "", "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\n" +
			"Upgrade: h2c\r\nTe: trailers\r\nProxy-Authenticate: Basic\r\nProxy-Authorization: x\r\nContent-Length: 2\r\n\r\nok", true},
		{"connection close", "", "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nok", true},
		{"connection list", "", "HTTP/1.1 200 OK\r\nConnection: , keep-alive ,close\r\nContent-Length: 2\r\n\r\nok", true},
		{"http/1.0 keep-alive", "", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", true},
		{"http/1.0 without keep-alive", "", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", true},
		{"204", "", "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", true},
		{"304 with a length", "", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nEtag: \"x\"\r\n\r\n", true},
		{"head with a length", head, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/html\r\n\r\n", true},
		{"head without a length", head, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", true},
		{"length with zeros", "", "HTTP/1.1 200 OK\r\nContent-Length: 002\r\n\r\nok", true},
		{"sniffed type", "", "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n<html></html>", true},
		{"empty body", "", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true},
		{"pragma no-cache", "", "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nPragma: x\r\nContent-Length: 2\r\n\r\nok", true},
		{"pragma and cache-control", "", "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nCache-Control: max-age=0\r\nCache-Control: private\r\nContent-Length: 2\r\n\r\nok", true},
		{"pragma other", "", "HTTP/1.1 200 OK\r\nPragma: x\r\nPragma: no-cache\r\nContent-Length: 2\r\n\r\nok", true},
		{"visitor asks close", "GET / HTTP/1.1\r\nHost: t.example\r\nConnection: close\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true},
		{"http/1.0 visitor", "GET / HTTP/1.0\r\nHost: t.example\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true},
		{"1xx with a length", "", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true},
		{"1xx first", "", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true},
		{"long line", "", "HTTP/1.1 200 OK\r\nX-Long: " + long + "\r\nContent-Length: 2\r\n\r\nok", true},
		{"set-cookies", "", "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2; Path=/\r\nContent-Length: 2\r\n\r\nok", true},
		{"body bytes after the length", "", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", true},
		{"body cut short", "", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true},

		// Anything else: net/http's reader reads it, and the visitor
		// gets what it got before.
		{"same length twice", "", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", false},
		{"conflicting lengths", "", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!", false},
		{"length with a sign", "", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", false},
		{"length with a space", "", "HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\nok", false},
		{"length list", "", "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", false},
		{"empty length", "", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nok", false},
		{"length too large", "", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nok", false},
		{"no length", "", "HTTP/1.1 200 OK\r\n\r\nread to the end", false},
		{"bare CR in a value", "", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok", false},
		{"bare LF lines", "", "HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 2\n\nok", false},
		{"bare LF in a value", "", "HTTP/1.1 200 OK\r\nX-A: a\nX-B: b\r\nContent-Length: 2\r\n\r\nok", false},
		{"NUL in a value", "", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", false},
		{"DEL in a value", "", "HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\nContent-Length: 2\r\n\r\nok", false},
		{"obs-fold", "", "HTTP/1.1 200 OK\r\nX-A: a\r\n  b\r\nContent-Length: 2\r\n\r\nok", false},
		{"first line folded", "", "HTTP/1.1 200 OK\r\n X-A: a\r\nContent-Length: 2\r\n\r\nok", false},
		{"space before colon", "", "HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 2\r\n\r\nok", false},
		{"no colon", "", "HTTP/1.1 200 OK\r\nX-A\r\nContent-Length: 2\r\n\r\nok", false},
		{"empty name", "", "HTTP/1.1 200 OK\r\n: a\r\nContent-Length: 2\r\n\r\nok", false},
		{"missing final CRLF", "", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", false},
		{"cut in the status line", "", "HTTP/1.1 200", false},
		{"nothing", "", "", false},
		{"chunked", "", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false},
		{"chunked with trailer", "", "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n", false},
		{"trailer without chunks", "", "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 2\r\n\r\nok", false},
		{"chunked and length", "", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false},
		{"unknown coding", "", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", false},
		{"connection names a header", "", "HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nok", false},
		{"header named close", "", "HTTP/1.1 200 OK\r\nConnection: close\r\nClose: x\r\nContent-Length: 2\r\n\r\nok", false},
		{"http/2 status line", "", "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
		{"http/1.2", "", "HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
		{"lower-case version", "", "http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
		{"two-digit status", "", "HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok", false},
		{"status with a sign", "", "HTTP/1.1 +20 OK\r\nContent-Length: 2\r\n\r\nok", false},
		{"status 600", "", "HTTP/1.1 600 X\r\nContent-Length: 2\r\n\r\nok", false},
		{"two spaces before the status", "", "HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok", false},
		{"control byte in the reason", "", "HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok", false},
		{"101", "", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", false},
		{"http/1.0 chunked", "", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false},
		{"head larger than the buffer", "", "HTTP/1.1 200 OK\r\nX-Huge: " + huge + "\r\nContent-Length: 2\r\n\r\nok", false},
	}
}

// seen is what a visitor got for one request, read by net/http's client
// side, with what the exchange did.
type seen struct {
	refused   bool // nothing was answered: the edge's server answers 502
	statuses  []int
	informal  []http.Header // the 1xx heads
	header    http.Header
	body      string
	visitErr  string // the visitor's reader refused the answer
	keepAlive bool   // the visitor's connection stays for its next request
	kept      int    // streams the pool kept
	fast      bool   // the own reader read the head
}

// exchange sends row's request through a front reading heads fast or not,
// to a service answering with row's bytes.
func exchange(t *testing.T, row respRow, slow bool) seen {
	t.Helper()
	svc := newRawService(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, row.resp)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, br)
	})
	pool := svc.pool()
	f := newH1FrontReading(t, pool, "t.example", slow)
	c := dialFront(t, f.addr)
	req := row.req
	if req == "" {
		req = getReq
	}
	io.WriteString(c, req)
	method, _, _ := strings.Cut(req, " ")
	var s seen
	br := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			s.visitErr = err.Error()
			break
		}
		s.statuses = append(s.statuses, resp.StatusCode)
		if resp.StatusCode >= 100 && resp.StatusCode <= 199 && resp.StatusCode != 101 {
			s.informal = append(s.informal, resp.Header)
			continue
		}
		s.header = resp.Header
		b, err := io.ReadAll(resp.Body)
		s.body = string(b)
		if err != nil {
			s.visitErr = err.Error()
		}
		break
	}
	o := f.outcome(t)
	s.refused = o.err != nil && o.res.status == 0
	s.keepAlive = o.res.keepAlive
	s.fast = o.res.fastHead
	pool.mu.Lock()
	s.kept = len(pool.kept["t"])
	pool.mu.Unlock()
	return s
}

// TestH1_ResponseHeadFastMatchesSlow sends each answer of the table
// through the own path twice, its heads read by the edge's own reader and
// by net/http's, and compares what the visitor got: status, headers as a
// set, body, whether its connection stays, whether the stream was kept,
// and a refusal for a refusal. The own reader must have read the plain
// heads and none of the others.
func TestH1_ResponseHeadFastMatchesSlow(t *testing.T) {
	for _, row := range respRows() {
		t.Run(row.name, func(t *testing.T) {
			fast := exchange(t, row, false)
			slow := exchange(t, row, true)
			if fast.fast != row.fast {
				t.Errorf("the own reader read the head: %v, want %v", fast.fast, row.fast)
			}
			if slow.fast {
				t.Error("the own reader read a head it was told to leave")
			}
			if row.fast && fast.refused {
				t.Errorf("a plain head was refused")
			}
			// A Date the edge added is the time it was added.
			if !strings.Contains(strings.ToLower(row.resp), "\ndate:") && fast.header != nil && slow.header != nil {
				if fast.header.Get("Date") == "" || slow.header.Get("Date") == "" {
					t.Errorf("a Date is missing: fast %q, slow %q", fast.header.Get("Date"), slow.header.Get("Date"))
				}
				delete(fast.header, "Date")
				delete(slow.header, "Date")
			}
			if d := diffSeen(fast, slow); d != "" {
				t.Errorf("the visitor got, through the own reader and through net/http's:\n%s", d)
			}
		})
	}
}

func diffSeen(a, b seen) string {
	var d []string
	add := func(what string, x, y any) { d = append(d, fmt.Sprintf("%s: %v / %v", what, x, y)) }
	if a.refused != b.refused {
		add("refused", a.refused, b.refused)
	}
	if !slices.Equal(a.statuses, b.statuses) {
		add("statuses", a.statuses, b.statuses)
	}
	if len(a.informal) != len(b.informal) {
		add("1xx", a.informal, b.informal)
	} else {
		for i := range a.informal {
			if !equalHeaderExceptDate(a.informal[i], b.informal[i]) {
				add("1xx", a.informal[i], b.informal[i])
			}
		}
	}
	if !maps.EqualFunc(a.header, b.header, slices.Equal) {
		add("header", a.header, b.header)
	}
	if a.body != b.body {
		add("body", fmt.Sprintf("%q", a.body), fmt.Sprintf("%q", b.body))
	}
	if (a.visitErr == "") != (b.visitErr == "") {
		add("visitor's error", a.visitErr, b.visitErr)
	}
	if a.keepAlive != b.keepAlive {
		add("visitor kept", a.keepAlive, b.keepAlive)
	}
	if a.kept != b.kept {
		add("streams kept", a.kept, b.kept)
	}
	return strings.Join(d, "\n")
}

// headLines are the lines of a head, the status line first and the rest
// sorted, without a Date when noDate.
func headLines(head string, noDate bool) []string {
	lines := strings.Split(head, "\r\n")
	rest := slices.DeleteFunc(lines[1:], func(l string) bool { return noDate && strings.HasPrefix(l, "Date: ") })
	slices.Sort(rest)
	return append(lines[:1], rest...)
}

func equalHeaderExceptDate(a, b http.Header) bool {
	a, b = a.Clone(), b.Clone()
	delete(a, "Date")
	delete(b, "Date")
	return maps.EqualFunc(a, b, slices.Equal)
}

// TestH1_KeptStreamReadsHeadsAfresh: one kept stream carries answers of
// different heads, a plain one with a long head after a short one and the
// reverse, one net/http reads between them; none sees another's headers.
func TestH1_KeptStreamReadsHeadsAfresh(t *testing.T) {
	answers := []string{
		"HTTP/1.1 200 OK\r\nX-First: 1\r\nContent-Type: text/a\r\nContent-Length: 1\r\n\r\na",
		"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nb",
		"HTTP/1.1 200 OK\r\nX-Third: " + strings.Repeat("3", 2000) + "\r\nContent-Length: 1\r\n\r\nc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Fourth: 4\r\n\r\n1\r\nd\r\n0\r\n\r\n",
		"HTTP/1.1 202 Accepted\r\nContent-Length: 1\r\n\r\ne",
	}
	svc := newRawService(t, func(c net.Conn, br *bufio.Reader) {
		for _, a := range answers {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, a)
		}
	})
	f := newH1Front(t, svc.pool(), "t.example")
	c := dialFront(t, f.addr)
	br := bufio.NewReader(c)
	want := []struct {
		status int
		keys   []string
		body   string
	}{
		{200, []string{"Content-Length", "Content-Type", "Date", "X-First"}, "a"},
		{201, []string{"Content-Length", "Content-Type", "Date"}, "b"},
		{200, []string{"Content-Length", "Content-Type", "Date", "X-Third"}, "c"},
		{200, []string{"Content-Type", "Date", "X-Fourth"}, "d"},
		{202, []string{"Content-Length", "Content-Type", "Date"}, "e"},
	}
	for i, w := range want {
		io.WriteString(c, getReq)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		keys := slices.Sorted(maps.Keys(resp.Header))
		if resp.StatusCode != w.status || !slices.Equal(keys, w.keys) || string(b) != w.body {
			t.Fatalf("answer %d: %d %v %q, want %d %v %q", i, resp.StatusCode, keys, b, w.status, w.keys, w.body)
		}
		if o := f.outcome(t); o.err != nil || o.res.fastHead != (i != 3) {
			t.Fatalf("answer %d: %+v", i, o)
		}
	}
	if n := svc.conns.Load(); n != 1 {
		t.Fatalf("the service got %d connections, want 1", n)
	}
}

// TestH1_PlainHeadAllocations: the own reader reads and writes a plain
// head without an allocation per header.
func TestH1_PlainHeadAllocations(t *testing.T) {
	head := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\nCache-Control: no-cache\r\n" +
		"Set-Cookie: a=1\r\nset-cookie: b=2\r\nx-request-id: 1234\r\nVary: Accept-Encoding\r\nConnection: keep-alive\r\n\r\nhello")
	out := make([]byte, 0, 1024)
	httpDate() // the cache of this second's Date
	n := testing.AllocsPerRun(100, func() {
		if _, _, _, st := parsePlainHead(head, http.MethodGet, "", out[:0]); st != headPlain {
			t.Fatal("not plain")
		}
	})
	// httpDate formats a new Date once a second: at most that.
	if n >= 1 {
		t.Fatalf("%v allocations per head, want none", n)
	}
}

// FuzzParsePlainHead holds the own reader to net/http's: a head it reads
// as plain, net/http reads too, to the same status, framing and
// connection, and the visitor's head written from each reads the same; a
// head it waits on, net/http cannot read whole either.
func FuzzParsePlainHead(f *testing.F) {
	for _, row := range respRows() {
		f.Add([]byte(row.resp), uint8(0))
		f.Add([]byte(row.resp), uint8(3))
		f.Add([]byte(row.resp), uint8(4))
	}
	f.Fuzz(func(t *testing.T, b []byte, flags uint8) {
		method := http.MethodGet
		if flags&1 != 0 {
			method = http.MethodHead
		}
		// The visitor: HTTP/1.1 asking to close (flag 2), or HTTP/1.0
		// asking for keep-alive (flag 4), or HTTP/1.1.
		vr := &h1Request{close: flags&2 != 0, keepAlive10: flags&6 == 4}
		vr.Method, vr.ProtoMinor = method, 1
		if vr.keepAlive10 {
			vr.ProtoMinor = 0
		}
		ph, n, out, st := parsePlainHead(b, method, vr.connection(vr.close), nil)
		req := &http.Request{Method: method}
		src := bytes.NewReader(b)
		br := bufio.NewReader(src)
		resp, err := http.ReadResponse(br, req)
		switch st {
		case headOther:
			return
		case headIncomplete:
			if err == nil && resp.StatusCode >= 200 {
				t.Fatalf("the own reader waits for more of a head net/http read whole: %q", b)
			}
			return
		}
		if err != nil {
			t.Fatalf("the own reader takes a head net/http refuses (%v): %q", err, b)
		}
		if resp.StatusCode != ph.code || resp.Close != ph.close {
			t.Fatalf("net/http reads %d close %v, the own reader %d close %v: %q", resp.StatusCode, resp.Close, ph.code, ph.close, b)
		}
		bodyAllowed := method != http.MethodHead && ph.code != 204 && ph.code != 304
		if (bodyAllowed || method == http.MethodHead) && resp.ContentLength != ph.length {
			t.Fatalf("net/http reads length %d, the own reader %d: %q", resp.ContentLength, ph.length, b)
		}
		if used := len(b) - src.Len() - br.Buffered(); used != n {
			t.Fatalf("net/http's head is %d bytes, the own reader's %d: %q", used, n, b)
		}
		var first []byte
		if bodyAllowed {
			first = b[n:min(len(b), n+int(min(ph.length, 512)))]
		}
		// Read before responseOut, which adds the edge's Date to
		// resp.Header when the service sent none.
		_, hasDate := resp.Header["Date"]
		var fastHead, slowHead bytes.Buffer
		w := bufio.NewWriter(&fastHead)
		(&pconn{head: out, typed: ph.typed}).writeHead(w, first)
		w.Flush()
		x := &h1Exchange{req: vr}
		w = bufio.NewWriter(&slowHead)
		x.responseOut(resp).head.writeHead(w, first)
		w.Flush()
		fastRaw, slowRaw := fastHead.String(), slowHead.String()
		fr, ferr := http.ReadResponse(bufio.NewReader(&fastHead), req)
		sr, serr := http.ReadResponse(bufio.NewReader(&slowHead), req)
		if ferr != nil || serr != nil {
			t.Fatalf("the visitor reads the own reader's head: %v, net/http's: %v\n%q\n%q", ferr, serr, fastRaw, slowRaw)
		}
		if fr.StatusCode != sr.StatusCode || fr.Close != sr.Close || !equalHeaderExceptDate(fr.Header, sr.Header) ||
			(fr.Header.Get("Date") == "") != (sr.Header.Get("Date") == "") {
			t.Fatalf("the visitor reads:\nown reader %d %v\nnet/http   %d %v\nfrom %q", fr.StatusCode, fr.Header, sr.StatusCode, sr.Header, b)
		}
		// Byte for byte, but for the order of the lines after the
		// status line and a Date of the edge's own (two writes of the
		// time straddle a second now and then).
		if f, s := headLines(fastRaw, !hasDate), headLines(slowRaw, !hasDate); !slices.Equal(f, s) {
			t.Fatalf("the visitor's head from the own reader:\n%q\nfrom net/http's:\n%q\nfor %q", f, s, b)
		}
	})
}
