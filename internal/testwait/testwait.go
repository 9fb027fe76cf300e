// Package testwait holds the one bounded wait our tests use instead of
// sleeps: receive a value from a channel, or fail the test after a limit.
//
// It is its own package, importing only the standard library, so that the
// tests of pkg/mux (which cannot import internal/edgetest: that imports
// pkg/edge, which imports pkg/mux), pkg/edge, internal/edgetest and e2e all
// share one copy. Nothing outside tests imports it.
package testwait

import (
	"testing"
	"time"
)

// Recv returns the next value from ch, failing t if none comes within d.
// Call it from the test's goroutine only, as with t.Fatal.
func Recv[T any](t testing.TB, ch <-chan T, d time.Duration) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("nothing received within %v", d)
		panic("unreachable")
	}
}
