package edge_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// BenchmarkTunnel compares the same local server reached directly (plain
// HTTP on loopback) and through edge + mux (TLS, yamux, one stream per
// connection), in one run, so the ratio is meaningful on a noisy machine.
// "tunnel" visitors speak HTTPS to the edge, "tunnel-plain" visitors plain
// HTTP (PlainServesTunnels), "tunnel-basic-auth" visitors HTTPS to a tunnel
// that asks for a password (issue 18: its cost per request, once the
// password has been checked, against "tunnel"; small requests only).
//
//	go test -run '^$' -bench BenchmarkTunnel -benchtime 3s ./pkg/edge
func BenchmarkTunnel(b *testing.B) {
	page := make([]byte, 1<<10)
	const bulk = 256 << 20
	chunk := make([]byte, 1<<20)
	backendSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bulk" {
			w.Header().Set("Content-Length", fmt.Sprint(bulk))
			for i := 0; i < bulk/len(chunk); i++ {
				w.Write(chunk)
			}
			return
		}
		w.Write(page)
	}))
	defer backendSrv.Close()

	h := edgetest.Start(b, func(c *edge.Config) {
		c.Logger = zerolog.Nop()
		c.PlainServesTunnels = true
	})
	hash, err := bcrypt.GenerateFromPassword([]byte("bench password"), bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	locked := &proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "bench", Hash: string(hash)}}}
	if _, err := h.Connect("", mux.Tunnel{Name: "bench", Target: backendSrv.Listener.Addr().String()},
		mux.Tunnel{Name: "locked", Target: backendSrv.Listener.Addr().String(), Access: locked}); err != nil {
		b.Fatal(err)
	}
	// The public side in plain HTTP too, as behind a TLS-terminating load
	// balancer: the setting of issue 3's reference figures.
	plainAddr := servePlain(b, h)
	viaPlain := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, plainAddr)
		},
		MaxIdleConnsPerHost: 256,
	}
	defer viaPlain.CloseIdleConnections()
	direct := &http.Transport{MaxIdleConnsPerHost: 256}
	defer direct.CloseIdleConnections()
	viaTunnel := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, h.Addr)
		},
		TLSClientConfig:     &tls.Config{RootCAs: h.Pool},
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConnsPerHost: 256,
	}
	defer viaTunnel.CloseIdleConnections()

	targets := []struct {
		name string
		rt   http.RoundTripper
		base string
	}{
		{"direct", direct, backendSrv.URL},
		{"tunnel", viaTunnel, h.URL("bench", "")},
		{"tunnel-plain", viaPlain, "http://bench." + domain},
		{"tunnel-basic-auth", withBasicAuth{viaTunnel, "bench", "bench password"}, h.URL("locked", "")},
	}
	for _, tg := range targets {
		b.Run("small/"+tg.name, func(b *testing.B) {
			c := &http.Client{Transport: tg.rt}
			b.SetParallelism(32) // 64 concurrent connections on 2 cores
			b.ReportAllocs()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get(tg.base + "/")
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
	for _, tg := range targets[:3] {
		b.Run("bulk/"+tg.name, func(b *testing.B) {
			c := &http.Client{Transport: tg.rt}
			b.SetBytes(bulk)
			for range b.N {
				resp, err := c.Get(tg.base + "/bulk")
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if n != bulk {
					b.Fatalf("read %d bytes, want %d", n, bulk)
				}
			}
		})
	}
}

// withBasicAuth sends every request with a basic-auth user and password.
type withBasicAuth struct {
	rt             http.RoundTripper
	user, password string
}

func (a withBasicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth(a.user, a.password)
	return a.rt.RoundTrip(r)
}
