package edge_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/internal/testhttp"
	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// poolToken is a token whose clients may share a name; aliceToken and
// bobToken may not.
const poolToken = "tk_pool"

// startPoolEdge is edgetest's edge with a third token, "pis", that may
// pool, and no offline wait, so a name on hold answers at once.
func startPoolEdge(t *testing.T) *harness {
	t.Helper()
	return edgetest.Start(t, func(c *edge.Config) {
		tokens, err := token.New([]token.Entry{
			{Label: "alice", SHA256: token.Hash(aliceToken), Names: []string{"*"}},
			{Label: "bob", SHA256: token.Hash(bobToken), Names: []string{"*"}},
			{Label: "pis", SHA256: token.Hash(poolToken), Names: []string{"*"}, Pool: true},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Auth = tokens
		c.OfflineWait = 0
	})
}

// poolBackend is a local service that answers with its label and
// counts the requests it served.
type poolBackend struct {
	label string
	addr  string
	n     atomic.Int64
}

func newPoolBackend(t *testing.T, label string) *poolBackend {
	b := &poolBackend{label: label}
	b.addr = edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.n.Add(1)
		fmt.Fprint(w, label)
	}))
	return b
}

// joinPool connects a client of the pool token serving name with target
// as a pool member, and checks the Welcome confirms the pool.
func joinPool(t *testing.T, h *harness, name, target string) *edgetest.Client {
	t.Helper()
	c, err := h.Connect(poolToken, mux.Tunnel{Name: name, Target: target, Pool: true})
	if err != nil {
		t.Fatalf("join pool %s: %v", name, err)
	}
	if !c.Welcome.Tunnels[0].Pool {
		t.Fatalf("join pool %s: the Welcome does not confirm the pool: %+v", name, c.Welcome.Tunnels[0])
	}
	return c
}

// getAll sends n sequential GETs to url and fails unless each is a 200.
func getAll(t *testing.T, hc *http.Client, url string, n int) {
	t.Helper()
	for i := range n {
		if code, body := testhttp.Get(t, hc, url); code != http.StatusOK {
			t.Fatalf("request %d: got %d %q, want 200", i, code, body)
		}
	}
}

// TestPool_RoundRobinIsEven: three clients share a name; sequential
// requests go to each in turn, so each backend serves exactly a third,
// and the status lists each member of the name.
func TestPool_RoundRobinIsEven(t *testing.T) {
	h := startPoolEdge(t)
	var bs []*poolBackend
	for i := range 3 {
		b := newPoolBackend(t, fmt.Sprintf("b%d", i))
		bs = append(bs, b)
		joinPool(t, h, "wiki", b.addr)
	}
	hc := h.HTTPClient(false)
	getAll(t, hc, h.URL("wiki", "/"), 300)
	for _, b := range bs {
		if got := b.n.Load(); got != 100 {
			t.Errorf("backend %s served %d of 300, want 100", b.label, got)
		}
	}
	sessions := map[string]bool{}
	var requests int64
	for _, ts := range h.Srv.Tunnels() {
		if ts.Name == "wiki" {
			sessions[ts.SessionID] = ts.Pool
			requests += ts.Requests
			if !ts.Pool {
				t.Errorf("status: member %s of wiki not marked as a pool member", ts.SessionID)
			}
		}
	}
	if len(sessions) != 3 || requests != 300 {
		t.Errorf("status: got %d members of wiki with %d requests, want 3 with 300", len(sessions), requests)
	}
	if n := poolSkips(t, h); n != 0 {
		t.Errorf("tunneld_pool_member_skips_total: got %v with every member up, want 0", n)
	}
}

