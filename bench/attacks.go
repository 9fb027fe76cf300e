package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/sync/errgroup"

	"github.com/tunnelhq/tunnel/internal/units"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// The six attacks of issue 11. Each is bounded in count and in time, comes
// from attackerIP only, and treats whatever tunneld does about it (refusing,
// closing, answering) as an outcome to report, not as an error: an error is
// an attack the harness could not carry out.

// attackPingFlood is finding 1: TLS with ALPN tunnel/1, no Hello, then
// yamux ping SYN frames written by hand, never reading a reply.
func attackPingFlood(ctx context.Context, a *attackEnv) (attackResult, error) {
	cfg, err := clientTLS(a.e.certsDir)
	if err != nil {
		return attackResult{}, err
	}
	d := tls.Dialer{NetDialer: dialerFrom(attackerIP), Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", a.srvAddr)
	if err != nil {
		return attackResult{}, fmt.Errorf("TLS to tunneld: %w", err)
	}
	defer conn.Close()
	// yamux's header: version 0, type 2 (ping), flags 1 (SYN), stream 0,
	// length = the ping's id.
	const batch = 1024
	buf := make([]byte, 12*batch)
	conn.SetWriteDeadline(time.Now().Add(a.sz.Bound))
	start := time.Now()
	sent := 0
	var cut error
	for sent < a.sz.Pings && ctx.Err() == nil {
		k := min(batch, a.sz.Pings-sent)
		for i := range k {
			h := buf[i*12 : i*12+12]
			h[0], h[1] = 0, 2
			binary.BigEndian.PutUint16(h[2:], 1)
			binary.BigEndian.PutUint32(h[4:], 0)
			binary.BigEndian.PutUint32(h[8:], uint32(sent+i+1))
		}
		n, err := conn.Write(buf[:k*12])
		sent += n / 12
		if err != nil {
			cut = err
			break
		}
	}
	took := time.Since(start)
	// Keep the connection, unread, as the peer did; then leave.
	holdFor(ctx, a.sz.Hold)
	v := fmt.Sprintf("%d of %d pings written in %.2f s", sent, a.sz.Pings, took.Seconds())
	if cut != nil {
		v += fmt.Sprintf("; tunneld stopped taking them (%v)", shortErr(cut))
	}
	return attackResult{verdict: v, figures: map[string]float64{"pings_sent": float64(sent)}}, nil
}

// attackCrossTenant is finding 2: A holds "shop" with a slow request in
// flight, says GoAway but keeps its session; the hold ends; B (another
// token) claims "shop"; A's request finishes. Then B's visitors must reach
// B's service only.
func attackCrossTenant(ctx context.Context, a *attackEnv) (attackResult, error) {
	const name = "shop"
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	arrived := make(chan struct{}, 1)
	aBack, err := startLetterBackend("A", release, arrived)
	if err != nil {
		return attackResult{}, err
	}
	defer aBack.close()
	bBack, err := startLetterBackend("B", nil, nil)
	if err != nil {
		return attackResult{}, err
	}
	defer bBack.close()

	// A: the attacker, a token holder, from attackerIP.
	cfg := mux.DefaultConfig()
	cfg.DrainTimeout = a.sz.Bound + a.sz.Hold + 10*time.Second // A keeps its session open after its GoAway
	sessA, err := a.connect(ctx, attackerIP, a.tokens[0], name, cfg)
	if err != nil {
		return attackResult{}, fmt.Errorf("client A claims %q: %w", name, err)
	}
	serveA, stopA := context.WithCancel(ctx)
	servedA := make(chan error, 1)
	go func() { servedA <- sessA.Serve(serveA, map[string]string{name: aBack.addr}) }()
	defer func() {
		stopA()
		sessA.Close()
		<-servedA
	}()

	// A's own slow request, from attackerIP too.
	attacker := a.plainClient(attackerIP)
	defer attacker.CloseIdleConnections()
	slow := make(chan string, 1)
	slowDone := make(chan struct{})
	go func() {
		defer close(slowDone)
		body, _, err := a.plainGet(ctx, attacker, name, "/slow")
		if err != nil {
			body = "error: " + shortErr(err)
		}
		slow <- body
	}()
	defer func() {
		releaseOnce.Do(func() { close(release) }) // let it end, on every path
		<-slowDone
	}()
	select {
	case <-arrived:
	case <-ctx.Done():
		return attackResult{}, fmt.Errorf("slow request through client A never reached its service: %w", ctx.Err())
	}
	stopA() // Serve sends GoAway and waits for the request in flight; the session stays
	goAway := time.Now()

	// B: another token, from bystanderIP, claims the name as soon as
	// tunneld lets it.
	var sessB *mux.ClientSession
	deadline := time.Now().Add(a.sz.Bound)
	var lastErr error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		sessB, lastErr = a.connect(ctx, bystanderIP, a.tokens[1], name, mux.DefaultConfig())
		if lastErr == nil {
			break
		}
		var perr *proto.Error
		if !errors.As(lastErr, &perr) || perr.Code != proto.CodeNameTaken {
			break
		}
		holdFor(ctx, 100*time.Millisecond) // polling tunneld's registry from outside
	}
	if sessB == nil {
		releaseOnce.Do(func() { close(release) })
		<-slow
		return attackResult{verdict: fmt.Sprintf("B could not claim %q while A's session lived (%v)", name, shortErr(lastErr)),
			safe: verdictSafe(true), figures: map[string]float64{"cross_served": 0}}, nil
	}
	claimAfter := time.Since(goAway)
	serveB, stopB := context.WithCancel(ctx)
	servedB := make(chan error, 1)
	go func() { servedB <- sessB.Serve(serveB, map[string]string{name: bBack.addr}) }()
	defer func() {
		stopB()
		sessB.Close()
		<-servedB
	}()

	// A's request finishes now, on a stream tunneld may keep.
	releaseOnce.Do(func() { close(release) })
	var slowGot string
	select {
	case slowGot = <-slow:
	case <-ctx.Done():
		return attackResult{}, fmt.Errorf("slow request through client A did not finish: %w", ctx.Err())
	}

	// B's visitors, with their cookies, from bystanderIP.
	visitors := a.plainClient(bystanderIP)
	defer visitors.CloseIdleConnections()
	var toA, toB, other int
	for range a.sz.Visitors {
		body, _, err := a.plainGet(ctx, visitors, name, "/")
		switch {
		case err != nil:
			other++
		case body == "A":
			toA++
		case body == "B":
			toB++
		default:
			other++
		}
	}
	return attackResult{
		verdict: fmt.Sprintf("B claimed %q %.1f s after A's GoAway; A's slow request got %q; of B's %d visitors %d were served by A's service, %d by B's, %d failed",
			name, claimAfter.Seconds(), slowGot, a.sz.Visitors, toA, toB, other),
		safe:    verdictSafe(toA == 0),
		figures: map[string]float64{"cross_served": float64(toA), "visitors": float64(a.sz.Visitors)},
	}, nil
}

