package e2e

// Ctrl-C on the client (issue 13, item 3): the first SIGINT says at once
// what the client waits for, a second one quits at once with 130, the drain
// ends at its timeout whatever the local service does, and no library line
// reaches stderr raw.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reactionDrain is the drain timeout of the tests that want a reaction to
// Ctrl-C "at once": far beyond the helpers' bounded waits (waitTimeout),
// so a reaction that waits for the drain fails them instead of passing late.
const reactionDrain = "1h" // as the drain notice writes it

// hangingService is a local web service that answers with headers and the
// start of a long body, then neither sends more nor closes: a transfer that
// never finishes. Its handler returns when the client hangs up on it or the
// test ends.
func hangingService(t *testing.T) string {
	t.Helper()
	testDone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000000")
		// More than tunneld buffers before it flushes to the visitor.
		w.Write(bytes.Repeat([]byte("x"), 64<<10))
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-testDone:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(testDone) }) // first: Close waits for the handlers
	return srv.Listener.Addr().String()
}

// envClient starts bare "tunnel" configured by its environment alone
// (TUNNEL_TARGETS, which also checks that bare tunnel runs with it) against
// tunneld --dev at addr, and returns it with its public URL.
func envClient(t *testing.T, addr, certs, targets string, env ...string) (*process, string) {
	t.Helper()
	_, tunnel := binaries(t)
	p := start(t, tunnel, append([]string{"TUNNEL_DEV=true", "TUNNEL_SERVER=" + addr, "TUNNEL_CERTS_DIR=" + certs,
		"TUNNEL_TARGETS=" + targets, "TUNNEL_LOG_FORMAT=json"}, env...))
	return p, p.waitLine(p.stdout, "a public URL", isURL)
}

// startDownload GETs url through tunneld at addr and reads the first bytes
// of the body: the stream is then open at the client. The response is
// closed when the test ends.
func startDownload(t *testing.T, addr, certs, url string) {
	t.Helper()
	resp, err := visitorClient(t, filepath.Join(certs, "ca.pem"), addr, waitTimeout).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: got %s, want 200", url, resp.Status)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 9)); err != nil {
		t.Fatalf("read the download's first bytes: %v", err)
	}
}

// waitNotice waits for the drain notice.
func waitNotice(t *testing.T, client *process, notice string) {
	t.Helper()
	client.waitLine(client.stderr, fmt.Sprintf("%q", notice), func(l string) bool { return l == notice })
}

// rawLibraryLines are stderr lines that did not go through our logger:
// yamux's own marks.
func rawLibraryLines(stderr string) []string {
	var bad []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "[ERR]") || strings.HasPrefix(l, "[WARN]") {
			bad = append(bad, l)
		}
	}
	return bad
}

// TestProcess_CtrlCDrainsThenQuits: with a download in flight, the first
// Ctrl-C says at once what the client waits for, the second exits at once
// with 130, and no library line reaches stderr raw.
func TestProcess_CtrlCDrainsThenQuits(t *testing.T) {
	tunneld, addr, certs := startDevTunneld(t, nil, "--offline-wait", "0s")
	client, url := envClient(t, addr, certs, "ctrlc="+hangingService(t), "TUNNEL_DRAIN_TIMEOUT="+reactionDrain)
	startDownload(t, addr, certs, url)

	client.signal(syscall.SIGINT)
	waitNotice(t, client, "tunnel: draining 1 stream (up to "+reactionDrain+"); Ctrl-C again to quit")
	client.signal(syscall.SIGINT)
	if code := client.exitCode(); code != 130 { // within waitTimeout, long before the drain ends
		t.Fatalf("exit %d after a second SIGINT, want 130", code)
	}
	if bad := rawLibraryLines(client.stderr.String()); len(bad) > 0 {
		t.Errorf("raw library lines on stderr: %q", bad)
	}
	for _, l := range client.stderr.Lines() {
		var e struct{ Level, Message string }
		if json.Unmarshal([]byte(l), &e) == nil && (e.Level == "warn" || e.Level == "error") && strings.Contains(e.Message, "yamux") {
			t.Errorf("a yamux line at %s while stopping: %s", e.Level, l)
		}
	}
	tunneld.stop()
}

// TestProcess_DrainEndsAtItsTimeout: the local service never finishes the
// download nor closes; after one SIGINT the client still exits 0 by its
// drain timeout.
func TestProcess_DrainEndsAtItsTimeout(t *testing.T) {
	_, addr, certs := startDevTunneld(t, nil, "--offline-wait", "0s")
	const drain = time.Second
	client, url := envClient(t, addr, certs, "hang="+hangingService(t), "TUNNEL_DRAIN_TIMEOUT="+drain.String())
	startDownload(t, addr, certs, url)

	sent := time.Now()
	client.signal(syscall.SIGINT)
	waitNotice(t, client, "tunnel: draining 1 stream (up to 1s); Ctrl-C again to quit")
	if code := client.exitCode(); code != 0 {
		t.Fatalf("exit %d after one SIGINT, want 0", code)
	}
	if took := time.Since(sent); took < drain {
		t.Errorf("exited %v after SIGINT, before the drain timeout %v: the download was not given its time", took, drain)
	}
	client.waitLine(client.stderr, "the drain timeout's log line", logMsg("drain timeout; closing in-flight streams"))
	if bad := rawLibraryLines(client.stderr.String()); len(bad) > 0 {
		t.Errorf("raw library lines on stderr: %q", bad)
	}
}

// TestProcess_CtrlCWithNothingInFlightExitsAtOnce: with no stream open, the
// first SIGINT ends the client at once, with exit code 0 and no notice.
func TestProcess_CtrlCWithNothingInFlightExitsAtOnce(t *testing.T) {
	_, addr, certs := startDevTunneld(t, nil, "--offline-wait", "0s")
	client, _ := envClient(t, addr, certs, "idle="+hangingService(t), "TUNNEL_DRAIN_TIMEOUT="+reactionDrain)
	client.signal(syscall.SIGINT)
	if code := client.exitCode(); code != 0 { // within waitTimeout, long before the drain ends
		t.Fatalf("exit %d after SIGINT, want 0", code)
	}
	if out := client.stderr.String(); strings.Contains(out, "draining") {
		t.Errorf("a drain notice with nothing to drain:\n%s", out)
	}
}
