package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/internal/testnet"
)

// newBackend starts a local web service that answers with greeting, and
// returns its port.
func newBackend(t *testing.T, greeting string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n", greeting, r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func isURL(line string) bool { return strings.HasPrefix(line, "https://") }

func TestProcess_TunnelServesLocalPage(t *testing.T) {
	tunneld, addr, certs := startDevTunneld(t, nil)
	_, port, _ := net.SplitHostPort(addr)
	backendPort := newBackend(t, "hello from the backend")

	client, url := startDevClient(t, nil, addr, certs,
		"http", "--name", "web", backendPort)
	if want := "https://web.localhost:" + port; url != want {
		t.Fatalf("got public URL %q, want %q", url, want)
	}
	want := "hello from the backend /page\n"

	t.Run("curl", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("curl is not installed, and CI must run this test (.ci/run installs it)")
			}
			t.Skip("curl is not installed")
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, "curl", "-sS", "--fail", "--cacert", filepath.Join(certs, "ca.pem"),
			"--resolve", "web.localhost:"+port+":127.0.0.1", url+"/page").CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s/page: %v\n%s", url, err, out)
		}
		if string(out) != want {
			t.Fatalf("curl got %q, want %q", out, want)
		}
	})
	t.Run("go client", func(t *testing.T) {
		if got := fetch(t, filepath.Join(certs, "ca.pem"), addr, url+"/page"); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})

	client.stop()
	if got := client.stdout.Lines(); !slices.Equal(got, []string{url}) {
		t.Errorf("tunnel stdout: got %q, want only the URL", got)
	}
	tunneld.stop()
	if got := tunneld.stdout.String(); got != "" {
		t.Errorf("tunneld stdout: got %q, want nothing (logs go to stderr)", got)
	}
}

func TestProcess_SeveralTunnelsOneSession(t *testing.T) {
	_, tunnel := binaries(t)
	tunneld, addr, certs := startDevTunneld(t, nil)
	_, port, _ := net.SplitHostPort(addr)
	wikiPort := newBackend(t, "wiki")
	blogPort := newBackend(t, "blog")

	client := start(t, tunnel, nil, "--dev", "--server", addr, "--certs-dir", certs,
		"http", "wiki="+wikiPort, "blog=127.0.0.1:"+blogPort)
	urls := 0
	client.waitLine(client.stdout, "a second URL", func(line string) bool {
		if isURL(line) {
			urls++
		}
		return urls == 2
	})
	want := []string{"https://wiki.localhost:" + port, "https://blog.localhost:" + port}
	if got := client.stdout.Lines(); !slices.Equal(got, want) {
		t.Fatalf("got URLs %q, want %q", got, want)
	}
	for i, name := range []string{"wiki", "blog"} {
		if got := fetch(t, filepath.Join(certs, "ca.pem"), addr, want[i]+"/"); got != name+" /\n" {
			t.Errorf("%s: got %q, want %q", name, got, name+" /\n")
		}
	}
	client.stop()
	tunneld.stop()
}

// TestProcess_Tokens runs tunneld as in production, without --dev: a static
// certificate, a tokens file written by "tunneld token add" and a shared
// token from TUNNELD_TOKEN, no anonymous clients.
func TestProcess_Tokens(t *testing.T) {
	tunneldBin, tunnel := binaries(t)
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")

	code, stdout, stderr := runToEnd(t, tunneldBin, nil, "certs", "--certs-dir", certs)
	if code != 0 || stdout != filepath.Join(certs, "ca.pem")+"\n" {
		t.Fatalf("tunneld certs: exit %d, stdout %q, want 0 and the CA path; stderr:\n%s", code, stdout, stderr)
	}
	ca := filepath.Join(certs, "ca.pem")

	tokensFile := filepath.Join(dir, "tokens.json")
	code, stdout, stderr = runToEnd(t, tunneldBin, []string{"TUNNELD_TOKENS_FILE=" + tokensFile},
		"token", "add", "--label", "ci", "--name", "web")
	fileToken := strings.TrimSuffix(stdout, "\n")
	if code != 0 || fileToken == "" || strings.ContainsAny(fileToken, " \n") {
		t.Fatalf("token add: exit %d, stdout %q, want 0 and one token line; stderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "only its SHA-256 was stored") {
		t.Errorf("token add stderr: got %q, want a note that only the hash was stored", stderr)
	}
	if data, err := os.ReadFile(tokensFile); err != nil || strings.Contains(string(data), fileToken) {
		t.Fatalf("tokens file: err %v; it must exist and not contain the token:\n%s", err, data)
	}

	tunneld, addr := startTunneld(t, []string{"TUNNELD_TOKEN=right-shared-secret"},
		"--domain", "localhost", "--cert", filepath.Join(certs, "localhost.pem"), "--key", filepath.Join(certs, "localhost-key.pem"),
		"--tokens-file", tokensFile, "--acme=false", "--http-listen", "")
	clientArgs := func(name string) []string {
		return []string{"--server", addr, "--ca", ca, "http", "--name", name, "8080"}
	}

	for _, tt := range []struct {
		name, token, tunnel string
	}{
		{"shared token", "right-shared-secret", "anything"},
		{"file token", fileToken, "web"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client := start(t, tunnel, []string{"TUNNEL_TOKEN=" + tt.token}, clientArgs(tt.tunnel)...)
			client.waitLine(client.stdout, "a public URL", isURL)
			client.stop()
		})
	}

	for _, tt := range []struct {
		name, token, tunnel, wantStderr string
	}{
		{"wrong token", "wrong", "web", "tunnel: server refused: bad_token: "},
		{"no token", "", "web", "tunnel: server refused: bad_token: "},
		{"name not allowed", fileToken, "other", "tunnel: server refused: name_not_allowed: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runToEnd(t, tunnel, []string{"TUNNEL_TOKEN=" + tt.token}, clientArgs(tt.tunnel)...)
			if code != 3 || !strings.Contains(stderr, tt.wantStderr) || stdout != "" {
				t.Fatalf("got exit %d, stdout %q, stderr %q; want 3, nothing, and %q", code, stdout, stderr, tt.wantStderr)
			}
			if strings.Contains(stderr, fileToken) {
				t.Fatalf("stderr shows the token: %q", stderr)
			}
		})
	}
	tunneld.stop()
	if strings.Contains(tunneld.stderr.String(), "right-shared-secret") || strings.Contains(tunneld.stderr.String(), fileToken) {
		t.Errorf("tunneld logged a token:\n%s", tunneld.stderr)
	}
}