// attackStalledBodies is finding 3a: POSTs with Content-Length 1000000 and
// no body, each on a TLS connection of its own; meanwhile another visitor
// asks the same tunnel for its page.
func attackStalledBodies(ctx context.Context, a *attackEnv) (attackResult, error) {
	const name = "victim"
	n := a.sz.Stalls
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	req := fmt.Sprintf("POST /up HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n", a.host(name))
	var g errgroup.Group
	g.SetLimit(32)
	var refused atomic.Int64
	for i := range conns {
		g.Go(func() error {
			c, err := a.visitorTLS(ctx, attackerIP, name, "http/1.1")
			if err != nil {
				refused.Add(1)
				return nil
			}
			conns[i] = c
			if _, err := io.WriteString(c, req); err != nil {
				refused.Add(1)
			}
			return nil
		})
	}
	g.Wait()
	// Let them reach the service (or be refused), bounded by Hold.
	deadline := time.Now().Add(a.sz.Hold)
	for a.victim.uploads() < int64(n) && time.Now().Before(deadline) {
		holdFor(ctx, 20*time.Millisecond)
	}
	// Another visitor of the same tunnel, from another address.
	other := a.tlsClient(bystanderIP, name)
	_, status, err := a.httpsGet(ctx, other, name, "/")
	other.CloseIdleConnections()
	probe := fmt.Sprint(status)
	if err != nil {
		probe = "error: " + shortErr(err)
	}
	holdFor(ctx, time.Until(deadline))
	reached := a.victim.uploads()
	// What tunneld has done with the stalled requests by now.
	var pending, answered, closed int
	for _, c := range conns {
		if c == nil {
			continue
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		var b [1]byte
		_, err := c.Read(b[:])
		var ne net.Error
		switch {
		case err == nil:
			answered++
		case errors.As(err, &ne) && ne.Timeout():
			pending++
		default:
			closed++
		}
	}
	return attackResult{
		verdict: fmt.Sprintf("%d stalled POSTs (%d refused at connect), %d reached the service; another visitor got %s; after %.1f s: %d pending, %d answered, %d closed",
			n, refused.Load(), reached, probe, a.sz.Hold.Seconds(), pending, answered, closed),
		safe:    verdictSafe(status == http.StatusOK),
		figures: map[string]float64{"reached_service": float64(reached), "probe_status": float64(status), "pending": float64(pending)},
	}, nil
}

// attackH2Window is finding 3b: one HTTP/2 connection with a stream window
// of 0 opens GETs of a large file and never reads a byte of them.
func attackH2Window(ctx context.Context, a *attackEnv) (attackResult, error) {
	const name = "victim"
	c, err := a.visitorTLS(ctx, attackerIP, name, "h2")
	if err != nil {
		return attackResult{}, err
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		return attackResult{verdict: fmt.Sprintf("tunneld offered %q, not h2", p), safe: verdictSafe(true)}, nil
	}
	h := newH2Conn(c)
	defer h.close()
	if err := h.start(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		return attackResult{}, err
	}
	path := fmt.Sprintf("/bulk?n=%d", a.sz.H2File)
	opened := 0
	for i := range a.sz.H2Streams {
		if err := h.get(uint32(2*i+1), a.host(name), path); err != nil {
			break
		}
		opened++
	}
	holdFor(ctx, a.sz.Hold)
	st := h.stats()
	return attackResult{
		verdict: fmt.Sprintf("%d GETs of %s opened on one connection with window 0: %d answered with headers, %d refused (RST_STREAM), GOAWAY %v",
			opened, units.Bytes(a.sz.H2File), st.headers, st.resets, st.goAway),
		figures: map[string]float64{"streams": float64(opened), "headers": float64(st.headers), "resets": float64(st.resets)},
	}, nil
}

// attackHeaders is finding 4: hosts that name another site, and forwarding
// headers a visitor has no business setting. It counts the forged values
// that reach the service as sent.
func attackHeaders(ctx context.Context, a *attackEnv) (attackResult, error) {
	const name = "victim"
	forged := map[string]string{
		"X-Forwarded-Host":   "evil.example",
		"X-Forwarded-Port":   "6666",
		"X-Forwarded-Prefix": "/evil",
		"X-Forwarded-Ssl":    "evil",
		"X-Forwarded-Scheme": "evil",
		"X-Forwarded-Proto":  "evil",
		"X-Forwarded-For":    "6.6.6.6",
		"Forwarded":          "for=6.6.6.6;host=evil.example",
		"X-Real-Ip":          "6.6.6.6",
		"X-Client-Ip":        "6.6.6.6",
		"Cf-Connecting-Ip":   "6.6.6.6",
		"X-Original-Url":     "/evil",
	}
	var reached, tried []string
	check := func(label string, got *echoed, err error) {
		tried = append(tried, label)
		if err != nil || got == nil {
			return
		}
		if strings.Contains(got.Host, "evil") || strings.Contains(strings.Join(got.Headers["X-Forwarded-Host"], ","), "evil") {
			reached = append(reached, label)
		}
	}
	// HTTP/1.1 hosts.
	for _, host := range []string{
		a.host(name) + ",evil.example",
		strings.ToUpper(name) + ".LOCALHOST.:evil.example",
	} {
		got, err := a.echoHTTP1(ctx, name, host, nil)
		check("Host: "+host, got, err)
	}
	// HTTP/2 :authority.
	got, err := a.echoH2(ctx, name, name+".localhost:1;evil.example")
	check(":authority "+name+".localhost:1;evil.example", got, err)
	// Forwarding headers on an otherwise proper request.
	got, err = a.echoHTTP1(ctx, name, a.host(name), forged)
	var keys []string
	for k := range forged {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		tried = append(tried, k)
		if err == nil && got != nil && strings.Contains(strings.Join(got.Headers[k], ","), forged[k]) {
			reached = append(reached, k)
		}
	}
	v := fmt.Sprintf("%d of %d forged values reached the service as sent", len(reached), len(tried))
	if len(reached) > 0 {
		v += ": " + strings.Join(reached, "; ")
	}
	if err != nil {
		v += fmt.Sprintf(" (forwarding-header request failed: %v)", shortErr(err))
	}
	return attackResult{verdict: v, safe: verdictSafe(len(reached) == 0),
		figures: map[string]float64{"forged_reached": float64(len(reached)), "forged_tried": float64(len(tried))}}, nil
}

// attackCuts is finding 5: downloads whose visitor disconnects mid-body.
// Afterwards every request must have its access-log line and the in-flight
// counts must be back to nothing.
func attackCuts(ctx context.Context, a *attackEnv) (attackResult, error) {
	const name = "victim"
	n := a.sz.Cuts
	before := a.tap.count().attackerAccess
	req := fmt.Sprintf("GET /bulk?n=%d HTTP/1.1\r\nHost: %s\r\n\r\n", 16<<20, a.host(name))
	var g errgroup.Group
	g.SetLimit(64)
	var sent atomic.Int64
	for range n {
		g.Go(func() error {
			c, err := a.visitorTLS(ctx, attackerIP, name, "http/1.1")
			if err != nil {
				return nil
			}
			defer c.Close()
			if _, err := io.WriteString(c, req); err != nil {
				return nil
			}
			sent.Add(1)
			c.SetReadDeadline(time.Now().Add(a.sz.Bound))
			io.CopyN(io.Discard, c, 64<<10) // headers and the start of the body, then gone
			return nil
		})
	}
	g.Wait()
	// Wait (bounded) for the books to settle: the tunnel's in-flight count
	// back to 0 and a log line for each request.
	deadline := time.Now().Add(a.sz.Hold + 2*time.Second)
	inflight := -1.0
	for {
		inflight = tunnelInFlight(a.adminAddr, name)
		lines := a.tap.count().attackerAccess - before
		if (inflight == 0 && lines >= sent.Load()) || !time.Now().Before(deadline) || ctx.Err() != nil {
			break
		}
		holdFor(ctx, 50*time.Millisecond) // polling another process
	}
	lines := a.tap.count().attackerAccess - before
	gauge := metric(a.adminAddr, "tunneld_requests_in_flight")
	return attackResult{
		verdict: fmt.Sprintf("%d downloads cut mid-body: %d access-log lines; in flight afterwards: %v on the tunnel (/api/tunnels), %v in tunneld_requests_in_flight (the healthy load's included)",
			sent.Load(), lines, inflight, gauge),
		safe: verdictSafe(lines == sent.Load() && inflight == 0),
		figures: map[string]float64{"requests": float64(sent.Load()), "access_lines": float64(lines),
			"tunnel_in_flight_after": inflight, "requests_in_flight_gauge": gauge},
	}, nil
}

// attackHeldNames is finding 6: connect and disconnect with a fresh name
// each time (anonymous), then count the names still held and time one more
// claim against one before the attack.
func attackHeldNames(ctx context.Context, a *attackEnv) (attackResult, error) {
	const timed = 5
	// claimTime is the median of timed claims of fresh names by an owner
	// of their own; -1 ms if tunneld refused them all.
	claimTime := func(tag string) time.Duration {
		var lat latencies
		for i := range timed {
			t0 := time.Now()
			s, err := a.anonConnect(ctx, timingIP, timingKey, fmt.Sprintf("timed-%s-%d", tag, i))
			if err != nil {
				continue
			}
			lat = append(lat, time.Since(t0))
			s.Close()
		}
		if len(lat) == 0 {
			return -time.Millisecond
		}
		slices.Sort(lat)
		return lat.pct(50)
	}
	before := claimTime("before")
	n := a.sz.Connects
	claimed := make([]bool, n)
	codes := map[string]int{}
	var mu sync.Mutex
	var next atomic.Int64
	deadline := time.Now().Add(a.sz.Bound)
	var g errgroup.Group
	for range 4 {
		g.Go(func() error {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return nil
				}
				// A fresh owner key each time, as an attacker would: keys
				// cost nothing (servers that predate them ignore them).
				s, err := a.anonConnect(ctx, attackerIP, newOwnerKey(), heldName(i))
				if err != nil {
					var perr *proto.Error
					code := "error"
					if errors.As(err, &perr) {
						code = string(perr.Code)
					}
					mu.Lock()
					codes[code]++
					mu.Unlock()
					continue
				}
				claimed[i] = true
				s.Close()
			}
			return nil
		})
	}
	g.Wait()
	var names []int
	for i, ok := range claimed {
		if ok {
			names = append(names, i)
		}
	}
	after := claimTime("after")
	// Which of the names are still held: another owner tries to claim a
	// sample of them, spread over the whole run.
	const probes = 24
	taken, probed := 0, 0
	for k := 0; k < probes && k < len(names); k++ {
		i := names[k*len(names)/min(probes, len(names))]
		s, err := a.anonConnect(ctx, bystanderIP, probeKey, heldName(i))
		var perr *proto.Error
		switch {
		case err == nil:
			probed++
			s.Close()
		case errors.As(err, &perr) && perr.Code == proto.CodeNameTaken:
			probed++
			taken++
		default:
			// Refused for another reason (a rate limit, say): it tells
			// nothing about the name.
		}
	}
	held := 0
	if probed > 0 {
		held = len(names) * taken / probed
	}
	attempts := int(min(next.Load(), int64(n)))
	refused := "none"
	if len(codes) > 0 {
		var parts []string
		for c, k := range codes {
			parts = append(parts, fmt.Sprintf("%s %d", c, k))
		}
		slices.Sort(parts)
		refused = strings.Join(parts, ", ")
	}
	v := fmt.Sprintf("%d connects with fresh names, %d claimed (refused: %s): about %d still held (%d of %d probed); claim p50 %.2f ms before, %.2f ms after",
		attempts, len(names), refused, held, taken, probed, ms(before), ms(after))
	return attackResult{verdict: v, safe: verdictSafe(held <= 32),
		figures: map[string]float64{"connects": float64(attempts), "claimed": float64(len(names)), "held": float64(held),
			"claim_ms_before": ms(before), "claim_ms_after": ms(after)}}, nil
}

