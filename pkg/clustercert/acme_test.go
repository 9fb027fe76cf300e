package clustercert_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/crypto/acme"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/pkg/certs"
	"github.com/tunnelhq/tunnel/pkg/clustercert"
	"github.com/tunnelhq/tunnel/pkg/name"
)

// domain is the apex in these tests: autocert wants two labels at least,
// and Pebble's DNS stub answers for any name.
const domain = "tunnel.localhost"

// names is the cluster's name table as certs sees it: name -> account.
type names map[string]string

func (n names) Account(label string) (string, bool) {
	acct, ok := n[label]
	return acct, ok
}

// policy allows the names in n, as the edge's host policy allows names
// tunnels hold; HTTP-01's Host carries a port, dropped here as the edge
// does.
func (n names) policy(_ context.Context, host string) error {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	label, err := name.FromHost(host, domain)
	if _, held := n[label]; err == nil && held {
		return nil
	}
	return fmt.Errorf("%q: %w", host, certs.ErrNotServed)
}

// node is one tunneld's certificates: ACME on the cluster's store, its
// own etcd client, and a TLS listener answering visitors and TLS-ALPN-01.
type node struct {
	acme *certs.ACME
	addr string // the TLS listener
}

// nodeLockTTL is the nodes' lock lease in these tests.
const nodeLockTTL = 60 * time.Second

