package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Errors of Claim. Both are returned wrapped; test with errors.Is.
var (
	// ErrNameTaken: another owner holds one of the names, live or on hold.
	ErrNameTaken = errors.New("cluster: name taken")
	// ErrUnavailable: etcd did not answer within Config.ClaimTimeout
	// (quorum lost, no member reachable) or this node has no lease. The
	// claim may succeed later: it is worth retrying.
	ErrUnavailable = errors.New("cluster: etcd unavailable")
	// ErrClosed: the Cluster was closed.
	ErrClosed = errors.New("cluster: closed")
	// ErrPoolMismatch: a claim with Tunnel.Pool of a name whose pool's
	// members have another kind or other Data (the access rules).
	ErrPoolMismatch = errors.New("cluster: pool of another kind or other rules")
)

// Config configures a node's membership in a cluster.
type Config struct {
	// Endpoints are the etcd client URLs. Required.
	Endpoints []string
	// TLS is the etcd client's TLS config; nil talks plain TCP.
	TLS *tls.Config
	// Prefix is the key prefix of everything this package writes.
	// Default "/tunnel/". Nodes of one cluster share it.
	Prefix string
	// Node names this node, unique in the cluster. Required. Open
	// waits, within its context, while another live process holds the
	// name (after a crash, the dead process's registration goes with
	// its lease), and fails with ErrNodeInUse if it does not go.
	Node string
	// Addr is the node-link address other nodes dial to reach this one,
	// host:port. Required.
	Addr string
	// LeaseTTL is the node lease's time to live. Default 10 s. A shorter
	// one frees a dead node's names sooner (they are free for their
	// owners about LeaseTTL plus etcd's election time after the death)
	// but costs a keepalive every LeaseTTL/3 and makes a node fence
	// itself sooner when etcd is slow; etcd grants at least about 1.5
	// times its election timeout.
	LeaseTTL time.Duration
	// Hold is how long a departed session's names stay reserved for
	// their owner (edge.Config.NameHold). Zero frees them at once.
	Hold time.Duration
	// ClaimTimeout bounds one Claim's round trips, so a claim fails fast
	// with ErrUnavailable when etcd has no quorum. Default 3 s.
	ClaimTimeout time.Duration
	// Log receives the cluster's events; zerolog.Nop() for none.
	Log zerolog.Logger

	// Client, if set, is used instead of dialing Endpoints (tests, or a
	// caller that shares one client); Close does not close it.
	Client *clientv3.Client
}

// Defaults.
const (
	DefaultPrefix       = "/tunnel/"
	DefaultLeaseTTL     = 10 * time.Second
	DefaultClaimTimeout = 3 * time.Second
)

// Validate reports what is wrong with c, after defaults.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Endpoints) == 0 && c.Client == nil {
		errs = append(errs, errors.New("cluster: no etcd endpoints"))
	}
	if c.Node == "" || strings.Contains(c.Node, "/") {
		errs = append(errs, fmt.Errorf("cluster: node name %q: empty or holds '/'", c.Node))
	}
	if c.Addr == "" {
		errs = append(errs, errors.New("cluster: no node address"))
	}
	if c.LeaseTTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("cluster: lease ttl %v: at least 2s (etcd rounds to seconds)", c.LeaseTTL))
	}
	if c.Hold < 0 {
		errs = append(errs, fmt.Errorf("cluster: hold %v is negative", c.Hold))
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		errs = append(errs, fmt.Errorf("cluster: prefix %q must end in '/'", c.Prefix))
	}
	return errors.Join(errs...)
}

func (c *Config) defaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.ClaimTimeout == 0 {
		c.ClaimTimeout = DefaultClaimTimeout
	}
}

// Hooks are the edge's callbacks, called from the Cluster's goroutines
// without its locks held. Each must return quickly.
type Hooks struct {
	// Changed is called after name's record (live or owner) changed in
	// the view, whoever changed it.
	Changed func(name string)
	// Lost is called when a local session lost its names: another
	// session (of the same owner, on another node) took one over, or it
	// could not be re-asserted after etcd came back. The session should
	// be closed; its Release then puts what is left on hold.
	Lost func(session string)
}

