package admin_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testdns"
	"github.com/tunnelhq/tunnel/internal/testhttp"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/admin"
	"github.com/tunnelhq/tunnel/pkg/domain"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startAdmin serves h's admin endpoints on addr and returns the base URL.
func startAdmin(t *testing.T, h *edgetest.Edge, addr string, mod func(*admin.Config)) string {
	t.Helper()
	cfg := admin.Config{Edge: h.Srv, Logger: zerolog.New(zerolog.NewTestWriter(t))}
	if mod != nil {
		mod(&cfg)
	}
	a, err := admin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := testwait.Recv(t, done, 20*time.Second); err != nil {
			t.Errorf("admin Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// adminGet fetches path with an optional bearer token.
func adminGet(t *testing.T, base, path, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	defer c.CloseIdleConnections()
	status, body := testhttp.Do(t, c, req)
	return status, []byte(body)
}

// scrape reads /metrics and parses the exposition format.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	status, body := adminGet(t, base, "/metrics", "")
	if status != http.StatusOK {
		t.Fatalf("/metrics: status %d", status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metric finds the sample of name whose labels include want.
func metric(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range want {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	t.Fatalf("metric %s%v missing", name, want)
	return nil
}

// value is the value of a counter, gauge or untyped sample.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	m := metric(t, fams, name, labels)
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	default:
		return m.GetUntyped().GetValue()
	}
}

func TestAdmin_MetricsAfterRequests(t *testing.T) {
	h := edgetest.Start(t, nil)
	base := startAdmin(t, h, "127.0.0.1:0", nil)
	reply := []byte("0123456789")
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(reply)
	}))

	before := scrape(t, base)
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"tunneld_sessions", nil},
		{"tunneld_tunnels", nil},
		{"tunneld_requests_total", map[string]string{"code": "2xx"}},
		{"tunneld_auth_failures_total", nil},
	} {
		if got := value(t, before, c.name, c.labels); got != 0 {
			t.Errorf("before: %s%v = %v, want 0", c.name, c.labels, got)
		}
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total", "tunneld_cert_issuance_total"} {
		if _, ok := before[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}

	if _, err := h.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Target: addr}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Connect("tk_wrong", mux.Tunnel{Name: "other", Target: addr}); err == nil {
		t.Fatal("a bad token connected")
	}
	h.Srv.Metrics().RateLimited("handshake")
	h.Srv.Metrics().CertIssued(nil)

	hc := h.HTTPClient(false)
	const n = 3
	var bodyOut int
	for range n {
		resp, err := hc.Post(h.URL("wiki", "/upload"), "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Equal(b, reply) {
			t.Fatalf("POST: got %d %q, want 200 %q", resp.StatusCode, b, reply)
		}
		bodyOut += len(b)
	}
	status, page := testhttp.Get(t, hc, h.URL("nosuch", "/"))
	if status != http.StatusNotFound {
		t.Fatalf("unknown tunnel: got %d, want 404", status)
	}
	bodyOut += len(page)

	// The edge records a request before its (small, buffered) response is
	// flushed, so by now every request above is counted.
	after := scrape(t, base)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"tunneld_sessions", nil, 1},
		{"tunneld_sessions_total", nil, 1},
		{"tunneld_tunnels", nil, 1},
		{"tunneld_requests_total", map[string]string{"code": "2xx"}, n},
		{"tunneld_requests_total", map[string]string{"code": "4xx"}, 1},
		{"tunneld_requests_total", map[string]string{"code": "5xx"}, 0},
		{"tunneld_requests_in_flight", nil, 0},
		{"tunneld_request_bytes_total", nil, n * float64(len("hello"))},
		{"tunneld_response_bytes_total", nil, float64(bodyOut)},
		{"tunneld_auth_failures_total", nil, 1},
		{"tunneld_sessions_refused_total", map[string]string{"code": "bad_token"}, 1},
		{"tunneld_rate_limited_total", map[string]string{"kind": "handshake"}, 1},
		{"tunneld_cert_issuance_total", map[string]string{"result": "ok"}, 1},
	} {
		if got := value(t, after, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := metric(t, after, "tunneld_request_duration_seconds", nil).GetHistogram().GetSampleCount(); got != n+1 {
		t.Errorf("request duration samples = %d, want %d", got, n+1)
	}
	// Streams are reused between requests, so there are 1 to n opens.
	if got := metric(t, after, "tunneld_stream_open_seconds", map[string]string{"result": "ok"}).GetHistogram().GetSampleCount(); got < 1 || got > n {
		t.Errorf("stream opens = %d, want 1 to %d", got, n)
	}

	// /api/tunnels counts the same requests for the tunnel.
	status, body := adminGet(t, base, "/api/tunnels", "")
	var api struct{ Tunnels []edge.TunnelStatus }
	if err := json.Unmarshal(body, &api); status != http.StatusOK || err != nil {
		t.Fatalf("/api/tunnels: %d %v", status, err)
	}
	if len(api.Tunnels) != 1 {
		t.Fatalf("/api/tunnels: got %d tunnels, want 1", len(api.Tunnels))
	}
	got := api.Tunnels[0]
	if got.Name != "wiki" || got.Kind != "http" || got.Label != "alice" || got.URL != h.URL("wiki", "") || got.Requests != n ||
		got.BytesIn != n*5 || got.BytesOut != n*int64(len(reply)) || got.InFlight != 0 || got.ClientAddr == "" {
		t.Errorf("/api/tunnels: got %+v", got)
	}
}

// waitListening returns once h's Serve accepts: a TLS handshake needs its
// accept loop, which starts after it has marked itself listening.
func waitListening(t *testing.T, h *edgetest.Edge) {
	t.Helper()
	c, err := tls.Dial("tcp", h.Addr, &tls.Config{RootCAs: h.Pool, ServerName: edgetest.Domain})
	if err != nil {
		t.Fatalf("handshake with the edge: %v", err)
	}
	c.Close()
}

func TestAdmin_HealthAndReadiness(t *testing.T) {
	h := edgetest.Start(t, nil)
	base := startAdmin(t, h, "127.0.0.1:0", nil)
	waitListening(t, h)
	if status, _ := adminGet(t, base, "/healthz", ""); status != http.StatusOK {
		t.Errorf("/healthz: got %d, want 200", status)
	}
	if status, body := adminGet(t, base, "/readyz", ""); status != http.StatusOK {
		t.Errorf("/readyz: got %d %s, want 200", status, body)
	}
	if status, _ := adminGet(t, base, "/debug/pprof/", ""); status != http.StatusNotFound {
		t.Errorf("pprof without the flag: got %d, want 404", status)
	}

	// A certificate that does not cover the domain is not ready.
	other := edgetest.Start(t, func(c *edge.Config) { c.Domain = "elsewhere.test" })
	base = startAdmin(t, other, "127.0.0.1:0", func(c *admin.Config) { c.Pprof = true })
	waitListening(t, other) // so that 503 means the certificate, not the start
	if status, body := adminGet(t, base, "/readyz", ""); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz with a certificate for another domain: got %d %s, want 503", status, body)
	}
	if status, _ := adminGet(t, base, "/debug/pprof/", ""); status != http.StatusOK {
		t.Errorf("pprof with the flag: got %d, want 200", status)
	}
}

