package edge_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
)

// servePlain runs the harness server's plain-HTTP companion on a loopback
// port and returns its address.
func servePlain(t testing.TB, h *harness) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Srv.ServePlain(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := testwait.Recv(t, done, 20*time.Second); err != nil {
			t.Errorf("ServePlain: %v", err)
		}
	})
	return ln.Addr().String()
}

func plainClient(t *testing.T, addr string) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func TestEdge_PlainRedirectsKeepingHostPathQuery(t *testing.T) {
	h := edgetest.Start(t, nil)
	c := plainClient(t, servePlain(t, h))
	for _, tt := range []struct {
		method, url, want string
	}{
		{"GET", "http://wiki.tunnel.test/", fmt.Sprintf("https://wiki.tunnel.test:%d/", h.Port)},
		{"GET", "http://wiki.tunnel.test:80/a/b?c=d&e=%2F#frag", fmt.Sprintf("https://wiki.tunnel.test:%d/a/b?c=d&e=%%2F", h.Port)},
		{"POST", "http://tunnel.test/form?x=1", fmt.Sprintf("https://tunnel.test:%d/form?x=1", h.Port)},
	} {
		req, _ := http.NewRequest(tt.method, tt.url, strings.NewReader("body"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != tt.want {
			t.Errorf("%s %s: got %d %q, want 308 %q", tt.method, tt.url, resp.StatusCode, resp.Header.Get("Location"), tt.want)
		}
	}
}

func TestEdge_PlainServesTunnelsBelievingOnlyTrustedProxies(t *testing.T) {
	echo := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "xff=%s proto=%s", r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"))
	}))
	for _, tt := range []struct {
		name    string
		trusted []netip.Prefix
		want    string
	}{
		{"nobody trusted", nil, "xff=127.0.0.1 proto=http"},
		{"loopback trusted", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "xff=203.0.113.7, 127.0.0.1 proto=https"},
		{"other proxy trusted", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "xff=127.0.0.1 proto=http"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := edgetest.Start(t, func(c *edge.Config) {
				c.PlainServesTunnels = true
				c.TrustedProxies = tt.trusted
			})
			if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: echo}); err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("GET", "http://wiki.tunnel.test/", nil)
			req.Header.Set("X-Forwarded-For", "203.0.113.7")
			req.Header.Set("X-Forwarded-Proto", "https")
			resp, err := plainClient(t, servePlain(t, h)).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || string(body) != tt.want {
				t.Fatalf("got %q, %v; want %q", body, err, tt.want)
			}
		})
	}
}

func TestEdge_TLSSettings(t *testing.T) {
	h := edgetest.Start(t, nil)
	dial := func(cfg *tls.Config) (tls.ConnectionState, error) {
		cfg.RootCAs, cfg.ServerName = h.Pool, domain
		d := tls.Dialer{Config: cfg}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", h.Addr)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		return c.(*tls.Conn).ConnectionState(), nil
	}
	if _, err := dial(&tls.Config{MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("TLS 1.1 handshake succeeded; want TLS 1.2 at least")
	}
	if _, err := dial(&tls.Config{MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}); err == nil {
		t.Error("TLS 1.2 with a CBC suite succeeded; want AEAD suites only")
	}
	cache := tls.NewLRUClientSessionCache(4)
	for i, wantResumed := range []bool{false, true} {
		// TLS 1.2: its ticket arrives inside the handshake (TLS 1.3's only
		// after it, with the first read).
		st, err := dial(&tls.Config{ClientSessionCache: cache, MaxVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		if st.DidResume != wantResumed {
			t.Errorf("connection %d: resumed %v, want %v (session tickets on)", i, st.DidResume, wantResumed)
		}
	}
}