// startNode runs a node whose TLS port is ln (nil: a free one), ordering
// from directory.
func startNode(t *testing.T, cli *clientv3.Client, directory string, pb *pebble, n names, ln net.Listener) *node {
	t.Helper()
	// A long TTL: a lock released by its holder is free at once, one
	// released by expiry would take this long.
	store, err := clustercert.New(clustercert.Config{Client: cli, LockTTL: nodeLockTTL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := &certs.ACMEConfig{DirectoryURL: directory}
	if pb != nil {
		cfg.RootCAs = pb.api
	}
	store.Configure(cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := certs.NewACME(cfg, domain, n.policy, n, nil, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if ln == nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	tlsLn := tls.NewListener(ln, &tls.Config{GetCertificate: a.GetCertificate, NextProtos: []string{"http/1.1", acme.ALPNProto}})
	testnet.ServeOn(t, tlsLn, func(c net.Conn) {
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), pebbleWait)
		defer cancel()
		c.(*tls.Conn).HandshakeContext(ctx)
	})
	return &node{acme: a, addr: ln.Addr().String()}
}

// TestCluster_OrderOnceServeEverywhere: three nodes sharing one etcd get
// handshakes for the same new name at once; Pebble receives exactly one
// order for it, and every node serves that certificate. Pebble validates
// TLS-ALPN-01 on node 0's port whichever node ordered, and a name ordered
// by node 2 alone is validated there too: a node answers a challenge
// another node's order wrote to etcd.
func TestCluster_OrderOnceServeEverywhere(t *testing.T) {
	t.Parallel() // each its own etcd and Pebble; mostly waiting on them
	cluster := etcdtest.Start(t, 3)
	challenge, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pb := startPebble(t, freePort(t), challenge.Addr().(*net.TCPAddr).Port)
	table := names{"wiki": "a", "docs": "b"}
	nodes := []*node{
		startNode(t, cluster.Client(), pb.directory, pb, table, challenge),
		startNode(t, cluster.Client(), pb.directory, pb, table, nil),
		startNode(t, cluster.Client(), pb.directory, pb, table, nil),
	}
	ctx, cancel := context.WithTimeout(context.Background(), pebbleWait)
	defer cancel()

	host := "wiki." + domain
	serials := make([]string, len(nodes))
	errs := make(chan error, len(nodes))
	began := time.Now()
	for i, n := range nodes {
		go func() {
			leaf, err := handshake(ctx, n.addr, host, pb.issuer)
			if err == nil {
				serials[i] = leaf.SerialNumber.String()
			}
			errs <- err
		}()
	}
	for range nodes {
		if err := <-errs; err != nil {
			t.Fatalf("handshake for %s: %v", host, err)
		}
	}
	t.Logf("three nodes served %s in %v", host, time.Since(began))
	if got := pb.orders(); got != 1 {
		t.Fatalf("Pebble received %d orders for %s, want exactly 1", got, host)
	}
	for i, s := range serials {
		if s != serials[0] {
			t.Fatalf("node %d served serial %s, node 0 %s: want one certificate everywhere", i, s, serials[0])
		}
	}
	// Again, from each node's memory now.
	for i, n := range nodes {
		leaf, err := handshake(ctx, n.addr, host, pb.issuer)
		if err != nil || leaf.SerialNumber.String() != serials[0] {
			t.Fatalf("node %d again: %v, %v; want serial %s", i, leaf.SerialNumber, err, serials[0])
		}
	}
	if got := pb.orders(); got != 1 {
		t.Fatalf("Pebble received %d orders for %s after more handshakes, want still 1", got, host)
	}

	// Node 2 orders alone; Pebble validates on node 0's port.
	docs := "docs." + domain
	if _, err := handshake(ctx, nodes[2].addr, docs, pb.issuer); err != nil {
		t.Fatalf("handshake for %s on node 2: %v", docs, err)
	}
	if got := pb.orders() - 1; got != 1 {
		t.Fatalf("Pebble received %d orders for %s, want 1 (TLS-ALPN-01 answered by node 0 at the first try)", got, docs)
	}
	if _, err := handshake(ctx, nodes[1].addr, docs, pb.issuer); err != nil {
		t.Fatalf("handshake for %s on node 1: %v", docs, err)
	}
	if got := pb.orders() - 1; got != 1 {
		t.Fatalf("Pebble received %d orders for %s after node 1 served it, want still 1", got, docs)
	}
}

// TestCluster_HTTP01AnsweredByAnotherNode: nobody answers TLS-ALPN-01
// (a load balancer holds 443), so autocert falls back to HTTP-01, and
// Pebble's request reaches node 1's plain-HTTP handler while node 0
// ordered: node 1 answers with the key authorization node 0 wrote to etcd.
func TestCluster_HTTP01AnsweredByAnotherNode(t *testing.T) {
	t.Parallel() // each its own etcd and Pebble; mostly waiting on them
	cluster := etcdtest.Start(t, 1)
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pb := startPebble(t, httpLn.Addr().(*net.TCPAddr).Port, freePort(t))
	table := names{"blog": "a"}
	orderer := startNode(t, cluster.Client(), pb.directory, pb, table, nil)
	orderer.acme.HTTPHandler(nil) // offer HTTP-01; this node's plain port is nowhere Pebble looks
	answerer := startNode(t, cluster.Client(), pb.directory, pb, table, nil)
	var answered atomic.Int32
	h := answerer.acme.HTTPHandler(http.NotFoundHandler())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answered.Add(1)
		h.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Serve(httpLn)
	}()
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})

	ctx, cancel := context.WithTimeout(context.Background(), pebbleWait)
	defer cancel()
	host := "blog." + domain
	if _, err := handshake(ctx, orderer.addr, host, pb.issuer); err != nil {
		t.Fatalf("handshake for %s: %v", host, err)
	}
	if answered.Load() == 0 {
		t.Fatal("the other node's HTTP-01 handler was never asked")
	}
	if _, err := handshake(ctx, answerer.addr, host, pb.issuer); err != nil {
		t.Fatalf("handshake for %s on the other node: %v", host, err)
	}
	// One order failed on TLS-ALPN-01, the next passed on HTTP-01; the
	// other node ordered none.
	if got := pb.orders(); got != 2 {
		t.Fatalf("Pebble received %d orders for %s, want 2 (TLS-ALPN-01 refused, then HTTP-01)", got, host)
	}
}

