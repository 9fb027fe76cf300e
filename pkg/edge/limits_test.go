package edge

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/metrics"
)

func TestLimits_AuthDelayGrowsPerSource(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AuthFailDelay, cfg.AuthFailMaxDelay = 100*time.Millisecond, time.Second
	var logs bytes.Buffer
	log := zerolog.New(&logs).Level(zerolog.InfoLevel)
	l := newLimits(cfg, log, (*metrics.Set)(nil))
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	bad := netip.MustParsePrefix("192.0.2.7/32")
	good := netip.MustParsePrefix("198.51.100.1/32")

	var got []time.Duration
	for range 8 {
		l.authFailed(bad, log)
		got = append(got, l.authDelay(bad))
	}
	want := []time.Duration{0, 0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, time.Second, time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays after each failure: got %v, want %v", got, want)
		}
	}
	if d := l.authDelay(good); d != 0 {
		t.Errorf("another source: got delay %v, want 0", d)
	}
	if n := strings.Count(logs.String(), "repeated authentication failures"); n != 1 {
		t.Errorf("burst logged %d times, want once:\n%s", n, logs.String())
	}
	// A quiet spell ends the burst: no delay, and the next burst is
	// logged again.
	now = now.Add(authForget)
	if d := l.authDelay(bad); d != 0 {
		t.Errorf("after %v without failures: got delay %v, want 0", authForget, d)
	}
	for range authFreeFailures {
		l.authFailed(bad, log)
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
		if got := sourceKey(addr).String(); got != tt.want {
			t.Errorf("sourceKey(%s): got %s, want %s", tt.addr, got, tt.want)
		}
	}
}

func TestLimits_HandshakeSlots(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxHandshakes, cfg.MaxHandshakesPerIP = 3, 2
	l := newLimits(cfg, zerolog.Nop(), (*metrics.Set)(nil))
	a := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}
	b := &net.TCPAddr{IP: net.ParseIP("192.0.2.2"), Port: 1}
	g1, ok1 := l.admitConn(a)
	_, ok2 := l.admitConn(a)
	_, ok3 := l.admitConn(a)
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("one source: got %v %v %v, want the third refused", ok1, ok2, ok3)
	}
	if _, ok := l.admitConn(b); !ok {
		t.Fatal("another source refused while the server has a slot")
	}
	if _, ok := l.admitConn(b); ok {
		t.Fatal("got a fourth handshake, want MaxHandshakes=3 to refuse it")
	}
	g1.handshakeDone()
	g1.release() // idempotent: gives back nothing twice
	if _, ok := l.admitConn(a); !ok {
		t.Fatal("slot not given back")
	}
	if _, ok := l.admitConn(a); ok {
		t.Fatal("slot given back twice")
	}
}

func TestConfig_ValidateLimits(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"zero handshakes", func(c *Config) { c.MaxHandshakes = 0 }, false},
		{"zero handshakes per ip", func(c *Config) { c.MaxHandshakesPerIP = 0 }, false},
		{"zero sessions per ip", func(c *Config) { c.MaxSessionsPerIP = 0 }, false},
		{"zero tunnels per token", func(c *Config) { c.MaxTunnelsPerToken = 0 }, false},
		{"zero streams per tunnel", func(c *Config) { c.MaxStreamsPerTunnel = 0 }, false},
		{"zero requests per visitor", func(c *Config) { c.MaxRequestsPerVisitor = 0 }, false},
		{"requests per visitor above streams per tunnel", func(c *Config) { c.MaxRequestsPerVisitor = c.MaxStreamsPerTunnel + 1 }, true},
		{"zero visitor idle timeout", func(c *Config) { c.VisitorIdleTimeout = 0 }, false},
		{"zero slow reader budget", func(c *Config) { c.SlowReaderBudget = 0 }, false},
		{"zero auth delay", func(c *Config) { c.AuthFailDelay = 0 }, false},
		{"max delay below delay", func(c *Config) { c.AuthFailMaxDelay = c.AuthFailDelay / 2 }, false},
		{"max delay beyond the handshake", func(c *Config) { c.AuthFailMaxDelay = c.Mux.HandshakeTimeout }, false},
	}
	for _, tt := range tests {
		c := DefaultConfig()
		c.Domain, c.TLSConfig, c.AllowAnonymous = "example.com", newEmptyTLS(), true
		tt.mod(&c)
		if err := c.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: got %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

type recordedLimits struct{ kinds []string }

func (r *recordedLimits) RateLimited(kind string) { r.kinds = append(r.kinds, kind) }

func TestLimits_ReportsRefusalsToRecorder(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxStreamsPerTunnel = 2
	cfg.MaxRequestsPerVisitor = 1
	cfg.MaxHandshakesPerIP = 1
	rec := &recordedLimits{}
	l := newLimits(cfg, zerolog.Nop(), rec)
	v1, v2, v3 := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8::/64"), netip.MustParsePrefix("192.0.2.3/32")
	ctx := context.Background()
	// A request over its source's share waits for the share until its
	// context ends: a cancelled one is refused at once.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	release, refusal := l.acquireStream(ctx, "wiki", v1)
	if refusal != "" {
		t.Fatal("first stream refused")
	}
	if _, refusal := l.acquireStream(cancelled, "wiki", v1); refusal != refusedVisitor {
		t.Fatalf("second stream of one visitor: got %q, want refused over its share of 1", refusal)
	}
	if _, refusal := l.acquireStream(ctx, "other", v1); refusal != "" {
		t.Fatalf("the visitor's first stream to another tunnel refused: %q", refusal)
	}
	if _, refusal := l.acquireStream(ctx, "wiki", v2); refusal != "" {
		t.Fatalf("another visitor refused: %q", refusal)
	}
	if _, refusal := l.acquireStream(ctx, "wiki", v3); refusal != refusedTunnel {
		t.Fatalf("third stream: got %q, want refused over the tunnel's limit of 2", refusal)
	}
	release()
	if _, refusal := l.acquireStream(ctx, "wiki", v1); refusal != "" {
		t.Fatalf("the visitor after its stream ended: refused %q", refusal)
	}
	addr := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}
	g, ok := l.admitConn(addr)
	if !ok {
		t.Fatal("first handshake refused")
	}
	defer g.release()
	if _, ok := l.admitConn(addr); ok {
		t.Fatal("second handshake admitted over a limit of 1")
	}
	if got, want := strings.Join(rec.kinds, ","), "visitor,stream,handshake"; got != want {
		t.Fatalf("recorded %q, want %q", got, want)
	}
}