func heldName(i int) string { return fmt.Sprintf("held-%d", i) }

// The owner keys of attack 6's probes and timed claims: owners of their
// own, apart from the attacker's and from each other's.
var probeKey, timingKey = newOwnerKey(), newOwnerKey()

func newOwnerKey() string {
	var b [24]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// anonConnect is an anonymous client's connect from ip asking for name,
// done by hand (yamux, then the Hello frame written here) so that the Hello
// carries ownerKey: an anonymous client's names may belong to its owner key
// rather than its address, and pkg/mux would send one key for the whole
// process, making the attacker, the probes and the timed claims one owner.
// A server that predates owner keys ignores the field. It returns the
// session (close it to disconnect) or the server's *proto.Error.
func (a *attackEnv) anonConnect(ctx context.Context, ip, ownerKey, name string) (io.Closer, error) {
	conn, err := a.clientTLSFrom(ctx, ip)
	if err != nil {
		return nil, err
	}
	ycfg := yamux.DefaultConfig()
	ycfg.EnableKeepAlive = false
	ycfg.LogOutput = io.Discard
	sess, err := yamux.Client(conn, ycfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	ctrl, err := sess.OpenStream()
	if err != nil {
		sess.Close()
		return nil, err
	}
	ctrl.SetDeadline(time.Now().Add(10 * time.Second))
	stop := context.AfterFunc(ctx, func() { ctrl.SetDeadline(time.Now()) })
	defer stop()
	payload, err := json.Marshal(struct {
		Version       int                   `json:"version"`
		ClientVersion string                `json:"client_version"`
		OwnerKey      string                `json:"owner_key"`
		Tunnels       []proto.TunnelRequest `json:"tunnels"`
	}{proto.Version, "bench", ownerKey, []proto.TunnelRequest{{Name: name, Kind: proto.KindHTTP}}})
	if err != nil {
		sess.Close()
		return nil, err
	}
	frame := append([]byte{helloFrameType, 0, 0, 0, 0}, payload...)
	binary.BigEndian.PutUint32(frame[1:], uint32(len(payload)))
	if _, err := ctrl.Write(frame); err != nil {
		sess.Close()
		return nil, fmt.Errorf("send hello: %w", err)
	}
	m, err := proto.ReadFrame(ctrl)
	switch m := m.(type) {
	case *proto.Welcome:
		return sess, nil
	case *proto.Error:
		sess.Close()
		return nil, m
	}
	sess.Close()
	if err == nil {
		err = fmt.Errorf("%w: %T instead of a welcome", proto.ErrUnexpected, m)
	}
	return nil, fmt.Errorf("read welcome: %w", err)
}

// helloFrameType is the type byte of a Hello frame (pkg/proto: a type byte
// and a big-endian uint32 length before the JSON).
const helloFrameType = 1

// connect is one tunnel client's connect from ip: TLS, Hello asking for
// name (token empty: anonymous), Welcome.
func (a *attackEnv) connect(ctx context.Context, ip, token, name string, cfg mux.Config) (*mux.ClientSession, error) {
	conn, err := a.clientTLSFrom(ctx, ip)
	if err != nil {
		return nil, err
	}
	hello := &proto.Hello{Version: proto.Version, ClientVersion: "bench", Token: token,
		Tunnels: []proto.TunnelRequest{{Name: name, Kind: proto.KindHTTP}}}
	return mux.Client(ctx, conn, hello, cfg)
}

// plainClient is a keep-alive HTTP/1.1 client from ip to tunneld's plain
// listener.
func (a *attackEnv) plainClient(ip string) *http.Client {
	d := dialerFrom(ip)
	return &http.Client{Timeout: a.sz.Bound, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, a.plainAddr)
		}}}
}

