package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/internal/testhttp"
)

// clusterRig is a tunneld cluster as an operator runs one: three etcd
// members (in this process), tunneld nodes as processes sharing the dev
// CA and one cluster secret, each with its own public port and node port.
// Every node writes the same public port (443) in its URLs, as nodes
// behind one DNS name do; visitors pick the node they dial.
type clusterRig struct {
	t      *testing.T
	etcd   *etcdtest.Cluster
	certs  string
	secret string
	nodes  []*clusterNode
}

type clusterNode struct {
	name  string
	addr  string // the public TLS address
	link  string // the node port
	admin string
	p     *process
}

func newClusterRig(t *testing.T, n int, extra ...string) *clusterRig {
	t.Helper()
	r := &clusterRig{t: t, etcd: etcdtest.Start(t, 3), certs: t.TempDir()}
	r.secret = newSecretFile(t)
	for i := range n {
		r.nodes = append(r.nodes, r.startNode(fmt.Sprintf("node%d", i), r.secret, extra...))
	}
	return r
}

// newSecretFile writes a fresh 32-byte cluster secret (hex), readable by
// its owner only, and returns its path.
func newSecretFile(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	path := filepath.Join(t.TempDir(), "cluster-secret")
	if err := os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startNode starts one tunneld node of the cluster.
func (r *clusterRig) startNode(name, secret string, extra ...string) *clusterNode {
	r.t.Helper()
	link := fmt.Sprintf("127.0.0.1:%d", freePort(r.t))
	args := []string{"--dev", "--certs-dir", r.certs, "--public-port", "443",
		"--admin-listen", "127.0.0.1:0",
		"--cluster-etcd", strings.Join(r.etcd.Endpoints(), ","),
		"--cluster-node", name, "--cluster-listen", link, "--cluster-advertise", link,
		"--cluster-secret-file", secret}
	p, addr := startTunneld(r.t, nil, append(args, extra...)...)
	return &clusterNode{name: name, addr: addr, link: link, admin: adminAddr(p), p: p}
}

func (r *clusterRig) ca() string { return filepath.Join(r.certs, "ca.pem") }

// servers is every node's public address, as a client's --server.
func (r *clusterRig) servers() string {
	var s []string
	for _, n := range r.nodes {
		s = append(s, n.addr)
	}
	return strings.Join(s, ",")
}

// client starts a tunnel client against server (one node, or several)
// with args after, and returns it with its public URL.
func (r *clusterRig) client(server string, args ...string) (*process, string) {
	r.t.Helper()
	return startDevClient(r.t, nil, server, r.certs, args...)
}

// visitor is an HTTP client whose every connection goes to node n.
func (r *clusterRig) visitor(n *clusterNode, http2 bool) *http.Client {
	r.t.Helper()
	tr := visitorTransport(r.t, r.ca(), n.addr)
	tr.ForceAttemptHTTP2 = http2
	r.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitTimeout}
}

// clusterService is the local service behind each test tunnel: it says
// who it is, hashes uploads, streams downloads, echoes WebSockets and
// sends server-sent events one at a time.
func clusterService(t *testing.T, who string, sseNext chan<- struct{}) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s %s", who, r.URL.Path) })
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
	mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, io.LimitReader(&pattern{}, 50<<20))
	})
	mux.Handle("/ws", websocket.Handler(func(ws *websocket.Conn) { io.Copy(ws, ws) }))
	mux.Handle("/sse", testhttp.PacedEvents(3, sseNext))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return port
}

// pattern is an endless deterministic byte stream.
type pattern struct{ n byte }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = p.n
		p.n = p.n*31 + 7
	}
	return len(b), nil
}

