package edge_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testhttp"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
)

// slowHostileRows attack slow and stalled visitors.
func slowHostileRows() []hostileRow {
	return []hostileRow{
		{"one visitor's stalled uploads leave the tunnel to the others", func(c *edge.Config) {
			c.MaxStreamsPerTunnel = 4
			c.MaxRequestsPerVisitor = 2
		}, stalledUploadsShare},
		{"stalled uploads end by the visitor idle timeout", func(c *edge.Config) {
			c.MaxStreamsPerTunnel = 2
			c.VisitorIdleTimeout = time.Second
		}, stalledUploadsEnd},
		{"refusal reaches a visitor whose body is pending", func(c *edge.Config) {
			c.MaxStreamsPerTunnel = 1
		}, refusalWithPendingBody},
		{"http2 small response never taken ends by the visitor idle timeout", func(c *edge.Config) {
			c.VisitorIdleTimeout = time.Second
		}, smallResponseNeverTaken},
		{"http2 download with a zero window ends by the visitor idle timeout", func(c *edge.Config) {
			c.VisitorIdleTimeout = time.Second
		}, stalledDownloadEnds},
		{"http2 downloads with zero windows stay within the slow-reader budget", func(c *edge.Config) {
			c.Mux.StreamWindow = 256 << 10
			c.SlowReaderBudget = budgetStalls * stallCost
		}, stalledDownloadsBudget},
		{"http2 downloads reset one after another stay within the slow-reader budget", func(c *edge.Config) {
			c.Mux.StreamWindow = 256 << 10
			c.SlowReaderBudget = budgetStalls * stallCost
		}, abandonedDownloadsBudget},
	}
}

// stalledPost sends the headers of a POST whose body never comes, from the
// attacker's address, and reports the status of the answer on statuses (0
// when the connection ends without one).
func stalledPost(t *testing.T, a *abuse, name string, statuses chan<- int) net.Conn {
	t.Helper()
	c := a.tlsFrom(t, "http/1.1", name+"."+domain)
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: "+a.host(name)+"\r\nContent-Length: 1000000\r\n\r\n")
	go func() {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				statuses <- -1
				return
			}
			statuses <- 0
			return
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			statuses <- -2
			return
		}
		statuses <- resp.StatusCode
	}()
	return c
}

// uploadBackend counts on arrived each upload that reaches it and reads its
// body; any other request is answered "upload ok".
func uploadBackend(t *testing.T, arrived chan<- struct{}) string {
	return edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/upload" {
			arrived <- struct{}{}
			io.Copy(io.Discard, r.Body)
			return
		}
		io.WriteString(w, "upload ok")
	}))
}

// stalledUploadsShare: as many stalled uploads from one address as the
// tunnel has slots take only the visitor's share of them; the rest are
// refused 429 at once, and a visitor from another address is served.
func stalledUploadsShare(t *testing.T, a *abuse) {
	arrived := make(chan struct{}, 8)
	if _, err := a.Connect(bobToken, mux.Tunnel{Name: "upload", Target: uploadBackend(t, arrived)}); err != nil {
		t.Fatal(err)
	}
	const slots, share = 4, 2
	statuses := make(chan int, slots)
	for range slots {
		stalledPost(t, a, "upload", statuses)
	}
	// The visitor's share reaches the service; the rest wait for it,
	// holding none of the tunnel's slots.
	for range share {
		select {
		case <-arrived:
		case s := <-statuses:
			t.Fatalf("a stalled upload within the share was answered %d", s)
		case <-time.After(20 * time.Second):
			t.Fatalf("after 20s, fewer than %d uploads reached the service", share)
		}
	}
	// The stalled uploads still hang; another visitor gets through, twice
	// (the tunnel has slots-share free), while the waiting uploads stay
	// waiting.
	c := a.HTTPClient(false)
	c.Transport.(*http.Transport).DisableKeepAlives = true
	for range slots - share {
		if status, body := testhttp.Get(t, c, a.URL("upload", "/")); status != 200 || body != "upload ok" {
			t.Fatalf("another visitor while one holds its share: got %d %q, want 200", status, body)
		}
	}
	select {
	case <-arrived:
		t.Fatalf("an upload over the visitor's share of %d reached the service", share)
	case s := <-statuses:
		t.Fatalf("an upload over the visitor's share was answered %d while it should wait", s)
	default:
	}
}

