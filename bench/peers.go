package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/tunnelhq/tunnel/internal/units"
)

// The peers phase (make bench-peers) runs chisel and frp, built from the Go
// module proxy at pinned versions by scripts/build-peers.sh, beside direct,
// the pipe and both tunnel pairs, with the same load from the same
// generators: wrk for small requests and curl for bulk. A ratio to a peer
// measured in another run, on another day, says little on a shared machine;
// in one run the drift hits every row alike.

// Versions scripts/build-peers.sh builds; the report names them.
const (
	chiselVersion = "v1.11.3"
	frpVersion    = "v0.70.0"
)

// peer is one peer's server and client processes.
type peer struct {
	server, client *proc
}

// peerDescribe says how each target of the peers phase runs.
var peerDescribe = map[string]string{
	"direct":       "the backend, no tunnel",
	"pipe":         "bare TLS + yamux pipe from pkg/mux, no HTTP",
	"tunnel":       "tunneld + tunnel, visitors in plain HTTP",
	"tunnel-https": "tunneld + tunnel, visitors in HTTPS",
	"chisel":       "chisel " + chiselVersion + ", raw TCP forward (server --reverse, client R:), SSH over WebSocket",
	"frp":          "frp " + frpVersion + ", HTTP vhost, TLS and tcpMux (frpc's defaults)",
}

// freePort returns a loopback port nothing listens on right now: chisel
// and frp take ports, not listeners, and do not report what they bound.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

// waitPage polls t's page until it answers 200 with the page: a peer says
// nothing on stdout when its forward is up. The processes are checked on
// every round so that a peer that died is told at once.
func waitPage(ctx context.Context, t target, ps ...*proc) error {
	c := &http.Client{Transport: t.transport(false, 1), Timeout: 2 * time.Second}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		for _, p := range ps {
			select {
			case <-p.done:
				return fmt.Errorf("%s exited (%v): %s", p.name, p.err, p.stderr)
			default:
			}
		}
		if last = get(ctx, c, t.baseURL+"/"); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling a port, nothing to signal on
		}
	}
	return fmt.Errorf("%s: page not served within 60 s: %v", t.Name, last)
}

// waitListening polls addr until it accepts a connection.
func waitListening(ctx context.Context, addr string, p *proc) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v): %s", p.name, p.err, p.stderr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond): // polling a port, nothing to signal on
		}
	}
	return fmt.Errorf("%s: nothing listening on %s within 30 s", p.name, addr)
}

