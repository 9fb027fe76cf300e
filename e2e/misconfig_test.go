package e2e

// A user's natural mistakes with tunnel, each found at once and told with
// what to do (issue 13, item 5, the client's half).

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/internal/testtls"
)

// A CA file that did not sign tunneld's certificate stops the client at
// once (exit 1), saying what tunneld presented, which file was trusted and
// what to check.
func TestProcess_WrongCAStopsWithHint(t *testing.T) {
	_, tunnel := binaries(t)
	certs := devCertsDir(t)
	_, addr := startTunneld(t, nil, "--dev", "--certs-dir", certs)
	otherCA := filepath.Join(devCertsDir(t), "ca.pem")

	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"another CA", []string{"--ca", otherCA}, []string{
			"tunnel: tunneld at " + addr + ` presented a certificate for localhost, *.localhost, 127.0.0.1, ::1 issued by "tunneld development CA", which neither ` + otherCA + " nor the system's roots trust (tls: failed to verify certificate: x509: certificate signed by unknown authority",
			"tunnel: check --ca (TUNNEL_CA), which gave " + otherCA + ": it must hold the CA that signed tunneld's certificate (for tunneld --dev, the ca.pem in its --certs-dir, made anew if that directory was removed)\n",
		}},
		{"no CA", nil, []string{
			"which the system's roots do not trust (tls: failed to verify certificate: x509: certificate signed by unknown authority)\n",
			"tunnel: no --ca was given, so only the system's roots are trusted: pass the PEM file of the CA that signed tunneld's certificate with --ca FILE (TUNNEL_CA), or --dev for a local tunneld --dev\n",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{"--server", addr}, tt.args...), "http", "8080")
			code, stdout, stderr := runToEnd(t, tunnel, nil, args...)
			if code != 1 || stdout != "" {
				t.Fatalf("got exit %d, stdout %q; want 1 and nothing; stderr:\n%s", code, stdout, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr:\n%s\nwant it to contain:\n%s", stderr, w)
				}
			}
		})
	}
}

// Once a session has come up, the same certificate error is a server's
// or a network's passing state (a certificate being replaced, a captive
// portal): the client logs it and keeps retrying.
func TestProcess_CertificateChangeAfterConnectRetries(t *testing.T) {
	tunneldBin, tunnel := binaries(t)
	certs := devCertsDir(t)
	tunneld, addr := startTunneld(t, nil, "--dev", "--certs-dir", certs)
	client := start(t, tunnel, nil, "--dev", "--server", addr, "--certs-dir", certs, "--log-format", "json",
		"--retry-max", "1s", "http", "8080")
	client.waitLine(client.stdout, "a public URL", isURL)

	tunneld.stop()
	mark := client.stderr.Len()
	p := restartTunneld(t, tunneldBin, addr, devCertsDir(t)) // another CA
	line := client.waitLineFrom(client.stderr, mark, "a certificate error retried",
		logMsgWith("connect failed; retrying", "issued by \\\"tunneld development CA\\\", which neither"))
	var entry struct{ Attempt int }
	if err := json.Unmarshal([]byte(line), &entry); err != nil || entry.Attempt < 1 {
		t.Fatalf("log line %s: want an attempt count", line)
	}
	// And again: it does not stop after one.
	client.waitLineFrom(client.stderr, client.stderr.Len(), "a second retry", logMsg("connect failed; retrying"))
	client.stop()
	p.stop()
}

