package clustercert_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/pkg/clustercert"
)

// TestCache_RoundTrip: what one node puts, another reads; a key that is
// not there is autocert.ErrCacheMiss itself (autocert compares with ==);
// challenge tokens live on a lease; the first account key stays; values
// and keys are bounded.
func TestCache_RoundTrip(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := clustercert.NewCache(cluster.Client(), "/test/cache")
	b := clustercert.NewCache(cluster.Client(), "/test/cache/")

	if _, err := b.Get(ctx, "wiki.tunnel.test"); err != autocert.ErrCacheMiss {
		t.Fatalf("get before put: got %v, want autocert.ErrCacheMiss itself", err)
	}
	cert := bytes.Repeat([]byte("pem "), 1000)
	if err := a.Put(ctx, "wiki.tunnel.test", cert); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, "wiki.tunnel.test"); err != nil || !bytes.Equal(got, cert) {
		t.Fatalf("get on the other node: got %d bytes, %v; want what was put", len(got), err)
	}
	if err := b.Delete(ctx, "wiki.tunnel.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(ctx, "wiki.tunnel.test"); err != autocert.ErrCacheMiss {
		t.Fatalf("get after delete: got %v, want autocert.ErrCacheMiss", err)
	}
	if err := a.Delete(ctx, "wiki.tunnel.test"); err != nil {
		t.Fatalf("delete of a missing key: %v, want no error", err)
	}

	// Tokens on a lease; certificates not.
	cli := cluster.Client()
	for _, tt := range []struct {
		key    string
		leased bool
	}{
		{"wiki.tunnel.test+token", true},
		{"Jdy3TaxD0Uo5XoSf0pwSAXEq2Ba9ZgqjzB0U6hRRqxI+http-01", true},
		{"wiki.tunnel.test+rsa", false},
	} {
		if err := a.Put(ctx, tt.key, []byte("x")); err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Get(ctx, "/test/cache/"+tt.key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("%s in etcd: %v, %v", tt.key, resp, err)
		}
		if got := resp.Kvs[0].Lease != 0; got != tt.leased {
			t.Errorf("%s: on a lease %v, want %v", tt.key, got, tt.leased)
		}
	}

	// The cluster keeps the first account key.
	if err := a.Put(ctx, "acme_account+key", []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "acme_account+key", []byte("second")); err != nil {
		t.Fatalf("second account key: %v, want no error (ignored)", err)
	}
	if got, err := b.Get(ctx, "acme_account+key"); err != nil || string(got) != "first" {
		t.Fatalf("account key: got %q, %v; want the first", got, err)
	}

	for _, tt := range []struct {
		name string
		key  string
		size int
	}{
		{"too large", "big.tunnel.test", clustercert.MaxValueSize + 1},
		{"empty key", "", 1},
		{"slash", "../escape", 1},
		{"long key", strings.Repeat("a", 301), 1},
	} {
		if err := a.Put(ctx, tt.key, make([]byte, tt.size)); err == nil {
			t.Errorf("%s: put accepted, want refused", tt.name)
		}
	}
	if err := a.Put(ctx, "max.tunnel.test", make([]byte, clustercert.MaxValueSize)); err != nil {
		t.Errorf("a value of MaxValueSize: %v, want stored", err)
	}
}