// startPeers starts chisel and frp from the binaries in o.PeersDir, each
// forwarding to backAddr, and adds them to e.targets.
func (e *env) startPeers(ctx context.Context, backAddr string) error {
	e.peers = map[string]*peer{}
	bin := func(name string) string { return filepath.Join(e.o.PeersDir, name) }

	// chisel, as its README runs a reverse forward: the server listens for
	// visitors on the port the client asks for, R:port:target.
	ctlPort, err := freePort()
	if err != nil {
		return err
	}
	visPort, err := freePort()
	if err != nil {
		return err
	}
	srv, err := startProc("chisel server", bin("chisel"), nil, "server", "--host", "127.0.0.1", "--port", ctlPort, "--reverse")
	if err != nil {
		return err
	}
	e.procs = append(e.procs, srv)
	cli, err := startProc("chisel client", bin("chisel"), nil, "client", "http://127.0.0.1:"+ctlPort,
		"R:127.0.0.1:"+visPort+":"+backAddr)
	if err != nil {
		return err
	}
	e.procs = append(e.procs, cli)
	ch := target{Name: "chisel", baseURL: "http://127.0.0.1:" + visPort, dial: "127.0.0.1:" + visPort, noH2: true}
	if err := e.addPeer(ctx, ch, srv, cli); err != nil {
		return err
	}

	// frp: an HTTP proxy on frps's vhost port, found by Host, the client
	// connected over TLS with tcpMux (both frpc's defaults, set here so
	// that a change of default does not change the row).
	if ctlPort, err = freePort(); err != nil {
		return err
	}
	if visPort, err = freePort(); err != nil {
		return err
	}
	_, backPort, _ := net.SplitHostPort(backAddr)
	frpsConf := filepath.Join(e.tmp, "frps.toml")
	if err := os.WriteFile(frpsConf, []byte(fmt.Sprintf(`bindAddr = "127.0.0.1"
bindPort = %s
vhostHTTPPort = %s
log.to = "console"
log.level = "warn"
`, ctlPort, visPort)), 0o644); err != nil {
		return err
	}
	frpcConf := filepath.Join(e.tmp, "frpc.toml")
	if err := os.WriteFile(frpcConf, []byte(fmt.Sprintf(`serverAddr = "127.0.0.1"
serverPort = %s
loginFailExit = true
transport.tls.enable = true
transport.tcpMux = true
log.to = "console"
log.level = "warn"

[[proxies]]
name = "bench"
type = "http"
localIP = "127.0.0.1"
localPort = %s
customDomains = ["bench.localhost"]
`, ctlPort, backPort)), 0o644); err != nil {
		return err
	}
	if srv, err = startProc("frps", bin("frps"), nil, "-c", frpsConf); err != nil {
		return err
	}
	e.procs = append(e.procs, srv)
	// frpc gives up at once if frps is not listening yet (loginFailExit,
	// so that a broken config fails the run instead of retrying forever).
	if err := waitListening(ctx, "127.0.0.1:"+ctlPort, srv); err != nil {
		return err
	}
	if cli, err = startProc("frpc", bin("frpc"), nil, "-c", frpcConf); err != nil {
		return err
	}
	e.procs = append(e.procs, cli)
	fr := target{Name: "frp", baseURL: "http://bench.localhost:" + visPort, dial: "127.0.0.1:" + visPort, noH2: true}
	return e.addPeer(ctx, fr, srv, cli)
}

// addPeer waits until peer t serves the page through its server srv and
// client cli, then adds it to the run's targets.
func (e *env) addPeer(ctx context.Context, t target, srv, cli *proc) error {
	if err := waitPage(ctx, t, srv, cli); err != nil {
		return err
	}
	e.peers[t.Name] = &peer{server: srv, client: cli}
	e.targets = append(e.targets, t)
	return nil
}

// PeerRow is one target of the peers phase.
type PeerRow struct {
	Target   string `json:"target"`
	Describe string `json:"how"`
	// Small requests: wrk, HTTP/1.1, PeerConns connections, 1 KiB page.
	ReqPerSec Stat  `json:"req_per_sec"`
	P50       Stat  `json:"p50_ms"`
	P99       Stat  `json:"p99_ms"`
	Errors    int64 `json:"errors"`
	// CPU ms per 1,000 small requests, server and client together (direct:
	// the backend).
	CPU1k Stat `json:"cpu_ms_per_1k"`
	// Bulk down with curl, one stream and eight, and CPU s per GiB of each
	// (server and client together; direct: the backend).
	MBps1   Stat `json:"mb_per_sec_1_stream"`
	MBps8   Stat `json:"mb_per_sec_8_streams"`
	CPUGiB1 Stat `json:"cpu_s_per_gib_1_stream"`
	CPUGiB8 Stat `json:"cpu_s_per_gib_8_streams"`
	// Peak RSS (VmHWM) over the whole phase, MiB; 0: no such process.
	ServerPeakMiB float64 `json:"server_peak_rss_mib"`
	ClientPeakMiB float64 `json:"client_peak_rss_mib"`
}

// peerConns is the concurrency of the small requests: the wrk -c64;
// 4 in a smoke run, whose race-built pipe on a busy machine may not answer
// 64 connections within wrk's one second.
func peerConns(o options) int {
	if o.Smoke {
		return 4
	}
	return 64
}

