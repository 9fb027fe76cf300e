package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/acme/autocert"
	"golang.org/x/net/idna"
)

// Several nodes, one cache (ACMEConfig.Cache and Lock): how a name is
// ordered once and renewed once. The package doc tells why it is done
// this way; what follows is the mechanics.

// maxLockWait bounds a first order's wait for the cluster lock, as
// autocert bounds the whole of GetCertificate.
const maxLockWait = 5 * time.Minute

// failedSkip is how long after a failed order a handshake for the name
// goes to autocert without the lock. autocert keeps a failed order's
// state for a minute (createCertRetryAfter) and answers every handshake
// from it without ordering, so the lock, a few etcd round trips, would
// guard nothing; half of that minute leaves a margin. failedCap bounds
// the memory of such names (held names only: the policy refuses others
// before any order).
const (
	failedSkip = 30 * time.Second
	failedCap  = 4096
)

// lockFirstOrder takes the cluster lock of the name hello asks for when
// the Manager may order it: the Manager does not hold its certificate and
// the shared cache has none either. Then autocert, called next, looks in
// the cache again, under the lock, and finds what another node stored
// meanwhile; or orders, and the others wait. The returned unlock is never
// nil; key is the certificate's cache key if the lock was taken. The lock
// is not taken for a name the host policy refuses (any SNI reaches the
// port: a scanner's names must not cost etcd round trips), for a name
// malformed in a way autocert refuses, nor for a name whose order just
// failed (failedSkip).
func (a *ACME) lockFirstOrder(hello *tls.ClientHelloInfo) (unlock func(), key string, err error) {
	nothing := func() {}
	host, key, ok := certKeyOf(hello)
	if !ok || a.cache.isLoaded(key) || a.failedRecently(key) {
		return nothing, "", nil
	}
	ctx := hello.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, maxLockWait)
	defer cancel()
	if a.policy != nil && a.policy(ctx, host) != nil {
		return nothing, "", nil // autocert refuses it again, and GetCertificate reports that
	}
	if data, err := a.cache.Cache.Get(ctx, key); err == nil && validCached(data, host, time.Now()) {
		return nothing, "", nil
	}
	unlock, err = a.lock(ctx, host)
	if err != nil {
		return nil, "", fmt.Errorf("certs: acme: %q: cluster lock: %w", host, err)
	}
	a.cache.takeMissed(key) // a stale note, from a renewal's read
	return unlock, key, nil
}

// afterLockedOrder follows autocert's GetCertificate under the first-order
// lock: if autocert went on to order key (its cache read missed, and the
// budget allowed) and holds no certificate now, the order failed, and
// autocert answers the name from that failure for a minute without
// ordering, so the lock is skipped meanwhile (failedSkip). A refusal by
// the policy or the budget leaves autocert no such state: the next
// handshake takes the lock again.
func (a *ACME) afterLockedOrder(key string) {
	if a.cache.takeMissed(key) && !a.cache.isLoaded(key) {
		a.failedMu.Lock()
		defer a.failedMu.Unlock()
		a.failed.Put(key, struct{}{}, time.Now())
	}
}

func (a *ACME) failedRecently(key string) bool {
	a.failedMu.Lock()
	defer a.failedMu.Unlock()
	_, ok := a.failed.Get(key, time.Now())
	return ok
}

