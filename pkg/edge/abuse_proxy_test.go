package edge_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	dto "github.com/prometheus/client_model/go"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testhttp"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// proxyHostileRows attack the proxy: pooled streams, forwarded headers, aborted responses.
func proxyHostileRows() []hostileRow {
	return []hostileRow{
		{"pooled stream of a drained holder never serves the next holder", func(c *edge.Config) {
			c.NameHold = 50 * time.Millisecond
			c.ShutdownGrace = 30 * time.Second // the drain bound must not end A's slow request
		}, pooledStreamCrossesTenants},
		{"client goaway flushes only its own pool and its session ends within a bound", func(c *edge.Config) {
			c.OfflineWait = 0
			c.ShutdownGrace = time.Second
		}, goAwayScopedAndBounded},
		{"visitor host and forwarding headers", nil, forwardedHeaders},
		{"forwarding headers through a trusted proxy", func(c *edge.Config) {
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(attacker + "/32")}
		}, trustedProxyHeaders},
		{"refused visitor with a pending body gets its answer", func(c *edge.Config) { c.MaxStreamsPerTunnel = 1 }, refusedWithPendingBody},
		{"downloads cut mid-body are logged and counted once", nil, abortedDownloads},
	}
}

// hostileClient is a hand-made tunnel client: it claims names with a Hello
// of its own and serves every stream tunneld opens with handler, but it
// also says GoAway whenever the test wants and never closes its session
// on its own.
type hostileClient struct {
	sess *yamux.Session
	ctrl *yamux.Stream
}

func (a *abuse) hostileClient(t *testing.T, token string, handler http.Handler, state func(net.Conn, http.ConnState), names ...string) *hostileClient {
	t.Helper()
	sess, ctrl := a.controlStream(t)
	if err := proto.WriteFrame(ctrl, helloFor(token, names...)); err != nil {
		t.Fatal(err)
	}
	m, err := proto.ReadFrame(ctrl)
	if err != nil {
		t.Fatalf("read answer to hello: %v", err)
	}
	if _, ok := m.(*proto.Welcome); !ok {
		t.Fatalf("got %v, want Welcome", m)
	}
	ctrl.SetDeadline(time.Time{})
	// Answer the server's control frames (pings) so the session stays up.
	ctrlDone := make(chan struct{})
	go func() {
		defer close(ctrlDone)
		for {
			m, err := proto.ReadFrame(ctrl)
			if err != nil {
				return
			}
			if p, ok := m.(*proto.Ping); ok {
				proto.WriteFrame(ctrl, &proto.Pong{Seq: p.Seq})
			}
		}
	}()
	ln := &streamListener{conns: make(chan net.Conn), done: make(chan struct{})}
	srv := &http.Server{Handler: handler, ConnState: state}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			st.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := proto.ReadAs[*proto.StreamHeader](st); err != nil {
				st.Close()
				continue
			}
			if err := proto.WriteFrame(st, &proto.StreamAck{}); err != nil {
				st.Close()
				continue
			}
			st.SetDeadline(time.Time{})
			select {
			case ln.conns <- st:
			case <-ln.done:
				st.Close()
			}
		}
	}()
	t.Cleanup(func() {
		sess.Close()
		<-accepted
		<-ctrlDone
		srv.Close()
		<-served
	})
	return &hostileClient{sess: sess, ctrl: ctrl}
}

// goAway says the client is stopping, and nothing more: the session stays open.
func (h *hostileClient) goAway(t *testing.T) {
	t.Helper()
	if err := proto.WriteFrame(h.ctrl, &proto.GoAway{Reason: "stopping, maybe"}); err != nil {
		t.Fatal(err)
	}
}

// streamListener hands the hostile client's streams to an http.Server.
type streamListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *streamListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// answer flushes the headers first, so the response is chunked and its end
// reaches the visitor only after the edge has read the service's whole
// answer (and so put the stream back in its pool).
func answer(w http.ResponseWriter, body string) {
	w.(http.Flusher).Flush()
	io.WriteString(w, body)
}

