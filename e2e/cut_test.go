package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testhttp"
)

// TestProcess_AbandonedDownloadEndsEverywhere is issue 13's first finding,
// as a user meets it: curl killed in the middle of an endless download,
// over HTTP/1.1 and over HTTP/2. When the visitor leaves, the request must
// end on tunneld (an access-log line, in-flight back to 0 in /metrics and
// /api/tunnels), on the client (tunnel_streams_active back to 0) and at the
// local service (its handler returns, so the client's dial to it is gone),
// each within waitTimeout; before the fix, tunneld held the request for
// as long as the session lived.
func TestProcess_AbandonedDownloadEndsEverywhere(t *testing.T) {
	needCurl(t)
	tunneld, addr, certs := startDevTunneld(t, nil, "--admin-listen", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(addr)
	admin := adminAddr(tunneld)

	// The local service streams for as long as someone reads, and says when
	// its handler has returned.
	ended := make(chan string, 2)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { ended <- r.URL.Path }()
		chunk := make([]byte, 32<<10)
		rc := http.NewResponseController(w)
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(backend.Close)
	_, backendPort, _ := net.SplitHostPort(backend.Listener.Addr().String())

	client, url := startDevClient(t, nil, addr, certs, "--metrics-listen", "127.0.0.1:0", "http", "--name", "dl", backendPort)
	clientMetrics := logAddr(client, "metrics serving")
	hc := &http.Client{Timeout: waitTimeout}
	defer hc.CloseIdleConnections()

	for _, version := range []string{"--http1.1", "--http2"} {
		t.Run(strings.TrimPrefix(version, "--"), func(t *testing.T) {
			path := "/endless-" + strings.TrimPrefix(version, "--")
			mark := tunneld.stderr.Len()
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			curl := exec.CommandContext(ctx, "curl", "-sS", version, "--cacert", filepath.Join(certs, "ca.pem"),
				"--resolve", "dl.localhost:"+port+":127.0.0.1", url+path)
			out, err := curl.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := curl.Start(); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(bufio.NewReader(out), make([]byte, 1<<20)); err != nil {
				curl.Process.Kill()
				curl.Wait()
				t.Fatalf("curl %s: the first MiB did not arrive: %v", path, err)
			}
			curl.Process.Kill() // the visitor walks away mid-download
			curl.Wait()

			select {
			case got := <-ended:
				if got != path {
					t.Fatalf("the local service ended %s, want %s", got, path)
				}
			case <-time.After(waitTimeout):
				t.Fatalf("the local service was still sending %s %v after the visitor left", path, waitTimeout)
			}
			line := tunneld.waitLineFrom(tunneld.stderr, mark, "an access-log line for the cut download", func(l string) bool {
				return strings.Contains(l, `"message":"request"`) && strings.Contains(l, `"path":"`+path+`"`)
			})
			var entry struct {
				Status   int   `json:"status"`
				BytesOut int64 `json:"bytes_out"`
			}
			if err := json.Unmarshal([]byte(line), &entry); err != nil {
				t.Fatalf("access-log line %q: %v", line, err)
			}
			if entry.Status != http.StatusOK || entry.BytesOut < 1<<20 {
				t.Errorf("access-log line %q: want status 200 and at least the MiB curl read", line)
			}
			settles(t, "tunneld_requests_in_flight", func() (bool, string) {
				_, body := testhttp.Get(t, hc, "http://"+admin+"/metrics")
				return strings.Contains(body, "\ntunneld_requests_in_flight 0\n"), metricLines(body, "tunneld_requests_in_flight")
			})
			settles(t, "/api/tunnels in_flight", func() (bool, string) {
				var api struct {
					Tunnels []struct {
						Name     string `json:"name"`
						InFlight int64  `json:"in_flight"`
					} `json:"tunnels"`
				}
				_, body := testhttp.Get(t, hc, "http://"+admin+"/api/tunnels")
				if err := json.Unmarshal([]byte(body), &api); err != nil {
					t.Fatalf("/api/tunnels: %v\n%s", err, body)
				}
				for _, tn := range api.Tunnels {
					if tn.Name == "dl" {
						return tn.InFlight == 0, body
					}
				}
				return false, body
			})
			settles(t, "tunnel_streams_active", func() (bool, string) {
				_, body := testhttp.Get(t, hc, "http://"+clientMetrics+"/metrics")
				lines := metricLines(body, "tunnel_streams_active")
				if lines == "" {
					return false, body
				}
				for _, l := range strings.Split(lines, "\n") {
					if !strings.HasSuffix(l, " 0") {
						return false, lines
					}
				}
				return true, lines
			})
		})
	}
	client.stop()
	tunneld.stop()
}

// settles waits until cond holds, for at most waitTimeout. It polls
// another process's books, which tell no one when they change; what it
// last saw is in the failure.
func settles(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not settle within %v; last seen:\n%s", what, waitTimeout, seen)
		}
		<-tick.C
	}
}

// metricLines is the lines of a Prometheus text exposition for one metric.
func metricLines(body, name string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, name+" ") || strings.HasPrefix(l, name+"{") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
