package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/internal/testhttp"
)

// TestProcess_AccessLogKeepsEveryLineAtStop: tunneld buffers its access
// log (metrics.LogBuffer), so a graceful stop must write what the buffer
// holds: every request served has its line, whole, once tunneld has exited.
func TestProcess_AccessLogKeepsEveryLineAtStop(t *testing.T) {
	tunneld, addr, certs := startDevTunneld(t, nil)
	backendPort := newBackend(t, "hi")
	client, url := startDevClient(t, nil, addr, certs, "http", "--name", "logged", backendPort)

	tr := visitorTransport(t, filepath.Join(certs, "ca.pem"), addr)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: waitTimeout}
	const n = 300
	for i := range n {
		if status, body := testhttp.Get(t, hc, fmt.Sprintf("%s/r-%d", url, i)); status != http.StatusOK {
			t.Fatalf("GET /r-%d: %d %q", i, status, body)
		}
	}
	tr.CloseIdleConnections()
	tunneld.stop()
	client.stop()

	seen := make(map[string]int)
	for _, l := range tunneld.stderr.Lines() {
		if !strings.Contains(l, `"message":"request"`) {
			continue
		}
		var entry struct {
			Component string `json:"component"`
			Path      string `json:"path"`
			Status    int    `json:"status"`
		}
		if err := json.Unmarshal([]byte(l), &entry); err != nil {
			t.Fatalf("access-log line %q: %v", l, err)
		}
		if entry.Component != "access" || entry.Status != http.StatusOK {
			t.Errorf("access-log line %q: want component access, status 200", l)
		}
		seen[entry.Path]++
	}
	for i := range n {
		if p := fmt.Sprintf("/r-%d", i); seen[p] != 1 {
			t.Errorf("%s has %d access-log lines after the stop, want 1", p, seen[p])
		}
	}
}
