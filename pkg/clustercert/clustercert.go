package clustercert

import (
	"cmp"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tunnelhq/tunnel/pkg/certs"
)

// Config says where in etcd the cluster's certificates live.
type Config struct {
	// Client reaches the cluster's etcd. Required; the caller closes it,
	// after Store.Close.
	Client *clientv3.Client

	// Prefix is the key prefix of everything this package stores: the
	// cache under Prefix+"cache/", the locks under Prefix+"lock/", the
	// order budget's record at Prefix+"orders". Every node of a cluster
	// must use the same one. Empty means DefaultPrefix.
	Prefix string

	// LockTTL is the lease of a held lock: how long a name stays locked
	// after its holder died. Zero means DefaultLockTTL; at least 2s.
	LockTTL time.Duration

	// LockWait bounds how long a node waits for another node's lock (an
	// order in progress). A first order waits at most as long as the
	// visitor's handshake, whichever is shorter; a renewal waits for this
	// long, then tries again later. Zero means DefaultLockWait.
	LockWait time.Duration
}

// The defaults of Config.
const (
	DefaultPrefix = "/tunnel/certs/"
	// DefaultLockTTL: a dead node's lock is free within 10s, short next
	// to the minute an order takes at Let's Encrypt and the visitor's
	// patience.
	DefaultLockTTL = 10 * time.Second
	// DefaultLockWait covers an order at Let's Encrypt (seconds, a minute
	// or two when its validation is slow).
	DefaultLockWait = 3 * time.Minute
)

// Validate reports what is missing or out of range, each prefixed
// "clustercert: ".
func (c *Config) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("clustercert: an etcd client is required"))
	}
	if c.Prefix != "" && !strings.HasPrefix(c.Prefix, "/") {
		errs = append(errs, fmt.Errorf("clustercert: prefix %q: want it to start with /", c.Prefix))
	}
	if c.LockTTL < 0 || (c.LockTTL > 0 && c.LockTTL < 2*time.Second) || c.LockWait < 0 {
		errs = append(errs, fmt.Errorf("clustercert: lock TTL %v and wait %v: want 0 (the default), a TTL of 2s or more, a wait of 0 or more",
			c.LockTTL, c.LockWait))
	}
	return errors.Join(errs...)
}

// Store is the cluster's certificate store: the shared autocert cache, the
// per-name order lock and the order budget's record. Build it with New;
// Close it after the edge has stopped and before the etcd client:
//
//	store, err := clustercert.New(clustercert.Config{Client: cli})
//	if err != nil { ... }
//	defer store.Close()
//	store.Configure(edgeCfg.ACME) // before edge.NewServer(edgeCfg)
type Store struct {
	cache  *Cache
	locker *Locker
	orders *OrderLog
}

// New builds the store for cfg, after Validate. It contacts nothing: etcd
// is first asked when a certificate is.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	prefix := cmp.Or(cfg.Prefix, DefaultPrefix)
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return &Store{
		cache:  NewCache(cfg.Client, prefix+"cache/"),
		locker: NewLocker(cfg.Client, prefix+"lock/", cmp.Or(cfg.LockTTL, DefaultLockTTL), cmp.Or(cfg.LockWait, DefaultLockWait)),
		orders: NewOrderLog(cfg.Client, prefix+"orders"),
	}, nil
}

// Cache returns the shared autocert cache.
func (s *Store) Cache() *Cache { return s.cache }

// Locker returns the per-name order lock.
func (s *Store) Locker() *Locker { return s.locker }

// OrderLog returns the cluster's order budget record.
func (s *Store) OrderLog() *OrderLog { return s.orders }

// Configure points an ACME configuration at the store: its certificates,
// account and challenge tokens in etcd (instead of CacheDir), its orders
// and renewals under the cluster-wide lock, and its weekly order budget
// counted for the cluster. This is the one call tunneld needs with
// --cluster-etcd.
func (s *Store) Configure(acme *certs.ACMEConfig) {
	acme.Cache = s.cache
	acme.Lock = s.locker.Lock
	acme.OrderLog = s.orders
}

// Close releases the locks this node holds (an order in flight then runs
// unlocked to its end) and refuses new ones. Safe to call more than once.
func (s *Store) Close() error {
	return s.locker.Close()
}
