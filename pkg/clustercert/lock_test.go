package clustercert_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/pkg/clustercert"
)

// TestLocker_ExcludesNodesAndGoroutines: a name locked by one node waits
// for its release on another, and on the same node; other names do not
// wait; unlock is safe twice.
func TestLocker_ExcludesNodesAndGoroutines(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	a := clustercert.NewLocker(cluster.Client(), "/test/lock", 2*time.Second, 0)
	b := clustercert.NewLocker(cluster.Client(), "/test/lock", 2*time.Second, 0)
	t.Cleanup(func() { a.Close(); b.Close() })

	unlock, err := a.Lock(context.Background(), "wiki.tunnel.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		l    *clustercert.Locker
	}{{"other node", b}, {"same node", a}} {
		if _, err := lockWithin(tt.l, "wiki.tunnel.test", 300*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s while held: got %v, want to wait until the deadline", tt.name, err)
		}
	}
	other, err := lockWithin(b, "blog.tunnel.test", 10*time.Second)
	if err != nil {
		t.Fatalf("another name: %v, want locked at once", err)
	}
	other()

	got := make(chan error, 1)
	go func() {
		u, err := lockWithin(b, "wiki.tunnel.test", 30*time.Second)
		if err == nil {
			u()
		}
		got <- err
	}()
	unlock()
	unlock()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("after the release: %v, want the lock", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting node never got the lock")
	}
}

// TestLocker_WaitBound: the Locker's own wait bounds a Lock whose context
// has none.
func TestLocker_WaitBound(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	a := clustercert.NewLocker(cluster.Client(), "/test/lock", 2*time.Second, 0)
	b := clustercert.NewLocker(cluster.Client(), "/test/lock", 2*time.Second, 200*time.Millisecond)
	t.Cleanup(func() { a.Close(); b.Close() })
	unlock, err := a.Lock(context.Background(), "wiki.tunnel.test")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := b.Lock(context.Background(), "wiki.tunnel.test"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the wait bound's deadline", err)
	}
}

// TestLocker_DeadHolderFreedWithinTTL: a node that dies holding a lock
// (its etcd client gone, nothing released) frees it within the lease's
// TTL; Close releases what a node still holds.
func TestLocker_DeadHolderFreedWithinTTL(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	const ttl = 2 * time.Second
	doomed := cluster.Client()
	dead := clustercert.NewLocker(doomed, "/test/lock", ttl, 0)
	alive := clustercert.NewLocker(cluster.Client(), "/test/lock", ttl, 0)
	t.Cleanup(func() { dead.Close(); alive.Close() })

	if _, err := dead.Lock(context.Background(), "wiki.tunnel.test"); err != nil {
		t.Fatal(err)
	}
	doomed.Close() // the node dies: no more keep-alives, no revoke
	began := time.Now()
	unlock, err := lockWithin(alive, "wiki.tunnel.test", 30*time.Second)
	if err != nil {
		t.Fatalf("after the holder died: %v, want the lock", err)
	}
	waited := time.Since(began)
	t.Logf("the dead holder's lock was free after %v (TTL %v)", waited, ttl)
	// etcd may round the TTL up and keeps a lease a little past it: the
	// lock must be free within twice the TTL, and not at once.
	if waited > 2*ttl+time.Second {
		t.Errorf("waited %v, want within about the TTL %v", waited, ttl)
	}

	// Close releases the held lock: another Locker takes it at once.
	other := clustercert.NewLocker(cluster.Client(), "/test/lock", ttl, 0)
	t.Cleanup(func() { other.Close() })
	alive.Close()
	alive.Close()
	if u, err := lockWithin(other, "wiki.tunnel.test", 500*time.Millisecond); err != nil {
		t.Fatalf("after Close: %v, want the lock free", err)
	} else {
		u()
	}
	if _, err := alive.Lock(context.Background(), "x.tunnel.test"); err == nil {
		t.Fatal("Lock after Close: got the lock, want refused")
	}
	unlock() // after Close: a no-op
}

func lockWithin(l *clustercert.Locker, name string, d time.Duration) (func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return l.Lock(ctx, name)
}
