// Package etcdtest runs real etcd members inside a test process, for the
// cluster tests: go.etcd.io/etcd/server/v3/embed, loopback ports, short
// election timeouts and no fsync, so three members are ready in about a
// second. Members can be stopped and started again on the same data, which
// is how the tests take quorum away and give it back. Tests only.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// readyTimeout bounds how long a member may take to join its cluster.
const readyTimeout = 30 * time.Second

// Cluster is a set of etcd members running in this process. Its methods
// are safe for concurrent use; the test's cleanup stops every member.
type Cluster struct {
	t       testing.TB
	mu      sync.Mutex
	members []*member
	initial string // the --initial-cluster value naming every member
	// baseConns is TransportConns before the members started: what stopAll
	// waits to return to.
	baseConns int
}

type member struct {
	name      string
	dir       string
	peerURL   url.URL
	clientURL url.URL
	etcd      *embed.Etcd // nil while stopped
}

// Start runs an etcd cluster of n members and returns once all of them
// are ready. The test's cleanup stops them.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, baseConns: TransportConns()}
	base := t.TempDir()
	var initial []string
	for i := range n {
		m := &member{
			name:      fmt.Sprintf("m%d", i),
			dir:       filepath.Join(base, fmt.Sprintf("m%d", i)),
			peerURL:   freeURL(t),
			clientURL: freeURL(t),
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL.String())
	}
	c.initial = strings.Join(initial, ",")
	t.Cleanup(c.stopAll)

	// Quorum needs the members together: start them all, then wait.
	for _, m := range c.members {
		if err := c.launch(m, embed.ClusterStateFlagNew); err != nil {
			t.Fatalf("etcdtest: start %s: %v", m.name, err)
		}
	}
	for _, m := range c.members {
		if err := waitReady(m.etcd); err != nil {
			t.Fatalf("etcdtest: %s: %v", m.name, err)
		}
	}
	return c
}

// freeURL is FreeURL for a test.
func freeURL(t testing.TB) url.URL {
	t.Helper()
	u, err := FreeURL()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// FreeURL returns a loopback URL on a port that was free a moment ago.
// The port is drawn below the kernel's ephemeral range, where no listener
// on port 0 and no outgoing connection takes one: a member that cannot
// bind its port fails to start, and a member left alone without its
// cluster's quorum cannot be stopped (embed's Close waits for it), so
// the ports must not be taken by the time the members bind them. The
// bench's cluster phase uses it too.
func FreeURL() (url.URL, error) {
	low := ephemeralLow()
	for range 100 {
		port := 10000 + mrand.IntN(low-10000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		ln.Close()
		return url.URL{Scheme: "http", Host: addr}, nil
	}
	return url.URL{}, errors.New("etcdtest: no free port below the ephemeral range")
}

// ephemeralLow is the lowest port the kernel hands out on its own
// (net.ipv4.ip_local_port_range); Linux's default is 32768.
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				low = n
			}
		}
	}
	return low
}

// MemberConfig is the configuration of one fast member: loopback URLs,
// TickMs 100, ElectionMs 1000, no fsync, no log. initial names every
// member (--initial-cluster); state is embed.ClusterStateFlagNew or
// ClusterStateFlagExisting.
func MemberConfig(name, dir string, peer, client url.URL, initial, state string) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.InitialCluster = initial
	cfg.ClusterState = state
	cfg.TickMs = 100
	cfg.ElectionMs = 1000
	cfg.UnsafeNoFsync = true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	return cfg
}

func (c *Cluster) launch(m *member, state string) error {
	e, err := embed.StartEtcd(MemberConfig(m.name, m.dir, m.peerURL, m.clientURL, c.initial, state))
	if err != nil {
		return err
	}
	m.etcd = e
	return nil
}

func waitReady(e *embed.Etcd) error {
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return err
	case <-e.Server.StopNotify():
		return fmt.Errorf("stopped before it was ready")
	case <-time.After(readyTimeout):
		return fmt.Errorf("not ready after %s", readyTimeout)
	}
}

// Endpoints returns the client URLs of every member, running or not, as
// an etcd client takes them.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL.String())
	}
	return eps
}

// Endpoint returns member i's client URL.
func (c *Cluster) Endpoint(i int) string { return c.members[i].clientURL.String() }

// Stop stops member i. Stopping a majority takes the cluster's quorum
// away; Restart gives it back.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.etcd != nil {
		m.etcd.Close()
		m.etcd = nil
	}
}

// Restart starts a stopped member i again on its data. It does not wait
// for it to be ready: a member alone in a cluster without quorum never is.
// Use WaitReady once enough members run.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.etcd != nil {
		return
	}
	if err := c.launch(m, embed.ClusterStateFlagExisting); err != nil {
		c.t.Fatalf("etcdtest: restart %s: %v", m.name, err)
	}
}

// WaitReady waits until every running member is ready.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	c.mu.Lock()
	var running []*member
	for _, m := range c.members {
		if m.etcd != nil {
			running = append(running, m)
		}
	}
	c.mu.Unlock()
	for _, m := range running {
		if err := waitReady(m.etcd); err != nil {
			c.t.Fatalf("etcdtest: %s: %v", m.name, err)
		}
	}
}

// Client returns a client of the whole cluster, closed at the test's end.
func (c *Cluster) Client() *clientv3.Client {
	c.t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		c.t.Fatalf("etcdtest: client: %v", err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// Put writes key=value, failing the test on error. A helper for tests that
// prepare the store.
func (c *Cluster) Put(key, value string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Client().Put(ctx, key, value); err != nil {
		c.t.Fatalf("etcdtest: put %s: %v", key, err)
	}
}

// stopAll stops every member, then waits (at most quietTimeout) for the
// peers' HTTP connections to end: etcd's raft transport leaves keep-alive
// connections between members that close about three seconds after the
// members stop, and a goleak check run before then would report them.
func (c *Cluster) stopAll() {
	for i := range c.members {
		c.Stop(i)
	}
	WaitTransportQuiet(c.baseConns)
}

// WaitTransportQuiet waits, at most quietTimeout, until TransportConns is
// back to base (its value before the members started).
func WaitTransportQuiet(base int) {
	deadline := time.Now().Add(quietTimeout)
	for TransportConns() > base && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // nothing to signal on
	}
}

// quietTimeout bounds stopAll's wait for the members' connections to end.
const quietTimeout = 10 * time.Second

// TransportConns counts the goroutines serving HTTP client connections,
// the kind etcd's raft transport leaves behind for a few seconds.
func TransportConns() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "net/http.(*persistConn)")
		}
		buf = make([]byte, 2*len(buf))
	}
}
