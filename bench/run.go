package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

const pageSize = 1 << 10

// newBackend is the local service every target reaches: a 1 KiB page at /,
// n bytes at /bulk?n=, and /up, which counts what it is sent. It speaks
// HTTP/1.1 and, for the direct HTTP/2 baseline, h2c.
func newBackend() *http.Server {
	page := make([]byte, pageSize)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(pageSize))
		w.Write(page)
	})
	mux.HandleFunc("/bulk", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bad n", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.CopyBuffer(w, io.LimitReader(patternReader{}, n), make([]byte, 64<<10))
	})
	mux.HandleFunc("/up", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r.Body}, make([]byte, 64<<10))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Received", strconv.FormatInt(n, 10))
	})
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{Handler: mux, Protocols: p, ReadHeaderTimeout: 10 * time.Second}
}

// env is everything one run starts: the backend in this process, tunneld
// and tunnel, and the pipe's two processes.
type env struct {
	o         options
	log       io.Writer
	certsDir  string
	backend   *http.Server
	backLn    net.Listener
	backDone  chan error
	main      *pair // visitors in plain HTTP: the setting
	https     *pair // visitors in HTTPS, as shipped
	inspect   *pair // as main, with the client's request inspector on (issue 16)
	authCli   *proc // a second client of main's tunneld, its tunnel behind basic auth (issue 18)
	pipeSrv   *proc
	pipeCli   *proc
	srvAddr   string // the main tunneld's TLS port
	targets   []target
	procs     []*proc
	tmp       string // wrk's script, curl's upload files
	wrkScript string
	peers     map[string]*peer // chisel, frp by target name (the peers phase)

	// poolCli are two more clients of main's tunneld, serving one name
	// as a pool (issue 18).
	poolCli [2]*proc
}

// pair is one tunneld and the tunnel client connected to it. The HTTPS rows
// get a pair of their own so that each pair's memory is that of one kind of
// visitor only.
type pair struct {
	tunneld, tunnel *proc
	srvAddr         string // TLS port
	plainAddr       string // --http-listen, serving the tunnels in plain HTTP
	adminAddr       string // tunneld's --admin-listen (/metrics)
	metricsAddr     string // tunnel's --metrics-listen
	inspectAddr     string // tunnel's --inspect; "": off
	url             string // the tunnel's public URL
}

// startPair starts a tunneld and a tunnel client exposing backAddr as
// "bench"; suffix tells the processes apart in reports. inspect turns the
// client's request inspector on; every other client runs without it, as
// before it existed, so that their figures stay comparable across runs.
func (e *env) startPair(ctx context.Context, backAddr, suffix string, inspect bool, tunneldArgs ...string) (*pair, error) {
	srv, addr, err := e.startTunneld(ctx, tunneldArgs...)
	if err != nil {
		return nil, err
	}
	return e.attachPair(ctx, srv, addr, backAddr, suffix, inspect)
}

// attachPair waits for tunneld srv (listening on srvAddr) to serve plain
// HTTP and its admin listener, then starts a tunnel client exposing
// backAddr as "bench" through it.
func (e *env) attachPair(ctx context.Context, srv *proc, srvAddr, backAddr, suffix string, inspect bool) (*pair, error) {
	pr := &pair{tunneld: srv, srvAddr: srvAddr}
	var err error
	pr.tunneld.name += suffix
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if pr.plainAddr, err = waitLogAddr(wctx, pr.tunneld, "serving plain http"); err != nil {
		return nil, err
	}
	if pr.adminAddr, err = waitLogAddr(wctx, pr.tunneld, "admin serving"); err != nil {
		return nil, err
	}
	if pr.tunnel, pr.url, err = e.startClient(ctx, "tunnel"+suffix, pr.srvAddr, inspect, "http", "--name", "bench", backAddr); err != nil {
		return nil, err
	}
	if pr.metricsAddr, err = waitLogAddr(wctx, pr.tunnel, "metrics serving"); err != nil {
		return nil, err
	}
	if inspect {
		if pr.inspectAddr, err = waitLogAddr(wctx, pr.tunnel, "inspector serving"); err != nil {
			return nil, err
		}
	}
	return pr, nil
}

