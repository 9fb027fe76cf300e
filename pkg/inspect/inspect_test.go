package inspect_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/inspect"
)

// echoService answers every request with its method, path and body, and
// counts the requests.
func echoService(hits *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Set-Cookie", "session=secret")
		status := http.StatusOK
		if strings.HasPrefix(r.URL.Path, "/missing") {
			status = http.StatusNotFound
		}
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "path": r.URL.RequestURI(), "body": string(body), "hit": n})
	})
}

func getJSON(t *testing.T, c *http.Client, url string, v any) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil && resp.StatusCode == http.StatusOK {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode
}

type list struct {
	Exchanges []inspect.Summary `json:"exchanges"`
	Total     int               `json:"total"`
	Memory    int64             `json:"memory_bytes"`
}

// TestInspector_KeepAliveRequestsAreSeveralExchanges: requests that follow
// each other on one kept-alive connection are recorded one by one, in
// order, with their bodies, and the service sees them unchanged.
func TestInspector_KeepAliveRequestsAreSeveralExchanges(t *testing.T) {
	var hits atomic.Int64
	r := newRig(t, inspect.DefaultConfig(), echoService(&hits))
	conn, err := net.Dial("tcp", r.front)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Three requests written at once (pipelined), on one connection.
	fmt.Fprintf(conn, "POST /hook?x=1 HTTP/1.1\r\nHost: wiki.example\r\nX-Forwarded-For: 203.0.113.9, 10.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"event\":\"a\"}"+
		"GET /missing HTTP/1.1\r\nHost: wiki.example\r\n\r\n"+
		"PUT /chunked HTTP/1.1\r\nHost: wiki.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	br := bufio.NewReader(conn)
	for i, want := range []int{200, 404, 200} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("response %d: status %d, want %d", i, resp.StatusCode, want)
		}
	}
	for i, want := range []string{"POST /hook?x=1", "GET /missing", "PUT /chunked"} {
		s := r.wait(t)
		if got := s.Method + " " + s.URL; got != want {
			t.Errorf("exchange %d: %s, want %s", i, got, want)
		}
	}
	var l list
	getJSON(t, http.DefaultClient, r.api.URL+"/api/exchanges", &l)
	if len(l.Exchanges) != 3 || hits.Load() != 3 {
		t.Fatalf("%d exchanges listed, %d hits; want 3 and 3", len(l.Exchanges), hits.Load())
	}
	post := l.Exchanges[2]
	if post.Visitor != "203.0.113.9" || post.Status != 200 || post.ReqSize != 13 {
		t.Errorf("POST: visitor %q status %d req_size %d; want 203.0.113.9, 200, 13", post.Visitor, post.Status, post.ReqSize)
	}
	var d struct {
		Request struct {
			Body struct {
				Text string `json:"text"`
				Kind string `json:"kind"`
			} `json:"body"`
		} `json:"request"`
	}
	getJSON(t, http.DefaultClient, fmt.Sprintf("%s/api/exchanges/%d", r.api.URL, l.Exchanges[0].ID), &d)
	if d.Request.Body.Text != "abc" {
		t.Errorf("chunked request body recorded as %q, want abc (de-chunked)", d.Request.Body.Text)
	}
}

// TestInspector_WebSocketStillEchoes: an upgrade is one exchange (101),
// then the connection is copied raw both ways.
func TestInspector_WebSocketStillEchoes(t *testing.T) {
	r := newRig(t, inspect.DefaultConfig(), websocket.Handler(func(ws *websocket.Conn) { io.Copy(ws, ws) }))
	conn, err := net.Dial("tcp", r.front)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := websocket.NewConfig("ws://wiki.example/ws", "http://wiki.example/")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, msg := range []string{"hello", strings.Repeat("x", 100<<10)} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg)) // the echo may come in several frames
		if _, err := io.ReadFull(ws, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != msg {
			t.Fatalf("echo of %d bytes came back as %d bytes", len(msg), len(got))
		}
	}
	s := r.wait(t)
	if s.Status != http.StatusSwitchingProtocols || !s.Upgrade || s.URL != "/ws" {
		t.Errorf("recorded %+v, want one upgrade exchange for /ws with status 101", s)
	}
}

// TestInspector_BigDownloadKeepsMemoryCapped: a large download passes
// whole (same hash), its body is counted in full but captured only up to
// MaxBody, and what the inspector holds stays within MaxMemory.
func TestInspector_BigDownloadKeepsMemoryCapped(t *testing.T) {
	size := int64(1 << 30)
	if testing.Short() {
		size = 64 << 20
	}
	block := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	want := sha256.New()
	for n := int64(0); n < size; n += int64(len(block)) {
		want.Write(block)
	}
	cfg := inspect.DefaultConfig()
	cfg.MaxBody, cfg.MaxMemory = 1<<20, 3<<20
	r := newRig(t, cfg, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", fmt.Sprint(size))
		for n := int64(0); n < size; n += int64(len(block)) {
			if _, err := w.Write(block); err != nil {
				return
			}
		}
	}))
	// Two earlier downloads' captures must give way to the big one's.
	c := r.client(t)
	resp, err := c.Get("http://wiki.example/big")
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("downloaded %d bytes (%v), want %d", n, err, size)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("the download's hash differs")
	}
	s := r.wait(t)
	if s.RespSize != size {
		t.Errorf("response size recorded %d, want %d", s.RespSize, size)
	}
	if used, _ := r.in.Stats(); used > cfg.MaxMemory {
		t.Errorf("inspector holds %d bytes, over its cap of %d", used, cfg.MaxMemory)
	}
	var d struct {
		Response struct {
			Body struct {
				Size      int64 `json:"size"`
				Captured  int   `json:"captured"`
				Truncated bool  `json:"truncated"`
			} `json:"body"`
		} `json:"response"`
	}
	getJSON(t, http.DefaultClient, fmt.Sprintf("%s/api/exchanges/%d", r.api.URL, s.ID), &d)
	if b := d.Response.Body; b.Captured != int(cfg.MaxBody) || !b.Truncated || b.Size != size {
		t.Errorf("body captured %d of %d (truncated %v), want %d of %d, truncated", b.Captured, b.Size, b.Truncated, cfg.MaxBody, size)
	}
}

