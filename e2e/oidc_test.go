package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/internal/testoidc"
)

// TestProcess_OIDCLogin: the built tunneld with --oidc-issuer pointing at a
// real provider in the test process, and the built tunnel with
// TUNNEL_OIDC_ALLOW: a visitor signs in at the provider and reaches the
// service, which gets the email; a tunneld without an issuer refuses the
// tunnel (exit 3), and a tunneld whose issuer is down does not start.
func TestProcess_OIDCLogin(t *testing.T) {
	tunneldBin, tunnelBin := binaries(t)
	// --public-port 443 keeps the redirect URI free of the random port;
	// the visitor's client dials tunneld whatever the port.
	const redirect = "https://localhost/.tunnel/oidc/callback"
	provider := testoidc.Start(t, redirect)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte(testoidc.ClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tunneld, addr, certs := startDevTunneld(t, nil, "--public-port", "443", "--oidc-issuer", provider.Issuer,
		"--oidc-client-id", testoidc.ClientID, "--oidc-client-secret-file", secret)
	tunneld.waitLine(tunneld.stderr, "the oidc login ready line", func(l string) bool {
		return strings.Contains(l, `"oidc login ready"`) && strings.Contains(l, redirect)
	})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "service %s; email: %q", r.URL.Path, r.Header.Get("X-Tunnel-User-Email"))
	}))
	t.Cleanup(backend.Close)
	_, backendPort, _ := net.SplitHostPort(backend.Listener.Addr().String())
	_, url := startDevClient(t, []string{"TUNNEL_OIDC_ALLOW=@example.com"}, addr, certs, "http", "--name", "wiki", backendPort)
	if url != "https://wiki.localhost" {
		t.Fatalf("tunnel printed %q, want https://wiki.localhost", url)
	}

	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool(t, filepath.Join(certs, "ca.pem"))},
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			if host, _, _ := net.SplitHostPort(a); host == "localhost" || strings.HasSuffix(host, ".localhost") {
				a = addr
			}
			var d net.Dialer
			return d.DialContext(ctx, network, a)
		},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Jar: jar, Timeout: waitTimeout}
	resp, err := c.Get(url + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	end := testoidc.SignIn(t, c, resp, "ann")
	body, _ := io.ReadAll(end.Body)
	end.Body.Close()
	if end.StatusCode != 200 || string(body) != `service /hello; email: "ann@example.com"` {
		t.Fatalf("after signing in: %d %q at %s, want the service with ann's email", end.StatusCode, body, end.Request.URL)
	}

	_, plainAddr, plainCerts := startDevTunneld(t, nil)
	code, _, stderr := runToEnd(t, tunnelBin, nil, "--dev", "--server", plainAddr, "--certs-dir", plainCerts,
		"http", "--oidc-allow", "@example.com", "--name", "wiki", backendPort)
	if code != 3 || !strings.Contains(stderr, "this server has no issuer configured (tunneld --oidc-issuer)") {
		t.Fatalf("--oidc-allow on a tunneld without an issuer: exit %d, stderr:\n%s\nwant exit 3 naming the missing issuer", code, stderr)
	}

	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downURL := "http://" + down.Addr().String()
	down.Close()
	code, _, stderr = runToEnd(t, tunneldBin, nil, "--dev", "--listen", "127.0.0.1:0", "--certs-dir", t.TempDir(),
		"--oidc-issuer", downURL, "--oidc-client-id", "x", "--oidc-client-secret", "y")
	if code != 1 || !strings.Contains(stderr, "--oidc-issuer: oidc: discovery at "+downURL) {
		t.Fatalf("tunneld with its issuer down: exit %d, stderr:\n%s\nwant exit 1 naming the discovery", code, stderr)
	}
}
