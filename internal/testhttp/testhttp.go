// Package testhttp holds the one "send a request, read the whole answer"
// step our tests use, failing the test on a transport error so each
// caller only checks the status and body it expects.
//
// It is its own package, importing only the standard library and
// testwait, so that the
// black-box e2e tests (which must not import server code, as
// internal/edgetest does) and the tests of pkg/edge and pkg/admin share one
// copy. Nothing outside tests imports it.
package testhttp

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testwait"
)

// Get fetches url with c and returns the status and body.
func Get(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return Do(t, c, req)
}

// Do sends req with c and returns the status and body, read to the end
// and closed.
func Do(t testing.TB, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp.StatusCode, string(body)
}

// Chromium returns the path of Debian's chromium for the tests that load a
// page in it. Without it the test is skipped, unless CI is set: CI must run
// them (.ci/run installs it), so there it fails.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not found, and CI must run this test (.ci/run installs it)")
	}
	t.Skip("chromium not installed (apt-get install chromium)")
	return ""
}

// PacedEvents returns a handler that sends n server-sent events, "data:
// event 0" to "data: event n-1", each flushed, the next only once a value
// arrives on next (or the request ends). A path that buffers the response
// anywhere deadlocks on it: the visitor never sees the event it must
// acknowledge. ReadPacedEvents is the visitor's side: it receives from next
// once it has seen each event.
func PacedEvents(n int, next chan<- struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range n {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case next <- struct{}{}:
			case <-r.Context().Done():
				return
			}
		}
	}
}

// ReadPacedEvents reads PacedEvents' n events from body, each within d,
// and acknowledges each once seen; it fails t on a wrong or missing event.
// next must be the channel given to PacedEvents. It reads body to its end.
func ReadPacedEvents(t testing.TB, body io.Reader, n int, next <-chan struct{}, d time.Duration) {
	t.Helper()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			if l := sc.Text(); l != "" {
				lines <- l
			}
		}
	}()
	for i := range n {
		if got, want := testwait.Recv(t, lines, d), fmt.Sprintf("data: event %d", i); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
		testwait.Recv(t, next, d)
	}
	for range lines {
	}
}
