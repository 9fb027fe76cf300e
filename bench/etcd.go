package main

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
)

// etcdCluster is the cluster phase's etcd: members running inside the
// harness's process, configured and placed on ports as internal/etcdtest
// does for the e2e tests (its Cluster takes a testing.TB, which a main
// package has not, so this keeps only the start and stop).
// Short election timeouts and no fsync: the bench measures tunneld's use
// of etcd, not a disk.
type etcdCluster struct {
	dir     string
	conns   int // etcdtest.TransportConns before the members started
	members []*embed.Etcd
	clients []string
}

// startEtcd starts n members on loopback and returns once all are ready.
func startEtcd(n int) (*etcdCluster, error) {
	dir, err := os.MkdirTemp("", "tunnel-bench-etcd-")
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	c := &etcdCluster{dir: dir, conns: etcdtest.TransportConns()}
	type urls struct{ peer, client url.URL }
	var us []urls
	var initial []string
	for i := range n {
		var u urls
		if u.peer, err = etcdtest.FreeURL(); err == nil {
			u.client, err = etcdtest.FreeURL()
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
		name := fmt.Sprintf("m%d", i)
		cfg := etcdtest.MemberConfig(name, filepath.Join(dir, name), u.peer, u.client,
			strings.Join(initial, ","), embed.ClusterStateFlagNew)
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
	etcdtest.WaitTransportQuiet(c.conns)
	if c.dir != "" {
		os.RemoveAll(c.dir)
		c.dir = ""
	}
}
