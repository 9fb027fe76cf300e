package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const within = 15 * time.Second

// node opens a Cluster for node on e with a 2 s lease.
func node(t *testing.T, e *etcdtest.Cluster, name string, hold time.Duration) *Cluster {
	t.Helper()
	return nodeTTL(t, e, name, hold, 2*time.Second)
}

func nodeTTL(t *testing.T, e *etcdtest.Cluster, name string, hold, ttl time.Duration) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c, err := Open(ctx, Config{Endpoints: e.Endpoints(), Node: name, Addr: name + ":7000",
		LeaseTTL: ttl, Hold: hold, ClaimTimeout: 2 * time.Second, Log: zerolog.Nop()})
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func claim(c *Cluster, session, owner string, names ...string) ([]Replaced, error) {
	req := ClaimRequest{Session: session, Owner: owner}
	for _, n := range names {
		req.Tunnels = append(req.Tunnels, Tunnel{Name: n, Kind: "http", Data: []byte(n)})
	}
	return req.claim(c)
}

func (r ClaimRequest) claim(c *Cluster) ([]Replaced, error) {
	return c.Claim(context.Background(), r)
}

// waitFor waits until cond holds of c's view of name, woken by its
// changes; it fails the test after within.
func waitFor(t *testing.T, c *Cluster, name string, cond func(Entry, bool) bool) Entry {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		ch := c.Changes(name)
		e, ok := c.Lookup(name)
		if cond(e, ok) {
			return e
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s: %q: condition not met within %v (entry %+v, %v)", c.Node(), name, within, e, ok)
		}
	}
}

func isLive(e Entry, ok bool) bool { return ok && e.Live != nil }
func isHeld(e Entry, ok bool) bool { return ok && e.Live == nil }

func TestCluster_ClaimIsAllOrNone(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	if _, err := claim(a, "s1", "alice", "one", "two"); err != nil {
		t.Fatal(err)
	}
	_, err := claim(b, "s2", "bob", "three", "two")
	if !errors.Is(err, ErrNameTaken) {
		t.Fatalf("got %v, want ErrNameTaken", err)
	}
	if _, ok := b.Lookup("three"); ok {
		t.Fatal("the refused claim left \"three\" claimed")
	}
	if _, err := claim(b, "s2", "bob", "three"); err != nil {
		t.Fatalf("three alone: %v", err)
	}
	// Claim returns once the claiming node's view shows the claim.
	if en, _ := b.Lookup("three"); en.Live == nil || en.Live.Session != "s2" || en.Live.Node != "b" || en.Owner != "bob" {
		t.Fatalf("b's view of three: %+v", en)
	}
	waitFor(t, a, "three", isLive)
}

// Two owners race for one name through two nodes: exactly one wins, every
// time.
func TestCluster_RaceHasOneWinner(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	for i := range 100 {
		n := fmt.Sprintf("race-%d", i)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j, c := range []*Cluster{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[j] = claim(c, fmt.Sprintf("s%d-%d", i, j), fmt.Sprintf("owner%d", j), n)
			}()
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, ErrNameTaken):
				t.Fatalf("%s: %v", n, err)
			}
		}
		if won != 1 {
			t.Fatalf("%s: %d winners (%v)", n, won, errs)
		}
	}
}

func TestCluster_HoldAfterRelease(t *testing.T) {
	e := etcdtest.Start(t, 1)
	hold := 3 * time.Second
	a, b := node(t, e, "a", hold), node(t, e, "b", hold)
	if _, err := claim(a, "s1", "alice", "wiki"); err != nil {
		t.Fatal(err)
	}
	a.Release(context.Background(), "s1")
	en := waitFor(t, b, "wiki", isHeld)
	if en.Owner != "alice" || en.HoldUntil.IsZero() {
		t.Fatalf("held entry %+v", en)
	}
	if _, err := claim(b, "s2", "bob", "wiki"); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("another owner during the hold: got %v, want ErrNameTaken", err)
	}
	// The owner gets it back at once, on the other node.
	if _, err := claim(b, "s3", "alice", "wiki"); err != nil {
		t.Fatalf("owner during the hold: %v", err)
	}
	b.Release(context.Background(), "s3")
	en = waitFor(t, a, "wiki", func(e Entry, ok bool) bool { return isHeld(e, ok) && e.HoldUntil.After(en.HoldUntil) })
	// A hold is a span of time: wait it out, then anybody may claim.
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	tidied := e.Client().Watch(ctx, "/tunnel/owners/wiki")
	time.Sleep(time.Until(en.HoldUntil))
	if _, ok := a.Lookup("wiki"); ok {
		t.Fatal("the name is still held after its hold ended")
	}
	// The tidying deletes the run-out owner record.
	for deleted := false; !deleted; {
		select {
		case resp := <-tidied:
			for _, ev := range resp.Events {
				deleted = deleted || ev.Type == clientv3.EventTypeDelete
			}
		case <-ctx.Done():
			t.Fatal("the run-out hold's owner record was never deleted")
		}
	}
	if _, err := claim(a, "s4", "bob", "wiki"); err != nil {
		t.Fatalf("another owner after the hold: %v", err)
	}
}