// TestLimits_OverTheShareWaitsForItsOwnSlot: requests over a source's share
// wait, holding no slot of the tunnel, and each finished request of that
// source hands its slot to the oldest; at most visitorQueue wait.
func TestLimits_OverTheShareWaitsForItsOwnSlot(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxStreamsPerTunnel = 3
	cfg.MaxRequestsPerVisitor = 1
	l := newLimits(cfg, zerolog.Nop(), &recordedLimits{})
	ctx := context.Background()
	v1, v2 := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")
	first, refusal := l.acquireStream(ctx, "wiki", v1)
	if refusal != "" {
		t.Fatal("first stream refused")
	}
	type result struct {
		release func()
		refusal string
	}
	wctx, cancelWaiters := context.WithCancel(ctx)
	defer cancelWaiters()
	results := make(chan result, visitorQueue+1)
	for range visitorQueue {
		go func() {
			r, why := l.acquireStream(wctx, "wiki", v1)
			results <- result{r, why}
		}()
	}
	recvWithin := func(t *testing.T, ch <-chan result, d time.Duration) result {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-time.After(d):
			t.Fatalf("no answer within %v", d)
			return result{}
		}
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
	if _, refusal := l.acquireStream(ctx, "wiki", v1); refusal != refusedVisitor {
		t.Fatalf("one more than visitorQueue waiting: got %q, want refused", refusal)
	}
	// The waiting requests hold no slot: another source gets the other two.
	a, ra := l.acquireStream(ctx, "wiki", v2)
	_, rb := l.acquireStream(ctx, "wiki", netip.MustParsePrefix("192.0.2.3/32"))
	if ra != "" || rb != "" {
		t.Fatalf("other sources while one waits: refused %q, %q", ra, rb)
	}
	a()
	first()
	got := recvWithin(t, results, 10*time.Second)
	if got.refusal != "" {
		t.Fatalf("the oldest waiting request: refused %q, want the slot", got.refusal)
	}
	select {
	case r := <-results:
		t.Fatalf("a second waiting request got an answer (%q) with one slot handed on", r.refusal)
	default:
	}
	got.release()
	got = recvWithin(t, results, 10*time.Second)
	cancelWaiters()
	for range visitorQueue - 2 {
		if r := recvWithin(t, results, 10*time.Second); r.refusal != refusedVisitor {
			t.Fatalf("a waiting request whose context ended: got %q, want refused", r.refusal)
		}
	}
	got.release()
	l.mu.Lock()
	defer l.mu.Unlock()
	if n, w := l.visitorsBy[visitorKey{"wiki", v1}], len(l.waitersBy); n != 0 || w != 0 {
		t.Fatalf("after every request: %d streams of the source, %d waiting lists; want 0 and 0", n, w)
	}
}
