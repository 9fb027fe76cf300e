package main

// Process tests: the built tunnel and tunneld binaries, as a user runs
// them, for what only a real process shows (signals, exit codes, stderr).
// The helpers are a small copy of e2e's.

import (
	"bufio"
	"bytes"
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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// waitTimeout bounds every wait on a process: generous, as the binaries
// may be race-instrumented on a small machine.
const waitTimeout = 20 * time.Second

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds tunneld and tunnel once per test run and returns their
// paths; TestMain removes them.
func binaries(t *testing.T) (tunneld, tunnel string) {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		if binDir, buildErr = os.MkdirTemp("", "tunnel-cmd-bin-"); buildErr != nil {
			return
		}
		args := []string{"build", "-o", binDir + string(filepath.Separator)}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/tunneld", "./cmd/tunnel")...)
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go %s: %w\n%s", strings.Join(cmd.Args[1:], " "), err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "tunneld"), filepath.Join(binDir, "tunnel")
}

// process is one started binary, its output collected line by line; it is
// killed at the end of the test if still running.
type process struct {
	t              *testing.T
	name           string
	cmd            *exec.Cmd
	stdout, stderr *lineBuffer
	done           chan struct{} // closed once it has exited
}

// start runs bin with args, and with env on top of the test's environment
// without its TUNNEL_* and TUNNELD_* variables.
func start(t *testing.T, bin string, env []string, args ...string) *process {
	t.Helper()
	p := &process{t: t, name: filepath.Base(bin), cmd: exec.Command(bin, args...),
		stdout: newLineBuffer(), stderr: newLineBuffer(), done: make(chan struct{})}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TUNNEL_") && !strings.HasPrefix(kv, "TUNNELD_") && !strings.HasPrefix(kv, "GORACE=") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	// A race-instrumented binary sleeps 1 s at exit unless told not to; a
	// race still makes it exit 66, which fails the test.
	p.cmd.Env = append(append(p.cmd.Env, "GORACE=atexit_sleep_ms=50"), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.WaitDelay = waitTimeout
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go p.wait()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s %s stderr:\n%s", p.name, strings.Join(args, " "), p.stderr)
		}
	})
	return p
}

// wait is the goroutine that owns cmd.Wait.
func (p *process) wait() {
	p.cmd.Wait() // the exit status is read from cmd.ProcessState
	close(p.done)
}

// waitLine waits up to limit for a line of buf that match accepts and
// returns it; it fails the test if the process exits first.
func (p *process) waitLine(buf *lineBuffer, limit time.Duration, what string, match func(string) bool) string {
	p.t.Helper()
	timeout := time.NewTimer(limit)
	defer timeout.Stop()
	for next := 0; ; {
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
				continue // the last lines came with the exit
			}
			p.t.Fatalf("%s exited (%v) before printing %s", p.name, p.cmd.ProcessState, what)
		case <-timeout.C:
			p.t.Fatalf("%s printed no %s within %v", p.name, what, limit)
		}
	}
}

// exitCode waits up to limit for the process to exit and returns its code.
func (p *process) exitCode(limit time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		p.t.Fatalf("%s did not exit within %v", p.name, limit)
		panic("unreachable")
	}
}

func (p *process) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s: %v", p.name, err)
	}
}

// lineBuffer keeps what is written to it as lines, and says when one
// arrives. Safe for concurrent use.
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

// since returns the lines from index next on, and a channel closed when
// more arrive.
func (b *lineBuffer) since(next int) ([]string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines[next:]...), b.changed
}

func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.all.String()
}

// logEntry is what the tests read of a JSON log line.
type logEntry struct{ Level, Message, Addr string }

func parseEntry(line string) (logEntry, bool) {
	var e logEntry
	return e, json.Unmarshal([]byte(line), &e) == nil
}

// devTunneld starts tunneld --dev on a free loopback port with its dev CA
// made in a new directory, and returns it, its address and the directory.
func devTunneld(t *testing.T) (p *process, addr, certs string) {
	t.Helper()
	bin, _ := binaries(t)
	certs = t.TempDir()
	p = start(t, bin, nil, "--dev", "--listen", "127.0.0.1:0", "--certs-dir", certs, "--log-format", "json", "--offline-wait", "0s")
	p.waitLine(p.stderr, waitTimeout, `the "serving" log line`, func(l string) bool {
		e, ok := parseEntry(l)
		if ok && e.Message == "serving" {
			addr = e.Addr
		}
		return addr != ""
	})
	return p, addr, certs
}

// devTunnel starts bare "tunnel" configured by its environment alone
// (TUNNEL_TARGETS, which also checks that bare tunnel runs with it) against
// a devTunneld, and returns it with its public URL.
func devTunnel(t *testing.T, addr, certs, targets string, env ...string) (*process, string) {
	t.Helper()
	_, bin := binaries(t)
	p := start(t, bin, append([]string{"TUNNEL_DEV=true", "TUNNEL_SERVER=" + addr, "TUNNEL_CERTS_DIR=" + certs,
		"TUNNEL_TARGETS=" + targets, "TUNNEL_LOG_FORMAT=json"}, env...))
	url := p.waitLine(p.stdout, waitTimeout, "a public URL", func(l string) bool { return strings.HasPrefix(l, "https://") })
	return p, url
}