// TestCluster_LockReleasedWhenTheOrderFails: while a node orders, the
// name is locked cluster-wide; when its order fails (here the CA answers
// 403), the lock is released, not left to expire with its lease.
func TestCluster_LockReleasedWhenTheOrderFails(t *testing.T) {
	t.Parallel() // each its own etcd and Pebble; mostly waiting on them
	cluster := etcdtest.Start(t, 1)
	reached := make(chan struct{}, 1)
	fail := make(chan struct{})
	ca := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case reached <- struct{}{}:
		default:
		}
		<-fail
		http.Error(w, "refused", http.StatusForbidden) // not retried by the ACME client
	}))
	t.Cleanup(ca.Close)
	n := startNode(t, cluster.Client(), ca.URL+"/dir", nil, names{"wiki": "a"}, nil)
	other := clustercert.NewLocker(cluster.Client(), clustercert.DefaultPrefix+"lock/", 2*time.Second, 0)
	t.Cleanup(func() { other.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), pebbleWait)
	defer cancel()
	host := "wiki." + domain
	done := make(chan error, 1)
	go func() {
		_, err := handshake(ctx, n.addr, host, nil)
		done <- err
	}()
	select {
	case <-reached:
	case <-time.After(pebbleWait):
		t.Fatal("the node never contacted the CA")
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := other.Lock(short, host)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		close(fail)
		t.Fatalf("lock while the node orders: got %v, want to wait (the name locked)", err)
	}
	close(fail)
	if err := <-done; err == nil {
		t.Fatal("handshake succeeded against a failing CA")
	}
	short, cancelShort = context.WithTimeout(ctx, nodeLockTTL/4)
	defer cancelShort()
	unlock, err := other.Lock(short, host)
	if err != nil {
		t.Fatalf("lock after the failed order: %v, want it released (not left to its %v lease)", err, nodeLockTTL)
	}
	unlock()
}

// TestCluster_RenewOnce: three nodes hold a certificate that Pebble made
// short-lived; each node's autocert starts its renewal at about the same
// time (a third of the lifetime before the end), yet Pebble receives one
// renewal order, and every node then serves the renewed certificate: the
// first renews under the lock, the others read it from etcd and adopt it.
func TestCluster_RenewOnce(t *testing.T) {
	t.Parallel() // each its own etcd and Pebble; mostly waiting on them
	cluster := etcdtest.Start(t, 1)
	challenge, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Valid 21s: autocert renews from about 14s on, within a jitter of
	// 0.7s; the renewed certificate is due 14s later, time enough to look.
	pb := startPebbleValidity(t, freePort(t), challenge.Addr().(*net.TCPAddr).Port, 21*time.Second)
	table := names{"wiki": "a"}
	nodes := []*node{
		startNode(t, cluster.Client(), pb.directory, pb, table, challenge),
		startNode(t, cluster.Client(), pb.directory, pb, table, nil),
		startNode(t, cluster.Client(), pb.directory, pb, table, nil),
	}
	ctx, cancel := context.WithTimeout(context.Background(), pebbleWait)
	defer cancel()
	host := "wiki." + domain
	first, err := handshake(ctx, nodes[0].addr, host, pb.issuer)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes[1:] {
		if leaf, err := handshake(ctx, n.addr, host, pb.issuer); err != nil || !leaf.Equal(first) {
			t.Fatalf("node %d: %v; want the first certificate", i+1, err)
		}
	}
	t.Logf("certificate valid %v to %v", first.NotBefore.Format(time.TimeOnly), first.NotAfter.Format(time.TimeOnly))

	// Wait for each node to serve a renewed certificate (polling what a
	// visitor sees: autocert's timers are not ours to signal).
	var renewed *x509.Certificate
	for i, n := range nodes {
		for {
			leaf, err := handshake(ctx, n.addr, host, pb.issuer)
			if err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
			if !leaf.Equal(first) {
				if renewed == nil {
					renewed = leaf
					t.Logf("renewed at %v, valid to %v", time.Now().Format(time.TimeOnly), leaf.NotAfter.Format(time.TimeOnly))
				}
				if !leaf.Equal(renewed) {
					t.Fatalf("node %d serves serial %s, another %s: want one renewed certificate", i, leaf.SerialNumber, renewed.SerialNumber)
				}
				break
			}
			if time.Now().After(first.NotAfter) {
				t.Fatalf("node %d still serves the first certificate after it expired", i)
			}
			time.Sleep(100 * time.Millisecond) // polling what visitors see
		}
	}
	if time.Now().After(renewed.NotBefore.Add(renewed.NotAfter.Sub(renewed.NotBefore) * 2 / 3)) {
		t.Skip("too slow to count: the renewed certificate is due for renewal already")
	}
	if got := pb.orders(); got != 2 {
		t.Fatalf("Pebble received %d orders, want 2: the first, and one renewal for the three nodes", got)
	}
}