// --server 127.0.0.1:PORT against a certificate for names only stops at
// once (exit 1) with the names it covers and the --server to use.
func TestProcess_ServerIPAgainstNameCertificateStops(t *testing.T) {
	_, tunnel := binaries(t)
	dir := t.TempDir()
	ca := testtls.NewCA(t)
	cert := ca.Issue(t, "tunnel.test", "*.tunnel.test")
	files := map[string][]byte{"ca.pem": ca.PEM(), "cert.pem": testtls.CertPEM(cert), "key.pem": testtls.KeyPEM(t, cert)}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, addr := startTunneld(t, nil, "--domain", "tunnel.test", "--cert", filepath.Join(dir, "cert.pem"),
		"--key", filepath.Join(dir, "key.pem"), "--acme=false", "--http-listen", "", "--allow-anonymous")
	_, port, _ := net.SplitHostPort(addr)

	code, stdout, stderr := runToEnd(t, tunnel, nil, "--server", addr, "--ca", filepath.Join(dir, "ca.pem"), "http", "8080")
	want := []string{
		"tunnel: tunneld at " + addr + " presented a certificate for tunnel.test, *.tunnel.test, not for 127.0.0.1 (",
		"tunnel: connect by a name the certificate covers: --server tunnel.test:" + port + " (TUNNEL_SERVER)\n",
	}
	if code != 1 || stdout != "" {
		t.Fatalf("got exit %d, stdout %q; want 1 and nothing; stderr:\n%s", code, stdout, stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr:\n%s\nwant it to contain:\n%s", stderr, w)
		}
	}
}

// tunnel --dev run outside the directory tunneld --dev made its certs/ in
// says where it looked for the CA and what to pass.
func TestProcess_DevOutsideRepositoryRoot(t *testing.T) {
	_, tunnel := binaries(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tunnel, "--dev", "http", "8080")
	cmd.Dir = dir
	cmd.Env = baseEnv()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	want := "tunnel: --dev trusts the dev CA in --certs-dir, but certs/ca.pem does not exist (looked for " +
		filepath.Join(dir, "certs", "ca.pem") + "): run tunnel from the directory tunneld --dev was started in " +
		"(the repository root, for make demo), or pass --certs-dir DIR (TUNNEL_CERTS_DIR) or --ca FILE (TUNNEL_CA)\n"
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 || stderr.String() != want || stdout.Len() > 0 {
		t.Fatalf("got %v, stdout %q, stderr %q; want exit 1, nothing, and %q", err, stdout.String(), stderr.String(), want)
	}
}

// isDurationString reports whether a JSON value is a string that
// time.ParseDuration reads, with its unit ("850ms"), not a bare number.
func isDurationString(raw json.RawMessage) bool {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return false
	}
	_, err := time.ParseDuration(s)
	return err == nil && strings.ContainsAny(s, "nuµmsh")
}

// Durations in the client's logs carry their unit.
func TestProcess_LoggedDurationsHaveUnits(t *testing.T) {
	_, tunnel := binaries(t)
	client := start(t, tunnel, nil, "--server", testnet.ClosedAddr(t), "--log-format", "json", "http", "8080")
	line := client.waitLine(client.stderr, "a retry", logMsg("connect failed; retrying"))
	var entry map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &entry); err != nil || !isDurationString(entry["retry_in"]) {
		t.Fatalf("log line %s: want retry_in as a duration with its unit, such as \"850ms\"", line)
	}
	client.stop()
}

// A local service that nothing listens on is said at start-up, and the
// tunnel still comes up: the service may start later.
func TestProcess_WarnsWhenNothingListens(t *testing.T) {
	_, tunnel := binaries(t)
	certs := devCertsDir(t)
	tunneld, addr := startTunneld(t, nil, "--dev", "--certs-dir", certs)
	_, idlePort, _ := net.SplitHostPort(testnet.ClosedAddr(t))
	webPort := newBackend(t, "up")

	client := start(t, tunnel, nil, "--dev", "--server", addr, "--certs-dir", certs, "--log-format", "json",
		"--log-level", "debug", "http", "idle=127.0.0.1:"+idlePort, "web="+webPort)
	want := "nothing listens on 127.0.0.1:" + idlePort + " yet: visitors get an error page until it does"
	client.waitLine(client.stderr, "the warning", logMsgWith(want, `"tunnel":"idle"`))
	urls := 0
	client.waitLine(client.stdout, "two URLs", func(l string) bool {
		if isURL(l) {
			urls++
		}
		return urls == 2
	})
	if got := fetch(t, filepath.Join(certs, "ca.pem"), addr, client.stdout.Lines()[1]+"/"); got != "up /\n" {
		t.Fatalf("the tunnel to a running service: got %q", got)
	}
	client.stop()
	// The stream's duration, logged at debug when it ends (tunneld keeps
	// it open for the next request until the client stops), carries its
	// unit too.
	closed := 0
	for _, line := range client.stderr.Lines() {
		var entry map[string]json.RawMessage
		if !logMsg("stream closed")(line) {
			continue
		}
		closed++
		if err := json.Unmarshal([]byte(line), &entry); err != nil || !isDurationString(entry["duration"]) {
			t.Errorf("log line %s: want duration with its unit", line)
		}
	}
	if closed == 0 {
		t.Errorf("no \"stream closed\" line:\n%s", client.stderr)
	}
	if n := strings.Count(client.stderr.String(), "nothing listens on"); n != 1 {
		t.Errorf("got %d warnings about idle targets, want 1 (for idle only):\n%s", n, client.stderr)
	}
	tunneld.stop()
}

