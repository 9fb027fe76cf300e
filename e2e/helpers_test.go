package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
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
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/internal/testhttp"
)

// waitTimeout bounds every wait in these tests. Generous, because CI
// machines are small and the binaries may be race-instrumented.
const waitTimeout = 20 * time.Second

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	// goleak.Cleanup replaces goleak's own os.Exit: the function gets the
	// exit code (1 when a goroutine leaked) and must exit with it, or the
	// package reports ok after printing the leak.
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if binDir != "" {
			os.RemoveAll(binDir)
		}
		os.Exit(code)
	}))
}

// binaries builds tunneld and tunnel once per test run, the way make build
// does but without stripping, and returns the directory holding them.
func binaries(t *testing.T) (tunneld, tunnel string) {
	t.Helper()
	buildOnce.Do(func() {
		var root string
		if root, buildErr = findModuleRoot(); buildErr != nil {
			return
		}
		if binDir, buildErr = os.MkdirTemp("", "tunnel-e2e-bin-"); buildErr != nil {
			return
		}
		args := []string{"build", "-o", binDir + string(filepath.Separator)}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/tunneld", "./cmd/tunnel")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go %s: %w\n%s", strings.Join(cmd.Args[1:], " "), err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "tunneld"), filepath.Join(binDir, "tunnel")
}

// findModuleRoot returns the directory of the module's go.mod: where the
// binaries are built from, and where README.md and scripts/ are.
func findModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// moduleRoot is findModuleRoot for a test.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := findModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// readme returns the text of README.md.
func readme(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(moduleRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// baseEnv is the test's environment without TUNNEL_* and TUNNELD_*
// variables, so a developer's own settings cannot change the results.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TUNNEL_") && !strings.HasPrefix(kv, "TUNNELD_") && !strings.HasPrefix(kv, "GORACE=") {
			env = append(env, kv)
		}
	}
	if raceEnabled {
		// A race-instrumented binary sleeps 1 s at exit by default, to let
		// late races be reported; our processes have stopped their
		// goroutines by then, and ~20 of them would add 20 s. A race still
		// makes the process exit 66, which fails the test.
		env = append(env, "GORACE=atexit_sleep_ms=50")
	}
	return env
}

// process is one started binary. Its output is collected line by line; it
// is killed at the end of the test if still running.
type process struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdout *lineBuffer
	stderr *lineBuffer
	done   chan struct{} // closed once the process has exited and its output is read
}

// start runs bin with args and env (on top of baseEnv).
func start(t *testing.T, bin string, env []string, args ...string) *process {
	t.Helper()
	return startCmd(t, filepath.Base(bin), exec.Command(bin, args...), env...)
}

// startCmd is start for a command prepared by the caller (its own
// directory, process group, ...): env adds to cmd.Env, or to baseEnv.
func startCmd(t *testing.T, name string, cmd *exec.Cmd, env ...string) *process {
	t.Helper()
	if cmd.Env == nil {
		cmd.Env = baseEnv()
	}
	cmd.Env = append(cmd.Env, env...)
	p := &process{t: t, name: name, cmd: cmd, stdout: newLineBuffer(), stderr: newLineBuffer(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	cmd.WaitDelay = waitTimeout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go p.wait()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s %s stderr:\n%s", name, strings.Join(cmd.Args[1:], " "), p.stderr)
		}
	})
	return p
}

// wait is the goroutine that owns cmd.Wait.
func (p *process) wait() {
	p.cmd.Wait() // the exit status is read from cmd.ProcessState
	close(p.done)
}

// waitLine waits for a line of buf (p.stdout or p.stderr) that match
// accepts, and returns it. It fails the test if the process exits first or
// nothing matches within waitTimeout.
func (p *process) waitLine(buf *lineBuffer, what string, match func(string) bool) string {
	p.t.Helper()
	return p.waitLineFrom(buf, 0, what, match)
}

// waitLineFrom is waitLine looking only at lines from index next on (see
// lineBuffer.Len).
func (p *process) waitLineFrom(buf *lineBuffer, next int, what string, match func(string) bool) string {
	p.t.Helper()
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	for {
		lines, changed := buf.since(next)
		for _, l := range lines {
			if match(l) {
				return l
			}
		}
		next += len(lines)
		select {
		case <-changed:
		case <-p.done:
			if lines, _ := buf.since(next); len(lines) > 0 {
				continue // the last lines arrived with the exit
			}
			p.t.Fatalf("%s exited (%v) before printing %s", p.name, p.cmd.ProcessState, what)
		case <-timeout.C:
			p.t.Fatalf("%s printed no %s within %v", p.name, what, waitTimeout)
		}
	}
}

// exitCode waits for the process to exit and returns its exit code (-1
// if a signal killed it).
func (p *process) exitCode() int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(waitTimeout):
		p.t.Fatalf("%s did not exit within %v", p.name, waitTimeout)
		panic("unreachable")
	}
}

