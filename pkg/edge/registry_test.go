package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/certs"
)

func TestMemoryRegistry_ClaimLookupRelease(t *testing.T) {
	now := time.Unix(1000, 0)
	r := NewMemoryRegistry(time.Minute)
	r.now = func() time.Time { return now }
	a1 := &Session{ID: "a1", Owner: "alice"}
	a2 := &Session{ID: "a2", Owner: "alice"}
	b1 := &Session{ID: "b1", Owner: "bob"}

	if _, err := r.Claim(a1, []string{"wiki", "blog"}); err != nil {
		t.Fatal(err)
	}
	if s, _ := r.Lookup("wiki"); s != a1 {
		t.Fatalf("Lookup(wiki): got %v, want a1", s)
	}
	// Another owner may not take any of the names, and gets none of them.
	if _, err := r.Claim(b1, []string{"free", "blog"}); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("bob claims blog: got %v, want ErrNameTaken", err)
	}
	if r.Held("free") {
		t.Fatal("a refused claim must not take its other names")
	}
	// The same owner takes over: a1 is replaced and loses every name.
	replaced, err := r.Claim(a2, []string{"wiki"})
	if err != nil || len(replaced) != 1 || replaced[0] != a1 {
		t.Fatalf("alice reclaims wiki: got %v, %v; want [a1], nil", replaced, err)
	}
	if s, held := r.Lookup("blog"); s != nil || !held {
		t.Fatalf("blog after a1 replaced: got %v held=%v, want on hold", s, held)
	}
	// Releasing a replaced session touches nothing it no longer holds.
	r.Release(a1)
	if s, _ := r.Lookup("wiki"); s != a2 {
		t.Fatalf("wiki after releasing a1: got %v, want a2", s)
	}
	// On hold: live for nobody, refused to others, given back to the owner.
	r.Release(a2)
	if s, held := r.Lookup("wiki"); s != nil || !held {
		t.Fatalf("wiki released: got %v held=%v, want on hold", s, held)
	}
	if _, err := r.Claim(b1, []string{"wiki"}); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("bob during hold: got %v, want ErrNameTaken", err)
	}
	a3 := &Session{ID: "a3", Owner: "alice"}
	if _, err := r.Claim(a3, []string{"wiki"}); err != nil {
		t.Fatalf("alice during hold: %v", err)
	}
	// After the hold, anyone may claim.
	now = now.Add(2 * time.Minute)
	if _, err := r.Claim(b1, []string{"blog"}); err != nil {
		t.Fatalf("bob after the hold: %v", err)
	}
	if _, held := r.Lookup("nothing"); held {
		t.Fatal("unknown name reported held")
	}
}

func TestMemoryRegistry_NoHold(t *testing.T) {
	r := NewMemoryRegistry(0)
	a := &Session{ID: "a", Owner: "alice"}
	if _, err := r.Claim(a, []string{"x"}); err != nil {
		t.Fatal(err)
	}
	r.Release(a)
	if r.Held("x") {
		t.Fatal("with no hold a released name must be free")
	}
	if _, err := r.Claim(&Session{ID: "b", Owner: "bob"}, []string{"x"}); err != nil {
		t.Fatal(err)
	}
}

