package mux

import (
	"io"
	"time"
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
