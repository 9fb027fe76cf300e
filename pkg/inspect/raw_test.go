package inspect_test

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/inspect"
)

// rawRig is the inspector's copier between a visitor's TCP connection and
// a raw TCP service that answers with fixed bytes once the request's first
// byte is in, closes its write side, and records every byte it receives.
func rawRig(t *testing.T, answer []byte) (front string, got <-chan []byte, in *inspect.Inspector) {
	t.Helper()
	return rawRigFunc(t, func(c net.Conn) []byte {
		var buf bytes.Buffer
		first := make([]byte, 1)
		if _, err := io.ReadFull(c, first); err != nil {
			return nil
		}
		buf.Write(first)
		c.Write(answer)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(&buf, c)
		return buf.Bytes()
	})
}

// rawRigFunc is rawRig with the service's behaviour given: serve handles
// the one connection and returns what it received.
func rawRigFunc(t *testing.T, serve func(net.Conn) []byte) (front string, got <-chan []byte, in *inspect.Inspector) {
	t.Helper()
	in, err := inspect.New(inspect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	received := make(chan []byte, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := svc.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		received <- serve(c)
	}()
	r := &rig{in: in, target: svc.Addr().String()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		r.pipe(c)
	}()
	t.Cleanup(func() {
		ln.Close()
		svc.Close()
		wg.Wait()
	})
	return ln.Addr().String(), received, in
}

// TestInspector_BytesPassUnchanged: the inspector only watches. Whatever a
// visitor sends and a service answers (odd header case and order, a
// pipelined request, then bytes that are not HTTP at all) arrives byte for
// byte, in both directions.
func TestInspector_BytesPassUnchanged(t *testing.T) {
	request := []byte("POST /a HTTP/1.1\r\nhost: x\r\nX-B: 1\r\nx-a: 2\r\ncontent-length: 3\r\n\r\nabc" +
		"GET /b?q=%20 HTTP/1.1\r\nHost: x\r\n\r\n" +
		"\x00\x01\x02 not http \xff\r\n\r\n")
	answer := []byte("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-Z: z\r\n\r\nok" +
		"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n" +
		"\xfe\xfd garbage after")
	front, got, _ := rawRig(t, answer)
	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(request); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	back, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, answer) {
		t.Errorf("the visitor got %q, want %q", back, answer)
	}
	if in := testwait.Recv(t, got, 10*time.Second); !bytes.Equal(in, request) {
		t.Errorf("the service got %q, want %q", in, request)
	}
}

// TestInspector_NotHTTPIsCopiedRaw: a stream that does not start as
// HTTP/1.1 (HTTP/2 prior knowledge, say) is copied raw, and nothing is
// recorded.
func TestInspector_NotHTTPIsCopiedRaw(t *testing.T) {
	request := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + strings.Repeat("\x00\x00\x12\x04", 1000))
	answer := []byte("\x00\x00\x00\x04\x01\x00\x00\x00\x00")
	front, got, in := rawRig(t, answer)
	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(request)
	c.(*net.TCPConn).CloseWrite()
	back, _ := io.ReadAll(c)
	if !bytes.Equal(back, answer) {
		t.Errorf("the visitor got %q, want %q", back, answer)
	}
	if b := testwait.Recv(t, got, 10*time.Second); !bytes.Equal(b, request) {
		t.Errorf("the service got %d bytes, want the %d sent", len(b), len(request))
	}
	if _, n := in.Stats(); n != 0 {
		t.Errorf("%d exchanges recorded, want none", n)
	}
}

// TestInspector_UnreadableResponseThenManyRequests: once the responses
// cannot be followed (not HTTP), the requests that keep coming on the
// stream (more than the queue holds) still reach the service.
func TestInspector_UnreadableResponseThenManyRequests(t *testing.T) {
	request := []byte(strings.Repeat("GET /x HTTP/1.1\r\nHost: x\r\n\r\n", 100))
	front, got, _ := rawRig(t, []byte("NOT HTTP AT ALL\r\n\r\n"))
	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(request); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound, should the stream stall
	io.ReadAll(c)
	if b := testwait.Recv(t, got, 10*time.Second); !bytes.Equal(b, request) {
		t.Errorf("the service got %d bytes, want all %d", len(b), len(request))
	}
}

// TestInspector_UnsolicitedResponseIsForwarded: bytes from the service
// that answer no request (a 408 on an idle connection, then its close)
// reach the visitor, and its close ends the stream, as without the
// inspector.
func TestInspector_UnsolicitedResponseIsForwarded(t *testing.T) {
	answer := []byte("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	front, got, _ := rawRigFunc(t, func(c net.Conn) []byte {
		c.Write(answer)
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		return b
	})
	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The visitor sends nothing: this ends only if the 408 and the close
	// come through (the deadline bounds the wait, should they be held).
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	back, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(back, answer) {
		t.Errorf("the visitor got %q (%v), want %q", back, err, answer)
	}
	c.(*net.TCPConn).CloseWrite()
	testwait.Recv(t, got, 10*time.Second)
}
