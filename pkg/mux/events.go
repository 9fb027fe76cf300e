package mux

import (
	"fmt"
	"io"
	"runtime/debug"
	"time"

	"github.com/rs/zerolog"
)

// StreamEvent reports one data stream of a client session to
// ClientConfig.OnStream: once when it is connected to its local service
// (Closed false), and once when it ends (Closed true, with its byte counts
// and duration). A stream the client refuses (unknown tunnel, local service
// unreachable) is reported once, Closed with Err set.
//
// A stream carries one visitor connection, which may hold several HTTP
// requests in turn (keep-alive), or a WebSocket: the client sees bytes, not
// requests.
type StreamEvent struct {
	Tunnel   string        // the tunnel's name
	StreamID uint32        // yamux stream id, unique within the session
	Visitor  string        // the visitor's address, as tunneld reported it
	Closed   bool          // false: opened; true: ended
	BytesIn  int64         // bytes from tunneld to the local service (when Closed)
	BytesOut int64         // bytes from the local service to tunneld (when Closed)
	Duration time.Duration // how long the stream was open (when Closed)
	Err      error         // why the stream was refused, if it was
}

// StreamInfo names a data stream for ClientConfig.Copier.
type StreamInfo struct {
	Tunnel   string // the tunnel's name
	Target   string // the local service the stream is connected to, host:port
	StreamID uint32 // yamux stream id, unique within the session
	Visitor  string // the visitor's address, as tunneld reported it
}

// StreamCopier copies the two directions of one data stream in place of
// the raw copy (see ClientConfig.Copier). CopyIn copies what tunneld sent
// (src, the stream) to the local service (dst); CopyOut copies the local
// service's answer (src) to the stream (dst). Each runs in its own
// goroutine, at the same time as the other, and copies until src ends (it
// returns nil) or reading or writing fails (it returns that error); it
// returns the bytes written to dst. What it writes is what the visitor or
// the service sees, so a copier that only watches must write every byte
// it reads, unchanged and without delay. The pipe half-closes or closes
// the connections after each returns, as it does for the raw copy; a
// copier must not close them.
type StreamCopier interface {
	CopyIn(dst io.Writer, src io.Reader) (int64, error)
	CopyOut(dst io.Writer, src io.Reader) (int64, error)
}

// containedCopier keeps a panic in a copier (the inspector parses every
// byte both sides send) to its stream: the panic is logged with its stack
// and returned as the copy's error, so the pipe closes both connections,
// and the client serves every other stream, as it would without the
// copier. A client that runs for months must not end on one odd request.
type containedCopier struct {
	cp  StreamCopier
	log zerolog.Logger
}

func (c containedCopier) CopyIn(dst io.Writer, src io.Reader) (n int64, err error) {
	defer c.contain("in", &err)
	return c.cp.CopyIn(dst, src)
}

func (c containedCopier) CopyOut(dst io.Writer, src io.Reader) (n int64, err error) {
	defer c.contain("out", &err)
	return c.cp.CopyOut(dst, src)
}

func (c containedCopier) contain(direction string, err *error) {
	v := recover()
	if v == nil {
		return
	}
	c.log.Error().Str("direction", direction).Str("panic", fmt.Sprint(v)).Bytes("stack", debug.Stack()).
		Msg("panic in the stream copier; stream closed")
	*err = fmt.Errorf("mux: stream copier panicked: %v", v)
}