// TestPool_MemberOpenFailureSkipped: a member whose local service is down
// refuses every stream; its turns go to the other members and no visitor
// sees the refusal. After its first failure it rests (passed over for a
// second, then two, four...), so it is tried again a few times at most,
// not at each of its turns: a member whose link went silent costs one
// visitor a stream-open timeout per rest, not every third visitor.
func TestPool_MemberOpenFailureSkipped(t *testing.T) {
	h := startPoolEdge(t)
	a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
	joinPool(t, h, "wiki", a.addr)
	joinPool(t, h, "wiki", "127.0.0.1:1") // nothing listens there
	joinPool(t, h, "wiki", b.addr)
	getAll(t, h.HTTPClient(false), h.URL("wiki", "/"), 60)
	if na, nb := a.n.Load(), b.n.Load(); na+nb != 60 || na == 0 || nb == 0 {
		t.Fatalf("backends served %d and %d, want 60 between both", na, nb)
	}
	// Without rests, every third request would meet the dead member
	// first (about 20); with them, once per rest. Rests double from a
	// second, so even a slow run of a minute sees at most 7.
	if n := poolSkips(t, h); n < 1 || n > 7 {
		t.Fatalf("tunneld_pool_member_skips_total: got %v, want 1 to 7", n)
	}
}

// poolSkips reads tunneld_pool_member_skips_total.
func poolSkips(t *testing.T, h *harness) float64 {
	t.Helper()
	mfs, err := h.Srv.Metrics().Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tunneld_pool_member_skips_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no tunneld_pool_member_skips_total")
	return 0
}

// TestPool_MemberLeaving: a member that leaves takes only its share away;
// when the last one leaves the name goes on hold for its owner (offline,
// not unknown), and a new member gets it back.
func TestPool_MemberLeaving(t *testing.T) {
	h := startPoolEdge(t)
	a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
	ca := joinPool(t, h, "wiki", a.addr)
	cb := joinPool(t, h, "wiki", b.addr)
	hc := h.HTTPClient(false)
	getAll(t, hc, h.URL("wiki", "/"), 10)
	ca.Stop()
	if err := ca.Wait(t); err != nil {
		t.Fatalf("client a: %v", err)
	}
	before := a.n.Load()
	getAll(t, hc, h.URL("wiki", "/"), 20)
	if a.n.Load() != before {
		t.Fatalf("the departed member served %d requests", a.n.Load()-before)
	}
	cb.Stop()
	if err := cb.Wait(t); err != nil {
		t.Fatalf("client b: %v", err)
	}
	if code, body := testhttp.Get(t, hc, h.URL("wiki", "/")); code != http.StatusBadGateway || !strings.Contains(body, "Tunnel offline") {
		t.Fatalf("after the last member left: got %d %q, want 502 tunnel offline (the name on hold)", code, body)
	}
	if _, err := h.Connect(bobToken, mux.Tunnel{Name: "wiki", Target: b.addr}); !isCode(err, proto.CodeNameTaken) {
		t.Fatalf("another owner during the hold: got %v, want name_taken", err)
	}
	c := newPoolBackend(t, "c")
	joinPool(t, h, "wiki", c.addr)
	getAll(t, hc, h.URL("wiki", "/"), 3)
	if c.n.Load() != 3 {
		t.Fatalf("the new member served %d of 3", c.n.Load())
	}
}

// TestPool_ClaimsWithAndWithoutPool: a client without --pool takes a
// pooled name over from every member; a client with --pool takes a name
// one client holds without it over from that client.
func TestPool_ClaimsWithAndWithoutPool(t *testing.T) {
	h := startPoolEdge(t)
	a, b, solo := newPoolBackend(t, "a"), newPoolBackend(t, "b"), newPoolBackend(t, "solo")
	ca := joinPool(t, h, "wiki", a.addr)
	cb := joinPool(t, h, "wiki", b.addr)
	cs, err := h.Connect(poolToken, mux.Tunnel{Name: "wiki", Target: solo.addr})
	if err != nil {
		t.Fatal(err)
	}
	if cs.Welcome.Tunnels[0].Pool {
		t.Fatal("a client that asked for no pool is told it pools")
	}
	for _, c := range []*edgetest.Client{ca, cb} {
		if err := c.Wait(t); err == nil {
			t.Fatal("a replaced member's client ended without an error")
		}
	}
	hc := h.HTTPClient(false)
	getAll(t, hc, h.URL("wiki", "/"), 5)
	if solo.n.Load() != 5 {
		t.Fatalf("after the take-over the solo client served %d of 5", solo.n.Load())
	}
	c := newPoolBackend(t, "c")
	joinPool(t, h, "wiki", c.addr)
	if err := cs.Wait(t); err == nil {
		t.Fatal("the solo client taken over by a pool ended without an error")
	}
	getAll(t, hc, h.URL("wiki", "/"), 5)
	if c.n.Load() != 5 {
		t.Fatalf("the pool that took over served %d of 5", c.n.Load())
	}
}

