package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/internal/testwait"
)

func poolClaim(c *Cluster, session, owner, name string, data string) ([]Replaced, error) {
	return ClaimRequest{Session: session, Owner: owner,
		Tunnels: []Tunnel{{Name: name, Kind: "http", Data: []byte(data), Pool: true}}}.claim(c)
}

// members returns the sessions of name's pool in c's view, in order.
func members(c *Cluster, name string) []string {
	e, _ := c.Lookup(name)
	var out []string
	for _, m := range e.Members {
		out = append(out, m.Node+"/"+m.Session)
	}
	return out
}

func hasMembers(want ...string) func(Entry, bool) bool {
	return func(e Entry, ok bool) bool {
		if !ok || e.Live != nil || len(e.Members) != len(want) {
			return false
		}
		for i, m := range e.Members {
			if m.Node+"/"+m.Session != want[i] {
				return false
			}
		}
		return true
	}
}

// Two sessions on two nodes share a name; both nodes list both members,
// each under its node; another owner is refused, and so are other rules.
func TestCluster_PoolAcrossNodes(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	if _, err := poolClaim(a, "s1", "alice", "api", "rules"); err != nil {
		t.Fatal(err)
	}
	rep, err := poolClaim(b, "s2", "alice", "api", "rules")
	if err != nil {
		t.Fatalf("second member: %v", err)
	}
	if len(rep) != 0 {
		t.Fatalf("a member joining replaced %v", rep)
	}
	for _, c := range []*Cluster{a, b} {
		waitFor(t, c, "api", hasMembers("a/s1", "b/s2"))
	}
	if a.ForeignTunnels("alice") != 1 || b.ForeignTunnels("alice") != 1 {
		t.Fatalf("foreign tunnels: a %d, b %d, want 1 and 1", a.ForeignTunnels("alice"), b.ForeignTunnels("alice"))
	}
	if got := len(a.Live()); got != 2 { // before lb is claimed
		t.Fatalf("Live lists %d entries, want one per member (2)", got)
	}
	if _, err := poolClaim(b, "s3", "bob", "api", "rules"); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("another owner's pool claim: got %v, want ErrNameTaken", err)
	}
	if _, err := claim(b, "s3", "bob", "api"); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("another owner's claim: got %v, want ErrNameTaken", err)
	}
	if _, err := poolClaim(b, "s4", "alice", "api", "other rules"); !errors.Is(err, ErrPoolMismatch) {
		t.Fatalf("other rules: got %v, want ErrPoolMismatch", err)
	}
	req := ClaimRequest{Session: "s5", Owner: "alice", Tunnels: []Tunnel{{Name: "api", Kind: "tcp", Data: []byte("rules"), Pool: true}}}
	if _, err := req.claim(b); !errors.Is(err, ErrPoolMismatch) {
		t.Fatalf("another kind: got %v, want ErrPoolMismatch", err)
	}
	// Match, when given, is what must agree; Data may then differ.
	req = ClaimRequest{Session: "s8", Owner: "alice", Tunnels: []Tunnel{{Name: "lb", Kind: "http", Data: []byte("label 1"), Match: []byte("rules"), Pool: true}}}
	if _, err := req.claim(a); err != nil {
		t.Fatal(err)
	}
	req = ClaimRequest{Session: "s9", Owner: "alice", Tunnels: []Tunnel{{Name: "lb", Kind: "http", Data: []byte("label 2"), Match: []byte("rules"), Pool: true}}}
	if _, err := req.claim(b); err != nil {
		t.Fatalf("same Match, other Data: %v", err)
	}
	req = ClaimRequest{Session: "s10", Owner: "alice", Tunnels: []Tunnel{{Name: "lb", Kind: "http", Data: []byte("label 1"), Match: []byte("other"), Pool: true}}}
	if _, err := req.claim(b); !errors.Is(err, ErrPoolMismatch) {
		t.Fatalf("other Match, same Data: got %v, want ErrPoolMismatch", err)
	}
	if got := members(a, "api"); len(got) != 2 {
		t.Fatalf("the refused claims changed the pool: %v", got)
	}
	// A member leaving takes only itself away, and the hold comes when
	// the last one leaves.
	a.Release(context.Background(), "s1")
	waitFor(t, b, "api", hasMembers("b/s2"))
	b.Release(context.Background(), "s2")
	en := waitFor(t, a, "api", func(e Entry, ok bool) bool { return isHeld(e, ok) && len(e.Members) == 0 && !e.HoldUntil.IsZero() })
	if en.Owner != "alice" {
		t.Fatalf("held entry %+v", en)
	}
	if _, err := poolClaim(b, "s6", "bob", "api", "rules"); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("another owner during the hold: got %v, want ErrNameTaken", err)
	}
	if _, err := poolClaim(b, "s7", "alice", "api", "rules"); err != nil {
		t.Fatalf("the owner's pool during the hold: %v", err)
	}
	waitFor(t, a, "api", hasMembers("b/s7"))
}