func TestProcess_TunneldRefusesToStart(t *testing.T) {
	tunneld, _ := binaries(t)
	certs := t.TempDir()
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no domain", nil, "--domain (TUNNELD_DOMAIN) is required"},
		{"no certificate", []string{"--domain", "example.com", "--acme=false"}, "pass --cert and --key"},
		{"cert without key", []string{"--domain", "example.com", "--cert", "c.pem"}, "--cert and --key go together"},
		{"dev with cert", []string{"--dev", "--cert", "c.pem", "--key", "k.pem"}, "do not go together"},
		{"no tokens", []string{"--domain", "example.com", "--cert", "c.pem", "--key", "k.pem"}, "no tokens configured"},
		{"bad listen address", []string{"--dev", "--certs-dir", certs, "--listen", "127.0.0.1:99999"}, "listen on 127.0.0.1:99999"},
		{"bad log format", []string{"--dev", "--log-format", "xml"}, "--log-format"},
		{"stray argument", []string{"--dev", "serve"}, `unexpected argument "serve"`},
		{"public admin without token", []string{"--dev", "--certs-dir", certs, "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"}, "TUNNELD_ADMIN_TOKEN is required"},
		{"stream window too small", []string{"--dev", "--certs-dir", certs, "--listen", "127.0.0.1:0", "--stream-window", "64KiB"}, "--stream-window"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runToEnd(t, tunneld, nil, tt.args...)
			if code != 1 || !strings.Contains(stderr, tt.want) {
				t.Fatalf("got exit %d, stderr %q; want 1 and %q", code, stderr, tt.want)
			}
		})
	}
}

func TestProcess_TunnelErrorsExit1(t *testing.T) {
	_, tunnel := binaries(t)
	closedAddr := testnet.ClosedAddr(t)

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no server", []string{"http", "8080"}, "--server (TUNNEL_SERVER) is required"},
		{"no target", []string{"--dev", "http"}, "no TARGET"},
		{"bad target", []string{"--dev", "http", "web:eighty"}, `target "web:eighty"`},
		{"name with two targets", []string{"--dev", "http", "--name", "web", "80", "81"}, "single TARGET"},
		{"missing CA", []string{"--server", closedAddr, "--ca", "/nonexistent/ca.pem", "http", "80"}, "--ca"},
		{"bad config file", []string{"--server", closedAddr, "--config", "/nonexistent/tunnel.json", "http", "80"}, "--config"},
		{"bad peer timeout", []string{"--server", closedAddr, "--peer-timeout", "0s", "http", "80"}, "must be positive"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runToEnd(t, tunnel, nil, tt.args...)
			if code != 1 || !strings.Contains(stderr, tt.want) || stdout != "" {
				t.Fatalf("got exit %d, stdout %q, stderr %q; want 1, nothing, and %q", code, stdout, stderr, tt.want)
			}
		})
	}
}

