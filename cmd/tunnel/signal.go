package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Stopping by signal. The first SIGINT or SIGTERM stops the client
// gracefully: it tells tunneld it is leaving and lets the streams in flight
// finish within --drain-timeout. That may take the whole timeout, so it
// says so at once, on stderr and in the live view, with how to cut it
// short: a second signal exits at once, with exitForced's code.

// exitForced is the exit code when a second signal cuts the drain short:
// 128 plus the signal's number, as a shell reports a process that a signal
// ended (130 for SIGINT, 143 for SIGTERM).
func exitForced(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 128 + int(syscall.SIGINT)
}

// againHint says how to cut the drain short after sig.
func againHint(sig os.Signal) string {
	if sig == syscall.SIGTERM {
		return "SIGTERM again to quit"
	}
	return "Ctrl-C again to quit"
}

// drainNotice is what the first signal prints, with open streams in flight
// and a drain of up to timeout; "" when none are open, as the client then
// exits at once.
func drainNotice(sig os.Signal, open int64, timeout time.Duration) string {
	if open <= 0 {
		return ""
	}
	return fmt.Sprintf("tunnel: draining %s (up to %s); %s", streamsWord(open), shortDuration(timeout), againHint(sig))
}

func streamsWord(n int64) string {
	if n == 1 {
		return "1 stream"
	}
	return fmt.Sprintf("%d streams", n)
}

// shortDuration writes d as a person would: 10s, 1.5s, 2m, 1m30s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// stopOnSignal returns a context that the first SIGINT or SIGTERM cancels,
// after calling first with it; a second signal calls exit with exitForced's
// code. stop ends the watch (call it once the run has returned).
func stopOnSignal(parent context.Context, first func(os.Signal), exit func(code int)) (ctx context.Context, stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(parent)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		watchSignals(sigs, done, cancel, first, exit)
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			wg.Wait()
			cancel()
		})
	}
}

// watchSignals is stopOnSignal's goroutine, until done is closed.
func watchSignals(sigs <-chan os.Signal, done <-chan struct{}, cancel context.CancelFunc, first func(os.Signal), exit func(int)) {
	select {
	case sig := <-sigs:
		first(sig)
		cancel()
	case <-done:
		return
	}
	select {
	case sig := <-sigs:
		exit(exitForced(sig))
	case <-done:
	}
}
