package edge_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/cluster"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// directForwarder forwards by calling the owning node's OpenLocal in the
// same process: the node link (package peer) stands between the two in
// tunneld, and is tested on its own.
type directForwarder struct {
	mu    sync.Mutex
	nodes map[string]*edge.Server
	calls int
}

func (f *directForwarder) Forward(ctx context.Context, node, _, session string, h *proto.StreamHeader) (net.Conn, error) {
	f.mu.Lock()
	srv := f.nodes[node]
	f.calls++
	f.mu.Unlock()
	if srv == nil {
		return nil, errors.New("no such node")
	}
	return srv.OpenLocal(ctx, session, h)
}

type clusterNode struct {
	*edgetest.Edge
	c   *cluster.Cluster
	reg *edge.ClusterRegistry
}

// startCluster runs one edge per name, each with its ClusterRegistry on e.
func startCluster(t *testing.T, e *etcdtest.Cluster, fwd *directForwarder, names ...string) []clusterNode {
	return startClusterWith(t, e, fwd, nil, names...)
}

// startClusterWith is startCluster with mod applied to every node's config.
func startClusterWith(t *testing.T, e *etcdtest.Cluster, fwd *directForwarder, mod func(*edge.Config), names ...string) []clusterNode {
	t.Helper()
	fwd.nodes = make(map[string]*edge.Server)
	var out []clusterNode
	for _, n := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		c, err := cluster.Open(ctx, cluster.Config{Endpoints: e.Endpoints(), Node: n, Addr: n + ":7000",
			LeaseTTL: 2 * time.Second, Hold: time.Minute, ClaimTimeout: 2 * time.Second, Log: zerolog.Nop()})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() }) // after the edge stops (cleanups run last first)
		reg := edge.NewClusterRegistry(c, fwd, zerolog.Nop())
		ed := edgetest.Start(t, func(cfg *edge.Config) {
			cfg.Registry = reg
			cfg.NameHold = time.Minute
			if mod != nil {
				mod(cfg)
			}
		})
		fwd.mu.Lock()
		fwd.nodes[n] = ed.Srv
		fwd.mu.Unlock()
		out = append(out, clusterNode{Edge: ed, c: c, reg: reg})
	}
	return out
}

// seen waits until n's view shows name live for session.
func (n clusterNode) seen(t *testing.T, name, session string) {
	t.Helper()
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		ch := n.c.Changes(name)
		if e, ok := n.c.Lookup(name); ok && e.Live != nil && e.Live.Session == session {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s never saw %q live for session %s", n.c.Node(), name, session)
		}
	}
}

