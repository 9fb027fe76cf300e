package metrics

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// writes records each Write to it as one string and reports it on ch.
type writes struct {
	mu  sync.Mutex
	all []string
	ch  chan string
}

func newWrites() *writes { return &writes{ch: make(chan string, 1024)} }

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.all = append(w.all, string(p))
	w.mu.Unlock()
	w.ch <- string(p)
	return len(p), nil
}

func (w *writes) got() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.all...)
}

func line(i int) string { return fmt.Sprintf(`{"message":"request","n":%04d}`+"\n", i) } // 31 bytes

func TestLogBuffer_FlushesOnTickWithoutShutdown(t *testing.T) {
	out := newWrites()
	b := NewLogBuffer(out, 0)
	ctx, cancel := context.WithCancel(context.Background())
	ticks := make(chan time.Time)
	done := make(chan struct{})
	go func() { defer close(done); b.runTicks(ctx, ticks) }()
	defer func() { cancel(); <-done }()

	want := line(1) + line(2) + line(3)
	for i := 1; i <= 3; i++ {
		if _, err := b.Write([]byte(line(i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := out.got(); len(got) != 0 {
		t.Fatalf("written before any flush: %q", got)
	}
	ticks <- time.Now()
	select {
	case got := <-out.ch:
		if got != want {
			t.Fatalf("after a tick got %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing written after a tick")
	}
	// The next tick with nothing held writes nothing; a line after it
	// waits for the one after.
	ticks <- time.Now()
	b.Write([]byte(line(4)))
	ticks <- time.Now()
	select {
	case got := <-out.ch:
		if got != line(4) {
			t.Fatalf("after the third tick got %q, want %q", got, line(4))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing written after the third tick")
	}
}

func TestLogBuffer_RunFlushesWhenContextEnds(t *testing.T) {
	out := newWrites()
	b := NewLogBuffer(out, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, time.Hour) }()
	b.Write([]byte(line(1)))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := out.got(); len(got) != 1 || got[0] != line(1) {
		t.Fatalf("after Run returned got %q, want one write of %q", got, line(1))
	}
}

func TestLogBuffer_BoundedAndLinesWhole(t *testing.T) {
	out := newWrites()
	b := NewLogBuffer(out, 100) // three 31-byte lines fit, a fourth does not
	for i := 1; i <= 3; i++ {
		b.Write([]byte(line(i)))
	}
	if got := out.got(); len(got) != 0 {
		t.Fatalf("written before the buffer was full: %q", got)
	}
	b.Write([]byte(line(4)))
	if got, want := out.got(), []string{line(1) + line(2) + line(3)}; !slices.Equal(got, want) {
		t.Fatalf("after a line that did not fit got %q, want %q", got, want)
	}
	big := strings.Repeat("x", 150) + "\n"
	if n, err := b.Write([]byte(big)); n != len(big) || err != nil {
		t.Fatalf("Write of a line larger than the buffer = %d, %v", n, err)
	}
	if got, want := out.got(), []string{line(1) + line(2) + line(3), line(4), big}; !slices.Equal(got, want) {
		t.Fatalf("after a line larger than the buffer got %q, want %q", got, want)
	}
	// Exactly full flushes at once.
	b2 := NewLogBuffer(out, 2*len(line(0)))
	b2.Write([]byte(line(5)))
	b2.Write([]byte(line(6)))
	if got := out.got(); got[len(got)-1] != line(5)+line(6) {
		t.Fatalf("a full buffer was not written: %q", got)
	}
}

func TestLogBuffer_CloseFlushesThenWritesThrough(t *testing.T) {
	out := newWrites()
	b := NewLogBuffer(out, 0)
	b.Write([]byte(line(1)))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	b.Write([]byte(line(2))) // a request that ended after shutdown
	if got, want := out.got(), []string{line(1), line(2)}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestLogBuffer_Concurrent writes from many goroutines while flushes run:
// every line arrives once and whole.
func TestLogBuffer_Concurrent(t *testing.T) {
	out := newWrites()
	out.ch = make(chan string, 1<<16)
	b := NewLogBuffer(out, 10*len(line(0))+5)
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				b.Write([]byte(line(w*each + i)))
				if i%50 == 0 {
					b.Flush()
				}
			}
		}()
	}
	wg.Wait()
	b.Close()
	seen := make(map[string]int)
	for _, w := range out.got() {
		if !strings.HasSuffix(w, "\n") || len(w)%len(line(0)) != 0 {
			t.Fatalf("a write that splits a line: %q", w)
		}
		for l := range strings.SplitAfterSeq(w, "\n") {
			if l != "" {
				seen[l]++
			}
		}
	}
	for i := range writers * each {
		if seen[line(i)] != 1 {
			t.Fatalf("line %d arrived %d times", i, seen[line(i)])
		}
	}
}