// startClient starts a tunnel client of the tunneld at srvAddr with the
// subcommand and arguments given (its tunnel's name must be the first
// --name), and waits for the public URL it prints.
func (e *env) startClient(ctx context.Context, name, srvAddr string, inspect bool, args ...string) (*proc, string, error) {
	inspectFlag := "--inspect=false"
	if inspect {
		inspectFlag = "--inspect=127.0.0.1:0"
	}
	p, err := startProc(name, filepath.Join(e.o.BinDir, "tunnel"), nil, append([]string{
		"--dev", "--server", srvAddr, "--certs-dir", e.certsDir, "--log-format", "json",
		"--metrics-listen", "127.0.0.1:0", inspectFlag,
		// The client's own bound on streams at once (1,024 by default)
		// would cut the in-flight phase's 10,000 short, as tunneld's
		// per-address limits would the load: lifted the same way.
		"--max-streams", "1000000"}, args...)...)
	if err != nil {
		return nil, "", err
	}
	e.procs = append(e.procs, p)
	url, err := p.line(30 * time.Second)
	if err != nil {
		return nil, "", err
	}
	tunnelName := ""
	if i := slices.Index(args, "--name"); i >= 0 && i+1 < len(args) {
		tunnelName = args[i+1]
	}
	if !strings.HasPrefix(url, "https://"+tunnelName+".localhost") {
		return nil, "", fmt.Errorf("%s printed %q, want its public URL", name, url)
	}
	return p, url, nil
}

// procs lists the pair's processes with where their /metrics is.
func (pr *pair) procs() []*proc { return []*proc{pr.tunneld, pr.tunnel} }

func (pr *pair) metricsOf(p *proc) string {
	if p == pr.tunneld {
		return pr.adminAddr
	}
	return pr.metricsAddr
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "bench: "+format+"\n", args...)
}

// startTunneld starts a tunneld --dev on a free loopback port and returns it
// with its address. It also serves the tunnels over plain HTTP on another
// free port (--http-listen, --http-redirect=false: tunneld behind a
// TLS-terminating load balancer, the "public side plain HTTP"), and
// its admin listener, whose /metrics gives its goroutines.
func (e *env) startTunneld(ctx context.Context, extra ...string) (*proc, string, error) {
	return e.launchTunneld(ctx, nil, append(e.tunneldArgs(), extra...)...)
}

// tunneldArgs are the flags every tunneld of the load phases runs with.
func (e *env) tunneldArgs() []string {
	return []string{"--dev", "--listen", "127.0.0.1:0", "--certs-dir", e.certsDir,
		"--log-format", "json", "--log-level", "info", "--name-hold", "1s",
		"--http-listen", "127.0.0.1:0", "--http-redirect=false", "--admin-listen", "127.0.0.1:0",
		// Every load here comes from one address; the per-address limits
		// that protect a public tunneld would measure themselves instead.
		"--max-sessions-per-ip", "1000000", "--max-tunnels-per-token", "1000000",
		"--max-handshakes", "1000000", "--max-handshakes-per-ip", "1000000",
		"--max-requests-per-visitor", "1000000"}
}

// launchTunneld starts bin/tunneld with exactly args, its stderr also copied
// to tap (nil: none), and waits for its "serving" line.
func (e *env) launchTunneld(ctx context.Context, tap io.Writer, args ...string) (*proc, string, error) {
	p, err := startProcTap("tunneld", filepath.Join(e.o.BinDir, "tunneld"), nil, tap, args...)
	if err != nil {
		return nil, "", err
	}
	e.procs = append(e.procs, p)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	addr, err := waitServing(wctx, p)
	return p, addr, err
}