func clusterGet(t *testing.T, c *http.Client, url string, mod func(*http.Request)) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(req)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A visitor on node B reaches a client on node A through B's remote route,
// with A's access rules enforced on B.
func TestClusterRegistry_RemoteRouteForwards(t *testing.T) {
	e := etcdtest.Start(t, 1)
	fwd := &directForwarder{}
	nodes := startCluster(t, e, fwd, "a", "b")
	a, b := nodes[0], nodes[1]
	backend := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from "+r.URL.Path)
	}))
	access := &proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: bcryptHash(t, "pass")}}}
	cl, err := a.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Target: backend, Access: access})
	if err != nil {
		t.Fatal(err)
	}
	sid := cl.Welcome.SessionID
	b.seen(t, "wiki", sid)

	rt, held := b.reg.Lookup("wiki")
	if rt == nil || !held || rt.String() != "a/"+sid {
		t.Fatalf("b's route: %v, held %v; want a/%s", rt, held, sid)
	}
	if again, _ := b.reg.Lookup("wiki"); again != rt {
		t.Fatal("one claim gave two routes: pools would split")
	}
	if got := b.reg.Kind("wiki"); got != proto.KindHTTP {
		t.Fatalf("kind %q", got)
	}
	if acct, ok := b.reg.Account("wiki"); !ok || acct == "" {
		t.Fatalf("account %q, %v", acct, ok)
	}

	hc := b.HTTPClient(false)
	if code, _ := clusterGet(t, hc, b.URL("wiki", "/x"), nil); code != http.StatusUnauthorized {
		t.Fatalf("no credentials through b: %d, want 401", code)
	}
	code, body := clusterGet(t, hc, b.URL("wiki", "/x"), func(r *http.Request) { r.SetBasicAuth("ann", "pass") })
	if code != http.StatusOK || body != "hello from /x" {
		t.Fatalf("through b: %d %q", code, body)
	}
	fwd.mu.Lock()
	calls := fwd.calls
	fwd.mu.Unlock()
	if calls == 0 {
		t.Fatal("the request did not go through the forwarder")
	}
	// And locally on a, as before.
	code, body = clusterGet(t, a.HTTPClient(true), a.URL("wiki", "/y"), func(r *http.Request) { r.SetBasicAuth("ann", "pass") })
	if code != http.StatusOK || body != "hello from /y" {
		t.Fatalf("on a: %d %q", code, body)
	}

	// Both nodes' status lists the tunnel, served by a.
	for _, n := range nodes {
		var found bool
		for _, ts := range n.Srv.Tunnels() {
			if ts.Name == "wiki" {
				found = true
				if ts.Node != "a" || ts.SessionID != sid || ts.Label != "alice" || ts.Access == nil || ts.Access.BasicAuthUsers[0] != "ann" {
					t.Fatalf("%s's status of wiki: %+v", n.c.Node(), ts)
				}
			}
		}
		if !found {
			t.Fatalf("%s's status lacks wiki", n.c.Node())
		}
	}

	// The cluster's figures are in the node's metrics.
	if gauge(t, a.Srv, "tunneld_cluster_lease_ok") != 1 || gauge(t, a.Srv, "tunneld_cluster_degraded") != 0 {
		t.Fatal("lease not ok, or degraded, in a's metrics")
	}
	if n := counter(t, a.Srv, "tunneld_cluster_etcd_requests_total"); n < 3 {
		t.Fatalf("etcd requests counted: %v, want at least the join and the claim", n)
	}

	// OpenLocal refuses a session that is not the name's.
	if _, err := a.Srv.OpenLocal(context.Background(), "not-the-session", &proto.StreamHeader{Tunnel: "wiki"}); err == nil {
		t.Fatal("OpenLocal opened for a wrong session")
	}
	// The client leaves: b's route drains, and the name is held.
	cl.Stop()
	cl.Wait(t)
	testwait.Recv(t, rt.Draining(), 15*time.Second)
	if rt, held := b.reg.Lookup("wiki"); rt != nil || !held {
		t.Fatalf("after the client left: %v, held %v", rt, held)
	}
}

// The owner reconnects on node B: B's claim takes the name over and node
// A closes the stale session when its watch shows it.
func TestClusterRegistry_ReconnectElsewhereClosesStaleSession(t *testing.T) {
	e := etcdtest.Start(t, 1)
	fwd := &directForwarder{}
	nodes := startCluster(t, e, fwd, "a", "b")
	a, b := nodes[0], nodes[1]
	backend := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	first, err := a.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Target: backend})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Connect(edgetest.BobToken, mux.Tunnel{Name: "wiki", Target: backend}); err == nil {
		t.Fatal("another owner took the name on another node")
	}
	second, err := b.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Target: backend})
	if err != nil {
		t.Fatal(err)
	}
	testwait.Recv(t, first.Done, 15*time.Second) // a closed the stale session
	a.seen(t, "wiki", second.Welcome.SessionID)
	rt, _ := a.reg.Lookup("wiki")
	if rt == nil || rt.String() != "b/"+second.Welcome.SessionID {
		t.Fatalf("a's route after the reconnect: %v", rt)
	}
	if code, body := clusterGet(t, a.HTTPClient(false), a.URL("wiki", "/"), nil); code != http.StatusOK || body != "ok" {
		t.Fatalf("through a: %d %q", code, body)
	}
}

