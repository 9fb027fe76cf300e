package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// roleEnv names the role a re-executed harness binary plays (see roles in
// main.go). The harness starts itself for the pipe baseline and the idle
// session holder so that their CPU and memory are their own.
const roleEnv = "TUNNEL_BENCH_ROLE"

// proc is one started process whose stdout lines are handed out one by one
// and whose stderr is kept for error messages.
type proc struct {
	name   string
	cmd    *exec.Cmd
	lines  chan string
	stderr *tailBuffer
	stdin  io.WriteCloser
	done   chan struct{}
	err    error
}

// startProc starts bin with args; env is added to the harness's own.
func startProc(name, bin string, env []string, args ...string) (*proc, error) {
	return startProcTap(name, bin, env, nil, args...)
}

// startProcTap is startProc that also copies the process's whole stderr to
// tap (nil: none), for counting what it logs.
func startProcTap(name, bin string, env []string, tap io.Writer, args ...string) (*proc, error) {
	p := &proc{
		name:   name,
		cmd:    exec.Command(bin, args...),
		lines:  make(chan string, 64),
		stderr: &tailBuffer{max: 64 << 10},
		done:   make(chan struct{}),
	}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.stderr
	if tap != nil {
		p.cmd.Stderr = io.MultiWriter(p.stderr, tap)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go p.readLoop(out)
	return p, nil
}

// readLoop owns the stdout pipe and reaps the process once it closes.
func (p *proc) readLoop(out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		select {
		case p.lines <- sc.Text():
		default: // nobody is waiting for chatter
		}
	}
	p.err = p.cmd.Wait()
	close(p.done)
}

// line waits up to d for the next stdout line.
func (p *proc) line(d time.Duration) (string, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case l := <-p.lines:
		return l, nil
	case <-p.done:
		return "", fmt.Errorf("%s exited (%v): %s", p.name, p.err, p.stderr)
	case <-t.C:
		return "", fmt.Errorf("%s: no output within %v: %s", p.name, d, p.stderr)
	}
}

// stop asks the process to end (SIGTERM, and stdin closed for our own
// roles), waits up to 10 s, then kills it.
func (p *proc) stop() {
	p.stdin.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// kill ends the process at once (SIGKILL) and waits for it: for processes
// whose graceful end (draining what an attack left in flight) is not
// measured and would only make the run longer.
func (p *proc) kill() {
	p.stdin.Close()
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = b.buf[len(b.buf)-b.max:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// waitServing reads tunneld's JSON log (stderr) until the "serving" line and
// returns the bound address.
func waitServing(ctx context.Context, p *proc) (string, error) {
	return waitLogAddr(ctx, p, "serving")
}

// waitLogAddr waits for p's JSON log line whose message is msg and returns
// its addr field.
func waitLogAddr(ctx context.Context, p *proc, msg string) (string, error) {
	for {
		for _, l := range bytes.Split([]byte(p.stderr.String()), []byte("\n")) {
			var m struct {
				Message string `json:"message"`
				Addr    string `json:"addr"`
			}
			if json.Unmarshal(l, &m) == nil && m.Message == msg && m.Addr != "" {
				return m.Addr, nil
			}
		}
		select {
		case <-p.done:
			return "", fmt.Errorf("%s exited (%v): %s", p.name, p.err, p.stderr)
		case <-ctx.Done():
			return "", fmt.Errorf("%s: no %q log line: %w: %s", p.name, msg, ctx.Err(), p.stderr)
		case <-time.After(20 * time.Millisecond): // polling a log file, nothing to signal on
		}
	}
}

// procStat is what /proc says about one process at one moment.
type procStat struct {
	CPU   time.Duration // user + system
	RSS   int64         // bytes resident now
	HWM   int64         // peak resident bytes since start
	Alive bool
}

var clockTick = 100 // USER_HZ; 100 on every Linux we run on

func readProc(pid int) procStat {
	var st procStat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st
	}
	// The command name is in parentheses and may hold spaces: split after it.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		f := strings.Fields(s[i+1:])
		// f[0] is field 3 (state); utime and stime are fields 14 and 15.
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			k, _ := strconv.ParseInt(f[12], 10, 64)
			st.CPU = time.Duration(u+k) * time.Second / time.Duration(clockTick)
			st.Alive = f[0] != "Z"
		}
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st
	}
	for _, l := range strings.Split(string(status), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			st.RSS = kb << 10
		case "VmHWM:":
			st.HWM = kb << 10
		}
	}
	return st
}

// resetPeak clears VmHWM so the next peak is this phase's (Linux >= 4.0:
// writing 5 to clear_refs).
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// raiseNoFile lifts the soft open-file limit to the hard one: 10,000 idle
// clients need 10,000 descriptors in the holder and in tunneld, which
// inherit the limit.
func raiseNoFile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	// Root may raise the hard limit too: the in-flight phase holds both ends
	// of 10,000 connections here.
	const want = 1 << 17
	if l.Max < want {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err == nil {
			return want, nil
		}
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, fmt.Errorf("setrlimit: %w", err)
		}
	}
	return l.Cur, nil
}

// goroutines reads go_goroutines from the Prometheus /metrics at addr; -1
// when it cannot.
func goroutines(addr string) int {
	return int(metric(addr, "go_goroutines"))
}

// metric reads one unlabelled sample, name, from the Prometheus /metrics at
// addr; -1 when it cannot.
func metric(addr, name string) float64 {
	if addr == "" {
		return -1
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			if n, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				return n
			}
		}
	}
	return -1
}
