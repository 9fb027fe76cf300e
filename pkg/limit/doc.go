// Package limit bounds what anyone can make tunneld spend. Every connection
// to the public port costs memory and a goroutine before we know who sent
// it, and a tunnel client or a visitor, authenticated or not, can ask for
// more: so each resource a peer can take has a bound here, counted against
// the peer's source address (the IP, or its /64 for IPv6, since one IPv6
// host usually has a whole /64 to pick from: SourceKey) wherever that is
// the only name we have for it. SECURITY.md has the threat model.
//
// Before authenticating (Limits):
//
//   - a TLS handshake, and a client's Hello after it, holds a slot: at most
//     MaxHandshakes in all and MaxHandshakesPerIP per source (AdmitConn,
//     Conn.HandshakeDone). A refused connection is closed without a word,
//     and logged once a minute per source;
//   - a failed token check makes the source's next attempt wait, doubling
//     from AuthFailDelay to AuthFailMaxDelay after AuthFreeFailures free
//     ones (AuthDelay, AuthFailed); the table of failures is bounded and
//     forgets a source ten minutes after its last failure.
//
// After authenticating (Limits):
//
//   - tunnel client sessions per source (Conn.StartSession), and tunnels per
//     account across its live sessions (AddTunnels);
//   - requests in flight per tunnel (MaxStreamsPerTunnel, refused at once:
//     the edge answers 503 with RetryAfter), and per visitor source within
//     a tunnel (PerVisitor): a request over its source's share waits, in a
//     bounded queue and for a bounded time, for one of that source's own
//     requests to finish (AcquireStream);
//   - wrong passwords for a tunnel's basic auth per visitor source: past
//     VisitorAuthFreeFailures, the source is refused for a while, doubling
//     from a second to a minute, and no password of its is checked meanwhile
//     (VisitorAuthWait, VisitorAuthFailed).
//
// Visitors that go slow (Pacer): a read of a request body or a write of a
// response that makes no progress for VisitorIdleTimeout is cut, and what
// stalled and abandoned responses hold in stream buffers is kept under
// SlowReaderBudget, at the expense of the sources holding the most.
//
// The package knows nothing of sessions, routes or the registry: the edge
// passes it source addresses, names and accounts, and turns its refusals
// into protocol errors or HTTP answers. Refusals are counted through a
// Recorder, so the package does not depend on a metrics library; the pacer
// exposes HeldBytes for a gauge instead of registering one. The bookkeeping
// tables are plain maps where an entry lives exactly as long as what it
// counts, and bounded expiring tables (internal/expiring) where it must be
// forgotten after a while.
package limit