func TestCluster_HoldSurvivesNodeDeath(t *testing.T) {
	for _, how := range []string{"close", "keepalive-stops"} {
		t.Run(how, func(t *testing.T) {
			e := etcdtest.Start(t, 1)
			a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
			if _, err := claim(a, "s1", "alice", "wiki", "blog"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, b, "wiki", isLive)
			switch how {
			case "close":
				a.Close()
			default:
				a.paused.Store(true) // as a paused process: no keepalive, no tidying
			}
			// b sees the live record die with a's lease, and gives the
			// name its hold deadline.
			en := waitFor(t, b, "wiki", func(e Entry, ok bool) bool { return isHeld(e, ok) && !e.HoldUntil.IsZero() })
			if en.Owner != "alice" {
				t.Fatalf("held entry %+v", en)
			}
			if _, err := claim(b, "s2", "bob", "wiki"); !errors.Is(err, ErrNameTaken) {
				t.Fatalf("another owner during the hold: got %v, want ErrNameTaken", err)
			}
			if _, err := claim(b, "s3", "alice", "wiki", "blog"); err != nil {
				t.Fatalf("owner on the other node: %v", err)
			}
		})
	}
}

// A same-owner claim on another node replaces the first node's session,
// which that node learns from its watch.
func TestCluster_TakeoverIsSeenByTheOldNode(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	lost := make(chan string, 4)
	changed := make(chan string, 64)
	a.SetHooks(Hooks{Lost: func(s string) { lost <- s }, Changed: func(n string) {
		select {
		case changed <- n:
		default:
		}
	}})
	if _, err := claim(a, "s1", "alice", "wiki"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, b, "wiki", isLive)
	rep, err := claim(b, "s2", "alice", "wiki")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep) != 1 || rep[0] != (Replaced{Node: "a", Session: "s1"}) {
		t.Fatalf("replaced %v", rep)
	}
	if got := testwait.Recv(t, lost, within); got != "s1" {
		t.Fatalf("lost %q, want s1", got)
	}
	if en, _ := a.Lookup("wiki"); en.Live == nil || en.Live.Node != "b" || en.Live.Session != "s2" {
		t.Fatalf("a's view: %+v", en)
	}
	// The stale session's release leaves the new claim alone.
	a.Release(context.Background(), "s1")
	if en, _ := b.Lookup("wiki"); en.Live == nil || en.Live.Session != "s2" {
		t.Fatalf("b's view after the stale release: %+v", en)
	}
	if a.ForeignTunnels("alice") != 1 || b.ForeignTunnels("alice") != 0 {
		t.Fatalf("foreign tunnels: a %d, b %d", a.ForeignTunnels("alice"), b.ForeignTunnels("alice"))
	}
}

func TestCluster_ChangesWakeWaiters(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	ch := b.Changes("wiki")
	if _, err := claim(a, "s1", "alice", "wiki"); err != nil {
		t.Fatal(err)
	}
	testwait.Recv(t, ch, within)
	en, ok := b.Lookup("wiki")
	if !ok || en.Live == nil || en.Live.Node != "a" || en.Live.Addr != "a:7000" || string(en.Live.Data) != "wiki" {
		t.Fatalf("b's view: %+v", en)
	}
}

