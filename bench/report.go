package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/internal/units"
)

// Stat is one figure over the repeats: median, min and max.
type Stat struct {
	Runs   []float64 `json:"runs"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
}

func (s *Stat) add(v float64) {
	s.Runs = append(s.Runs, v)
	r := slices.Clone(s.Runs)
	slices.Sort(r)
	s.Min, s.Max = r[0], r[len(r)-1]
	if n := len(r); n%2 == 1 {
		s.Median = r[n/2]
	} else {
		s.Median = (r[n/2-1] + r[n/2]) / 2
	}
}

// fmtStat prints "median (min-max)", or just the value for one run.
func (s Stat) fmt(prec int) string {
	if len(s.Runs) == 0 {
		return "-"
	}
	f := func(v float64) string { return groupThousands(fmt.Sprintf("%.*f", prec, v)) }
	if len(s.Runs) == 1 {
		return f(s.Median)
	}
	return fmt.Sprintf("%s (%s-%s)", f(s.Median), f(s.Min), f(s.Max))
}

func groupThousands(s string) string {
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	out := b.String()
	if neg {
		out = "-" + out
	}
	if frac != "" {
		out += "." + frac
	}
	return out
}

type SmallRow struct {
	Target    string  `json:"target"`
	Proto     string  `json:"proto"`
	Conns     int     `json:"conns"`
	ReqPerSec Stat    `json:"req_per_sec"`
	Ratio     float64 `json:"ratio_to_direct"`
	P50       Stat    `json:"p50_ms"`
	P99       Stat    `json:"p99_ms"`
	P999      Stat    `json:"p999_ms"`
	Errors    int64   `json:"errors"`
	Generator string  `json:"generator"` // wrk, or go: the in-process generator
	// CPU milliseconds per 1,000 requests of the target's server and client
	// processes; for direct under wrk, the backend's (the harness's own).
	ServerCPU1k Stat `json:"server_cpu_ms_per_1k"`
	ClientCPU1k Stat `json:"client_cpu_ms_per_1k"`
}

type OpenRow struct {
	Target   string  `json:"target"`
	Rate     int     `json:"rate"`
	Achieved Stat    `json:"achieved_req_per_sec"`
	P50      Stat    `json:"p50_ms"`
	P99      Stat    `json:"p99_ms"`
	P999     Stat    `json:"p999_ms"`
	AddedP99 float64 `json:"added_p99_ms_vs_direct"`
	Errors   int64   `json:"errors"`
}

type BulkRow struct {
	Target       string  `json:"target"`
	Dir          string  `json:"dir"`
	Streams      int     `json:"streams"`
	Client       string  `json:"client"` // go (in the harness) or curl (a process per stream)
	MBps         Stat    `json:"mb_per_sec"`
	Ratio        float64 `json:"ratio_to_direct"`
	ServerCPUGiB Stat    `json:"server_cpu_s_per_gib"`
	ClientCPUGiB Stat    `json:"client_cpu_s_per_gib"`
}

type MemRow struct {
	Process         string  `json:"process"`
	IdleMiB         float64 `json:"idle_rss_mib"`
	PeakMiB         float64 `json:"peak_rss_mib"`
	AfterMiB        float64 `json:"after_rss_mib"`
	IdleGoroutines  int     `json:"idle_goroutines"`
	PeakGoroutines  int     `json:"peak_goroutines"`
	AfterGoroutines int     `json:"after_goroutines"`
}

type ConnectRow struct {
	N   int  `json:"n"`
	P50 Stat `json:"p50_ms"`
	P99 Stat `json:"p99_ms"`
}

type IdleRow struct {
	Clients      int     `json:"clients"`
	BeforeMiB    float64 `json:"before_rss_mib"`
	DuringMiB    float64 `json:"during_rss_mib"`
	PerClientKiB float64 `json:"per_client_kib"`
}

// Check is one of the targets and whether this run meets it.
type Check struct {
	Target string `json:"target"`
	Got    string `json:"got"`
	Met    bool   `json:"met"`
}

// Report is one run's results.
type Report struct {
	Date     string        `json:"date"`
	Machine  string        `json:"machine"`
	Command  string        `json:"command"`
	Smoke    bool          `json:"smoke"`
	Duration string        `json:"duration_per_run"`
	Repeat   int           `json:"repeat"`
	Bulk     int64         `json:"bulk_bytes"`
	Small    []SmallRow    `json:"small"`
	Open     []OpenRow     `json:"open"`
	BulkRuns []BulkRow     `json:"bulk_runs"`
	Memory   []MemRow      `json:"memory"`
	Connect  *ConnectRow   `json:"connect,omitempty"`
	Idle     []IdleRow     `json:"idle_clients"`
	Inflight []InflightRow `json:"in_flight_streams"`
	Attacks  []AttackRow   `json:"under_attack"`
	Peers    []PeerRow     `json:"peers,omitempty"`
	TCP      []TCPRow      `json:"tcp,omitempty"`
	Cluster  *ClusterRow   `json:"cluster,omitempty"`
	// Inspector is the request inspector's cost, with the load phases.
	Inspector *InspectorRow `json:"inspector,omitempty"`
	// Variants are tunnels with one setting changed, against tunnel.
	Variants []VariantRow `json:"variants,omitempty"`
	// WrkSeconds is each wrk run's length: wrk counts in whole seconds.
	WrkSeconds int      `json:"wrk_seconds_per_run,omitempty"`
	PeerConns  int      `json:"peer_conns,omitempty"` // wrk -c of the peers phase
	Checks     []Check  `json:"targets"`
	Notes      []string `json:"notes"`
}

func newReport(o options) *Report {
	return &Report{
		Date:     time.Now().UTC().Format(time.RFC3339),
		Machine:  machine(),
		Smoke:    o.Smoke,
		Duration: o.Duration.String(),
		Repeat:   o.Repeat,
		Bulk:     o.Bulk,
	}
}

// finish fills in ratios to direct and the target checks.
func (r *Report) finish() {
	for i, s := range r.Small {
		if d := r.findSmall("direct", s.Proto, s.Conns); d != nil && d.ReqPerSec.Median > 0 {
			r.Small[i].Ratio = s.ReqPerSec.Median / d.ReqPerSec.Median
		}
	}
	for i, o := range r.Open {
		for _, d := range r.Open {
			if d.Target == "direct" && d.Rate == o.Rate {
				r.Open[i].AddedP99 = o.P99.Median - d.P99.Median
			}
		}
	}
	for i, b := range r.BulkRuns {
		for _, d := range r.BulkRuns {
			if d.Target == "direct" && d.Dir == b.Dir && d.Streams == b.Streams && d.Client == b.Client && d.MBps.Median > 0 {
				r.BulkRuns[i].Ratio = b.MBps.Median / d.MBps.Median
			}
		}
	}

	if s := r.findSmall("tunnel", "http/1.1", 64); s != nil {
		r.Checks = append(r.Checks, Check{"small requests >= 0.30 of direct (HTTP/1.1, 64 conns; tunnel: plain-HTTP visitors)",
			fmt.Sprintf("%.2f", s.Ratio), s.Ratio >= 0.30})
	}
	for _, o := range r.Open {
		if o.Target == "tunnel" && o.Rate == 2000 {
			r.Checks = append(r.Checks, Check{"adds <= 1 ms to direct's p99 at 2,000 req/s",
				fmt.Sprintf("%+.2f ms", o.AddedP99), o.AddedP99 <= 1})
		}
	}
	for _, b := range r.BulkRuns {
		if b.Target == "tunnel" {
			r.Checks = append(r.Checks, Check{fmt.Sprintf("bulk %s, %d stream(s) >= 0.25 of direct (%s client)", b.Dir, b.Streams, b.Client),
				fmt.Sprintf("%.2f", b.Ratio), b.Ratio >= 0.25})
		}
	}
	for _, m := range r.Memory {
		if m.Process == "tunneld" {
			r.Checks = append(r.Checks, Check{"tunneld peak RSS under load <= 45 MiB (plain-HTTP visitors)",
				fmt.Sprintf("%.1f MiB", m.PeakMiB), m.PeakMiB <= 45})
		}
	}
	r.Checks = append(r.Checks, r.inspectorChecks()...)
	r.Checks = append(r.Checks, r.variantRows()...)
	r.Checks = append(r.Checks, r.peerChecks()...)
	for _, i := range r.Idle {
		r.Checks = append(r.Checks, Check{fmt.Sprintf("tunneld memory per idle client <= 64 KiB (%d clients)", i.Clients),
			fmt.Sprintf("%.1f KiB", i.PerClientKiB), i.PerClientKiB <= 64})
	}
	if c := r.Cluster; c != nil && c.LocalReqPerSec.Median > 0 {
		r.Checks = append(r.Checks, Check{fmt.Sprintf("cluster: forwarded small requests >= 0.8 of local req/s (HTTP/1.1, %d conns)", c.Conns),
			fmt.Sprintf("%.2f", c.Ratio), c.Ratio >= 0.8})
		r.Checks = append(r.Checks, Check{fmt.Sprintf("cluster: forwarding adds < 1 ms at p50 (%d conns)", c.Conns),
			fmt.Sprintf("%+.2f ms", c.AddedP50), c.AddedP50 < 1})
		r.Checks = append(r.Checks, Check{"cluster: forwarding adds < 1 ms at p50 (one connection)",
			fmt.Sprintf("%+.2f ms", c.AddedP50One), c.AddedP50One < 1})
	}
	for _, a := range r.Attacks {
		r.Checks = append(r.Checks, Check{fmt.Sprintf("attack %s (%s): tunneld RSS +<= %d MiB, goroutines +<= %s, healthy req/s >= %.1f of before",
			a.ID, a.Name, attackMaxRSSMiB, groupThousands(fmt.Sprint(attackMaxGoroutines)), attackMinRatio),
			fmt.Sprintf("%+.1f MiB, %s, %.2f", a.rssDelta(), signed(a.gDelta()), a.ratio()),
			a.Failed == "" && a.rssDelta() <= attackMaxRSSMiB && a.gDelta() <= attackMaxGoroutines && a.ratio() >= attackMinRatio})
		if a.Safe != nil {
			r.Checks = append(r.Checks, Check{fmt.Sprintf("attack %s: %s", a.ID, attackGoal[a.ID]), a.short(), *a.Safe})
		}
	}
}

func signed(n int) string {
	if n >= 0 {
		return "+" + groupThousands(fmt.Sprint(n))
	}
	return groupThousands(fmt.Sprint(n))
}

// attackGoal is what each attack's own verdict asks of tunneld.
var attackGoal = map[string]string{
	"2":  "no visitor of the new owner served by the former owner's service",
	"3a": "another visitor of the stalled tunnel is served during the stall",
	"4":  "no forged Host or forwarding header reaches the service",
	"5":  "every cut request logged once, in-flight counts back to 0",
	"6":  "held names of one owner bounded (<= 32, the default per-owner tunnel limit)",
}

// short is the figure behind an attack's own verdict.
func (a AttackRow) short() string {
	f := a.Figures
	switch a.ID {
	case "2":
		return fmt.Sprintf("%.0f of %.0f", f["cross_served"], f["visitors"])
	case "3a":
		return fmt.Sprintf("status %.0f", f["probe_status"])
	case "4":
		return fmt.Sprintf("%.0f of %.0f", f["forged_reached"], f["forged_tried"])
	case "5":
		return fmt.Sprintf("%.0f lines / %.0f requests, %.0f in flight", f["access_lines"], f["requests"], f["tunnel_in_flight_after"])
	case "6":
		return fmt.Sprintf("about %.0f held", f["held"])
	}
	return ""
}

func (r *Report) findSmall(target, proto string, conns int) *SmallRow {
	for i := range r.Small {
		if s := &r.Small[i]; s.Target == target && s.Proto == proto && s.Conns == conns {
			return s
		}
	}
	return nil
}

func (r *Report) findBulk(target, dir string, streams int, client string) *BulkRow {
	for i := range r.BulkRuns {
		if b := &r.BulkRuns[i]; b.Target == target && b.Dir == dir && b.Streams == streams && b.Client == client {
			return b
		}
	}
	return nil
}

// smallGenerator names what drove the HTTP/1.1 small requests.
func (r *Report) smallGenerator() string {
	for _, s := range r.Small {
		if s.Proto == "http/1.1" {
			return s.Generator
		}
	}
	return "-"
}

// bulkClient is the client the summary quotes: curl when it ran, as users
// measure.
func (r *Report) bulkClient() string {
	for _, b := range r.BulkRuns {
		if b.Client == "curl" {
			return "curl"
		}
	}
	return "go"
}

// markdown renders the report as the tables in BENCHMARKS.md.
func (r *Report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	if len(r.Small) > 0 || len(r.Open) > 0 || len(r.BulkRuns) > 0 || r.Connect != nil || len(r.Peers) > 0 || r.Cluster != nil {
		w("Run %s on %s; %s per run, median (min-max) of %d runs.\n\n", r.Date, r.Machine, r.Duration, r.Repeat)
	} else {
		w("Run %s on %s.\n\n", r.Date, r.Machine)
	}
	if r.Smoke {
		w("**Smoke run: tiny sizes, the figures mean nothing.**\n\n")
	}

	// Nothing to summarise when only the phases with their own tables ran.
	if len(r.Small) > 0 || len(r.BulkRuns) > 0 || len(r.Memory) > 0 {
		w("### Summary\n\n")
		w("| | small req/s (HTTP/1.1, 64 conns, %s) | vs direct | p99 ms | one-stream MB/s (down, %s) | vs direct | 8-stream MB/s (down, %s) | vs direct | server RSS peak |\n",
			r.smallGenerator(), r.bulkClient(), r.bulkClient())
		w("|---|---|---|---|---|---|---|---|---|\n")
		for _, t := range []string{"direct", "pipe", "tunnel", "tunnel-https", "tunnel-inspect"} {
			row := []string{t, "-", "-", "-", "-", "-", "-", "-", "-"}
			if s := r.findSmall(t, "http/1.1", 64); s != nil {
				row[1], row[2], row[3] = s.ReqPerSec.fmt(0), fmt.Sprintf("%.2f", s.Ratio), s.P99.fmt(1)
			}
			if bl := r.findBulk(t, "down", 1, r.bulkClient()); bl != nil {
				row[4], row[5] = bl.MBps.fmt(0), fmt.Sprintf("%.2f", bl.Ratio)
			}
			if bl := r.findBulk(t, "down", 8, r.bulkClient()); bl != nil {
				row[6], row[7] = bl.MBps.fmt(0), fmt.Sprintf("%.2f", bl.Ratio)
			}
			server := map[string]string{"tunnel": "tunneld", "tunnel-https": "tunneld (https)", "tunnel-inspect": "tunneld (inspect)"}[t]
			for _, m := range r.Memory {
				if server != "" && m.Process == server {
					row[8] = fmt.Sprintf("%.1f MiB", m.PeakMiB)
				}
			}
			w("| %s |\n", strings.Join(row, " | "))
		}
	}

	if len(r.Checks) > 0 {
		w("\n### Targets\n\n| target | this run | met |\n|---|---|---|\n")
		for _, c := range r.Checks {
			met := "no"
			if c.Met {
				met = "yes"
			}
			w("| %s | %s | %s |\n", c.Target, c.Got, met)
		}
	}

	if len(r.Small) > 0 {
		w("\n### Small requests (closed loop, 1 KiB page)\n\n")
		w("HTTP/1.1 load from wrk (a process of its own, `-t2`, or `-t1` for one connection); HTTP/2 from the in-process\n")
		w("generator (\"go\"), which shares the harness's process with the backend. Server CPU for direct under wrk is the\n")
		w("backend's.\n\n")
		w("| target | protocol | generator | conns | req/s | vs direct | p50 ms | p99 ms | p99.9 ms | server CPU ms / 1k req | client CPU ms / 1k req | errors |\n")
		w("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range r.Small {
			w("| %s | %s | %s | %d | %s | %.2f | %s | %s | %s | %s | %s | %d |\n", s.Target, s.Proto, s.Generator, s.Conns,
				s.ReqPerSec.fmt(0), s.Ratio, s.P50.fmt(2), s.P99.fmt(2), s.P999.fmt(2),
				s.ServerCPU1k.fmt(0), s.ClientCPU1k.fmt(0), s.Errors)
		}
	}
	if len(r.Open) > 0 {
		w("\n### Fixed rate (open loop, HTTP/1.1 keep-alive, latency from the scheduled send time)\n\n")
		w("| target | rate req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | p99 added vs direct, ms | errors |\n")
		w("|---|---|---|---|---|---|---|---|\n")
		for _, o := range r.Open {
			w("| %s | %s | %s | %s | %s | %s | %+.2f | %d |\n", o.Target, groupThousands(fmt.Sprint(o.Rate)),
				o.Achieved.fmt(0), o.P50.fmt(2), o.P99.fmt(2), o.P999.fmt(2), o.AddedP99, o.Errors)
		}
	}
	if len(r.BulkRuns) > 0 {
		w("\n### Bulk (%s per transfer, split across the streams, HTTP/1.1)\n\n", units.Bytes(r.Bulk))
		w("Client go: the Go client in the harness's process; curl: one curl process per stream (down: GET, up: PUT of a\n")
		w("file). MB/s from the first start to the last end. Server CPU for direct with curl is the backend's.\n\n")
		w("| target | direction | streams | client | MB/s | vs direct | server CPU s / GiB | client CPU s / GiB |\n")
		w("|---|---|---|---|---|---|---|---|\n")
		for _, bl := range r.BulkRuns {
			w("| %s | %s | %d | %s | %s | %.2f | %s | %s |\n", bl.Target, bl.Dir, bl.Streams, bl.Client, bl.MBps.fmt(0), bl.Ratio,
				bl.ServerCPUGiB.fmt(2), bl.ClientCPUGiB.fmt(2))
		}
	}
	if in := r.Inspector; in != nil {
		w("\n### Request inspector (tunnel-inspect: the client with --inspect on, its own pair, against tunnel in the same run)\n\n")
		w("| small req/s, on / off (HTTP/1.1, %d conns) | p99, on / off | one-stream MB/s down, on / off | exchanges recorded | held by them | client RSS then (cap %.0f MiB) |\n|---|---|---|---|---|---|\n", in.SmallConns, in.CapMiB)
		w("| %.2f | %.2f | %.2f | %s | %.1f MiB | %.1f MiB |\n", in.SmallRatio, in.P99Ratio, in.BulkRatio,
			groupThousands(fmt.Sprint(in.Recorded)), in.HeldMiB, in.ClientMiB)
	}
	r.writeVariants(w)
	if len(r.Memory) > 0 {
		w("\n### Memory and goroutines\n\n")
		w("\"(https)\" is the second pair, which only the tunnel-https rows load, \"(inspect)\" the third, the tunnel-inspect rows'.\n")
		w("Peak RSS is VmHWM over the load phases;\n")
		w("peak goroutines the most seen in samples every 200 ms during them.\n\n")
		w("| process | RSS idle, MiB | peak under load | after load | goroutines idle | peak under load | after load |\n|---|---|---|---|---|---|---|\n")
		for _, m := range r.Memory {
			w("| %s | %.1f | %.1f | %.1f | %d | %d | %d |\n", m.Process, m.IdleMiB, m.PeakMiB, m.AfterMiB,
				m.IdleGoroutines, m.PeakGoroutines, m.AfterGoroutines)
		}
	}
	if r.Connect != nil {
		w("\n### Client connect (TLS + Hello + Welcome), %d connects one after another\n\n", r.Connect.N)
		w("| p50 ms | p99 ms |\n|---|---|\n| %s | %s |\n", r.Connect.P50.fmt(2), r.Connect.P99.fmt(2))
	}
	if len(r.TCP) > 0 {
		w("\n### TCP and TLS tunnels (a local source server; bulk MB/s downloaded, %s split over the connections; connects per second, 8 at a time)\n\n", fmt.Sprintf("%d MiB", r.Bulk>>20))
		w("| target | measure | value | vs direct |\n|---|---|---|---|\n")
		for _, t := range r.TCP {
			ratio := "-"
			if t.Ratio > 0 {
				ratio = fmt.Sprintf("%.2f", t.Ratio)
			}
			w("| %s | %s | %s | %s |\n", t.Target, t.Measure, t.Value.fmt(1), ratio)
		}
	}
	if len(r.Inflight) > 0 {
		w("\n### Requests in flight through one client (a fresh tunneld and tunnel; the backend holds every request until all have arrived)\n\n")
		w("| in flight | process | RSS before, MiB | with them in flight, MiB | per stream, KiB | goroutines before | in flight |\n|---|---|---|---|---|---|---|\n")
		for _, i := range r.Inflight {
			w("| %s | %s | %.1f | %.1f | %.1f | %d | %d |\n", groupThousands(fmt.Sprint(i.N)), i.Process, i.BeforeMiB, i.DuringMiB,
				i.PerStreamKB, i.GoroutinesB, i.GoroutinesD)
		}
	}
	if len(r.Idle) > 0 {
		w("\n### Idle clients (a fresh tunneld each)\n\n| clients | tunneld RSS before, MiB | with the clients, MiB | per client, KiB |\n|---|---|---|---|\n")
		for _, i := range r.Idle {
			w("| %s | %.1f | %.1f | %.1f |\n", groupThousands(fmt.Sprint(i.Clients)), i.BeforeMiB, i.DuringMiB, i.PerClientKiB)
		}
	}
	if r.Cluster != nil {
		r.clusterMarkdown(w)
	}
	if len(r.Attacks) > 0 {
		w("\n### Under attack (a fresh tunneld per attack, each attack from %s only, the healthy tunnel under steady load from 127.0.0.1)\n\n", attackerIP)
		w("Before: the seconds before the attack. During: from its start until tunneld's goroutines are back near before (bounded).\n")
		w("Healthy req/s: at a fixed rate, answered per second before, during, and in the worst whole second during; the ratio is\n")
		w("the worst second's (or the whole span's, if lower) against before. p99 from each request's scheduled send time.\n")
		w("Control: the same load sent straight to the backend meanwhile, its worst second against before: when it drops too, the\n")
		w("machine or the harness stalled, not only tunneld.\n")
		w("Log bytes: what tunneld wrote to stderr during it, less the healthy load's access lines.\n\n")
		w("| attack | seconds | tunneld RSS MiB before / peak (+) | goroutines before / peak (+) / at the end | healthy req/s before / during / worst second (ratio) | healthy p99 ms before / during | healthy errors | control | log bytes (lines) |\n")
		w("|---|---|---|---|---|---|---|---|---|\n")
		for _, a := range r.Attacks {
			w("| %s %s | %.1f | %.1f / %.1f (%+.1f) | %s / %s (%s) / %s | %s / %s / %s (%.2f) | %.1f / %.1f | %d | %.2f | %s (%s) |\n",
				a.ID, a.Name, a.Seconds, a.RSSBeforeMiB, a.RSSPeakMiB, a.rssDelta(),
				groupThousands(fmt.Sprint(a.GoroutinesBefore)), groupThousands(fmt.Sprint(a.GoroutinesPeak)), signed(a.gDelta()),
				groupThousands(fmt.Sprint(a.GoroutinesAfter)),
				groupThousands(fmt.Sprintf("%.0f", a.ReqPerSecBefore)), groupThousands(fmt.Sprintf("%.0f", a.ReqPerSecDuring)),
				groupThousands(fmt.Sprintf("%.0f", a.ReqPerSecWorst)), a.ratio(),
				a.P99BeforeMS, a.P99DuringMS, a.ErrorsDuring, a.ControlRatio,
				groupThousands(fmt.Sprint(a.LogBytes)), groupThousands(fmt.Sprint(a.LogLines)))
		}
		w("\n| attack | verdict |\n|---|---|\n")
		for _, a := range r.Attacks {
			v := a.Verdict
			if a.Failed != "" {
				v = "NOT CARRIED OUT: " + a.Failed + "; " + v
			}
			if a.FirstError != "" {
				v += fmt.Sprintf(" (healthy load's first error: %s)", a.FirstError)
			}
			w("| %s | %s |\n", a.ID, strings.ReplaceAll(v, "|", "/"))
		}
	}
	if len(r.Peers) > 0 {
		r.peersMarkdown(w)
	}
	for _, n := range r.Notes {
		w("\n%s\n", n)
	}
	return b.String()
}

// write saves results.json and results.md in o.OutDir, and the plots; a
// run of the attack or peers phase alone saves attack.* or peers.* instead,
// so that it leaves the last full run's results in place.
func (r *Report) write(o options) error {
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return err
	}
	base := "results"
	switch strings.TrimSpace(o.Phases) {
	case "attack", "peers":
		base = strings.TrimSpace(o.Phases)
	}
	if !o.NoPlots && len(r.Small) > 0 {
		if err := r.plot(o.OutDir); err != nil {
			r.Notes = append(r.Notes, fmt.Sprintf("No plots: %v.", err))
		}
	}
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.OutDir, base+".json"), j, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.OutDir, base+".md"), []byte(r.markdown()), 0o644)
}

// plot draws req/s and p99 against concurrency, and tunneld's RSS against
// idle clients, with gnuplot.
func (r *Report) plot(dir string) error {
	gp, err := exec.LookPath("gnuplot")
	if err != nil {
		return errNoGnuplot
	}
	var script strings.Builder
	series := func(metric func(SmallRow) float64) string {
		var parts []string
		var data strings.Builder
		for _, proto := range []string{"http/1.1", "h2"} {
			for _, t := range []string{"direct", "pipe", "tunnel", "tunnel-https", "tunnel-inspect"} {
				var pts []string
				for _, s := range r.Small {
					if s.Target == t && s.Proto == proto {
						pts = append(pts, fmt.Sprintf("%d %g", s.Conns, metric(s)))
					}
				}
				if len(pts) == 0 {
					continue
				}
				data.WriteString(strings.Join(pts, "\n") + "\ne\n")
				parts = append(parts, fmt.Sprintf("'-' with linespoints title '%s %s'", t, proto))
			}
		}
		return strings.Join(parts, ", ") + "\n" + data.String()
	}
	script.WriteString("set terminal pngcairo size 900,540 noenhanced\nset grid\nset logscale x 2\nset key outside right\n")
	script.WriteString("set xlabel 'concurrent connections'\n")
	fmt.Fprintf(&script, "set output '%s'\nset title 'small requests: req/s (1 KiB page, closed loop)'\nset ylabel 'req/s'\nplot %s",
		filepath.Join(dir, "reqs.png"), series(func(s SmallRow) float64 { return s.ReqPerSec.Median }))
	fmt.Fprintf(&script, "set output '%s'\nset title 'small requests: p99 latency'\nset ylabel 'p99 ms'\nplot %s",
		filepath.Join(dir, "latency.png"), series(func(s SmallRow) float64 { return s.P99.Median }))
	if len(r.Idle) > 0 {
		var pts strings.Builder
		fmt.Fprintf(&pts, "0 %g\n", r.Idle[0].BeforeMiB)
		for _, i := range r.Idle {
			fmt.Fprintf(&pts, "%d %g\n", i.Clients, i.DuringMiB)
		}
		fmt.Fprintf(&script, "unset logscale x\nset output '%s'\nset title 'tunneld RSS against idle connected clients'\nset xlabel 'connected clients'\nset ylabel 'RSS MiB'\nplot '-' with linespoints title 'tunneld'\n%se\n",
			filepath.Join(dir, "memory.png"), pts.String())
	}
	cmd := exec.Command(gp)
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %v: %s", err, out)
	}
	return nil
}