// Without etcd quorum a new client is refused with the retryable code and
// the node is not ready, while a connected tunnel keeps serving, here and
// through the other node; with quorum back, clients connect again.
func TestClusterRegistry_QuorumLoss(t *testing.T) {
	e := etcdtest.Start(t, 3)
	fwd := &directForwarder{}
	nodes := startCluster(t, e, fwd, "a", "b")
	a, b := nodes[0], nodes[1]
	backend := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	cl, err := a.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Target: backend})
	if err != nil {
		t.Fatal(err)
	}
	b.seen(t, "wiki", cl.Welcome.SessionID)

	e.Stop(1)
	e.Stop(2)
	_, err = a.Connect(edgetest.BobToken, mux.Tunnel{Name: "blog", Target: backend})
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.CodeUnavailable || mux.IsPermanent(err) {
		t.Fatalf("connect without quorum: got %v, want the retryable %s", err, proto.CodeUnavailable)
	}
	if err := a.Srv.Ready(); err == nil || !strings.Contains(err.Error(), "degraded") {
		t.Fatalf("Ready without quorum: %v", err)
	}
	if gauge(t, a.Srv, "tunneld_cluster_degraded") != 1 || counter(t, a.Srv, "tunneld_cluster_etcd_errors_total") == 0 {
		t.Fatal("the metrics do not show the degraded cluster")
	}
	for _, n := range nodes {
		if code, body := clusterGet(t, n.HTTPClient(false), n.URL("wiki", "/"), nil); code != http.StatusOK || body != "ok" {
			t.Fatalf("through %s without quorum: %d %q", n.c.Node(), code, body)
		}
	}

	e.Restart(1)
	e.Restart(2)
	e.WaitReady()
	cl2, err := b.Connect(edgetest.BobToken, mux.Tunnel{Name: "blog", Target: backend})
	if err != nil {
		t.Fatalf("connect after quorum: %v", err)
	}
	a.seen(t, "blog", cl2.Welcome.SessionID)
	if code, body := clusterGet(t, a.HTTPClient(false), a.URL("blog", "/"), nil); code != http.StatusOK || body != "ok" {
		t.Fatalf("blog through a: %d %q", code, body)
	}
}

// A TCP tunnel's visitor on node B reaches the client on node A, checked
// against the owner and allowed tokens A wrote into the table.
func TestClusterRegistry_RemoteTCPTunnel(t *testing.T) {
	e := etcdtest.Start(t, 1)
	fwd := &directForwarder{}
	nodes := startCluster(t, e, fwd, "a", "b")
	a, b := nodes[0], nodes[1]
	w, _ := tcpOwner(t, a.Edge, aliceToken, "pi-ssh", tcpEcho(t), "tk_friend")
	b.seen(t, "pi-ssh", w.SessionID)
	if got := b.reg.Kind("pi-ssh"); got != proto.KindTCP {
		t.Fatalf("kind on b: %q", got)
	}
	for _, tok := range []string{aliceToken, "tk_friend"} {
		c, err := mux.Connect(context.Background(), connectCfg(b.Edge, "pi-ssh", tok))
		if err != nil {
			t.Fatalf("%s through b: %v", tok, err)
		}
		msg := []byte(strings.Repeat("ssh bytes ", 10_000))
		if got := echoThrough(t, c, msg); string(got) != string(msg) {
			t.Fatalf("%s: echo through b: got %d bytes, want %d", tok, len(got), len(msg))
		}
		c.Close()
	}
	if c, err := mux.Connect(context.Background(), connectCfg(b.Edge, "pi-ssh", bobToken)); err == nil {
		c.Close()
		t.Fatal("bob reached alice's TCP tunnel through b")
	}
}

