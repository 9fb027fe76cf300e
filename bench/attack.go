package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The "attack" phase: issue 11's six attacks, one after another, each
// against a fresh tunneld (as built, with its defaults: no per-address
// limit raised) that serves a healthy tunnel under steady load. Each attack
// comes from attackerIP only; the healthy load comes from 127.0.0.1. A fresh
// tunneld per attack, because what one attack leaves behind (today: a heap
// of 1.6 GB after the ping flood, held names, leaked in-flight counts)
// would otherwise be measured as the next one's.
const (
	attackerIP  = "127.0.0.2" // every attack's only source address
	bystanderIP = "127.0.0.3" // other visitors and tenants the verdicts need
	timingIP    = "127.0.0.4" // attack 6's timed claims, an owner of their own
)

// attackSizes bound every attack in count and in time.
type attackSizes struct {
	Rate      int           // healthy load, req/s (open loop)
	Warm      time.Duration // load before "before" is measured
	Before    time.Duration // the "before" window
	Bound     time.Duration // the most one attack's own actions take
	Hold      time.Duration // how long an attack keeps what it opened
	Drain     time.Duration // the most the aftermath is watched
	Pings     int           // attack 1
	Visitors  int           // attack 2: B's visitors
	Stalls    int           // attack 3a: POSTs without a body
	H2Streams int           // attack 3b
	H2File    int64         // attack 3b: bytes per GET
	Cuts      int           // attack 5
	Connects  int           // attack 6
}

func attackSizesFor(o options) attackSizes {
	if o.Smoke {
		return attackSizes{Rate: 100, Warm: 100 * time.Millisecond, Before: 300 * time.Millisecond,
			Bound: 3 * time.Second, Hold: 200 * time.Millisecond, Drain: 2 * time.Second,
			Pings: 2000, Visitors: 5, Stalls: 8, H2Streams: 8, H2File: 1 << 20, Cuts: 10, Connects: 20}
	}
	return attackSizes{Rate: 1000, Warm: time.Second, Before: 3 * time.Second,
		Bound: 10 * time.Second, Hold: 3 * time.Second, Drain: 30 * time.Second,
		Pings: 400000, Visitors: 50, Stalls: 256, H2Streams: 250, H2File: 8 << 20, Cuts: 256, Connects: 5000}
}

// AttackRow is what one attack did to tunneld and to the healthy tunnel.
type AttackRow struct {
	ID               string  `json:"id"`
	Name             string  `json:"name"`
	Seconds          float64 `json:"seconds"` // the attack and its aftermath
	RSSBeforeMiB     float64 `json:"rss_before_mib"`
	RSSPeakMiB       float64 `json:"rss_peak_mib"`
	GoroutinesBefore int     `json:"goroutines_before"`
	GoroutinesPeak   int     `json:"goroutines_peak"`
	GoroutinesAfter  int     `json:"goroutines_after"` // at the end of the span: did tunneld recover within it
	ReqPerSecBefore  float64 `json:"healthy_req_per_sec_before"`
	ReqPerSecDuring  float64 `json:"healthy_req_per_sec_during"`
	ReqPerSecWorst   float64 `json:"healthy_req_per_sec_worst_second"` // the fewest answered in any whole second of it
	P99BeforeMS      float64 `json:"healthy_p99_ms_before"`
	P99DuringMS      float64 `json:"healthy_p99_ms_during"`
	ErrorsDuring     int64   `json:"healthy_errors_during"`
	FirstError       string  `json:"healthy_first_error,omitempty"`
	// The same load sent straight to the backend (in the harness, as the
	// load generator is) at the same time: when its worst second drops
	// too, the machine or the harness stalled, not tunneld alone.
	ControlRatio float64            `json:"control_worst_second_ratio"`
	LogBytes     int64              `json:"log_bytes"` // tunneld's stderr, less the healthy load's access lines
	LogLines     int64              `json:"log_lines"`
	Verdict      string             `json:"verdict"`
	Safe         *bool              `json:"safe,omitempty"` // the attack-specific verdict, where it has a pass
	Figures      map[string]float64 `json:"figures,omitempty"`
	Failed       string             `json:"failed,omitempty"` // the attack could not be carried out
}

