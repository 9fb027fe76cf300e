package certs

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/tunnelhq/tunnel/internal/expiring"
	"github.com/tunnelhq/tunnel/pkg/domain"
	"github.com/tunnelhq/tunnel/pkg/name"
)

// ACMEConfig turns on automatic certificates from an ACME CA (Let's
// Encrypt by default) through autocert, for the names that static
// certificates do not cover.
type ACMEConfig struct {
	// CacheDir keeps the account key and certificates across restarts
	// (autocert.DirCache). Created 0700 if missing. Required unless Cache
	// is set.
	CacheDir string

	// Cache, if set, keeps the account key, the certificates and the
	// challenge tokens instead of CacheDir, which is then ignored. Several
	// nodes sharing one (package clustercert: etcd) serve each other's
	// certificates and answer each other's challenges.
	Cache autocert.Cache

	// Lock, if set, takes a cluster-wide lock on a name (waiting while ctx
	// lasts) and returns its release, safe to call more than once. It is
	// taken before a handshake may order a certificate that the Cache does
	// not hold yet, and around each renewal, so that the nodes sharing
	// Cache order a name once, not once each (see the package doc). It
	// needs Cache. Nil: a single node, nothing to lock.
	Lock func(ctx context.Context, name string) (unlock func(), err error)

	// DirectoryURL is the CA's ACME directory. Empty means Let's Encrypt's
	// production directory.
	DirectoryURL string

	// Email is given to the CA as the account's contact, for expiry
	// notices. Empty sends none.
	Email string

	// RootCAs verifies the CA's HTTPS. Nil means the system roots; set it
	// for a private CA (or Pebble in tests).
	RootCAs *x509.CertPool

	// OrdersPerWeek caps the certificates ordered in any 7 days, in all.
	// Let's Encrypt issues at most 50 per registered domain per week, and
	// past that every order fails, the operator's own names' too; tunnel
	// names are chosen by clients. An order past it is refused before the
	// CA is contacted (logged, and counted as rate_limited_total
	// {kind="acme_order_server"}). Renewals and the apex do not count;
	// the count starts over when tunneld restarts, unless OrderLog keeps
	// it (a cluster's budget is the cluster's). Zero means the default,
	// DefaultOrdersPerWeek.
	OrdersPerWeek int

	// OrdersPerOwnerPerWeek caps the certificates ordered in any 7 days
	// for one owner's names: a token's, or for anonymous clients one
	// source address's. Past it: refused as above, kind
	// "acme_order_owner". Zero means the default,
	// DefaultOrdersPerOwnerPerWeek.
	OrdersPerOwnerPerWeek int

	// OrderLog, if set, keeps the order budget's record (both budgets)
	// for all the nodes that share it (package clustercert: in etcd), and
	// across restarts. Nil: each tunneld counts its own orders, from zero
	// at each start.
	OrderLog OrderLog
}

// The defaults of ACMEConfig's order budget: below Let's Encrypt's 50
// certificates per registered domain per week, with room left for the
// operator, and no one owner taking it all.
const (
	DefaultOrdersPerWeek         = 40
	DefaultOrdersPerOwnerPerWeek = 20
)

// Validate reports the settings that are missing or out of range, each
// prefixed "acme: ".
func (c *ACMEConfig) Validate() error {
	var errs []error
	if c.CacheDir == "" && c.Cache == nil {
		errs = append(errs, errors.New("acme: a certificate cache directory is required"))
	}
	if c.Lock != nil && c.Cache == nil {
		errs = append(errs, errors.New("acme: a cluster lock needs the cluster's shared cache"))
	}
	if c.OrdersPerWeek < 0 || c.OrdersPerOwnerPerWeek < 0 {
		errs = append(errs, fmt.Errorf("acme: orders per week %d and per owner %d: want 0 (the default) or more",
			c.OrdersPerWeek, c.OrdersPerOwnerPerWeek))
	}
	return errors.Join(errs...)
}

