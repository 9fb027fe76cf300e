package clustercert_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/pkg/certs"
	"github.com/tunnelhq/tunnel/pkg/clustercert"
)

// TestOrderLog_ConcurrentUpdates: updates from several nodes at once are
// all kept (compare-and-swap, retried); an update its function refuses
// stores nothing and returns that error; a record that cannot be decoded
// is started over rather than blocking every order.
func TestOrderLog_ConcurrentUpdates(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	logs := []*clustercert.OrderLog{
		clustercert.NewOrderLog(cluster.Client(), "/test/orders"),
		clustercert.NewOrderLog(cluster.Client(), "/test/orders"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- logs[i%2].Update(ctx, func(o []certs.Order) ([]certs.Order, error) {
				return append(o, certs.Order{Key: fmt.Sprintf("n%d.tunnel.test", i), Account: "a"}), nil
			})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	stored := func() []certs.Order {
		t.Helper()
		var got []certs.Order
		refuse := errors.New("just looking")
		if err := logs[0].Update(ctx, func(o []certs.Order) ([]certs.Order, error) {
			got = o
			return nil, refuse
		}); err != refuse {
			t.Fatalf("a refused update: got %v, want the function's error as is", err)
		}
		return got
	}
	if got := stored(); len(got) != n {
		t.Fatalf("got %d orders stored, want %d: %v", len(got), n, got)
	}
	if got := stored(); len(got) != n {
		t.Fatalf("after a refused update: %d orders, want still %d", len(got), n)
	}
	cluster.Put("/test/orders", "{not json")
	if got := stored(); len(got) != 0 {
		t.Fatalf("an unreadable record: got %v, want to start over", got)
	}
}

// TestCluster_OrderBudgetIsTheClusters: with Store.Configure, an order
// placed by one node counts against the weekly budget on every node; the
// CA is unreachable here, so an allowed order fails on the network
// instead: what matters is which are refused for the budget.
func TestCluster_OrderBudgetIsTheClusters(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	table := names{"one": "a", "two": "b"}
	node := func() *certs.ACME {
		store, err := clustercert.New(clustercert.Config{Client: cluster.Client(), LockTTL: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		cfg := &certs.ACMEConfig{DirectoryURL: "https://127.0.0.1:1/dir", OrdersPerWeek: 1}
		store.Configure(cfg)
		a, err := certs.NewACME(cfg, domain, table.policy, table, nil, zerolog.New(zerolog.NewTestWriter(t)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	a, b := node(), node()
	hello := func(label string) *tls.ClientHelloInfo {
		return &tls.ClientHelloInfo{ServerName: label + "." + domain, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
	}
	if _, err := a.GetCertificate(hello("one")); err == nil || errors.Is(err, certs.ErrOrderBudget) {
		t.Fatalf("first order, on node a: got %v, want placed (and failed on the network)", err)
	}
	if _, err := b.GetCertificate(hello("two")); !errors.Is(err, certs.ErrOrderBudget) {
		t.Fatalf("second order, on node b: got %v, want refused for the cluster's budget of 1", err)
	}
	if _, err := b.GetCertificate(hello("one")); !errors.Is(err, certs.ErrOrderRetry) {
		t.Fatalf("node a's failed order again, on node b: got %v, want refused as a retry too soon", err)
	}
}