// Targets of the issue, for every attack from one source address.
const (
	attackMaxRSSMiB     = 64
	attackMaxGoroutines = 1000
	attackMinRatio      = 0.8
)

// victimNice is the niceness of the attacked tenant's processes.
const victimNice = "10"

func (r AttackRow) rssDelta() float64 { return r.RSSPeakMiB - r.RSSBeforeMiB }
func (r AttackRow) gDelta() int       { return r.GoroutinesPeak - r.GoroutinesBefore }

// ratio is the healthy tunnel's worst second during the attack against its
// rate before: at a fixed rate a stall of a second or two hardly shows over
// the whole attack (the late answers come within it), but it empties a
// second.
func (r AttackRow) ratio() float64 {
	if r.ReqPerSecBefore <= 0 {
		return 0
	}
	return min(r.ReqPerSecDuring, r.ReqPerSecWorst) / r.ReqPerSecBefore
}

// attackResult is what an attack function reports.
type attackResult struct {
	verdict string
	safe    *bool
	figures map[string]float64
}

func verdictSafe(ok bool) *bool { return &ok }

// attackDef is one attack: what its tunneld needs and what it does.
type attackDef struct {
	id, name string
	flags    []string // extra tunneld flags
	victim   bool     // needs the "victim" tunnel (tunnel binary + backend here)
	run      func(ctx context.Context, a *attackEnv) (attackResult, error)
}

func attacks() []attackDef {
	return []attackDef{
		{id: "1", name: "pre-auth yamux ping flood", run: attackPingFlood},
		// A short hold so the name frees within the attack.
		{id: "2", name: "pooled stream across tenants", flags: []string{"--name-hold", "1s"}, run: attackCrossTenant},
		{id: "3a", name: "stalled request bodies", victim: true, run: attackStalledBodies},
		{id: "3b", name: "HTTP/2 window 0 downloads", victim: true, run: attackH2Window},
		{id: "4", name: "Host / forwarding header injection", victim: true, run: attackHeaders},
		{id: "5", name: "downloads cut mid-body", victim: true, run: attackCuts},
		{id: "6", name: "fresh names connect/disconnect", run: attackHeldNames},
	}
}

// attackEnv is one attack's tunneld and what the attack may use.
type attackEnv struct {
	e         *env
	sz        attackSizes
	srv       *proc
	srvAddr   string // TLS port: clients and HTTPS visitors
	plainAddr string
	adminAddr string
	tap       *logTap
	tokens    [2]string // two tokens that may claim any name
	victim    *victimRef
	sample    func() (rss int64, g int) // tunneld now
}

// host is NAME's public host as a visitor on the TLS port sends it.
func (a *attackEnv) host(name string) string {
	_, port, _ := net.SplitHostPort(a.srvAddr)
	return name + ".localhost:" + port
}

func dialerFrom(ip string) *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
}

