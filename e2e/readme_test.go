package e2e

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The README's runnable examples, run as written: each test takes a shell
// block from README.md, changes only what a test must (the binaries' path,
// ports that would collide, the wiki's port), runs every line the way a
// user pastes it, and checks what the README says it does. A README edit
// that breaks an example fails here, as TestProcess_READMEHelpIsCurrent
// does for the --help blocks.

// TestProcess_READMEQuickStartRuns: "To expose your own local service".
func TestProcess_READMEQuickStartRuns(t *testing.T) {
	needCurl(t)
	tunneldBin, tunnelBin := binaries(t)
	lines := readmeBlock(t, "To expose your own local service", "tunneld", "tunnel", "curl")
	dir := t.TempDir() // the "repository root" the README runs from: certs/ lands here
	wiki := newBackend(t, "wiki")

	tunneld := startCmd(t, "tunneld", readmeCommand(t, lines[0], dir, map[string]string{"bin/tunneld": tunneldBin}),
		"TUNNELD_LISTEN=127.0.0.1:0", "TUNNELD_LOG_FORMAT=json")
	addr := logAddr(tunneld, "serving")
	if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
		t.Errorf("tunneld --dev serves on %s, the README says 127.0.0.1", addr)
	}
	_, port, _ := net.SplitHostPort(addr)
	if _, err := os.Stat(filepath.Join(dir, "certs", "ca.pem")); err != nil {
		t.Errorf("the README says the dev CA is made in certs/: %v", err)
	}

	tunnel := startCmd(t, "tunnel", readmeCommand(t, lines[1], dir, map[string]string{"bin/tunnel": tunnelBin, "8080": wiki}),
		"TUNNEL_SERVER=localhost:"+port)
	url := tunnel.waitLine(tunnel.stdout, "a public URL", isURL)
	if want := "https://wiki.localhost:" + port; url != want {
		t.Errorf("tunnel printed %q, the README says %q (with the test's port)", url, want)
	}

	curl := readmeCommand(t, lines[2], dir, map[string]string{"8443": port})
	out, err := curl.Output()
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(curl.Args, " "), err)
	}
	if want := "wiki /\n"; string(out) != want {
		t.Errorf("%s: got %q, want the wiki's page %q", strings.Join(curl.Args, " "), out, want)
	}
	tunnel.stop()
	tunneld.stop()
}

// TestProcess_READMEAdminExampleRuns: the admin listener's example, and
// the fields its comment promises.
func TestProcess_READMEAdminExampleRuns(t *testing.T) {
	needCurl(t)
	tunneldBin, tunnelBin := binaries(t)
	lines := readmeBlock(t, "**Admin listener.**", "tunneld", "curl")
	dir := t.TempDir()
	fields := strings.Split(strings.TrimSpace(lines[1][strings.Index(lines[1], "JSON:")+len("JSON:"):]), ", ")
	adminPort := readmeCommand(t, lines[0], dir, nil).Args // ... --admin-listen :PORT
	listen := adminPort[len(adminPort)-1]
	if !strings.HasPrefix(listen, ":") {
		t.Fatalf("the admin example listens on %q; this test knows :PORT", listen)
	}

	tunneld := startCmd(t, "tunneld", readmeCommand(t, lines[0], dir, map[string]string{"bin/tunneld": tunneldBin, listen: ":0"}),
		"TUNNELD_LISTEN=127.0.0.1:0", "TUNNELD_LOG_FORMAT=json")
	addr := logAddr(tunneld, "serving")
	admin := adminAddr(tunneld)
	if host, _, _ := net.SplitHostPort(admin); host != "127.0.0.1" {
		t.Errorf("--admin-listen :0 bound %s; the README says :PORT alone binds 127.0.0.1", admin)
	}
	tunnel := startCmd(t, "tunnel", exec.Command(tunnelBin, "--dev", "--certs-dir", filepath.Join(dir, "certs"),
		"--server", addr, "http", "--name", "wiki", newBackend(t, "wiki")))
	tunnel.waitLine(tunnel.stdout, "a public URL", isURL)

	_, adminPortNow, _ := net.SplitHostPort(admin)
	curl := readmeCommand(t, lines[1], dir, map[string]string{strings.TrimPrefix(listen, ":"): adminPortNow})
	out, err := curl.Output()
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(curl.Args, " "), err)
	}
	var api struct{ Tunnels []map[string]any }
	if err := json.Unmarshal(out, &api); err != nil || len(api.Tunnels) != 1 {
		t.Fatalf("%s: want one tunnel in JSON, got %v:\n%s", strings.Join(curl.Args, " "), err, out)
	}
	for _, f := range fields {
		if _, ok := api.Tunnels[0][f]; !ok {
			t.Errorf("the README promises %q in /api/tunnels; got %s", f, out)
		}
	}
	tunnel.stop()
	tunneld.stop()
}

func needCurl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is not installed, and CI must run this test (.ci/run installs it)")
		}
		t.Skip("curl is not installed")
	}
}

// readmeBlock returns the non-empty lines of the first fenced code block
// after the README line that contains marker. known names the command of
// each line the test knows how to run: a block with more or fewer lines
// fails the test, as the README changed under it.
func readmeBlock(t *testing.T, marker string, known ...string) []string {
	t.Helper()
	text := readme(t)
	i := strings.Index(text, marker)
	if i < 0 {
		t.Fatalf("README.md has no %q", marker)
	}
	rest := text[i:]
	start := strings.Index(rest, "\n```")
	if start < 0 {
		t.Fatalf("README.md has no code block after %q", marker)
	}
	rest = rest[start+4:]
	rest = rest[strings.Index(rest, "\n")+1:] // past the ```sh line
	var lines []string
	for _, l := range strings.Split(rest[:strings.Index(rest, "```")], "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) != len(known) {
		t.Fatalf("README.md's block after %q has %d lines, this test knows %d (%s):\n%s",
			marker, len(lines), len(known), strings.Join(known, ", "), strings.Join(lines, "\n"))
	}
	return lines
}

// readmeCommand turns one README line into a command run in dir: the
// comment after '#' goes, and each word equal to a key of swap, or holding
// it after a ':' (a port in a URL or address), has it replaced.
func readmeCommand(t *testing.T, line, dir string, swap map[string]string) *exec.Cmd {
	t.Helper()
	if i := strings.Index(line, " #"); i >= 0 {
		line = line[:i]
	}
	words := strings.Fields(line)
	for i, w := range words {
		for from, to := range swap {
			switch {
			case w == from:
				words[i] = to
			case strings.Contains(w, ":"+from+"/") || strings.HasSuffix(w, ":"+from):
				words[i] = strings.Replace(w, ":"+from, ":"+to, 1)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, words[0], words[1:]...)
	cmd.Dir = dir
	cmd.Env = baseEnv()
	return cmd
}
