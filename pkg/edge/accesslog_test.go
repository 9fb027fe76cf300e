package edge_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testhttp"
	"github.com/tunnelhq/tunnel/internal/testlog"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
)

// logLines splits what was logged into b into its lines.
func logLines(b *testlog.Buffer) []string {
	return strings.Split(strings.TrimSpace(b.String()), "\n")
}

func TestEdge_AccessLog(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(map[bool]string{true: "on", false: "off"}[on], func(t *testing.T) {
			var logs testlog.Buffer
			h := edgetest.Start(t, func(c *edge.Config) {
				c.Logger = zerolog.New(&logs).With().Timestamp().Logger()
				c.AccessLog = on
			})
			addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Write([]byte("fine"))
			}))
			if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: addr}); err != nil {
				t.Fatal(err)
			}
			hc := h.HTTPClient(false)
			testhttp.Get(t, hc, h.URL("wiki", "/a?secret=x"))
			resp, err := hc.Post(h.URL("wiki", "/b"), "text/plain", strings.NewReader("12345678"))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			testhttp.Get(t, hc, h.URL("nosuch", "/c"))

			var events []map[string]any
			for _, line := range logLines(&logs) {
				var ev map[string]any
				if err := json.Unmarshal([]byte(line), &ev); err != nil {
					t.Fatalf("log line is not JSON: %q: %v", line, err)
				}
				if ev["component"] == "access" {
					events = append(events, ev)
				}
			}
			if !on {
				if len(events) != 0 {
					t.Fatalf("access log off: got %d events", len(events))
				}
				return
			}
			if len(events) != 3 {
				t.Fatalf("got %d access events, want 3: %v", len(events), events)
			}
			for i, want := range []struct {
				method, path, tunnel string
				status, in, out      float64
			}{
				{"GET", "/a", "wiki", 200, 0, 4},
				{"POST", "/b", "wiki", 200, 8, 4},
				{"GET", "/c", "", 404, 0, -1},
			} {
				ev := events[i]
				if ev["level"] != "info" || ev["message"] != "request" || ev["method"] != want.method ||
					ev["path"] != want.path || ev["tunnel"] != want.tunnel || ev["status"] != want.status ||
					ev["bytes_in"] != want.in || (want.out >= 0 && ev["bytes_out"] != want.out) {
					t.Errorf("event %d: got %v", i, ev)
				}
				for _, k := range []string{"host", "remote_addr", "duration", "time", "bytes_out"} {
					if _, ok := ev[k]; !ok {
						t.Errorf("event %d: no %q: %v", i, k, ev)
					}
				}
				if strings.Contains(ev["path"].(string), "secret") {
					t.Errorf("event %d logs the query: %v", i, ev)
				}
			}
		})
	}
}
