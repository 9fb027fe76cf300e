package edge

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/acme/autocert"

	"github.com/tunnelhq/tunnel/internal/testtls"
)

func TestServer_HostPolicy(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Domain = "tunnel.test"
	cfg.AllowAnonymous = true
	cfg.ACME = &ACMEConfig{CacheDir: filepath.Join(t.TempDir(), "cache"), DirectoryURL: "https://127.0.0.1:1/dir"}
	reg := NewMemoryRegistry(time.Minute)
	cfg.Registry = reg
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t))
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(cfg.ACME.CacheDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir: %v, %v; want created 0700", fi, err)
	}
	live := &Session{ID: "1", Owner: "a"}
	if _, err := reg.Claim(live, []string{"wiki"}); err != nil {
		t.Fatal(err)
	}
	away := &Session{ID: "2", Owner: "b"}
	if _, err := reg.Claim(away, []string{"blog"}); err != nil {
		t.Fatal(err)
	}
	reg.Release(away) // on hold for its owner

	for _, tt := range []struct {
		host string
		ok   bool
	}{
		{"tunnel.test", true},
		{"wiki.tunnel.test", true},
		{"wiki.tunnel.test:5002", true}, // HTTP-01 on a non-80 port passes the Host with its port
		{"blog.tunnel.test", true},
		{"free.tunnel.test", false},
		{"a.wiki.tunnel.test", false},
		{"example.com", false},
		{"127.0.0.1", false},
	} {
		err := s.hostPolicy(context.Background(), tt.host)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, errNotOurs)) {
			t.Errorf("hostPolicy(%q): got %v, want allowed %v", tt.host, err, tt.ok)
		}
	}
	if !s.noteRefused("x.tunnel.test") || s.noteRefused("x.tunnel.test") {
		t.Error("noteRefused: want true once, then false")
	}
}

func TestStaticCerts_Lookup(t *testing.T) {
	dir := t.TempDir()
	writePair(t, dir, "wild", []string{"tunnel.test", "*.tunnel.test"}, time.Hour)
	writePair(t, dir, "other", []string{"other.test"}, time.Hour)
	writePair(t, dir, "old", []string{"old.test"}, -time.Minute)
	c, err := LoadStaticCerts(CertFiles{Dirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, want string // want: the certificate's first DNS name, "" for none
	}{
		{"tunnel.test", "tunnel.test"},
		{"WIKI.tunnel.test.", "tunnel.test"},
		{"a.b.tunnel.test", ""},
		{"other.test", "other.test"},
		{"x.other.test", ""},
		{"old.test", ""}, // expired: left to ACME
		{"example.com", ""},
	} {
		got := ""
		if cert := c.Lookup(tt.name); cert != nil {
			got = cert.Leaf.DNSNames[0]
		}
		if got != tt.want {
			t.Errorf("Lookup(%q): got %q, want %q", tt.name, got, tt.want)
		}
	}

	// A failed reload keeps the set in use.
	os.Remove(filepath.Join(dir, "other.key"))
	if err := c.Reload(); err == nil {
		t.Fatal("Reload with a certificate missing its key succeeded")
	}
	if c.Lookup("other.test") == nil {
		t.Error("after a failed reload the previous certificates are gone")
	}
}

// writePair writes NAME.crt and NAME.key into dir, for dnsNames and
// expiring validFor from now.
func writePair(t *testing.T, dir, name string, dnsNames []string, validFor time.Duration) {
	t.Helper()
	cert := testtls.NewCA(t).IssueFor(t, validFor, dnsNames...)
	keyDER, _ := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	for file, block := range map[string]*pem.Block{
		name + ".crt": {Type: "CERTIFICATE", Bytes: cert.Certificate[0]},
		name + ".key": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServer_ACMEOrderBudget: certificates are ordered for at most 20 names
// of one owner and 40 in all per week (the defaults); past that the order is
// refused before the CA is contacted, with one log line per budget and a
// count in tunneld_rate_limited_total. The CA here is unreachable, so an
// allowed order fails on the network instead: what matters is which fail
// for the budget.
func TestServer_ACMEOrderBudget(t *testing.T) {
	var logs bytes.Buffer
	cfg := DefaultConfig()
	cfg.Domain = "tunnel.test"
	cfg.AllowAnonymous = true
	cfg.ACME = &ACMEConfig{CacheDir: filepath.Join(t.TempDir(), "cache"), DirectoryURL: "https://127.0.0.1:1/dir"}
	reg := NewMemoryRegistry(time.Minute)
	cfg.Registry = reg
	cfg.Logger = zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), &logs))
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, owner := range []string{"a", "b", "c"} {
		sess := &Session{ID: owner, Owner: owner}
		var names []string
		for i := range 25 {
			names = append(names, fmt.Sprintf("%s%d", owner, i))
		}
		if _, err := reg.Claim(sess, names); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(name string) bool {
		t.Helper()
		_, err := s.getCertificate(&tls.ClientHelloInfo{ServerName: name + ".tunnel.test",
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}})
		if err == nil {
			t.Fatalf("%s: got a certificate from an unreachable CA", name)
		}
		return errors.Is(err, errOrderBudget)
	}
	for _, tt := range []struct {
		owner    string
		from, to int // names owner+from .. owner+to-1
		refused  bool
	}{
		{"a", 0, 20, false}, // a's 20
		{"a", 20, 22, true},
		{"a", 0, 1, false},  // counted already (refused for a retry too soon, not for the budget)
		{"b", 0, 20, false}, // 40 in all
		{"b", 20, 21, true},
		{"c", 0, 1, true},
	} {
		for i := tt.from; i < tt.to; i++ {
			name := fmt.Sprintf("%s%d", tt.owner, i)
			if got := refused(name); got != tt.refused {
				t.Errorf("%s: refused for the budget %v, want %v", name, got, tt.refused)
			}
		}
	}
	if _, err := s.getCertificate(&tls.ClientHelloInfo{ServerName: "tunnel.test"}); err == nil || strings.Contains(err.Error(), "budget") {
		t.Errorf("apex: got %v, want a network error, not the budget", err)
	}
	if n := strings.Count(logs.String(), "weekly ACME order budget is spent"); n != 2 {
		t.Errorf("budget refusals logged %d times, want 2 (owner a, the server)", n)
	}
	fams, err := s.Metrics().Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "tunneld_rate_limited_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			counts[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if counts["acme_order_owner"] != 2 || counts["acme_order_server"] != 2 {
		t.Errorf("rate_limited_total: got %v, want acme_order_owner 2, acme_order_server 2", counts)
	}
}