// TestCluster_VisitorOnAnyNodeReachesClientOnAny: a client on each node,
// a visitor on each node, every pair served; and through a forwarding
// node, large bodies both ways, a WebSocket, server-sent events and an
// HTTP/2 visitor work as they do locally.
func TestCluster_VisitorOnAnyNodeReachesClientOnAny(t *testing.T) {
	r := newClusterRig(t, 3)
	sseNext := make(chan struct{})
	for i, n := range r.nodes {
		port := clusterService(t, n.name, sseNext)
		r.client(n.addr, "http", "--name", fmt.Sprintf("svc%d", i), port)
	}
	for _, vn := range r.nodes {
		c := r.visitor(vn, false)
		for i, cn := range r.nodes {
			url := fmt.Sprintf("https://svc%d.localhost/x", i)
			if code, body := testhttp.Get(t, c, url); code != 200 || body != cn.name+" /x" {
				t.Fatalf("visitor on %s, client on %s: got %d %q", vn.name, cn.name, code, body)
			}
		}
	}

	// Every node's status page and /api/tunnels show every node's tunnels
	// and the node serving each.
	admin := &http.Client{Timeout: waitTimeout}
	for _, vn := range r.nodes {
		_, page := testhttp.Get(t, admin, "http://"+vn.admin+"/")
		var api struct{ Tunnels []struct{ Name, Node string } }
		_, body := testhttp.Get(t, admin, "http://"+vn.admin+"/api/tunnels")
		if err := json.Unmarshal([]byte(body), &api); err != nil {
			t.Fatalf("/api/tunnels on %s: %v: %s", vn.name, err, body)
		}
		nodes := map[string]string{}
		for _, tn := range api.Tunnels {
			nodes[tn.Name] = tn.Node
		}
		for i, cn := range r.nodes {
			name := fmt.Sprintf("svc%d", i)
			if nodes[name] != cn.name {
				t.Errorf("/api/tunnels on %s: %s on node %q, want %s", vn.name, name, nodes[name], cn.name)
			}
			row := fmt.Sprintf(`data-name="%s"`, name)
			at := strings.Index(page, row)
			if at < 0 || !strings.Contains(page[at:min(at+2000, len(page))], `<td class="node">`+cn.name+`</td>`) {
				t.Errorf("status page on %s: no row for %s with node %s", vn.name, name, cn.name)
			}
		}
	}

	// From here on: the client is on node0, the visitor on node1.
	c := r.visitor(r.nodes[1], false)
	const base = "https://svc0.localhost"
	t.Run("50 MiB up", func(t *testing.T) {
		sum := sha256.New()
		body := io.TeeReader(io.LimitReader(&pattern{}, 50<<20), sum)
		resp, err := c.Post(base+"/upload", "application/octet-stream", body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		if want := fmt.Sprintf("%d %x", 50<<20, sum.Sum(nil)); string(got) != want {
			t.Fatalf("service saw %q, want %q", got, want)
		}
	})
	t.Run("50 MiB down", func(t *testing.T) {
		resp, err := c.Get(base + "/download")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, want := sha256.New(), sha256.New()
		n, err := io.Copy(got, resp.Body)
		if err != nil || n != 50<<20 {
			t.Fatalf("read %d bytes, %v; want %d", n, err, 50<<20)
		}
		io.Copy(want, io.LimitReader(&pattern{}, 50<<20))
		if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Fatal("download hash differs")
		}
	})
	t.Run("WebSocket", func(t *testing.T) {
		raw, err := net.Dial("tcp", r.nodes[1].addr)
		if err != nil {
			t.Fatal(err)
		}
		conn := tls.Client(raw, &tls.Config{RootCAs: pool(t, r.ca()), ServerName: "svc0.localhost"})
		cfg, err := websocket.NewConfig("wss://svc0.localhost/ws", "https://svc0.localhost")
		if err != nil {
			t.Fatal(err)
		}
		ws, err := websocket.NewClient(cfg, conn)
		if err != nil {
			t.Fatalf("websocket handshake: %v", err)
		}
		defer ws.Close()
		for i := range 3 {
			msg := fmt.Sprintf("message %d", i)
			if err := websocket.Message.Send(ws, msg); err != nil {
				t.Fatal(err)
			}
			var got string
			ws.SetReadDeadline(time.Now().Add(waitTimeout))
			if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
				t.Fatalf("echo: got %q, %v; want %q", got, err, msg)
			}
		}
	})
	t.Run("server-sent events", func(t *testing.T) {
		resp, err := c.Get(base + "/sse")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		testhttp.ReadPacedEvents(t, resp.Body, 3, sseNext, waitTimeout)
	})
	t.Run("HTTP/2 visitor", func(t *testing.T) {
		resp, err := r.visitor(r.nodes[1], true).Get(base + "/h2")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.ProtoMajor != 2 || string(body) != "node0 /h2" {
			t.Fatalf("got %s %q, want HTTP/2 and node0's page", resp.Proto, body)
		}
	})
}

