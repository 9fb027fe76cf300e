package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/pkg/mux"
)

// ClusterRow is the cluster phase's figures (issue 15), all from one run:
// three etcd members in the harness, three tunneld nodes as processes.
type ClusterRow struct {
	Conns int `json:"conns"` // wrk -c of the small requests
	// Small requests to the client's own node (local) and to another
	// node, which forwards them over the node link (forwarded).
	LocalReqPerSec     Stat    `json:"local_req_per_sec"`
	LocalP50           Stat    `json:"local_p50_ms"`
	LocalP99           Stat    `json:"local_p99_ms"`
	ForwardedReqPerSec Stat    `json:"forwarded_req_per_sec"`
	ForwardedP50       Stat    `json:"forwarded_p50_ms"`
	ForwardedP99       Stat    `json:"forwarded_p99_ms"`
	Ratio              float64 `json:"forwarded_to_local_req_per_sec"`
	AddedP50           float64 `json:"forwarded_added_p50_ms"`
	// The same at one connection: at 64 on two cores p50 is mostly
	// queueing (64 / req/s), so a lower rate alone raises it; one
	// connection shows the hop's own latency.
	LocalP50One     Stat    `json:"local_p50_ms_1conn"`
	ForwardedP50One Stat    `json:"forwarded_p50_ms_1conn"`
	AddedP50One     float64 `json:"forwarded_added_p50_ms_1conn"`
	Errors          int64   `json:"errors"`
	// Claim latency: client connects (TLS, Hello, the claim in etcd,
	// Welcome) one after another against one node.
	Connects int  `json:"connects"`
	ClaimP50 Stat `json:"claim_p50_ms"`
	ClaimP99 Stat `json:"claim_p99_ms"`
	// etcd writes (revisions) per connect, per disconnect (the release),
	// and per name when its hold ends (the tidying that deletes it).
	WriteClients          int               `json:"write_clients"`
	WritesPerConnect      float64           `json:"etcd_writes_per_connect"`
	WritesPerDisconnect   float64           `json:"etcd_writes_per_disconnect"`
	WritesPerHoldEnd      float64           `json:"etcd_writes_per_hold_end"`
	IdleClients           int               `json:"idle_clients"`
	IdleNodes             []ClusterIdleNode `json:"idle_nodes"`
	NameHold              string            `json:"name_hold"`
	LeaseTTL              string            `json:"lease_ttl"`
	FailoverServingS      float64           `json:"failover_serving_again_s"`
	FailoverLeaseExpiredS float64           `json:"failover_lease_expired_s"`
	FailoverNameFreeS     float64           `json:"failover_name_free_s"`
}

// ClusterIdleNode is one node's memory with its share of the idle clients.
type ClusterIdleNode struct {
	Node         string  `json:"node"`
	Clients      int     `json:"clients"`
	BeforeMiB    float64 `json:"before_rss_mib"`
	DuringMiB    float64 `json:"during_rss_mib"`
	PerClientKiB float64 `json:"per_client_kib"`
}

// clusterNode is one tunneld of the cluster phase.
type clusterNode struct {
	name      string
	p         *proc
	addr      string // TLS port
	plainAddr string // --http-listen
}

// etcdPrefix is tunneld's default key prefix (pkg/cluster.DefaultPrefix;
// the bench does not import server packages).
const etcdPrefix = "/tunnel/"

// clusterLeaseTTL is tunneld's node lease (pkg/cluster.DefaultLeaseTTL),
// which no flag changes: the failover figures are bounded below by it.
const clusterLeaseTTL = 10 * time.Second

// clusterHold is the cluster phase's --name-hold: short, so that the
// name-free figure takes seconds, not tunneld's default minutes.
func clusterHold(o options) time.Duration {
	if o.Smoke {
		return time.Second
	}
	return 5 * time.Second
}

