package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/inspect"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

func TestView_ShowsTunnelsAndStreams(t *testing.T) {
	var out bytes.Buffer
	v := newView(&out)
	v.configure("tunnel.example.com:443", []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"}, {Target: "localhost:9090"}})
	v.ready(&proto.Welcome{Tunnels: []proto.TunnelInfo{
		{Name: "wiki", URL: "https://wiki.example.com"}, {Name: "blue-fox", URL: "https://blue-fox.example.com"}}})

	v.onStream(mux.StreamEvent{Tunnel: "wiki", StreamID: 3, Visitor: "192.0.2.1:5000"})
	v.onStream(mux.StreamEvent{Tunnel: "wiki", StreamID: 5, Visitor: "192.0.2.1:5001"})
	v.onStream(mux.StreamEvent{Tunnel: "wiki", StreamID: 3, Visitor: "192.0.2.1:5000", Closed: true,
		BytesIn: 300, BytesOut: 2048, Duration: 42 * time.Millisecond})
	v.onStream(mux.StreamEvent{Tunnel: "blue-fox", StreamID: 7, Visitor: "192.0.2.9:6000", Closed: true,
		Err: errors.New("connection refused")})

	v.mu.Lock()
	lines := v.render(time.Now())
	v.mu.Unlock()
	page := strings.Join(lines, "\n")
	for _, want := range []string{
		"online",
		"wiki           https://wiki.example.com → localhost:8080   2 streams/min, 1 open",
		"blue-fox       https://blue-fox.example.com → localhost:9090   1 streams/min, 0 open",
		"300 B in, 2.0 KiB out, 42ms",
		"refused: connection refused",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("view lacks %q:\n%s", want, page)
		}
	}
	// Newest first.
	if strings.Index(page, "refused") > strings.Index(page, "300 B in") {
		t.Errorf("last streams not newest first:\n%s", page)
	}

	// Streams older than a minute leave the rate.
	v.mu.Lock()
	lines = v.render(time.Now().Add(2 * time.Minute))
	v.mu.Unlock()
	if page := strings.Join(lines, "\n"); !strings.Contains(page, "0 streams/min, 1 open") {
		t.Errorf("after two minutes:\n%s", page)
	}
}

func TestView_LogLinesPrintAboveTheBlock(t *testing.T) {
	var out bytes.Buffer
	v := newView(&out)
	v.configure("localhost:8443", []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"}})
	v.Write([]byte("first log line\n"))
	v.Write([]byte("second log line\n"))
	got := out.String()
	// The first write draws the block under the line; the second erases it
	// (cursor up over its lines, clear to the end), prints, and redraws.
	erase := "\x1b[3F\x1b[J" // the block has 3 lines
	i1, ie, i2 := strings.Index(got, "first log line"), strings.Index(got, erase), strings.Index(got, "second log line")
	if i1 != 0 || ie < i1 || i2 != ie+len(erase) {
		t.Fatalf("output order wrong: %q", got)
	}
	if !strings.HasSuffix(got, "  no streams yet\n") {
		t.Errorf("block not redrawn last: %q", got)
	}
}

// A signal's drain shows in the view's state line instead of "online",
// with the streams still open and the time left, until the quit.
func TestView_Draining(t *testing.T) {
	var out bytes.Buffer
	v := newView(&out)
	v.configure("localhost:8443", []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"}})
	v.ready(&proto.Welcome{Tunnels: []proto.TunnelInfo{{Name: "wiki", URL: "https://wiki.localhost:8443"}}})
	v.onStream(mux.StreamEvent{Tunnel: "wiki", StreamID: 3})
	v.onStream(mux.StreamEvent{Tunnel: "wiki", StreamID: 5})

	now := time.Now()
	v.draining(now.Add(10*time.Second), "Ctrl-C again to quit")
	state := func(at time.Time) string {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.render(at)[0]
	}
	if got, want := state(now.Add(3*time.Second)), "draining 2 streams (up to 7s more); Ctrl-C again to quit"; !strings.Contains(got, want) {
		t.Errorf("got %q, want it to say %q", got, want)
	}
	v.onStream(mux.StreamEvent{Tunnel: "wiki", StreamID: 3, Closed: true})
	if got, want := state(now.Add(20*time.Second)), "draining 1 stream (up to 0s more)"; !strings.Contains(got, want) {
		t.Errorf("got %q, want it to say %q", got, want)
	}
	v.onStream(mux.StreamEvent{Tunnel: "wiki", StreamID: 5, Closed: true})
	if got := state(now); !strings.Contains(got, "stopping") || strings.Contains(got, "online") {
		t.Errorf("no streams left: got %q, want stopping", got)
	}
	v.quit()
	if got := state(now); !strings.Contains(got, "quit") {
		t.Errorf("after quit: got %q", got)
	}
	// draining and quit drew the block at once, not at the next tick.
	if !strings.Contains(out.String(), "draining 2 streams") {
		t.Errorf("the terminal never showed the drain: %q", out.String())
	}
}

// TestView_ListsRequestsWithTheInspector: with the inspector on, the view
// shows its URL and each request's method, path, status and duration.
func TestView_ListsRequestsWithTheInspector(t *testing.T) {
	var out bytes.Buffer
	v := newView(&out)
	v.configure("localhost:8443", []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"}})
	v.inspecting("http://127.0.0.1:4040/")
	v.mu.Lock()
	page := strings.Join(v.render(time.Now()), "\n")
	v.mu.Unlock()
	if !strings.Contains(page, "inspector      http://127.0.0.1:4040/") || !strings.Contains(page, "no requests yet") {
		t.Errorf("view before requests:\n%s", page)
	}
	now := time.Now()
	v.onRequest(inspect.Summary{ID: 1, Tunnel: "wiki", Start: now, Method: "POST", URL: "/hook", Status: 201, DurationMS: 12.4})
	v.onRequest(inspect.Summary{ID: 2, Tunnel: "wiki", Start: now, Method: "GET", URL: "/missing", Status: 404, DurationMS: 3})
	v.mu.Lock()
	page = strings.Join(v.render(time.Now()), "\n")
	v.mu.Unlock()
	for _, want := range []string{"POST    /hook", "201  12ms", "GET     /missing", "404  3ms"} {
		if !strings.Contains(page, want) {
			t.Errorf("view lacks %q:\n%s", want, page)
		}
	}
	if strings.Index(page, "/missing") > strings.Index(page, "/hook") {
		t.Errorf("requests not newest first:\n%s", page)
	}
}