// start starts the backend and, when pairs is set (the load and connect
// phases need them), both tunneld + tunnel pairs and the pipe.
func (e *env) start(ctx context.Context, pairs bool) error {
	if _, err := raiseNoFile(); err != nil {
		return err
	}
	var err error
	if e.certsDir, err = os.MkdirTemp("", "tunnel-bench-certs-"); err != nil {
		return err
	}
	if e.tmp, err = os.MkdirTemp("", "tunnel-bench-"); err != nil {
		return err
	}
	if e.wrkScript, err = writeWrkScript(e.tmp); err != nil {
		return err
	}
	e.backend = newBackend()
	if e.backLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return err
	}
	e.backDone = make(chan error, 1)
	go func() { e.backDone <- e.backend.Serve(e.backLn) }()
	backAddr := e.backLn.Addr().String()
	if !pairs {
		return nil
	}

	var pprofArgs []string
	if e.o.Profile != "" {
		pprofArgs = []string{"--admin-pprof"}
	}
	// A pool needs a token that may pool: main's tunneld has one in its
	// tokens file (anonymous clients, every other one here, still connect).
	tokens := filepath.Join(e.tmp, "tokens.json")
	out, err := exec.CommandContext(ctx, filepath.Join(e.o.BinDir, "tunneld"), "token", "add",
		"--tokens-file", tokens, "--label", "bench-pool", "--name", "pooled", "--pool").Output()
	if err != nil {
		return fmt.Errorf("tunneld token add --pool: %w", err)
	}
	if e.main, err = e.startPair(ctx, backAddr, "", false, append(pprofArgs, "--tokens-file", tokens)...); err != nil {
		return err
	}
	for i := range e.poolCli {
		if e.poolCli[i], _, err = e.startClient(ctx, fmt.Sprintf("tunnel (pool %d)", i+1), e.main.srvAddr, false,
			"--token", strings.TrimSpace(string(out)), "http", "--name", "pooled", "--pool", backAddr); err != nil {
			return err
		}
	}
	e.srvAddr = e.main.srvAddr
	if e.authCli, _, err = e.startClient(ctx, "tunnel (basic auth)", e.main.srvAddr, false,
		"http", "--name", "locked", "--basic-auth", benchAuth, backAddr); err != nil {
		return err
	}
	if e.https, err = e.startPair(ctx, backAddr, " (https)", false); err != nil {
		return err
	}
	if e.inspect, err = e.startPair(ctx, backAddr, " (inspect)", true); err != nil {
		return err
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	if e.pipeSrv, err = startProc("pipe-server", self, []string{roleEnv + "=pipe-server"},
		"-certs-dir", e.certsDir); err != nil {
		return err
	}
	e.procs = append(e.procs, e.pipeSrv)
	addrs, err := e.pipeSrv.line(30 * time.Second)
	if err != nil {
		return err
	}
	muxAddr, visAddr, ok := strings.Cut(addrs, " ")
	if !ok {
		return fmt.Errorf("pipe-server printed %q, want two addresses", addrs)
	}
	if e.pipeCli, err = startProc("pipe-client", self, []string{roleEnv + "=pipe-client"},
		"-certs-dir", e.certsDir, "-server", muxAddr, "-target", backAddr); err != nil {
		return err
	}
	e.procs = append(e.procs, e.pipeCli)
	if l, err := e.pipeCli.line(30 * time.Second); err != nil || l != "ready" {
		return fmt.Errorf("pipe-client: %q, %v; pipe-server: %s", l, err, e.pipeSrv.stderr)
	}

	tlsCfg, err := clientTLS(e.certsDir)
	if err != nil {
		return err
	}
	tlsCfg.NextProtos = nil // the Transport sets h2 / http/1.1
	_, plainPort, _ := net.SplitHostPort(e.main.plainAddr)
	_, inspectPort, _ := net.SplitHostPort(e.inspect.plainAddr)
	e.targets = []target{
		{Name: "direct", baseURL: "http://" + backAddr, dial: backAddr, h2c: true},
		{Name: "pipe", baseURL: "http://" + visAddr, dial: visAddr, h2c: true},
		// The setting: visitors speak plain HTTP to tunneld.
		// tunneld has no h2c, so HTTP/2 is measured over HTTPS only.
		{Name: "tunnel", baseURL: "http://bench.localhost:" + plainPort, dial: e.main.plainAddr, noH2: true},
		// As shipped: visitors speak HTTPS (h2 or HTTP/1.1 by ALPN), to
		// their own pair. Every HTTP/2 row, and a subset of the rest to
		// keep the run short.
		{Name: "tunnel-https", baseURL: e.https.url, dial: e.https.srvAddr, tls: tlsCfg, subset: true},
		// As tunnel, with the client's request inspector on: the cost of
		// recording every exchange, against tunnel in the same run.
		{Name: "tunnel-inspect", baseURL: "http://bench.localhost:" + inspectPort, dial: e.inspect.plainAddr, noH2: true, inspect: true},
		// As tunnel, through the same tunneld, to a tunnel that asks
		// visitors for a password; every request carries the right one.
		{Name: "tunnel-basic-auth", baseURL: "http://" + benchAuth + "@locked.localhost:" + plainPort, dial: e.main.plainAddr,
			noH2: true, variant: "basic-auth", auth: benchAuth},
		// As tunnel, through the same tunneld, to a name served by a
		// pool of two clients (--pool): requests alternate between them.
		{Name: "tunnel-pool", baseURL: "http://pooled.localhost:" + plainPort, dial: e.main.plainAddr,
			noH2: true, variant: "pool"},
	}
	return nil
}

