package devcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTLSConfig_CreatesFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	cfg, err := TLSConfig(dir, "localhost")
	if err != nil {
		t.Fatalf("TLSConfig: got %v, want nil", err)
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion: got %x, want %x", cfg.MinVersion, tls.VersionTLS12)
	}
	if cfg.NextProtos != nil {
		t.Errorf("NextProtos: got %q, want nil (the caller sets it)", cfg.NextProtos)
	}
	if cfg.GetCertificate == nil {
		t.Errorf("GetCertificate: got nil, want a function")
	}
	for name, want := range map[string]os.FileMode{
		"":                  0o700,
		CAFile:              0o644,
		"ca-key.pem":        0o600,
		"localhost.pem":     0o644,
		"localhost-key.pem": 0o600,
	} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("stat %q: %v", name, err)
			continue
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %q: got %o, want %o", name, got, want)
		}
	}

	ca := readCert(t, filepath.Join(dir, CAFile))
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA: got IsCA=%v KeyUsage=%b, want a CA that signs certificates", ca.IsCA, ca.KeyUsage)
	}
	if got, want := ca.NotAfter.Sub(ca.NotBefore), caValidity+clockSkew; got != want {
		t.Errorf("CA validity: got %v, want %v", got, want)
	}
	leaf := readCert(t, filepath.Join(dir, "localhost.pem"))
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		t.Errorf("leaf signed by CA: got %v, want nil", err)
	}
	if got, want := leaf.DNSNames, []string{"localhost", "*.localhost"}; !slices.Equal(got, want) {
		t.Errorf("leaf DNS names: got %q, want %q", got, want)
	}
	if got, want := len(leaf.IPAddresses), 2; got != want {
		t.Errorf("leaf IP addresses: got %v, want 127.0.0.1 and ::1", leaf.IPAddresses)
	}
}

func TestTLSConfig_ReusesFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := TLSConfig(dir, "localhost"); err != nil {
		t.Fatalf("first TLSConfig: got %v, want nil", err)
	}
	before := readAll(t, dir)
	if _, err := TLSConfig(dir, "localhost"); err != nil {
		t.Fatalf("second TLSConfig: got %v, want nil", err)
	}
	after := readAll(t, dir)
	for name, b := range before {
		if !bytes.Equal(after[name], b) {
			t.Errorf("%s: changed by the second call, want the same bytes", name)
		}
	}
	if len(after) != len(before) {
		t.Errorf("files in dir: got %d after the second call, want %d", len(after), len(before))
	}
}

func TestTLSConfig_RenewsLeafForNewDomain(t *testing.T) {
	dir := t.TempDir()
	if _, err := TLSConfig(dir, "localhost"); err != nil {
		t.Fatalf("TLSConfig(localhost): got %v, want nil", err)
	}
	before := readAll(t, dir)
	if _, err := TLSConfig(dir, "tunnel.test"); err != nil {
		t.Fatalf("TLSConfig(tunnel.test): got %v, want nil", err)
	}
	after := readAll(t, dir)
	for _, name := range []string{CAFile, "ca-key.pem"} {
		if !bytes.Equal(after[name], before[name]) {
			t.Errorf("%s: changed when the domain changed, want the CA kept", name)
		}
	}
	leaf := readCert(t, filepath.Join(dir, "localhost.pem"))
	if got, want := leaf.DNSNames, []string{"localhost", "tunnel.test", "*.tunnel.test"}; !slices.Equal(got, want) {
		t.Errorf("renewed leaf DNS names: got %q, want %q", got, want)
	}
}