// peersPhase starts the peers and runs the same load against every
// target, interleaved within each repeat.
func (e *env) peersPhase(ctx context.Context, rep *Report) error {
	if e.o.Wrk == "" || e.o.Curl == "" {
		return fmt.Errorf("the peers phase needs wrk and curl")
	}
	if err := e.startPeers(ctx, e.backLn.Addr().String()); err != nil {
		return fmt.Errorf("start the peers (make bench-peers builds them into %s): %w", e.o.PeersDir, err)
	}
	// The peers' table compares tunnels; the inspector's cost and the
	// variants' (basic auth, pools) are measured by the load phases
	// against tunnel. The variants also go through tunnel's own tunneld:
	// loading them here would add their work to its CPU and peak RSS.
	targets := slices.DeleteFunc(slices.Clone(e.targets), func(t target) bool { return t.inspect || t.variant != "" })
	// Peaks from here: the pairs have been idle since they started.
	for _, t := range targets {
		s, c := e.cpuOf(t)
		for _, p := range []*proc{s, c} {
			if p != nil {
				if err := resetPeak(p.pid()); err != nil {
					e.logf("cannot reset the peak RSS of %s (%v); it counts from the start", p.name, err)
				}
			}
		}
	}
	rows := make([]PeerRow, len(targets))
	for i, t := range targets {
		rows[i] = PeerRow{Target: t.Name, Describe: peerDescribe[t.Name]}
	}
	gib := float64(e.o.Bulk) / (1 << 30)
	for _, t := range targets {
		e.warmUp(ctx, t, peerConns(e.o))
	}
	for r := 0; r < e.o.Repeat; r++ {
		for i, t := range targets {
			e.logf("peers: small %s run %d", t.Name, r+1)
			var prof chan error
			if e.o.Profile != "" && r == 0 && t.Name == "tunnel" {
				prof = make(chan error, 1)
				go func() {
					prof <- e.saveProfile(ctx, "profile?seconds="+strconv.Itoa(wrkDuration(e.o.Duration)), "tunneld-small-wrk.cpu.pprof")
				}()
			}
			sp := e.cpuStart(t, true)
			res, err := runWrk(ctx, e.o.Wrk, e.wrkScript, t, peerConns(e.o), e.o.Duration)
			if prof != nil {
				if perr := <-prof; perr != nil && err == nil {
					err = perr
				}
				if err == nil {
					err = e.saveProfile(ctx, "allocs", "tunneld-small-wrk.allocs.pprof")
				}
			}
			if err != nil {
				return err
			}
			row := &rows[i]
			row.ReqPerSec.add(res.rate())
			row.P50.add(ms(res.P50))
			row.P99.add(ms(res.P99))
			row.Errors += res.Errors
			if s, c, _, ok := sp.done(); ok {
				row.CPU1k.add((s + c) / float64(res.Requests) * 1e6)
			}
		}
		for _, streams := range []int{1, 8} {
			for i, t := range targets {
				e.logf("peers: bulk %s %d streams run %d", t.Name, streams, r+1)
				sp := e.cpuStart(t, true)
				d, err := curlBulk(ctx, e.o.Curl, e.certsDir, e.tmp, t, false, streams, e.o.Bulk)
				if err != nil {
					return err
				}
				mbps := float64(e.o.Bulk) / 1e6 / d.Seconds()
				s, c, _, ok := sp.done()
				row := &rows[i]
				if streams == 1 {
					row.MBps1.add(mbps)
					if ok {
						row.CPUGiB1.add((s + c) / gib)
					}
				} else {
					row.MBps8.add(mbps)
					if ok {
						row.CPUGiB8.add((s + c) / gib)
					}
				}
			}
		}
	}
	if err := e.checkAlive(); err != nil {
		return err
	}
	for i, t := range targets {
		s, c := e.cpuOf(t)
		if s != nil {
			rows[i].ServerPeakMiB = mib(readProc(s.pid()).HWM)
			rows[i].ClientPeakMiB = mib(readProc(c.pid()).HWM)
		}
	}
	rep.Peers = rows
	rep.WrkSeconds, rep.PeerConns = wrkDuration(e.o.Duration), peerConns(e.o)
	return nil
}

// saveProfile fetches /debug/pprof/<what> from the main tunneld's admin
// listener into o.Profile/name.
func (e *env) saveProfile(ctx context.Context, what, name string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.main.adminAddr+"/debug/pprof/"+what, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s: status %d", what, resp.StatusCode)
	}
	if err := os.MkdirAll(e.o.Profile, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(e.o.Profile, name))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile %s: %w", what, err)
	}
	return f.Close()
}

