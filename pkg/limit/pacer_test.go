package limit

import (
	"context"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// cutRecorder is a ResponseWriter that records the write deadlines set
// through http.ResponseController.
type cutRecorder struct {
	http.ResponseWriter
	mu  sync.Mutex
	cut bool
}

func (c *cutRecorder) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.IsZero() && t.Before(time.Now()) {
		c.cut = true
	}
	return nil
}

func (c *cutRecorder) wasCut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut
}

// stalledWrite makes a write from src that has been blocked for two
// seconds, as the pacer's timer sees it.
func stalledWrite(p *Pacer, src string) (*Visit, *cutRecorder) {
	rec := &cutRecorder{}
	v := &Visit{p: p, src: netip.MustParsePrefix(src), rc: *http.NewResponseController(rec)}
	v.beginWrite()
	v.mu.Lock()
	v.wStart = time.Now().Add(-2 * time.Second)
	v.mu.Unlock()
	v.writeTimer()
	return v, rec
}

func TestPacer_CutsTheGreedySourceOnly(t *testing.T) {
	cfg := testConfig()
	cfg.StreamWindow = 256 << 10
	cfg.SlowReaderBudget = 3 * (bufferCost(256<<10) + stallOverhead)
	rec := &recordedLimits{}
	p := NewPacer(cfg, zerolog.Nop(), rec)
	slow, slowRec := stalledWrite(p, "192.0.2.1/32")
	var greedy []*cutRecorder
	var visits []*Visit
	for range 4 {
		v, rec := stalledWrite(p, "2001:db8::/64")
		greedy = append(greedy, rec)
		visits = append(visits, v)
	}
	// Five stalled writes against a budget of three: the greedy source
	// loses its two oldest, the slow visitor none.
	if slowRec.wasCut() {
		t.Fatal("the slow visitor's only stalled write was cut")
	}
	for i, rec := range greedy {
		if want := i < 2; rec.wasCut() != want {
			t.Fatalf("greedy write %d: cut %v, want %v", i, rec.wasCut(), want)
		}
	}
	for _, v := range append(visits, slow) {
		v.end(context.Background(), http.Header{})
	}
	if p.total != 0 || len(p.stalled) != 0 || len(p.heldBy) != 0 {
		t.Fatalf("books not empty after every write ended: total %d, %d stalled, %d sources", p.total, len(p.stalled), len(p.heldBy))
	}

	// Abandoned responses of the greedy source fill the budget: it is
	// refused, a slow visitor elsewhere is neither refused nor cut.
	for range 5 {
		p.abandoned(netip.MustParsePrefix("2001:db8::/64"), -1)
	}
	slow, slowRec = stalledWrite(p, "192.0.2.1/32")
	defer slow.end(context.Background(), http.Header{})
	if slowRec.wasCut() {
		t.Fatal("the slow visitor was cut for what another source abandoned")
	}
	if p.Admit(netip.MustParsePrefix("2001:db8::/64")) {
		t.Fatal("the source that filled the budget was admitted")
	}
	if !p.Admit(netip.MustParsePrefix("192.0.2.1/32")) || !p.Admit(netip.MustParsePrefix("198.51.100.1/32")) {
		t.Fatal("other sources refused")
	}
	if got, want := rec.String(), "slow_reader,slow_reader,slow_reader_refused"; got != want {
		t.Fatalf("recorded %q, want %q", got, want)
	}
}