// Stats are the cluster's counters, for metrics.
type Stats struct {
	RoundTrips uint64 // etcd requests made (claims, releases, keepalives, reads)
	Errors     uint64 // of which failed
	LeaseOK    bool   // the node's lease was confirmed within its TTL
	Degraded   bool
	Fenced     bool // the node serves none of its names (see doc.go)
}

// Cluster is one node's membership: its lease, the name table and the
// view. Open starts its goroutines (the lease keepalive, the watch, the
// hold tidying); Close stops them. Safe for concurrent use.
type Cluster struct {
	cfg      Config
	log      zerolog.Logger
	cli      *clientv3.Client
	ownCli   bool
	kNodes   string
	kNames   string
	kOwners  string
	kMembers string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	close  sync.Once

	hooks atomic.Pointer[Hooks]

	// beforeReassertWrite, set by tests only, runs in reassertOne between
	// reading the session's names and writing them again.
	beforeReassertWrite func()

	// Lease state, owned by keepLoop except at Open and Close.
	lmu       sync.Mutex
	lease     clientv3.LeaseID
	confirmed time.Time // the lease lives at least until then (see doc.go)
	local     map[string]*localClaim
	byName    map[string]string // name → local session ID holding it alone (not as a pool member)
	released  []*localClaim     // releases etcd did not take, retried
	reassert  bool              // the names must be written again (lease lost, etcd was away)

	keepMisses int // keepalives failed in a row; keepLoop's own
	degraded   atomic.Bool
	stateMu    sync.Mutex
	stateCh    chan struct{} // closed when degraded changes
	paused     atomic.Bool   // tests: the keepalive stops, as in a paused process

	roundTrips, errs atomic.Uint64

	v view
}

// localClaim is a session of this node and the names it claimed, with the
// ModRevision of each name's live record as this node last wrote it.
type localClaim struct {
	session, owner, account string
	tunnels                 []Tunnel
	revs                    map[string]int64
	noHold                  bool // released with no hold (ReleaseName)
}

// Open joins the cluster: it dials etcd (unless Config.Client is set),
// takes a lease, registers the node and reads the table, all within ctx,
// then starts the Cluster's goroutines. It fails if etcd cannot be reached.
func Open(ctx context.Context, cfg Config) (*Cluster, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, log: cfg.Log.With().Str("component", "cluster").Logger(),
		kNodes: cfg.Prefix + "nodes/", kNames: cfg.Prefix + "names/", kOwners: cfg.Prefix + "owners/",
		kMembers: cfg.Prefix + "members/",
		local:    make(map[string]*localClaim), byName: make(map[string]string)}
	c.v.init(c)
	c.stateCh = make(chan struct{})
	c.hooks.Store(&Hooks{})
	c.cli = cfg.Client
	if c.cli == nil {
		cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, TLS: cfg.TLS, DialTimeout: 5 * time.Second,
			Logger: zap.NewNop(), Context: context.Background()})
		if err != nil {
			return nil, fmt.Errorf("cluster: etcd client: %w", err)
		}
		c.cli, c.ownCli = cli, true
	}
	fail := func(err error) (*Cluster, error) {
		if c.ownCli {
			c.cli.Close()
		}
		return nil, err
	}
	if err := c.join(ctx); err != nil {
		return fail(fmt.Errorf("cluster: join: %w", err))
	}
	rev, err := c.v.relist(ctx)
	if err != nil {
		return fail(fmt.Errorf("cluster: read the table: %w", err))
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(3)
	go c.keepLoop()
	go c.v.watchLoop(rev)
	go c.tidyLoop()
	c.log.Info().Str("node", cfg.Node).Str("addr", cfg.Addr).Dur("lease_ttl", cfg.LeaseTTL).Msg("joined cluster")
	return c, nil
}

// SetHooks sets the edge's callbacks; call it before the first Claim.
func (c *Cluster) SetHooks(h Hooks) { c.hooks.Store(&h) }

