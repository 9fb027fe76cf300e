package mux

import (
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// WireConn wraps the TCP connection under a session's TLS so that writes
// leave in as few write(2) calls as the load allows.
//
// crypto/tls writes every record (at most 16 KiB of payload) with its own
// Write on the connection below it, and yamux writes every frame from its one
// send goroutine, waiting for each write to finish before taking the next
// frame. So a 32 KiB frame cost three syscalls and three wake-ups of the
// peer, and 64 concurrent requests cost 64 writes one after another while
// the send goroutine could not even seal the next frame.
//
// Once a session starts on it (newFrameWriter calls batch), a WireConn
// queues writes and a flusher goroutine, started when there is something to
// write and gone when the queue is empty, writes everything queued in one
// call: while it is in the kernel, the frames of other streams collect
// behind it, so under load many frames share a syscall, and an idle session
// has neither a buffer nor a goroutine. The frameWriter above the TLS
// connection corks the WireConn for one frame so its records leave together.
// Before batch (the TLS handshake, and every connection that turns out to be
// a visitor rather than a tunnel client), writes pass straight through.
//
// A write error is sticky: later writes return it and the connection is
// closed, so yamux's reader notices too. At most maxQueued bytes wait; a
// writer beyond that blocks, so a stalled peer stalls yamux's sender and its
// write timeout applies as before. Close writes out what is queued first,
// within closeFlushTimeout.
//
// tunneld wraps every accepted connection before its TLS handshake, since
// ALPN only tells later whether it is a session; the client wraps its dial.
func WireConn(c net.Conn) net.Conn {
	w := &wireConn{Conn: c}
	w.drained = sync.NewCond(&w.mu)
	return w
}

const (
	// wireBufMax is the largest buffer returned to the pool; a bigger one
	// is left to the garbage collector.
	wireBufMax = 1 << 20
	// maxQueued bounds the bytes waiting for the flusher.
	maxQueued = 512 << 10
	// closeFlushTimeout bounds Close's wait for queued bytes.
	closeFlushTimeout = 2 * time.Second
)

var wireBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, maxMergedWrite+maxMergedWrite/8)
	return &b
}}

type wireConn struct {
	net.Conn

	mu       sync.Mutex
	drained  *sync.Cond // the flusher took the queue, or stopped
	batching bool       // queue writes for the flusher
	corked   bool       // a frame is being written: collect it in frame
	frame    *[]byte    // the corked frame's records, nil when none
	queue    *[]byte    // bytes waiting, nil when none
	flushing bool       // a flusher goroutine runs
	err      error      // the first write error, sticky
}

// batch switches the connection to queued writes.
func (c *wireConn) batch() {
	c.mu.Lock()
	c.batching = true
	c.mu.Unlock()
}

func (c *wireConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.batching {
		return c.Conn.Write(p)
	}
	if c.corked {
		if c.frame == nil {
			c.frame = wireBufs.Get().(*[]byte)
		}
		*c.frame = append(*c.frame, p...)
		return len(p), nil
	}
	if err := c.enqueue(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// enqueue appends p to the queue, waiting while the queue is full, and
// starts the flusher. c.mu is held.
func (c *wireConn) enqueue(p []byte) error {
	for c.queue != nil && len(*c.queue) >= maxQueued && c.err == nil {
		c.drained.Wait()
	}
	if c.err != nil {
		return c.err
	}
	if c.queue == nil {
		c.queue = wireBufs.Get().(*[]byte)
	}
	*c.queue = append(*c.queue, p...)
	c.kick()
	return nil
}

// cork collects writes until flush, so a frame's records, written one by
// one by crypto/tls, join the queue together and leave in one write.
func (c *wireConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// flush uncorks and lets the flusher write what is queued. It reports a
// write error seen so far.
func (c *wireConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	frame := c.frame
	if frame == nil {
		return c.err
	}
	c.frame = nil
	defer putWireBuf(frame)
	if c.batching {
		return c.enqueue(*frame)
	}
	if c.err != nil {
		return c.err
	}
	_, err := c.Conn.Write(*frame)
	return err
}

func putWireBuf(b *[]byte) {
	if cap(*b) <= wireBufMax {
		*b = (*b)[:0]
		wireBufs.Put(b)
	}
}

// kick starts the flusher if there is something to write. c.mu is held.
func (c *wireConn) kick() {
	if c.flushing || c.queue == nil || c.err != nil {
		return
	}
	c.flushing = true
	go c.flushLoop()
}

func (c *wireConn) flushLoop() {
	c.mu.Lock()
	for c.queue != nil && c.err == nil {
		buf := c.queue
		c.queue = nil
		c.drained.Broadcast()
		c.mu.Unlock()
		_, err := c.Conn.Write(*buf)
		putWireBuf(buf)
		c.mu.Lock()
		if err != nil && c.err == nil {
			c.err = err
			c.Conn.Close() // so the reader stops too
		}
	}
	c.flushing = false
	c.drained.Broadcast()
	c.mu.Unlock()
}

// waitFlushed waits until the flusher has written everything queued and
// stopped, and returns the write error, if any.
func (c *wireConn) waitFlushed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.flushing {
		c.drained.Wait()
	}
	return c.err
}

// Close writes out what is queued, within closeFlushTimeout, then closes
// the connection. It is safe to call twice.
func (c *wireConn) Close() error {
	c.mu.Lock()
	if c.flushing {
		c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		for c.flushing {
			c.drained.Wait()
		}
	}
	if c.err == nil {
		c.err = net.ErrClosed
	}
	for _, b := range []**[]byte{&c.queue, &c.frame} {
		if *b != nil {
			putWireBuf(*b)
			*b = nil
		}
	}
	c.mu.Unlock()
	return c.Conn.Close()
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
