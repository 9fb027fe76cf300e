package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain lets the test binary play the harness's roles too: the harness
// starts os.Executable() for the pipe and the idle-session holder.
func TestMain(m *testing.M) {
	if ok, err := runRole(); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// TestBench_Smoke runs the whole harness with tiny sizes against freshly
// built binaries, so make bench cannot rot: every phase must produce its
// rows for every target, with every request and byte accounted for, and the
// JSON and markdown must be written. It checks no timing.
func TestBench_Smoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts processes")
	}
	bin := buildBinaries(t)
	o := smokeOptions(defaultOptions())
	o.BinDir, o.OutDir, o.NoPlots = bin, t.TempDir(), true
	o.Wrk, o.Curl = externalTool(t, "wrk"), externalTool(t, "curl")
	rep := runSmoke(t, o)

	// The rows each target must have, by the rules run.go applies.
	targets := []target{{Name: "direct"}, {Name: "pipe"}, {Name: "tunnel", noH2: true}, {Name: "tunnel-https", subset: true},
		{Name: "tunnel-inspect", noH2: true, inspect: true}, {Name: "tunnel-basic-auth", noH2: true, variant: "basic-auth"},
		{Name: "tunnel-pool", noH2: true, variant: "pool"}}
	openTargets := 0
	for _, tg := range targets {
		for _, proto := range []string{"http/1.1", "h2"} {
			for _, c := range o.Conns {
				s := rep.findSmall(tg.Name, proto, c)
				if !tg.includesSmall(proto == "h2", c) {
					if s != nil {
						t.Errorf("small %s %s %d conns: measured, want it left out", tg.Name, proto, c)
					}
					continue
				}
				if s == nil || s.ReqPerSec.Median <= 0 || s.P99.Median <= 0 {
					t.Errorf("small %s %s %d conns: got %+v, want a positive rate and p99", tg.Name, proto, c, s)
				} else if s.Errors != 0 {
					t.Errorf("small %s %s %d conns: %d errors", tg.Name, proto, c, s.Errors)
				}
			}
		}
		for _, dir := range []string{"down", "up"} {
			for _, streams := range []int{1, 8} {
				for _, client := range bulkClients(o) {
					b := rep.findBulk(tg.Name, dir, streams, client)
					if !tg.includesBulk(dir == "up", streams) {
						if b != nil {
							t.Errorf("bulk %s %s %d streams %s: measured, want it left out", tg.Name, dir, streams, client)
						}
						continue
					}
					if b == nil || b.MBps.Median <= 0 || len(b.ServerCPUGiB.Runs) == 0 && tg.Name != "direct" {
						t.Errorf("bulk %s %s %d streams %s: got %+v, want a positive rate and CPU figures", tg.Name, dir, streams, client, b)
					}
				}
			}
		}
		if tg.includesOpen() {
			openTargets++
		}
	}
	if got, want := len(rep.Open), openTargets*len(o.Rates); got != want {
		t.Errorf("open-loop rows: got %d, want %d", got, want)
	}
	for _, r := range rep.Open {
		if r.Errors != 0 || r.Achieved.Median <= 0 {
			t.Errorf("open %s %d req/s: %d errors, achieved %v", r.Target, r.Rate, r.Errors, r.Achieved.Median)
		}
	}
	for _, s := range rep.Small {
		want := "go"
		if s.Proto == "http/1.1" && o.Wrk != "" {
			want = "wrk"
		}
		if s.Generator != want {
			t.Errorf("small %s %s %d conns: generator %q, want %q", s.Target, s.Proto, s.Conns, s.Generator, want)
		}
		// Under wrk the harness's own CPU is the backend's: every row has a
		// server figure; the tunnels have client figures too.
		if s.Target != "direct" || s.Generator == "wrk" {
			if len(s.ServerCPU1k.Runs) == 0 || s.ServerCPU1k.Median <= 0 {
				t.Errorf("small %s %s %d conns: no server CPU figure", s.Target, s.Proto, s.Conns)
			}
		}
		if (s.Target == "direct") != (len(s.ClientCPU1k.Runs) == 0) {
			t.Errorf("small %s %s %d conns: client CPU %+v, want one exactly when there is a client process", s.Target, s.Proto, s.Conns, s.ClientCPU1k)
		}
	}
	if len(rep.Memory) != 6 {
		t.Errorf("memory rows: got %+v, want tunneld and tunnel of the three pairs", rep.Memory)
	}
	// The inspector's row: it recorded what the harness sent, within its cap.
	if in := rep.Inspector; in == nil || in.Recorded < 300 || in.ClientMiB <= 0 || in.HeldMiB <= 0 || in.HeldMiB > in.CapMiB || in.SmallRatio <= 0 || in.BulkRatio <= 0 {
		t.Errorf("inspector row: got %+v, want at least 300 recorded, held within the cap, and ratios", in)
	}
	// The basic-auth row: its requests were answered with the page (wrk
	// checks every answer's size, so a 401 is no answer), at a ratio.
	// The pool's row: small req/s through two clients against one.
	variants := map[string]float64{}
	for _, v := range rep.Variants {
		variants[v.Target] = v.SmallRatio
	}
	if len(rep.Variants) != 2 || variants["tunnel-basic-auth"] <= 0 || variants["tunnel-pool"] <= 0 {
		t.Errorf("variant rows: got %+v, want tunnel-basic-auth's and tunnel-pool's ratios to tunnel", rep.Variants)
	}
	for _, m := range rep.Memory {
		if m.PeakMiB <= 0 || m.IdleGoroutines <= 0 || m.PeakGoroutines < m.IdleGoroutines || m.AfterGoroutines <= 0 {
			t.Errorf("memory row %+v: want a peak RSS and goroutine counts", m)
		}
	}
	if rep.Connect == nil || rep.Connect.P50.Median <= 0 {
		t.Errorf("connect: got %+v", rep.Connect)
	}
	// The tcp phase: every target's bulk rows, and connects for the TCP
	// pair; the tunnelled ones with their ratio to direct.
	tcpRows := map[string]TCPRow{}
	for _, r := range rep.TCP {
		tcpRows[r.Target+" "+r.Measure] = r
	}
	for _, k := range []string{"direct bulk-1", "direct bulk-8", "direct connects", "tunnel-connect bulk-1", "tunnel-connect bulk-8",
		"tunnel-connect connects", "direct-tls bulk-1", "direct-tls bulk-8", "tls-passthrough bulk-1", "tls-passthrough bulk-8"} {
		r, ok := tcpRows[k]
		if !ok || r.Value.Median <= 0 || (strings.HasPrefix(k, "tunnel") || strings.HasPrefix(k, "tls")) && r.Ratio <= 0 {
			t.Errorf("tcp %s: got %+v, want a positive figure (and a ratio to direct)", k, r)
		}
	}
	if len(rep.TCP) != 10 {
		t.Errorf("tcp rows: got %d, want 10", len(rep.TCP))
	}
	if len(rep.Idle) != len(o.Idle) || rep.Idle[0].DuringMiB <= 0 {
		t.Errorf("idle clients: got %+v", rep.Idle)
	}
	// The cluster phase: every figure there, the writes at least one per
	// connect and disconnect (the claim, the release), the idle clients
	// spread over the three nodes, and the failover's three times in order.
	if c := rep.Cluster; c == nil {
		t.Error("no cluster row")
	} else {
		if c.LocalReqPerSec.Median <= 0 || c.ForwardedReqPerSec.Median <= 0 || c.LocalP99.Median <= 0 || c.ForwardedP99.Median <= 0 ||
			c.LocalP50One.Median <= 0 || c.ForwardedP50One.Median <= 0 || c.Errors != 0 {
			t.Errorf("cluster small requests: %+v, want positive rates and p99, no error", c)
		}
		if c.ClaimP50.Median <= 0 || c.ClaimP99.Median < c.ClaimP50.Median {
			t.Errorf("cluster claims: p50 %v p99 %v", c.ClaimP50.Median, c.ClaimP99.Median)
		}
		if c.WritesPerConnect < 1 || c.WritesPerDisconnect < 1 || c.WritesPerHoldEnd <= 0 {
			t.Errorf("cluster etcd writes: %.2f per connect, %.2f per disconnect, %.2f per hold end", c.WritesPerConnect, c.WritesPerDisconnect, c.WritesPerHoldEnd)
		}
		held := 0
		for _, n := range c.IdleNodes {
			held += n.Clients
			if n.Clients <= 0 || n.DuringMiB <= 0 {
				t.Errorf("cluster idle node %+v", n)
			}
		}
		if len(c.IdleNodes) != 3 || held != slices.Max(o.Idle) {
			t.Errorf("cluster idle: %+v, want %d clients over three nodes", c.IdleNodes, slices.Max(o.Idle))
		}
		if c.FailoverServingS <= 0 || c.FailoverLeaseExpiredS <= 0 || c.FailoverNameFreeS < c.FailoverLeaseExpiredS {
			t.Errorf("cluster failover: serving %.2f s, lease %.2f s, free %.2f s", c.FailoverServingS, c.FailoverLeaseExpiredS, c.FailoverNameFreeS)
		}
	}
	if len(rep.Inflight) != 2 {
		t.Errorf("in-flight rows: got %+v, want tunneld and tunnel", rep.Inflight)
	}
	for _, r := range rep.Inflight {
		// Every request in flight holds at least one goroutine in each
		// (tunneld's own HTTP/1.1 path: its connection loop alone, until
		// the 200 ms watcher). "Before" may count a couple that are gone
		// by "during" (the last scrape's connection, a write flusher):
		// CI saw 19 more for 20 requests.
		const transient = 2
		if want := r.GoroutinesB + o.Inflight - transient; r.DuringMiB <= 0 || r.GoroutinesD < want {
			t.Errorf("in-flight row %+v: want RSS and at least %d more goroutines", r, o.Inflight-transient)
		}
	}
	if len(rep.Checks) == 0 {
		t.Error("no target checks")
	}
	// Under attack: every attack carried out against its tunneld, with the
	// healthy tunnel measured before and during. The verdicts themselves are
	// what fixes change, so only their presence is checked.
	if got, want := len(rep.Attacks), len(attacks()); got != want {
		t.Errorf("attack rows: got %d, want %d", got, want)
	}
	for _, a := range rep.Attacks {
		if a.Failed != "" || strings.Contains(a.Verdict, "TUNNELD DIED") {
			t.Errorf("attack %s: %s %s", a.ID, a.Failed, a.Verdict)
		}
		if a.RSSBeforeMiB <= 0 || a.RSSPeakMiB <= 0 || a.GoroutinesBefore <= 0 || a.GoroutinesPeak <= 0 {
			t.Errorf("attack %s: want tunneld's RSS and goroutines before and during, got %+v", a.ID, a)
		}
		if a.ReqPerSecBefore <= 0 || a.ReqPerSecDuring <= 0 || a.P99BeforeMS <= 0 || a.Seconds <= 0 {
			t.Errorf("attack %s: want the healthy load's rate and p99 before and during, got %+v", a.ID, a)
		}
		if a.Verdict == "" {
			t.Errorf("attack %s: no verdict", a.ID)
		}
	}
	// Each attack reports what it did. Not that it did all of it: a fixed
	// tunneld may cut an attack short (close the flood's connection at its
	// first frames, refuse a connect), and that is an outcome, not a
	// harness failure.
	for id, fig := range map[string]string{
		"1": "pings_sent", "2": "cross_served", "3a": "probe_status", "3b": "streams", "4": "forged_tried", "5": "requests", "6": "connects",
	} {
		for _, a := range rep.Attacks {
			if _, ok := a.Figures[fig]; a.ID == id && !ok {
				t.Errorf("attack %s: no %s in %+v", id, fig, a.Figures)
			}
		}
	}

	if err := rep.write(o); err != nil {
		t.Fatal(err)
	}
	j, err := os.ReadFile(filepath.Join(o.OutDir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(j, &back); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if len(back.Small) != len(rep.Small) {
		t.Errorf("results.json: %d small rows, want %d", len(back.Small), len(rep.Small))
	}
	md, err := os.ReadFile(filepath.Join(o.OutDir, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"### Summary", "| tunnel |", "### Idle clients", "### Cluster", "### Under attack"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q", want)
		}
	}
}

// buildBinaries builds tunneld and tunnel into a temporary directory.
func buildBinaries(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", bin+string(filepath.Separator), "./cmd/tunneld", "./cmd/tunnel")
	build.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return bin
}

// TestBench_PeersSmoke runs the peers phase with tiny sizes when make
// bench-peers has built the peers (bench/.peers/; CI does not, the build
// takes minutes): every target, peers included, must answer every request
// and byte, with CPU and peak RSS figures, and peers.md must be written.
func TestBench_PeersSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts processes")
	}
	peers, err := filepath.Abs(".peers")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"chisel", "frps", "frpc"} {
		if _, err := os.Stat(filepath.Join(peers, name)); err != nil {
			t.Skipf("peers not built (make bench-peers builds them): %v", err)
		}
	}
	o := smokeOptions(defaultOptions())
	o.Phases, o.PeersDir = "peers", peers
	for _, tool := range []*string{&o.Wrk, &o.Curl} {
		p, err := exec.LookPath(*tool)
		if err != nil {
			t.Skipf("the peers phase needs %s: %v", *tool, err)
		}
		*tool = p
	}
	o.BinDir, o.OutDir, o.NoPlots = buildBinaries(t), t.TempDir(), true
	rep := runSmoke(t, o)
	var got []string
	for _, p := range rep.Peers {
		got = append(got, p.Target)
		if p.ReqPerSec.Median <= 0 || p.P99.Median <= 0 || p.CPU1k.Median <= 0 || p.Errors != 0 {
			t.Errorf("%s small: %+v, want a positive rate, p99 and CPU, no error", p.Target, p)
		}
		if p.MBps1.Median <= 0 || p.MBps8.Median <= 0 || len(p.CPUGiB1.Runs) == 0 || len(p.CPUGiB8.Runs) == 0 {
			t.Errorf("%s bulk: %+v, want rates and CPU for 1 and 8 streams", p.Target, p)
		}
		if (p.Target == "direct") != (p.ServerPeakMiB == 0) || (p.Target == "direct") != (p.ClientPeakMiB == 0) {
			t.Errorf("%s: peak RSS server %.1f client %.1f, want both exactly when it has processes", p.Target, p.ServerPeakMiB, p.ClientPeakMiB)
		}
	}
	if want := "direct pipe tunnel tunnel-https chisel frp"; strings.Join(got, " ") != want {
		t.Errorf("peer rows: got %q, want %q", got, want)
	}
	if len(rep.Checks) != 9 {
		t.Errorf("peer targets: got %+v, want issue 14's nine", rep.Checks)
	}
	if err := rep.write(o); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(o.OutDir, "peers.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "### Against the peers") || !strings.Contains(string(md), "| frp |") {
		t.Errorf("peers.md lacks the peers table:\n%s", md)
	}
	if _, err := os.Stat(filepath.Join(o.OutDir, "results.md")); err == nil {
		t.Error("the peers phase alone wrote results.md, want it left to the full run")
	}
}

