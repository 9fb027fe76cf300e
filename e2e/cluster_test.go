package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
)

// TestProcess_TunneldJoinsCluster: tunneld with --cluster-etcd registers
// its node and its clients' names in etcd, serves them, puts them on hold
// when the client leaves, and leaves the cluster when it stops.
func TestProcess_TunneldJoinsCluster(t *testing.T) {
	e := etcdtest.Start(t, 1)
	link := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tunneld, addr, certs := startDevTunneld(t, nil, "--cluster-etcd", strings.Join(e.Endpoints(), ","),
		"--cluster-node", "n1", "--cluster-listen", link, "--cluster-secret-file", newSecretFile(t))
	backendPort := newBackend(t, "hello from the backend")
	client, url := startDevClient(t, nil, addr, certs, "http", "--name", "web", backendPort)
	if got := fetch(t, filepath.Join(certs, "ca.pem"), addr, url+"/page"); got != "hello from the backend /page\n" {
		t.Fatalf("got %q", got)
	}

	cli := e.Client()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	get := func(key string) []byte {
		t.Helper()
		resp, err := cli.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		return resp.Kvs[0].Value
	}
	if got := string(get("/tunnel/nodes/n1")); got != link {
		t.Fatalf("node record %q", got)
	}
	var live struct{ Node, Session string }
	if err := json.Unmarshal(get("/tunnel/names/web"), &live); err != nil || live.Node != "n1" || live.Session == "" {
		t.Fatalf("live record of web: %+v, %v", live, err)
	}

	// The client leaves: its name goes on hold in etcd.
	w := cli.Watch(ctx, "/tunnel/owners/web")
	client.stop()
	deadline := time.After(waitTimeout)
	for held := false; !held; {
		select {
		case resp := <-w:
			for _, ev := range resp.Events {
				var o struct {
					HoldUntil int64 `json:"hold_until_ms"`
				}
				held = held || json.Unmarshal(ev.Kv.Value, &o) == nil && o.HoldUntil > time.Now().UnixMilli()
			}
		case <-deadline:
			t.Fatal("web never went on hold in etcd")
		}
	}
	if get("/tunnel/names/web") != nil {
		t.Fatal("the live record outlived the client")
	}

	// tunneld stops: it leaves the cluster at once (its lease revoked).
	tunneld.stop()
	if get("/tunnel/nodes/n1") != nil {
		t.Fatal("the node record outlived tunneld")
	}
}