// TestCluster_EtcdMemberDiesUnnoticed: one etcd member of three stops
// under load through a forwarding node; no request fails, and a new
// client still claims its name.
func TestCluster_EtcdMemberDiesUnnoticed(t *testing.T) {
	r := newClusterRig(t, 2)
	port := clusterService(t, "svc", nil)
	r.client(r.nodes[0].addr, "http", "--name", "svc", port)
	l := startLoad(t, r.visitor(r.nodes[1], false), "https://svc.localhost/", "svc /", 1)
	l.waitServed(t, 20)
	r.etcd.Stop(0)
	l.waitServed(t, 200)
	r.client(r.nodes[1].addr, "http", "--name", "after", port)
	l.waitServed(t, 20)
	l.end()
	if f := l.failed.Load(); f != 0 {
		t.Fatalf("%d requests failed (last: %v), want none", f, l.lastErr.Load())
	}
}

// connectedTo waits for p's next "connected" log line from index next on
// and returns the server it names.
func connectedTo(p *process, next int) string {
	p.t.Helper()
	line := p.waitLineFrom(p.stderr, next, `the "connected" log line`, logMsg("connected"))
	var entry struct{ Server string }
	if err := json.Unmarshal([]byte(line), &entry); err != nil || entry.Server == "" {
		p.t.Fatalf("connected line %q: %v", line, err)
	}
	return entry.Server
}

// TestCluster_NodeKilledClientMovesOn: SIGKILL the node a client is on,
// under load through another node. The client reconnects to another node
// and gets its name back; the visitors' requests wait for it and are
// served. How long each step took is logged.
func TestCluster_NodeKilledClientMovesOn(t *testing.T) {
	r := newClusterRig(t, 3)
	port := clusterService(t, "svc", nil)
	client, url := r.client(r.servers(), "http", "--name", "svc", port)
	first := connectedTo(client, 0)
	var victim, visitor *clusterNode
	for _, n := range r.nodes {
		switch {
		case n.addr == first:
			victim = n
		case visitor == nil:
			visitor = n
		}
	}
	if victim == nil {
		t.Fatalf("the client connected to %s, which is no node", first)
	}
	l := startLoad(t, r.visitor(visitor, false), "https://svc.localhost/", "svc /", 1)
	l.waitServed(t, 20)

	next := client.stderr.Len()
	killed := time.Now()
	victim.p.signal(syscall.SIGKILL)
	again := connectedTo(client, next)
	back := time.Since(killed)
	if again == first {
		t.Fatalf("the client reconnected to the killed node %s", first)
	}
	client.waitLineFrom(client.stderr, next, "the same URLs again", logMsg("reconnected with the same URLs"))
	l.waitServed(t, 1)
	served := time.Since(killed)
	l.waitServed(t, 50)
	l.end()
	t.Logf("SIGKILL of %s: client back on %s after %v, visitors on %s served again after %v; %d requests served, %d failed",
		victim.name, again, back.Round(time.Millisecond), visitor.name, served.Round(time.Millisecond), l.ok.Load(), l.failed.Load())
	// The request in flight through the dead node's link when it died may
	// fail; every later one waits for the client (offline wait) instead.
	if f := l.failed.Load(); f > 1 {
		t.Fatalf("%d requests failed (last: %v), want at most the one in flight at the kill", f, l.lastErr.Load())
	}
	if got := fetch(t, r.ca(), visitor.addr, url+"/after"); got != "svc /after" {
		t.Fatalf("after the move: got %q", got)
	}
}

