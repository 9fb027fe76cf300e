package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// These tests run tunneld against Pebble, Let's Encrypt's test CA, with its
// DNS stub answering 127.0.0.1 for every name, all on loopback. Pebble
// validates challenges on the ports its config names (httpPort, tlsPort), so
// each test picks free ports and tunneld listens on them.
//
// Speed: the Pebble binaries are built once per test binary (go tool -n,
// from the build cache after the first time: about 55 s cold, instant warm);
// each test starts its own Pebble (tens of milliseconds) with the VA's random
// sleeps and the nonce-rejection fault off, so an order takes about a second.

// acmeDomain is the apex in these tests. autocert wants two labels at
// least, and Go resolves no *.localhost name, so the tunnel client runs in
// a mount namespace whose /etc/hosts names it (see acmeTunnel).
const acmeDomain = "tunnel.localhost"

// acmeWait bounds waits that include an ACME order: issuance plus, for
// HTTP-01, a failed TLS-ALPN-01 attempt first; generous for loaded CI.
const acmeWait = 90 * time.Second

var (
	pebbleOnce sync.Once
	pebbleBin  string
	challBin   string
	pebbleErr  error
)

// pebbleBinaries builds (or finds in the build cache) the pebble and
// pebble-challtestsrv tools pinned in go.mod.
func pebbleBinaries(t *testing.T) (pebble, challtestsrv string) {
	t.Helper()
	pebbleOnce.Do(func() {
		for _, tool := range []struct {
			name string
			dst  *string
		}{{"pebble", &pebbleBin}, {"pebble-challtestsrv", &challBin}} {
			out, err := exec.Command("go", "tool", "-n", tool.name).Output()
			if err != nil {
				pebbleErr = fmt.Errorf("go tool -n %s: %w", tool.name, err)
				return
			}
			*tool.dst = strings.TrimSpace(string(out))
		}
	})
	if pebbleErr != nil {
		t.Fatal(pebbleErr)
	}
	return pebbleBin, challBin
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitListening dials addr until something accepts. Pebble logs its
// addresses before it binds them, so there is no line to wait for instead.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listening on %s within %v: %v", addr, waitTimeout, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a port, not synchronising goroutines
	}
}

type pebble struct {
	proc      *process
	directory string // ACME directory URL
	httpsCA   string // PEM file: the CA of Pebble's own HTTPS certificate
	root      string // PEM file: Pebble's root, which signs what it issues
	dns       string // pebble-challtestsrv's DNS server, host:port
	challMgmt string // pebble-challtestsrv's management API, host:port
}

// startPebble starts pebble-challtestsrv and pebble validating on httpPort
// and tlsPort of 127.0.0.1.
func startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	pebbleBin, challBin := pebbleBinaries(t)
	tunneld, _ := binaries(t)
	dir := t.TempDir()

	// Pebble's HTTPS certificate: tunneld's dev certificates for localhost
	// do, made fresh (Pebble's shipped one expires).
	certs := filepath.Join(dir, "https")
	if code, _, stderr := runToEnd(t, tunneld, nil, "certs", "--certs-dir", certs); code != 0 {
		t.Fatalf("tunneld certs: exit %d: %s", code, stderr)
	}

	dns := "127.0.0.1:" + strconv.Itoa(freePort(t))
	challMgmt := "127.0.0.1:" + strconv.Itoa(freePort(t))
	start(t, challBin, nil, "-dnsserver", dns, "-management", challMgmt,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")

	acmeAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	mgmtAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	config := map[string]any{"pebble": map[string]any{
		"listenAddress":                  acmeAddr,
		"managementListenAddress":        mgmtAddr,
		"certificate":                    filepath.Join(certs, "localhost.pem"),
		"privateKey":                     filepath.Join(certs, "localhost-key.pem"),
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
	}}
	data, _ := json.Marshal(config)
	configFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(configFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	proc := start(t, pebbleBin, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"},
		"-config", configFile, "-dnsserver", dns)
	waitListening(t, dns)
	waitListening(t, acmeAddr)
	waitListening(t, mgmtAddr)

	// Pebble makes a new root at every start.
	pb := &pebble{
		proc:      proc,
		directory: "https://localhost:" + portOf(acmeAddr) + "/dir",
		httpsCA:   filepath.Join(certs, "ca.pem"),
		root:      filepath.Join(dir, "pebble-root.pem"),
		dns:       dns,
		challMgmt: challMgmt,
	}
	client := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool(t, pb.httpsCA)}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://localhost:" + portOf(mgmtAddr) + "/roots/0")
	if err != nil {
		t.Fatalf("fetch Pebble's root: %v", err)
	}
	defer resp.Body.Close()
	root, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("fetch Pebble's root: %s, %v", resp.Status, err)
	}
	if err := os.WriteFile(pb.root, root, 0o600); err != nil {
		t.Fatal(err)
	}
	return pb
}