// Recorder is what certificate management reports: each issuance attempt
// that reached the CA, and each order the budget refused (kinds
// "acme_order_server", "acme_order_owner", "acme_order_retry"). Its
// methods are called concurrently.
type Recorder interface {
	CertIssued(err error)
	RateLimited(kind string)
}

// Owners says whom a tunnel name counts against, for the per-owner order
// budget. The edge's registry is one. Safe for concurrent use.
type Owners interface {
	// Account returns the account a live or held name counts against (a
	// token's owner, an anonymous client's source address), and whether
	// any session holds the name at all.
	Account(name string) (account string, held bool)
}

// ErrNotServed is what a host policy given to NewACME wraps to refuse a
// name nobody serves. Such a refusal is expected (any SNI reaches the
// port) and is neither counted nor logged by GetCertificate.
var ErrNotServed = errors.New("not the domain, and no tunnel holds the name")

// ErrOrderBudget: a certificate was not ordered because the week's order
// budget (ACMEConfig.OrdersPerWeek, OrdersPerOwnerPerWeek) is spent.
var ErrOrderBudget = errors.New("the weekly certificate order budget is spent")

// ErrOrderRetry: a certificate was not ordered because the last order for
// the name, which failed, was placed less than orderRetry ago.
var ErrOrderRetry = errors.New("the last order for this name failed; retried later")

// orderWindow is the period the order budget counts over, as Let's
// Encrypt's limit does.
const orderWindow = 7 * 24 * time.Hour

// orderRetry is how often a name whose order failed may be ordered again.
// autocert itself retries on the next handshake a minute later, which
// would let a handful of such names use up the CA account's new orders
// (Let's Encrypt: 300 per 3 hours) and its failed validations per name (5
// an hour).
const orderRetry = 15 * time.Minute

// ACME gets certificates from an ACME CA through autocert: on first use,
// for the names its host policy allows, within the weekly order budget.
// Safe for concurrent use. Build it with NewACME.
type ACME struct {
	manager   *autocert.Manager
	cache     *issuedCache
	transport *http.Transport // the ACME client's, for Close
	budget    *orderBudget
	rec       Recorder
	log       zerolog.Logger
	policy    autocert.HostPolicy
	lock      func(context.Context, string) (func(), error) // nil: a single node

	failedMu sync.Mutex
	failed   *expiring.Table[string, struct{}] // cert keys whose order just failed; see lockFirstOrder
}

// NewACME builds the certificate source for cfg, which must be valid
// (Validate). domain is the apex: its certificate and the names under it
// are what policy allows or refuses (refusing with an error wrapping
// ErrNotServed); owners says whom a name's order counts against. rec may
// be nil; log receives the refusals and failed orders (the caller's
// logger, unnarrowed). Without cfg.Cache, NewACME creates the cache
// directory, so that a permission problem shows at startup, not at the
// first visitor; it contacts no CA, nor cfg.Cache.
func NewACME(cfg *ACMEConfig, domain string, policy autocert.HostPolicy, owners Owners, rec Recorder, log zerolog.Logger) (*ACME, error) {
	store := cfg.Cache
	if store == nil {
		if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("certs: acme: certificate cache: %w", err)
		}
		store = autocert.DirCache(cfg.CacheDir)
	}
	if rec == nil {
		rec = nopRecorder{}
	}
	dir := cfg.DirectoryURL
	if dir == "" {
		dir = autocert.DefaultACMEDirectory
	}
	a := &ACME{
		transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     30 * time.Second,
			Proxy:               http.ProxyFromEnvironment,
		},
		budget: &orderBudget{
			total:    cmp.Or(cfg.OrdersPerWeek, DefaultOrdersPerWeek),
			perOwner: cmp.Or(cfg.OrdersPerOwnerPerWeek, DefaultOrdersPerOwnerPerWeek),
			domain:   domain,
			owners:   owners,
			rec:      rec,
			log:      log,
			now:      time.Now,
			shared:   cfg.OrderLog,
			logged:   expiring.New[string, struct{}](loggedCap, orderWindow),
		},
		rec:    rec,
		log:    log,
		policy: policy,
		lock:   cfg.Lock,
		failed: expiring.New[string, struct{}](failedCap, failedSkip),
	}
	a.cache = &issuedCache{Cache: store, rec: rec, budget: a.budget, lock: cfg.Lock, loaded: map[string]struct{}{}, missed: map[string]struct{}{}}
	a.manager = &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      a.cache,
		HostPolicy: policy,
		Email:      cfg.Email,
		Client: &acme.Client{
			DirectoryURL: dir,
			UserAgent:    "tunneld",
			HTTPClient:   &http.Client{Transport: a.transport, Timeout: time.Minute},
		},
	}
	return a, nil
}

