package metrics

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// Defaults of the access log's buffer: what tunneld uses.
const (
	// LogBufferSize is how much a LogBuffer holds before it writes.
	LogBufferSize = 64 << 10
	// LogFlushEvery is how often LogBuffer.Run writes what it holds, so
	// that a quiet server's lines still show within a second.
	LogFlushEvery = time.Second
)

// LogBuffer is an io.Writer for the access log: it gathers the lines
// written to it and writes them to its output in one call when it holds
// size bytes, when Flush is called (Run calls it every interval), and at
// Close. One write(2) to stderr per request was 5.6 % of tunneld's CPU
// under load; one per 64 KiB is next to nothing.
//
// Each Write is kept whole: a line (zerolog writes one event per Write) is
// never split between two writes to the output. The buffer is bounded: a
// Write that does not fit writes what is held first, synchronously, in the
// caller's goroutine, and a Write larger than the whole buffer goes
// straight through. After Close, Writes go straight through too, so that a
// request that ends after shutdown still gets its line.
//
// Safe for concurrent use; Close is safe to call more than once. Writes to
// the output happen under the buffer's lock, so they are never interleaved
// and keep the order of the Writes.
type LogBuffer struct {
	out  io.Writer
	size int

	mu     sync.Mutex
	buf    []byte
	closed bool
}

// NewLogBuffer returns a LogBuffer writing to out that holds up to size
// bytes (LogBufferSize if size <= 0). It runs nothing: call Run for the
// timed flushes and Close at the end.
func NewLogBuffer(out io.Writer, size int) *LogBuffer {
	if size <= 0 {
		size = LogBufferSize
	}
	return &LogBuffer{out: out, size: size, buf: make([]byte, 0, size)}
}

// Write keeps a copy of p to write later (see LogBuffer). An error is the
// output's, from writing what was held or p itself.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || len(p) >= b.size {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		return b.out.Write(p)
	}
	if len(b.buf)+len(p) > b.size {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) == b.size {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes what the buffer holds.
func (b *LogBuffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

// flushLocked writes the held lines. They are dropped even if the write
// fails: an output that fails would fail again, and the buffer must not
// grow.
func (b *LogBuffer) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.out.Write(b.buf)
	b.buf = b.buf[:0]
	if err != nil {
		return fmt.Errorf("metrics: write access log: %w", err)
	}
	return nil
}

// Run flushes the buffer every interval (LogFlushEvery if <= 0) until ctx
// ends, then once more, and returns nil. Run it beside the servers that
// log into the buffer, and Close the buffer after they have returned.
func (b *LogBuffer) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = LogFlushEvery
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	b.runTicks(ctx, t.C)
	return nil
}

// runTicks flushes at each tick until ctx ends, then once more; tests send
// the ticks themselves.
func (b *LogBuffer) runTicks(ctx context.Context, ticks <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			b.Flush() // an error here is the output's; nowhere better to report it
			return
		case <-ticks:
			b.Flush()
		}
	}
}

// Close writes what the buffer holds; later Writes go straight to the
// output. It returns the output's error, if writing failed.
func (b *LogBuffer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return b.flushLocked()
}
