package limit

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testConfig is DefaultConfig with a session's window and linger as
// tunneld's defaults set them.
func testConfig() Config {
	c := DefaultConfig()
	c.StreamWindow, c.Linger = 1<<20, 5*time.Second
	return c
}

func TestLimits_AuthDelayGrowsPerSource(t *testing.T) {
	cfg := testConfig()
	cfg.AuthFailDelay, cfg.AuthFailMaxDelay = 100*time.Millisecond, time.Second
	var logs bytes.Buffer
	log := zerolog.New(&logs).Level(zerolog.InfoLevel)
	l := New(cfg, log, nil)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	bad := netip.MustParsePrefix("192.0.2.7/32")
	good := netip.MustParsePrefix("198.51.100.1/32")

	var got []time.Duration
	for range 8 {
		l.AuthFailed(bad, log)
		got = append(got, l.AuthDelay(bad))
	}
	want := []time.Duration{0, 0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, time.Second, time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays after each failure: got %v, want %v", got, want)
		}
	}
	if d := l.AuthDelay(good); d != 0 {
		t.Errorf("another source: got delay %v, want 0", d)
	}
	if n := strings.Count(logs.String(), "repeated authentication failures"); n != 1 {
		t.Errorf("burst logged %d times, want once:\n%s", n, logs.String())
	}
	// A quiet spell ends the burst: no delay, and the next burst is
	// logged again.
	now = now.Add(authForget)
	if d := l.AuthDelay(bad); d != 0 {
		t.Errorf("after %v without failures: got delay %v, want 0", authForget, d)
	}
	for range AuthFreeFailures {
		l.AuthFailed(bad, log)
	}
	if n := strings.Count(logs.String(), "repeated authentication failures"); n != 2 {
		t.Errorf("two bursts logged %d times, want twice", n)
	}
}

func TestLimits_SourceKey(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"192.0.2.7:443", "192.0.2.7/32"},
		{"[::ffff:192.0.2.7]:443", "192.0.2.7/32"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:1", "2001:db8:1:2::/64"},
	}
	for _, tt := range tests {
		addr, err := net.ResolveTCPAddr("tcp", tt.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := SourceKey(addr).String(); got != tt.want {
			t.Errorf("SourceKey(%s): got %s, want %s", tt.addr, got, tt.want)
		}
	}
}

func TestLimits_HandshakeSlots(t *testing.T) {
	cfg := testConfig()
	cfg.MaxHandshakes, cfg.MaxHandshakesPerIP = 3, 2
	l := New(cfg, zerolog.Nop(), nil)
	a := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}
	b := &net.TCPAddr{IP: net.ParseIP("192.0.2.2"), Port: 1}
	g1, ok1 := l.AdmitConn(a)
	_, ok2 := l.AdmitConn(a)
	_, ok3 := l.AdmitConn(a)
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("one source: got %v %v %v, want the third refused", ok1, ok2, ok3)
	}
	if _, ok := l.AdmitConn(b); !ok {
		t.Fatal("another source refused while the server has a slot")
	}
	if _, ok := l.AdmitConn(b); ok {
		t.Fatal("got a fourth handshake, want MaxHandshakes=3 to refuse it")
	}
	g1.HandshakeDone()
	g1.Release() // idempotent: gives back nothing twice
	if _, ok := l.AdmitConn(a); !ok {
		t.Fatal("slot not given back")
	}
	if _, ok := l.AdmitConn(a); ok {
		t.Fatal("slot given back twice")
	}
}

// recordedLimits is a Recorder that keeps what it was told, in order.
type recordedLimits struct {
	mu    sync.Mutex
	kinds []string
}

func (r *recordedLimits) RateLimited(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kinds = append(r.kinds, kind)
}

func (r *recordedLimits) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.kinds, ",")
}

