package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testhttp"
)

// poolService is a local service that answers with its label and counts
// the requests it served.
type poolService struct {
	label string
	port  string
	n     atomic.Int64
}

func newPoolService(t *testing.T, label string) *poolService {
	t.Helper()
	s := &poolService{label: label}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.n.Add(1)
		fmt.Fprint(w, label)
	}))
	t.Cleanup(srv.Close)
	_, s.port, _ = net.SplitHostPort(srv.Listener.Addr().String())
	return s
}

// TestProcess_Pool: a token added with --pool runs three clients with
// --pool on one name; 3,000 requests are shared within 10 % of even and
// /api/tunnels shows each member; one client killed with SIGKILL under
// load costs no visitor a request; a token without --pool is refused,
// permanently (exit 3).
func TestProcess_Pool(t *testing.T) {
	tunneldBin, tunnelBin := binaries(t)
	tokens := filepath.Join(t.TempDir(), "tokens.json")
	add := func(args ...string) string {
		code, stdout, stderr := runToEnd(t, tunneldBin, nil, append([]string{"token", "add", "--tokens-file", tokens}, args...)...)
		if code != 0 {
			t.Fatalf("token add %v: exit %d: %s", args, code, stderr)
		}
		return strings.TrimSpace(stdout)
	}
	pis := add("--label", "pis", "--name", "*", "--pool")
	solo := add("--label", "solo", "--name", "*")
	tunneld, addr, certs := startDevTunneld(t, nil, "--admin-listen", "127.0.0.1:0", "--tokens-file", tokens)
	admin := adminAddr(tunneld)

	code, _, stderr := runToEnd(t, tunnelBin, []string{"TUNNEL_TOKEN=" + solo}, "--dev", "--server", addr, "--certs-dir", certs,
		"http", "--pool", "--name", "wiki", "9")
	if code != 3 || !strings.Contains(stderr, `the token "solo" may not share a name`) {
		t.Fatalf("--pool with a token without pool: exit %d, stderr:\n%s\nwant exit 3", code, stderr)
	}

	var services []*poolService
	var clients []*process
	var url string
	for i := range 3 {
		s := newPoolService(t, fmt.Sprintf("s%d", i))
		services = append(services, s)
		var c *process
		c, url = startDevClient(t, []string{"TUNNEL_TOKEN=" + pis, "TUNNEL_POOL=true"}, addr, certs, "http", "--name", "wiki", s.port)
		clients = append(clients, c)
	}

	tr := visitorTransport(t, filepath.Join(certs, "ca.pem"), addr)
	tr.MaxIdleConnsPerHost = 8
	t.Cleanup(tr.CloseIdleConnections)
	visitor := &http.Client{Transport: tr, Timeout: waitTimeout}
	if f := getConcurrently(visitor, url+"/", 3000, 6); f > 0 {
		t.Fatalf("%d of 3,000 requests failed", f)
	}
	for _, s := range services {
		if n := s.n.Load(); n < 900 || n > 1100 {
			t.Errorf("service %s served %d of 3,000, want 1,000 within 10 %%", s.label, n)
		}
	}

	var status struct {
		Tunnels []struct {
			Name      string `json:"name"`
			SessionID string `json:"session_id"`
			Requests  int64  `json:"requests"`
			Pool      bool   `json:"pool"`
		} `json:"tunnels"`
	}
	acode, abody := testhttp.Get(t, &http.Client{Timeout: 10 * time.Second}, "http://"+admin+"/api/tunnels")
	if acode != 200 || json.Unmarshal([]byte(abody), &status) != nil {
		t.Fatalf("/api/tunnels: got %d %q", acode, abody)
	}
	members := map[string]int64{}
	for _, tn := range status.Tunnels {
		if tn.Name == "wiki" && tn.Pool {
			members[tn.SessionID] = tn.Requests
		}
	}
	if len(members) != 3 {
		t.Fatalf("/api/tunnels: got %d members of wiki, want 3: %s", len(members), abody)
	}
	for id, n := range members {
		if n < 900 || n > 1100 {
			t.Errorf("/api/tunnels: member %s counted %d requests, want about 1,000", id, n)
		}
	}

	// One member dies under load: no visitor sees it.
	l := startLoad(t, visitor, url+"/", "", 4)
	l.waitServed(t, 100)
	victim := services[1]
	clients[1].signal(syscall.SIGKILL)
	clients[1].exitCode()
	l.waitServed(t, 50) // past the requests in flight at the kill
	atKill := victim.n.Load()
	l.waitServed(t, 300)
	l.end()
	t.Logf("SIGKILL of a member under load: %d requests served, %d failed", l.ok.Load(), l.failed.Load())
	if f := l.failed.Load(); f != 0 {
		t.Fatalf("%d requests failed (last: %v), want none", f, l.lastErr.Load())
	}
	if n := victim.n.Load(); n != atKill {
		t.Fatalf("the killed member's service served %d requests after it was gone", n-atKill)
	}
}

