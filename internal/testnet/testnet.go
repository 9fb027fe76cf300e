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

// Serve listens on a free loopback port and runs handle for each
// connection in its own goroutine until the test ends; cleanup closes the
// listener and waits for every handler. It returns the address.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
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
	return ln.Addr().String()
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
