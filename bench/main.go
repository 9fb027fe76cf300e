// Command bench measures tunnel against the same backend reached directly
// and through a bare TLS + yamux pipe, in one run on loopback, and prints a
// markdown table (and writes JSON and plots). make bench runs it; see
// BENCHMARKS.md for what each figure means.
//
//	go run ./bench -bin bin -out bench/results
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the harness's settings; flags set them.
type options struct {
	BinDir   string        // holds tunneld and tunnel
	OutDir   string        // results.json, results.md, plots
	Duration time.Duration // each closed- or open-loop run
	Repeat   int           // runs of each measurement; the median is reported
	Conns    []int         // closed-loop concurrencies
	Rates    []int         // open-loop rates, req/s
	Bulk     int64         // bytes per bulk transfer (split across streams)
	Connects int           // connects timed
	Idle     []int         // idle clients held
	Inflight int           // slow requests held in flight through one client
	Phases   string        // comma-separated subset of small,open,bulk,connect,tcp,idle,inflight,cluster,attack,peers
	Wrk      string        // wrk binary: HTTP/1.1 small requests; "": the in-process generator instead
	Curl     string        // curl binary: bulk beside the Go client; "": the Go client only
	PeersDir string        // holds chisel, frps and frpc (the peers phase)
	Profile  string        // where the peers phase saves tunneld's profiles under wrk; "": none
	Smoke    bool          // tiny sizes: proves the harness works, measures nothing
	// InspectFull fills the inspector's store before the small phase, so
	// that its ratios are those of a full store from the first run.
	InspectFull bool
	NoPlots     bool
}

func defaultOptions() options {
	return options{
		BinDir:   "bin",
		OutDir:   "bench/results",
		Duration: 2 * time.Second,
		Repeat:   3,
		Conns:    []int{1, 64, 256},
		Rates:    []int{500, 2000, 5000},
		Bulk:     1 << 30,
		Connects: 1000,
		Idle:     []int{1000, 10000},
		Inflight: 10000,
		Phases:   "small,open,bulk,connect,tcp,idle,inflight,cluster,attack",
		Wrk:      "wrk",
		Curl:     "curl",
		PeersDir: "bench/.peers",
	}
}

// smokeOptions shrinks everything to a few seconds in all.
func smokeOptions(o options) options {
	o.Duration = 200 * time.Millisecond
	o.Repeat = 1
	o.Conns = []int{1, 4}
	o.Rates = []int{50}
	o.Bulk = 4 << 20
	o.Connects = 5
	o.Idle = []int{5}
	o.Inflight = 20
	o.Smoke = true
	return o
}

func main() {
	if ok, err := runRole(); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	o := defaultOptions()
	var conns, rates, idle string
	var smoke bool
	flag.StringVar(&o.BinDir, "bin", o.BinDir, "directory holding the tunneld and tunnel binaries")
	flag.StringVar(&o.OutDir, "out", o.OutDir, "directory for results.json, results.md and the plots (attack.json and attack.md for -phases attack alone)")
	flag.DurationVar(&o.Duration, "duration", o.Duration, "length of each closed- or open-loop run")
	flag.IntVar(&o.Repeat, "repeat", o.Repeat, "runs of each measurement (median, min and max are reported)")
	flag.StringVar(&conns, "conns", "1,64,256", "closed-loop concurrent connections, comma-separated")
	flag.StringVar(&rates, "rates", "500,2000,5000", "open-loop rates in req/s, comma-separated")
	flag.Int64Var(&o.Bulk, "bulk", o.Bulk, "bytes per bulk transfer, split across the streams")
	flag.IntVar(&o.Connects, "connects", o.Connects, "client connects timed")
	flag.StringVar(&idle, "idle", "1000,10000", "idle clients held for the memory-per-client figure, comma-separated")
	flag.IntVar(&o.Inflight, "inflight", o.Inflight, "slow requests held in flight at once through one client, for the memory-per-stream figure")
	flag.StringVar(&o.Phases, "phases", o.Phases, "phases to run: small,open,bulk,connect,tcp,idle,inflight,cluster,attack,peers (peers alone: make bench-peers; it writes peers.json and peers.md)")
	flag.StringVar(&o.Wrk, "wrk", o.Wrk, "wrk, which drives the HTTP/1.1 small requests; empty: the in-process generator instead")
	flag.StringVar(&o.Curl, "curl", o.Curl, "curl, which measures bulk beside the Go client; empty: the Go client only")
	flag.StringVar(&o.Profile, "profile", "", "directory: the peers phase saves tunneld's CPU profile during the first wrk run through the tunnel (plain-HTTP visitors) and its allocation profile after it (tunneld gets --admin-pprof)")
	flag.StringVar(&o.PeersDir, "peers", o.PeersDir, "directory holding chisel, frps and frpc for the peers phase (scripts/build-peers.sh)")
	flag.BoolVar(&smoke, "smoke", false, "tiny sizes, a few seconds: checks the harness, measures nothing")
	flag.BoolVar(&o.NoPlots, "no-plots", false, "skip the gnuplot plots")
	flag.BoolVar(&o.InspectFull, "inspect-full", false, "fill the request inspector's store before the small phase, so that tunnel-inspect is measured full (every exchange evicts one) from its first run, as a full make bench measures it after its first runs")
	flag.Parse()
	var err error
	if o.Conns, err = intList(conns); err == nil {
		if o.Rates, err = intList(rates); err == nil {
			o.Idle, err = intList(idle)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if smoke {
		o = smokeOptions(o)
	}
	// Only the small, bulk and peers phases run wrk and curl: the others
	// need not have them installed.
	if strings.Contains(o.Phases, "small") || strings.Contains(o.Phases, "bulk") || strings.Contains(o.Phases, "peers") {
		for _, tool := range []*string{&o.Wrk, &o.Curl} {
			if *tool == "" {
				continue
			}
			p, err := exec.LookPath(*tool)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: %v (make bench installs it; -wrk '' or -curl '' does without)\n", err)
				os.Exit(2)
			}
			*tool = p
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	rep.Command = strings.Join(os.Args, " ")
	if err := rep.write(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Print(rep.markdown())
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: want positive integers, comma-separated", s)
		}
		out = append(out, n)
	}
	return out, nil
}