func TestConfig_Validate(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.Domain = "tunnel.example.com"
		c.TLSConfig = newEmptyTLS()
		c.AllowAnonymous = true
		return c
	}
	tests := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"valid", func(*Config) {}, true},
		{"no domain", func(c *Config) { c.Domain = "" }, false},
		{"uppercase domain", func(c *Config) { c.Domain = "Example.com" }, false},
		{"domain with port", func(c *Config) { c.Domain = "example.com:443" }, false},
		{"trailing dot", func(c *Config) { c.Domain = "example.com." }, false},
		{"no tls", func(c *Config) { c.TLSConfig = nil }, false},
		{"nobody may connect", func(c *Config) { c.AllowAnonymous = false }, false},
		{"bad port", func(c *Config) { c.PublicPort = 70000 }, false},
		{"zero max tunnels", func(c *Config) { c.MaxTunnelsPerSession = 0 }, false},
		{"zero grace", func(c *Config) { c.ShutdownGrace = 0 }, false},
		{"bad mux", func(c *Config) { c.Mux.StreamWindow = 1 }, false},
		{"acme with default budgets", func(c *Config) { c.TLSConfig, c.ACME = nil, &certs.ACMEConfig{CacheDir: "x"} }, true},
		{"negative acme budget", func(c *Config) {
			c.TLSConfig, c.ACME = nil, &certs.ACMEConfig{CacheDir: "x", OrdersPerOwnerPerWeek: -1}
		}, false},
	}
	for _, tt := range tests {
		c := valid()
		tt.mod(&c)
		if err := c.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: got %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func newEmptyTLS() *tls.Config { return &tls.Config{} }

func TestMemoryRegistry_Wait(t *testing.T) {
	r := NewMemoryRegistry(time.Minute)
	blocked := make(chan string, 1)
	r.waitHook = func(name string) { blocked <- name }
	a1 := &Session{ID: "a1", Owner: "alice"}
	a2 := &Session{ID: "a2", Owner: "alice"}
	if _, err := r.Claim(a1, []string{"wiki"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if s := r.Wait(ctx, "wiki"); s != a1 {
		t.Fatalf("Wait on a live name: got %v, want a1 at once", s)
	}
	if s := r.Wait(ctx, "nothing"); s != nil {
		t.Fatalf("Wait on an unknown name: got %v, want nil at once", s)
	}

	// On hold: Wait blocks until the owner claims the name again.
	r.Release(a1)
	got := make(chan Route, 1)
	go func() { got <- r.Wait(ctx, "wiki") }()
	if name := testwait.Recv(t, blocked, 20*time.Second); name != "wiki" {
		t.Fatalf("blocked on %q, want wiki", name)
	}
	if _, err := r.Claim(a2, []string{"wiki"}); err != nil {
		t.Fatal(err)
	}
	if s := testwait.Recv(t, got, 20*time.Second); s != a2 {
		t.Fatalf("Wait after the reclaim: got %v, want a2", s)
	}

	// The wait ends with its context.
	r.Release(a2)
	short, stop := context.WithCancel(ctx)
	go func() { got <- r.Wait(short, "wiki") }()
	testwait.Recv(t, blocked, 20*time.Second)
	stop()
	if s := testwait.Recv(t, got, 20*time.Second); s != nil {
		t.Fatalf("Wait after cancel: got %v, want nil", s)
	}
}

func TestMemoryRegistry_WaitEndsWhenNameIsDropped(t *testing.T) {
	now := time.Unix(1000, 0)
	r := NewMemoryRegistry(time.Minute)
	r.now = func() time.Time { return now }
	blocked := make(chan string, 1)
	r.waitHook = func(name string) { blocked <- name }
	a := &Session{ID: "a", Owner: "alice"}
	if _, err := r.Claim(a, []string{"wiki"}); err != nil {
		t.Fatal(err)
	}
	r.Release(a)
	got := make(chan Route, 1)
	go func() { got <- r.Wait(context.Background(), "wiki") }()
	testwait.Recv(t, blocked, 20*time.Second)
	// The hold runs out and another claim sweeps the name away: the
	// waiter wakes and finds nothing to wait for.
	now = now.Add(2 * time.Minute)
	if _, err := r.Claim(&Session{ID: "b", Owner: "bob"}, []string{"other"}); err != nil {
		t.Fatal(err)
	}
	if s := testwait.Recv(t, got, 20*time.Second); s != nil {
		t.Fatalf("Wait after the hold ended: got %v, want nil", s)
	}
}

// TestMemoryRegistry_ClaimLeavesUnrelatedEntries: a Claim or Release costs
// the same whatever the table holds. The table is filled cheaply, one
// session with many names, whose holds then run out: the next Claim of an
// unrelated name may tidy a few of them, not sweep them all under the lock
// that visitors' Lookups wait on.
func TestMemoryRegistry_ClaimLeavesUnrelatedEntries(t *testing.T) {
	const n = 50_000
	now := time.Unix(1000, 0)
	r := NewMemoryRegistry(time.Minute)
	r.now = func() time.Time { return now }
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("n%d", i)
	}
	big := &Session{ID: "big", Owner: "mallory"}
	if _, err := r.Claim(big, names); err != nil {
		t.Fatal(err)
	}
	r.Release(big)
	now = now.Add(2 * time.Minute) // every hold has run out

	a := &Session{ID: "a", Owner: "alice"}
	if _, err := r.Claim(a, []string{"wiki"}); err != nil {
		t.Fatal(err)
	}
	r.Release(a)
	if left := len(r.entries); left < n-2*expireBatch {
		t.Fatalf("a Claim and a Release touched %d unrelated entries, want at most %d", n+1-left, 2*expireBatch)
	}
	// Expired holds count as free at once, whether tidied or not ...
	if _, held := r.Lookup(names[n-1]); held {
		t.Fatalf("%s: held after its hold ran out", names[n-1])
	}
	if _, err := r.Claim(&Session{ID: "b", Owner: "bob"}, []string{names[n-2]}); err != nil {
		t.Fatalf("claim of an expired hold: %v", err)
	}
	// ... and each call tidies some, so they cannot pile up for ever.
	for i := 0; len(r.entries) > 2 && i < n; i++ {
		r.Release(&Session{ID: "none"})
	}
	if len(r.entries) > 2 {
		t.Fatalf("%d entries left after many calls, want the 2 live or held ones", len(r.entries))
	}
}

// TestMemoryRegistry_HeldNamesBoundedPerAccount: a client that connects
// and disconnects with fresh names leaves at most maxHeld of them on hold;
// the oldest go first, and a visitor waiting on one is woken.
func TestMemoryRegistry_HeldNamesBoundedPerAccount(t *testing.T) {
	r := NewMemoryRegistry(time.Hour)
	blocked := make(chan string, 1)
	r.waitHook = func(name string) { blocked <- name }
	churn := func(owner, account string, from, to int) {
		for i := from; i < to; i++ {
			s := &Session{ID: fmt.Sprint(i), Owner: owner, account: account, maxHeld: 3}
			if _, err := r.Claim(s, []string{fmt.Sprintf("%s-%d", owner, i)}); err != nil {
				t.Fatal(err)
			}
			r.Release(s)
		}
	}
	churn("alice", "", 0, 1)
	got := make(chan Route, 1)
	go func() { got <- r.Wait(context.Background(), "alice-0") }()
	testwait.Recv(t, blocked, 20*time.Second)
	churn("alice", "", 1, 10)
	if s := testwait.Recv(t, got, 20*time.Second); s != nil {
		t.Fatalf("Wait on a dropped hold: got %v, want nil", s)
	}
	// Two anonymous owners from one address share its bound.
	churn("anon:key:1", "anon:192.0.2.1/32", 0, 2)
	churn("anon:key:2", "anon:192.0.2.1/32", 0, 2)
	for _, tt := range []struct {
		name string
		held bool
	}{
		{"alice-6", false}, {"alice-7", true}, {"alice-8", true}, {"alice-9", true},
		{"anon:key:1-0", false}, {"anon:key:1-1", true}, {"anon:key:2-0", true}, {"anon:key:2-1", true},
	} {
		if held := r.Held(tt.name); held != tt.held {
			t.Errorf("%s: held %v, want %v", tt.name, held, tt.held)
		}
	}
	if len(r.entries) != 6 || r.holds.Len() != 6 || len(r.heldBy) != 2 {
		t.Errorf("got %d entries, %d holds, %d accounts; want 6, 6, 2", len(r.entries), r.holds.Len(), len(r.heldBy))
	}
	// Claiming a held name back takes it off the hold lists.
	if _, err := r.Claim(&Session{ID: "back", Owner: "alice", maxHeld: 3}, []string{"alice-9"}); err != nil {
		t.Fatal(err)
	}
	if r.holds.Len() != 5 || r.heldBy["alice"].Len() != 2 {
		t.Errorf("after a reclaim: %d holds, alice %d; want 5, 2", r.holds.Len(), r.heldBy["alice"].Len())
	}
}

func TestMemoryRegistry_ClaimName(t *testing.T) {
	claimNameContract(t, NewMemoryRegistry(time.Minute))
}

// claimNameContract checks Registry.ClaimName on r, whose hold is long
// enough to outlast the test: a session claims one more name only if it
// is free, its own, or on hold for its owner, and never takes one over
// from another session, not even a sibling of the same owner, which
// keeps serving (so the caller has no session to close).
func claimNameContract(t *testing.T, r Registry) {
	t.Helper()
	const d = "wiki.example.org"
	a1 := &Session{ID: "a1", Owner: "alice"}
	a2 := &Session{ID: "a2", Owner: "alice"}
	b1 := &Session{ID: "b1", Owner: "bob"}
	serves := func(name string, want *Session) {
		t.Helper()
		rt, _ := r.Lookup(name)
		if want == nil && rt != nil || want != nil && rt != Route(want) {
			t.Fatalf("Lookup(%s): got %v, want %v", name, rt, want)
		}
	}
	if _, err := r.Claim(a1, []string{"wiki", d}); err != nil {
		t.Fatal(err)
	}
	r.ReleaseName(a1, d)
	serves(d, nil)
	if err := r.ClaimName(a1, d); err != nil {
		t.Fatalf("a1 claims its dropped domain again: %v", err)
	}
	serves(d, a1)
	serves("wiki", a1)
	if err := r.ClaimName(a1, d); err != nil {
		t.Fatalf("a1 claims its own domain twice: %v", err)
	}

	// A sibling of the same owner claimed it meanwhile: refused, and
	// neither session loses anything.
	r.ReleaseName(a1, d)
	if replaced, err := r.Claim(a2, []string{d}); err != nil || len(replaced) != 0 {
		t.Fatalf("a2 claims the free domain: got %v, %v; want none replaced", replaced, err)
	}
	if err := r.ClaimName(a1, d); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("a1 claims a2's live domain: got %v, want ErrNameTaken", err)
	}
	serves(d, a2)
	serves("wiki", a1)
	// On hold for the same owner: a1 may have it.
	r.Release(a2)
	if err := r.ClaimName(a1, d); err != nil {
		t.Fatalf("a1 claims its owner's held domain: %v", err)
	}
	serves(d, a1)

	// Another owner claimed it meanwhile, live or on hold: refused.
	r.ReleaseName(a1, d)
	if _, err := r.Claim(b1, []string{d}); err != nil {
		t.Fatal(err)
	}
	if err := r.ClaimName(a1, d); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("a1 claims bob's live domain: got %v, want ErrNameTaken", err)
	}
	serves(d, b1)
	r.Release(b1)
	if err := r.ClaimName(a1, d); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("a1 claims bob's held domain: got %v, want ErrNameTaken", err)
	}
	serves("wiki", a1)

	// A released session claims nothing.
	r.Release(a1)
	if err := r.ClaimName(a1, "blog.example.org"); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("released a1 claims a free name: got %v, want ErrNameTaken", err)
	}
	if r.Held("blog.example.org") {
		t.Fatal("a released session's ClaimName took the name")
	}
}