func TestLimits_ReportsRefusalsToRecorder(t *testing.T) {
	cfg := testConfig()
	cfg.MaxStreamsPerTunnel = 2
	cfg.MaxRequestsPerVisitor = 1
	cfg.MaxHandshakesPerIP = 1
	rec := &recordedLimits{}
	l := New(cfg, zerolog.Nop(), rec)
	v1, v2, v3 := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8::/64"), netip.MustParsePrefix("192.0.2.3/32")
	ctx := context.Background()
	// A request over its source's share waits for the share until its
	// context ends: a cancelled one is refused at once.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	release, refusal := l.AcquireStream(ctx, "wiki", v1)
	if refusal != "" {
		t.Fatal("first stream refused")
	}
	if _, refusal := l.AcquireStream(cancelled, "wiki", v1); refusal != RefusedVisitor {
		t.Fatalf("second stream of one visitor: got %q, want refused over its share of 1", refusal)
	}
	if _, refusal := l.AcquireStream(ctx, "other", v1); refusal != "" {
		t.Fatalf("the visitor's first stream to another tunnel refused: %q", refusal)
	}
	if _, refusal := l.AcquireStream(ctx, "wiki", v2); refusal != "" {
		t.Fatalf("another visitor refused: %q", refusal)
	}
	if _, refusal := l.AcquireStream(ctx, "wiki", v3); refusal != RefusedTunnel {
		t.Fatalf("third stream: got %q, want refused over the tunnel's limit of 2", refusal)
	}
	release.Release()
	if _, refusal := l.AcquireStream(ctx, "wiki", v1); refusal != "" {
		t.Fatalf("the visitor after its stream ended: refused %q", refusal)
	}
	addr := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}
	g, ok := l.AdmitConn(addr)
	if !ok {
		t.Fatal("first handshake refused")
	}
	defer g.Release()
	if _, ok := l.AdmitConn(addr); ok {
		t.Fatal("second handshake admitted over a limit of 1")
	}
	if got, want := rec.String(), "visitor,stream,handshake"; got != want {
		t.Fatalf("recorded %q, want %q", got, want)
	}
}

// TestLimits_RecordsSessionsAndAuthDelays: a session over MaxSessionsPerIP
// and an authentication that must wait are counted, once each; a session
// given back makes room, and a source that has not failed is not delayed.
func TestLimits_RecordsSessionsAndAuthDelays(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSessionsPerIP = 1
	rec := &recordedLimits{}
	l := New(cfg, zerolog.Nop(), rec)
	addr := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}
	g1, ok := l.AdmitConn(addr)
	if !ok || !g1.StartSession() {
		t.Fatal("first session refused")
	}
	if !g1.StartSession() {
		t.Fatal("the same connection's session counted twice")
	}
	g2, ok := l.AdmitConn(addr)
	if !ok {
		t.Fatal("second handshake refused")
	}
	defer g2.Release()
	if g2.StartSession() {
		t.Fatal("second session admitted over MaxSessionsPerIP=1")
	}
	g1.Release()
	if !g2.StartSession() {
		t.Fatal("session not given back by Release")
	}
	if d := l.AuthDelay(g2.Source()); d != 0 {
		t.Fatalf("a source without failures: got delay %v, want 0", d)
	}
	for range AuthFreeFailures {
		l.AuthFailed(g2.Source(), zerolog.Nop())
	}
	if d := l.AuthDelay(g2.Source()); d != cfg.AuthFailDelay {
		t.Fatalf("after %d failures: got delay %v, want %v", AuthFreeFailures, d, cfg.AuthFailDelay)
	}
	if got, want := rec.String(), "session,auth"; got != want {
		t.Fatalf("recorded %q, want %q", got, want)
	}
}

