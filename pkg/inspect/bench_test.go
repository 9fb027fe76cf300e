package inspect_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/inspect"
)

// BenchmarkCopier: one keep-alive connection's small requests (a 1 KiB
// page) and a 4 MiB download through the inspector's copier, against the
// raw copy (io.Copy both ways), on loopback in one process. make bench has
// the figures of the real client; this one isolates the copier.
func BenchmarkCopier(b *testing.B) {
	page := strings.Repeat("x", 1024)
	big := strings.Repeat("y", 4<<20)
	svc := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			io.WriteString(w, big)
			return
		}
		io.WriteString(w, page)
	})
	for _, mode := range []string{"raw", "inspect"} {
		for _, path := range []string{"/small", "/big"} {
			b.Run(mode+path, func(b *testing.B) {
				r := newRig(b, inspect.DefaultConfig(), svc)
				r.raw = mode == "raw"
				c := r.client(b)
				if path == "/big" {
					b.SetBytes(int64(len(big)))
				}
				b.ResetTimer()
				for b.Loop() {
					resp, err := c.Get("http://wiki.example" + path)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
	}
}