// stalledUploadsEnd: uploads whose body never comes take every slot of the
// tunnel, and end by the visitor idle timeout, freeing them.
func stalledUploadsEnd(t *testing.T, a *abuse) {
	arrived := make(chan struct{}, 4)
	if _, err := a.Connect(bobToken, mux.Tunnel{Name: "upload", Target: uploadBackend(t, arrived)}); err != nil {
		t.Fatal(err)
	}
	statuses := make(chan int, 2)
	for range 2 {
		stalledPost(t, a, "upload", statuses)
	}
	testwait.Recv(t, arrived, 20*time.Second)
	testwait.Recv(t, arrived, 20*time.Second)
	for range 2 {
		if s := testwait.Recv(t, statuses, 40*time.Second); s == -1 {
			t.Fatal("a stalled upload was still open after 30s, its slot held")
		}
	}
	c := a.HTTPClient(false)
	c.Transport.(*http.Transport).DisableKeepAlives = true
	if status, body := testhttp.Get(t, c, a.URL("upload", "/")); status != 200 || body != "upload ok" {
		t.Fatalf("after the stalled uploads ended: got %d %q, want 200", status, body)
	}
}

// refusalWithPendingBody: a visitor refused for a busy tunnel gets its 503
// though the body it announced never comes (net/http would wait for the
// body before answering on a kept-alive connection).
func refusalWithPendingBody(t *testing.T, a *abuse) {
	arrived := make(chan struct{}, 4)
	if _, err := a.Connect(bobToken, mux.Tunnel{Name: "upload", Target: uploadBackend(t, arrived)}); err != nil {
		t.Fatal(err)
	}
	statuses := make(chan int, 2)
	stalledPost(t, a, "upload", statuses) // holds the only slot
	testwait.Recv(t, arrived, 20*time.Second)
	stalledPost(t, a, "upload", statuses)
	if s := testwait.Recv(t, statuses, 40*time.Second); s != http.StatusServiceUnavailable {
		t.Fatalf("a POST to the busy tunnel, its body pending: got %d, want 503 (-1: no answer in 30s)", s)
	}
}

// smallResponseNeverTaken: over HTTP/2 the last bytes of a response are
// flushed after the handler returns; a visitor granting no window must not
// hold that stream (and its goroutine) forever.
func smallResponseNeverTaken(t *testing.T, a *abuse) {
	v := newH2Visitor(t, a, "canary")
	id := v.get("canary", "/")
	v.frames(30*time.Second, func(f http2.Frame) bool {
		_, ok := f.(*http2.RSTStreamFrame)
		return ok && f.Header().StreamID == id
	})
}

// bigBackend answers every request with size bytes.
func bigBackend(t *testing.T, size int) string {
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	return edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		for n := 0; n < size; n += len(chunk) {
			if _, err := w.Write(chunk[:min(len(chunk), size-n)]); err != nil {
				return
			}
		}
	}))
}

// h2Visitor is a hand-driven HTTP/2 connection from the attacker's address
// that grants no flow-control window: the edge may send headers, never data.
type h2Visitor struct {
	t    *testing.T
	a    *abuse
	conn net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	next uint32
}

func newH2Visitor(t *testing.T, a *abuse, name string) *h2Visitor {
	t.Helper()
	c := a.tlsFrom(t, "h2", name+"."+domain)
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	v := &h2Visitor{t: t, a: a, conn: c, fr: http2.NewFramer(c, c), next: 1}
	v.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	v.enc = hpack.NewEncoder(&v.hbuf)
	io.WriteString(c, http2.ClientPreface)
	if err := v.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	return v
}

// get opens a stream for GET path.
func (v *h2Visitor) get(name, path string) uint32 {
	v.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", v.a.host(name)}, {":path", path}} {
		v.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	id := v.next
	v.next += 2
	if err := v.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: v.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		v.t.Fatal(err)
	}
	return id
}

