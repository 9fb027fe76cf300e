package clustercert_test

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
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testlog"
	"github.com/tunnelhq/tunnel/internal/testtls"
)

// Pebble, Let's Encrypt's test CA, with its DNS stub answering 127.0.0.1
// for every name, all on loopback (see ../shared TESTING.md "Pebble").
// Pebble validates challenges on the ports its config names: the test
// decides which node listens there.

// pebbleWait bounds a wait that includes an ACME order, generous for a
// loaded CI machine (an order takes about a second here).
const pebbleWait = 90 * time.Second

var (
	pebbleOnce sync.Once
	pebbleBins [2]string // pebble, pebble-challtestsrv
	pebbleErr  error
)

// pebbleBinaries builds (or finds in the build cache) the tools go.mod
// pins; the path is the binary's, so the process killed is Pebble's.
func pebbleBinaries(t *testing.T) (pebble, challtestsrv string) {
	t.Helper()
	pebbleOnce.Do(func() {
		for i, tool := range []string{"pebble", "pebble-challtestsrv"} {
			out, err := exec.Command("go", "tool", "-n", tool).Output()
			if err != nil {
				pebbleErr = fmt.Errorf("go tool -n %s: %w", tool, err)
				return
			}
			pebbleBins[i] = strings.TrimSpace(string(out))
		}
	})
	if pebbleErr != nil {
		t.Fatal(pebbleErr)
	}
	return pebbleBins[0], pebbleBins[1]
}

type pebble struct {
	directory string          // ACME directory URL
	api       *x509.CertPool  // verifies Pebble's own HTTPS
	issuer    *x509.CertPool  // Pebble's root, which signs what it issues
	out       *testlog.Buffer // Pebble's log
}

// startPebble runs pebble-challtestsrv and pebble validating on httpPort
// and tlsPort of 127.0.0.1, without the VA's sleeps and the nonce faults,
// issuing certificates valid for 90 days.
func startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	return startPebbleValidity(t, httpPort, tlsPort, 0)
}

// startPebbleValidity is startPebble issuing certificates valid for
// validity (0: Pebble's default, 90 days).
func startPebbleValidity(t *testing.T, httpPort, tlsPort int, validity time.Duration) *pebble {
	t.Helper()
	pebbleBin, challBin := pebbleBinaries(t)
	dir := t.TempDir()
	ca := testtls.NewCA(t)
	cert := ca.IssueFor(t, 24*time.Hour, "localhost", "127.0.0.1")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, testtls.CertPEM(cert))
	writeFile(t, keyFile, testtls.KeyPEM(t, cert))

	dns := freeAddr(t)
	startProcess(t, challBin, nil, "-dnsserver", dns, "-management", freeAddr(t),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	acmeAddr, mgmtAddr := freeAddr(t), freeAddr(t)
	config, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":                  acmeAddr,
		"managementListenAddress":        mgmtAddr,
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"profiles":                       map[string]any{"default": map[string]any{"validityPeriod": int(validity / time.Second)}},
	}})
	configFile := filepath.Join(dir, "pebble.json")
	writeFile(t, configFile, config)
	out := startProcess(t, pebbleBin, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"},
		"-config", configFile, "-dnsserver", dns)
	for _, addr := range []string{dns, acmeAddr, mgmtAddr} {
		waitListening(t, addr)
	}

	pb := &pebble{directory: "https://" + acmeAddr + "/dir", api: ca.Pool(), issuer: x509.NewCertPool(), out: out}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pb.api}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + mgmtAddr + "/roots/0") // a new root at every start
	if err != nil {
		t.Fatalf("Pebble's root: %v", err)
	}
	defer resp.Body.Close()
	root, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !pb.issuer.AppendCertsFromPEM(root) {
		t.Fatalf("Pebble's root: %s, %v", resp.Status, err)
	}
	return pb
}

// orders counts the orders Pebble created (its log names no host).
func (pb *pebble) orders() int {
	return strings.Count(pb.out.String(), "Added order")
}

// startProcess runs bin until the test ends (then kills it), its stdout
// and stderr in the buffer returned.
func startProcess(t *testing.T, bin string, env []string, args ...string) *testlog.Buffer {
	t.Helper()
	out := &testlog.Buffer{}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s:\n%s", filepath.Base(bin), out.String())
		}
	})
	return out
}

// waitListening dials addr until something accepts: Pebble logs its
// addresses before it binds them, so there is no line to wait for.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listening on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a port, not synchronising goroutines
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(freePort(t))
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

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// handshake does a visitor's TLS handshake with addr for serverName,
// verifying the chain against roots, and returns the leaf.
func handshake(ctx context.Context, addr, serverName string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: serverName, NextProtos: []string{"http/1.1"}}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}