// TestCluster_Pool: two clients with --pool on two different nodes serve
// one name; visitors on a third node are spread over both within 10 % of
// even, and the third node's /api/tunnels lists each member with its
// node; then one member's node is killed with SIGKILL under load, and no
// visitor's GET fails: the dead node's member is skipped until its lease
// takes it off the table.
func TestCluster_Pool(t *testing.T) {
	tunneldBin, _ := binaries(t)
	tokens := filepath.Join(t.TempDir(), "tokens.json")
	code, tok, stderr := runToEnd(t, tunneldBin, nil, "token", "add", "--tokens-file", tokens, "--label", "pis", "--name", "*", "--pool")
	if code != 0 {
		t.Fatalf("token add --pool: exit %d: %s", code, stderr)
	}
	r := newClusterRig(t, 3, "--tokens-file", tokens)
	env := []string{"TUNNEL_TOKEN=" + strings.TrimSpace(tok), "TUNNEL_POOL=true"}
	var services []*poolService
	var url string
	for i := range 2 {
		s := newPoolService(t, fmt.Sprintf("s%d", i))
		services = append(services, s)
		_, url = startDevClient(t, env, r.nodes[i].addr, r.certs, "http", "--name", "wiki", s.port)
	}
	front := r.nodes[2]
	admin := func() map[string]string {
		var status struct {
			Tunnels []struct {
				Name      string `json:"name"`
				SessionID string `json:"session_id"`
				Pool      bool   `json:"pool"`
				Node      string `json:"node"`
			} `json:"tunnels"`
		}
		code, body := testhttp.Get(t, &http.Client{Timeout: 10 * time.Second}, "http://"+front.admin+"/api/tunnels")
		if code != 200 || json.Unmarshal([]byte(body), &status) != nil {
			t.Fatalf("/api/tunnels: got %d %q", code, body)
		}
		members := map[string]string{}
		for _, tn := range status.Tunnels {
			if tn.Name == "wiki" && tn.Pool {
				members[tn.SessionID] = tn.Node
			}
		}
		return members
	}
	// The third node's view shows both members once its watch has both.
	settles(t, "both members seen by the third node", func() (bool, string) {
		m := admin()
		return len(m) == 2, fmt.Sprint(m)
	})
	nodes := map[string]bool{}
	for _, n := range admin() {
		nodes[n] = true
	}
	if !nodes[r.nodes[0].name] || !nodes[r.nodes[1].name] {
		t.Fatalf("/api/tunnels on %s: members on %v, want %s and %s", front.name, nodes, r.nodes[0].name, r.nodes[1].name)
	}

	visitor := r.visitor(front, false)
	visitor.Transport.(*http.Transport).MaxIdleConnsPerHost = 8
	if f := getConcurrently(visitor, url+"/", 1000, 4); f > 0 {
		t.Fatalf("%d of 1,000 requests failed", f)
	}
	for _, s := range services {
		if n := s.n.Load(); n < 450 || n > 550 {
			t.Errorf("service %s served %d of 1,000, want 500 within 10 %%", s.label, n)
		}
	}

	// One member's node dies under load: no visitor sees it.
	l := startLoad(t, visitor, url+"/", "", 4)
	l.waitServed(t, 50)
	r.nodes[0].p.signal(syscall.SIGKILL)
	r.nodes[0].p.exitCode()
	l.waitServed(t, 300)
	l.end()
	t.Logf("SIGKILL of a member's node under load: %d requests served, %d failed", l.ok.Load(), l.failed.Load())
	if f := l.failed.Load(); f != 0 {
		t.Fatalf("%d requests failed (last: %v), want none", f, l.lastErr.Load())
	}
}
