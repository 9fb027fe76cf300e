package edge

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/cluster"
)

func newTestClusterRegistry(t *testing.T, e *etcdtest.Cluster, node string) *ClusterRegistry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := cluster.Open(ctx, cluster.Config{Endpoints: e.Endpoints(), Node: node, Addr: node + ":7000",
		LeaseTTL: 2 * time.Second, Hold: time.Minute, ClaimTimeout: 2 * time.Second, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return NewClusterRegistry(c, nil, zerolog.Nop())
}

// The Registry contract, as TestMemoryRegistry_ClaimLookupRelease checks
// it, holds for the ClusterRegistry on one node. One difference: a
// replaced session keeps its other names until it is released (the edge
// closes it at once, and its Release puts them on hold).
func TestClusterRegistry_Contract(t *testing.T) {
	e := etcdtest.Start(t, 1)
	r := newTestClusterRegistry(t, e, "n1")
	a1 := &Session{ID: "a1", Owner: "alice"}
	a2 := &Session{ID: "a2", Owner: "alice"}
	b1 := &Session{ID: "b1", Owner: "bob"}

	if _, err := r.Claim(a1, []string{"wiki", "blog"}); err != nil {
		t.Fatal(err)
	}
	if s, _ := r.Lookup("wiki"); s != a1 {
		t.Fatalf("Lookup(wiki): got %v, want a1", s)
	}
	if k := r.Kind("wiki"); k != "http" {
		t.Fatalf("Kind(wiki): %q", k)
	}
	if _, err := r.Claim(b1, []string{"free", "blog"}); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("bob claims blog: got %v, want ErrNameTaken", err)
	}
	if r.Held("free") {
		t.Fatal("a refused claim must not take its other names")
	}
	replaced, err := r.Claim(a2, []string{"wiki"})
	if err != nil || len(replaced) != 1 || replaced[0] != a1 {
		t.Fatalf("alice reclaims wiki: got %v, %v; want [a1], nil", replaced, err)
	}
	r.Release(a1)
	if s, held := r.Lookup("blog"); s != nil || !held {
		t.Fatalf("blog after a1 released: got %v held=%v, want on hold", s, held)
	}
	if s, _ := r.Lookup("wiki"); s != a2 {
		t.Fatalf("wiki after releasing a1: got %v, want a2", s)
	}
	r.Release(a2)
	if s, held := r.Lookup("wiki"); s != nil || !held {
		t.Fatalf("wiki released: got %v held=%v, want on hold", s, held)
	}
	if acct, held := r.Account("wiki"); acct != "alice" || !held {
		t.Fatalf("Account(wiki): %q %v", acct, held)
	}
	if _, err := r.Claim(b1, []string{"wiki"}); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("bob during hold: got %v, want ErrNameTaken", err)
	}

	// Wait: returns at once for a name nobody holds, and is woken by the
	// owner's claim of a held one.
	if rt := r.Wait(context.Background(), "nobody"); rt != nil {
		t.Fatalf("Wait(nobody): %v", rt)
	}
	got := make(chan Route, 1)
	go func() { got <- r.Wait(context.Background(), "wiki") }()
	a3 := &Session{ID: "a3", Owner: "alice"}
	if _, err := r.Claim(a3, []string{"wiki"}); err != nil {
		t.Fatalf("alice during hold: %v", err)
	}
	if rt := testwait.Recv(t, got, 15*time.Second); rt != a3 {
		t.Fatalf("Wait(wiki): got %v, want a3", rt)
	}
	r.Release(a3)
}

// The ClaimName contract holds for the ClusterRegistry on one node.
func TestClusterRegistry_ClaimName(t *testing.T) {
	claimNameContract(t, newTestClusterRegistry(t, etcdtest.Start(t, 1), "n1"))
}
