package edge

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
	"github.com/tunnelhq/tunnel/pkg/name"
)

// ACMEConfig turns on automatic certificates from an ACME CA (Let's
// Encrypt by default) through autocert, for the names that static
// certificates do not cover.
type ACMEConfig struct {
	// CacheDir keeps the account key and certificates across restarts
	// (autocert.DirCache). Created 0700 if missing. Required.
	CacheDir string

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
	// the count starts over when tunneld restarts. Zero means the default,
	// DefaultOrdersPerWeek.
	OrdersPerWeek int

	// OrdersPerOwnerPerWeek caps the certificates ordered in any 7 days
	// for one owner's names: a token's, or for anonymous clients one
	// source address's. Past it: refused as above, kind
	// "acme_order_owner". Zero means the default,
	// DefaultOrdersPerOwnerPerWeek.
	OrdersPerOwnerPerWeek int
}

// The defaults of ACMEConfig's order budget: below Let's Encrypt's 50
// certificates per registered domain per week, with room left for the
// operator, and no one owner taking it all.
const (
	DefaultOrdersPerWeek         = 40
	DefaultOrdersPerOwnerPerWeek = 20
)

// validate checks the settings Config.Validate cannot leave to autocert.
func (c *ACMEConfig) validate() []error {
	var errs []error
	if c.CacheDir == "" {
		errs = append(errs, errors.New("acme: a certificate cache directory is required"))
	}
	if c.OrdersPerWeek < 0 || c.OrdersPerOwnerPerWeek < 0 {
		errs = append(errs, fmt.Errorf("acme: orders per week %d and per owner %d: want 0 (the default) or more",
			c.OrdersPerWeek, c.OrdersPerOwnerPerWeek))
	}
	return errs
}

// errNotOurs: autocert's HostPolicy refused a name.
var errNotOurs = errors.New("not the domain, and no tunnel holds the name")

// errOrderBudget: a certificate was not ordered because the week's order
// budget (ACMEConfig.OrdersPerWeek, OrdersPerOwnerPerWeek) is spent.
var errOrderBudget = errors.New("the weekly certificate order budget is spent")

// errOrderRetry: a certificate was not ordered because the last order for
// the name, which failed, was placed less than orderRetry ago.
var errOrderRetry = errors.New("the last order for this name failed; retried later")

// orderWindow is the period the order budget counts over, as Let's
// Encrypt's limit does.
const orderWindow = 7 * 24 * time.Hour

// orderRetry is how often a name whose order failed may be ordered again.
// autocert itself retries on the next handshake a minute later, which
// would let a handful of such names use up the CA account's new orders
// (Let's Encrypt: 300 per 3 hours) and its failed validations per name (5
// an hour).
const orderRetry = 15 * time.Minute

// refusedLogCap bounds how many refused names are remembered for
// log-once; past it the least recently refused is forgotten, so a flood of
// random SNI names costs a few log lines, not unbounded memory.
const refusedLogCap = 4096

// newCertManager builds the autocert manager for cfg.ACME. It creates the
// cache directory so that a permission problem shows at startup, not at
// the first visitor.
func (s *Server) newCertManager(cfg *ACMEConfig) (*autocert.Manager, error) {
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("edge: acme: certificate cache: %w", err)
	}
	dir := cfg.DirectoryURL
	if dir == "" {
		dir = autocert.DefaultACMEDirectory
	}
	s.acmeTransport = &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     30 * time.Second,
		Proxy:               http.ProxyFromEnvironment,
	}
	s.orders = &orderBudget{
		total:    cmp.Or(cfg.OrdersPerWeek, DefaultOrdersPerWeek),
		perOwner: cmp.Or(cfg.OrdersPerOwnerPerWeek, DefaultOrdersPerOwnerPerWeek),
		domain:   s.cfg.Domain,
		registry: s.registry,
		rec:      s.ops.metrics,
		log:      s.log,
		now:      time.Now,
		logged:   expiring.New[string, struct{}](refusedLogCap, orderWindow),
	}
	return &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      issuedCache{autocert.DirCache(cfg.CacheDir), s.ops.metrics, s.orders},
		HostPolicy: s.hostPolicy,
		Email:      cfg.Email,
		Client: &acme.Client{
			DirectoryURL: dir,
			UserAgent:    "tunneld",
			HTTPClient:   &http.Client{Transport: s.acmeTransport, Timeout: time.Minute},
		},
	}, nil
}

// hostPolicy allows the apex and names a tunnel holds (live or on hold for
// a reconnecting owner); anything else is refused before the CA is
// contacted, so no certificate is ever ordered for a name nobody serves.
// host may carry a port: autocert's HTTP-01 handler passes the Host header.
func (s *Server) hostPolicy(_ context.Context, host string) error {
	label, err := name.FromHost(host, s.cfg.Domain)
	if err == nil && (label == "" || s.registry.Held(label)) {
		return nil
	}
	if s.noteRefused(host) {
		s.log.Info().Str("host", host).Msg("no certificate for a name no tunnel holds")
	}
	return fmt.Errorf("edge: acme: %q: %w", host, errNotOurs)
}

// noteRefused reports whether host is refused for the first time.
func (s *Server) noteRefused(host string) bool {
	s.refusedMu.Lock()
	defer s.refusedMu.Unlock()
	now := time.Now()
	if _, seen := s.refused.Get(host, now); seen {
		return false
	}
	s.refused.Put(host, struct{}{}, now)
	return true
}