// orders counts the orders Pebble has created.
func (pb *pebble) orders() int {
	n := 0
	for _, l := range pb.proc.stdout.Lines() {
		if strings.Contains(l, "Added order") {
			n++
		}
	}
	return n
}

func (pb *pebble) logged(s string) bool {
	return strings.Contains(pb.proc.stdout.String(), s)
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// handshake does a TLS handshake with addr for serverName, verifying
// against the roots in caFile only, and returns the verified leaf.
func handshake(t *testing.T, caFile, addr, serverName string) (*x509.Certificate, error) {
	t.Helper()
	d := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: acmeWait},
		Config:    &tls.Config{RootCAs: pool(t, caFile), ServerName: serverName, NextProtos: []string{"http/1.1"}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), acmeWait)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// acmeTunneld starts tunneld on listen using pb for certificates, cached
// in cache, with shared token "s3cret".
func acmeTunneld(t *testing.T, pb *pebble, listen, httpListen, cache string, extra ...string) *process {
	t.Helper()
	args := append([]string{"--listen", listen, "--http-listen", httpListen, "--domain", acmeDomain,
		"--acme-directory", pb.directory, "--acme-ca-root", pb.httpsCA, "--cert-cache", cache}, extra...)
	p, _ := startTunneld(t, []string{"TUNNELD_TOKEN=s3cret"}, args...)
	return p
}

// acmeTunnel starts a client for name on tunneld at port, trusting only
// caFile, and waits for its public URL. The client dials acmeDomain, as in
// production; a private /etc/hosts, bind-mounted in a mount namespace of
// its own (root only), maps that name to 127.0.0.1.
func acmeTunnel(t *testing.T, caFile string, port int, name, backendPort string) (*process, string) {
	t.Helper()
	p := acmeClient(t, caFile, port, []string{"TUNNEL_TOKEN=s3cret"}, "http", "--name", name, backendPort)
	return p, p.waitLine(p.stdout, "a public URL", isURL)
}

// acmeClient runs tunnel with args after its --server, --ca and
// --log-format, resolving acmeDomain to 127.0.0.1 as acmeTunnel does.
func acmeClient(t *testing.T, caFile string, port int, env []string, args ...string) *process {
	t.Helper()
	_, tunnel := binaries(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the ACME tests need root and unshare (util-linux) to give the client its own /etc/hosts")
		}
		t.Skip("needs root and unshare to resolve " + acmeDomain)
	}
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost "+acmeDomain+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return start(t, unshare, env, append([]string{"--mount", "sh", "-c",
		`mount --bind "$0" /etc/hosts && exec "$@"`, hosts, tunnel,
		"--server", acmeDomain + ":" + strconv.Itoa(port), "--ca", caFile, "--log-format", "json"}, args...)...)
}

func countLines(p *process, substrs ...string) int {
	n := 0
	for _, l := range p.stderr.Lines() {
		all := true
		for _, s := range substrs {
			all = all && strings.Contains(l, s)
		}
		if all {
			n++
		}
	}
	return n
}

