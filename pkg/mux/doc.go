// Package mux turns one TLS connection between tunnel and tunneld into a
// yamux session and speaks the control protocol (package proto) over it.
//
// Both roles live here so that the rules of a session are written once:
//
//   - The client opens exactly one stream, the control stream, and sends
//     Hello on it. The server answers Welcome or Error.
//   - After Welcome only the server opens streams: one per visitor
//     connection, each starting with a StreamHeader that names the tunnel.
//     A client that opens a second stream ends its session.
//   - The client answers each StreamHeader with StreamAck once it has
//     connected to the tunnel's local target, or with Error when it cannot,
//     so the server can tell "client gone" from "local service down".
//   - GoAway on the control stream means "start no new streams"; the
//     control stream closing ends the session.
//
// The package knows nothing about hostnames, HTTP or certificates of its
// own: Server and Client are handed a net.Conn that is already a TLS
// connection; Run and RunForever dial one themselves, verifying the server
// with the tls.Config their caller gives (system roots plus --ca, ALPN
// tunnel/1). The tunnel names and local addresses come from the callers.
//
// Run connects the client once; RunForever keeps it connected: it retries
// everything but a permanent refusal (and a certificate that does not match
// the client's roots or the host dialed, before a first session: a
// CertificateError, which says what the server presented) with full-jitter
// exponential backoff
// (Backoff), asks again for the names it was granted so URLs survive a
// reconnect, and on the server's GoAway connects a new session while the
// old one drains. Both sides' yamux keepalives notice a silently dead link
// within Config.KeepAliveInterval+WriteTimeout (see SetPeerTimeout).
//
// The bytes on the wire are yamux's, but how they get there is ours
// (WireConn, frameWriter): under the TLS connection, a frame's TLS records
// leave in one write, and frames queued while a write is in the kernel leave
// together in the next, because yamux alone makes one syscall per 16 KiB
// record and one frame at a time. The client's copies grow from 8 KiB to
// 128 KiB buffers for bulk transfers. Both came from profiles; BENCHMARKS.md
// has the figures.
//
// Between yamux and the connection, on both roles, a guard reads the yamux
// frames the peer sends and ends the session when the peer asks more than a
// fixed budget of yamux (guard.go): one stream from a client, a bounded
// number from tunneld (ClientConfig.MaxStreams), a few pings waiting for
// their answers, a few GoAways, and before authentication a few KiB. What
// yamux logs goes through the session's logger, never to stderr raw: a
// line about the connection's end (after a drain, say) at debug, since the
// session's owner logs that end, the rest at warn, all within a per-session
// budget of lines (loglimit.go); the peer's strings reach our logs cut and
// without control characters.
//
// A session starts yamux's goroutines as soon as it exists, so every session
// type here has a Close that must be called; Close is idempotent and waits
// for the goroutines the session owns. A server session can call back on
// GoAway and on its end (Notify) so that tunneld need not park a goroutine
// per idle client.
package mux
