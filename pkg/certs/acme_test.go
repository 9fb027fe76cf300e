package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"golang.org/x/crypto/acme/autocert"

	"github.com/tunnelhq/tunnel/internal/testtls"
	"github.com/tunnelhq/tunnel/pkg/name"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// owners is a name table the way the edge's registry answers Owners: name
// -> account.
type owners map[string]string

func (o owners) Account(n string) (string, bool) {
	acct, ok := o[n]
	return acct, ok
}

// policy allows the apex and the names in o, as the edge's host policy
// allows the apex and the names tunnels hold; a name of o with a dot is a
// custom domain, allowed as itself.
func (o owners) policy(domain string) autocert.HostPolicy {
	return func(_ context.Context, host string) error {
		label, err := name.FromHost(host, domain)
		if err == nil && label == "" {
			return nil
		}
		if _, held := o[host]; errors.Is(err, name.ErrForeignHost) && held {
			return nil
		}
		if _, held := o[label]; err == nil && held {
			return nil
		}
		return fmt.Errorf("%q: %w", host, ErrNotServed)
	}
}

func TestACMEConfig_Validate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  ACMEConfig
		ok   bool
	}{
		{"defaults", ACMEConfig{CacheDir: "x"}, true},
		{"no cache", ACMEConfig{}, false},
		{"negative budget", ACMEConfig{CacheDir: "x", OrdersPerWeek: -1}, false},
		{"shared cache instead of a directory", ACMEConfig{Cache: memCache{}}, true},
		{"shared cache and lock", ACMEConfig{Cache: memCache{}, Lock: nopLock}, true},
		{"lock without the shared cache", ACMEConfig{CacheDir: "x", Lock: nopLock}, false},
	} {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: got %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

// TestACME_OrderBudgetWindow: the budgets come from the config, a
// certificate in the cache costs nothing (autocert consults HostPolicy on
// every handshake, so counting there would charge cached names every
// week), a failed order may be placed again only after orderRetry, and an
// order counts for 7 days. The CA is unreachable, so an order that is
// allowed fails on the network instead: what matters is which fail for
// the budget.
func TestACME_OrderBudgetWindow(t *testing.T) {
	const domain = "tunnel.test"
	cacheDir := filepath.Join(t.TempDir(), "cache")
	cfg := &ACMEConfig{CacheDir: cacheDir, DirectoryURL: "https://127.0.0.1:1/dir", OrdersPerWeek: 2, OrdersPerOwnerPerWeek: 1}
	names := owners{"cached": "a", "new": "a", "next": "a", "other": "b", "third": "c"}
	a, err := NewACME(cfg, domain, names.policy(domain), names, nil, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if fi, err := os.Stat(cacheDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir: %v, %v; want created 0700", fi, err)
	}
	now := time.Now()
	a.budget.now = func() time.Time { return now }
	writeCachedCert(t, cacheDir, "cached.tunnel.test")
	hello := func(name string) *tls.ClientHelloInfo {
		return &tls.ClientHelloInfo{ServerName: name + ".tunnel.test", CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
	}
	if _, err := a.GetCertificate(hello("cached")); err != nil {
		t.Fatalf("cached certificate: %v", err)
	}
	for _, tt := range []struct {
		name    string
		refused bool
	}{
		{"new", false},
		{"next", true}, // a's one
		{"other", false},
		{"third", true}, // the server's two
		{"free", false}, // refused, but by the policy
	} {
		_, err := a.GetCertificate(hello(tt.name))
		if got := errors.Is(err, ErrOrderBudget); got != tt.refused {
			t.Errorf("%s: got %v, want refused for the budget %v", tt.name, err, tt.refused)
		}
	}
	if _, err := a.GetCertificate(hello("free")); !errors.Is(err, ErrNotServed) {
		t.Errorf("free: got %v, want refused by the policy", err)
	}
	// A failed order (the CA is unreachable) may be placed again, but not
	// at once. autocert keeps the failure a minute before it asks the
	// cache again, so ask the cache as it then will.
	cache := a.manager.Cache
	if _, err := cache.Get(context.Background(), "new.tunnel.test"); !errors.Is(err, ErrOrderRetry) {
		t.Errorf("new again at once: got %v, want refused for a retry too soon", err)
	}
	now = now.Add(orderRetry)
	if _, err := cache.Get(context.Background(), "new.tunnel.test"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Errorf("new again later: got %v, want a cache miss (the order placed)", err)
	}
	now = now.Add(orderWindow)
	if _, err := a.GetCertificate(hello("next")); errors.Is(err, ErrOrderBudget) {
		t.Errorf("a week later: got %v, want the order placed", err)
	}
}

// TestACME_OrderBudgetCountsCustomDomains: a custom domain's order counts
// against whoever claimed it (the table holds it under its own name), like
// a name's: a token holder cannot order past its budget with domains.
func TestACME_OrderBudgetCountsCustomDomains(t *testing.T) {
	const domain = "tunnel.test"
	cfg := &ACMEConfig{CacheDir: t.TempDir(), DirectoryURL: "https://127.0.0.1:1/dir", OrdersPerWeek: 10, OrdersPerOwnerPerWeek: 1}
	names := owners{"wiki.example.org": "a", "blog.example.org": "a", "shop.example.net": "b"}
	a, err := NewACME(cfg, domain, names.policy(domain), names, nil, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	for _, tt := range []struct {
		host      string
		budget    bool // refused for the budget
		notServed bool // refused by the policy
	}{
		{"wiki.example.org", false, false},
		{"blog.example.org", true, false}, // a's one is spent
		{"shop.example.net", false, false},
		{"free.example.org", false, true},
	} {
		_, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.host, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}})
		if got := errors.Is(err, ErrOrderBudget); got != tt.budget {
			t.Errorf("%s: got %v, want refused for the budget %v", tt.host, err, tt.budget)
		}
		if got := errors.Is(err, ErrNotServed); got != tt.notServed {
			t.Errorf("%s: got %v, want refused by the policy %v", tt.host, err, tt.notServed)
		}
	}
}

// writeCachedCert puts a certificate for name in an autocert DirCache the
// way autocert stores one: key, then chain, PEM.
func writeCachedCert(t *testing.T, dir, name string) {
	t.Helper()
	cert := testtls.NewCA(t).IssueFor(t, 30*24*time.Hour, name)
	keyDER, _ := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	data := append(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), testtls.CertPEM(cert)...)
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}