func TestACME_TLSALPN01ForApexAndTunnel(t *testing.T) {
	tlsPort := freePort(t)
	pb := startPebble(t, freePort(t), tlsPort)
	addr := "127.0.0.1:" + strconv.Itoa(tlsPort)
	cache := filepath.Join(t.TempDir(), "autocert")
	backendPort := newBackend(t, "hello over acme")

	tunneld := acmeTunneld(t, pb, addr, "", cache, "--admin-listen", "127.0.0.1:0")
	admin := adminAddr(tunneld)
	// The apex first, as a browser would: the client would otherwise wait
	// for the order inside its own handshake.
	began := time.Now()
	leaf, err := handshake(t, pb.root, addr, acmeDomain)
	if err != nil {
		t.Fatalf("apex: no certificate from Pebble: %v", err)
	}
	t.Logf("apex certificate issued in %v (serial %x)", time.Since(began), leaf.SerialNumber)
	client, url := acmeTunnel(t, pb.root, tlsPort, "wiki", backendPort)
	if want := "https://wiki." + acmeDomain + ":" + strconv.Itoa(tlsPort); url != want {
		t.Fatalf("got URL %q, want %q", url, want)
	}
	began = time.Now()
	if got, want := fetchWithin(t, acmeWait, pb.root, addr, url+"/page"), "hello over acme /page\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	t.Logf("tunnel certificate issued and page fetched in %v", time.Since(began))
	if n := pb.orders(); n != 2 {
		t.Fatalf("Pebble saw %d orders, want 2 (apex and wiki)", n)
	}
	if n := certsIssued(t, admin); n != 2 {
		t.Errorf("tunneld_cert_issuance_total{result=\"ok\"}: got %v, want 2", n)
	}
	if pb.logged("Attempting to validate w/ HTTP") {
		t.Fatal("Pebble tried HTTP-01, but tunneld has no --http-listen: want TLS-ALPN-01 only")
	}

	t.Run("name no tunnel holds", func(t *testing.T) {
		for i := 0; i < 2; i++ {
			if _, err := handshake(t, pb.root, addr, "nobody."+acmeDomain); err == nil {
				t.Fatalf("handshake for nobody.%s succeeded; want no certificate", acmeDomain)
			}
		}
		if n := pb.orders(); n != 2 {
			t.Fatalf("Pebble saw %d orders after asking for nobody.%s, want still 2", n, acmeDomain)
		}
		if n := countLines(tunneld, "nobody."+acmeDomain, "no certificate for a name no tunnel holds"); n != 1 {
			t.Fatalf("refusal logged %d times for two handshakes, want once", n)
		}
	})

	t.Run("restart reuses the cache", func(t *testing.T) {
		client.stop()
		tunneld.stop()
		acmeTunneld(t, pb, addr, "", cache)
		if _, err := handshake(t, pb.root, addr, acmeDomain); err != nil {
			t.Fatalf("apex after restart: %v", err)
		}
		acmeTunnel(t, pb.root, tlsPort, "wiki", backendPort)
		if got, want := fetchWithin(t, acmeWait, pb.root, addr, url+"/again"), "hello over acme /again\n"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
		if n := pb.orders(); n != 2 {
			t.Fatalf("Pebble saw %d orders after the restart, want still 2", n)
		}
		if entries, err := os.ReadDir(cache); err != nil || len(entries) < 3 {
			t.Fatalf("cache %s: %d entries, %v; want the account key and two certificates", cache, len(entries), err)
		}
		if fi, err := os.Stat(cache); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("cache %s: %v, %v; want mode 0700", cache, fi.Mode(), err)
		}
	})
}

