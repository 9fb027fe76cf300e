package testwait

import (
	"runtime"
	"testing"
	"time"
)

func TestRecv_ReturnsTheValue(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if got := Recv(t, ch, time.Second); got != 7 {
		t.Fatalf("got %d, want 7", got)
	}
}

func TestRecv_FailsWhenNothingComes(t *testing.T) {
	// Run in a goroutine of its own: Fatalf ends it with runtime.Goexit.
	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Recv(rec, make(chan int), time.Millisecond)
	}()
	<-done
	if !rec.failed {
		t.Fatal("Recv on a silent channel did not fail the test")
	}
}

// recorder is a testing.TB whose Fatalf records the failure and ends the
// calling goroutine without failing the real test.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(string, ...any) {
	r.failed = true
	runtime.Goexit()
}