// Usage errors are one short line on stderr, nothing on stdout, exit 1;
// a flag given on the wrong side of "http" gets the command line fixed.
func TestProcess_UsageErrorsShortOnStderr(t *testing.T) {
	_, tunnel := binaries(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "wiki", "http", "8080"},
			"tunnel: --name is a flag of `tunnel http`, so it goes after http: tunnel http --name wiki 8080\n"},
		{[]string{"--token", "s3cret", "--name=wiki", "--dev", "http", "wiki page=8080"},
			"tunnel: --name is a flag of `tunnel http`, so it goes after http: tunnel --token *** --dev http --name=wiki 'wiki page=8080'\n"},
		{[]string{"--targets", "8080"},
			"tunnel: --targets is a flag of `tunnel http`, so it goes after http: tunnel http --targets 8080\n"},
		{[]string{"http", "--dev", "--name", "wiki", "8080"},
			"tunnel: --dev is a global flag, so it goes before http: tunnel --dev http --name wiki 8080\n"},
		{[]string{"http", "--server", "example.com:443", "8080"},
			"tunnel: --server is a global flag, so it goes before http: tunnel --server example.com:443 http 8080\n"},
		{[]string{"--bogus", "http", "8080"}, "tunnel: flag provided but not defined: --bogus; see tunnel --help\n"},
		{[]string{"http", "--bogus", "8080"}, "tunnel: flag provided but not defined: --bogus; see tunnel http --help\n"},
		{[]string{"--dev", "http", "8080", "--name", "wiki"},
			`tunnel: "--name" after a TARGET: flags go before the TARGETs (global ones before http), as in tunnel --dev http --name wiki 8080` + "\n"},
		{[]string{"--peer-timeout", "soon", "http", "8080"},
			`tunnel: invalid value "soon" for flag --peer-timeout: parse error; see tunnel --help` + "\n"},
		// A stray word where the command goes, such as a typo of http,
		// used to print the whole help on stdout and exit 0.
		{[]string{"--dev", "htp", "8080"}, `tunnel: unknown command "htp": did you mean http? see tunnel --help` + "\n"},
		{[]string{"8080"}, `tunnel: unknown command "8080"; see tunnel --help` + "\n"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runToEnd(t, tunnel, nil, tt.args...)
			if code != 1 || stdout != "" || stderr != tt.want {
				t.Fatalf("got exit %d, stdout %q, stderr %q; want 1, nothing, and %q", code, stdout, stderr, tt.want)
			}
		})
	}
}

// An invalid name stops the client before it connects, with every fault.
func TestProcess_InvalidNameEveryFault(t *testing.T) {
	_, tunnel := binaries(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"http", "--name", "Wiki_Page-", "8080"},
			`tunnel: --name: invalid name: "Wiki_Page-": uppercase 'W' at offset 0, 'P' at offset 5: names are lowercase; ` +
				`character '_' at offset 4: only a-z, 0-9 and '-' allowed; ends with '-'` + "\n"},
		{[]string{"http", "wiki=8080", "www=9090"}, `tunnel: target "www=9090": reserved name: "www"` + "\n"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			// A server that is not there: the name is refused before any dial.
			code, stdout, stderr := runToEnd(t, tunnel, nil, append([]string{"--server", testnet.ClosedAddr(t)}, tt.args...)...)
			if code != 1 || stdout != "" || stderr != tt.want {
				t.Fatalf("got exit %d, stdout %q, stderr %q; want 1, nothing, and %q", code, stdout, stderr, tt.want)
			}
		})
	}
}