func (a *attackEnv) plainGet(ctx context.Context, c *http.Client, name, path string) (string, int, error) {
	_, port, _ := net.SplitHostPort(a.plainAddr)
	return getBody(ctx, c, "http://"+name+".localhost:"+port+path)
}

// tlsClient is an HTTPS client from ip for name on the TLS port.
func (a *attackEnv) tlsClient(ip, name string) *http.Client {
	d := dialerFrom(ip)
	return &http.Client{Timeout: a.sz.Bound, Transport: &http.Transport{
		DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return a.visitorTLS(ctx, ip, name, "http/1.1")
		},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, a.srvAddr)
		}}}
}

func (a *attackEnv) httpsGet(ctx context.Context, c *http.Client, name, path string) (string, int, error) {
	return getBody(ctx, c, "https://"+a.host(name)+path)
}

func getBody(ctx context.Context, c *http.Client, url string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return string(b), resp.StatusCode, err
}

// echoed is what the victim's /hdr says it was sent.
type echoed struct {
	Host    string      `json:"host"`
	Headers http.Header `json:"headers"`
}

// echoHTTP1 sends GET /hdr with Host host (written as given) and extra
// headers over HTTP/1.1 on TLS for name, from attackerIP.
func (a *attackEnv) echoHTTP1(ctx context.Context, name, host string, extra map[string]string) (*echoed, error) {
	c, err := a.visitorTLS(ctx, attackerIP, name, "http/1.1")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(a.sz.Bound))
	var b strings.Builder
	fmt.Fprintf(&b, "GET /hdr HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", host)
	for k, v := range extra {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return decodeEcho(resp.StatusCode, resp.Body)
}