func TestAdmin_TokenRequiredOffLoopback(t *testing.T) {
	h := edgetest.Start(t, nil)
	public := func(net.Addr) bool { return false }

	// No token on a public address: refused before serving.
	a, err := admin.New(admin.Config{Edge: h.Srv, Logger: zerolog.Nop(), IsLoopback: public})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Serve(context.Background(), ln); err == nil {
		t.Fatal("Serve on a public address without a token: got nil error")
	}

	const token = "adm_s3cret"
	base := startAdmin(t, h, "127.0.0.1:0", func(c *admin.Config) {
		c.Token, c.IsLoopback = token, public
	})
	basic := func(r *http.Request) { r.SetBasicAuth("admin", token) }
	for _, c := range []struct {
		name, path string
		auth       func(*http.Request)
		want       int
	}{
		{"none", "/healthz", nil, http.StatusUnauthorized},
		{"metrics none", "/metrics", nil, http.StatusUnauthorized},
		{"status page none", "/", nil, http.StatusUnauthorized},
		{"wrong", "/healthz", func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }, http.StatusUnauthorized},
		{"prefix", "/healthz", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token[:4]) }, http.StatusUnauthorized},
		{"bearer", "/healthz", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }, http.StatusOK},
		{"metrics bearer", "/metrics", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }, http.StatusOK},
		{"basic", "/api/tunnels", basic, http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", base+c.path, nil)
			if c.auth != nil {
				c.auth(req)
			}
			hc := &http.Client{Timeout: 30 * time.Second}
			defer hc.CloseIdleConnections()
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("got %d, want %d", resp.StatusCode, c.want)
			}
		})
	}

	// Any 127/8 address is loopback: no token needed there.
	base = startAdmin(t, h, "127.0.0.2:0", nil)
	if status, _ := adminGet(t, base, "/healthz", ""); status != http.StatusOK {
		t.Errorf("loopback without token: got %d, want 200", status)
	}
}

