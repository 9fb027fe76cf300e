package etcdtest_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
)

// Three members agree on a claim, keep serving with one of them stopped,
// refuse writes without quorum and take them again once it is back.
func TestCluster_QuorumComesAndGoes(t *testing.T) {
	c := etcdtest.Start(t, 3)
	cli := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	claim := func(k string) bool {
		t.Helper()
		r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, "a")).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return r.Succeeded
	}
	if !claim("/n/wiki") {
		t.Fatal("first claim failed")
	}
	if claim("/n/wiki") {
		t.Fatal("second claim of the same key succeeded")
	}

	c.Stop(2)
	if !claim("/n/blog") {
		t.Fatal("claim with two of three members failed")
	}

	c.Stop(1)
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	_, err := cli.Put(short, "/n/x", "y")
	cancelShort()
	if err == nil {
		t.Fatal("a write without quorum succeeded")
	}

	c.Restart(1)
	c.Restart(2)
	c.WaitReady()
	if !claim("/n/after") {
		t.Fatal("claim after quorum returned failed")
	}
}

// A test that fails while the cluster has no quorum still ends: the
// cleanup stops the member left alone.
func TestCluster_StopsWithoutQuorum(t *testing.T) {
	c := etcdtest.Start(t, 3)
	c.Stop(1)
	c.Stop(2)
}