func decodeEcho(status int, body io.Reader) (*echoed, error) {
	if status != http.StatusOK {
		return nil, nil // refused: nothing reached the service
	}
	var e echoed
	if err := json.NewDecoder(io.LimitReader(body, 1<<20)).Decode(&e); err != nil {
		return nil, fmt.Errorf("/hdr: %w", err)
	}
	return &e, nil
}

// echoH2 sends GET /hdr with :authority authority over HTTP/2, by hand.
func (a *attackEnv) echoH2(ctx context.Context, name, authority string) (*echoed, error) {
	c, err := a.visitorTLS(ctx, attackerIP, name, "h2")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(a.sz.Bound))
	if c.ConnectionState().NegotiatedProtocol != "h2" {
		return nil, nil
	}
	h := newH2Conn(c)
	defer h.close()
	h.keep = true
	if err := h.start(); err != nil {
		return nil, err
	}
	if err := h.get(1, authority, "/hdr"); err != nil {
		return nil, err
	}
	select {
	case <-h.ended:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	st := h.stats()
	return decodeEcho(st.status, bytes.NewReader(st.body))
}

// h2Conn is a client HTTP/2 connection driven by hand with a Framer: it
// sends what it is told and reads frames in the background, acknowledging
// settings and counting what comes back.
type h2Conn struct {
	c       net.Conn
	wmu     sync.Mutex
	fr      *http2.Framer
	enc     *hpack.Encoder
	hbuf    bytes.Buffer
	keep    bool // keep the body of stream 1
	reading bool // readLoop runs; it closes ended when it returns
	ended   chan struct{}

	mu      sync.Mutex
	headers int
	resets  int
	goAway  bool
	status  int
	body    []byte
}