func chromiumPath(t *testing.T) string { return testhttp.Chromium(t) }

// headless runs Debian's chromium with the flags TESTING.md lists.
func headless(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.WaitDelay = 10 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.Bytes())
	}
	return out
}

func TestAdmin_StatusPageInChromium(t *testing.T) {
	bin := chromiumPath(t)
	h := edgetest.Start(t, nil)
	base := startAdmin(t, h, "127.0.0.1:0", nil)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hi")) }))
	if _, err := h.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Target: addr}); err != nil {
		t.Fatal(err)
	}
	hc := h.HTTPClient(false)
	for range 2 {
		testhttp.Get(t, hc, h.URL("wiki", "/"))
	}

	dom := string(headless(t, bin, "--dump-dom", base+"/"))
	for _, want := range []string{`data-name="wiki"`, h.URL("wiki", ""), "alice", "1 tunnels online"} {
		if !strings.Contains(dom, want) {
			t.Errorf("status page DOM lacks %q:\n%s", want, dom)
		}
	}

	shot := filepath.Join(t.ArtifactDir(), "status.png")
	headless(t, bin, "--hide-scrollbars", "--window-size=1280,400", "--screenshot="+shot, base+"/")
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Errorf("screenshot is %v", b)
	}
	t.Logf("screenshot: %s", shot)
}