// clusterPhase runs the cluster's figures: small requests local against
// forwarded, claim latency, etcd writes per connect and disconnect, memory
// per idle client per node, and a node's SIGKILL.
func (e *env) clusterPhase(ctx context.Context, rep *Report) error {
	e.logf("cluster: starting etcd (3 members) and 3 tunneld nodes")
	ec, err := startEtcd(3)
	if err != nil {
		return err
	}
	defer ec.close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: ec.clients, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer cli.Close()

	secret := make([]byte, 32)
	rand.Read(secret)
	secretFile := filepath.Join(e.tmp, "cluster-secret")
	if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		return err
	}
	hold := clusterHold(e.o)
	nodes := make([]*clusterNode, 3)
	base := len(e.procs)
	defer func() {
		// Stop what this phase started (the killed node is gone already).
		for i := len(e.procs) - 1; i >= base; i-- {
			e.procs[i].stop()
		}
		e.procs = e.procs[:base]
	}()
	for i := range nodes {
		if nodes[i], err = e.startNode(ctx, fmt.Sprintf("node%d", i), ec.clients, secretFile, hold); err != nil {
			return err
		}
	}
	row := &ClusterRow{NameHold: hold.String(), LeaseTTL: clusterLeaseTTL.String()}
	rep.Cluster = row

	// The client of the small requests, on node0 only.
	backAddr := e.backLn.Addr().String()
	if _, err := e.attachPair(ctx, nodes[0].p, nodes[0].addr, backAddr, "", false); err != nil {
		return err
	}
	if err := e.clusterSmall(ctx, row, nodes); err != nil {
		return err
	}
	// The client stays: stopping it would write its release and, a hold
	// later, its hold's end in the middle of the write counts.

	if err := e.clusterWrites(ctx, row, cli, nodes[2]); err != nil {
		return err
	}
	tlsCfg, err := clientTLS(e.certsDir)
	if err != nil {
		return err
	}
	row.Connects = min(e.o.Connects, 200)
	for r := range e.o.Repeat {
		e.logf("cluster: claim latency, %d connects to node1, run %d", row.Connects, r+1)
		lat, err := connectTimes(ctx, nodes[1].addr, tlsCfg, row.Connects)
		if err != nil {
			return fmt.Errorf("cluster claims: %w", err)
		}
		row.ClaimP50.add(ms(lat.pct(50)))
		row.ClaimP99.add(ms(lat.pct(99)))
	}
	if err := e.clusterIdle(ctx, row, cli, nodes); err != nil {
		return err
	}
	return e.clusterFailover(ctx, row, cli, nodes, backAddr)
}

// startNode starts one tunneld of the cluster: the load phases' flags, a
// public port of 443 in every URL (nodes behind one name), the cluster's.
func (e *env) startNode(ctx context.Context, name string, etcd []string, secretFile string, hold time.Duration) (*clusterNode, error) {
	args := e.tunneldArgs()
	for i := range args {
		if args[i] == "--name-hold" {
			args[i+1] = hold.String()
		}
	}
	link, err := etcdtest.FreeURL()
	if err != nil {
		return nil, err
	}
	args = append(args, "--public-port", "443",
		"--cluster-etcd", strings.Join(etcd, ","), "--cluster-node", name,
		"--cluster-listen", link.Host, "--cluster-advertise", link.Host,
		"--cluster-secret-file", secretFile)
	p, addr, err := e.launchTunneld(ctx, nil, args...)
	if err != nil {
		return nil, err
	}
	p.name = "tunneld (" + name + ")"
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	plain, err := waitLogAddr(wctx, p, "serving plain http")
	if err != nil {
		return nil, err
	}
	return &clusterNode{name: name, p: p, addr: addr, plainAddr: plain}, nil
}

// clusterSmall runs wrk (or the in-process generator) against the owning
// node and a forwarding node, interleaved within each repeat.
func (e *env) clusterSmall(ctx context.Context, row *ClusterRow, nodes []*clusterNode) error {
	row.Conns = min(64, slices.Max(e.o.Conns))
	mk := func(name string, n *clusterNode) target {
		_, port, _ := net.SplitHostPort(n.plainAddr)
		return target{Name: name, baseURL: "http://bench.localhost:" + port, dial: n.plainAddr, noH2: true}
	}
	local, fwd := mk("cluster-local", nodes[0]), mk("cluster-forwarded", nodes[1])
	if e.o.Wrk != "" {
		// The warm-up also brings up the node link the forwarded path uses.
		e.warmUp(ctx, local, row.Conns)
		e.warmUp(ctx, fwd, row.Conns)
	}
	for r := range e.o.Repeat {
		for _, c := range []int{row.Conns, 1} {
			for _, t := range []target{local, fwd} {
				e.logf("cluster: small %s conns=%d run %d", t.Name, c, r+1)
				var res closedResult
				var err error
				if e.o.Wrk != "" {
					res, err = runWrk(ctx, e.o.Wrk, e.wrkScript, t, c, e.o.Duration)
				} else {
					res, err = closedLoop(ctx, t, false, c, e.o.Duration)
				}
				if err != nil {
					return fmt.Errorf("cluster small: %w", err)
				}
				row.Errors += res.Errors
				switch {
				case c == 1 && t.Name == local.Name:
					row.LocalP50One.add(ms(res.P50))
				case c == 1:
					row.ForwardedP50One.add(ms(res.P50))
				case t.Name == local.Name:
					row.LocalReqPerSec.add(res.rate())
					row.LocalP50.add(ms(res.P50))
					row.LocalP99.add(ms(res.P99))
				default:
					row.ForwardedReqPerSec.add(res.rate())
					row.ForwardedP50.add(ms(res.P50))
					row.ForwardedP99.add(ms(res.P99))
				}
			}
		}
	}
	if row.LocalReqPerSec.Median > 0 {
		row.Ratio = row.ForwardedReqPerSec.Median / row.LocalReqPerSec.Median
	}
	row.AddedP50 = row.ForwardedP50.Median - row.LocalP50.Median
	row.AddedP50One = row.ForwardedP50One.Median - row.LocalP50One.Median
	return nil
}