// TestLimits_OverTheShareWaitsForItsOwnSlot: requests over a source's share
// wait, holding no slot of the tunnel, and each finished request of that
// source hands its slot to the oldest; at most visitorQueue wait.
func TestLimits_OverTheShareWaitsForItsOwnSlot(t *testing.T) {
	cfg := testConfig()
	cfg.MaxStreamsPerTunnel = 3
	cfg.MaxRequestsPerVisitor = 1
	l := New(cfg, zerolog.Nop(), &recordedLimits{})
	ctx := context.Background()
	v1, v2 := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")
	first, refusal := l.AcquireStream(ctx, "wiki", v1)
	if refusal != "" {
		t.Fatal("first stream refused")
	}
	type result struct {
		slot    *Slot
		refusal string
	}
	wctx, cancelWaiters := context.WithCancel(ctx)
	defer cancelWaiters()
	results := make(chan result, visitorQueue+1)
	for range visitorQueue {
		go func() {
			r, why := l.AcquireStream(wctx, "wiki", v1)
			results <- result{r, why}
		}()
	}
	waiting := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.waitersBy[visitorKey{"wiki", v1}])
	}
	for deadline := time.Now().Add(10 * time.Second); waiting() < visitorQueue; {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests waiting after 10s, want %d", waiting(), visitorQueue)
		}
		runtime.Gosched()
	}
	if _, refusal := l.AcquireStream(ctx, "wiki", v1); refusal != RefusedVisitor {
		t.Fatalf("one more than visitorQueue waiting: got %q, want refused", refusal)
	}
	// The waiting requests hold no slot: another source gets the other two.
	a, ra := l.AcquireStream(ctx, "wiki", v2)
	_, rb := l.AcquireStream(ctx, "wiki", netip.MustParsePrefix("192.0.2.3/32"))
	if ra != "" || rb != "" {
		t.Fatalf("other sources while one waits: refused %q, %q", ra, rb)
	}
	a.Release()
	first.Release()
	got := testwait.Recv(t, results, 10*time.Second)
	if got.refusal != "" {
		t.Fatalf("the oldest waiting request: refused %q, want the slot", got.refusal)
	}
	select {
	case r := <-results:
		t.Fatalf("a second waiting request got an answer (%q) with one slot handed on", r.refusal)
	default:
	}
	got.slot.Release()
	got = testwait.Recv(t, results, 10*time.Second)
	cancelWaiters()
	for range visitorQueue - 2 {
		if r := testwait.Recv(t, results, 10*time.Second); r.refusal != RefusedVisitor {
			t.Fatalf("a waiting request whose context ended: got %q, want refused", r.refusal)
		}
	}
	got.slot.Release()
	l.mu.Lock()
	defer l.mu.Unlock()
	if n, w := l.visitorsBy[visitorKey{"wiki", v1}], len(l.waitersBy); n != 0 || w != 0 {
		t.Fatalf("after every request: %d streams of the source, %d waiting lists; want 0 and 0", n, w)
	}
}

// TestLimits_SlotReleasedTwice: a second Release of a slot gives nothing
// more back, whether the slot was granted at once or after a wait.
func TestLimits_SlotReleasedTwice(t *testing.T) {
	cfg := testConfig()
	cfg.MaxStreamsPerTunnel = 2
	cfg.MaxRequestsPerVisitor = 1
	l := New(cfg, zerolog.Nop(), &recordedLimits{})
	ctx := context.Background()
	v1, v2, v3 := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32"), netip.MustParsePrefix("192.0.2.3/32")
	first, refusal := l.AcquireStream(ctx, "wiki", v1)
	if refusal != "" {
		t.Fatal("first stream refused")
	}
	waited := make(chan *Slot, 1)
	go func() {
		s, _ := l.AcquireStream(ctx, "wiki", v1) // waits for first
		waited <- s
	}()
	for deadline := time.Now().Add(10 * time.Second); ; runtime.Gosched() {
		l.mu.Lock()
		n := len(l.waitersBy[visitorKey{"wiki", v1}])
		l.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no request waiting after 10s")
		}
	}
	first.Release()
	second := testwait.Recv(t, waited, 10*time.Second)
	if second == nil {
		t.Fatal("the waiting request was refused")
	}
	first.Release() // its slot went to second: nothing more is free
	if _, refusal := l.AcquireStream(ctx, "wiki", v2); refusal != "" {
		t.Fatalf("v2 with one slot free: refused %q", refusal)
	}
	if _, refusal := l.AcquireStream(ctx, "wiki", v3); refusal != RefusedTunnel {
		t.Fatalf("v3 with both slots held: got %q, want %q", refusal, RefusedTunnel)
	}
	second.Release()
	second.Release()
	if _, refusal := l.AcquireStream(ctx, "wiki", v3); refusal != "" {
		t.Fatalf("v3 with one slot free: refused %q", refusal)
	}
	if _, refusal := l.AcquireStream(ctx, "wiki", v1); refusal != RefusedTunnel {
		t.Fatalf("v1 with both slots held: got %q, want %q", refusal, RefusedTunnel)
	}
}

