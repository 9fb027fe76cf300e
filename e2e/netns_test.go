package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testtls"
)

// netnsPair makes two network namespaces joined by a veth pair,
// 10.231.N.1 (client side) and 10.231.N.2 (server side), and removes them
// at the end of the test. It skips when not root, except in CI.
func netnsPair(t *testing.T) (client, server, clientIf, serverIP string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("network namespace tests need root, and CI must run them")
		}
		t.Skip("network namespace tests need root")
	}
	n := os.Getpid()%200 + 20
	suffix := fmt.Sprintf("%d", os.Getpid())
	client, server = "tnl-c-"+suffix, "tnl-s-"+suffix
	clientIf, serverIf := "tc"+suffix, "ts"+suffix
	serverIP = fmt.Sprintf("10.231.%d.2", n)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", client)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", client).Run() })
	ip("netns", "add", server)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", server).Run() })
	ip("-n", client, "link", "add", clientIf, "type", "veth", "peer", "name", serverIf, "netns", server)
	ip("-n", client, "addr", "add", fmt.Sprintf("10.231.%d.1/30", n), "dev", clientIf)
	ip("-n", server, "addr", "add", serverIP+"/30", "dev", serverIf)
	for _, ns := range []struct{ ns, dev string }{{client, clientIf}, {server, serverIf}} {
		ip("-n", ns.ns, "link", "set", "lo", "up")
		ip("-n", ns.ns, "link", "set", ns.dev, "up")
	}
	return client, server, clientIf, serverIP
}

// certFor writes a CA and a server certificate for ip and *.localhost
// into dir and returns the CA, certificate and key files.
func certFor(t *testing.T, dir, ip string) (caFile, certFile, keyFile string) {
	t.Helper()
	ca := testtls.NewCA(t)
	cert := ca.Issue(t, ip, "localhost", "*.localhost")
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", ca.PEM()), write("cert.pem", testtls.CertPEM(cert)), write("key.pem", testtls.KeyPEM(t, cert))
}

// TestProcess_NetnsLinkDown is the true silent cut: tunnel and tunneld in
// two network namespaces joined by a veth pair whose link is set down, so
// packets vanish with no FIN or RST. Both sides notice within the peer
// timeout; the client is back once the link is up again.
func TestProcess_NetnsLinkDown(t *testing.T) {
	tunneldBin, tunnel := binaries(t)
	clientNS, serverNS, clientIf, serverIP := netnsPair(t)
	ca, cert, key := certFor(t, t.TempDir(), serverIP)
	const peerTimeout = 2 * time.Second

	srv := start(t, "ip", nil, "netns", "exec", serverNS, tunneldBin, "--listen", serverIP+":8443", "--log-format", "json",
		"--domain", "localhost", "--cert", cert, "--key", key, "--allow-anonymous", "--peer-timeout", peerTimeout.String())
	srv.waitLine(srv.stderr, `the "serving" log line`, logMsg("serving"))
	// No local service is needed: only the session matters here.
	client := start(t, "ip", nil, "netns", "exec", clientNS, tunnel, "--server", serverIP+":8443", "--ca", ca,
		"--log-format", "json", "--peer-timeout", peerTimeout.String(), "--retry-max", "1s", "http", "--name", "pi", "9")
	client.waitLine(client.stdout, "a public URL", isURL)

	cmark, smark := client.stderr.Len(), srv.stderr.Len()
	down := time.Now()
	if out, err := exec.Command("ip", "-n", clientNS, "link", "set", clientIf, "down").CombinedOutput(); err != nil {
		t.Fatalf("link down: %v\n%s", err, out)
	}
	client.waitLineFrom(client.stderr, cmark, "the session-ended log line", logMsg("session ended; reconnecting"))
	clientNoticed := time.Since(down)
	srv.waitLineFrom(srv.stderr, smark, "the disconnect log line", logMsg("tunnel disconnected"))
	serverNoticed := time.Since(down)
	t.Logf("link down noticed by the client after %v, by tunneld after %v (peer timeout %v)",
		clientNoticed.Round(time.Millisecond), serverNoticed.Round(time.Millisecond), peerTimeout)

	cmark = client.stderr.Len()
	if out, err := exec.Command("ip", "-n", clientNS, "link", "set", clientIf, "up").CombinedOutput(); err != nil {
		t.Fatalf("link up: %v\n%s", err, out)
	}
	client.waitLineFrom(client.stderr, cmark, "a reconnect", logMsgWith("connected", "pi"))
	client.stop()
	srv.stop()
}