// externalTool finds a load generator the harness runs as a process. CI
// installs them (.ci/run), so that the path make bench measures with is the
// one checked; elsewhere the smoke test runs without, the in-process
// generator and the Go client standing in.
func externalTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed, and CI must run the smoke test with it (.ci/run installs it)", name)
	}
	t.Logf("%s is not installed: the smoke test runs without it (apt-get install %s)", name, name)
	return ""
}

func bulkClients(o options) []string {
	if o.Curl != "" {
		return []string{"go", "curl"}
	}
	return []string{"go"}
}

func TestStat_MedianMinMax(t *testing.T) {
	for _, tc := range []struct {
		in            []float64
		med, min, max float64
		formatted     string
	}{
		{[]float64{3}, 3, 3, 3, "3"},
		{[]float64{5, 1, 3}, 3, 1, 5, "3 (1-5)"},
		{[]float64{4, 1, 2, 3}, 2.5, 1, 4, "2 (1-4)"},
		{[]float64{1500, 2500, 12000}, 2500, 1500, 12000, "2,500 (1,500-12,000)"},
	} {
		var s Stat
		for _, v := range tc.in {
			s.add(v)
		}
		if s.Median != tc.med || s.Min != tc.min || s.Max != tc.max {
			t.Errorf("%v: got median %v min %v max %v, want %v %v %v", tc.in, s.Median, s.Min, s.Max, tc.med, tc.min, tc.max)
		}
		if got := s.fmt(0); got != tc.formatted {
			t.Errorf("%v: formatted %q, want %q", tc.in, got, tc.formatted)
		}
	}
}