// session is a Session that ends when its channel is closed.
type session chan struct{}

func (s session) Done() <-chan struct{} { return s }

// TestLimits_TunnelsPerAccountAcrossSessions: an account's tunnels count
// across its live sessions, a session that has ended stops counting, and
// accounts do not share a limit.
func TestLimits_TunnelsPerAccountAcrossSessions(t *testing.T) {
	l := New(testConfig(), zerolog.Nop(), nil)
	a, b, c := make(session), make(session), make(session)
	if _, ok := l.AddTunnels("alice", a, 3, 5); !ok {
		t.Fatal("first session refused")
	}
	if open, ok := l.AddTunnels("alice", b, 3, 5); ok || open != 3 {
		t.Fatalf("3 more over a limit of 5: got ok=%v open=%d, want refused with 3 open", ok, open)
	}
	if _, ok := l.AddTunnels("bob", c, 5, 5); !ok {
		t.Fatal("another account refused for alice's tunnels")
	}
	if _, ok := l.AddTunnels("alice", b, 2, 5); !ok {
		t.Fatal("2 more within the limit refused")
	}
	close(a)
	if open, ok := l.AddTunnels("alice", c, 3, 5); !ok || open != 2 {
		t.Fatalf("after a session ended: got ok=%v open=%d, want admitted with 2 open", ok, open)
	}
}

func TestLimits_VisitorAuthWaitAfterFreeFailures(t *testing.T) {
	var logs bytes.Buffer
	log := zerolog.New(&logs).Level(zerolog.InfoLevel)
	l := New(testConfig(), log, nil)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	bad := netip.MustParsePrefix("192.0.2.7/32")
	good := netip.MustParsePrefix("2001:db8::/64")

	var got []time.Duration
	for range VisitorAuthFreeFailures + 3 {
		got = append(got, l.VisitorAuthWait(bad))
		l.VisitorAuthFailed(bad, log)
	}
	got = append(got, l.VisitorAuthWait(bad))
	want := []time.Duration{0, 0, 0, 0, 0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits before each attempt: got %v, want %v", got, want)
		}
	}
	if d := l.VisitorAuthWait(good); d != 0 {
		t.Errorf("another source: got wait %v, want 0", d)
	}
	if n := strings.Count(logs.String(), "repeated wrong tunnel passwords"); n != 1 {
		t.Errorf("burst logged %d times, want once:\n%s", n, logs.String())
	}
	// The wait runs from the last failure, and runs out.
	now = now.Add(3 * time.Second)
	if d := l.VisitorAuthWait(bad); d != 5*time.Second {
		t.Errorf("3s after the last failure: got wait %v, want 5s", d)
	}
	now = now.Add(5 * time.Second)
	if d := l.VisitorAuthWait(bad); d != 0 {
		t.Errorf("once the wait is over: got %v, want 0", d)
	}
	// The wait is capped.
	for range 20 {
		l.VisitorAuthFailed(bad, log)
	}
	if d := l.VisitorAuthWait(bad); d != visitorAuthMaxDelay {
		t.Errorf("after many failures: got wait %v, want the cap %v", d, visitorAuthMaxDelay)
	}
	// A quiet spell forgets the source.
	now = now.Add(authForget)
	if d := l.VisitorAuthWait(bad); d != 0 {
		t.Errorf("after %v without failures: got wait %v, want 0", authForget, d)
	}
}
