// Package testhttp holds the one "send a request, read the whole answer"
// step our tests use, failing the test on a transport error so each
// caller only checks the status and body it expects.
//
// It is its own package, importing only the standard library, so that the
// black-box e2e tests (which must not import server code, as
// internal/edgetest does) and the tests of pkg/edge and pkg/admin share one
// copy. Nothing outside tests imports it.
package testhttp

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"testing"
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
