package main

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testwait"
)

func TestDrainNotice(t *testing.T) {
	tests := []struct {
		sig     os.Signal
		open    int64
		timeout time.Duration
		want    string
	}{
		{os.Interrupt, 1, 10 * time.Second, "tunnel: draining 1 stream (up to 10s); Ctrl-C again to quit"},
		{syscall.SIGINT, 3, 1500 * time.Millisecond, "tunnel: draining 3 streams (up to 1.5s); Ctrl-C again to quit"},
		{syscall.SIGTERM, 2, 2 * time.Minute, "tunnel: draining 2 streams (up to 2m); SIGTERM again to quit"},
		{os.Interrupt, 0, 10 * time.Second, ""},
	}
	for _, tt := range tests {
		if got := drainNotice(tt.sig, tt.open, tt.timeout); got != tt.want {
			t.Errorf("drainNotice(%v, %d, %v): got %q, want %q", tt.sig, tt.open, tt.timeout, got, tt.want)
		}
	}
	if got := exitForced(syscall.SIGINT); got != 130 {
		t.Errorf("forced exit after SIGINT: got %d, want 130", got)
	}
	if got := exitForced(syscall.SIGTERM); got != 143 {
		t.Errorf("forced exit after SIGTERM: got %d, want 143", got)
	}
}

// The first signal announces and cancels; the second exits with 128+signo;
// done ends the watch whichever point it has reached.
func TestWatchSignals(t *testing.T) {
	sigs := make(chan os.Signal, 2)
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, exited := make(chan os.Signal, 1), make(chan int, 1)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		watchSignals(sigs, done, cancel, func(s os.Signal) {
			if ctx.Err() != nil {
				t.Error("canceled before the announcement")
			}
			first <- s
		}, func(code int) { exited <- code })
	}()
	sigs <- syscall.SIGINT
	if got := testwait.Recv(t, first, 5*time.Second); got != syscall.SIGINT {
		t.Fatalf("first: got %v", got)
	}
	testwait.Recv(t, ctx.Done(), 5*time.Second)
	select {
	case code := <-exited:
		t.Fatalf("exited %d after one signal", code)
	default:
	}
	sigs <- syscall.SIGINT
	if got := testwait.Recv(t, exited, 5*time.Second); got != 130 {
		t.Fatalf("second signal: exit %d, want 130", got)
	}
	testwait.Recv(t, ended, 5*time.Second)

	// Without signals, stop ends the watch.
	ctx2, stop := stopOnSignal(context.Background(), func(os.Signal) { t.Error("no signal was sent") }, func(int) { t.Error("no signal was sent") })
	stop()
	stop()
	testwait.Recv(t, ctx2.Done(), 5*time.Second)
}