// visitorTLS dials the TLS port from ip as a visitor of name (SNI), with
// the ALPN protocols given. Visitors do not check the dev certificate.
func (a *attackEnv) visitorTLS(ctx context.Context, ip, name string, alpn ...string) (*tls.Conn, error) {
	d := tls.Dialer{NetDialer: dialerFrom(ip), Config: &tls.Config{InsecureSkipVerify: true,
		ServerName: name + ".localhost", NextProtos: alpn}}
	c, err := d.DialContext(ctx, "tcp", a.srvAddr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

// clientTLSFrom dials the TLS port from ip as a tunnel client.
func (a *attackEnv) clientTLSFrom(ctx context.Context, ip string) (net.Conn, error) {
	cfg, err := clientTLS(a.e.certsDir)
	if err != nil {
		return nil, err
	}
	d := tls.Dialer{NetDialer: dialerFrom(ip), Config: cfg}
	return d.DialContext(ctx, "tcp", a.srvAddr)
}

// underAttack runs every attack and adds its row.
func (e *env) underAttack(ctx context.Context, rep *Report) error {
	sz := attackSizesFor(e.o)
	dir, err := os.MkdirTemp("", "tunnel-bench-attack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	tokensFile := filepath.Join(dir, "tokens.json")
	var tokens [2]string
	for i, label := range []string{"tenant-a", "tenant-b"} {
		out, err := exec.CommandContext(ctx, filepath.Join(e.o.BinDir, "tunneld"), "token", "add",
			"--tokens-file", tokensFile, "--label", label, "--name", "*").Output()
		if err != nil {
			return fmt.Errorf("tunneld token add: %w", err)
		}
		tokens[i] = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("Load average (1, 5, 15 min) when the attack phase started: %s.",
			strings.Join(strings.Fields(string(b))[:3], ", ")))
	}
	for _, ad := range attacks() {
		e.logf("attack %s: %s", ad.id, ad.name)
		row, err := e.runAttack(ctx, ad, sz, tokensFile, tokens)
		if err != nil {
			return fmt.Errorf("attack %s: %w", ad.id, err)
		}
		rep.Attacks = append(rep.Attacks, row)
	}
	return nil
}

// attackTunneldArgs are tunneld's defaults as deployed, but for what the
// bench needs to reach it (loopback ports, plain HTTP for the load, the
// admin listener, the dev CA), anonymous clients and two tokens.
func (e *env) attackTunneldArgs(tokensFile string) []string {
	return []string{"--dev", "--listen", "127.0.0.1:0", "--certs-dir", e.certsDir,
		"--log-format", "json", "--log-level", "info",
		"--http-listen", "127.0.0.1:0", "--http-redirect=false", "--admin-listen", "127.0.0.1:0",
		"--allow-anonymous", "--tokens-file", tokensFile}
}

// runAttack starts a tunneld and the healthy tunnel, loads it, measures
// "before", runs the attack, watches its aftermath and stops everything.
func (e *env) runAttack(ctx context.Context, ad attackDef, sz attackSizes, tokensFile string, tokens [2]string) (AttackRow, error) {
	row := AttackRow{ID: ad.id, Name: ad.name}
	tap := &logTap{}
	srv, srvAddr, err := e.launchTunneld(ctx, tap, append(e.attackTunneldArgs(tokensFile), ad.flags...)...)
	var started []*proc
	if srv != nil {
		started = append(started, srv)
	}
	defer func() {
		for i := len(started) - 1; i >= 0; i-- {
			started[i].kill()
		}
		e.forget(started...)
	}()
	if err != nil {
		return row, err
	}
	pr, err := e.attachPair(ctx, srv, srvAddr, e.backLn.Addr().String(), " (attack "+ad.id+")", false)
	if pr != nil {
		started = append(started, pr.tunnel)
	}
	if err != nil {
		return row, err
	}
	a := &attackEnv{e: e, sz: sz, srv: srv, srvAddr: srvAddr, plainAddr: pr.plainAddr,
		adminAddr: pr.adminAddr, tap: tap, tokens: tokens}
	if ad.victim {
		// The attacked tenant's service and tunnel client stand for a
		// machine of their own: separate processes (the service is this
		// harness again) at a lower priority, so that the bulk an attack
		// makes them move competes neither with tunneld nor with the load
		// generator on the two shared cores. nice execs: the pid is the
		// binary's.
		self, err := os.Executable()
		if err != nil {
			return row, err
		}
		vb, err := startProc("victim-backend", "nice", []string{roleEnv + "=victim-backend"}, "-n", victimNice, self)
		if err != nil {
			return row, err
		}
		e.procs = append(e.procs, vb)
		started = append(started, vb)
		addr, err := vb.line(30 * time.Second)
		if err != nil {
			return row, err
		}
		a.victim = &victimRef{addr: addr}
		vt, err := startProc("tunnel (victim)", "nice", nil, "-n", victimNice, filepath.Join(e.o.BinDir, "tunnel"),
			"--dev", "--server", srvAddr, "--certs-dir", e.certsDir, "--log-format", "json", "--inspect=false",
			"http", "--name", "victim", a.victim.addr)
		if err != nil {
			return row, err
		}
		e.procs = append(e.procs, vt)
		started = append(started, vt)
		if u, err := vt.line(30 * time.Second); err != nil {
			return row, err
		} else if !strings.HasPrefix(u, "https://victim.localhost") {
			return row, fmt.Errorf("victim tunnel printed %q, want its public URL", u)
		}
	}

	// Samples of tunneld's RSS and goroutines, every 100 ms throughout.
	type sample struct {
		at  time.Time
		rss int64
		g   int
	}
	var smu sync.Mutex
	var samples []sample
	a.sample = func() (int64, int) {
		s := sample{time.Now(), readProc(srv.pid()).RSS, goroutines(pr.adminAddr)}
		smu.Lock()
		samples = append(samples, s)
		smu.Unlock()
		return s.rss, s.g
	}
	sctx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			a.sample()
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	_, plainPort, _ := net.SplitHostPort(pr.plainAddr)
	healthy := target{Name: "healthy", baseURL: "http://bench.localhost:" + plainPort, dial: pr.plainAddr, noH2: true}
	ld := startSteady(ctx, healthy, sz.Rate)
	backAddr := e.backLn.Addr().String()
	control := startSteady(ctx, target{Name: "control", baseURL: "http://" + backAddr, dial: backAddr}, sz.Rate)

	wait := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := wait(sz.Warm); err != nil {
		ld.stop()
		control.stop()
		stopSampling()
		<-sampled
		return row, err
	}
	b0 := time.Now()
	err = wait(sz.Before)
	b1 := time.Now()
	if err == nil {
		if err = resetPeak(srv.pid()); err != nil {
			e.logf("cannot reset tunneld's peak RSS (%v): the peak counts from its start", err)
			err = nil
		}
	}
	var res attackResult
	var t0, t1 time.Time
	var log0, log1 logCount
	if err == nil {
		log0 = tap.count()
		t0 = time.Now()
		actx, cancel := context.WithTimeout(ctx, sz.Bound+sz.Hold+10*time.Second)
		var aerr error
		res, aerr = ad.run(actx, a)
		cancel()
		if aerr != nil {
			row.Failed = aerr.Error()
		}
		// The aftermath: until tunneld's goroutines are back near where
		// they were, or Drain has passed.
		smu.Lock()
		gBefore := 0
		for _, s := range samples {
			if s.at.Before(t0) {
				gBefore = max(gBefore, s.g)
			}
		}
		smu.Unlock()
		// At least Hold in all, so that the healthy load is measured over
		// whole seconds even when the attack itself is brief.
		deadline := time.Now().Add(sz.Drain)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			// "Near": the healthy load's connections alone move the count
			// by tens.
			if _, g := a.sample(); g >= 0 && g <= gBefore+max(64, gBefore/2) && time.Since(t0) >= sz.Hold {
				break
			}
			wait(100 * time.Millisecond) // polling another process
		}
		t1 = time.Now()
		log1 = tap.count()
	}
	peak := readProc(srv.pid()).HWM
	stopSampling()
	<-sampled
	ld.stop()
	control.stop()
	if err != nil {
		return row, err
	}

	smu.Lock()
	for _, s := range samples {
		switch {
		case !s.at.Before(b0) && s.at.Before(t0):
			row.RSSBeforeMiB = max(row.RSSBeforeMiB, mib(s.rss))
			row.GoroutinesBefore = max(row.GoroutinesBefore, s.g)
		case !s.at.Before(t0) && !s.at.After(t1):
			row.GoroutinesPeak = max(row.GoroutinesPeak, s.g)
			row.RSSPeakMiB = max(row.RSSPeakMiB, mib(s.rss))
			row.GoroutinesAfter = s.g // samples are in time order
		}
	}
	smu.Unlock()
	row.RSSPeakMiB = max(row.RSSPeakMiB, mib(peak))
	before, during := ld.window(b0, b1), ld.window(t0, t1)
	row.ReqPerSecBefore, row.P99BeforeMS = before.rate, ms(before.p99)
	row.ReqPerSecDuring, row.P99DuringMS, row.ErrorsDuring = during.rate, ms(during.p99), during.errors
	row.ReqPerSecWorst, row.FirstError = ld.worstSecond(t0, t1), during.firstErr
	if cb := control.window(b0, b1).rate; cb > 0 {
		row.ControlRatio = min(control.worstSecond(t0, t1), control.window(t0, t1).rate) / cb
	}
	row.Seconds = t1.Sub(t0).Seconds()
	row.LogBytes, row.LogLines = log1.bytes-log0.bytes, log1.lines-log0.lines
	row.Verdict, row.Safe, row.Figures = res.verdict, res.safe, res.figures
	select {
	case <-srv.done:
		row.Verdict = fmt.Sprintf("TUNNELD DIED (%v); %s", srv.err, row.Verdict)
	default:
	}
	return row, nil
}

// logTap counts what tunneld writes to stderr, line by line: every line
// but the healthy load's access lines (whose number follows the load, not
// the attack), and the access lines of requests from attackerIP.
type logTap struct {
	mu      sync.Mutex
	partial []byte
	c       logCount
}

type logCount struct {
	bytes, lines   int64 // all but the healthy load's access lines
	attackerAccess int64 // access lines of attackerIP's requests
}

var (
	accessMark   = []byte(`"component":"access"`)
	healthyMark  = []byte(`"remote_addr":"127.0.0.1:`)
	attackerMark = []byte(`"remote_addr":"` + attackerIP + `:`)
)

func (t *logTap) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.partial = append(t.partial, p...)
			break
		}
		line := p[:i+1]
		if len(t.partial) > 0 {
			line = append(t.partial, line...)
			t.partial = t.partial[:0]
		}
		t.line(line)
		p = p[i+1:]
	}
	return n, nil
}