// includesSmall, includesOpen and includesBulk say whether target t is
// measured in a run of that kind.
func (t target) includesSmall(h2 bool, conns int) bool {
	switch {
	case t.variant != "":
		// 64 connections, the summary's (a smoke run's 4).
		return !h2 && conns > 1 && conns <= 64
	case t.inspect:
		return !h2
	case h2 && t.noH2:
		return false
	case h2 || !t.subset:
		return true
	}
	return conns == 64
}

func (t target) includesOpen() bool { return !t.subset && !t.inspect && t.variant == "" }

func (t target) includesBulk(up bool, streams int) bool {
	if t.variant != "" {
		return false
	}
	if t.inspect {
		return streams == 1
	}
	return !t.subset || (!up && streams == 1)
}

func (e *env) stop() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].stop()
	}
	if e.backend != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		e.backend.Shutdown(ctx)
		cancel()
		e.backend.Close()
		<-e.backDone
	}
	if e.certsDir != "" {
		os.RemoveAll(e.certsDir)
	}
	if e.tmp != "" {
		os.RemoveAll(e.tmp)
	}
}

// cpuOf returns the server and client processes of a target (nil for
// direct, whose backend shares the harness's process).
func (e *env) cpuOf(t target) (srv, cli *proc) {
	switch t.Name {
	case "tunnel":
		return e.main.tunneld, e.main.tunnel
	case "tunnel-https":
		return e.https.tunneld, e.https.tunnel
	case "tunnel-inspect":
		return e.inspect.tunneld, e.inspect.tunnel
	case "tunnel-basic-auth":
		return e.main.tunneld, e.authCli
	case "tunnel-pool":
		// The client CPU is the first member's: about half the pool's.
		return e.main.tunneld, e.poolCli[0]
	case "pipe":
		return e.pipeSrv, e.pipeCli
	}
	if p := e.peers[t.Name]; p != nil {
		return p.server, p.client
	}
	return nil, nil
}

// cpuSpan measures the CPU two processes spend between start and done.
type cpuSpan struct {
	srv, cli int // pids; cli 0: none
	s0, c0   time.Duration
}

// cpuStart starts counting t's CPU. external says the load comes from
// another process (wrk, curl): then direct's figure is the harness's own
// CPU, which is the backend's alone, and is reported as the server's.
func (e *env) cpuStart(t target, external bool) cpuSpan {
	s, c := e.cpuOf(t)
	var sp cpuSpan
	switch {
	case s != nil:
		sp.srv, sp.cli = s.pid(), c.pid()
	case external:
		sp.srv = os.Getpid()
	default:
		return sp
	}
	sp.s0 = readProc(sp.srv).CPU
	if sp.cli != 0 {
		sp.c0 = readProc(sp.cli).CPU
	}
	return sp
}

// done returns the CPU seconds spent since cpuStart; ok is false when
// nothing was counted, hasCli false when there is no client process.
func (sp cpuSpan) done() (srv, cli float64, hasCli, ok bool) {
	if sp.srv == 0 {
		return 0, 0, false, false
	}
	srv = (readProc(sp.srv).CPU - sp.s0).Seconds()
	if sp.cli != 0 {
		cli = (readProc(sp.cli).CPU - sp.c0).Seconds()
	}
	return srv, cli, sp.cli != 0, true
}

func (e *env) checkAlive() error {
	for _, p := range e.procs {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited during the run (%v): %s", p.name, p.err, p.stderr)
		default:
		}
	}
	return nil
}

