package edge_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// yamux frame types and flags, written by hand (yamux's spec.md) so that a
// row can send what no yamux library would.
const (
	ymData, ymWindow, ymPing, ymGoAway = 0, 1, 2, 3
	ymSYN                              = 1
)

func yamuxFrame(typ byte, flags uint16, id, length uint32) []byte {
	b := make([]byte, 12)
	b[1] = typ
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint32(b[4:], id)
	binary.BigEndian.PutUint32(b[8:], length)
	return b
}

// repeatFrames is n frames made by frame(i), in one buffer.
func repeatFrames(n int, frame func(i int) []byte) []byte {
	var b bytes.Buffer
	for i := range n {
		b.Write(frame(i))
	}
	return b.Bytes()
}

// longHandshake gives unauthenticated sessions a minute, so that a row that
// wants its session closed sooner sees the guard close it, not the timeout.
func longHandshake(c *edge.Config) { c.Mux.HandshakeTimeout = time.Minute }

// wantClosedSoon is wantClosed within a bound well under longHandshake.
func wantClosedSoon(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept the session open until the handshake timeout: nothing stopped the attack")
	}
}

// flood writes b to c from a goroutine, never reading, and returns a channel
// closed when the writing stopped (all written, or the server hung up).
func flood(c net.Conn, b []byte) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		for len(b) > 0 {
			n, err := c.Write(b[:min(len(b), 12<<10)])
			if err != nil {
				return
			}
			b = b[n:]
		}
	}()
	return done
}

// peakGoroutines samples runtime.NumGoroutine (the edge runs in this
// process) until done is closed, and returns the highest count.
func peakGoroutines(done <-chan struct{}) int {
	peak := runtime.NumGoroutine()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		peak = max(peak, runtime.NumGoroutine())
		select {
		case <-done:
			return max(peak, runtime.NumGoroutine())
		case <-tick.C:
		}
	}
}

// authedSession is a hand-made client from the attacker's address that has
// been welcomed (bob's token), with its raw TLS connection: frames written
// there whole, one per Write, go between yamux's own.
func (a *abuse) authedSession(t *testing.T, name string) (net.Conn, *yamux.Session, *yamux.Stream) {
	t.Helper()
	conn := a.tlsFrom(t, proto.ALPN, domain)
	sess, st := controlStreamOn(t, conn)
	if err := proto.WriteFrame(st, helloFor(bobToken, name)); err != nil {
		t.Fatal(err)
	}
	if m, err := proto.ReadFrame(st); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*proto.Welcome); !ok {
		t.Fatalf("got %v, want Welcome", m)
	}
	return conn, sess, st
}

// muxHostileRows attack the yamux session and control stream, before and after Hello.
func muxHostileRows() []hostileRow {
	return []hostileRow{
		{"ping flood before hello", longHandshake, func(t *testing.T, a *abuse) {
			// yamux answers each ping in a goroutine that waits until the
			// answer is written; this peer never reads.
			conn := a.tlsFrom(t, proto.ALPN, domain)
			conn.NetConn().(*net.TCPConn).SetReadBuffer(4 << 10)
			base := runtime.NumGoroutine()
			pings := repeatFrames(200_000, func(i int) []byte { return yamuxFrame(ymPing, ymSYN, 0, uint32(i)) })
			peak := peakGoroutines(flood(conn, pings))
			if peak-base > 200 {
				t.Errorf("goroutines went from %d to %d during the flood, want fewer than 200 more", base, peak)
			}
			a.canary(t)
			wantClosedSoon(t, conn)
			if n := a.logs.Count("yamux"); n > 10 {
				t.Errorf("%d yamux log lines, want at most 10", n)
			}
		}},
		{"many streams before hello", longHandshake, func(t *testing.T, a *abuse) {
			// Before: the first became the control stream, 256 waited in
			// yamux's backlog (256 KiB window each) and every one past
			// it logged a warning.
			conn := a.tlsFrom(t, proto.ALPN, domain)
			<-flood(conn, repeatFrames(600, func(i int) []byte { return yamuxFrame(ymWindow, ymSYN, uint32(2*i+1), 0) }))
			wantClosedSoon(t, conn)
			if n := a.logs.Count("yamux"); n > 10 {
				t.Errorf("%d yamux log lines, want at most 10", n)
			}
		}},
		{"client opens a second stream after hello", nil, func(t *testing.T, a *abuse) {
			conn, _, _ := a.authedSession(t, "opener2")
			<-flood(conn, repeatFrames(300, func(i int) []byte { return yamuxFrame(ymWindow, ymSYN, uint32(2*i+101), 0) }))
			wantClosedSoon(t, conn)
			if n := a.logs.Count("opened a stream"); n > 1 {
				t.Errorf("%d lines about client-opened streams, want at most one", n)
			}
			if n := a.logs.Count("yamux"); n > 10 {
				t.Errorf("%d yamux log lines, want at most 10", n)
			}
		}},
		{"frames for streams that do not exist", nil, func(t *testing.T, a *abuse) {
			conn, _, st := a.authedSession(t, "ghostframes")
			var b bytes.Buffer
			for i := range 20_000 {
				b.Write(yamuxFrame(ymWindow, 0, 1001, 1<<16))
				if i%10 == 0 {
					b.Write(yamuxFrame(ymData, 0, 1003, 64))
					b.Write(make([]byte, 64))
				}
			}
			// Whole frames per Write: yamux writes between them.
			for frames := b.Bytes(); len(frames) > 0; {
				n := min(len(frames), 12*1000)
				if _, err := conn.Write(frames[:n]); err != nil {
					t.Fatal(err)
				}
				frames = frames[n:]
			}
			// The server reads in order: its answer comes after the flood.
			if err := proto.WriteFrame(st, &proto.Ping{Seq: 7}); err != nil {
				t.Fatal(err)
			}
			if m, err := proto.ReadFrame(st); err != nil {
				t.Fatalf("session after the flood: %v", err)
			} else if p, ok := m.(*proto.Pong); !ok || p.Seq != 7 {
				t.Fatalf("got %v, want Pong 7", m)
			}
			if n := a.logs.Count("yamux"); n > 10 {
				t.Errorf("%d yamux log lines for 22,000 frames, want at most 10", n)
			}
		}},
		{"repeated goaways", nil, func(t *testing.T, a *abuse) {
			conn, _, st := a.authedSession(t, "goaways")
			reason := "\x1b[2J\x1b[31mFAKE\n{\"level\":\"error\"}" + strings.Repeat("x", 900)
			for range 500 {
				if err := proto.WriteFrame(st, &proto.GoAway{Reason: reason}); err != nil {
					t.Fatal(err)
				}
			}
			// The control loop takes them in order; a Ping's Pong comes after.
			if err := proto.WriteFrame(st, &proto.Ping{Seq: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := proto.ReadFrame(st); err != nil {
				t.Fatalf("control stream after the GoAways: %v", err)
			}
			if n := a.logs.Count("client is draining"); n != 1 {
				t.Errorf("the client's GoAway was logged %d times, want once", n)
			}
			for _, bad := range []string{strings.Repeat("x", 200), `\u001b`, `\n{`} {
				if a.logs.Count(bad) > 0 {
					t.Errorf("the log has the client's reason raw (%q): want it cut and without control characters", bad)
				}
			}
			<-flood(conn, repeatFrames(100, func(int) []byte { return yamuxFrame(ymGoAway, 0, 0, 0) }))
			wantClosedSoon(t, conn)
		}},
	}
}
