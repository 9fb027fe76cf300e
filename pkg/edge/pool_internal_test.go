package edge

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// poolSession is a session of owner asking for name, with or without a
// pool, of kind KindHTTP.
func poolSession(id, owner, name string, pool bool) *Session {
	return &Session{ID: id, Owner: owner, Names: []string{name}, Kinds: []string{proto.KindHTTP},
		requests: []proto.TunnelRequest{{Name: name, Kind: proto.KindHTTP, Pool: pool}}}
}

// TestMemoryRegistry_PoolRoute: a pool is one Route for its whole life,
// whoever joins and leaves, so streams kept for it stay sound; members
// join without replacing each other; the last one leaving drains it and
// puts the name on hold, and the next pool is another Route.
func TestMemoryRegistry_PoolRoute(t *testing.T) {
	r := NewMemoryRegistry(time.Minute)
	a := poolSession("a", "alice", "wiki", true)
	b := poolSession("b", "alice", "wiki", true)
	if rep, err := r.Claim(a, a.Names); err != nil || len(rep) != 0 {
		t.Fatalf("a: got %v, %v; want nothing replaced", rep, err)
	}
	first, _ := r.Lookup("wiki")
	pool, ok := first.(*poolRoute)
	if !ok {
		t.Fatalf("Lookup: got %T, want a pool", first)
	}
	if rep, err := r.Claim(b, b.Names); err != nil || len(rep) != 0 {
		t.Fatalf("b: got %v, %v; want nothing replaced", rep, err)
	}
	if rt, _ := r.Lookup("wiki"); rt != first || len(pool.list()) != 2 {
		t.Fatalf("after b joined: got %v with %d members, want the same pool with 2", rt, len(pool.list()))
	}
	if !routesTo(first, a) || !routesTo(first, b) || routesTo(first, poolSession("c", "alice", "wiki", true)) {
		t.Fatal("routesTo: want the pool to reach its members only")
	}
	r.Release(a)
	if rt, _ := r.Lookup("wiki"); rt != first || len(pool.list()) != 1 || routesTo(first, a) {
		t.Fatalf("after a left: got %v with %d members, want the same pool with b only", rt, len(pool.list()))
	}
	select {
	case <-pool.Draining():
		t.Fatal("the pool drains with a member left")
	default:
	}
	r.Release(b)
	if rt, held := r.Lookup("wiki"); rt != nil || !held {
		t.Fatalf("after the last left: got %v held=%v, want on hold", rt, held)
	}
	select {
	case <-pool.Draining():
	default:
		t.Fatal("the pool of a name on hold does not drain")
	}
	c := poolSession("c", "alice", "wiki", true)
	if _, err := r.Claim(c, c.Names); err != nil {
		t.Fatal(err)
	}
	if rt, _ := r.Lookup("wiki"); rt == first {
		t.Fatal("a new pool after the hold is the old Route: its kept streams would be reused")
	}
}

// TestMemoryRegistry_PoolClaims: another owner may not join; a claim
// without pool replaces every member and drains the pool; a pooled claim
// of a name one session holds without pool replaces that session; a
// session of another kind may not join.
func TestMemoryRegistry_PoolClaims(t *testing.T) {
	r := NewMemoryRegistry(time.Minute)
	a := poolSession("a", "alice", "wiki", true)
	b := poolSession("b", "alice", "wiki", true)
	for _, s := range []*Session{a, b} {
		if _, err := r.Claim(s, s.Names); err != nil {
			t.Fatal(err)
		}
	}
	rt, _ := r.Lookup("wiki")
	if _, err := r.Claim(poolSession("x", "bob", "wiki", true), []string{"wiki"}); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("bob joins: got %v, want ErrNameTaken", err)
	}
	tcp := poolSession("t", "alice", "wiki", true)
	tcp.Kinds = []string{proto.KindTCP}
	if _, err := r.Claim(tcp, tcp.Names); !errors.Is(err, ErrPoolMismatch) {
		t.Fatalf("a tcp member: got %v, want ErrPoolMismatch", err)
	}
	solo := poolSession("solo", "alice", "wiki", false)
	rep, err := r.Claim(solo, solo.Names)
	if err != nil || len(rep) != 2 {
		t.Fatalf("solo: got %v, %v; want both members replaced", rep, err)
	}
	select {
	case <-rt.Draining():
	default:
		t.Fatal("a pool taken over does not drain")
	}
	for _, old := range rep {
		r.Release(old) // their done hooks
	}
	if got, _ := r.Lookup("wiki"); got != solo {
		t.Fatalf("after the take-over: got %v, want solo", got)
	}
	c := poolSession("c", "alice", "wiki", true)
	if rep, err := r.Claim(c, c.Names); err != nil || len(rep) != 1 || rep[0] != solo {
		t.Fatalf("a pool over solo: got %v, %v; want solo replaced", rep, err)
	}
}

// checkPool: only a token with pool may ask for one, and only for a name.
func TestCheckPool(t *testing.T) {
	pool := &token.Identity{Label: "pis", Pool: true}
	solo := &token.Identity{Label: "solo"}
	hello := func(name string, p bool) *proto.Hello {
		return &proto.Hello{Tunnels: []proto.TunnelRequest{{Name: "open", Kind: proto.KindHTTP}, {Name: name, Kind: proto.KindHTTP, Pool: p}}}
	}
	for _, tt := range []struct {
		name  string
		id    *token.Identity
		hello *proto.Hello
		code  proto.ErrorCode // "": admitted
		msg   string
	}{
		{"pool token", pool, hello("wiki", true), "", ""},
		{"no pool asked", solo, hello("wiki", false), "", ""},
		{"anonymous, no pool asked", nil, hello("wiki", false), "", ""},
		{"token without pool", solo, hello("wiki", true), proto.CodePoolNotAllowed, `the token "solo" may not share a name`},
		{"anonymous", nil, hello("wiki", true), proto.CodePoolNotAllowed, "anonymous clients may not"},
		{"random name", pool, hello("", true), proto.CodeBadRequest, "tunnel 2: a pool needs a name"},
		{"custom domain", pool, &proto.Hello{Tunnels: []proto.TunnelRequest{{Name: "wiki", Kind: proto.KindHTTP, Pool: true, Domain: "wiki.example.org"}}},
			proto.CodeBadRequest, "tunnel 1: a pool cannot serve a custom domain"},
	} {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			perr := checkPool(tt.id, tt.hello)
			switch {
			case tt.code == "" && perr != nil:
				t.Fatalf("got %v, want admitted", perr)
			case tt.code != "" && (perr == nil || perr.Code != tt.code || !strings.Contains(perr.Message, tt.msg)):
				t.Fatalf("got %v, want %s saying %q", perr, tt.code, tt.msg)
			}
		})
	}
}