// etcdRevision is the store's revision now: every write bumps it by one
// (a transaction of many operations is one write).
func etcdRevision(ctx context.Context, cli *clientv3.Client) (int64, error) {
	resp, err := cli.Get(ctx, etcdPrefix+"nodes/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("etcd get: %w", err)
	}
	return resp.Header.Revision, nil
}

// etcdCount counts the keys under prefix+kind ("names/", "owners/").
func etcdCount(ctx context.Context, cli *clientv3.Client, kind string) (int64, error) {
	resp, err := cli.Get(ctx, etcdPrefix+kind, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("etcd get: %w", err)
	}
	return resp.Count, nil
}

// waitCount polls until the keys under kind number at most want, within
// d: releases and tidying only ever remove keys.
func waitCount(ctx context.Context, cli *clientv3.Client, kind string, want int64, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		n, err := etcdCount(ctx, cli, kind)
		if err != nil {
			return err
		}
		if n <= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd: %d keys under %s after %v, want at most %d", n, kind, d, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling etcd: nothing to signal on
		}
	}
}

// clusterWrites counts etcd's revisions over K connects held, their K
// disconnects (until the live records are gone), and the ends of their
// holds (until the owner records are gone).
func (e *env) clusterWrites(ctx context.Context, row *ClusterRow, cli *clientv3.Client, n *clusterNode) error {
	k := min(e.o.Connects, 100)
	row.WriteClients = k
	e.logf("cluster: etcd writes over %d connects and disconnects on %s", k, n.name)
	tlsCfg, err := clientTLS(e.certsDir)
	if err != nil {
		return err
	}
	names0, err := etcdCount(ctx, cli, "names/")
	if err != nil {
		return err
	}
	owners0, err := etcdCount(ctx, cli, "owners/")
	if err != nil {
		return err
	}
	r0, err := etcdRevision(ctx, cli)
	if err != nil {
		return err
	}
	sessions := make([]*mux.ClientSession, 0, k)
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	for range k {
		s, err := connectOnce(ctx, n.addr, tlsCfg)
		if err != nil {
			return fmt.Errorf("cluster writes: %w", err)
		}
		sessions = append(sessions, s)
	}
	r1, err := etcdRevision(ctx, cli)
	if err != nil {
		return err
	}
	for _, s := range sessions {
		s.Close()
	}
	sessions = nil
	if err := waitCount(ctx, cli, "names/", names0, 30*time.Second); err != nil {
		return fmt.Errorf("cluster writes: releases: %w", err)
	}
	r2, err := etcdRevision(ctx, cli)
	if err != nil {
		return err
	}
	if err := waitCount(ctx, cli, "owners/", owners0, clusterHold(e.o)+60*time.Second); err != nil {
		return fmt.Errorf("cluster writes: hold ends: %w", err)
	}
	r3, err := etcdRevision(ctx, cli)
	if err != nil {
		return err
	}
	row.WritesPerConnect = float64(r1-r0) / float64(k)
	row.WritesPerDisconnect = float64(r2-r1) / float64(k)
	row.WritesPerHoldEnd = float64(r3-r2) / float64(k)
	return nil
}