func newH2Conn(c net.Conn) *h2Conn {
	h := &h2Conn{c: c, fr: http2.NewFramer(c, c), ended: make(chan struct{})}
	h.enc = hpack.NewEncoder(&h.hbuf)
	return h
}

// close closes the connection and waits for the reading goroutine, if
// start began one.
func (h *h2Conn) close() {
	h.c.Close()
	if h.reading {
		<-h.ended
	}
}

// start sends the preface and settings and starts reading.
func (h *h2Conn) start(settings ...http2.Setting) error {
	if _, err := io.WriteString(h.c, http2.ClientPreface); err != nil {
		return err
	}
	h.wmu.Lock()
	err := h.fr.WriteSettings(settings...)
	h.wmu.Unlock()
	if err != nil {
		return err
	}
	h.reading = true
	go h.readLoop()
	return nil
}

func (h *h2Conn) get(id uint32, authority, path string) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	h.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", authority}, {":path", path}} {
		h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hbuf.Bytes(), EndStream: true, EndHeaders: true})
}

func (h *h2Conn) readLoop() {
	defer func() {
		select {
		case <-h.ended:
		default:
			close(h.ended)
		}
	}()
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return
		}
		h.mu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.wmu.Lock()
				h.fr.WriteSettingsAck()
				h.wmu.Unlock()
			}
		case *http2.HeadersFrame:
			h.headers++
			if f.StreamID == 1 {
				if fields, err := dec.DecodeFull(f.HeaderBlockFragment()); err == nil {
					for _, hf := range fields {
						if hf.Name == ":status" {
							fmt.Sscan(hf.Value, &h.status)
						}
					}
				}
			} else {
				dec.DecodeFull(f.HeaderBlockFragment()) // keep the decoder's table in step
			}
			if f.StreamEnded() && f.StreamID == 1 && h.keep {
				h.mu.Unlock()
				return
			}
		case *http2.DataFrame:
			if f.StreamID == 1 && h.keep {
				h.body = append(h.body, f.Data()...)
				if f.StreamEnded() {
					h.mu.Unlock()
					return
				}
			}
		case *http2.RSTStreamFrame:
			h.resets++
			if f.StreamID == 1 && h.keep {
				h.mu.Unlock()
				return
			}
		case *http2.GoAwayFrame:
			h.goAway = true
		case *http2.PingFrame:
			if !f.IsAck() {
				h.wmu.Lock()
				h.fr.WritePing(true, f.Data)
				h.wmu.Unlock()
			}
		}
		h.mu.Unlock()
	}
}