// Client returns the etcd client (the certificate cache shares it). It is
// closed by Close unless it came in Config.Client.
func (c *Cluster) Client() *clientv3.Client { return c.cli }

// Node returns this node's name.
func (c *Cluster) Node() string { return c.cfg.Node }

// Degraded reports whether etcd is out of reach (a claim failed for it, or
// two keepalives in a row did), or was and this node has not yet
// re-asserted its names: claims may fail, the view may be stale.
func (c *Cluster) Degraded() bool { return c.degraded.Load() }

// Stats returns the counters.
func (c *Cluster) Stats() Stats {
	c.lmu.Lock()
	ok := time.Now().Before(c.confirmed)
	c.lmu.Unlock()
	return Stats{RoundTrips: c.roundTrips.Load(), Errors: c.errs.Load(), LeaseOK: ok,
		Degraded: c.Degraded(), Fenced: c.Fenced()}
}

// Close leaves the cluster: it stops the goroutines and revokes the lease,
// so this node's live names go on hold for their owners at once (the other
// nodes give them their hold deadline). Safe to call twice.
func (c *Cluster) Close() error {
	var err error
	c.close.Do(func() {
		c.cancel()
		c.wg.Wait()
		c.lmu.Lock()
		lease := c.lease
		c.lmu.Unlock()
		if lease != 0 && !c.paused.Load() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if _, rerr := c.cli.Revoke(ctx, lease); rerr != nil && !errors.Is(rerr, rpctypes.ErrLeaseNotFound) {
				c.log.Debug().Err(rerr).Msg("lease not revoked; it will expire")
			}
			cancel()
		}
		if c.ownCli {
			err = c.cli.Close()
		}
	})
	return err
}

// count records one etcd round trip's outcome and returns err.
func (c *Cluster) count(err error) error {
	c.roundTrips.Add(1)
	if err != nil {
		c.errs.Add(1)
	}
	return err
}

// ErrNodeInUse: another live process registered this node name, and it
// did not go within Open's context.
var ErrNodeInUse = errors.New("cluster: node name in use")

// join takes the lease and registers the node, only if no live process
// has the node name: two processes under one name would each take the
// other's names for their own. The name of a process that died goes with
// its lease, so join waits (within ctx) for a registration to go.
func (c *Cluster) join(ctx context.Context) error {
	key := c.kNodes + c.cfg.Node
	for {
		start := time.Now()
		g, err := c.cli.Grant(ctx, int64(c.cfg.LeaseTTL/time.Second))
		if c.count(err) != nil {
			return fmt.Errorf("grant lease: %w", err)
		}
		resp, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, c.cfg.Addr, clientv3.WithLease(g.ID))).Commit()
		if c.count(err) != nil {
			return fmt.Errorf("register node: %w", err)
		}
		if resp.Succeeded {
			c.lmu.Lock()
			c.lease = g.ID
			c.confirmed = start.Add(time.Duration(g.TTL) * time.Second)
			c.lmu.Unlock()
			return nil
		}
		c.count(revoke(c.cli, g.ID))
		c.log.Warn().Str("node", c.cfg.Node).Msg("node name registered by another process; waiting for it to go")
		if err := c.waitGone(ctx, key, resp.Header.Revision); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrNodeInUse, c.cfg.Node, err)
		}
	}
}

// waitGone waits until key is deleted after rev, or ctx ends.
func (c *Cluster) waitGone(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range c.cli.Watch(wctx, key, clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return err
		}
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return nil
			}
		}
	}
	return ctx.Err()
}

// revoke revokes a lease within a short bound.
func revoke(cli *clientv3.Client, id clientv3.LeaseID) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := cli.Revoke(ctx, id)
	return err
}

// newLease grants a lease and registers the node under it: after the
// node's lease ran out, when its registration went with it.
func (c *Cluster) newLease(ctx context.Context) error {
	start := time.Now()
	g, err := c.cli.Grant(ctx, int64(c.cfg.LeaseTTL/time.Second))
	if c.count(err) != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	_, err = c.cli.Put(ctx, c.kNodes+c.cfg.Node, c.cfg.Addr, clientv3.WithLease(g.ID))
	if c.count(err) != nil {
		return fmt.Errorf("register node: %w", err)
	}
	c.lmu.Lock()
	c.lease = g.ID
	c.confirmed = start.Add(time.Duration(g.TTL) * time.Second)
	c.lmu.Unlock()
	return nil
}

