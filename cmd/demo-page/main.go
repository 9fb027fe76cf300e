// Command demo-page serves a small built-in web page for "make demo"
// (scripts/demo.sh), so the demo needs nothing but Go. It is not one of the
// released binaries.
//
// Usage: demo-page [ADDR]. It listens on ADDR (default 127.0.0.1:0, a free
// port), prints the bound address on stdout as its only line, and stops on
// SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tunnelhq/tunnel/internal/httpserve"
)

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>tunnel demo</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>Hello through the tunnel</h1>
<p>This page is served by <code>demo-page</code> on {{.Local}} and reached
through tunneld as <code>https://{{.Host}}</code>.</p>
<p>Visitor address as tunneld saw it: <code>{{.Visitor}}</code></p>
</body></html>
`))

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo-page:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := "127.0.0.1:0"
	switch len(os.Args) {
	case 1:
	case 2:
		addr = os.Args[1]
	default:
		return errors.New("usage: demo-page [ADDR]")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	local := ln.Addr().String()
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			page.Execute(w, map[string]string{"Local": local, "Host": r.Host, "Visitor": r.Header.Get("X-Forwarded-For")})
		}),
	}
	fmt.Println(local)

	// A shutdown that runs out of its 5 s is still an error here, as it
	// was before httpserve: the demo says so rather than exit quietly.
	var shutdownErr error
	if err := httpserve.Serve(ctx, srv, ln, 5*time.Second, func(err error) { shutdownErr = err }); err != nil {
		return err
	}
	return shutdownErr
}