func (t *logTap) line(l []byte) {
	if bytes.Contains(l, accessMark) {
		if bytes.Contains(l, healthyMark) {
			return
		}
		if bytes.Contains(l, attackerMark) {
			t.c.attackerAccess++
		}
	}
	t.c.bytes += int64(len(l))
	t.c.lines++
}

func (t *logTap) count() logCount {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.c
}

// steady is the healthy tunnel's load: an open loop at a fixed rate over
// HTTP/1.1 keep-alive (as openLoop), kept running across the phases of an
// attack, each request recorded so that any window can be measured.
type steady struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	recs   []loadRec
}

type loadRec struct {
	at, done time.Time // scheduled, finished
	ok       bool
	err      string // why not
}

func startSteady(ctx context.Context, t target, rate int) *steady {
	ctx, cancel := context.WithCancel(ctx)
	s := &steady{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		const maxInFlight, maxConns = 2048, 64
		tr := t.transport(false, maxConns)
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		interval := time.Second / time.Duration(rate)
		sem := make(chan struct{}, maxInFlight)
		var wg sync.WaitGroup
		defer wg.Wait()
		start := time.Now()
		for i := 0; ctx.Err() == nil; i++ {
			at := start.Add(time.Duration(i) * interval)
			if w := time.Until(at); w > 0 {
				select {
				case <-time.After(w): // pacing the schedule
				case <-ctx.Done():
					return
				}
			}
			select {
			case sem <- struct{}{}:
			default:
				s.record(loadRec{at: at, done: time.Now(), err: "more than 2048 requests waiting"})
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				// Not ctx: stopping the schedule lets what is sent finish.
				r := loadRec{at: at}
				if err := get(context.Background(), c, t.baseURL+"/"); err != nil {
					r.err = shortErr(err)
				} else {
					r.ok = true
				}
				r.done = time.Now()
				s.record(r)
			}()
		}
	}()
	return s
}

