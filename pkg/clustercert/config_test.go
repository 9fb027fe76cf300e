package clustercert_test

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tunnelhq/tunnel/pkg/certs"
	"github.com/tunnelhq/tunnel/pkg/clustercert"
)

func TestConfig_Validate(t *testing.T) {
	cli := &clientv3.Client{} // never used: Validate and New contact nothing
	for _, tt := range []struct {
		name string
		cfg  clustercert.Config
		ok   bool
	}{
		{"defaults", clustercert.Config{Client: cli}, true},
		{"all set", clustercert.Config{Client: cli, Prefix: "/x/", LockTTL: 5 * time.Second, LockWait: time.Minute}, true},
		{"no client", clustercert.Config{}, false},
		{"relative prefix", clustercert.Config{Client: cli, Prefix: "x/"}, false},
		{"TTL under 2s", clustercert.Config{Client: cli, LockTTL: time.Second}, false},
		{"negative wait", clustercert.Config{Client: cli, LockWait: -time.Second}, false},
	} {
		err := tt.cfg.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: got %v, want ok %v", tt.name, err, tt.ok)
		}
		if _, nerr := clustercert.New(tt.cfg); (nerr == nil) != tt.ok {
			t.Errorf("%s: New: got %v, want ok %v", tt.name, nerr, tt.ok)
		}
	}
}

// TestStore_Configure: one call gives ACME the shared cache, the lock and
// the budget's record, and the configuration is then valid without a
// cache directory.
func TestStore_Configure(t *testing.T) {
	store, err := clustercert.New(clustercert.Config{Client: &clientv3.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var cfg certs.ACMEConfig
	store.Configure(&cfg)
	if cfg.Cache != store.Cache() || cfg.Lock == nil || cfg.OrderLog != store.OrderLog() {
		t.Fatalf("got cache %v, lock set %v, order log %v; want the store's", cfg.Cache, cfg.Lock != nil, cfg.OrderLog)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("configured: %v, want valid", err)
	}
}