func TestACME_HTTP01WhenTLSALPN01Unavailable(t *testing.T) {
	// Pebble's tlsPort has nothing behind it, as when a load balancer
	// holds 443: TLS-ALPN-01 fails and autocert falls back to HTTP-01 on
	// tunneld's --http-listen, which is Pebble's httpPort.
	httpPort, tlsPort := freePort(t), freePort(t)
	pb := startPebble(t, httpPort, freePort(t))
	addr := "127.0.0.1:" + strconv.Itoa(tlsPort)
	httpAddr := "127.0.0.1:" + strconv.Itoa(httpPort)
	acmeTunneld(t, pb, addr, httpAddr, filepath.Join(t.TempDir(), "autocert"))

	began := time.Now()
	if _, err := handshake(t, pb.root, addr, acmeDomain); err != nil {
		t.Fatalf("apex: no certificate from Pebble: %v", err)
	}
	t.Logf("apex certificate issued over HTTP-01 (after a failed TLS-ALPN-01) in %v", time.Since(began))
	_, url := acmeTunnel(t, pb.root, tlsPort, "blog", newBackend(t, "hello over http-01"))
	if got, want := fetchWithin(t, acmeWait, pb.root, addr, url+"/x"), "hello over http-01 /x\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if !pb.logged("Attempting to validate w/ HTTP") {
		t.Fatal("Pebble never validated over HTTP-01")
	}

	t.Run("redirect", func(t *testing.T) {
		client := &http.Client{
			Timeout:       waitTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+httpAddr+"/a/b?c=d&e=%2F", strings.NewReader("body"))
		req.Host = "blog." + acmeDomain + ":" + strconv.Itoa(httpPort)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := "https://blog." + acmeDomain + ":" + strconv.Itoa(tlsPort) + "/a/b?c=d&e=%2F"
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
			t.Fatalf("got %s to %q, want 308 to %q", resp.Status, resp.Header.Get("Location"), want)
		}
	})
}

func TestACME_StaticWildcardNeedsNoOrderAndReloadsOnSIGHUP(t *testing.T) {
	tunneldBin, _ := binaries(t)
	tlsPort := freePort(t)
	pb := startPebble(t, freePort(t), tlsPort)
	addr := "127.0.0.1:" + strconv.Itoa(tlsPort)

	// Two certificates for the apex and its wildcard from two different
	// CAs; the served files start as the first.
	var cas [2]string
	var pairs [2][2][]byte
	for i := range cas {
		dir := t.TempDir()
		if code, _, stderr := runToEnd(t, tunneldBin, nil, "certs", "--certs-dir", dir, "--domain", acmeDomain); code != 0 {
			t.Fatalf("tunneld certs: exit %d: %s", code, stderr)
		}
		cas[i] = filepath.Join(dir, "ca.pem")
		for j, f := range []string{"localhost.pem", "localhost-key.pem"} {
			data, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			pairs[i][j] = data
		}
	}
	served := t.TempDir()
	install := func(i int) {
		t.Helper()
		// NAME.crt and NAME.key in a --cert directory.
		for j, f := range []string{"wildcard.crt", "wildcard.key"} {
			if err := os.WriteFile(filepath.Join(served, f), pairs[i][j], 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(0)
	tunneld := acmeTunneld(t, pb, addr, "", filepath.Join(t.TempDir(), "autocert"), "--cert", served)
	_, url := acmeTunnel(t, cas[0], tlsPort, "wiki", newBackend(t, "hello static"))
	if got, want := fetchWithin(t, acmeWait, cas[0], addr, url+"/1"), "hello static /1\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}

	install(1)
	tunneld.signal(syscall.SIGHUP)
	tunneld.waitLine(tunneld.stderr, "the reload log line", func(l string) bool {
		return strings.Contains(l, "SIGHUP: certificates reloaded")
	})
	if _, err := handshake(t, cas[0], addr, "wiki."+acmeDomain); err == nil {
		t.Fatal("after SIGHUP the old certificate is still served")
	}
	// The client's session, made before the swap, carries this request.
	if got, want := fetchWithin(t, acmeWait, cas[1], addr, url+"/2"), "hello static /2\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if n := countLines(tunneld, "tunnel registered"); n != 1 {
		t.Fatalf("tunnel registered %d times, want once: SIGHUP must not drop the session", n)
	}
	if n := pb.orders(); n != 0 {
		t.Fatalf("Pebble saw %d orders, want none: the static certificate covers every name", n)
	}
}

// certsIssued scrapes tunneld's admin /metrics and returns the count of
// certificates it obtained.
func certsIssued(t *testing.T, admin string) float64 {
	t.Helper()
	hc := &http.Client{Timeout: waitTimeout}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	for _, m := range fams["tunneld_cert_issuance_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "result" && l.GetValue() == "ok" {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatal(`tunneld_cert_issuance_total{result="ok"} missing`)
	return 0
}