// getCertificate picks the certificate for a handshake: autocert's
// challenge certificate for TLS-ALPN-01, a static certificate covering the
// name, else autocert's (ordered on first use if the policy allows).
func (s *Server) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.certManager != nil && slices.Equal(hello.SupportedProtos, []string{acme.ALPNProto}) {
		return s.certManager.GetCertificate(hello)
	}
	if cert := s.cfg.StaticCerts.Lookup(hello.ServerName); cert != nil {
		return cert, nil
	}
	if s.certManager != nil {
		cert, err := s.certManager.GetCertificate(hello)
		if err != nil && !errors.Is(err, errNotOurs) && !errors.Is(err, errOrderBudget) && !errors.Is(err, errOrderRetry) {
			s.ops.metrics.CertIssued(err)
			// Otherwise only the handshake's debug line would tell.
			s.log.Error().Err(err).Str("host", hello.ServerName).Msg("no certificate from ACME")
		}
		return cert, err
	}
	return nil, fmt.Errorf("edge: no certificate for %q", hello.ServerName)
}

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
	rec    CertRecorder
	budget *orderBudget
}

func isCertKey(key string) bool {
	return key != "acme_account+key" && !strings.HasSuffix(key, "+http-01") && !strings.HasSuffix(key, "+token")
}

func (c issuedCache) Get(ctx context.Context, key string) ([]byte, error) {
	data, err := c.Cache.Get(ctx, key)
	if errors.Is(err, autocert.ErrCacheMiss) && c.budget != nil && isCertKey(key) {
		if berr := c.budget.charge(key); berr != nil {
			return nil, berr
		}
	}
	return data, err
}

func (c issuedCache) Put(ctx context.Context, key string, data []byte) error {
	err := c.Cache.Put(ctx, key, data)
	if err == nil && isCertKey(key) {
		c.rec.CertIssued(nil)
	}
	return err
}

// orderBudget counts certificate orders over the last orderWindow, in all
// and per account (Session.account: a token's owner, an anonymous source
// address). It remembers at most total orders, so its memory is bounded by
// the budget itself.
type orderBudget struct {
	total, perOwner int
	domain          string
	registry        Registry
	rec             RateLimitRecorder
	log             zerolog.Logger
	now             func() time.Time

	mu     sync.Mutex
	orders []order                           // within the window, oldest first
	logged *expiring.Table[string, struct{}] // "server" or "owner:<account>", for a week after its refusal was logged
}

type order struct {
	key, account string    // key: autocert's cache key, the name (+"rsa")
	at, last     time.Time // first and latest order placed
}

// charge counts an order for the certificate cache key (a name, with
// "+rsa" for an RSA certificate), or refuses it with errOrderBudget. A key
// already counted this week is not counted again (autocert retries a
// failed order), but is refused with errOrderRetry until orderRetry has
// passed since its last order. The apex is never counted: it is the
// operator's.
func (b *orderBudget) charge(key string) error {
	host := strings.TrimSuffix(key, "+rsa")
	label, err := name.FromHost(host, b.domain)
	if err != nil || label == "" {
		return nil // the apex; anything else HostPolicy has refused already
	}
	account, held := b.registry.Account(label)
	if !held {
		return fmt.Errorf("edge: acme: %q: %w", host, errNotOurs) // released since HostPolicy
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	expired := 0
	for expired < len(b.orders) && now.Sub(b.orders[expired].at) >= orderWindow {
		expired++
	}
	b.orders = slices.Delete(b.orders, 0, expired)
	owned := 0
	for i := range b.orders {
		o := &b.orders[i]
		if o.key == key {
			if now.Sub(o.last) < orderRetry {
				b.rec.RateLimited("acme_order_retry")
				b.log.Debug().Str("host", host).Msg("certificate not ordered: the last order failed recently")
				return fmt.Errorf("edge: acme: %q: %w", host, errOrderRetry)
			}
			o.last = now
			return nil
		}
		if o.account == account {
			owned++
		}
	}
	scope, limit := "", 0
	switch {
	case len(b.orders) >= b.total:
		scope, limit = "server", b.total
	case owned >= b.perOwner:
		scope, limit = "owner", b.perOwner
	default:
		b.orders = append(b.orders, order{key: key, account: account, at: now, last: now})
		return nil
	}
	b.rec.RateLimited("acme_order_" + scope)
	b.logRefusalLocked(scope, limit, account, host, now)
	return fmt.Errorf("edge: acme: %q: %w", host, errOrderBudget)
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
	if !b.logged.PutIfRoom(key, struct{}{}, now) {
		return
	}
	ev := b.log.Warn().Str("host", host).Str("budget", scope).Int("orders_per_week", limit)
	if scope == "owner" {
		ev = ev.Str("owner", account)
	}
	ev.Msg("certificate not ordered: the weekly ACME order budget is spent (--acme-orders-per-week, --acme-orders-per-owner); " +
		"for many or random names a wildcard certificate (--cert) is the better choice; logged once a week per budget")
}

// modernCipherSuites are the TLS 1.2 suites offered: forward secret AEADs
// only. TLS 1.3 suites are not configurable and all fine.
var modernCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// refusedSet is the log-once memory of hostPolicy.
type refusedSet struct {
	refusedMu sync.Mutex
	refused   *expiring.Table[string, struct{}] // no ttl: until evicted
}