// TestServer_ACMEOrderBudgetWindow: the budgets come from the config, a
// certificate in the cache costs nothing (autocert consults HostPolicy on
// every handshake, so counting there would charge cached names every
// week), and an order counts for 7 days.
func TestServer_ACMEOrderBudgetWindow(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Domain = "tunnel.test"
	cfg.AllowAnonymous = true
	cacheDir := filepath.Join(t.TempDir(), "cache")
	cfg.ACME = &ACMEConfig{CacheDir: cacheDir, DirectoryURL: "https://127.0.0.1:1/dir", OrdersPerWeek: 2, OrdersPerOwnerPerWeek: 1}
	reg := NewMemoryRegistry(time.Hour)
	cfg.Registry = reg
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t))
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s.orders.now = func() time.Time { return now }
	if _, err := reg.Claim(&Session{ID: "1", Owner: "a"}, []string{"cached", "new", "next"}); err != nil {
		t.Fatal(err)
	}
	// An anonymous client's names count against its address, whatever
	// owner key it sends.
	for i, key := range []string{"anon:key:1", "anon:key:2"} {
		sess := &Session{ID: key, Owner: key, account: "anon:192.0.2.1/32"}
		if _, err := reg.Claim(sess, []string{fmt.Sprintf("anon%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	writeCachedCert(t, cacheDir, "cached.tunnel.test")
	hello := func(name string) *tls.ClientHelloInfo {
		return &tls.ClientHelloInfo{ServerName: name + ".tunnel.test", CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
	}
	if _, err := s.getCertificate(hello("cached")); err != nil {
		t.Fatalf("cached certificate: %v", err)
	}
	for _, tt := range []struct {
		name string
		want error // nil: not refused for the budget
	}{
		{"new", nil},
		{"next", errOrderBudget}, // a's one
		{"anon0", nil},
		{"anon1", errOrderBudget}, // the address's one (and the server's two)
	} {
		_, err := s.getCertificate(hello(tt.name))
		if got := errors.Is(err, errOrderBudget); got != (tt.want != nil) {
			t.Errorf("%s: got %v, want refused for the budget %v", tt.name, err, tt.want != nil)
		}
	}
	// A failed order (the CA is unreachable) may be placed again, but not
	// at once. autocert keeps the failure a minute before it asks the
	// cache again, so ask the cache as it then will.
	cache := s.certManager.Cache
	if _, err := cache.Get(context.Background(), "new.tunnel.test"); !errors.Is(err, errOrderRetry) {
		t.Errorf("new again at once: got %v, want refused for a retry too soon", err)
	}
	now = now.Add(orderRetry)
	if _, err := cache.Get(context.Background(), "new.tunnel.test"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Errorf("new again later: got %v, want a cache miss (the order placed)", err)
	}
	now = now.Add(orderWindow)
	if _, err := s.getCertificate(hello("next")); errors.Is(err, errOrderBudget) {
		t.Errorf("a week later: got %v, want the order placed", err)
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