// TestCluster_QuorumLost: with two etcd members of three stopped, the
// tunnels already connected keep serving, across nodes too; a new client
// is refused with a retryable error and /readyz says the node is
// degraded; once etcd is back the new client gets its name and the old
// one was never dropped.
func TestCluster_QuorumLost(t *testing.T) {
	r := newClusterRig(t, 2)
	port := clusterService(t, "svc", nil)
	old, _ := r.client(r.nodes[0].addr, "http", "--name", "svc", port)
	l := startLoad(t, r.visitor(r.nodes[1], false), "https://svc.localhost/", "svc /", 1)
	l.waitServed(t, 20)

	r.etcd.Stop(1)
	r.etcd.Stop(2)
	l.waitServed(t, 100)

	_, tunnel := binaries(t)
	late := start(t, tunnel, nil, "--dev", "--server", r.nodes[1].addr, "--certs-dir", r.certs, "--log-format", "json",
		"http", "--name", "late", port)
	late.waitLine(late.stderr, "a retryable refusal", func(l string) bool {
		return strings.Contains(l, "connect failed; retrying") && strings.Contains(l, "unavailable")
	})
	ready := &http.Client{Timeout: waitTimeout}
	settles(t, "node1's /readyz says degraded", func() (bool, string) {
		resp, err := ready.Get("http://" + r.nodes[1].admin + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "degraded"),
			fmt.Sprintf("%d %q", resp.StatusCode, body)
	})
	l.waitServed(t, 50)

	r.etcd.Restart(1)
	r.etcd.Restart(2)
	r.etcd.WaitReady()
	late.waitLine(late.stdout, "a public URL", isURL)
	// node0 learns the name from etcd's watch, which may come after the
	// client's Welcome from node1: a 404 until then is its view lagging.
	tr := visitorTransport(t, r.ca(), r.nodes[0].addr)
	defer tr.CloseIdleConnections()
	via0 := &http.Client{Transport: tr, Timeout: waitTimeout}
	settles(t, "the late client through node0", func() (bool, string) {
		status, body := testhttp.Get(t, via0, "https://late.localhost/x")
		return status == http.StatusOK && body == "svc /x", fmt.Sprintf("%d %q", status, body)
	})
	l.waitServed(t, 20)
	l.end()
	if f := l.failed.Load(); f != 0 {
		t.Fatalf("%d requests failed (last: %v), want none", f, l.lastErr.Load())
	}
	if n := countLines(old, "session ended"); n != 0 {
		t.Fatalf("the connected client's session ended %d times, want never", n)
	}
}

// TestCluster_WrongSecretRefused: a node with another cluster secret
// shares the etcd but not the links: the real nodes refuse it, and its
// visitors never reach their clients.
func TestCluster_WrongSecretRefused(t *testing.T) {
	r := newClusterRig(t, 1, "--offline-wait", "1s")
	port := clusterService(t, "svc", nil)
	r.client(r.nodes[0].addr, "http", "--name", "svc", port)
	intruder := r.startNode("intruder", newSecretFile(t), "--offline-wait", "1s")
	code, body := testhttp.Get(t, r.visitor(intruder, false), "https://svc.localhost/secret")
	if code == http.StatusOK || strings.Contains(body, "svc /secret") {
		t.Fatalf("through the intruder: got %d %q, want a refusal", code, body)
	}
	r.nodes[0].p.waitLine(r.nodes[0].p.stderr, "the refusal", logMsg("node link refused: wrong cluster secret"))
}