// connectWhenFree connects a real client for name as token, trying again
// while the name is still held by its previous owner.
func (a *abuse) connectWhenFree(t *testing.T, token, name, target string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := a.Connect(token, mux.Tunnel{Name: name, Target: target})
		if err == nil {
			return
		}
		wantCode(t, err, proto.CodeNameTaken)
		if time.Now().After(deadline) {
			t.Fatalf("%s still held after 20s", name)
		}
	}
}

// pooledStreamCrossesTenants is finding 2 of issue 11, in its order:
// client A holds "shop" with a slow request in flight; A says GoAway but
// keeps its session; the hold ends; client B (another token) claims
// "shop"; A's slow request finishes. B's visitors must be served by B.
func pooledStreamCrossesTenants(t *testing.T, a *abuse) {
	slowArrived, releaseSlow := make(chan struct{}, 1), make(chan struct{})
	clientA := a.hostileClient(t, bobToken, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			slowArrived <- struct{}{}
			select {
			case <-releaseSlow:
			case <-r.Context().Done():
			}
		}
		answer(w, "A")
	}), nil, "shop")
	backendB := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { answer(w, "B") }))

	c := a.HTTPClient(false)
	type result struct {
		status int
		body   string
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := c.Get(a.URL("shop", "/slow"))
		if err != nil {
			slow <- result{body: err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- result{resp.StatusCode, string(b)}
	}()
	testwait.Recv(t, slowArrived, 20*time.Second)
	clientA.goAway(t)
	a.connectWhenFree(t, aliceToken, "shop", backendB)
	a.canary(t) // other tenants' traffic goes on meanwhile
	close(releaseSlow)
	if r := testwait.Recv(t, slow, 20*time.Second); r.status != 200 || r.body != "A" {
		t.Fatalf("A's request in flight during its drain: got %d %q, want 200 \"A\"", r.status, r.body)
	}
	for i := range 4 {
		if status, body := testhttp.Get(t, c, a.URL("shop", fmt.Sprintf("/after/%d", i))); status != 200 || body != "B" {
			t.Fatalf("visitor %d of shop after B claimed it: got %d %q, want 200 \"B\" from B's service", i, status, body)
		}
	}
	// The status page counts each request under the session that served it.
	for _, ts := range a.Srv.Tunnels() {
		if ts.Name == "shop" && (ts.Label == "alice" && ts.Requests != 4 || ts.Label == "bob" && ts.Requests != 1) {
			t.Errorf("status of shop: got %+v, want 4 requests for B (alice), 1 for A (bob)", ts)
		}
	}
}

// goAwayScopedAndBounded: a client's GoAway lets go of that client's idle
// streams only (another tunnel's pool is untouched), routes nothing new to
// it, and a client that then never closes its session has it closed by
// tunneld after Config.ShutdownGrace.
func goAwayScopedAndBounded(t *testing.T, a *abuse) {
	var steadyConns atomic.Int32 // each stream to the steady tunnel is one backend connection
	steady := httpBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { answer(w, "steady") }),
		func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				steadyConns.Add(1)
			}
		})
	if _, err := a.Connect(aliceToken, mux.Tunnel{Name: "steady", Target: steady}); err != nil {
		t.Fatal(err)
	}
	c := a.HTTPClient(false)
	if status, body := testhttp.Get(t, c, a.URL("steady", "/1")); status != 200 || body != "steady" {
		t.Fatalf("steady: got %d %q", status, body)
	}

	// The hostile client's service sees each stream tunneld closes.
	drainerClosed := make(chan struct{}, 8)
	clientA := a.hostileClient(t, bobToken, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer(w, "A")
	}), func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			drainerClosed <- struct{}{}
		}
	}, "drainer")
	if status, body := testhttp.Get(t, c, a.URL("drainer", "/")); status != 200 || body != "A" {
		t.Fatalf("drainer: got %d %q", status, body)
	}
	clientA.goAway(t)
	// Its idle pooled stream is let go at once.
	testwait.Recv(t, drainerClosed, 20*time.Second)
	// Nobody else's is.
	if status, body := testhttp.Get(t, c, a.URL("steady", "/2")); status != 200 || body != "steady" {
		t.Fatalf("steady after another client's goaway: got %d %q", status, body)
	}
	if n := steadyConns.Load(); n != 1 {
		t.Errorf("another client's GoAway closed steady's pooled stream: %d streams opened, want 1", n)
	}
	// Nothing new is routed to the draining client.
	resp, err := c.Get(a.URL("drainer", "/new"))
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, http.StatusBadGateway, "offline")
	resp.Body.Close()
	// And it cannot keep its session open for ever.
	select {
	case <-clientA.sess.CloseChan():
	case <-time.After(20 * time.Second):
		t.Fatal("tunneld kept a draining session open 20s after its GoAway (bound: ShutdownGrace 1s)")
	}
	if n := a.logs.Count("draining client kept its session open"); n != 1 {
		t.Errorf("drain bound logged %d times, want once", n)
	}
}