// TestAdmin_LoopbackChecksHost: without a token the admin listener trusts
// its loopback address, so it must also refuse a Host that is not a
// loopback name: otherwise a web page whose name rebinds to 127.0.0.1 reads
// /api/tunnels and /metrics from the browser. And /debug/pprof/cmdline,
// which shows tokens passed as flags, is never served.
func TestAdmin_LoopbackChecksHost(t *testing.T) {
	h := edgetest.Start(t, nil)
	base := startAdmin(t, h, "127.0.0.1:0", func(c *admin.Config) { c.Pprof = true })
	port := strings.TrimPrefix(base, "http://127.0.0.1:")
	fetch := func(host, path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Host = host
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		hc := &http.Client{Timeout: 30 * time.Second}
		defer hc.CloseIdleConnections()
		return testhttp.Do(t, hc, req)
	}
	for _, c := range []struct {
		host string
		want int
	}{
		{"127.0.0.1:" + port, http.StatusOK},
		{"localhost:" + port, http.StatusOK},
		{"LOCALHOST.:" + port, http.StatusOK},
		{"127.1.2.3:" + port, http.StatusOK},
		{"[::1]:" + port, http.StatusOK},
		{"localhost", http.StatusOK},
		{"rebind.evil.example:" + port, http.StatusForbidden},
		{"evil.example", http.StatusForbidden},
		{"localhost.evil.example:" + port, http.StatusForbidden},
		{"127.0.0.1.evil.example", http.StatusForbidden},
		{"10.0.0.1:" + port, http.StatusForbidden},
	} {
		for _, path := range []string{"/api/tunnels", "/metrics", "/"} {
			if got, body := fetch(c.host, path, ""); got != c.want {
				t.Errorf("Host %q %s: got %d %.80q, want %d", c.host, path, got, body, c.want)
			}
		}
	}
	status, body := fetch("127.0.0.1:"+port, "/debug/pprof/cmdline", "")
	if status != http.StatusNotFound || strings.Contains(body, os.Args[0]) {
		t.Errorf("/debug/pprof/cmdline: got %d %q, want 404 without the command line", status, body)
	}
	if status, _ := fetch("127.0.0.1:"+port, "/debug/pprof/", ""); status != http.StatusOK {
		t.Errorf("/debug/pprof/: got %d, want 200", status)
	}

	// With a token, the token is the check: any Host may carry it (a
	// reverse proxy in front, a public name).
	const token = "adm_s3cret"
	base = startAdmin(t, h, "127.0.0.1:0", func(c *admin.Config) { c.Token, c.Pprof = token, true })
	if got, body := fetch("admin.example.com", "/api/tunnels", token); got != http.StatusOK {
		t.Errorf("token and a public Host: got %d %q, want 200", got, body)
	}
	if got, body := fetch("admin.example.com", "/debug/pprof/cmdline", token); got != http.StatusNotFound || strings.Contains(body, os.Args[0]) {
		t.Errorf("/debug/pprof/cmdline with a token: got %d %q, want 404", got, body)
	}
}

func TestAdmin_StatusShowsAccessRulesWithoutHashes(t *testing.T) {
	h := edgetest.Start(t, nil)
	backend := edgetest.Backend(t, http.NotFoundHandler())
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	access := &proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: string(hash)}},
		AllowCIDR: []string{"192.0.2.0/24"}, DenyCIDR: []string{"192.0.2.66/32"}}
	if _, err := h.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Target: backend, Access: access},
		mux.Tunnel{Name: "open", Target: backend}); err != nil {
		t.Fatal(err)
	}
	base := startAdmin(t, h, "127.0.0.1:0", nil)
	status, body := adminGet(t, base, "/api/tunnels", "")
	if status != 200 || strings.Contains(string(body), "$2a$") {
		t.Fatalf("/api/tunnels: got %d %s, want 200 without a hash", status, body)
	}
	want := `"access":{"basic_auth_users":["ann"],"allow_cidr":["192.0.2.0/24"],"deny_cidr":["192.0.2.66/32"]}`
	if strings.Count(string(body), `"access"`) != 1 || !strings.Contains(string(body), want) {
		t.Errorf("/api/tunnels: got %s, want wiki alone with %s", body, want)
	}
	status, body = adminGet(t, base, "/", "")
	page := string(body)
	if status != 200 || strings.Contains(page, "$2a$") ||
		!strings.Contains(page, `<td class="access">basic auth: ann allow 192.0.2.0/24 deny 192.0.2.66/32</td>`) ||
		!strings.Contains(page, `<td class="access">open</td>`) {
		t.Errorf("status page: got %d\n%s\nwant wiki's rules and open for the other, no hash", status, page)
	}
}

