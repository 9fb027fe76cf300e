package inspect_test

import (
	"io"
	"net/http"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/inspect"
)

// BenchmarkCopier: one keep-alive connection's small requests (a 1 KiB
// page) and a 4 MiB download through the inspector's copier, against the
// raw copy (io.Copy both ways), on loopback in one process. make bench has
// the figures of the real client; this one isolates the copier.
//
// inspect-full/small is the case make bench meets once its earlier phases
// have filled the store: the store is filled before the clock starts, so
// every exchange recorded evicts an old one, under the soft memory limit
// the client sets (the cap plus 24 MiB, cmd/tunnel's limitMemory). Its
// allocs/op less raw/small's are the inspector's allocations per recorded
// exchange; held-B/exchange is what the store counts for each.
func BenchmarkCopier(b *testing.B) {
	page := strings.Repeat("x", 1024)
	big := strings.Repeat("y", 4<<20)
	svc := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			io.WriteString(w, big)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, page)
	})
	get := func(b *testing.B, c *http.Client, path string) {
		req, _ := http.NewRequest(http.MethodGet, "http://wiki.example"+path, nil)
		// What a visitor's request carries through tunneld.
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", "wiki.example")
		req.Header.Set("Accept", "*/*")
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, mode := range []string{"raw", "inspect", "inspect-full"} {
		for _, path := range []string{"/small", "/big"} {
			if mode == "inspect-full" && path == "/big" {
				continue // a 4 MiB body evicts by itself: inspect/big says it
			}
			b.Run(mode+path, func(b *testing.B) {
				cfg := inspect.DefaultConfig()
				r := newRig(b, cfg, svc)
				r.raw = mode == "raw"
				c := r.client(b)
				if path == "/big" {
					b.SetBytes(int64(len(big)))
				}
				if mode == "inspect-full" {
					old := debug.SetMemoryLimit(cfg.MaxMemory + 24<<20)
					b.Cleanup(func() { debug.SetMemoryLimit(old) })
					for {
						used, _ := r.in.Stats()
						if used > cfg.MaxMemory-16<<10 {
							break
						}
						get(b, c, path)
					}
				}
				b.ReportAllocs()
				gc0 := gcCPU()
				b.ResetTimer()
				for b.Loop() {
					get(b, c, path)
				}
				b.StopTimer()
				// The collector's CPU: what a full store costs besides
				// the allocations, and steadier than ns/op on a shared
				// machine.
				b.ReportMetric((gcCPU()-gc0)*1e9/float64(b.N), "gc-ns/op")
				if mode != "raw" {
					used, n := r.in.Stats()
					b.ReportMetric(float64(used)/float64(n), "held-B/exchange")
				}
			})
		}
	}
}

// gcCPU returns the CPU seconds the runtime estimates its collector has
// spent so far.
func gcCPU() float64 {
	s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	return s[0].Value.Float64()
}