// Without quorum the view keeps answering, a claim fails fast with
// ErrUnavailable and the node is degraded; when quorum is back the node
// re-asserts its names, and the view catches up with what changed.
func TestCluster_QuorumLoss(t *testing.T) {
	e := etcdtest.Start(t, 3)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	if _, err := claim(a, "s1", "alice", "wiki"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, b, "wiki", isLive)

	state := a.stateChanged()
	e.Stop(1)
	e.Stop(2)
	start := time.Now()
	_, err := claim(a, "s2", "bob", "blog")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim without quorum: got %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("claim without quorum took %v", d)
	}
	testwait.Recv(t, state, within)
	if !a.Degraded() {
		t.Fatal("not degraded without quorum")
	}
	for _, c := range []*Cluster{a, b} {
		if en, ok := c.Lookup("wiki"); !ok || en.Live == nil || en.Live.Session != "s1" {
			t.Fatalf("%s: view without quorum: %+v", c.Node(), en)
		}
	}

	state = a.stateChanged()
	e.Restart(1)
	e.Restart(2)
	e.WaitReady()
	testwait.Recv(t, state, within)
	if a.Degraded() || a.Fenced() {
		t.Fatalf("after quorum: degraded %v, fenced %v", a.Degraded(), a.Fenced())
	}
	if en, ok := b.Lookup("wiki"); !ok || en.Live == nil || en.Live.Session != "s1" {
		t.Fatalf("b's view after quorum: %+v", en)
	}
	if _, err := claim(a, "s2", "bob", "blog"); err != nil {
		t.Fatalf("claim after quorum: %v", err)
	}
	waitFor(t, b, "blog", isLive)
}

// A node whose lease ran out (paused past its TTL) takes a new one when it
// runs again and re-asserts its names; a name its owner took elsewhere
// meanwhile is lost, and the session told.
func TestCluster_ReassertAfterLeaseExpiry(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	lost := make(chan string, 4)
	a.SetHooks(Hooks{Lost: func(s string) { lost <- s }})
	if _, err := claim(a, "s1", "alice", "wiki"); err != nil {
		t.Fatal(err)
	}
	if _, err := claim(a, "s2", "carol", "blog"); err != nil {
		t.Fatal(err)
	}
	state := a.stateChanged()
	a.paused.Store(true)
	waitFor(t, b, "wiki", func(e Entry, ok bool) bool { return isHeld(e, ok) && !e.HoldUntil.IsZero() })
	if _, err := claim(b, "s3", "carol", "blog"); err != nil {
		t.Fatal(err)
	}
	a.paused.Store(false)
	testwait.Recv(t, state, within) // degraded: the lease was gone
	if got := testwait.Recv(t, lost, within); got != "s2" {
		t.Fatalf("lost %q, want s2", got)
	}
	en := waitFor(t, b, "wiki", isLive)
	if en.Live.Session != "s1" || en.Live.Node != "a" {
		t.Fatalf("re-asserted wiki: %+v", en.Live)
	}
	if en, _ := b.Lookup("blog"); en.Live == nil || en.Live.Session != "s3" {
		t.Fatalf("blog: %+v", en)
	}
}

// The watch ends when its revision was compacted away, and the loop then
// re-reads the table.
func TestCluster_WatchEndsOnCompaction(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a := node(t, e, "a", time.Minute)
	if _, err := claim(a, "s1", "alice", "wiki"); err != nil {
		t.Fatal(err)
	}
	cli := e.Client()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var last *clientv3.PutResponse
	for i := range 5 {
		r, err := cli.Put(ctx, fmt.Sprintf("/tunnel/x/%d", i), "v")
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	if _, err := cli.Compact(ctx, last.Header.Revision); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.v.watch(1)
	}()
	testwait.Recv(t, done, within)

	// A second watch loop from the compacted revision: it re-reads the
	// table, which tells every name's waiters.
	before := a.relists()
	ch := a.Changes("wiki")
	a.wg.Add(1)
	go a.v.watchLoop(1)
	testwait.Recv(t, ch, within)
	if a.relists() == before {
		t.Fatal("the table was not re-read after the compacted watch")
	}
	if en, ok := a.Lookup("wiki"); !ok || en.Live == nil || en.Live.Session != "s1" {
		t.Fatalf("view after re-read: %+v", en)
	}
}

func (c *Cluster) relists() int {
	c.v.mu.RLock()
	defer c.v.mu.RUnlock()
	return c.v.relists
}