func (s *steady) record(r loadRec) {
	s.mu.Lock()
	s.recs = append(s.recs, r)
	s.mu.Unlock()
}

// stop ends the schedule and waits for the requests sent.
func (s *steady) stop() {
	s.cancel()
	<-s.done
}

type loadWindow struct {
	rate     float64       // requests answered within the window, per second
	p99      time.Duration // of requests scheduled in the window, from their scheduled time
	errors   int64         // requests scheduled in the window that failed
	firstErr string
}

// worstSecond is the fewest requests answered in any whole second from
// from to to, per second; the whole span's rate if it is shorter than one.
func (s *steady) worstSecond(from, to time.Time) float64 {
	secs := int(to.Sub(from) / time.Second)
	if secs == 0 {
		return s.window(from, to).rate
	}
	counts := make([]int, secs)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		if k := int(r.done.Sub(from) / time.Second); r.ok && !r.done.Before(from) && k < secs {
			counts[k]++
		}
	}
	return float64(slices.Min(counts))
}

func (s *steady) window(from, to time.Time) loadWindow {
	s.mu.Lock()
	defer s.mu.Unlock()
	var w loadWindow
	var lat latencies
	n := 0
	for _, r := range s.recs {
		if r.ok && !r.done.Before(from) && r.done.Before(to) {
			n++
		}
		if r.at.Before(from) || !r.at.Before(to) {
			continue
		}
		if r.ok {
			lat = append(lat, r.done.Sub(r.at))
		} else {
			if w.errors == 0 {
				w.firstErr = r.err
			}
			w.errors++
		}
	}
	if d := to.Sub(from).Seconds(); d > 0 {
		w.rate = float64(n) / d
	}
	slices.Sort(lat)
	w.p99 = lat.pct(99)
	return w
}

