// Package testnet holds loopback TCP services for tests: one accept loop
// that ends with the test, and the echo service the TCP tunnel tests talk
// to. Tests only.
package testnet

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Serve listens on a free loopback port and serves it with ServeOn. It
// returns the address.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ServeOn(t, ln, handle)
	return ln.Addr().String()
}

// ServeOn runs handle for each connection ln accepts, each in its own
// goroutine, until the test ends; cleanup closes ln and waits for every
// handler. ln may be any listener (a TLS one, for instance).
func ServeOn(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
			}()
		}
	}()
}

// Echo is a service that echoes each connection until the peer
// half-closes, then half-closes its own side: a reply that arrives whole
// after the client's CloseWrite proves a half-close went end to end and
// back.
func Echo(t testing.TB) string {
	t.Helper()
	return Serve(t, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
}

// ClosedAddr returns a loopback address that was free a moment ago and
// that nothing listens on: a server that is down.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
