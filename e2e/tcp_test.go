package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