// IsChallenge reports whether hello is the CA's TLS-ALPN-01 validation
// ("acme-tls/1"), which only ACME can answer, whatever static certificate
// covers the name.
func IsChallenge(hello *tls.ClientHelloInfo) bool {
	return slices.Equal(hello.SupportedProtos, []string{acme.ALPNProto})
}

// GetCertificate answers a handshake: the challenge certificate for
// TLS-ALPN-01, else the name's certificate, ordered on first use if the
// policy and the budget allow. An order that fails for another reason
// than those refusals is counted (Recorder.CertIssued) and logged here,
// since otherwise only the handshake's debug line would tell. With
// ACMEConfig.Lock, a first order waits for the name's cluster lock, at most
// while the handshake lasts (lockFirstOrder).
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if IsChallenge(hello) {
		return a.manager.GetCertificate(hello)
	}
	if a.lock != nil {
		unlock, key, err := a.lockFirstOrder(hello)
		if err != nil {
			// Debug: a visitor whose handshake ends while another node
			// orders is expected, and each visitor's handshake must not
			// log a line of its own when etcd is away (the cluster
			// reports etcd's health).
			a.log.Debug().Err(err).Str("host", hello.ServerName).Msg("no certificate: the cluster's order lock was not taken")
			return nil, err
		}
		defer unlock()
		if key != "" {
			defer a.afterLockedOrder(key) // before unlock: the next holder's order is its own
		}
	}
	cert, err := a.manager.GetCertificate(hello)
	if err == nil && a.lock != nil {
		// autocert holds what it served, even if storing it in the
		// shared cache failed: no lock for it again.
		if _, key, ok := certKeyOf(hello); ok {
			a.cache.markLoaded(key)
		}
	}
	if err != nil && !errors.Is(err, ErrNotServed) && !errors.Is(err, ErrOrderBudget) && !errors.Is(err, ErrOrderRetry) {
		a.rec.CertIssued(err)
		a.log.Error().Err(err).Str("host", hello.ServerName).Msg("no certificate from ACME")
	}
	return cert, err
}

// HTTPHandler answers the CA's HTTP-01 challenges and hands every other
// request to fallback. Until it is called, autocert offers the CA only
// TLS-ALPN-01.
func (a *ACME) HTTPHandler(fallback http.Handler) http.Handler {
	return a.manager.HTTPHandler(fallback)
}

// Close closes the idle connections to the CA. An order after Close
// dials again. Safe to call more than once.
func (a *ACME) Close() error {
	a.transport.CloseIdleConnections()
	return nil
}

type nopRecorder struct{}

func (nopRecorder) CertIssued(error)   {}
func (nopRecorder) RateLimited(string) {}

// issuedCache counts each certificate autocert stores as one successful
// issuance: autocert has no hook of its own, and it stores a certificate
// exactly once per order. The account key, HTTP-01 tokens and TLS-ALPN-01
// challenge certificates ("+token") are not issued certificates.
//
// It is also where the order budget is enforced: autocert calls its
// HostPolicy on every handshake, cached certificate or not, but asks the
// cache for a certificate only when it has none in memory, and orders one
// exactly when the cache has none either. So a miss is an order about to
// be placed, and failing the lookup instead stops it before the CA is
// contacted.
type issuedCache struct {
	autocert.Cache
	rec    Recorder
	budget *orderBudget

	// lock is ACMEConfig.Lock (nil: a single node); loaded is what the
	// Manager holds in memory, by cache key, for telling a renewal's read
	// apart from a first one (see renewalLock in cluster.go).
	lock   func(context.Context, string) (func(), error)
	mu     sync.Mutex
	loaded map[string]struct{}
	missed map[string]struct{} // cert keys autocert went on to order, since the first-order lock asked
}