type h2Stats struct {
	headers, resets, status int
	goAway                  bool
	body                    []byte
}

func (h *h2Conn) stats() h2Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h2Stats{h.headers, h.resets, h.status, h.goAway, slices.Clone(h.body)}
}

// letterBackend answers every request with its letter; /slow waits for
// release first (and says on arrived that it came).
type letterBackend struct {
	srv  *http.Server
	addr string
	done chan error
}

func startLetterBackend(letter string, release <-chan struct{}, arrived chan<- struct{}) (*letterBackend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mx := http.NewServeMux()
	mx.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		if arrived != nil {
			select {
			case arrived <- struct{}{}:
			default:
			}
		}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, letter)
	})
	mx.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, letter) })
	b := &letterBackend{srv: &http.Server{Handler: mx, ReadHeaderTimeout: 10 * time.Second}, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { b.done <- b.srv.Serve(ln) }()
	return b, nil
}

func (b *letterBackend) close() {
	b.srv.Close()
	<-b.done
}

// tunnelInFlight reads one tunnel's in_flight from /api/tunnels; -1 when
// it cannot.
func tunnelInFlight(adminAddr, name string) float64 {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + adminAddr + "/api/tunnels")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var body struct {
		Tunnels []struct {
			Name     string `json:"name"`
			InFlight *int64 `json:"in_flight"`
		} `json:"tunnels"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return -1
	}
	for _, t := range body.Tunnels {
		if t.Name == name && t.InFlight != nil {
			return float64(*t.InFlight)
		}
	}
	return -1
}

// holdFor waits d or until ctx ends.
func holdFor(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// shortErr keeps an error message to one short line for a verdict.
func shortErr(err error) string {
	if err == nil {
		return "none"
	}
	s := err.Error()
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return s
}
