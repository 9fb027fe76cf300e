// Package edge is the public side of tunneld: the one TLS port that both
// tunnel clients and visitors connect to.
//
// # One port, two kinds of peer
//
// Every connection on the public listener starts with a TLS handshake. The
// ALPN protocol negotiated in it decides what the connection is: proto.ALPN
// means a tunnel client, whose connection becomes a yamux session (package
// mux); proto.ConnectALPN means a visitor of a TCP tunnel ("tunnel
// connect", tcp.go), who must show a token the tunnel's owner allows before
// anything is opened toward the owner's client; "h2" or "http/1.1" (or none)
// means a visitor, whose connection goes to the public HTTP server. Clients
// therefore need no port of their own, and nothing but TLS ever reaches a
// tunnel.
//
// One kind of connection is recognised before the handshake: a ClientHello
// whose server name is a TLS passthrough tunnel's (passthrough.go, package
// sni) is piped whole, the bytes read replayed, to that tunnel's client; the
// edge never terminates it and never orders a certificate for the name. Every
// other connection gets the bytes read replayed into the edge's own handshake.
//
// # Certificates
//
// The TLS config is injected (Config.TLSConfig: tests, --dev) or built by
// the Server from package certs: a static certificate covering the name
// (Config.StaticCerts, e.g. a wildcard, reloadable), else ACME
// (Config.ACME). The certificates, autocert and its weekly order budget are
// package certs'; the edge keeps what needs its name table. autocert's
// TLS-ALPN-01 challenge arrives on the same port with ALPN "acme-tls/1": its
// handshake is answered with the challenge certificate and the connection
// closed. HTTP-01 is answered by ServePlain, the port-80 companion, which
// otherwise redirects to https (308) or, behind a TLS-terminating load
// balancer, serves the tunnels in plain HTTP (Config.PlainServesTunnels).
// The host policy (acme.go) allows only the apex, names the Registry
// holds and custom domains a tunnel serves now, so the CA is never asked
// about a name nobody serves; each refused name is logged once. TLS 1.2 is the minimum, TLS 1.2 suites are ECDHE
// with AEADs only, and session tickets stay on.
//
// # The path of one request
//
//  1. A visitor asks for https://wiki.example.com/page. The TLS handshake
//     negotiates h2 or http/1.1 and the connection is handed to net/http.
//  2. The handler (proxy.go) parses the Host (port stripped, case folded,
//     trailing dot dropped) into the name "wiki" and looks it up in the
//     Registry, which answers with the Route serving it. A host outside
//     the tunnel domain is looked up whole, as a custom domain, and
//     stands for its tunnel's name from then on (domains.go). No entry: 404
//     naming the host. Held for a client that is away (most likely
//     reconnecting): the handler waits up to Config.OfflineWait for it to
//     come back (Registry.Wait, woken by the client's Claim), then 502.
//  3. The tunnel's visitor access rules, if its owner set any (access.go),
//     are applied: the visitor's address (as visitorAddr believes it)
//     against the allowed and denied prefixes (403), then basic auth
//     against the bcrypt hashes the client sent (401 with WWW-Authenticate;
//     429 once the source has sent too many wrong passwords), then the
//     OpenID Connect sign-in (package oidc's Gate: a redirect to the
//     issuer without a valid session cookie for this host, 403 naming a
//     signed-in identity the tunnel does not allow). A refused visitor
//     takes no slot and opens no stream. The sign-in's one callback URL is
//     served on the apex (oidc.CallbackPath).
//  4. The request takes a slot of the tunnel, within its source's share
//     (package limit, through limits.go). An httputil.ReverseProxy rewrites it
//     (X-Forwarded-* set from the real connection; whatever the visitor sent
//     is dropped, and so is any X-Tunnel-User-* header; the Authorization
//     header too, once basic auth has checked it, unless the owner asked to
//     pass it on; after a sign-in, tunneld's cookies are removed and
//     X-Tunnel-User-Email set) and hands it to the route's own stream pool (roundtrip.go),
//     which takes a kept stream or opens one with Route.Open: for a local
//     session, a yamux stream. The stream starts with a StreamHeader; the
//     client connects its local service and acknowledges, or refuses (502
//     naming the reason). The request is written to the stream and the
//     response read from it on the handler's goroutine, with none of
//     http.Transport's per-connection goroutines in between.
//  5. The request and response bodies stream through; WebSocket upgrades
//     become a raw two-way copy. Finished streams are kept for reuse (up to
//     MaxStreamsPerTunnel, a minute unused), so a busy tunnel does not open a
//     stream per request.
//
// Errors are turned into HTTP responses in one place, proxy.answer, which
// the handler calls before proxying and the ReverseProxy as its
// ErrorHandler: malformed host 400; no or wrong password 401; address not
// allowed 403; unknown host 404; client away, client
// gone or local service refusing 502; tunnel full 503, and a visitor over
// its share or holding the slow-reader budget 429, with Retry-After;
// timeout 504. Bodies are plain text and
// carry no internal detail.
//
// # The edge's own HTTP/1.1 path (issue 14)
//
// Profiles of small requests put net/http's server loop at most of
// tunneld's CPU: a ResponseWriter, a request clone, and a background read
// of the visitor's connection per request. Visitor connections over
// HTTP/1.x (TLS with ALPN http/1.1 or none, and the plain listener when it
// serves tunnels) therefore go through a loop of the edge's own
// (h1conn.go), with net/http's read-header and idle deadlines and
// MaxHeaderBytes. headReader reads each request head itself, refusing
// what net/http refuses and what net/http tolerates but another parser
// could read differently (the request smuggling shapes: Content-Length
// with Transfer-Encoding, codings but chunked, obs-fold, bare LF).
//
// The own path serves only the plain case: a request asking for no
// upgrade (nor CONNECT) whose Host is a live HTTP tunnel of a session on
// this node (a custom domain included) whose access rules let it through
// at no cost (admitsAtOnce: an allowed address, and the one Authorization
// header a bcrypt check passed lately). Anything else (tunneld's own
// answers, pools, other nodes' routes, a first or wrong password, a
// refused address, sign-in, upgrades, ACME's HTTP-01, a head it refuses)
// hands the connection, with every byte read since that request began,
// to net/http's server for the rest of its life (h1Handoff, through
// httpConns; a TLS connection's state goes with it, for
// X-Forwarded-Proto). So every answer the edge gives itself stays the
// one net/http's path gives.
//
// A request it serves gets what net/http's path gives one: the same
// access log line and metrics (metrics.Request), the pacer timing its body
// reads and response writes on the connection (limit.Pacer.Start), a slot
// of the tunnel, the headers rewrite and ReverseProxy would set
// (rewriteHead), and for a failure before any answer the same status and
// page (proxy.answer); after the head, a failure closes the connection.
// h1Exchange writes the head again in one canonical form to a stream of
// the pool, copies the bodies with their framing both ways, and writes the
// response as net/http's server would have (hop-by-hop headers out, Date,
// a sniffed Content-Type, chunked or close-delimited by the visitor's
// version). The response head itself is read by the edge's own reader
// when it is plain (h1resp.go: HTTP/1.x, a status from 200 to 599, one
// Content-Length of digits, no Transfer-Encoding or Trailer, a Connection
// naming only close or keep-alive, every line a token name and a value of
// the bytes textproto takes, all of it in the stream's read buffer): read
// in place and written again with canonical names in the service's order,
// with no http.Response or header map. Anything else goes to
// http.ReadResponse from the same unread bytes, so the visitor gets the
// same answer from either reader (TestH1_ResponseHeadFastMatchesSlow,
// FuzzParsePlainHead). There is no read of the visitor's connection
// beside a short exchange: one running past h1WatchAfter with its body
// read gets one (a slow service, a long poll, a stream of events), which
// closes the stream when the visitor leaves and keeps any byte it read
// for the next request. At shutdown the own path's idle connections are
// closed and its exchanges in flight finish within ShutdownGrace, as
// net/http's do.
//
// # Routes
//
// What a lookup returns is a Route: something that opens a stream to the
// client serving a name, says when it is draining, and names itself in
// logs. The proxy knows nothing else about where a request goes. A local
// Session is one, for HTTP, TCP and TLS tunnels alike (the registry also
// keeps each name's kind, so that a held name's kind is known while its
// client is away); a session on another node (remoteRoute) and a pool of
// clients sharing a name (poolRoute, pool.go) are others. A Route also
// carries each HTTP name's access rules, which the proxy applies before it
// opens anything. Each route gets a stream pool of its own (pools), so a
// kept stream is never reused for another route, not even a later holder
// of the same name; a dial also checks that the name still resolves to the
// route.
//
// A pool is the one route that reaches several sessions. The proxy picks
// one member per request, round robin, and sends the request over that
// member's stream pool, so a kept stream stays with the member that opened
// it; the dial check accepts a member of the pool the name resolves to. A
// member that fails the request before any answer (its stream open
// refused, its session gone, or, for a request that can be sent again, its
// stream ended unanswered) is skipped for the next one: the visitor does
// not see it. The pool's members all asked for it with the same kind and
// access rules (Registry.Claim refuses others), so the rules the proxy
// checked hold whichever member serves.
//
// # Sessions and names
//
// A client's Hello goes through three steps (server.go): authenticate (the
// token, via Authenticator, or an anonymous owner key), validateNames
// (name.Validate, the token's rules and tunnel limit), and claim, which draws
// random names where the client left them empty and claims all of the names
// in the Registry at once, drawing again if a random one was taken. A name
// held by another token is refused, never silently swapped for another. The same
// token reconnecting replaces its stale session at once. When a session
// ends, its names are held for the token for Config.NameHold. A tunnel's
// custom domain (domains.go) is claimed with the names, as one more name
// of the session, once the token may claim it and its DNS points at the
// tunnel (Config.Domains); it is checked again every Config.DomainRecheck
// and dropped alone (Registry.ReleaseName) when DNS answers that it no
// longer points (not when DNS fails), then claimed again
// (Registry.ClaimName, which takes nothing over) if it points back while
// the session lasts. A session
// whose link died silently ends when the keepalive gives up on it, within
// Config.Mux.KeepAliveInterval+WriteTimeout (mux.Config.SetPeerTimeout).
//
// Tokens are not the edge's concern: package token holds the tokens file,
// hashing and the constant-time check, and is shared with "tunneld token
// add". The edge only asks Config.Auth (an Authenticator, usually a
// *token.Set) who a token proves the client to be.
//
// # Several nodes
//
// With a ClusterRegistry (clusterreg.go) the table is package cluster's,
// in etcd, shared by every node. A name served here resolves to its local
// *Session; a name served by another node to a remoteRoute, one per claim
// (so pools and the dial check work unchanged), that opens its streams
// through a Forwarder (the node link) and carries the access rules and
// allowed tokens the serving node wrote into the table, so that a visitor
// is checked here exactly as there. On the serving node, Server.OpenLocal
// opens such a stream only on the session the forwarder named, and only
// while the table still gives the name to this node: a stale view on
// either side fails as offline, never reaches another client. A claim
// that etcd cannot decide is refused with proto.CodeUnavailable, which
// clients retry; Ready says the node is degraded meanwhile. The same owner
// reconnecting on another node takes its names over there; the watch here
// sees it and closes the stale session.
//
// # Limits
//
// Everything a peer can stall or pile up is bounded, and the bounds live in
// package limit: handshake slots per server and per source address, client
// sessions per source, tunnels per token across its sessions, requests in
// flight per tunnel (503 with Retry-After over it, never a queue) and per
// visitor source within a tunnel, growing delays after failed token checks,
// and the pacing of slow visitors (progress deadlines and the slow-reader
// budget). The edge keeps only the glue that needs a Server, a Session or a
// request's routing (limits.go): where a connection's slot is taken and
// given back, admitLimited around admit, the tunnels of a Session, the
// visitor's source behind a trusted proxy, and the pacer's gauge. The TLS
// handshake and the client's Hello are also bounded by timeouts. Upgraded
// (WebSocket) connections have no idle timeout. SECURITY.md has the threat
// model.
//
// # Metrics
//
// The edge records what it does through package metrics: the Prometheus
// collectors (a metrics.Set, Config.Metrics or the Server's own), the access
// log, and the per-tunnel figures that Server.Tunnels reports. What stays
// here (ops.go) is the glue that needs sessions and routes: which tunnel a
// request went to, sessions up and down. Server.Ready says whether it can
// serve visitors. It serves none of that itself: package admin, tunneld's
// admin listener, shows it, and the edge never imports package admin.
//
// # Shutdown
//
// Serve returns when its context ends, in this order: stop accepting; send
// GoAway to every client so they reconnect elsewhere; let in-flight requests
// finish within Config.ShutdownGrace (http.Server.Shutdown); then close the
// sessions, which ends whatever is still running over them.
package edge
