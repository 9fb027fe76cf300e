// Package testlog holds the log sink our tests hand to loggers whose
// goroutines outlive a single call: a buffer safe for concurrent writes that
// a test reads back to see what was logged.
//
// It is its own package, importing only the standard library, so that the
// tests of every package (pkg/edge, pkg/peer, pkg/clustercert, ...) share
// one copy. Nothing outside tests imports it.
package testlog

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is a bytes.Buffer that several goroutines may write into while a
// test reads it. The zero value is ready to use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p; it never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Count reports how many times substr occurs in what was written so far.
func (b *Buffer) Count(substr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), substr)
}