// TestPool_Refusals: a token without pool, and an anonymous client, are
// refused a pool; a member asking for other access rules or another kind
// than the pool's is refused too; all permanently.
func TestPool_Refusals(t *testing.T) {
	h := startPoolEdge(t)
	a := newPoolBackend(t, "a")
	joinPool(t, h, "wiki", a.addr)
	rules := &proto.Access{AllowCIDR: []string{"127.0.0.0/8"}}
	for _, tt := range []struct {
		name   string
		token  string
		tunnel mux.Tunnel
		code   proto.ErrorCode
		msg    string
	}{
		{"token without pool", bobToken, mux.Tunnel{Name: "blog", Target: a.addr, Pool: true}, proto.CodePoolNotAllowed, `the token "bob" may not share a name`},
		{"anonymous", "", mux.Tunnel{Name: "blog", Target: a.addr, Pool: true}, proto.CodePoolNotAllowed, "anonymous clients may not share a name"},
		{"other access rules", poolToken, mux.Tunnel{Name: "wiki", Target: a.addr, Pool: true, Access: rules}, proto.CodePoolMismatch, "same kind and access rules"},
		{"other kind", poolToken, mux.Tunnel{Name: "wiki", Target: a.addr, Pool: true, Kind: proto.KindTCP}, proto.CodePoolMismatch, "same kind and access rules"},
	} {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			_, err := h.Connect(tt.token, tt.tunnel)
			var perr *proto.Error
			if !errors.As(err, &perr) || perr.Code != tt.code || !perr.Code.Permanent() || !strings.Contains(perr.Message, tt.msg) {
				t.Fatalf("got %v, want a permanent %s saying %q", err, tt.code, tt.msg)
			}
		})
	}
	// The pool kept serving through every refusal.
	getAll(t, h.HTTPClient(false), h.URL("wiki", "/"), 3)
}

func isCode(err error, code proto.ErrorCode) bool {
	var perr *proto.Error
	return errors.As(err, &perr) && perr.Code == code
}

// labelService is a local TCP service that writes label on each
// connection and closes it.
func labelService(t *testing.T, label string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServeOn(t, ln, func(c net.Conn) {
		io.WriteString(c, label)
		c.Close()
	})
	return ln.Addr().String()
}

// TestPool_TCPConnectionsAlternate: a TCP tunnel's pool spreads visitor
// connections over its members in turn, and skips a member whose local
// service is down; the owner's token reaches the pool as it reaches one
// client.
func TestPool_TCPConnectionsAlternate(t *testing.T) {
	h := startPoolEdge(t)
	for _, target := range []string{labelService(t, "a"), "127.0.0.1:1", labelService(t, "b")} {
		c, err := h.Connect(poolToken, mux.Tunnel{Name: "pi-ssh", Target: target, Kind: proto.KindTCP, Pool: true})
		if err != nil {
			t.Fatal(err)
		}
		if !c.Welcome.Tunnels[0].Pool {
			t.Fatal("the Welcome does not confirm the tcp pool")
		}
	}
	got := map[string]int{}
	for range 6 {
		c, err := mux.Connect(context.Background(), connectCfg(h, "pi-ssh", poolToken))
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		got[string(b)]++
	}
	if got["a"]+got["b"] != 6 || got["a"] == 0 || got["b"] == 0 {
		t.Fatalf("connections served: got %v, want 6 between a and b", got)
	}
}