// visitor GETs url through tunneld at addr, trusting the dev CA, and
// returns the response once its headers are in.
func visitor(t *testing.T, addr, certs, url string) *http.Response {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr) // Go does not resolve *.localhost
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr, Timeout: waitTimeout}).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, want 200", url, resp.Status)
	}
	return resp
}

// hangingService is a local service that answers a request with headers and
// the start of a long body, then neither sends more nor closes: a
// transfer that never finishes. Its connections close when the test ends.
func hangingService(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn // the accept loop's; read after it is done
	var answering sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
		answering.Wait()
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			answering.Add(1)
			go func() {
				defer answering.Done()
				answerPartly(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// answerPartly reads a request's head and sends the start of a long
// response: more than tunneld buffers before it flushes to the visitor.
func answerPartly(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if line == "\r\n" {
			break
		}
	}
	io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
	c.Write(bytes.Repeat([]byte("x"), 64<<10))
}

// rawLibraryLines are stderr lines that did not go through our logger:
// yamux's own marks.
func rawLibraryLines(stderr string) []string {
	var bad []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "[ERR]") || strings.HasPrefix(l, "[WARN]") {
			bad = append(bad, l)
		}
	}
	return bad
}

// TestProcess_CtrlCDrainsThenQuits: with a download in flight, the first
// Ctrl-C says at once what the client waits for, the second exits at once
// with 130, and no library line reaches stderr raw.
func TestProcess_CtrlCDrainsThenQuits(t *testing.T) {
	tunneld, addr, certs := devTunneld(t)
	client, url := devTunnel(t, addr, certs, "ctrlc="+hangingService(t))
	resp := visitor(t, addr, certs, url)
	// The body's first bytes: the stream is open at the client.
	if _, err := io.ReadFull(resp.Body, make([]byte, 9)); err != nil {
		t.Fatalf("read the download's first bytes: %v", err)
	}

	client.signal(syscall.SIGINT)
	// Promptly: well before the drain timeout (10 s) would end it.
	const notice = "tunnel: draining 1 stream (up to 10s); Ctrl-C again to quit"
	client.waitLine(client.stderr, 5*time.Second, fmt.Sprintf("%q", notice), func(l string) bool { return l == notice })
	client.signal(syscall.SIGINT)
	if code := client.exitCode(5 * time.Second); code != 130 {
		t.Fatalf("exit %d after a second SIGINT, want 130", code)
	}
	if bad := rawLibraryLines(client.stderr.String()); len(bad) > 0 {
		t.Errorf("raw library lines on stderr: %q", bad)
	}
	for _, l := range strings.Split(client.stderr.String(), "\n") {
		if e, ok := parseEntry(l); ok && (e.Level == "warn" || e.Level == "error") && strings.Contains(e.Message, "yamux") {
			t.Errorf("a yamux line at %s while stopping: %s", e.Level, l)
		}
	}
	tunneld.signal(syscall.SIGTERM)
	if code := tunneld.exitCode(waitTimeout); code != 0 {
		t.Errorf("tunneld exit %d after SIGTERM, want 0", code)
	}
}

// TestProcess_DrainEndsAtItsTimeout: the local service never finishes the
// download nor closes; after one SIGINT the client still exits 0 by its
// drain timeout.
func TestProcess_DrainEndsAtItsTimeout(t *testing.T) {
	_, addr, certs := devTunneld(t)
	const drain = time.Second
	client, url := devTunnel(t, addr, certs, "hang="+hangingService(t), "TUNNEL_DRAIN_TIMEOUT="+drain.String())
	resp := visitor(t, addr, certs, url)
	if _, err := io.ReadFull(resp.Body, make([]byte, 9)); err != nil {
		t.Fatalf("read the download's first bytes: %v", err)
	}

	sent := time.Now()
	client.signal(syscall.SIGINT)
	const notice = "tunnel: draining 1 stream (up to 1s); Ctrl-C again to quit"
	client.waitLine(client.stderr, 5*time.Second, fmt.Sprintf("%q", notice), func(l string) bool { return l == notice })
	if code := client.exitCode(drain + 10*time.Second); code != 0 {
		t.Fatalf("exit %d after one SIGINT, want 0", code)
	}
	if took := time.Since(sent); took < drain {
		t.Errorf("exited %v after SIGINT, before the drain timeout %v: the download was not given its time", took, drain)
	}
	client.waitLine(client.stderr, time.Second, "the drain timeout's log line", func(l string) bool {
		e, _ := parseEntry(l)
		return e.Message == "drain timeout; closing in-flight streams"
	})
	if bad := rawLibraryLines(client.stderr.String()); len(bad) > 0 {
		t.Errorf("raw library lines on stderr: %q", bad)
	}
}

// TestProcess_CtrlCWithNothingInFlightExitsAtOnce: with no stream open, the
// first SIGINT ends the client at once, with exit code 0 and no notice.
func TestProcess_CtrlCWithNothingInFlightExitsAtOnce(t *testing.T) {
	_, addr, certs := devTunneld(t)
	client, _ := devTunnel(t, addr, certs, "idle="+hangingService(t))
	client.signal(syscall.SIGINT)
	// Well within the 10 s drain timeout.
	if code := client.exitCode(5 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGINT, want 0", code)
	}
	if out := client.stderr.String(); strings.Contains(out, "draining") {
		t.Errorf("a drain notice with nothing to drain:\n%s", out)
	}
}