func isCertKey(key string) bool {
	return key != "acme_account+key" && !strings.HasSuffix(key, "+http-01") && !strings.HasSuffix(key, "+token")
}

func (c *issuedCache) Get(ctx context.Context, key string) ([]byte, error) {
	if c.lock != nil && isCertKey(key) {
		if err := c.renewalLock(ctx, key); err != nil {
			return nil, err
		}
	}
	data, err := c.Cache.Get(ctx, key)
	if errors.Is(err, autocert.ErrCacheMiss) && isCertKey(key) {
		if berr := c.budget.charge(ctx, key); berr != nil {
			return nil, berr
		}
		c.markMissed(key)
	}
	if err == nil && c.lock != nil && isCertKey(key) && validCached(data, hostOfKey(key), time.Now()) {
		c.markLoaded(key)
	}
	return data, err
}

func (c *issuedCache) Put(ctx context.Context, key string, data []byte) error {
	err := c.Cache.Put(ctx, key, data)
	if err == nil && isCertKey(key) {
		c.rec.CertIssued(nil)
		c.markLoaded(key)
	}
	return err
}

// orderBudget counts certificate orders over the last orderWindow, in all
// and per account (Owners.Account: a token's owner, an anonymous source
// address). It remembers at most total orders, so its memory is bounded by
// the budget itself. The record is in memory, or in shared (an
// ACMEConfig.OrderLog) when nodes share the budget.
type orderBudget struct {
	total, perOwner int
	domain          string
	owners          Owners
	rec             Recorder
	log             zerolog.Logger
	now             func() time.Time
	shared          OrderLog // nil: the record is orders

	mu     sync.Mutex
	orders []Order // within the window, oldest first
	// logged remembers, for a week, that a budget's refusal was logged:
	// "server", or "owner:<account>". An owner is refused only while it
	// holds perOwner of the orders placed in the last week, and no two
	// weeks hold more than 2*total orders, so it never needs more than
	// 2*total/perOwner+1 keys; the table's cap is a backstop.
	logged *expiring.Table[string, struct{}]
}

// loggedCap bounds the budget's log-once memory (see orderBudget.logged).
const loggedCap = 4096

// Order is one certificate order the budget counts, as an OrderLog
// stores it.
type Order struct {
	// Key is autocert's cache key: the name, with "+rsa" for an RSA
	// certificate.
	Key string `json:"key"`
	// Account is whom the order counts against (Owners.Account).
	Account string `json:"account"`
	// At is when it was first placed, Last when it was last placed (a
	// failed order is retried, and counted once).
	At   time.Time `json:"at"`
	Last time.Time `json:"last"`
}

// OrderLog keeps the order budget's record where every node sharing a
// Cache sees it (package clustercert: in etcd), so that the weekly budget
// holds for the cluster, as the CA's limit does, not once per node.
// Implementations are safe for concurrent use.
type OrderLog interface {
	// Update calls fn with the record as stored (nil if none) and stores
	// what fn returns, atomically: if another node changed the record
	// meanwhile, it calls fn again on the new one. If fn returns an
	// error, Update stores nothing and returns that error as is.
	Update(ctx context.Context, fn func([]Order) ([]Order, error)) error
}

// errRefused stops an OrderLog update when the budget refuses the order:
// there is nothing to store.
var errRefused = errors.New("refused")

