package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// What a compromised tunneld (valid certificate) might send to be printed:
// a terminal escape that retitles and clears the screen, a newline that
// forges a second URL line for a script reading stdout, a bidi override.
const hostileURL = "https://wiki.example.com\x1b]0;pwned\x07\x1b[2J\nhttps://evil.example\u202e"

// The URLs go to stdout one clean line each, whatever tunneld sent.
func TestClientConfig_PrintsServerURLsClean(t *testing.T) {
	var stdout, logs bytes.Buffer
	var cfg mux.ClientConfig
	app := newApp()
	app.Commands[0].Action = func(c *cli.Context) error {
		var err error
		cfg, err = clientConfig(c, zerolog.New(&logs), &stdout)
		return err
	}
	if err := app.Run([]string{"tunnel", "--server", "x.example:443", "http", "wiki=8080"}); err != nil {
		t.Fatal(err)
	}
	cfg.OnReady(&proto.Welcome{Tunnels: []proto.TunnelInfo{{Name: "wiki", URL: hostileURL}}})
	out := stdout.String()
	if strings.Count(out, "\n") != 1 || strings.ContainsAny(out, "\x1b\x07\u202e") {
		t.Fatalf("stdout got %q: want one line without control characters", out)
	}
	if strings.Contains(logs.String(), `\u001b`) {
		t.Fatalf("the log has the escape: %s", logs.String())
	}
}

// The view prints nothing raw that tunneld chose, and names it never asked
// for do not grow its maps.
func TestView_HostileServerStrings(t *testing.T) {
	var out bytes.Buffer
	v := newView(&out)
	v.configure("x.example:443", []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"}})
	v.ready(&proto.Welcome{Tunnels: []proto.TunnelInfo{{Name: "wiki", URL: hostileURL}}})
	for i := range 10_000 {
		name := fmt.Sprintf("made-up-%d\x1b[2J", i)
		v.onStream(mux.StreamEvent{Tunnel: name, Visitor: "1.2.3.4:5\x1b[1A"})
		v.onStream(mux.StreamEvent{Tunnel: name, Visitor: "1.2.3.4:5", Closed: true, Err: errors.New("no\x1b[31m\nFAKE LINE")})
	}
	v.stopped(errors.New("server said \x1b]0;title\x07"))
	if len(v.active) > 1 || len(v.opens) > 1 {
		t.Fatalf("the view counts %d tunnels it never showed (%d opens)", len(v.active), len(v.opens))
	}
	v.mu.Lock()
	lines := v.render(v.recent[len(v.recent)-1].at)
	v.mu.Unlock()
	for _, l := range lines {
		if strings.ContainsAny(l, "\x1b\x07\n") {
			t.Fatalf("rendered line %q has a control character", l)
		}
	}
	if strings.ContainsAny(strings.ReplaceAll(out.String(), "\x1b[", ""), "\x1b\x07") {
		t.Fatalf("the terminal got an escape besides the view's own: %q", out.String())
	}
}

// Prometheus labels are the names the client asked for (or was granted for
// a tunnel without one), and one more for the rest.
func TestMetrics_LabelsOnlyNamesAskedFor(t *testing.T) {
	m := newClientMetrics([]mux.Tunnel{{Name: "wiki"}, {}})
	m.granted(&proto.Welcome{Tunnels: []proto.TunnelInfo{{Name: "wiki"}, {Name: "blue-fox"}}})
	// A later Welcome that renames the random tunnel does not add a label.
	m.granted(&proto.Welcome{Tunnels: []proto.TunnelInfo{{Name: "wiki"}, {Name: "red-cat"}}})
	for i := range 1000 {
		m.observe(mux.StreamEvent{Tunnel: fmt.Sprintf("made-up-%d", i)})
	}
	m.observe(mux.StreamEvent{Tunnel: "wiki"})
	m.observe(mux.StreamEvent{Tunnel: "blue-fox"})
	m.observe(mux.StreamEvent{Tunnel: "red-cat"})
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range families {
		if f.GetName() != "tunnel_streams_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "tunnel" {
					seen[l.GetValue()] = true
				}
			}
		}
	}
	if len(seen) != 3 || !seen["wiki"] || !seen["blue-fox"] || !seen[otherTunnel] {
		t.Fatalf("tunnel labels %v, want wiki, blue-fox and %s", seen, otherTunnel)
	}
}

func TestClientConfig_MaxStreams(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(file, []byte(`{"server": "x:1", "max_streams": 300, "tunnels": [{"target": "8080"}]}`), 0o600)
	for _, tt := range []struct {
		env  map[string]string
		args []string
		want int
	}{
		{nil, []string{"--server", "x:1", "http", "8080"}, 0},
		{map[string]string{"TUNNEL_MAX_STREAMS": "64"}, []string{"--server", "x:1", "http", "8080"}, 64},
		{nil, []string{"--config", file}, 300},
		{nil, []string{"--config", file, "--max-streams", "20"}, 20},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cfg, err := configFrom(t, tt.env, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MaxStreams != tt.want {
				t.Errorf("%v %v: max streams %d, want %d", tt.env, tt.args, cfg.MaxStreams, tt.want)
			}
		})
	}
	if _, err := configFrom(t, nil, "--server", "x:1", "--max-streams", "-1", "http", "8080"); err == nil {
		t.Error("--max-streams -1 accepted")
	}
}

// TestMetrics_RefusesRebindingHost: a page the user visits can point its own
// name at 127.0.0.1 (DNS rebinding); the metrics listener must not answer it.
func TestMetrics_RefusesRebindingHost(t *testing.T) {
	h := metricsHandler(newClientMetrics([]mux.Tunnel{{Name: "web", Target: "127.0.0.1:1"}}))
	for _, tt := range []struct {
		host string
		want int
	}{
		{"127.0.0.1:9101", http.StatusOK},
		{"localhost:9101", http.StatusOK},
		{"[::1]:9101", http.StatusOK},
		{"192.168.1.20:9101", http.StatusOK},
		{"rebind.evil.example:9101", http.StatusForbidden},
		{"evil.example", http.StatusForbidden},
		{"", http.StatusForbidden},
	} {
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.Host = tt.host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("Host %q: got %d, want %d", tt.host, rec.Code, tt.want)
		}
	}
}
