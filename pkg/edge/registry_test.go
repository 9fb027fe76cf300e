package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"
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
	got := make(chan *Session, 1)
	go func() { got <- r.Wait(ctx, "wiki") }()
	if name := recvIn(t, blocked, 20*time.Second); name != "wiki" {
		t.Fatalf("blocked on %q, want wiki", name)
	}
	if _, err := r.Claim(a2, []string{"wiki"}); err != nil {
		t.Fatal(err)
	}
	if s := recvIn(t, got, 20*time.Second); s != a2 {
		t.Fatalf("Wait after the reclaim: got %v, want a2", s)
	}

	// The wait ends with its context.
	r.Release(a2)
	short, stop := context.WithCancel(ctx)
	go func() { got <- r.Wait(short, "wiki") }()
	recvIn(t, blocked, 20*time.Second)
	stop()
	if s := recvIn(t, got, 20*time.Second); s != nil {
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
	got := make(chan *Session, 1)
	go func() { got <- r.Wait(context.Background(), "wiki") }()
	recvIn(t, blocked, 20*time.Second)
	// The hold runs out and another claim sweeps the name away: the
	// waiter wakes and finds nothing to wait for.
	now = now.Add(2 * time.Minute)
	if _, err := r.Claim(&Session{ID: "b", Owner: "bob"}, []string{"other"}); err != nil {
		t.Fatal(err)
	}
	if s := recvIn(t, got, 20*time.Second); s != nil {
		t.Fatalf("Wait after the hold ended: got %v, want nil", s)
	}
}

// recvIn receives from ch, failing the test after d (recvWithin's twin for
// this internal test package).
func recvIn[T any](t *testing.T, ch <-chan T, d time.Duration) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("nothing received within %v", d)
		panic("unreachable")
	}
}