// counter reads a counter from the server's metrics registry.
func counter(t *testing.T, srv *edge.Server, name string) float64 {
	t.Helper()
	fams, err := srv.Metrics().Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s missing", name)
	return 0
}

// A token's tunnels count on every node: its limit holds across the
// cluster.
func TestClusterRegistry_TunnelsPerTokenAcrossNodes(t *testing.T) {
	e := etcdtest.Start(t, 1)
	fwd := &directForwarder{}
	nodes := startClusterWith(t, e, fwd, func(cfg *edge.Config) { cfg.MaxTunnelsPerToken = 2 }, "a", "b")
	a, b := nodes[0], nodes[1]
	backend := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	cl, err := a.Connect(edgetest.AliceToken, mux.Tunnel{Name: "one", Target: backend}, mux.Tunnel{Name: "two", Target: backend})
	if err != nil {
		t.Fatal(err)
	}
	b.seen(t, "two", cl.Welcome.SessionID)
	_, err = b.Connect(edgetest.AliceToken, mux.Tunnel{Name: "three", Target: backend})
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.CodeTooManyTunnels {
		t.Fatalf("a third tunnel on b: got %v, want %s", err, proto.CodeTooManyTunnels)
	}
	if _, err := b.Connect(edgetest.BobToken, mux.Tunnel{Name: "four", Target: backend}); err != nil {
		t.Fatalf("another token on b: %v", err)
	}
}

// A visitor on node B whose tunnel's client is away waits for it (the
// offline wait, woken by B's view) and is served once the client is back,
// here on node A again.
func TestClusterRegistry_OfflineWaitAcrossNodes(t *testing.T) {
	e := etcdtest.Start(t, 1)
	fwd := &directForwarder{}
	nodes := startClusterWith(t, e, fwd, func(cfg *edge.Config) { cfg.OfflineWait = 15 * time.Second }, "a", "b")
	a, b := nodes[0], nodes[1]
	backend := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "back") }))
	cl, err := a.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Target: backend})
	if err != nil {
		t.Fatal(err)
	}
	b.seen(t, "wiki", cl.Welcome.SessionID)
	cl.Stop()
	cl.Wait(t)
	// b sees the name on hold before the visitor comes.
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		ch := b.c.Changes("wiki")
		if en, ok := b.c.Lookup("wiki"); ok && en.Live == nil {
			break
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatal("b never saw wiki on hold")
		}
	}
	type result struct {
		code int
		body string
	}
	got := make(chan result, 1)
	hc := b.HTTPClient(false)
	go func() {
		resp, err := hc.Get(b.URL("wiki", "/"))
		if err != nil {
			got <- result{code: -1, body: err.Error()}
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		got <- result{resp.StatusCode, string(body)}
	}()
	if _, err := a.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Target: backend}); err != nil {
		t.Fatal(err)
	}
	if r := testwait.Recv(t, got, 20*time.Second); r.code != http.StatusOK || r.body != "back" {
		t.Fatalf("the waiting visitor: %d %q", r.code, r.body)
	}
}

// A TLS tunnel's visitor on node B reaches the local service behind the
// client on node A, end to end encrypted: B reads only the server name.
func TestClusterRegistry_RemoteTLSTunnel(t *testing.T) {
	e := etcdtest.Start(t, 1)
	fwd := &directForwarder{}
	nodes := startCluster(t, e, fwd, "a", "b")
	a, b := nodes[0], nodes[1]
	host := "secure." + domain
	addr, visitorTLS := localHTTPS(t, host)
	w := tlsOwner(t, a.Edge, "secure", addr)
	b.seen(t, "secure", w.SessionID)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, b.Addr)
		},
		TLSClientConfig: visitorTLS,
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get(fmt.Sprintf("https://%s:%d/", host, b.Port))
	if err != nil {
		t.Fatalf("GET through b: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "end to end " + host; string(body) != want {
		t.Fatalf("got %q, want %q", body, want)
	}
}
