// Package httpserve runs an http.Server on a listener until a context ends,
// then shuts it down gracefully. It exists because tunneld serves three
// http.Servers the same way (the edge's public port, its port-80 companion
// in pkg/edge, and the admin listener in pkg/admin), and the admin must not
// reach into the edge for it. cmd/demo-page uses it too. Page is the one
// way tunneld writes its own short answers (the edge's, the sign-in's).
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Serve runs srv.Serve(ln) until ctx ends, then shuts srv down: requests in
// flight get grace to finish; when grace runs out, overGrace (if not nil) is
// told Shutdown's error and the remaining connections are closed. It
// returns once Serve has: Serve's error if Serve stopped on its own, else
// nil.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration, overGrace func(error)) error {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	graceCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(graceCtx); err != nil {
		if overGrace != nil {
			overGrace(err)
		}
		srv.Close()
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Page writes a short plain-text answer: the status, its text, and msg.
// It is how tunneld answers for itself (the edge's refusals, the sign-in's
// pages): plain text, never sniffed, carries no script, so echoing a host
// or an email address in msg is safe; and no cache keeps it.
func Page(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintf(w, "%d %s\n\n%s\n", status, http.StatusText(status), msg)
}
