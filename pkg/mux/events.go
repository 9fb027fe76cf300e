package mux

import "time"

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
