package inspect_test

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/inspect"
)

// TestStore_CountsWhatItHolds: what the store counts for the exchanges it
// keeps is at least the heap they hold (the cap bounds the memory, so the
// count must not be the lower of the two), and not far above it (the cap
// would then keep needlessly few). Small exchanges, where the record and
// not the bodies dominate, as make bench's 100,000 requests are.
func TestStore_CountsWhatItHolds(t *testing.T) {
	const n = 5000
	page := strings.Repeat("x", 1024)
	r := newRig(t, inspect.DefaultConfig(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, page)
	}))
	c := r.client(t)
	get := func() {
		req, _ := http.NewRequest(http.MethodGet, "http://wiki.example/small?q=1", nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("Accept", "*/*")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// One request first: the connection and its buffers, which stay, are
	// in place before the first reading.
	get()
	heap0, used0 := liveHeap(), usedOf(r.in)
	for range n {
		get()
	}
	heap1, used1 := liveHeap(), usedOf(r.in)
	held, counted := float64(heap1-heap0)/n, float64(used1-used0)/n
	t.Logf("per exchange: %.0f bytes of heap, %.0f counted", held, counted)
	if counted < held {
		t.Errorf("the store counts %.0f bytes per exchange, below the %.0f it holds", counted, held)
	}
	if counted > 1.5*held {
		t.Errorf("the store counts %.0f bytes per exchange, far above the %.0f it holds", counted, held)
	}
}

func liveHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func usedOf(in *inspect.Inspector) int64 {
	used, _ := in.Stats()
	return used
}

// TestStore_ReusedBodiesAreNotShown: with the store full, evicted bodies'
// memory is reused for new captures; the API, reading exchanges the while
// (a search across all bodies, one exchange's detail), still shows each
// exchange's own body. Under -race a read of reused memory is a race.
func TestStore_ReusedBodiesAreNotShown(t *testing.T) {
	cfg := inspect.DefaultConfig()
	cfg.MaxBody, cfg.MaxMemory = 4<<10, 256<<10
	var n atomic.Int64
	r := newRig(t, cfg, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		// 1 KiB, its number throughout: a body shown with another's bytes
		// would not be all one number.
		io.WriteString(w, strings.Repeat(fmt.Sprintf("%07d\n", n.Add(1)), 128))
	}))
	c := r.client(t)
	done := make(chan error, 1)
	go func() {
		for range 3000 {
			resp, err := c.Get("http://wiki.example/")
			if err != nil {
				done <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- nil
	}()
	api := r.api.Client()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if _, stored := r.in.Stats(); stored >= 3000 {
				t.Fatalf("%d exchanges stored: the store never filled", stored)
			}
			return
		default:
		}
		var l list
		getJSON(t, api, r.api.URL+"/api/exchanges?q=0000", &l)
		if len(l.Exchanges) == 0 {
			continue
		}
		var d struct {
			Response struct {
				Body struct {
					Text string `json:"text"`
				} `json:"body"`
			} `json:"response"`
		}
		if getJSON(t, api, fmt.Sprintf("%s/api/exchanges/%d", r.api.URL, l.Exchanges[0].ID), &d) != http.StatusOK {
			continue // forgotten meanwhile
		}
		body := d.Response.Body.Text
		if len(body) != 1024 || body != strings.Repeat(body[:8], 128) {
			t.Fatalf("exchange %d shows a body that is not its own: %q...", l.Exchanges[0].ID, body[:min(len(body), 64)])
		}
	}
}