// TestProcess_HelpShowsEnvVarsNotSecrets checks that every flag in every
// --help names its env var, and that a secret in the environment never
// shows up as a default.
func TestProcess_HelpShowsEnvVarsNotSecrets(t *testing.T) {
	tunneld, tunnel := binaries(t)
	const secret = "s3cret-in-the-env"
	env := []string{"TUNNELD_TOKEN=" + secret, "TUNNEL_TOKEN=" + secret}
	for _, tt := range []struct {
		bin    string
		args   []string
		prefix string
	}{
		{tunneld, []string{"--help"}, "TUNNELD_"},
		{tunneld, []string{"token", "add", "--help"}, "TUNNELD_"},
		{tunneld, []string{"certs", "--help"}, "TUNNELD_"},
		{tunnel, []string{"--help"}, "TUNNEL_"},
		{tunnel, []string{"http", "--help"}, "TUNNEL_"},
	} {
		t.Run(filepath.Base(tt.bin)+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runToEnd(t, tt.bin, env, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d; stderr:\n%s", code, stderr)
			}
			if strings.Contains(stdout+stderr, secret) {
				t.Fatalf("help shows the secret from the environment:\n%s", stdout)
			}
			flags := 0
			for _, line := range strings.Split(stdout, "\n") {
				line = strings.TrimSpace(line)
				if !strings.HasPrefix(line, "--") || strings.HasPrefix(line, "--help") || strings.HasPrefix(line, "--version") {
					continue
				}
				flags++
				if !strings.Contains(line, "[$"+tt.prefix) {
					t.Errorf("flag without a %s env var: %s", tt.prefix, line)
				}
			}
			if flags == 0 {
				t.Fatalf("no flags found in:\n%s", stdout)
			}
		})
	}
}

// TestProcess_READMEHelpIsCurrent checks that each "$ tunneld ..." or
// "$ tunnel ..." block in README.md shows exactly what that command prints.
func TestProcess_READMEHelpIsCurrent(t *testing.T) {
	tunneld, tunnel := binaries(t)
	blocks := 0
	for _, block := range strings.Split(readme(t), "```text\n$ ")[1:] {
		cmdline, rest, _ := strings.Cut(block, "\n")
		want, _, ok := strings.Cut(rest, "```")
		args := strings.Fields(cmdline)
		bin := map[string]string{"tunneld": tunneld, "tunnel": tunnel}[args[0]]
		if !ok || bin == "" {
			continue
		}
		blocks++
		t.Run(cmdline, func(t *testing.T) {
			code, got, stderr := runToEnd(t, bin, nil, args[1:]...)
			if code != 0 {
				t.Fatalf("exit %d; stderr:\n%s", code, stderr)
			}
			if got != want {
				t.Errorf("README.md shows:\n%s\nbut %s prints:\n%s", want, cmdline, got)
			}
		})
	}
	if blocks == 0 {
		t.Fatal("no help blocks found in README.md")
	}
}

// TestProcess_TunneldAdminWithPlainListener: --admin-listen used to take
// over tunneld's main loop, so --http-listen was bound but never served (and
// SIGHUP not handled). All listeners must serve together.
func TestProcess_TunneldAdminWithPlainListener(t *testing.T) {
	tunneld, addr, certs := startDevTunneld(t, nil, "--admin-listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0", "--http-redirect=false")
	admin := adminAddr(tunneld)
	plain := logAddr(tunneld, "serving plain http")
	backendPort := newBackend(t, "plain")
	client, _ := startDevClient(t, nil, addr, certs,
		"http", "--name", "web", backendPort)

	hc := &http.Client{Timeout: waitTimeout}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest("GET", "http://"+plain+"/page", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "web.localhost"
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET over the plain listener: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "plain /page\n" {
		t.Errorf("plain listener: got %d %q, want 200 \"plain /page\\n\"", resp.StatusCode, body)
	}
	resp, err = hc.Get("http://" + admin + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("admin /healthz: got %d", resp.StatusCode)
	}
	client.stop()
	tunneld.stop()
}

// TestProcess_TunnelMetrics: --metrics-listen serves the client's runtime
// and stream counters.
func TestProcess_TunnelMetrics(t *testing.T) {
	tunneld, addr, certs := startDevTunneld(t, nil)
	backendPort := newBackend(t, "metered")
	client, url := startDevClient(t, nil, addr, certs,
		"--metrics-listen", "127.0.0.1:0", "http", "--name", "web", backendPort)
	metrics := logAddr(client, "metrics serving")
	if got := fetch(t, filepath.Join(certs, "ca.pem"), addr, url+"/x"); got != "metered /x\n" {
		t.Fatalf("page: got %q", got)
	}
	hc := &http.Client{Timeout: waitTimeout}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"go_goroutines ", `tunnel_streams_total{result="ok",tunnel="web"} `, "process_resident_memory_bytes "} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	client.stop()
	tunneld.stop()
}

func TestProcess_TunneldAdmin(t *testing.T) {
	certs := t.TempDir()
	tunneld, _ := startTunneld(t, nil, "--dev", "--certs-dir", certs, "--admin-listen", "127.0.0.1:0")
	addr := adminAddr(tunneld)
	hc := &http.Client{Timeout: waitTimeout}
	defer hc.CloseIdleConnections()
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/api/tunnels", "/"} {
		resp, err := hc.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: got %d, want 200", path, resp.StatusCode)
		}
	}
	tunneld.stop()
}