// clusterIdle holds max(o.Idle) idle clients spread evenly over the three
// nodes, one holder process per node, and reads each node's RSS before and
// with them.
func (e *env) clusterIdle(ctx context.Context, row *ClusterRow, cli *clientv3.Client, nodes []*clusterNode) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	total := slices.Max(e.o.Idle)
	row.IdleClients = total
	names0, err := etcdCount(ctx, cli, "names/")
	if err != nil {
		return err
	}
	e.logf("cluster: %d idle clients over %d nodes", total, len(nodes))
	per := make([]int, len(nodes))
	for i := range total {
		per[i%len(nodes)]++
	}
	before := make([]procStat, len(nodes))
	for i, n := range nodes {
		before[i] = readProc(n.p.pid())
	}
	holders := make([]*proc, len(nodes))
	defer func() {
		for _, h := range holders {
			if h != nil {
				h.stop()
			}
		}
	}()
	var g errgroup.Group
	for i, n := range nodes {
		h, err := startProc("hold ("+n.name+")", self, []string{roleEnv + "=hold"},
			"-certs-dir", e.certsDir, "-server", n.addr, "-n", strconv.Itoa(per[i]))
		if err != nil {
			return err
		}
		holders[i] = h
		g.Go(func() error {
			l, err := h.line(time.Duration(per[i])*20*time.Millisecond + 60*time.Second)
			if err == nil && l != fmt.Sprintf("ready %d", per[i]) {
				err = fmt.Errorf("hold printed %q", l)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("cluster idle: %w", err)
	}
	select {
	case <-time.After(settle(e.o)):
	case <-ctx.Done():
		return ctx.Err()
	}
	for i, n := range nodes {
		during := readProc(n.p.pid())
		row.IdleNodes = append(row.IdleNodes, ClusterIdleNode{Node: n.name, Clients: per[i],
			BeforeMiB: mib(before[i].RSS), DuringMiB: mib(during.RSS),
			PerClientKiB: float64(during.RSS-before[i].RSS) / 1024 / float64(per[i])})
	}
	for i, h := range holders {
		h.stop()
		holders[i] = nil
	}
	// The failover that follows should not share etcd with 10,000
	// releases: wait until the live records are gone.
	if err := waitCount(ctx, cli, "names/", names0, 120*time.Second); err != nil {
		return fmt.Errorf("cluster idle: releases: %w", err)
	}
	return nil
}

// liveRecord is the part of names/<name> the failover reads.
type liveRecord struct {
	Node string `json:"node"`
}

// ownerRecord is the part of owners/<name> the failover reads.
type ownerRecord struct {
	HoldUntil int64 `json:"hold_until_ms"`
}

// clusterFailover SIGKILLs the node serving two clients: "failover", whose
// --server names all three nodes, and "orphan", which knows only the
// killed node and so never comes back. A visitor loop on another node
// times failover's first success after the kill; etcd, polled, times
// orphan's live record going (the lease's expiry) and its hold's end.
func (e *env) clusterFailover(ctx context.Context, row *ClusterRow, cli *clientv3.Client, nodes []*clusterNode, backAddr string) error {
	var servers []string
	for _, n := range nodes {
		servers = append(servers, n.addr)
	}
	start := func(name, server string) (*proc, error) {
		p, err := startProc("tunnel ("+name+")", filepath.Join(e.o.BinDir, "tunnel"), nil,
			"--dev", "--server", server, "--certs-dir", e.certsDir, "--log-format", "json",
			"http", "--name", name, backAddr)
		if err != nil {
			return nil, err
		}
		e.procs = append(e.procs, p)
		if u, err := p.line(30 * time.Second); err != nil || !strings.HasPrefix(u, "https://"+name+".localhost") {
			return nil, fmt.Errorf("%s printed %q (%v), want its public URL", p.name, u, err)
		}
		return p, nil
	}
	e.logf("cluster: failover")
	if _, err := start("failover", strings.Join(servers, ",")); err != nil {
		return err
	}
	rec, err := cli.Get(ctx, etcdPrefix+"names/failover")
	if err != nil || len(rec.Kvs) != 1 {
		return fmt.Errorf("cluster failover: names/failover: %v (%d records)", err, len(rec.Kvs))
	}
	var live liveRecord
	if err := json.Unmarshal(rec.Kvs[0].Value, &live); err != nil {
		return fmt.Errorf("cluster failover: names/failover: %w", err)
	}
	vi := slices.IndexFunc(nodes, func(n *clusterNode) bool { return n.name == live.Node })
	if vi < 0 {
		return fmt.Errorf("cluster failover: failover is on %q, not a node of ours", live.Node)
	}
	victim, other := nodes[vi], nodes[(vi+1)%len(nodes)]
	if _, err := start("orphan", victim.addr); err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(other.plainAddr)
	d := &net.Dialer{Timeout: 2 * time.Second}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", other.plainAddr)
	}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	visit := func() bool {
		resp, err := hc.Get("http://failover.localhost:" + port + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	if !visit() {
		return fmt.Errorf("cluster failover: failover not served through %s before the kill", other.name)
	}

	e.logf("cluster: SIGKILL %s", victim.name)
	t0 := time.Now()
	victim.p.kill()
	e.procs = slices.DeleteFunc(e.procs, func(p *proc) bool { return p == victim.p })
	fctx, cancel := context.WithTimeout(ctx, clusterLeaseTTL+clusterHold(e.o)+60*time.Second)
	defer cancel()
	var g errgroup.Group
	g.Go(func() error {
		for !visit() {
			select {
			case <-fctx.Done():
				return fmt.Errorf("cluster failover: failover not served again: %w", fctx.Err())
			case <-time.After(20 * time.Millisecond): // between tries, not to spin on fast refusals
			}
		}
		row.FailoverServingS = time.Since(t0).Seconds()
		return nil
	})
	g.Go(func() error {
		for {
			resp, err := cli.Txn(fctx).Then(clientv3.OpGet(etcdPrefix+"names/orphan"), clientv3.OpGet(etcdPrefix+"owners/orphan")).Commit()
			if err != nil {
				return fmt.Errorf("cluster failover: etcd: %w", err)
			}
			now := time.Since(t0)
			liveGone := len(resp.Responses[0].GetResponseRange().Kvs) == 0
			if liveGone && row.FailoverLeaseExpiredS == 0 {
				row.FailoverLeaseExpiredS = now.Seconds()
			}
			free := liveGone
			if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) == 1 {
				var o ownerRecord
				if err := json.Unmarshal(kvs[0].Value, &o); err != nil {
					return fmt.Errorf("cluster failover: owners/orphan: %w", err)
				}
				free = free && o.HoldUntil != 0 && time.Now().UnixMilli() >= o.HoldUntil
			}
			if free {
				row.FailoverNameFreeS = now.Seconds()
				return nil
			}
			select {
			case <-fctx.Done():
				return fmt.Errorf("cluster failover: orphan's name not free: %w", fctx.Err())
			case <-time.After(50 * time.Millisecond): // polling etcd
			}
		}
	})
	return g.Wait()
}

// clusterMarkdown writes the "Cluster" table.
func (r *Report) clusterMarkdown(w func(string, ...any)) {
	c := r.Cluster
	w("\n### Cluster (three etcd members in the harness, three tunneld nodes; --name-hold %s, node lease %s)\n\n", c.NameHold, c.LeaseTTL)
	w("Small requests: HTTP/1.1, %d conns, to the client's node (local) and to another node, which forwards each\n", c.Conns)
	w("stream over the node link (forwarded), interleaved in each repeat. Claims: client connects (TLS, Hello, the claim\n")
	w("in etcd, Welcome), one after another to one node. etcd writes: revisions over %d connects held, their\n", c.WriteClients)
	w("disconnects, and their holds' ends. Failover: SIGKILL of the node serving a client whose --server names all\n")
	w("three, a visitor on another node; and of a client that knows only the killed node, whose name etcd shows free.\n\n")
	w("| figure | value |\n|---|---|\n")
	w("| local req/s, p50 ms, p99 ms | %s, %s, %s |\n", c.LocalReqPerSec.fmt(0), c.LocalP50.fmt(2), c.LocalP99.fmt(2))
	w("| forwarded req/s, p50 ms, p99 ms | %s, %s, %s |\n", c.ForwardedReqPerSec.fmt(0), c.ForwardedP50.fmt(2), c.ForwardedP99.fmt(2))
	w("| forwarded / local req/s; p50 added | %.2f; %+.2f ms (errors %d) |\n", c.Ratio, c.AddedP50, c.Errors)
	w("| one connection: local p50, forwarded p50, added | %s, %s, %+.2f ms |\n", c.LocalP50One.fmt(2), c.ForwardedP50One.fmt(2), c.AddedP50One)
	w("| claim latency p50, p99 ms (%d connects) | %s, %s |\n", c.Connects, c.ClaimP50.fmt(2), c.ClaimP99.fmt(2))
	w("| etcd writes per connect, per disconnect, per hold end | %.2f, %.2f, %.2f |\n", c.WritesPerConnect, c.WritesPerDisconnect, c.WritesPerHoldEnd)
	for _, n := range c.IdleNodes {
		w("| %s: RSS before / with %s idle clients, MiB; per client | %.1f / %.1f; %.1f KiB |\n", n.Node,
			groupThousands(fmt.Sprint(n.Clients)), n.BeforeMiB, n.DuringMiB, n.PerClientKiB)
	}
	w("| SIGKILL to serving again on another node | %.2f s |\n", c.FailoverServingS)
	w("| SIGKILL to the live record gone (lease expiry) | %.2f s |\n", c.FailoverLeaseExpiredS)
	w("| SIGKILL to the name free to another owner (hold end) | %.2f s |\n", c.FailoverNameFreeS)
}
