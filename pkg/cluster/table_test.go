package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
)

// TestCluster_ReassertKeepsWhatChangedMeanwhile: while a re-assertion
// (after etcd was away) writes a session's names again, the edge may drop
// one of them (ReleaseName, a custom domain that stopped pointing here) or
// give it one back (ClaimName). The re-assertion must neither leave the
// dropped name live in etcd for a session that no longer serves it, nor
// forget the name given meanwhile (released then with its session).
func TestCluster_ReassertKeepsWhatChangedMeanwhile(t *testing.T) {
	e := etcdtest.Start(t, 1)
	a, b := node(t, e, "a", time.Minute), node(t, e, "b", time.Minute)
	const d1, d2 = "wiki.example.org", "blog.example.org"
	if _, err := claim(a, "s1", "alice", "wiki", d1, d2); err != nil {
		t.Fatal(err)
	}
	a.ReleaseName(context.Background(), "s1", d2) // dropped before: given back during the re-assertion
	waitFor(t, b, d2, func(_ Entry, ok bool) bool { return !ok })

	a.lmu.Lock()
	lc := a.local["s1"]
	a.lmu.Unlock()
	a.beforeReassertWrite = func() {
		a.ReleaseName(context.Background(), "s1", d1)
		if err := a.ClaimName(context.Background(), "s1", Tunnel{Name: d2, Kind: "http", Data: []byte(d2)}); err != nil {
			t.Errorf("ClaimName during the re-assertion: %v", err)
		}
	}
	if err := a.reassertOne(context.Background(), lc); err != nil {
		t.Fatal(err)
	}
	a.beforeReassertWrite = nil

	waitFor(t, b, d1, func(_ Entry, ok bool) bool { return !ok })
	// b's view follows etcd's watch: wait for it to show the name, then
	// check whose it is.
	if en := waitFor(t, b, d2, isLive); en.Live.Session != "s1" {
		t.Fatalf("%s: %+v, want s1's", d2, en.Live)
	}
	a.Release(context.Background(), "s1")
	for _, n := range []string{"wiki", d2} {
		waitFor(t, b, n, isHeld)
	}
	if en, ok := b.Lookup(d1); ok {
		t.Fatalf("%s after the session ended: %+v, want no record", d1, en)
	}
}