// victimRef is the attacked tunnel's service, as the harness sees it.
type victimRef struct{ addr string }

// uploads asks the victim backend how many uploads (/up) reached it; -1
// when it cannot tell.
func (v *victimRef) uploads() int64 {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + v.addr + "/bench-uploads")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var n int64
	if _, err := fmt.Fscan(resp.Body, &n); err != nil {
		return -1
	}
	return n
}

// victimBackendRole is the victim backend's process: it prints its address
// and serves until stopped.
func victimBackendRole(ctx context.Context, _ []string) error {
	v, err := startVictim()
	if err != nil {
		return err
	}
	fmt.Println(v.addr)
	<-ctx.Done()
	v.close()
	return nil
}

// victimBackend is the attacked tunnel's service: the bench backend, plus
// /hdr, which answers with the Host and headers it was sent, and a count of
// the uploads (/up) that reached it (/bench-uploads).
type victimBackend struct {
	srv     *http.Server
	ln      net.Listener
	addr    string
	done    chan error
	uploads atomic.Int64
}

func startVictim() (*victimBackend, error) {
	v := &victimBackend{done: make(chan error, 1)}
	base := newBackend()
	h := base.Handler
	mx := http.NewServeMux()
	mx.HandleFunc("/hdr", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(struct {
			Host    string      `json:"host"`
			Headers http.Header `json:"headers"`
		}{r.Host, r.Header})
	})
	mx.HandleFunc("/up", func(w http.ResponseWriter, r *http.Request) {
		v.uploads.Add(1)
		h.ServeHTTP(w, r)
	})
	mx.HandleFunc("GET /bench-uploads", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, v.uploads.Load())
	})
	mx.Handle("/", h)
	base.Handler = mx
	v.srv = base
	var err error
	if v.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	v.addr = v.ln.Addr().String()
	go func() { v.done <- v.srv.Serve(v.ln) }()
	return v, nil
}

func (v *victimBackend) close() {
	v.srv.Close()
	<-v.done
}
