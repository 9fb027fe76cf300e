package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/tunnelhq/tunnel/internal/testtls"
)

// memCache is an autocert.Cache in a map. Not safe for concurrent use
// beyond what these tests do (nothing concurrent).
type memCache map[string][]byte

func (c memCache) Get(_ context.Context, key string) ([]byte, error) {
	if v, ok := c[key]; ok {
		return v, nil
	}
	return nil, autocert.ErrCacheMiss
}
func (c memCache) Put(_ context.Context, key string, data []byte) error { c[key] = data; return nil }
func (c memCache) Delete(_ context.Context, key string) error           { delete(c, key); return nil }

func nopLock(context.Context, string) (func(), error) { return func() {}, nil }

// firstGet is a cache that records the first key autocert asks for: the
// certificate's, before anything else.
type firstGet struct {
	mu    sync.Mutex
	first string
}

func (c *firstGet) Get(_ context.Context, key string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first == "" {
		c.first = key
	}
	return nil, autocert.ErrCacheMiss
}
func (c *firstGet) Put(context.Context, string, []byte) error { return nil }
func (c *firstGet) Delete(context.Context, string) error      { return nil }

// TestCertKeyOf: the cache key certKeyOf computes is the one autocert
// itself asks its cache for, for clients that take ECDSA and clients that
// do not, and names autocert normalises; otherwise the cluster lock would
// guard another key's order than the one placed.
func TestCertKeyOf(t *testing.T) {
	ecdsaSuite := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
	rsaSuite := []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
	for _, tt := range []struct {
		name  string
		hello tls.ClientHelloInfo
		want  string
	}{
		{"ecdsa", tls.ClientHelloInfo{ServerName: "wiki.tunnel.test", CipherSuites: ecdsaSuite}, "wiki.tunnel.test"},
		{"rsa suites only", tls.ClientHelloInfo{ServerName: "wiki.tunnel.test", CipherSuites: rsaSuite}, "wiki.tunnel.test+rsa"},
		{"no ecdsa signature scheme", tls.ClientHelloInfo{ServerName: "wiki.tunnel.test", CipherSuites: ecdsaSuite,
			SignatureSchemes: []tls.SignatureScheme{tls.PSSWithSHA256}}, "wiki.tunnel.test+rsa"},
		{"ecdsa signature scheme", tls.ClientHelloInfo{ServerName: "wiki.tunnel.test", CipherSuites: ecdsaSuite,
			SignatureSchemes: []tls.SignatureScheme{tls.PSSWithSHA256, tls.ECDSAWithP384AndSHA384}}, "wiki.tunnel.test"},
		{"no P-256", tls.ClientHelloInfo{ServerName: "wiki.tunnel.test", CipherSuites: ecdsaSuite,
			SupportedCurves: []tls.CurveID{tls.X25519}}, "wiki.tunnel.test+rsa"},
		{"P-256", tls.ClientHelloInfo{ServerName: "wiki.tunnel.test", CipherSuites: ecdsaSuite,
			SupportedCurves: []tls.CurveID{tls.X25519, tls.CurveP256}}, "wiki.tunnel.test"},
		{"upper case, final dot", tls.ClientHelloInfo{ServerName: "WIKI.Tunnel.Test.", CipherSuites: ecdsaSuite}, "wiki.tunnel.test"},
		{"unicode", tls.ClientHelloInfo{ServerName: "bücher.tunnel.test", CipherSuites: ecdsaSuite}, "xn--bcher-kva.tunnel.test"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, key, ok := certKeyOf(&tt.hello)
			if !ok || key != tt.want {
				t.Fatalf("certKeyOf: got %q, %v; want %q", key, ok, tt.want)
			}
			// What autocert asks for first; its order then fails on the
			// network (nobody listens on port 1).
			cache := &firstGet{}
			m := &autocert.Manager{Prompt: autocert.AcceptTOS, Cache: cache,
				Client: &acme.Client{DirectoryURL: "https://127.0.0.1:1/dir"}}
			hello := tt.hello
			if _, err := m.GetCertificate(&hello); err == nil {
				t.Fatal("autocert got a certificate from nowhere")
			}
			if cache.first != tt.want {
				t.Fatalf("autocert asked its cache for %q first, certKeyOf says %q", cache.first, key)
			}
		})
	}
	for _, bad := range []string{"", "localhost", "bad\x00name.tunnel.test"} {
		if _, _, ok := certKeyOf(&tls.ClientHelloInfo{ServerName: bad}); ok {
			t.Errorf("certKeyOf(%q): ok, want refused as autocert refuses it", bad)
		}
	}
}

