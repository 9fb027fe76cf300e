package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// devCerts runs "tunneld certs" for domain into a fresh directory and
// returns the CA file and the leaf's certificate and key files.
func devCerts(t *testing.T, tunneld, domain string) (ca, cert, key string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	if code, _, stderr := runToEnd(t, tunneld, nil, "certs", "--certs-dir", dir, "--domain", domain); code != 0 {
		t.Fatalf("tunneld certs --domain %s: exit %d; stderr:\n%s", domain, code, stderr)
	}
	return filepath.Join(dir, "ca.pem"), filepath.Join(dir, "localhost.pem"), filepath.Join(dir, "localhost-key.pem")
}

// devCertsDir is a fresh directory of dev certificates for localhost, as
// tunneld --dev makes them: a CA of its own each time.
func devCertsDir(t *testing.T) string {
	t.Helper()
	tunneld, _ := binaries(t)
	ca, _, _ := devCerts(t, tunneld, "localhost")
	return filepath.Dir(ca)
}

// TestProcess_TunneldCertificateMustCoverDomain (issue 13): without ACME,
// a certificate that does not cover --domain and *.DOMAIN stops tunneld at
// start-up (exit 1, a configuration error) with a message naming the
// names missing, the file loaded and what to do; the same mistake on
// SIGHUP is logged and the previous certificate stays in use.
func TestProcess_TunneldCertificateMustCoverDomain(t *testing.T) {
	tunneld, _ := binaries(t)
	// A dev leaf made for another domain: localhost, other.test, *.other.test.
	_, otherCert, otherKey := devCerts(t, tunneld, "other.test")

	code, stdout, stderr := runToEnd(t, tunneld, nil, "--domain", "example.test", "--cert", otherCert, "--key", otherKey,
		"--acme=false", "--allow-anonymous", "--listen", "127.0.0.1:0", "--http-listen", "")
	for _, want := range []string{"do not cover example.test, *.example.test", otherCert,
		"give tunneld a certificate for example.test and *.example.test", "--acme"} {
		if code != 1 || stdout != "" || !strings.Contains(stderr, want) {
			t.Errorf("start-up: got exit %d, stdout %q, stderr %q; want 1, nothing, and %q", code, stdout, stderr, want)
		}
	}

	// SIGHUP: the --cert directory now holds the other domain's leaf.
	ca, cert, key := devCerts(t, tunneld, "localhost")
	served := t.TempDir()
	install := func(certFile, keyFile string) {
		t.Helper()
		for src, dst := range map[string]string{certFile: "site.crt", keyFile: "site.key"} {
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(served, dst), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(cert, key)
	p, addr := startTunneld(t, nil, "--domain", "localhost", "--cert", served, "--acme=false", "--allow-anonymous", "--http-listen", "")
	before, err := handshake(t, ca, addr, "wiki.localhost")
	if err != nil {
		t.Fatalf("handshake before the reload: %v", err)
	}
	install(otherCert, otherKey)
	mark := p.stderr.Len()
	p.signal(syscall.SIGHUP)
	p.waitLineFrom(p.stderr, mark, "the refused reload's log line",
		logMsgWith("SIGHUP: certificates not reloaded; the previous ones stay in use", `do not cover *.localhost`))
	after, err := handshake(t, ca, addr, "wiki.localhost")
	if err != nil || !after.Equal(before) {
		t.Fatalf("after the refused reload: %v; want the previous certificate served", err)
	}
	p.stop()
}