// signal sends sig to the process.
func (p *process) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s %v: %v", p.name, sig, err)
	}
}

// stop sends SIGTERM and checks that the process exits 0.
func (p *process) stop() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		p.t.Fatalf("%s exited %d after SIGTERM, want 0", p.name, code)
	}
}

// startTunneld starts tunneld on a free loopback port, waits for its
// "serving" log line and returns it with the address it reports.
func startTunneld(t *testing.T, env []string, args ...string) (*process, string) {
	t.Helper()
	tunneld, _ := binaries(t)
	if !slices.Contains(args, "--listen") {
		args = append([]string{"--listen", "127.0.0.1:0"}, args...)
	}
	args = append([]string{"--log-format", "json"}, args...)
	p := start(t, tunneld, env, args...)
	return p, logAddr(p, "serving")
}

// startDevTunneld starts tunneld --dev, with args after, on a fresh
// certificate directory, and returns it, its address and that directory
// (the dev CA is ca.pem in it).
func startDevTunneld(t *testing.T, env []string, args ...string) (p *process, addr, certs string) {
	t.Helper()
	certs = t.TempDir()
	p, addr = startTunneld(t, env, append([]string{"--dev", "--certs-dir", certs}, args...)...)
	return p, addr, certs
}

// startDevClient starts tunnel --dev against server, trusting the dev CA in
// certs and logging JSON, with args after (more flags, then the command),
// and returns it once it prints its first public URL, with that URL.
func startDevClient(t *testing.T, env []string, server, certs string, args ...string) (*process, string) {
	t.Helper()
	_, tunnel := binaries(t)
	p := start(t, tunnel, env, append([]string{"--dev", "--server", server, "--certs-dir", certs, "--log-format", "json"}, args...)...)
	return p, p.waitLine(p.stdout, "a public URL", isURL)
}

// runToEnd runs bin to completion and returns its exit code and output.
func runToEnd(t *testing.T, bin string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(baseEnv(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run %s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// fetch GETs url with a Go client that trusts the CA in caFile and dials
// addr whatever the URL's host (Go does not resolve *.localhost), and
// returns the body of a 200 response.
func fetch(t *testing.T, caFile, addr, url string) string {
	t.Helper()
	return fetchWithin(t, waitTimeout, caFile, addr, url)
}

// fetchWithin is fetch with a time limit of its own.
func fetchWithin(t *testing.T, limit time.Duration, caFile, addr, url string) string {
	t.Helper()
	tr := visitorTransport(t, caFile, addr)
	defer tr.CloseIdleConnections()
	status, body := testhttp.Get(t, &http.Client{Transport: tr, Timeout: limit}, url)
	if status != http.StatusOK {
		t.Fatalf("GET %s: got %d (%q), want 200", url, status, body)
	}
	return body
}

// visitorTransport is an HTTP transport that trusts the CA in caFile and
// dials addr for every URL, as DNS for *.localhost would. The caller
// closes its idle connections.
func visitorTransport(t *testing.T, caFile, addr string) *http.Transport {
	t.Helper()
	return &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool(t, caFile)},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// pool returns a pool holding the PEM certificates in file.
func pool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", file)
	}
	return p
}

// lineBuffer is an io.Writer that keeps what is written to it, split into
// lines, and says when a line arrives. Safe for concurrent use.
type lineBuffer struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	lines   []string
	changed chan struct{} // closed when a line arrives, then replaced
}

func newLineBuffer() *lineBuffer { return &lineBuffer{changed: make(chan struct{})} }

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.all.Write(p)
	b.partial = append(b.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		b.lines = append(b.lines, string(b.partial[:i]))
		b.partial = b.partial[i+1:]
		added = true
	}
	if added {
		close(b.changed)
		b.changed = make(chan struct{})
	}
	return len(p), nil
}

// since returns the complete lines from index next on, and a channel closed
// when more arrive.
func (b *lineBuffer) since(next int) ([]string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines[next:]...), b.changed
}

// Len is the number of complete lines so far.
func (b *lineBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.lines)
}

// Lines returns every complete line so far.
func (b *lineBuffer) Lines() []string {
	lines, _ := b.since(0)
	return lines
}

func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.all.String()
}

// adminAddr waits for tunneld's "admin serving" log line and returns the
// address the admin listener bound.
func adminAddr(p *process) string { return logAddr(p, "admin serving") }

// logAddr waits for p's JSON log line with the given message and returns
// its addr field (a listener's bound address).
func logAddr(p *process, message string) string {
	var addr string
	p.waitLine(p.stderr, fmt.Sprintf("the %q log line", message), func(line string) bool {
		var entry struct{ Message, Addr string }
		if json.Unmarshal([]byte(line), &entry) != nil || entry.Message != message {
			return false
		}
		addr = entry.Addr
		return true
	})
	return addr
}