// TestValidCached: what the first-order check takes for a certificate in
// the cache is what autocert would serve: a leaf for the name, not expired.
func TestValidCached(t *testing.T) {
	ca := testtls.NewCA(t)
	pemOf := func(c tls.Certificate) []byte { return append(testtls.KeyPEM(t, c), testtls.CertPEM(c)...) }
	good := pemOf(ca.Issue(t, "wiki.tunnel.test"))
	now := time.Now()
	for _, tt := range []struct {
		name string
		data []byte
		host string
		want bool
	}{
		{"valid", good, "wiki.tunnel.test", true},
		{"another name", good, "blog.tunnel.test", false},
		{"expired", pemOf(ca.IssueFor(t, -time.Minute, "wiki.tunnel.test")), "wiki.tunnel.test", false},
		{"key only", testtls.KeyPEM(t, ca.Issue(t, "wiki.tunnel.test")), "wiki.tunnel.test", false},
		{"garbage", []byte("not pem"), "wiki.tunnel.test", false},
	} {
		if got := validCached(tt.data, tt.host, now); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestACME_ClusterLock: with a shared cache and a lock, a name the cache
// holds is served without the lock; a new name is ordered only under it,
// so a lock that cannot be taken means no order (the budget untouched,
// the CA not contacted); a refused name costs no lock; and a renewal's
// read of a certificate the Manager holds waits for the lock, and when
// the lock cannot be had, for the renewal's context to end, so that
// autocert's order that follows dies before reaching the CA.
func TestACME_ClusterLock(t *testing.T) {
	const domain = "tunnel.test"
	cache := memCache{}
	var mu sync.Mutex
	var locked []string
	lockErr := context.DeadlineExceeded
	lock := func(ctx context.Context, name string) (func(), error) {
		mu.Lock()
		defer mu.Unlock()
		locked = append(locked, name)
		return nil, lockErr
	}
	names := owners{"cached": "a", "new": "a"}
	cfg := &ACMEConfig{Cache: cache, Lock: lock, DirectoryURL: "https://127.0.0.1:1/dir"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := NewACME(cfg, domain, names.policy(domain), names, nil, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	cert := testtls.NewCA(t).Issue(t, "cached.tunnel.test")
	cache["cached.tunnel.test"] = append(testtls.KeyPEM(t, cert), testtls.CertPEM(cert)...)
	hello := func(name string) *tls.ClientHelloInfo {
		return &tls.ClientHelloInfo{ServerName: name + ".tunnel.test", CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
	}

	if _, err := a.GetCertificate(hello("cached")); err != nil {
		t.Fatalf("cached: %v", err)
	}
	if _, err := a.GetCertificate(hello("new")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("new, the lock not taken: got %v, want the lock's error", err)
	}
	if _, err := a.GetCertificate(hello("nobody")); !errors.Is(err, ErrNotServed) {
		t.Fatalf("nobody: got %v, want refused by the policy", err)
	}
	mu.Lock()
	if len(locked) != 1 || locked[0] != "new.tunnel.test" {
		t.Errorf("locks asked for: %q, want only new.tunnel.test", locked)
	}
	locked = nil
	mu.Unlock()
	if n := len(a.budget.orders); n != 0 {
		t.Errorf("budget: %d orders counted, want none (nothing was ordered)", n)
	}

	// The renewal's read: the Manager holds cached.tunnel.test now.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	if _, err := a.manager.Cache.Get(ctx, "cached.tunnel.test"); err == nil {
		t.Fatal("renewal read without the lock: got the certificate, want an error (autocert would order)")
	}
	if ctx.Err() == nil {
		t.Fatalf("renewal read returned after %v, before its context ended", time.Since(began))
	}

	// With the lock, the read goes through and the lock is released when
	// the renewal's context ends.
	released := make(chan struct{})
	lockFn := func(ctx context.Context, name string) (func(), error) {
		return func() { close(released) }, nil
	}
	a.cache.lock = lockFn
	ctx2, cancel2 := context.WithCancel(context.Background())
	if _, err := a.manager.Cache.Get(ctx2, "cached.tunnel.test"); err != nil {
		t.Fatalf("renewal read under the lock: %v", err)
	}
	select {
	case <-released:
		t.Fatal("lock released before the renewal ended")
	default:
	}
	cancel2()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("lock not released when the renewal's context ended")
	}
}

// TestACME_ClusterLockSkippedAfterAFailedOrder: a handshake whose order
// fails (the CA unreachable) leaves autocert answering the name from that
// failure for a minute, so the next handshakes skip the lock for a while;
// a refusal by the budget leaves no such failure, and the next handshake
// takes the lock again.
func TestACME_ClusterLockSkippedAfterAFailedOrder(t *testing.T) {
	const domain = "tunnel.test"
	var mu sync.Mutex
	locks := map[string]int{}
	lock := func(_ context.Context, name string) (func(), error) {
		mu.Lock()
		defer mu.Unlock()
		locks[name]++
		return func() {}, nil
	}
	names := owners{"new": "a", "over": "a"}
	cfg := &ACMEConfig{Cache: memCache{}, Lock: lock, DirectoryURL: "https://127.0.0.1:1/dir", OrdersPerOwnerPerWeek: 1}
	a, err := NewACME(cfg, domain, names.policy(domain), names, nil, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	hello := func(name string) *tls.ClientHelloInfo {
		return &tls.ClientHelloInfo{ServerName: name + ".tunnel.test", CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
	}
	for range 3 {
		if _, err := a.GetCertificate(hello("new")); err == nil {
			t.Fatal("new: got a certificate from an unreachable CA")
		}
		if _, err := a.GetCertificate(hello("over")); !errors.Is(err, ErrOrderBudget) {
			t.Fatalf("over: got %v, want refused for a's budget of 1", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if locks["new.tunnel.test"] != 1 || locks["over.tunnel.test"] != 3 {
		t.Fatalf("locks taken: %v; want new.tunnel.test once (then its failure answers), over.tunnel.test 3 times", locks)
	}
}