// A claim without Pool takes the name over from every member, on every
// node, and a pool claim takes it over from one session that held it
// alone.
func TestCluster_PoolTakeover(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	lostA, lostB := make(chan string, 4), make(chan string, 4)
	a.SetHooks(Hooks{Lost: func(s string) { lostA <- s }})
	b.SetHooks(Hooks{Lost: func(s string) { lostB <- s }})
	if _, err := poolClaim(a, "s1", "alice", "api", "api"); err != nil {
		t.Fatal(err)
	}
	if _, err := poolClaim(b, "s2", "alice", "api", "api"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, a, "api", hasMembers("a/s1", "b/s2"))
	rep, err := claim(a, "s3", "alice", "api")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep) != 2 || !contains(rep, Replaced{Node: "a", Session: "s1"}) || !contains(rep, Replaced{Node: "b", Session: "s2"}) {
		t.Fatalf("replaced %v, want both members", rep)
	}
	if got := testwait.Recv(t, lostB, within); got != "s2" {
		t.Fatalf("b lost %q, want s2", got)
	}
	en := waitFor(t, b, "api", isLive)
	if en.Live.Session != "s3" || len(en.Members) != 0 {
		t.Fatalf("b's view after the take-over: %+v", en)
	}
	// The replaced members' releases leave the new claim alone.
	a.Release(context.Background(), "s1")
	b.Release(context.Background(), "s2")
	if en, _ := b.Lookup("api"); en.Live == nil || en.Live.Session != "s3" {
		t.Fatalf("after the stale releases: %+v", en)
	}
	// A pool claim takes the name over from the session holding it alone.
	rep, err = poolClaim(b, "s4", "alice", "api", "api")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep) != 1 || rep[0] != (Replaced{Node: "a", Session: "s3"}) {
		t.Fatalf("replaced %v, want a/s3", rep)
	}
	// a may also have been told s1 lost, if its watch showed its own
	// take-over before the claim returned: s1 was replaced either way.
	for got := ""; got != "s3"; {
		if got = testwait.Recv(t, lostA, within); got != "s3" && got != "s1" {
			t.Fatalf("a lost %q, want s3", got)
		}
	}
	waitFor(t, a, "api", hasMembers("b/s4"))
}

// A member's node dying takes only that member away; when the last
// member's node dies the name goes on hold.
func TestCluster_PoolMemberNodeDies(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a, b, c := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute), node(t, e, "c", time.Minute)
	if _, err := poolClaim(a, "s1", "alice", "api", "api"); err != nil {
		t.Fatal(err)
	}
	if _, err := poolClaim(b, "s2", "alice", "api", "api"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "api", hasMembers("a/s1", "b/s2"))
	a.paused.Store(true) // no keepalive: a's lease runs out
	waitFor(t, c, "api", hasMembers("b/s2"))
	// The tidying gives no hold to a name a member still serves.
	if en, _ := c.Lookup("api"); !en.HoldUntil.IsZero() {
		t.Fatalf("a live pool got a hold: %+v", en)
	}
	b.Close()
	en := waitFor(t, c, "api", func(e Entry, ok bool) bool { return isHeld(e, ok) && len(e.Members) == 0 && !e.HoldUntil.IsZero() })
	if en.Owner != "alice" {
		t.Fatalf("held entry %+v", en)
	}
}

// After its lease ran out, a node re-asserts its member under a new lease,
// beside the member another node kept serving.
func TestCluster_PoolMemberReasserted(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	if _, err := poolClaim(a, "s1", "alice", "api", "api"); err != nil {
		t.Fatal(err)
	}
	if _, err := poolClaim(b, "s2", "alice", "api", "api"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, b, "api", hasMembers("a/s1", "b/s2"))
	a.paused.Store(true)
	waitFor(t, b, "api", hasMembers("b/s2"))
	a.paused.Store(false)
	waitFor(t, b, "api", hasMembers("a/s1", "b/s2"))
}