// TestInspector_OldestForgottenWithinCap: many exchanges with bodies keep
// the inspector within MaxMemory by forgetting the oldest.
func TestInspector_OldestForgottenWithinCap(t *testing.T) {
	var hits atomic.Int64
	cfg := inspect.DefaultConfig()
	cfg.MaxBody, cfg.MaxMemory = 64<<10, 256<<10
	r := newRig(t, cfg, echoService(&hits))
	c := r.client(t)
	body := strings.Repeat("y", 40<<10)
	for i := range 30 {
		resp, err := c.Post(fmt.Sprintf("http://wiki.example/n/%d", i), "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		r.wait(t)
		if used, _ := r.in.Stats(); used > cfg.MaxMemory {
			t.Fatalf("after %d requests the inspector holds %d bytes, over its cap of %d", i+1, used, cfg.MaxMemory)
		}
	}
	var l list
	getJSON(t, http.DefaultClient, r.api.URL+"/api/exchanges", &l)
	if l.Total == 0 || l.Total >= 30 {
		t.Fatalf("%d exchanges kept; want some, not all 30", l.Total)
	}
	if newest := l.Exchanges[0].URL; newest != "/n/29" {
		t.Errorf("newest kept is %s, want /n/29", newest)
	}
}

// TestInspector_GzipBodyShownDecompressed: the detail shows a gzip
// response as text, and the body search finds words inside it.
func TestInspector_GzipBodyShownDecompressed(t *testing.T) {
	r := newRig(t, inspect.DefaultConfig(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Type", "application/json")
		zw := gzip.NewWriter(w)
		zw.Write([]byte(`{"needle":"in a haystack"}`))
		zw.Close()
	}))
	c := r.client(t)
	resp, err := c.Get("http://wiki.example/z")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	s := r.wait(t)
	var d struct {
		Response struct {
			Body struct {
				Text    string `json:"text"`
				Decoded bool   `json:"decoded"`
				Kind    string `json:"kind"`
			} `json:"body"`
		} `json:"response"`
	}
	getJSON(t, http.DefaultClient, fmt.Sprintf("%s/api/exchanges/%d", r.api.URL, s.ID), &d)
	if b := d.Response.Body; b.Text != `{"needle":"in a haystack"}` || !b.Decoded || b.Kind != "json" {
		t.Errorf("body %+v, want the JSON decompressed", b)
	}
	var l list
	getJSON(t, http.DefaultClient, r.api.URL+"/api/exchanges?q=HAYSTACK", &l)
	if len(l.Exchanges) != 1 {
		t.Errorf("search for a word in the gzip body found %d, want 1", len(l.Exchanges))
	}
}

// TestInspector_ExpectContinue: a request that waits for "100 Continue"
// before its body gets it through the inspector, and is recorded once,
// with its final status and its body.
func TestInspector_ExpectContinue(t *testing.T) {
	var hits atomic.Int64
	r := newRig(t, inspect.DefaultConfig(), echoService(&hits))
	c := r.client(t)
	c.Transport.(*http.Transport).ExpectContinueTimeout = time.Minute // the body waits for the 100
	req, _ := http.NewRequest("POST", "http://wiki.example/upload", strings.NewReader("payload"))
	req.Header.Set("Expect", "100-continue")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"body":"payload"`) {
		t.Fatalf("got %d %s, want 200 and the body echoed", resp.StatusCode, body)
	}
	s := r.wait(t)
	if s.Status != 200 || s.ReqSize != int64(len("payload")) {
		t.Errorf("recorded status %d, request body %d bytes; want 200, 7", s.Status, s.ReqSize)
	}
}

// TestInspector_HeadsLongerThanTheParseBuffer: a request and a response
// whose heads are several times the parser's buffer (a big cookie, a big
// header from the service) pass unchanged and are recorded, since the
// parser reads long lines in parts.
func TestInspector_HeadsLongerThanTheParseBuffer(t *testing.T) {
	big := strings.Repeat("c", 20<<10)
	seen := make(chan string, 1)
	r := newRig(t, inspect.DefaultConfig(), http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		seen <- req.Header.Get("X-Big")
		w.Header().Set("X-Big-Back", big)
		io.WriteString(w, "ok")
	}))
	req, err := http.NewRequest(http.MethodGet, "http://wiki.example/long", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Big", big)
	resp, err := r.client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got := testwait.Recv(t, seen, 10*time.Second); got != big {
		t.Errorf("the service saw X-Big of %d bytes, want %d", len(got), len(big))
	}
	if got := resp.Header.Get("X-Big-Back"); got != big {
		t.Errorf("the visitor got X-Big-Back of %d bytes, want %d", len(got), len(big))
	}
	if s := r.wait(t); s.URL != "/long" || s.Status != http.StatusOK {
		t.Errorf("recorded %s %d, want /long 200", s.URL, s.Status)
	}
}
