package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/internal/testtls"
)

// needSSHD skips (fails under CI) without Debian's openssh-server and
// client, or without root, which sshd needs to serve a user's login.
func needSSHD(t *testing.T) {
	t.Helper()
	_, sshErr := exec.LookPath("ssh")
	_, sshdErr := os.Stat("/usr/sbin/sshd")
	missing := ""
	switch {
	case sshErr != nil || sshdErr != nil:
		missing = "ssh or /usr/sbin/sshd is not installed (apt-get install openssh-server openssh-client)"
	case os.Geteuid() != 0:
		missing = "sshd needs root to serve a login"
	}
	if missing != "" {
		if os.Getenv("CI") != "" {
			t.Fatal(missing + ", and CI must run this test (.ci/run installs it)")
		}
		t.Skip(missing)
	}
}

// sshd is a throwaway sshd on a loopback port: a generated host key, one
// user key (root's, for the test), no passwords.
type sshd struct {
	port, key string
}

func startSSHD(t *testing.T) sshd {
	t.Helper()
	dir := t.TempDir()
	keygen := func(path string) {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	keygen(filepath.Join(dir, "host_key"))
	keygen(filepath.Join(dir, "user_key"))
	pub, err := os.ReadFile(filepath.Join(dir, "user_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	// sshd binds the port itself: take a free one and hand it over.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	config := fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile %s
Subsystem sftp /usr/lib/openssh/sftp-server
`, port, filepath.Join(dir, "host_key"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"))
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(config), 0o600)
	os.MkdirAll("/run/sshd", 0o755)
	p := startCmd(t, "sshd", exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(dir, "sshd_config")))
	p.waitLine(p.stderr, "sshd listening", func(l string) bool { return strings.Contains(l, "Server listening on 127.0.0.1 port "+port) })
	return sshd{port: port, key: filepath.Join(dir, "user_key")}
}

// sshArgs are ssh's or scp's options to log in with the test key through
// proxy, a ProxyCommand.
func (s sshd) sshArgs(proxy string) []string {
	return []string{"-i", s.key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ProxyCommand=" + proxy}
}

// TestProcess_TCPTunnelCarriesSSH: sshd behind "tunnel tcp", reached only
// through "tunnel connect" as ssh's ProxyCommand: a command runs, and scp
// copies 50 MiB each way, checked by hash. A visitor with the wrong token
// is refused (exit 3) and the owner's client never logs a stream for it.
func TestProcess_TCPTunnelCarriesSSH(t *testing.T) {
	needSSHD(t)
	sd := startSSHD(t)
	_, tunnelBin := binaries(t)
	_, addr, certs := startDevTunneld(t, nil)
	owner := start(t, tunnelBin, nil, "--dev", "--server", addr, "--certs-dir", certs, "--log-format", "json", "--log-level", "debug",
		"tcp", "--allow-token", "tk_visitor", "--name", "pi-ssh", sd.port)
	url := owner.waitLine(owner.stdout, "a tcp:// URL", func(l string) bool { return strings.HasPrefix(l, "tcp://") })
	_, port, _ := net.SplitHostPort(addr)
	if want := "tcp://pi-ssh.localhost:" + port; url != want {
		t.Errorf("tunnel tcp printed %q, want %q", url, want)
	}
	proxy := fmt.Sprintf("%s --dev --server %s --certs-dir %s connect %%h", tunnelBin, addr, certs)
	env := append(baseEnv(), "TUNNEL_TOKEN=tk_visitor")

	// A wrong token: refused, and the owner hears nothing of it.
	code, _, stderr := runToEnd(t, tunnelBin, []string{"TUNNEL_TOKEN=tk_wrong"}, "--dev", "--server", addr, "--certs-dir", certs, "connect", "pi-ssh.localhost")
	if code != 3 || !strings.Contains(stderr, "bad_token") {
		t.Fatalf("wrong token: exit %d, stderr %q; want 3 and bad_token", code, stderr)
	}

	ssh := exec.Command("ssh", append(sd.sshArgs(proxy), "root@pi-ssh.localhost", "echo through the tunnel")...)
	ssh.Env = env
	out, err := ssh.CombinedOutput()
	if err != nil || string(out) != "through the tunnel\n" {
		t.Fatalf("ssh: %v: %q", err, out)
	}
	// The client logs a stream once both its ends are closed, which may be
	// just after ssh has exited: wait for that line before counting.
	owner.waitLine(owner.stderr, "the ssh session's stream closed", func(l string) bool {
		return strings.Contains(l, `"message":"stream closed"`)
	})
	if n := strings.Count(owner.stderr.String(), `"message":"stream closed"`); n != 1 {
		t.Errorf("the owner's client logged %d streams, want 1 (the ssh session; none for the refused visitor)", n)
	}

	dir := t.TempDir()
	data := make([]byte, 50<<20)
	rand.Read(data)
	up, down, back := filepath.Join(dir, "up"), filepath.Join(dir, "remote"), filepath.Join(dir, "back")
	os.WriteFile(up, data, 0o600)
	for _, cp := range [][2]string{{up, "root@pi-ssh.localhost:" + down}, {"root@pi-ssh.localhost:" + down, back}} {
		scp := exec.Command("scp", append(sd.sshArgs(proxy), cp[0], cp[1])...)
		scp.Env = env
		if out, err := scp.CombinedOutput(); err != nil {
			t.Fatalf("scp %s %s: %v: %s", cp[0], cp[1], err, out)
		}
	}
	want := sha256.Sum256(data)
	for _, f := range []string{down, back} {
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(got); !bytes.Equal(sum[:], want[:]) {
			t.Fatalf("%s: %d bytes, hash differs from the 50 MiB sent", f, len(got))
		}
	}
}

// TestACME_TLSAndTCPTunnelsGetNoCertificate: one client session with an
// HTTP, a TLS passthrough and a TCP tunnel (TUNNEL_TARGETS with kinds)
// against tunneld with ACME from Pebble. curl reaches the TLS tunnel's
// local HTTPS server verifying it with that server's own CA, so tunneld
// did not terminate it; "tunnel connect --listen" reaches the TCP one;
// Pebble sees orders for the apex and the HTTP tunnel only.
func TestACME_TLSAndTCPTunnelsGetNoCertificate(t *testing.T) {
	needCurl(t)
	tlsPort := freePort(t)
	pb := startPebble(t, freePort(t), tlsPort)
	addr := "127.0.0.1:" + strconv.Itoa(tlsPort)
	tunneld := acmeTunneld(t, pb, addr, "", filepath.Join(t.TempDir(), "autocert"), "--admin-listen", "127.0.0.1:0")
	if _, err := handshake(t, pb.root, addr, acmeDomain); err != nil {
		t.Fatalf("apex: no certificate from Pebble: %v", err)
	}

	secureHost := "secure." + acmeDomain
	ca := testtls.NewCA(t)
	caFile := filepath.Join(t.TempDir(), "local-ca.pem")
	os.WriteFile(caFile, ca.PEM(), 0o644)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerConfig(t, secureHost))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "end to end %s\n", r.TLS.ServerName)
	})}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	echo := tcpEchoServer(t)
	web := newBackend(t, "web")

	targets := fmt.Sprintf("web=%s tls://secure=%s tcp://pi-db=%s", web, portOf(ln.Addr().String()), portOf(echo))
	client := acmeClient(t, pb.root, tlsPort, []string{"TUNNEL_TOKEN=s3cret", "TUNNEL_TARGETS=" + targets})
	port := strconv.Itoa(tlsPort)
	for _, want := range []string{"https://web." + acmeDomain + ":" + port, "tls://" + secureHost + ":" + port, "tcp://pi-db." + acmeDomain + ":" + port} {
		client.waitLine(client.stdout, want, func(l string) bool { return l == want })
	}

	curl := exec.Command("curl", "-sS", "--max-time", "60", "--cacert", caFile,
		"--resolve", secureHost+":"+port+":127.0.0.1", "https://"+secureHost+":"+port+"/")
	out, err := curl.CombinedOutput()
	if err != nil || string(out) != "end to end "+secureHost+"\n" {
		t.Fatalf("curl through the TLS tunnel, trusting only the local server's CA: %v: %q", err, out)
	}

	visitor := acmeClient(t, pb.root, tlsPort, []string{"TUNNEL_TOKEN=s3cret"}, "connect", "--listen", "127.0.0.1:0", "pi-db."+acmeDomain)
	local := logAddr(visitor, "listening")
	c, err := net.DialTimeout("tcp", local, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(acmeWait))
	io.WriteString(c, "over tcp")
	c.(*net.TCPConn).CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "over tcp" {
		t.Fatalf("echo through tunnel connect --listen: got %q, %v", got, err)
	}

	if got := fetchWithin(t, acmeWait, pb.root, addr, "https://web."+acmeDomain+":"+port+"/x"); got != "web /x\n" {
		t.Fatalf("HTTP tunnel beside them: got %q", got)
	}
	if n := pb.orders(); n != 2 {
		t.Fatalf("Pebble saw %d orders, want 2 (the apex and web, never secure or pi-db)", n)
	}
	for _, name := range []string{secureHost, "pi-db." + acmeDomain} {
		if pb.logged(name) {
			t.Errorf("Pebble's log names %s: tunneld asked for its certificate", name)
		}
	}
	// The access log is buffered for up to a second; a graceful stop
	// writes it out.
	tunneld.stop()
	for _, kind := range []string{"tls", "tcp"} {
		if n := countLines(tunneld, `"message":"connection"`, `"proto":"`+kind+`"`); n != 1 {
			t.Errorf("access log: %d connection lines for %s, want 1", n, kind)
		}
	}
}

// tcpEchoServer echoes each connection until the peer half-closes.
func tcpEchoServer(t *testing.T) string { return testnet.Echo(t) }

// TestProcess_ConfigWithEveryKind: one --config file with an HTTP, a TCP
// and a TLS tunnel, one client, one session; each is reached its own way:
// HTTPS through tunneld, "tunnel connect" piping stdin and stdout (half-
// close included: the echo ends when stdin does), and a TLS client that
// trusts only the local service's CA.
func TestProcess_ConfigWithEveryKind(t *testing.T) {
	_, addr, certs := startDevTunneld(t, nil)
	_, port, _ := net.SplitHostPort(addr)
	_, tunnelBin := binaries(t)

	ca := testtls.NewCA(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerConfig(t, "secure.localhost"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "own certificate") })}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	config := filepath.Join(t.TempDir(), "tunnels.json")
	os.WriteFile(config, []byte(fmt.Sprintf(`{"tunnels": [
  {"name": "web", "target": %q},
  {"name": "pi-echo", "target": %q, "kind": "tcp", "allow_tokens": ["tk_friend"]},
  {"name": "secure", "target": %q, "kind": "tls"}]}`, newBackend(t, "web"), tcpEchoServer(t), ln.Addr().String())), 0o600)
	owner := start(t, tunnelBin, nil, "--dev", "--server", addr, "--certs-dir", certs, "--log-format", "json", "--config", config)
	for _, want := range []string{"https://web.localhost:" + port, "tcp://pi-echo.localhost:" + port, "tls://secure.localhost:" + port} {
		owner.waitLine(owner.stdout, want, func(l string) bool { return l == want })
	}

	if got := fetch(t, filepath.Join(certs, "ca.pem"), addr, "https://web.localhost:"+port+"/"); got != "web /\n" {
		t.Errorf("http tunnel: got %q", got)
	}

	connect := exec.Command(tunnelBin, "--dev", "--server", addr, "--certs-dir", certs, "connect", "pi-echo.localhost")
	connect.Env = append(baseEnv(), "TUNNEL_TOKEN=tk_friend")
	connect.Stdin = strings.NewReader("echo me")
	connect.WaitDelay = waitTimeout
	if out, err := connect.Output(); err != nil || string(out) != "echo me" {
		t.Errorf("tunnel connect: got %q, %v; want the echo", out, err)
	}

	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "secure.localhost"})
	if err != nil {
		t.Fatalf("tls tunnel, trusting only the local service's CA: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	io.WriteString(c, "GET / HTTP/1.0\r\nHost: secure.localhost\r\n\r\n")
	if resp, _ := io.ReadAll(c); !strings.HasSuffix(string(resp), "own certificate") {
		t.Errorf("tls tunnel: got %q", resp)
	}
}

// TestProcess_TokenAddConnectGrant: "tunneld token add --connect NAME"
// lets a token that owns nothing reach another owner's TCP tunnel; the
// owner's shared secret reaches it too; a token without the grant does not.
func TestProcess_TokenAddConnectGrant(t *testing.T) {
	tunneldBin, tunnelBin := binaries(t)
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if code, _, stderr := runToEnd(t, tunneldBin, nil, "certs", "--certs-dir", certs); code != 0 {
		t.Fatalf("tunneld certs: exit %d: %s", code, stderr)
	}
	ca := filepath.Join(certs, "ca.pem")
	tokensFile := filepath.Join(dir, "tokens.json")
	add := func(args ...string) string {
		code, stdout, stderr := runToEnd(t, tunneldBin, []string{"TUNNELD_TOKENS_FILE=" + tokensFile}, append([]string{"token", "add"}, args...)...)
		if code != 0 {
			t.Fatalf("token add %v: exit %d: %s", args, code, stderr)
		}
		return strings.TrimSuffix(stdout, "\n")
	}
	friend := add("--label", "friend", "--connect", "pi-*")
	stranger := add("--label", "stranger", "--name", "other")
	_, addr := startTunneld(t, []string{"TUNNELD_TOKEN=owner-secret"},
		"--domain", "localhost", "--cert", filepath.Join(certs, "localhost.pem"), "--key", filepath.Join(certs, "localhost-key.pem"),
		"--tokens-file", tokensFile, "--acme=false", "--http-listen", "")
	owner := start(t, tunnelBin, []string{"TUNNEL_TOKEN=owner-secret"}, "--server", addr, "--ca", ca, "tcp", "--name", "pi-echo", tcpEchoServer(t))
	owner.waitLine(owner.stdout, "a tcp:// URL", func(l string) bool { return strings.HasPrefix(l, "tcp://") })

	for _, tt := range []struct {
		name, token string
		code        int
	}{{"granted", friend, 0}, {"owner", "owner-secret", 0}, {"no grant", stranger, 3}} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(tunnelBin, "--server", addr, "--ca", ca, "connect", "pi-echo.localhost")
			cmd.Env = append(baseEnv(), "TUNNEL_TOKEN="+tt.token)
			cmd.Stdin = strings.NewReader("granted?")
			cmd.WaitDelay = waitTimeout
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, _ := cmd.Output()
			if code := cmd.ProcessState.ExitCode(); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.code, stderr.String())
			}
			if tt.code == 0 && string(out) != "granted?" {
				t.Fatalf("echo: got %q", out)
			}
		})
	}
}