// A node whose keepalive stops treats its names as not served before its
// lease can have run out, so before anyone else could claim them: with no
// hold, the fence falls a margin before the confirmed lease deadline, and
// at that moment another owner is still refused.
func TestCluster_FenceBeforeLeaseEnds(t *testing.T) {
	e := etcdtest.Start(t, 1)
	// A 4 s lease puts the fence a second before the lease can end: room
	// for the claim below on a loaded machine.
	a, b := nodeTTL(t, e, "a", 0, 4*time.Second), node(t, e, "b", 0)
	if _, err := claim(a, "s1", "alice", "wiki"); err != nil {
		t.Fatal(err)
	}
	if a.Fenced() {
		t.Fatal("fenced with a fresh lease")
	}
	a.paused.Store(true)
	a.lmu.Lock()
	fenceAt := a.confirmed.Add(-a.fenceMargin())
	a.lmu.Unlock()
	time.Sleep(time.Until(fenceAt)) // the fence is a deadline: wait for it
	if !a.Fenced() {
		t.Fatal("not fenced at the confirmed deadline minus the margin")
	}
	if _, err := claim(b, "s2", "bob", "wiki"); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("another owner at the fence: got %v, want ErrNameTaken (the lease still lives)", err)
	}
	// Once the lease has run out, the name (with no hold) is free.
	waitFor(t, b, "wiki", func(_ Entry, ok bool) bool { return !ok })
	if _, err := claim(b, "s2", "bob", "wiki"); err != nil {
		t.Fatalf("after the lease ended: %v", err)
	}
}

// One etcd member of three down: claims and views go on as before.
func TestCluster_OneMemberDown(t *testing.T) {
	e := etcdtest.Start(t, 3)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	if _, err := claim(a, "s1", "alice", "before"); err != nil {
		t.Fatal(err)
	}
	e.Stop(0)
	for i, n := range []string{"one", "two", "three"} {
		if _, err := claim(a, fmt.Sprintf("s%d", i+2), "alice", n); err != nil {
			t.Fatalf("claim %s with a member down: %v", n, err)
		}
		waitFor(t, b, n, isLive)
	}
	if a.Degraded() || b.Degraded() {
		t.Fatalf("degraded with one member of three down: a %v, b %v", a.Degraded(), b.Degraded())
	}
}

func TestConfig_Validate(t *testing.T) {
	ok := Config{Endpoints: []string{"http://e:2379"}, Node: "n1", Addr: "n1:7443"}
	ok.defaults()
	if err := ok.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tt := range []struct {
		name string
		mod  func(*Config)
	}{
		{"no endpoints", func(c *Config) { c.Endpoints = nil }},
		{"no node", func(c *Config) { c.Node = "" }},
		{"slash in node", func(c *Config) { c.Node = "a/b" }},
		{"no addr", func(c *Config) { c.Addr = "" }},
		{"short lease", func(c *Config) { c.LeaseTTL = time.Second }},
		{"negative hold", func(c *Config) { c.Hold = -time.Second }},
		{"prefix without slash", func(c *Config) { c.Prefix = "/tunnel" }},
	} {
		c := ok
		tt.mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: got no error", tt.name)
		}
	}
}

// A dead node's client gets its names back on another node at once, before
// the dead node's lease has run out.
func TestCluster_OwnerReclaimsFromDeadNodeAtOnce(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	if _, err := claim(a, "s1", "alice", "wiki"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, b, "wiki", isLive)
	a.paused.Store(true) // a hangs: its lease still lives for up to its TTL
	rep, err := claim(b, "s2", "alice", "wiki")
	if err != nil {
		t.Fatalf("owner on b while a's record lives: %v", err)
	}
	if len(rep) != 1 || rep[0].Node != "a" {
		t.Fatalf("replaced %v", rep)
	}
	if _, err := claim(b, "s3", "bob", "wiki"); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("another owner: got %v, want ErrNameTaken", err)
	}
	// a's lease running out later does not touch b's claim.
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	gone := make(chan struct{})
	w := e.Client().Watch(ctx, "/tunnel/nodes/a")
	go func() {
		defer close(gone)
		for resp := range w {
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return
				}
			}
		}
	}()
	testwait.Recv(t, gone, within)
	state := a.stateChanged()
	a.paused.Store(false)
	testwait.Recv(t, state, within)
	if en, _ := b.Lookup("wiki"); en.Live == nil || en.Live.Session != "s2" {
		t.Fatalf("b's claim after a's lease ended: %+v", en)
	}
}