// TestLogTap_CountsLinesAcrossWrites: tunneld's stderr reaches the tap in
// pieces that split lines anywhere; the healthy load's access lines are left
// out and the attacker's counted.
func TestLogTap_CountsLinesAcrossWrites(t *testing.T) {
	lines := []string{
		`{"level":"warn","message":"ping"}` + "\n",
		`{"component":"access","remote_addr":"127.0.0.1:5000","message":"request"}` + "\n",
		`{"component":"access","remote_addr":"127.0.0.2:6000","message":"request"}` + "\n",
	}
	all := strings.Join(lines, "")
	for _, chunk := range []int{1, 7, len(all)} {
		var tap logTap
		for i := 0; i < len(all); i += chunk {
			tap.Write([]byte(all[i:min(i+chunk, len(all))]))
		}
		got := tap.count()
		want := logCount{bytes: int64(len(lines[0]) + len(lines[2])), lines: 2, attackerAccess: 1}
		if got != want {
			t.Errorf("writes of %d bytes: got %+v, want %+v", chunk, got, want)
		}
	}
}

// runSmoke runs the harness with o, bounded in time, and fails the test
// with the harness's log if the run fails.
func runSmoke(t *testing.T, o options) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var log strings.Builder
	rep, err := run(ctx, o, &log)
	if err != nil {
		t.Fatalf("run: %v\nlog:\n%s", err, log.String())
	}
	return rep
}