// charge counts an order for the certificate cache key (a name, with
// "+rsa" for an RSA certificate), or refuses it with ErrOrderBudget. A key
// already counted this week is not counted again (autocert retries a
// failed order), but is refused with ErrOrderRetry until orderRetry has
// passed since its last order. The apex is never counted: it is the
// operator's. With a shared record that cannot be reached, the order is
// refused: the budget is what keeps the CA's limit from being hit.
func (b *orderBudget) charge(ctx context.Context, key string) error {
	host := strings.TrimSuffix(key, "+rsa")
	label, err := name.FromHost(host, b.domain)
	switch {
	case errors.Is(err, name.ErrForeignHost) && domain.Validate(host) == nil:
		// A custom domain, which the table holds under its own name,
		// counts against its claimer like a name. (Other keys, such as
		// autocert's old account key "acme_account.key", are no name.)
		label = host
	case err != nil || label == "":
		return nil // the apex; anything else HostPolicy has refused already
	}
	account, held := b.owners.Account(label)
	if !held {
		return fmt.Errorf("certs: acme: %q: %w", host, ErrNotServed) // released since HostPolicy
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	var refusal string
	update := func(orders []Order) ([]Order, error) {
		var out []Order
		out, refusal = b.decide(orders, key, account, now)
		if refusal != "" {
			return nil, errRefused
		}
		return out, nil
	}
	if b.shared != nil {
		if err := b.shared.Update(ctx, update); err != nil && !errors.Is(err, errRefused) {
			return fmt.Errorf("certs: acme: %q: the cluster's order budget: %w", host, err)
		}
	} else if out, err := update(b.orders); err == nil {
		b.orders = out
	}
	switch refusal {
	case "":
		return nil
	case "retry":
		b.rec.RateLimited("acme_order_retry")
		b.log.Debug().Str("host", host).Msg("certificate not ordered: the last order failed recently")
		return fmt.Errorf("certs: acme: %q: %w", host, ErrOrderRetry)
	}
	limit := b.total
	if refusal == "owner" {
		limit = b.perOwner
	}
	b.rec.RateLimited("acme_order_" + refusal)
	b.logRefusalLocked(refusal, limit, account, host, now)
	return fmt.Errorf("certs: acme: %q: %w", host, ErrOrderBudget)
}

// decide applies the budget to orders (the record, oldest first, which it
// may modify) for an order of key by account at now: it returns the
// record with the order counted, or why it is refused ("retry", "server"
// or "owner").
func (b *orderBudget) decide(orders []Order, key, account string, now time.Time) ([]Order, string) {
	expired := 0
	for expired < len(orders) && now.Sub(orders[expired].At) >= orderWindow {
		expired++
	}
	orders = slices.Delete(orders, 0, expired)
	owned := 0
	for i := range orders {
		o := &orders[i]
		if o.Key == key {
			if now.Sub(o.Last) < orderRetry {
				return nil, "retry"
			}
			o.Last = now
			return orders, ""
		}
		if o.Account == account {
			owned++
		}
	}
	switch {
	case len(orders) >= b.total:
		return nil, "server"
	case owned >= b.perOwner:
		return nil, "owner"
	}
	return append(orders, Order{Key: key, Account: account, At: now, Last: now}), ""
}

// logRefusalLocked logs a refused order once a week per budget (the
// server's, or one owner's), then at debug level only; the counter counts
// every refusal.
func (b *orderBudget) logRefusalLocked(scope string, limit int, account, host string, now time.Time) {
	key := scope
	if scope == "owner" {
		key = "owner:" + account
	}
	if _, ok := b.logged.Get(key, now); ok {
		b.log.Debug().Str("host", host).Str("budget", scope).Msg("certificate not ordered: weekly budget spent")
		return
	}
	b.logged.Put(key, struct{}{}, now)
	ev := b.log.Warn().Str("host", host).Str("budget", scope).Int("orders_per_week", limit)
	if scope == "owner" {
		ev = ev.Str("owner", account)
	}
	ev.Msg("certificate not ordered: the weekly ACME order budget is spent (--acme-orders-per-week, --acme-orders-per-owner); " +
		"for many or random names a wildcard certificate (--cert) is the better choice; logged once a week per budget")
}
