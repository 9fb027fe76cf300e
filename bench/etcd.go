package main

import (
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// etcdCluster is the cluster phase's etcd: members running inside the
// harness's process, as internal/etcdtest runs them for the e2e tests
// (that package's API takes a testing.TB, which a main package has not).
// Short election timeouts and no fsync: the bench measures tunneld's use
// of etcd, not a disk.
type etcdCluster struct {
	dir     string
	conns   int // etcdTransportConns before the members started
	members []*embed.Etcd
	clients []string
}

// startEtcd starts n members on loopback and returns once all are ready.
func startEtcd(n int) (*etcdCluster, error) {
	dir, err := os.MkdirTemp("", "tunnel-bench-etcd-")
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	c := &etcdCluster{dir: dir, conns: etcdTransportConns()}
	type urls struct{ peer, client url.URL }
	var us []urls
	var initial []string
	for i := range n {
		var u urls
		if u.peer, err = freeLowURL(); err == nil {
			u.client, err = freeLowURL()
		}
		if err != nil {
			c.close()
			return nil, err
		}
		us = append(us, u)
		initial = append(initial, fmt.Sprintf("m%d=%s", i, u.peer.String()))
		c.clients = append(c.clients, u.client.String())
	}
	// Quorum needs the members together: start them all, then wait.
	for i, u := range us {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{u.peer}, []url.URL{u.peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{u.client}, []url.URL{u.client}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.ClusterState = embed.ClusterStateFlagNew
		cfg.TickMs, cfg.ElectionMs = 100, 1000
		cfg.UnsafeNoFsync = true
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			c.close()
			return nil, fmt.Errorf("etcd: start %s: %w", cfg.Name, err)
		}
		c.members = append(c.members, e)
	}
	for i, e := range c.members {
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			c.close()
			return nil, fmt.Errorf("etcd: m%d: %w", i, err)
		case <-time.After(30 * time.Second):
			c.close()
			return nil, fmt.Errorf("etcd: m%d not ready after 30s", i)
		}
	}
	return c, nil
}

// close stops every member and removes their data; safe twice.
func (c *etcdCluster) close() {
	for _, e := range c.members {
		e.Close()
	}
	c.members = nil
	// etcd's raft transport leaves keep-alive connections between the
	// members that close a few seconds after they stop: wait (bounded),
	// so that the smoke test's leak check does not report them.
	for deadline := time.Now().Add(10 * time.Second); etcdTransportConns() > c.conns && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond) // nothing to signal on
	}
	if c.dir != "" {
		os.RemoveAll(c.dir)
		c.dir = ""
	}
}

// freeLowURL returns a loopback URL on a port that was free a moment ago,
// drawn below the kernel's ephemeral range as internal/etcdtest does: no
// outgoing connection (the bench makes thousands) can take it before the
// member binds it.
func freeLowURL() (url.URL, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				low = n
			}
		}
	}
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
	return url.URL{}, fmt.Errorf("etcd: no free port below the ephemeral range")
}

// etcdTransportConns counts the goroutines serving HTTP client connections, the
// kind etcd's raft transport leaves behind for a few seconds.
func etcdTransportConns() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "net/http.(*persistConn)")
		}
		buf = make([]byte, 2*len(buf))
	}
}