// renewalLock takes the cluster lock of key's name when the Manager reads
// a certificate it already holds in memory: autocert does that only from
// its renewal timer, which orders a new certificate unless the cache holds
// one that is not due (renewal.go, domainRenewal.do). Under the lock the
// read that follows sees the certificate another node renewed meanwhile,
// which autocert then adopts; or the old one, and this node renews while
// the others wait. The lock is released when autocert's renewal ends (its
// context is cancelled on return, success or not), so a failed renewal
// frees it too.
//
// If the lock cannot be taken (etcd unreachable), it waits for the
// renewal's context to end (autocert gives it 10 minutes) and fails the
// read: autocert then tries its order with a dead context, which fails
// before the CA is contacted, and retries within the hour. A certificate
// is renewed a third of its lifetime before it expires (30 days for Let's
// Encrypt's), so an outage must last weeks before that costs anything,
// while renewing without the lock would order once per node each hour.
func (c *issuedCache) renewalLock(ctx context.Context, key string) error {
	if !c.isLoaded(key) {
		return nil
	}
	unlock, err := c.lock(ctx, hostOfKey(key))
	if err != nil {
		<-ctx.Done()
		return fmt.Errorf("certs: acme: renewal of %q: cluster lock: %w", key, err)
	}
	context.AfterFunc(ctx, unlock)
	return nil
}

// markMissed notes that autocert found no certificate for key and goes on
// to order it (the budget allowed); takeMissed reports and forgets that.
func (c *issuedCache) markMissed(key string) {
	if c.lock == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.missed[key] = struct{}{}
}

func (c *issuedCache) takeMissed(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.missed[key]
	delete(c.missed, key)
	return ok
}

func (c *issuedCache) isLoaded(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.loaded[key]
	return ok
}

// markLoaded notes that the Manager holds key's certificate in memory: it
// read a valid one from the cache, or stored one it ordered. autocert
// keeps a certificate it once held for the rest of its life, so the set
// only grows, as autocert's own state does.
func (c *issuedCache) markLoaded(key string) {
	if c.lock == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loaded[key] = struct{}{}
}

// hostOfKey is the name in a certificate's cache key.
func hostOfKey(key string) string { return strings.TrimSuffix(key, "+rsa") }

// validCached reports whether data, a certificate as autocert caches it
// (a PEM private key, then the chain), holds a leaf for host valid at now:
// what autocert would serve rather than order again. (autocert also checks
// that the key matches the leaf; a cache only it writes never fails that.)
func validCached(data []byte, host string, now time.Time) bool {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return false
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		leaf, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return false
		}
		return !now.Before(leaf.NotBefore) && now.Before(leaf.NotAfter) && leaf.VerifyHostname(host) == nil
	}
}

// certKeyOf returns the name hello asks for and autocert's cache key for
// its certificate, computed as autocert's GetCertificate does (an ASCII
// name, no final dot, "+rsa" for a client that cannot take ECDSA); false
// for a name autocert refuses outright.
func certKeyOf(hello *tls.ClientHelloInfo) (host, key string, ok bool) {
	name := hello.ServerName
	if name == "" || !strings.Contains(strings.Trim(name, "."), ".") {
		return "", "", false
	}
	name, err := idna.Lookup.ToASCII(name)
	if err != nil {
		return "", "", false
	}
	host = strings.TrimSuffix(name, ".")
	key = host
	if !acceptsECDSA(hello) {
		key += "+rsa"
	}
	return host, key, true
}

// acceptsECDSA is autocert's choice between an ECDSA and an RSA
// certificate: ECDSA if the client's signature schemes (when sent) list an
// ECDSA one, its curves (when sent) include P-256, and a cipher suite it
// offers is an ECDHE_ECDSA one. It must agree with autocert's, or the lock
// would guard the other key's order; TestCertKeyOf pins that down against
// what autocert stores.
func acceptsECDSA(hello *tls.ClientHelloInfo) bool {
	if hello.SignatureSchemes != nil && !anyOf(hello.SignatureSchemes,
		0x0203, tls.ECDSAWithP256AndSHA256, tls.ECDSAWithP384AndSHA384, tls.ECDSAWithP521AndSHA512) {
		return false
	}
	if hello.SupportedCurves != nil && !anyOf(hello.SupportedCurves, tls.CurveP256) {
		return false
	}
	return anyOf(hello.CipherSuites,
		tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305)
}

func anyOf[T comparable](have []T, want ...T) bool {
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}

var _ autocert.Cache = (*issuedCache)(nil)
