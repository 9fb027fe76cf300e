package mux

import (
	"crypto/tls"
	"net"
	"sync"
)

// WireConn wraps the TCP connection under a session's TLS so that each yamux
// frame leaves in one write(2) instead of one per TLS record.
//
// crypto/tls writes every record (at most 16 KiB of payload) with its own
// Write on the connection below it, so a 32 KiB data frame cost three
// syscalls, three wake-ups of the peer's reader and three loopback or NIC
// transmissions. A frameWriter above the TLS connection corks the WireConn
// for the length of one frame: the records collect in a pooled buffer and go
// out together when the frame is done. Writes that are not corked (the TLS
// handshake, alerts, and everything on connections that turn out to be
// visitors rather than tunnel clients) pass straight through.
//
// tunneld wraps every accepted connection before its TLS handshake, since
// ALPN only tells later whether it is a session; the client wraps its dial.
func WireConn(c net.Conn) net.Conn { return &wireConn{Conn: c} }

// wireBufMax is the largest buffer returned to the pool; a bigger one, from
// an unusually large frame, is left to the garbage collector.
const wireBufMax = 256 << 10

var wireBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, maxMergedWrite+maxMergedWrite/8)
	return &b
}}

type wireConn struct {
	net.Conn
	mu     sync.Mutex // orders corked and pass-through writes
	corked bool
	buf    *[]byte
}

func (c *wireConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		if c.buf == nil {
			c.buf = wireBufs.Get().(*[]byte)
		}
		*c.buf = append(*c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// cork holds writes until flush.
func (c *wireConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// flush writes what was held in one Write and uncorks.
func (c *wireConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if c.buf == nil {
		return nil
	}
	bp := c.buf
	c.buf = nil
	_, err := c.Conn.Write(*bp)
	if cap(*bp) <= wireBufMax {
		*bp = (*bp)[:0]
		wireBufs.Put(bp)
	}
	return err
}

// corker finds the wireConn under conn, if conn is a TLS connection over one.
func corker(conn net.Conn) *wireConn {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return nil
	}
	wc, _ := tc.NetConn().(*wireConn)
	return wc
}
