package clustercert

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/crypto/acme/autocert"
)

// MaxValueSize bounds what the cache stores under one key. autocert's
// values are an account key (about 250 bytes), a certificate's key and
// chain in PEM (a few KiB), a TLS-ALPN-01 challenge certificate and an
// HTTP-01 key authorization (under 100 bytes); etcd's default request
// limit is 1.5 MiB. A larger value is a mistake, refused before it reaches
// etcd.
const MaxValueSize = 64 << 10

// maxKeySize bounds a cache key: autocert's keys are a DNS name (at most
// 253 bytes) with a short suffix, or a token (43 bytes) with "+http-01".
const maxKeySize = 300

// opTimeout bounds each etcd round trip of the cache, whatever the
// caller's context: autocert deletes challenge tokens with
// context.Background() while it holds the lock every TLS-ALPN-01
// handshake of the node takes.
const opTimeout = 10 * time.Second

// tokenTTL is how long a challenge token (an HTTP-01 key authorization, a
// TLS-ALPN-01 certificate) lives in etcd at most. autocert deletes it once
// the challenge is done; the lease removes it if the node that wrote it
// died first. A CA validates within minutes.
const tokenTTL = time.Hour

// accountKey is autocert's cache key for the ACME account's private key.
const accountKey = "acme_account+key"

// Cache is an autocert.Cache in etcd, under a prefix: every node reads the
// account key, the certificates and the challenge tokens any node wrote.
// Safe for concurrent use; it owns no goroutine and needs no Close (the
// etcd client is the caller's).
type Cache struct {
	cli    *clientv3.Client
	prefix string // ends in "/"
}

var _ autocert.Cache = (*Cache)(nil)

// NewCache returns the cache of autocert's data under prefix (a "/" is
// added if missing) in the etcd that cli reaches. It contacts nothing.
func NewCache(cli *clientv3.Client, prefix string) *Cache {
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return &Cache{cli: cli, prefix: prefix}
}

func checkKey(key string) error {
	if key == "" || len(key) > maxKeySize || strings.ContainsAny(key, "/\x00") {
		return fmt.Errorf("clustercert: cache key %.40q: empty, longer than %d bytes, or with a / or NUL", key, maxKeySize)
	}
	return nil
}

// isToken reports whether key is a challenge token's: autocert's
// TLS-ALPN-01 certificates end in "+token", HTTP-01 key authorizations in
// "+http-01".
func isToken(key string) bool {
	return strings.HasSuffix(key, "+token") || strings.HasSuffix(key, "+http-01")
}

// Get returns the value stored under key, or autocert.ErrCacheMiss itself
// (not wrapped: autocert compares with ==) when there is none.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.prefix+key)
	if err != nil {
		return nil, fmt.Errorf("clustercert: get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, autocert.ErrCacheMiss
	}
	return resp.Kvs[0].Value, nil
}

// Put stores data under key. Challenge tokens are stored on a lease of
// tokenTTL, so that a node dying mid-order leaves none behind for long.
// The account key is stored only if there is none yet: the first node to
// register keeps the cluster's account, and a node that raced it keeps
// using its own key until it restarts (an unused account at the CA, no
// harm).
func (c *Cache) Put(ctx context.Context, key string, data []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if len(data) > MaxValueSize {
		return fmt.Errorf("clustercert: put %s: %d bytes, more than %d", key, len(data), MaxValueSize)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	k := c.prefix + key
	var err error
	switch {
	case key == accountKey:
		_, err = c.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, string(data))).Commit()
	case isToken(key):
		var lease *clientv3.LeaseGrantResponse
		lease, err = c.cli.Grant(ctx, int64(tokenTTL/time.Second))
		if err == nil {
			_, err = c.cli.Put(ctx, k, string(data), clientv3.WithLease(lease.ID))
		}
	default:
		_, err = c.cli.Put(ctx, k, string(data))
	}
	if err != nil {
		return fmt.Errorf("clustercert: put %s: %w", key, err)
	}
	return nil
}

// Delete removes key; a key that is not there is no error.
func (c *Cache) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if _, err := c.cli.Delete(ctx, c.prefix+key); err != nil {
		return fmt.Errorf("clustercert: delete %s: %w", key, err)
	}
	return nil
}

// errClosed is returned by a Locker's Lock after Close.
var errClosed = errors.New("clustercert: locker closed")