// TestClusterRegistry_PoolAcrossNodes: two clients on two nodes share a
// name; a visitor on a third node, and one on a member's node, are spread
// evenly over both (one pool route of a local and a remote member, or two
// remote ones); each node's status lists both members with their nodes;
// another owner is refused; a member whose node cannot be reached is
// skipped with no failed request; the last member leaving puts the name
// on hold.
func TestClusterRegistry_PoolAcrossNodes(t *testing.T) {
	e := etcdtest.Start(t, 1)
	fwd := &directForwarder{}
	nodes := startClusterWith(t, e, fwd, func(c *edge.Config) {
		tokens, err := token.New([]token.Entry{
			{Label: "alice", SHA256: token.Hash(aliceToken), Names: []string{"*"}},
			{Label: "pis", SHA256: token.Hash(poolToken), Names: []string{"*"}, Pool: true},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Auth = tokens
	}, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	bb := newPoolBackend(t, "bb")
	// ba's service keeps no connection, so each request to it opens a
	// stream: once its node cannot be reached, every open fails.
	ba := &poolBackend{label: "ba"}
	ba.addr = edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ba.n.Add(1)
		w.Header().Set("Connection", "close")
		fmt.Fprint(w, "ba")
	}))
	ca := joinPool(t, a.Edge, "wiki", ba.addr)
	cb := joinPool(t, b.Edge, "wiki", bb.addr)
	for _, n := range nodes {
		deadline := time.NewTimer(15 * time.Second)
		for {
			ch := n.c.Changes("wiki")
			if en, _ := n.c.Lookup("wiki"); len(en.Members) == 2 {
				break
			}
			select {
			case <-ch:
			case <-deadline.C:
				t.Fatalf("%s never saw both members", n.c.Node())
			}
		}
		deadline.Stop()
	}
	first, _ := c.reg.Lookup("wiki")
	if again, _ := c.reg.Lookup("wiki"); first == nil || again != first {
		t.Fatalf("c's route: %v then %v, want one pool route", first, again)
	}
	for _, n := range []clusterNode{c, a} {
		ba.n.Store(0)
		bb.n.Store(0)
		getAll(t, n.HTTPClient(false), n.URL("wiki", "/"), 200)
		if ba.n.Load() != 100 || bb.n.Load() != 100 {
			t.Fatalf("through %s: ba served %d, bb %d of 200, want 100 each", n.c.Node(), ba.n.Load(), bb.n.Load())
		}
	}
	for _, n := range nodes {
		got := map[string]string{}
		for _, ts := range n.Srv.Tunnels() {
			if ts.Name == "wiki" && ts.Pool {
				got[ts.SessionID] = ts.Node
			}
		}
		na, nb := got[ca.Welcome.SessionID], got[cb.Welcome.SessionID]
		if len(got) != 2 || n.c.Node() != "a" && na != "a" || n.c.Node() != "b" && nb != "b" {
			t.Fatalf("%s's status of wiki's members: %v", n.c.Node(), got)
		}
	}
	if _, err := c.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Target: ba.addr, Pool: true}); err == nil {
		t.Fatal("another owner's client joined the pool")
	}
	// Node a cannot be reached from c: its member is skipped.
	fwd.mu.Lock()
	delete(fwd.nodes, "a")
	fwd.mu.Unlock()
	ba.n.Store(0)
	bb.n.Store(0)
	getAll(t, c.HTTPClient(false), c.URL("wiki", "/"), 50)
	if ba.n.Load() != 0 || bb.n.Load() != 50 {
		t.Fatalf("with a unreachable: ba served %d, bb %d of 50, want 0 and 50", ba.n.Load(), bb.n.Load())
	}
	// Members leave one by one; the last puts the name on hold.
	ca.Stop()
	ca.Wait(t)
	cb.Stop()
	cb.Wait(t)
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		ch := c.c.Changes("wiki")
		if rt, held := c.reg.Lookup("wiki"); rt == nil && held {
			break
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatal("the pool's name is not on hold after its last member left")
		}
	}
	select {
	case <-first.Draining():
	default:
		t.Fatal("the pool route of a name on hold does not drain")
	}
}