// fenceMargin is how long before the computed end of its rights a node
// stops serving its names: a margin for clock rate differences and the
// time a request already routed takes to open its stream.
func (c *Cluster) fenceMargin() time.Duration { return c.cfg.LeaseTTL / 4 }

// Fenced reports whether this node must not serve its names: its lease is
// not confirmed recently enough that no other owner could have them by now
// (see doc.go, "Fencing").
func (c *Cluster) Fenced() bool {
	c.lmu.Lock()
	defer c.lmu.Unlock()
	return !time.Now().Before(c.confirmed.Add(c.cfg.Hold - c.fenceMargin()))
}

// keepMissesDegraded is how many keepalives in a row must fail before the
// node calls itself degraded: /readyz must not flap when one etcd member of
// three goes away under a request.
const keepMissesDegraded = 2

// keepLoop renews the lease every LeaseTTL/3 and tracks the time until
// which it is known to live. When etcd is away it marks the node degraded;
// when etcd answers again it re-asserts the names (under a new lease if
// the old one ran out).
func (c *Cluster) keepLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		if c.paused.Load() {
			continue
		}
		c.keepOnce()
	}
}

func (c *Cluster) keepOnce() {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.LeaseTTL/3)
	defer cancel()
	c.lmu.Lock()
	lease := c.lease
	c.lmu.Unlock()
	start := time.Now()
	resp, err := c.cli.KeepAliveOnce(ctx, lease)
	c.count(err)
	switch {
	case err == nil && resp.TTL > 0:
		c.lmu.Lock()
		c.confirmed = start.Add(time.Duration(resp.TTL) * time.Second)
		c.lmu.Unlock()
	case errors.Is(err, rpctypes.ErrLeaseNotFound) || err == nil:
		// The lease ran out while we were away: our live records are gone.
		c.log.Warn().Msg("node lease expired; taking a new one and re-asserting names")
		c.markDegraded()
		if err := c.newLease(ctx); err != nil {
			c.log.Warn().Err(err).Msg("new lease")
			return
		}
	default:
		if c.ctx.Err() != nil {
			return
		}
		// One miss is a member going away under the request (the
		// client moves to another); two in a row, most of a TTL without
		// a renewal, is etcd out of reach.
		c.keepMisses++
		if c.keepMisses < keepMissesDegraded {
			c.log.Debug().Err(err).Msg("lease keepalive missed")
			return
		}
		c.log.Warn().Err(err).Msg("lease keepalive failed; etcd unreachable")
		c.markDegraded()
		return
	}
	c.keepMisses = 0
	c.lmu.Lock()
	need := c.reassert
	c.lmu.Unlock()
	if need {
		// Its own bound: one transaction pair per session, more than a
		// keepalive's third of the TTL may take.
		rctx, rcancel := context.WithTimeout(c.ctx, 2*c.cfg.ClaimTimeout)
		defer rcancel()
		if err := c.reassertAll(rctx); err != nil {
			c.log.Warn().Err(err).Msg("re-assert names")
			return
		}
	}
	if c.setDegraded(false) {
		c.log.Info().Msg("etcd reachable again; names re-asserted")
	}
}

func (c *Cluster) markDegraded() {
	c.lmu.Lock()
	c.reassert = true
	c.lmu.Unlock()
	c.setDegraded(true)
}

// setDegraded sets the degraded state and reports whether it changed.
func (c *Cluster) setDegraded(d bool) bool {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if c.degraded.Swap(d) == d {
		return false
	}
	close(c.stateCh)
	c.stateCh = make(chan struct{})
	return true
}

// stateChanged returns a channel closed at the next change of Degraded.
func (c *Cluster) stateChanged() <-chan struct{} {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	return c.stateCh
}