// httpBackend is backend with a ConnState hook.
func httpBackend(t *testing.T, h http.Handler, state func(net.Conn, http.ConnState)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, ln, &http.Server{Handler: h, ConnState: state})
	return ln.Addr().String()
}

// serveUntilCleanup serves srv on ln in a goroutine that the test's
// clean-up closes and waits for. Closing srv earlier is fine.
func serveUntilCleanup(t *testing.T, ln net.Listener, srv *http.Server) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

// forwardedHeaders is finding 4 of issue 11: the service sees the tunnel's
// public host in Host and X-Forwarded-Host, whatever the visitor wrote, a
// malformed Host is refused, and no forwarding or client-address header a
// visitor sends reaches it.
func forwardedHeaders(t *testing.T, a *abuse) {
	if _, err := a.Connect(bobToken, mux.Tunnel{Name: "echo", Target: echoBackend(t)}); err != nil {
		t.Fatal(err)
	}
	public := a.host("echo")
	forged := []string{
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port", "X-Forwarded-Prefix",
		"X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Forwarded-Server", "X-Forwarded-Uri", "X-Forwarded-Path",
		"X-Forwarded-Client-Cert", "X-Client-IP", "CF-Connecting-IP", "X-Original-URL", "X-Rewrite-URL",
		"X-Original-Host", "X-Host", "X-Cluster-Client-IP", "Fastly-Client-IP", "Front-End-Https",
		"X-Url-Scheme", "True-Client-IP", "X-Real-IP", "Forwarded", "X-Original-Forwarded-For", "Client-IP",
		"X-ProxyUser-Ip", "X-Envoy-External-Address", "X-Scheme", "X-Forwarded",
		// CGI-style servers read these as X-Forwarded-For and X-Real-IP.
		"X_Forwarded_For", "X_Real_IP", "x-forwarded_host",
	}
	// The service must see exactly these, whatever the visitor sent.
	want := []string{"Host: " + public + "\n", "X-Forwarded-Host: " + public + "\r\n", "X-Forwarded-Proto: https\r\n"}
	check := func(how, body string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: the service did not get %q; it got:\n%s", how, w, body)
			}
		}
		if strings.Contains(body, "evil") || strings.Contains(body, "6.6.6.6") {
			t.Errorf("%s: a visitor's value reached the service:\n%s", how, body)
		}
	}

	var raw strings.Builder
	for _, h := range forged {
		fmt.Fprintf(&raw, "%s: evil.example\r\n", h)
	}
	for _, host := range []string{public, "ECHO." + strings.ToUpper(domain) + ".:" + fmt.Sprint(a.Port), "echo." + domain} {
		r := a.visitorRaw(t, "echo."+domain, "GET / HTTP/1.1\r\nHost: "+host+"\r\n"+raw.String()+"Connection: close\r\n\r\n")
		if r.StatusCode != 200 {
			t.Fatalf("HTTP/1.1 Host %q: got %d %q, want 200", host, r.StatusCode, bodyOf(r))
		}
		check("HTTP/1.1 Host "+host, bodyOf(r))
	}
	for _, host := range []string{
		public + ",evil.example", "ECHO." + strings.ToUpper(domain) + ".:evil.example", public + ";evil.example",
		"echo." + domain + ":1;evil.example", "echo." + domain + ":99999", "echo." + domain + ":-1",
		"echo." + domain + ": 443",
	} {
		r := a.visitorRaw(t, "echo."+domain, "GET / HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
		if r.StatusCode != 400 {
			t.Errorf("HTTP/1.1 Host %q: got %d %q, want 400", host, r.StatusCode, bodyOf(r))
		}
	}

	// HTTP/2 carries the host in :authority.
	c := a.HTTPClient(true)
	do := func(authority string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest("GET", a.URL("echo", "/"), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = authority
		for _, h := range forged {
			req.Header.Set(h, "evil.example")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("HTTP/2 :authority %q: %v", authority, err)
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("got %s, want HTTP/2", resp.Proto)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, host := range []string{public, "Echo." + domain + ".:" + fmt.Sprint(a.Port)} {
		resp, body := do(host)
		if resp.StatusCode != 200 {
			t.Fatalf("HTTP/2 :authority %q: got %d %q, want 200", host, resp.StatusCode, body)
		}
		check("HTTP/2 :authority "+host, body)
	}
	for _, host := range []string{"echo." + domain + ":1;evil.example", public + ",evil.example"} {
		if resp, body := do(host); resp.StatusCode != 400 {
			t.Errorf("HTTP/2 :authority %q: got %d %q, want 400", host, resp.StatusCode, body)
		}
	}
}

// trustedProxyHeaders: a trusted proxy's X-Forwarded-For and -Proto are
// believed, but not the X-Forwarded-Host or other forwarding headers it
// passes on: load balancers that set only -For and -Proto (as AWS's do)
// forward the visitor's own.
func trustedProxyHeaders(t *testing.T, a *abuse) {
	if _, err := a.Connect(bobToken, mux.Tunnel{Name: "echo", Target: echoBackend(t)}); err != nil {
		t.Fatal(err)
	}
	r := a.visitorRaw(t, "echo."+domain, "GET / HTTP/1.1\r\nHost: "+a.host("echo")+"\r\nX-Forwarded-For: 203.0.113.7\r\n"+
		"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 666\r\n"+
		"X-Forwarded-Prefix: /evil\r\nX-Real-IP: 6.6.6.6\r\nConnection: close\r\n\r\n")
	body := bodyOf(r)
	for _, want := range []string{"X-Forwarded-For: 203.0.113.7, " + attacker + "\r\n", "X-Forwarded-Proto: https\r\n",
		"X-Forwarded-Host: " + a.host("echo") + "\r\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("the service did not get %q; it got:\n%s", want, body)
		}
	}
	if strings.Contains(body, "evil") || strings.Contains(body, "666") {
		t.Errorf("a visitor's value passed on by the proxy reached the service:\n%s", body)
	}
}

// refusedWithPendingBody: a visitor refused (503, the tunnel at its stream
// limit) while its request body has not arrived gets the answer at once
// instead of the server waiting for a body that never comes.
func refusedWithPendingBody(t *testing.T, a *abuse) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	addr := holdBackend(t, arrived, release, "full ok")
	if _, err := a.Connect(bobToken, mux.Tunnel{Name: "full", Target: addr}); err != nil {
		t.Fatal(err)
	}
	c := a.HTTPClient(false)
	held := make(chan int, 1)
	go func() {
		resp, err := c.Get(a.URL("full", "/hold"))
		if err != nil {
			held <- 0
			return
		}
		resp.Body.Close()
		held <- resp.StatusCode
	}()
	testwait.Recv(t, arrived, 20*time.Second)
	for _, length := range []int{1000000, 1000, 1} {
		conn := a.tlsFrom(t, "http/1.1", "full."+domain)
		fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", a.host("full"), length)
		conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("Content-Length %d and no body: no answer from the busy tunnel: %v", length, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("Content-Length %d and no body: got %d, want 503", length, resp.StatusCode)
		}
		conn.Close()
	}
	close(release)
	if s := testwait.Recv(t, held, 20*time.Second); s != 200 {
		t.Fatalf("held request: got %d, want 200", s)
	}
}

// abortedDownloads is finding 5 of issue 11: visitors who hang up in the
// middle of a response, over HTTP/1.1 or HTTP/2, are logged once each, and
// the in-flight gauge comes back to zero.
func abortedDownloads(t *testing.T, a *abuse) {
	chunk := strings.Repeat("x", 32<<10)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 2048 { // up to 64 MiB, far more than any buffer on the way holds
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	}))
	if _, err := a.Connect(bobToken, mux.Tunnel{Name: "big", Target: addr}); err != nil {
		t.Fatal(err)
	}
	const batches, perBatch = 3, 4
	errs := make(chan error, perBatch)
	for range batches {
		// HTTP/1.1: read some of the body, then reset the connection.
		conns := make([]*tls.Conn, perBatch)
		for i := range conns {
			conns[i] = a.tlsFrom(t, "http/1.1", "big."+domain)
		}
		for _, conn := range conns {
			go func() {
				conn.SetDeadline(time.Now().Add(20 * time.Second))
				fmt.Fprintf(conn, "GET /big HTTP/1.1\r\nHost: %s\r\n\r\n", a.host("big"))
				buf := make([]byte, 64<<10)
				n, err := io.ReadFull(conn, buf)
				if err != nil {
					err = fmt.Errorf("read %d bytes: %q: %w", n, buf[:min(n, 300)], err)
				}
				conn.NetConn().(*net.TCPConn).SetLinger(0)
				conn.Close()
				errs <- err
			}()
		}
		for range conns {
			if err := testwait.Recv(t, errs, 30*time.Second); err != nil {
				t.Fatalf("HTTP/1.1 download: %v", err)
			}
		}
	}
	// HTTP/2: read some of the body, then cancel the stream.
	c := a.HTTPClient(true)
	const h2 = 4
	for range h2 {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", a.URL("big", "/big"), nil)
		resp, err := c.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		_, err = io.ReadFull(resp.Body, make([]byte, 64<<10))
		cancel()
		resp.Body.Close()
		if err != nil || resp.ProtoMajor != 2 {
			t.Fatalf("HTTP/2 download: %s, %v", resp.Proto, err)
		}
	}

	// The edge notices each hang-up when its next write fails, in its own
	// time: wait for the books to settle, within a bound.
	const n = batches*perBatch + h2
	var logged int
	var inFlight float64
	settled := func() bool {
		logged, inFlight = a.logs.Count(`"tunnel":"big"`), gauge(t, a.Srv, "tunneld_requests_in_flight")
		return logged >= n && inFlight == 0
	}
	if !eventually(settled, 20*time.Second) || logged != n {
		t.Fatalf("after %d downloads cut mid-body: %d access log lines, tunneld_requests_in_flight %v; want %d and 0",
			n, logged, inFlight, n)
	}
	if got := a.logs.Count(`"aborted":true`); got != n {
		t.Errorf("%d access log lines say aborted, want %d", got, n)
	}
	for _, ts := range a.Srv.Tunnels() {
		if ts.Name == "big" && (ts.InFlight != 0 || ts.Requests != n) {
			t.Errorf("status of big: got %d in flight, %d requests; want 0 and %d", ts.InFlight, ts.Requests, n)
		}
	}
}

// eventually checks cond every 10ms until it holds or d has passed, and
// reports whether it held.
func eventually(cond func() bool, d time.Duration) bool {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			return cond()
		}
	}
	return true
}

// gauge reads a gauge from the server's metrics registry.
func gauge(t *testing.T, srv *edge.Server, name string) float64 {
	t.Helper()
	fams, err := srv.Metrics().Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			var sum float64
			for _, m := range f.GetMetric() {
				sum += gaugeValue(m)
			}
			return sum
		}
	}
	t.Fatalf("metric %s missing", name)
	return 0
}

func gaugeValue(m *dto.Metric) float64 { return m.GetGauge().GetValue() }