// run starts everything, runs the phases asked for and stops everything.
func run(ctx context.Context, o options, log io.Writer) (*Report, error) {
	e := &env{o: o, log: log}
	defer e.stop()
	phases := map[string]bool{}
	for _, p := range strings.Split(o.Phases, ",") {
		phases[strings.TrimSpace(p)] = true
	}
	// The load and connect phases use the two pairs and the pipe; the
	// others start what they measure themselves.
	load := phases["small"] || phases["open"] || phases["bulk"]
	if err := e.start(ctx, load || phases["connect"] || phases["peers"]); err != nil {
		return nil, err
	}
	rep := newReport(o)

	// Let the processes settle, then take their idle footprint and start
	// counting their peak from here.
	type watched struct {
		pr *pair
		p  *proc
	}
	var all []watched
	for _, pr := range []*pair{e.main, e.https, e.inspect} {
		if pr == nil {
			continue
		}
		for _, p := range pr.procs() {
			all = append(all, watched{pr, p})
		}
	}
	idle := map[*proc]procStat{}
	idleG := map[*proc]int{}
	for _, w := range all {
		idle[w.p] = readProc(w.p.pid())
		idleG[w.p] = goroutines(w.pr.metricsOf(w.p))
		if err := resetPeak(w.p.pid()); err != nil {
			e.logf("cannot reset the peak RSS of %s (%v); it counts from the start", w.p.name, err)
		}
	}
	// Goroutines under load: sampled while the load phases run.
	peakG := map[*proc]int{}
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			for _, w := range all {
				peakG[w.p] = max(peakG[w.p], goroutines(w.pr.metricsOf(w.p)))
			}
			select {
			case <-sampleCtx.Done():
				return
			case <-t.C:
			}
		}
	}()

	err := func() error {
		if phases["small"] {
			if o.InspectFull && e.inspect != nil {
				if err := e.fillInspector(ctx); err != nil {
					return err
				}
			}
			if err := e.small(ctx, rep); err != nil {
				return err
			}
		}
		if phases["open"] {
			if err := e.open(ctx, rep); err != nil {
				return err
			}
		}
		if phases["bulk"] {
			if err := e.bulk(ctx, rep); err != nil {
				return err
			}
		}
		return e.checkAlive()
	}()
	stopSampling()
	<-sampled
	if err != nil {
		return nil, err
	}
	peak := map[*proc]procStat{}
	for _, w := range all {
		peak[w.p] = readProc(w.p.pid())
	}
	// "After": once the load's connections have been idle for a while, as
	// the runtime gives memory back only gradually.
	if load {
		select {
		case <-time.After(settle(o)):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	for _, w := range all {
		if !load {
			break // nothing loaded them: no memory rows
		}
		after := readProc(w.p.pid())
		rep.Memory = append(rep.Memory, MemRow{Process: w.p.name,
			IdleMiB: mib(idle[w.p].RSS), PeakMiB: mib(peak[w.p].HWM), AfterMiB: mib(after.RSS),
			IdleGoroutines: idleG[w.p], PeakGoroutines: peakG[w.p], AfterGoroutines: goroutines(w.pr.metricsOf(w.p))})
	}
	if load && e.inspect != nil {
		row, err := e.inspectorRow(ctx)
		if err != nil {
			return nil, err
		}
		rep.Inspector = row
	}

	// After the load phases' memory rows: it resets the peaks, and starts
	// processes of its own.
	if phases["peers"] {
		if err := e.peersPhase(ctx, rep); err != nil {
			return nil, err
		}
	}
	if phases["connect"] {
		if err := e.connect(ctx, rep); err != nil {
			return nil, err
		}
	}
	if phases["tcp"] {
		if err := e.tcpPhase(ctx, rep); err != nil {
			return nil, err
		}
	}
	if phases["idle"] {
		if err := e.idleClients(ctx, rep); err != nil {
			return nil, err
		}
	}
	if phases["inflight"] {
		if err := e.inflight(ctx, rep); err != nil {
			return nil, err
		}
	}
	if phases["cluster"] {
		if err := e.clusterPhase(ctx, rep); err != nil {
			return nil, err
		}
	}
	if phases["attack"] {
		if err := e.underAttack(ctx, rep); err != nil {
			return nil, err
		}
	}
	if err := e.checkAlive(); err != nil {
		return nil, err
	}
	rep.finish()
	return rep, nil
}

func settle(o options) time.Duration {
	if o.Smoke {
		return 50 * time.Millisecond
	}
	return 3 * time.Second
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// small runs the closed-loop small requests: every protocol and
// concurrency, the targets interleaved within each repeat so that drift on
// a shared machine hits them alike. HTTP/1.1 load comes from wrk, a process
// of its own, as users measure; HTTP/2 from the in-process generator, which
// nothing else here measures (wrk speaks HTTP/1.1 only).
func (e *env) small(ctx context.Context, rep *Report) error {
	type key struct {
		t     string
		h2    bool
		conns int
	}
	runs := map[key][]closedResult{}
	cpu := map[key][][2]float64{}
	hasCli := map[key]bool{}
	if e.o.Wrk != "" {
		for _, t := range e.targets {
			e.warmUp(ctx, t, min(64, slices.Max(e.o.Conns)))
		}
	}
	for rep := 0; rep < e.o.Repeat; rep++ {
		for _, h2 := range []bool{false, true} {
			for _, c := range e.o.Conns {
				for _, t := range e.targets {
					if !t.includesSmall(h2, c) {
						continue
					}
					wrk := !h2 && e.o.Wrk != ""
					e.logf("small %s h2=%v conns=%d run %d (%s)", t.Name, h2, c, rep+1, generatorName(wrk))
					sp := e.cpuStart(t, wrk)
					var r closedResult
					var err error
					if wrk {
						r, err = runWrk(ctx, e.o.Wrk, e.wrkScript, t, c, e.o.Duration)
					} else {
						r, err = closedLoop(ctx, t, h2, c, e.o.Duration)
					}
					if err != nil {
						return err
					}
					k := key{t.Name, h2, c}
					runs[k] = append(runs[k], r)
					if s, cl, withCli, ok := sp.done(); ok {
						// CPU over the whole run: wrk's has no warm-up,
						// the in-process generator's is a tenth more.
						n := float64(r.Requests)
						if !wrk {
							n *= 1.1
						}
						cpu[k] = append(cpu[k], [2]float64{s / n * 1e6, cl / n * 1e6})
						hasCli[k] = withCli
					}
				}
			}
		}
	}
	for _, h2 := range []bool{false, true} {
		for _, c := range e.o.Conns {
			for _, t := range e.targets {
				if !t.includesSmall(h2, c) {
					continue
				}
				k := key{t.Name, h2, c}
				row := SmallRow{Target: t.Name, Proto: protoName(h2), Conns: c,
					Generator: generatorName(!h2 && e.o.Wrk != "")}
				for _, r := range runs[k] {
					row.ReqPerSec.add(r.rate())
					row.P50.add(ms(r.P50))
					row.P99.add(ms(r.P99))
					row.P999.add(ms(r.P999))
					row.Errors += r.Errors
				}
				for _, v := range cpu[k] {
					row.ServerCPU1k.add(v[0])
					if hasCli[k] {
						row.ClientCPU1k.add(v[1])
					}
				}
				rep.Small = append(rep.Small, row)
			}
		}
	}
	return nil
}

func generatorName(wrk bool) string {
	if wrk {
		return "wrk"
	}
	return "go"
}

func protoName(h2 bool) string {
	if h2 {
		return "h2"
	}
	return "http/1.1"
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// open runs the fixed-rate (open loop) requests over HTTP/1.1.
func (e *env) open(ctx context.Context, rep *Report) error {
	rows := map[string]*OpenRow{}
	var order []string
	for r := 0; r < e.o.Repeat; r++ {
		for _, rate := range e.o.Rates {
			for _, t := range e.targets {
				if !t.includesOpen() {
					continue
				}
				e.logf("open %s %d req/s run %d", t.Name, rate, r+1)
				res, err := openLoop(ctx, t, rate, e.o.Duration)
				if err != nil {
					return err
				}
				k := fmt.Sprintf("%s/%d", t.Name, rate)
				row := rows[k]
				if row == nil {
					row = &OpenRow{Target: t.Name, Rate: rate}
					rows[k] = row
					order = append(order, k)
				}
				row.Achieved.add(res.Achieved)
				row.P50.add(ms(res.P50))
				row.P99.add(ms(res.P99))
				row.P999.add(ms(res.P999))
				row.Errors += res.Errors
			}
		}
	}
	for _, k := range order {
		rep.Open = append(rep.Open, *rows[k])
	}
	return nil
}

// bulk moves o.Bulk bytes down and up over 1 and 8 streams, with the Go
// client in the harness and with curl processes (when o.Curl is set).
func (e *env) bulk(ctx context.Context, rep *Report) error {
	rows := map[string]*BulkRow{}
	var order []string
	gib := float64(e.o.Bulk) / (1 << 30)
	clients := []string{"go"}
	if e.o.Curl != "" {
		clients = append(clients, "curl")
	}
	for r := 0; r < e.o.Repeat; r++ {
		for _, up := range []bool{false, true} {
			for _, streams := range []int{1, 8} {
				for _, client := range clients {
					for _, t := range e.targets {
						if !t.includesBulk(up, streams) {
							continue
						}
						dir := "down"
						if up {
							dir = "up"
						}
						e.logf("bulk %s %s %d streams %s run %d", t.Name, dir, streams, client, r+1)
						ext := client == "curl"
						sp := e.cpuStart(t, ext)
						var d time.Duration
						var err error
						if ext {
							d, err = curlBulk(ctx, e.o.Curl, e.certsDir, e.tmp, t, up, streams, e.o.Bulk)
						} else {
							d, err = bulk(ctx, t, up, streams, e.o.Bulk)
						}
						if err != nil {
							return err
						}
						k := fmt.Sprintf("%s/%s/%d/%s", t.Name, dir, streams, client)
						row := rows[k]
						if row == nil {
							row = &BulkRow{Target: t.Name, Dir: dir, Streams: streams, Client: client}
							rows[k] = row
							order = append(order, k)
						}
						row.MBps.add(float64(e.o.Bulk) / 1e6 / d.Seconds())
						if s, c, withCli, ok := sp.done(); ok {
							row.ServerCPUGiB.add(s / gib)
							if withCli {
								row.ClientCPUGiB.add(c / gib)
							}
						}
					}
				}
			}
		}
	}
	for _, k := range order {
		rep.BulkRuns = append(rep.BulkRuns, *rows[k])
	}
	return nil
}

// connect times o.Connects client connects to the running tunneld.
func (e *env) connect(ctx context.Context, rep *Report) error {
	tlsCfg, err := clientTLS(e.certsDir)
	if err != nil {
		return err
	}
	row := ConnectRow{N: e.o.Connects}
	for r := 0; r < e.o.Repeat; r++ {
		e.logf("connect %d clients run %d", e.o.Connects, r+1)
		lat, err := connectTimes(ctx, e.srvAddr, tlsCfg, e.o.Connects)
		if err != nil {
			return err
		}
		row.P50.add(ms(lat.pct(50)))
		row.P99.add(ms(lat.pct(99)))
	}
	rep.Connect = &row
	return nil
}

// idleClients measures a fresh tunneld's RSS before and while a holder
// process keeps n idle clients connected to it, for each n once (a fresh
// tunneld each time, so no heap is left over from an earlier count).
func (e *env) idleClients(ctx context.Context, rep *Report) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for _, n := range e.o.Idle {
		e.logf("idle: %d clients", n)
		srv, addr, err := e.startTunneld(ctx)
		if err != nil {
			return err
		}
		before := readProc(srv.pid())
		h, err := startProc("hold", self, []string{roleEnv + "=hold"},
			"-certs-dir", e.certsDir, "-server", addr, "-n", strconv.Itoa(n))
		if err != nil {
			srv.stop()
			return err
		}
		l, err := h.line(time.Duration(n)*20*time.Millisecond + 60*time.Second)
		if err == nil && l != fmt.Sprintf("ready %d", n) {
			err = fmt.Errorf("hold printed %q", l)
		}
		if err == nil {
			select {
			case <-time.After(settle(e.o)):
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		during := readProc(srv.pid())
		h.stop()
		srv.stop()
		e.procs = e.procs[:len(e.procs)-1]
		if err != nil {
			return err
		}
		rep.Idle = append(rep.Idle, IdleRow{Clients: n, BeforeMiB: mib(before.RSS), DuringMiB: mib(during.RSS),
			PerClientKiB: float64(during.RSS-before.RSS) / 1024 / float64(n)})
	}
	return nil
}

// machine describes where the run happened.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s, %d CPUs, Linux %s, %s", cpu, runtime.NumCPU(), kernel, runtime.Version())
}

var errNoGnuplot = errors.New("gnuplot not found")