// Two live processes cannot share a node name; the second gets it once
// the first has left.
func TestCluster_NodeNameInUse(t *testing.T) {
	e := etcdtest.Start(t, 1)
	first := node(t, e, "a", time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	cfg := Config{Endpoints: e.Endpoints(), Node: "a", Addr: "a2:7000", LeaseTTL: 2 * time.Second, Log: zerolog.Nop()}
	if c, err := Open(ctx, cfg); !errors.Is(err, ErrNodeInUse) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("second process under one name: got %v, want ErrNodeInUse", err)
	}
	opened := make(chan error, 1)
	var second *Cluster
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		var err error
		second, err = Open(ctx, cfg)
		opened <- err
	}()
	first.Close()
	if err := testwait.Recv(t, opened, within+time.Second); err != nil {
		t.Fatalf("after the first left: %v", err)
	}
	second.Close()
}

func TestCluster_ReleaseNameFreesOneNameAtOnce(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	if _, err := claim(a, "s1", "alice", "wiki", "wiki.example.org"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, b, "wiki.example.org", isLive)
	waitFor(t, b, "wiki", isLive)
	// A custom domain rides on its tunnel: it counts toward no limit.
	if n := b.ForeignTunnels("alice"); n != 1 {
		t.Fatalf("ForeignTunnels: got %d, want 1 (wiki, not its domain)", n)
	}
	a.ReleaseName(context.Background(), "s1", "wiki.example.org")
	// Gone on the other node too, with no hold: another owner may claim
	// it at once, while the session keeps its other name.
	waitFor(t, b, "wiki.example.org", func(_ Entry, ok bool) bool { return !ok })
	if _, err := claim(b, "s2", "bob", "wiki.example.org"); err != nil {
		t.Fatalf("another owner after ReleaseName: %v", err)
	}
	if en := waitFor(t, b, "wiki", isLive); en.Live.Session != "s1" {
		t.Fatalf("wiki: %+v, want s1's", en.Live)
	}
	// The session's release later leaves the name's new holder alone.
	waitFor(t, a, "wiki.example.org", func(e Entry, ok bool) bool { return isLive(e, ok) && e.Live.Session == "s2" })
	a.Release(context.Background(), "s1")
	waitFor(t, b, "wiki", isHeld)
	if en, _ := a.Lookup("wiki.example.org"); en.Live == nil || en.Live.Session != "s2" {
		t.Fatalf("wiki.example.org after s1's release: %+v, want s2's", en)
	}
}

// TestCluster_ClaimNameTakesNothingOver: a session claims a name it
// dropped again only while nobody else serves it; a sibling of the same
// owner on another node that claimed it meanwhile keeps it, and keeps
// every name it had.
func TestCluster_ClaimNameTakesNothingOver(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	const d = "wiki.example.org"
	dt := Tunnel{Name: d, Kind: "http", Data: []byte(d)}
	if _, err := claim(a, "s1", "alice", "wiki", d); err != nil {
		t.Fatal(err)
	}
	a.ReleaseName(context.Background(), "s1", d)
	waitFor(t, b, d, func(_ Entry, ok bool) bool { return !ok })
	if err := a.ClaimName(context.Background(), "s1", dt); err != nil {
		t.Fatalf("s1 claims its dropped domain again: %v", err)
	}
	if en := waitFor(t, b, d, isLive); en.Live.Session != "s1" {
		t.Fatalf("%s: %+v, want s1's", d, en.Live)
	}

	a.ReleaseName(context.Background(), "s1", d)
	waitFor(t, b, d, func(_ Entry, ok bool) bool { return !ok })
	if _, err := claim(b, "s2", "alice", "blog", d); err != nil {
		t.Fatal(err)
	}
	waitFor(t, a, d, isLive)
	if err := a.ClaimName(context.Background(), "s1", dt); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("s1 claims s2's live domain: got %v, want ErrNameTaken", err)
	}
	for _, n := range []string{d, "blog"} {
		if en, _ := b.Lookup(n); en.Live == nil || en.Live.Session != "s2" {
			t.Fatalf("%s after s1's refused ClaimName: %+v, want s2's", n, en.Live)
		}
	}
	if en, _ := a.Lookup("wiki"); en.Live == nil || en.Live.Session != "s1" {
		t.Fatalf("wiki: %+v, want s1's", en.Live)
	}

	// The re-claimed name is released with the session's others.
	b.Release(context.Background(), "s2")
	waitFor(t, a, d, isHeld)
	if err := a.ClaimName(context.Background(), "s1", dt); err != nil {
		t.Fatalf("s1 claims its owner's held domain: %v", err)
	}
	a.Release(context.Background(), "s1")
	waitFor(t, b, d, isHeld)
	if err := a.ClaimName(context.Background(), "s1", dt); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("released s1 claims: got %v, want ErrNameTaken", err)
	}
}