// peersMarkdown renders the peers table.
func (r *Report) peersMarkdown(w func(format string, args ...any)) {
	w("\n### Against the peers (one run, the same load for every row)\n\n")
	w("Small: wrk -t2 -c%d, HTTP/1.1 keep-alive, 1 KiB page, %ds per run. Bulk: curl GET of %s, in one stream and split\n",
		r.PeerConns, r.WrkSeconds, units.Bytes(r.Bulk))
	w("across 8 curl processes. CPU: server and client processes together (direct: the backend, in the harness).\n")
	w("Peak RSS: VmHWM of each process over the whole phase.\n\n")
	w("| | how | small req/s | p50 ms | p99 ms | CPU ms per 1k req | MB/s, 1 stream | MB/s, 8 streams | CPU s per GiB (1 / 8 streams) | server peak RSS MiB | client peak RSS MiB | errors |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	peak := func(v float64) string {
		if v == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", v)
	}
	for _, p := range r.Peers {
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s | %s | %d |\n", p.Target, p.Describe,
			p.ReqPerSec.fmt(0), p.P50.fmt(2), p.P99.fmt(1), p.CPU1k.fmt(0), p.MBps1.fmt(0), p.MBps8.fmt(0),
			p.CPUGiB1.fmt(2), p.CPUGiB8.fmt(2), peak(p.ServerPeakMiB), peak(p.ClientPeakMiB), p.Errors)
	}
}

// peerChecks are issue 14's targets, ratios to the peers in the same run.
// (Its open-loop target, +1 ms to direct's p99 at 2,000 req/s, is make
// bench's open phase.)
func (r *Report) peerChecks() []Check {
	row := func(name string) *PeerRow {
		for i := range r.Peers {
			if r.Peers[i].Target == name {
				return &r.Peers[i]
			}
		}
		return nil
	}
	tun, tls, ch, frp := row("tunnel"), row("tunnel-https"), row("chisel"), row("frp")
	var out []Check
	ratio := func(target string, got, of, want float64, higher bool) {
		v := got / of
		met := v >= want
		if !higher {
			met = v <= want
		}
		out = append(out, Check{target, fmt.Sprintf("%.2f", v), of > 0 && met})
	}
	if tun != nil && ch != nil {
		ratio("small req/s, plain-HTTP visitors >= 1.1x chisel's", tun.ReqPerSec.Median, ch.ReqPerSec.Median, 1.1, true)
		ratio("small p99, plain-HTTP visitors <= chisel's (ratio <= 1)", tun.P99.Median, ch.P99.Median, 1, false)
		ratio("CPU per 1k small requests, tunneld + tunnel <= chisel's (ratio <= 1)", tun.CPU1k.Median, ch.CPU1k.Median, 1, false)
	}
	if tls != nil && ch != nil {
		ratio("small req/s, HTTPS visitors >= 0.95x chisel's", tls.ReqPerSec.Median, ch.ReqPerSec.Median, 0.95, true)
	}
	if tun != nil && frp != nil {
		ratio("bulk MB/s (curl), 1 stream >= 1.5x frp's", tun.MBps1.Median, frp.MBps1.Median, 1.5, true)
		ratio("bulk MB/s (curl), 8 streams >= 1.5x frp's", tun.MBps8.Median, frp.MBps8.Median, 1.5, true)
		ratio("CPU per GiB, 1 stream <= 0.5x frp's", tun.CPUGiB1.Median, frp.CPUGiB1.Median, 0.5, false)
		ratio("CPU per GiB, 8 streams <= 0.5x frp's", tun.CPUGiB8.Median, frp.CPUGiB8.Median, 0.5, false)
	}
	if tun != nil {
		out = append(out, Check{"tunneld peak RSS over the phase <= 37 MiB (plain-HTTP visitors)",
			fmt.Sprintf("%.1f MiB", tun.ServerPeakMiB), tun.ServerPeakMiB <= 37})
	}
	return out
}