// TestCluster_NameRace: two clients of different owners ask two nodes
// for the same name at the same moment; exactly one gets it, each time.
func TestCluster_NameRace(t *testing.T) {
	r := newClusterRig(t, 2)
	port := clusterService(t, "svc", nil)
	_, tunnel := binaries(t)
	for round := range 10 {
		name := fmt.Sprintf("race-%d", round)
		var ps [2]*process
		for i := range ps {
			ps[i] = start(t, tunnel, nil, "--dev", "--server", r.nodes[i].addr, "--certs-dir", r.certs,
				"--log-format", "json", "http", "--name", name, port)
		}
		won := 0
		for _, p := range ps {
			line := p.waitLine(p.stderr, "connected or refused", func(l string) bool {
				return logMsg("connected")(l) || strings.Contains(l, "connect failed; retrying")
			})
			if logMsg("connected")(line) {
				won++
			} else if !strings.Contains(line, "name_taken") && !strings.Contains(line, "held by another client") {
				t.Fatalf("round %d: refused for another reason: %s", round, line)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d clients got %s, want exactly 1", round, won, name)
		}
		for _, p := range ps {
			p.stop()
		}
	}
}

// TestCluster_ACMEOrdersOnceServesEverywhere: three nodes on one etcd get
// their certificates from Pebble. Each name is ordered once however many
// nodes a handshake for it reaches at the same moment, whichever node
// Pebble validates through answers the challenge (Pebble only reaches
// node0's port), and every node serves the same certificate.
func TestCluster_ACMEOrdersOnceServesEverywhere(t *testing.T) {
	tlsPort := freePort(t)
	pb := startPebble(t, freePort(t), tlsPort)
	e := etcdtest.Start(t, 3)
	secret := newSecretFile(t)
	var addrs []string
	var ports []int
	for i := range 3 {
		port := tlsPort
		if i > 0 {
			port = freePort(t)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		link := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		startTunneld(t, []string{"TUNNELD_TOKEN=s3cret"}, "--listen", addr, "--http-listen", "",
			"--domain", acmeDomain, "--acme-directory", pb.directory, "--acme-ca-root", pb.httpsCA,
			"--cert-cache", t.TempDir(), "--public-port", "443",
			"--cluster-etcd", strings.Join(e.Endpoints(), ","), "--cluster-node", fmt.Sprintf("node%d", i),
			"--cluster-listen", link, "--cluster-secret-file", secret)
		addrs = append(addrs, addr)
		ports = append(ports, port)
	}
	// everywhere shakes hands for name with every node at once and
	// returns the serial they all served.
	everywhere := func(name string) string {
		t.Helper()
		serials := make([]string, len(addrs))
		errs := make([]error, len(addrs))
		var wg sync.WaitGroup
		for i, addr := range addrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				leaf, err := handshake(t, pb.root, addr, name)
				if err == nil {
					serials[i] = leaf.SerialNumber.String()
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i := range addrs {
			if errs[i] != nil {
				t.Fatalf("%s on node%d: %v", name, i, errs[i])
			}
			if serials[i] != serials[0] {
				t.Fatalf("%s: node%d serves serial %s, node0 %s; want one certificate", name, i, serials[i], serials[0])
			}
		}
		return serials[0]
	}
	everywhere(acmeDomain)
	if n := pb.orders(); n != 1 {
		t.Fatalf("Pebble saw %d orders for the apex on three nodes, want 1", n)
	}
	backendPort := newBackend(t, "hello from a cluster")
	acmeTunnel(t, pb.root, ports[1], "wiki", backendPort)
	everywhere("wiki." + acmeDomain)
	if n := pb.orders(); n != 2 {
		t.Fatalf("Pebble saw %d orders, want 2 (the apex and wiki, once each)", n)
	}
	for i, addr := range addrs {
		if got, want := fetchWithin(t, acmeWait, pb.root, addr, "https://wiki."+acmeDomain+"/page"), "hello from a cluster /page\n"; got != want {
			t.Fatalf("through node%d: got %q, want %q", i, got, want)
		}
	}
}

// devCA makes a dev CA with a certificate for localhost (tunneld certs)
// and returns the flags that make a node show it on the node port.
func devCA(t *testing.T) []string {
	t.Helper()
	tunneld, _ := binaries(t)
	dir := filepath.Join(t.TempDir(), "ca")
	if code, _, stderr := runToEnd(t, tunneld, nil, "certs", "--certs-dir", dir); code != 0 {
		t.Fatalf("tunneld certs: exit %d: %s", code, stderr)
	}
	return []string{"--cluster-ca", filepath.Join(dir, "ca.pem"),
		"--cluster-cert", filepath.Join(dir, "localhost.pem"), "--cluster-key", filepath.Join(dir, "localhost-key.pem")}
}

// TestCluster_WrongCARefused: with a cluster CA, a node that holds the
// secret but shows a certificate of another CA is refused on the node
// port; one of the right CA is served.
func TestCluster_WrongCARefused(t *testing.T) {
	ca := devCA(t)
	r := newClusterRig(t, 1, append([]string{"--offline-wait", "1s"}, ca...)...)
	port := clusterService(t, "svc", nil)
	r.client(r.nodes[0].addr, "http", "--name", "svc", port)

	good := r.startNode("good", r.secret, append([]string{"--offline-wait", "1s"}, ca...)...)
	if code, body := testhttp.Get(t, r.visitor(good, false), "https://svc.localhost/ok"); code != http.StatusOK || body != "svc /ok" {
		t.Fatalf("through a node of the cluster CA: got %d %q", code, body)
	}
	intruder := r.startNode("intruder", r.secret, append([]string{"--offline-wait", "1s"}, devCA(t)...)...)
	code, body := testhttp.Get(t, r.visitor(intruder, false), "https://svc.localhost/secret")
	if code == http.StatusOK || strings.Contains(body, "svc /secret") {
		t.Fatalf("through a node of another CA: got %d %q, want a refusal", code, body)
	}
	r.nodes[0].p.waitLine(r.nodes[0].p.stderr, "the refusal", logMsg("node link refused"))
}