func TestTLSConfig_DamagedFiles(t *testing.T) {
	tests := []struct {
		name      string
		damage    func(t *testing.T, dir string) // applied to a working dir
		wantInErr string
	}{
		{"ca garbage", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, CAFile), "not a certificate")
		}, "ca.pem"},
		{"ca key missing", func(t *testing.T, dir string) {
			removeFile(t, filepath.Join(dir, "ca-key.pem"))
		}, "ca-key.pem is missing"},
		{"ca cert missing", func(t *testing.T, dir string) {
			removeFile(t, filepath.Join(dir, CAFile))
		}, "ca.pem is missing"},
		{"ca key from another ca", func(t *testing.T, dir string) {
			other := t.TempDir()
			if _, err := TLSConfig(other, "localhost"); err != nil {
				t.Fatal(err)
			}
			key, err := os.ReadFile(filepath.Join(other, "ca-key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "ca-key.pem"), string(key))
		}, "load CA"},
		{"ca is a leaf", func(t *testing.T, dir string) {
			for _, f := range []string{"ca.pem", "ca-key.pem"} {
				b, err := os.ReadFile(filepath.Join(dir, strings.Replace(f, "ca", "localhost", 1)))
				if err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(dir, f), string(b))
			}
		}, "not a CA certificate"},
		{"leaf garbage", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "localhost.pem"), "garbage")
		}, "localhost.pem"},
		{"leaf key missing", func(t *testing.T, dir string) {
			removeFile(t, filepath.Join(dir, "localhost-key.pem"))
		}, "only one of localhost.pem and localhost-key.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := TLSConfig(dir, "localhost"); err != nil {
				t.Fatalf("TLSConfig on a fresh dir: got %v, want nil", err)
			}
			tt.damage(t, dir)
			before := readAll(t, dir)

			cfg, err := TLSConfig(dir, "localhost")
			if err == nil || !strings.Contains(err.Error(), tt.wantInErr) {
				t.Fatalf("TLSConfig: got (%v, %v), want error containing %q", cfg, err, tt.wantInErr)
			}
			after := readAll(t, dir)
			if len(after) != len(before) {
				t.Fatalf("files after the error: got %d, want %d (nothing created or removed)", len(after), len(before))
			}
			for name, b := range before {
				if !bytes.Equal(after[name], b) {
					t.Fatalf("%s: changed by a failed TLSConfig, want it left alone", name)
				}
			}
		})
	}
}

func TestTLSConfig_BadDomain(t *testing.T) {
	for _, d := range []string{"", "Localhost", "localhost.", ".localhost", "a..b", "wi_ki.test"} {
		dir := filepath.Join(t.TempDir(), "certs")
		if _, err := TLSConfig(dir, d); err == nil {
			t.Errorf("TLSConfig(%q): got nil, want error", d)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("TLSConfig(%q): got dir created (%v), want nothing written", d, err)
		}
	}
}

func TestTLSConfig_Handshake(t *testing.T) {
	dir := t.TempDir()
	cfg, err := TLSConfig(dir, "localhost")
	if err != nil {
		t.Fatalf("TLSConfig: got %v, want nil", err)
	}
	addr := serveTLS(t, "127.0.0.1:0", cfg)
	roots := roots(t, dir)

	tests := []struct {
		name       string
		serverName string   // "": verify the IP in the address
		wantDNS    []string // DNS names of the certificate served; nil: want a verification error
	}{
		{"one label", "wiki.localhost", []string{"wiki.localhost"}},
		{"mixed case", "Wiki.LocalHost", []string{"wiki.localhost"}},
		{"reserved label still served", "www.localhost", []string{"www.localhost"}},
		{"apex", "localhost", []string{"localhost", "*.localhost"}},
		{"ip", "", []string{"localhost", "*.localhost"}},
		{"two labels", "a.b.localhost", nil},
		{"other domain", "example.com", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, err := dial(addr, &tls.Config{RootCAs: roots, ServerName: tt.serverName})
			if tt.wantDNS == nil {
				var verr *tls.CertificateVerificationError
				if !errors.As(err, &verr) {
					t.Fatalf("handshake with ServerName %q: got %v, want a certificate verification error", tt.serverName, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake with ServerName %q: got %v, want nil", tt.serverName, err)
			}
			if got := state.PeerCertificates[0].DNSNames; !slices.Equal(got, tt.wantDNS) {
				t.Fatalf("handshake with ServerName %q: got certificate for %q, want %q", tt.serverName, got, tt.wantDNS)
			}
		})
	}

	t.Run("ipv6", func(t *testing.T) {
		ln, err := net.Listen("tcp", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		ln.Close()
		addr6 := serveTLS(t, "[::1]:0", cfg)
		if _, err := dial(addr6, &tls.Config{RootCAs: roots}); err != nil {
			t.Fatalf("handshake with [::1]: got %v, want nil", err)
		}
	})
}

func TestTLSConfig_OtherDomain(t *testing.T) {
	dir := t.TempDir()
	cfg, err := TLSConfig(dir, "tunnel.test")
	if err != nil {
		t.Fatalf("TLSConfig: got %v, want nil", err)
	}
	addr := serveTLS(t, "127.0.0.1:0", cfg)
	roots := roots(t, dir)
	for _, sn := range []string{"wiki.tunnel.test", "tunnel.test", "localhost"} {
		if _, err := dial(addr, &tls.Config{RootCAs: roots, ServerName: sn}); err != nil {
			t.Errorf("handshake with ServerName %q: got %v, want nil", sn, err)
		}
	}
}

func TestTLSConfig_Curl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	dir := t.TempDir()
	cfg, err := TLSConfig(dir, "localhost")
	if err != nil {
		t.Fatalf("TLSConfig: got %v, want nil", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s", r.Host)
		}),
		TLSConfig: cfg,
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ServeTLS: got %v, want http.ErrServerClosed", err)
		}
	})

	port := ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := fmt.Sprintf("https://wiki.localhost:%d/", port)
	cmd := exec.CommandContext(ctx, curl,
		"--silent", "--show-error", "--fail", "--noproxy", "*",
		"--cacert", filepath.Join(dir, CAFile),
		"--resolve", fmt.Sprintf("wiki.localhost:%d:127.0.0.1", port),
		url)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("curl %s: got %v (%s), want success", url, err, strings.TrimSpace(stderr.String()))
	}
	if got, want := stdout.String(), fmt.Sprintf("hello from wiki.localhost:%d", port); got != want {
		t.Fatalf("curl body: got %q, want %q", got, want)
	}
}

