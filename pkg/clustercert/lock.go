package clustercert

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Locker hands out cluster-wide locks by name, so that one node orders a
// certificate while the others wait and then find it in the cache. Each
// lock is an etcd concurrency.Mutex on a lease of its own (a session),
// revoked when the lock is released, and kept alive only while it is
// held: a node that dies holding one frees it within the lease's TTL.
// Within one process a name is also locked locally, since two locks on
// one session would not exclude each other. Safe for concurrent use.
type Locker struct {
	cli    *clientv3.Client
	prefix string // ends in "/"
	ttl    int    // seconds
	wait   time.Duration

	mu     sync.Mutex
	local  map[string]*localLock // names locked or waited for in this process
	held   map[*heldLock]struct{}
	closed bool
}

// localLock serialises one name within the process: a token in a channel
// of one, and how many hold or wait for it (the entry goes when none do).
type localLock struct {
	token chan struct{}
	refs  int
}

type heldLock struct {
	session *concurrency.Session
	cancel  context.CancelFunc
	release func()
	once    sync.Once
}

// NewLocker returns a Locker whose locks live under prefix (a "/" is
// added if missing), each on a lease of ttl (at least 2s: etcd grants
// nothing much shorter than its election timeout and rounds the TTL to
// seconds), waiting at most wait for a lock (0: only as long as the
// caller's context). It contacts nothing.
func NewLocker(cli *clientv3.Client, prefix string, ttl, wait time.Duration) *Locker {
	if len(prefix) == 0 || prefix[len(prefix)-1] != '/' {
		prefix += "/"
	}
	return &Locker{
		cli:    cli,
		prefix: prefix,
		ttl:    max(2, int((ttl+time.Second-1)/time.Second)),
		wait:   wait,
		local:  map[string]*localLock{},
		held:   map[*heldLock]struct{}{},
	}
}

// Lock takes the cluster-wide lock of name, waiting at most the Locker's
// wait and while ctx lasts. unlock releases it by revoking its lease,
// which deletes the lock's key; it is safe to call more than once and
// from any goroutine, and takes one etcd round trip, or up to the TTL when
// etcd cannot be reached (the lease then expires by itself). On error
// nothing is held.
// A holder that loses its lease (etcd unreachable for longer than the
// TTL) no longer holds the lock, and is not told: the lock keeps
// concurrent orders apart, it is not a fence.
func (l *Locker) Lock(ctx context.Context, name string) (unlock func(), err error) {
	if err := checkKey(name); err != nil {
		return nil, err
	}
	if l.wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.wait)
		defer cancel()
	}
	ll, err := l.lockLocal(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("clustercert: lock %s: %w", name, err)
	}
	releaseLocal := func() { l.unlockLocal(name, ll) }

	lease, err := l.cli.Grant(ctx, int64(l.ttl))
	if err != nil {
		releaseLocal()
		return nil, fmt.Errorf("clustercert: lock %s: lease: %w", name, err)
	}
	// The session outlives ctx (the wait): its own context ends at unlock.
	sctx, cancel := context.WithCancel(context.Background())
	s, err := concurrency.NewSession(l.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(l.ttl), concurrency.WithContext(sctx))
	if err != nil {
		cancel()
		l.revoke(lease.ID)
		releaseLocal()
		return nil, fmt.Errorf("clustercert: lock %s: session: %w", name, err)
	}
	h := &heldLock{session: s, cancel: cancel, release: releaseLocal}
	if err := concurrency.NewMutex(s, l.prefix+name).Lock(ctx); err != nil {
		h.unlock()
		return nil, fmt.Errorf("clustercert: lock %s: %w", name, err)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		h.unlock()
		return nil, errClosed
	}
	l.held[h] = struct{}{}
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.held, h)
		l.mu.Unlock()
		h.unlock()
	}, nil
}

// unlock revokes the lock's lease, which deletes its key; if etcd cannot
// be reached the lease, no longer kept alive, expires within the TTL.
func (h *heldLock) unlock() {
	h.once.Do(func() {
		h.session.Close()
		h.cancel()
		h.release()
	})
}

func (l *Locker) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(l.ttl)*time.Second)
	defer cancel()
	l.cli.Revoke(ctx, id)
}

func (l *Locker) lockLocal(ctx context.Context, name string) (*localLock, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errClosed
	}
	ll := l.local[name]
	if ll == nil {
		ll = &localLock{token: make(chan struct{}, 1)}
		l.local[name] = ll
	}
	ll.refs++
	l.mu.Unlock()
	select {
	case ll.token <- struct{}{}:
		return ll, nil
	case <-ctx.Done():
		l.dropLocal(name, ll)
		return nil, ctx.Err()
	}
}

func (l *Locker) unlockLocal(name string, ll *localLock) {
	<-ll.token
	l.dropLocal(name, ll)
}

func (l *Locker) dropLocal(name string, ll *localLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ll.refs--; ll.refs == 0 {
		delete(l.local, name)
	}
}

// Close releases every lock still held and refuses new ones. Safe to call
// more than once.
func (l *Locker) Close() error {
	l.mu.Lock()
	l.closed = true
	held := l.held
	l.held = map[*heldLock]struct{}{}
	l.mu.Unlock()
	for h := range held {
		h.unlock()
	}
	return nil
}