// TestAdmin_StatusPageShowsTCPAndTLSTunnels: their tcp:// and tls:// URLs
// are shown as text (html/template would turn a link to them into
// "#ZgotmplZ"), with their kind in /api/tunnels.
func TestAdmin_StatusPageShowsTCPAndTLSTunnels(t *testing.T) {
	h := edgetest.Start(t, nil)
	base := startAdmin(t, h, "127.0.0.1:0", nil)
	addr := edgetest.Backend(t, http.NotFoundHandler())
	if _, err := h.Connect(edgetest.AliceToken, mux.Tunnel{Name: "pi-ssh", Target: addr, Kind: "tcp"},
		mux.Tunnel{Name: "secure", Target: addr, Kind: "tls"}); err != nil {
		t.Fatal(err)
	}
	status, page := adminGet(t, base, "/", "")
	if status != 200 || bytes.Contains(page, []byte("ZgotmplZ")) {
		t.Fatalf("status page: %d, %s", status, page)
	}
	for _, want := range []string{"tcp://pi-ssh." + edgetest.Domain, "tls://secure." + edgetest.Domain} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("status page does not show %s", want)
		}
	}
	_, body := adminGet(t, base, "/api/tunnels", "")
	var api struct{ Tunnels []edge.TunnelStatus }
	if err := json.Unmarshal(body, &api); err != nil || len(api.Tunnels) != 2 ||
		api.Tunnels[0].Kind != "tcp" || api.Tunnels[1].Kind != "tls" {
		t.Fatalf("/api/tunnels: %v, %+v; want pi-ssh tcp and secure tls", err, api.Tunnels)
	}
}

// logLines sends each log line holding one of its substrings; lines
// beyond the buffer that nobody reads are dropped.
type logLines chan string

func (w logLines) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "custom domain") {
		select {
		case w <- string(p):
		default:
		}
	}
	return len(p), nil
}

// TestAdmin_StatusShowsCustomDomains: a tunnel's custom domain shows next
// to its name, in /api/tunnels and on the status page, served while its
// DNS points at the tunnel and dropped once the re-check finds it does
// not.
func TestAdmin_StatusShowsCustomDomains(t *testing.T) {
	const d = "wiki.example.org"
	dns := testdns.Start(t)
	logs := make(logLines, 64)
	h := edgetest.Start(t, func(c *edge.Config) {
		tokens, err := token.New([]token.Entry{
			{Label: "alice", SHA256: token.Hash(edgetest.AliceToken), Names: []string{"*"}, Domains: []string{d}},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Auth = tokens
		c.Domains = domain.NewChecker(domain.Config{Resolver: dns.Addr(), Rate: 1000, Burst: 1000})
		c.DomainRecheck = 20 * time.Millisecond
		c.Logger = zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logs)).Level(zerolog.InfoLevel)
	})
	base := startAdmin(t, h, "127.0.0.1:0", nil)
	dns.SetCNAME(d, "wiki."+edgetest.Domain)
	addr := edgetest.Backend(t, http.NotFoundHandler())
	if _, err := h.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Target: addr, Domain: d},
		mux.Tunnel{Name: "plain", Target: addr}); err != nil {
		t.Fatal(err)
	}
	check := func(status string) {
		t.Helper()
		_, body := adminGet(t, base, "/api/tunnels", "")
		var api struct{ Tunnels []edge.TunnelStatus }
		if err := json.Unmarshal(body, &api); err != nil || len(api.Tunnels) != 2 {
			t.Fatalf("/api/tunnels: %v, %s; want plain and wiki", err, body)
		}
		if p, w := api.Tunnels[0], api.Tunnels[1]; p.Domain != "" || p.DomainStatus != "" ||
			w.Name != "wiki" || w.Domain != d || w.DomainStatus != status {
			t.Fatalf("/api/tunnels: got %+v, want wiki with %s %s and plain with none", api.Tunnels, d, status)
		}
		if !strings.Contains(string(body), `"domain":"`+d+`","domain_status":"`+status+`"`) {
			t.Fatalf("/api/tunnels: %s lacks the domain's fields", body)
		}
		_, page := adminGet(t, base, "/", "")
		want := `<span class="domain ` + status + `" title="custom domain: ` + status + `">` + d + ` (` + status + `)</span>`
		if !bytes.Contains(page, []byte(want)) || bytes.Count(page, []byte(`class="domain `)) != 1 {
			t.Fatalf("status page: want %s once, got\n%s", want, page)
		}
	}
	check(edge.DomainServed)
	dns.Clear(d)
	for !strings.Contains(testwait.Recv(t, logs, 15*time.Second), "custom domain no longer points at its tunnel") {
	}
	check(edge.DomainDropped)
}