func TestStore_CacheBoundedAndShared(t *testing.T) {
	c, err := load(t.TempDir(), "localhost")
	if err != nil {
		t.Fatalf("load: got %v, want nil", err)
	}
	get := func(name string) *tls.Certificate {
		cert, err := c.getCertificate(&tls.ClientHelloInfo{ServerName: name})
		if err != nil {
			t.Errorf("getCertificate(%q): got %v, want nil", name, err)
		}
		return cert
	}

	first := get("wiki.localhost")
	if again := get("wiki.localhost"); again != first {
		t.Fatalf("second getCertificate(wiki.localhost): got a new certificate, want the cached one")
	}
	if got := get(""); got != c.leaf {
		t.Fatalf("getCertificate without SNI: got %v, want the stored leaf", got.Leaf.DNSNames)
	}

	// Many handshakes at once, more names than the cache holds.
	const workers = 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range cacheSize/workers + 20 {
				cert := get(fmt.Sprintf("n%d-%d.localhost", w, i))
				if cert == nil || len(cert.Leaf.DNSNames) != 1 {
					t.Errorf("getCertificate: got %v, want a one-name leaf", cert)
					return
				}
			}
		})
	}
	wg.Wait()
	c.mu.Lock()
	n := len(c.cache)
	c.mu.Unlock()
	if n > cacheSize {
		t.Fatalf("cache size: got %d, want at most %d", n, cacheSize)
	}
}

// TestStore_UnicodeCaseIsNotFolded: only A-Z are lowered, so an SNI with
// the Kelvin sign (which Unicode lowers to "k") gets the stored leaf, not a
// leaf for a name the client did not send.
func TestStore_UnicodeCaseIsNotFolded(t *testing.T) {
	c, err := load(t.TempDir(), "localhost")
	if err != nil {
		t.Fatalf("load: got %v, want nil", err)
	}
	for _, name := range []string{"wi\u212Ai.localhost", "wi\xffki.localhost"} {
		cert, err := c.getCertificate(&tls.ClientHelloInfo{ServerName: name})
		if err != nil || cert != c.leaf {
			t.Errorf("getCertificate(%q): got (%p, %v), want the stored leaf %p", name, cert, err, c.leaf)
		}
	}
}

func TestEnsure(t *testing.T) {
	dir := t.TempDir()
	if err := Ensure(dir, "localhost"); err != nil {
		t.Fatalf("Ensure: got %v, want nil", err)
	}
	before := readAll(t, dir)
	if _, ok := before[CAFile]; !ok {
		t.Fatalf("files after Ensure: got %d without %s, want the CA made", len(before), CAFile)
	}
	if err := Ensure(dir, "localhost"); err != nil {
		t.Fatalf("second Ensure: got %v, want nil", err)
	}
	if after := readAll(t, dir); !bytes.Equal(after[CAFile], before[CAFile]) {
		t.Errorf("%s: changed by the second Ensure, want it kept", CAFile)
	}
	removeFile(t, filepath.Join(dir, "ca-key.pem"))
	if err := Ensure(dir, "localhost"); err == nil || !strings.Contains(err.Error(), "ca-key.pem is missing") {
		t.Errorf("Ensure without the CA key: got %v, want an error naming ca-key.pem", err)
	}
}

// serveTLS listens on addr with cfg and completes the handshake of
// every connection, until the test ends. It returns the listening address.
func serveTLS(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan struct{})
	go acceptLoop(ln, done)
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

func acceptLoop(ln net.Listener, done chan<- struct{}) {
	defer close(done)
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		// One at a time: the test dials one connection at a time too, and a
		// deadline bounds a client that never finishes.
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		_ = conn.(*tls.Conn).Handshake() // the client reports the outcome
		conn.Close()
	}
}

// dial completes a TLS handshake with addr and returns its state.
func dial(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}

func roots(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(readCert(t, filepath.Join(dir, CAFile)))
	return pool
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(path, strings.TrimSuffix(path, ".pem")+"-key.pem")
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	return pair.Leaf
}

// readAll returns the contents of every file in dir by name.
func readAll(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := make(map[string][]byte)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func removeFile(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}