// frames reads frames until done says so, failing the test if the edge
// ends the connection or takes longer than d.
func (v *h2Visitor) frames(d time.Duration, done func(http2.Frame) bool) {
	v.t.Helper()
	v.conn.SetReadDeadline(time.Now().Add(d))
	defer v.conn.SetReadDeadline(time.Time{})
	for {
		f, err := v.fr.ReadFrame()
		if err != nil {
			v.t.Fatalf("read frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				v.fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			v.t.Fatalf("the edge ended the connection: %v", f.ErrCode)
		case *http2.DataFrame:
			v.t.Fatalf("stream %d: %d bytes of data though no window was granted", f.StreamID, len(f.Data()))
		}
		if done(f) {
			return
		}
	}
}

// stalledDownloadEnds: a download the visitor never takes is cut by the
// visitor idle timeout (RST_STREAM), and the connection's other streams
// still work.
func stalledDownloadEnds(t *testing.T, a *abuse) {
	if _, err := a.Connect(bobToken, mux.Tunnel{Name: "big", Target: bigBackend(t, 4<<20)}); err != nil {
		t.Fatal(err)
	}
	v := newH2Visitor(t, a, "big")
	id := v.get("big", "/big")
	var headers bool
	v.frames(30*time.Second, func(f http2.Frame) bool {
		if f.Header().StreamID != id {
			return false
		}
		switch f.(type) {
		case *http2.MetaHeadersFrame:
			headers = true
		case *http2.RSTStreamFrame:
			return true
		}
		return false
	})
	if !headers {
		t.Fatal("the stream was reset before its response headers")
	}
}

// budgetStalls is how many stalled responses the budget of the last rows
// has room for, at what Config.SlowReaderBudget says one costs with a
// 256 KiB window.
const (
	budgetStalls = 4
	stallCost    = 256<<10*3/2 + 64<<10
)

// stalledDownloadsBudget: one HTTP/2 connection opens downloads it never
// takes; past the slow-reader budget the edge cuts them, so that no more
// than the budget's worth stay stalled.
func stalledDownloadsBudget(t *testing.T, a *abuse) {
	if _, err := a.Connect(bobToken, mux.Tunnel{Name: "big", Target: bigBackend(t, 4<<20)}); err != nil {
		t.Fatal(err)
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const streams = 24
	v := newH2Visitor(t, a, "big")
	for range streams {
		v.get("big", "/big")
	}
	reset := 0
	v.frames(30*time.Second, func(f http2.Frame) bool {
		if _, ok := f.(*http2.RSTStreamFrame); ok {
			reset++
		}
		return reset == streams-budgetStalls
	})
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("heap in use (tunneld, client and service): %d KiB before, %d KiB with %d stalled downloads cut and %d left",
		before.HeapInuse>>10, after.HeapInuse>>10, reset, streams-reset)
	if got := metricValue(t, a, "tunneld_rate_limited_total", "slow_reader"); got < streams-budgetStalls {
		t.Fatalf("tunneld_rate_limited_total{kind=slow_reader} %v, want at least %d", got, streams-budgetStalls)
	}
	// The cut streams may still hold what the client pushed into them, so
	// the books stay full for a while: the attacker gets no more, while
	// another address is served by the same tunnel.
	if status := v.status(v.get("big", "/big")); status != http.StatusTooManyRequests {
		t.Fatalf("the attacker's next download over the budget: got %d, want 429", status)
	}
	wantServed(t, a, "big")
}

// abandonedDownloadsBudget: a visitor that starts downloads and resets
// each after its headers leaves streams full of what the client pushed;
// once those fill the budget, its further requests are refused.
func abandonedDownloadsBudget(t *testing.T, a *abuse) {
	if _, err := a.Connect(bobToken, mux.Tunnel{Name: "big", Target: bigBackend(t, 4<<20)}); err != nil {
		t.Fatal(err)
	}
	v := newH2Visitor(t, a, "big")
	for i := range 40 {
		id := v.get("big", "/big")
		switch status := v.status(id); status {
		case http.StatusOK:
			v.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		case http.StatusTooManyRequests:
			if i < budgetStalls {
				t.Fatalf("refused after %d downloads, fewer than the budget has room for", i)
			}
			wantServed(t, a, "big")
			return
		default:
			t.Fatalf("download %d: got %d", i, status)
		}
	}
	t.Fatal("40 downloads reset one after another, and none refused")
}

// status waits for the response headers of stream id.
func (v *h2Visitor) status(id uint32) int {
	v.t.Helper()
	var status string
	v.frames(30*time.Second, func(f http2.Frame) bool {
		if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamID == id {
			status = h.PseudoValue("status")
			return true
		}
		if r, ok := f.(*http2.RSTStreamFrame); ok && r.StreamID == id {
			v.t.Fatalf("stream %d reset before its headers: %v", id, r.ErrCode)
		}
		return false
	})
	n, _ := strconv.Atoi(status)
	return n
}

// wantServed fetches a small page through the tunnel name from 127.0.0.1.
func wantServed(t *testing.T, a *abuse, name string) {
	t.Helper()
	c := a.HTTPClient(false)
	c.Transport.(*http.Transport).DisableKeepAlives = true
	resp, err := c.Get(a.URL(name, "/"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if n, err := io.Copy(io.Discard, resp.Body); resp.StatusCode != 200 || err != nil {
		t.Fatalf("another visitor of %s: got %d (%d bytes, %v), want 200", name, resp.StatusCode, n, err)
	}
}

// metricValue reads a gauge or counter from the edge's metrics, with the
// given "kind" label if not empty; -1 if there is none.
func metricValue(t *testing.T, a *abuse, name, kind string) float64 {
	t.Helper()
	mfs, err := a.Srv.Metrics().Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := kind == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					match = true
				}
			}
			if !match {
				continue
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}
