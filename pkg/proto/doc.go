// Package proto is the control protocol spoken between tunnel (the client)
// and tunneld (the server) inside one yamux session.
//
// It holds the message types, the protocol version, the frame codec and the
// sentinel errors for bad input, and nothing else: no sockets, goroutines,
// logging or timeouts. Keeping the wire format in one small package lets both
// ends, the fuzzer and future versions agree on it byte for byte.
//
// # Frames
//
// Every message travels as one frame:
//
//	+--------+----------------+---------------------------+
//	| type   | length         | payload                   |
//	| 1 byte | 4 bytes, BE    | length bytes, JSON object |
//	+--------+----------------+---------------------------+
//
// The length is checked against [MaxFrameSize] before any buffer is
// allocated, so a peer cannot make the reader allocate more than that. The
// payload is one JSON object whose fields depend on the type:
//
//	type  message        sent by   where
//	0x01  Hello          client    first frame on the control stream
//	0x02  Welcome        server    reply to an accepted Hello
//	0x03  Error          both      reply to a refused Hello, or a refused stream
//	0x04  GoAway         both      on the control stream: stop using this session
//	0x05  StreamHeader   server    first frame of every data stream
//	0x06  StreamAck      client    reply to a StreamHeader: the local side is connected
//	0x07  Ping           both      on the control stream: are you there?
//	0x08  Pong           both      on the control stream: answer to Ping
//	0x09  Connect        visitor   first frame of a ConnectALPN connection (a TCP tunnel's visitor)
//
// Any other type is [ErrUnknownType]; a frame cut short is
// [ErrTruncatedFrame]; a length above [MaxFrameSize] is [ErrFrameTooLarge]; a
// payload that is not a valid message of its type is [ErrMalformed].
//
// # Conversation
//
// The client dials TLS (ALPN [ALPN]) and opens the yamux session's first
// stream, the control stream, and writes Hello. Hello carries [Version], a
// token or, for an anonymous client, optionally an owner key: a random
// string of [MinOwnerKey] to [MaxOwnerKey] bytes the client makes once per
// process and sends on every connect, so that it, and only it, gets its
// names back after a reconnect (see Hello.OwnerKey). A server that speaks
// another version answers Error with code [CodeUnsupportedVersion]. Otherwise it answers Welcome (session id, each
// tunnel's public URL, limits, heartbeat settings) or Error (bad token, name
// taken, ...) and closes.
//
// A tunnel of the Hello may carry visitor access rules (TunnelRequest.Access:
// basic-auth users with bcrypt hashes of their passwords, allowed and denied
// address prefixes, the identities that may pass its OpenID Connect login),
// which the server enforces before it opens any stream for a visitor. A
// server that knows them says so per tunnel in the Welcome
// (TunnelInfo.Access, and TunnelInfo.OIDC for the login); one that predates
// them ignores them, and the client must then not serve, since its service
// would be open to everyone.
//
// An HTTP tunnel of the Hello may also name a custom domain
// (TunnelRequest.Domain). A server that serves it says so with
// TunnelInfo.DomainURL; it refuses a domain the token may not claim with
// domain_not_allowed (permanent) and one whose DNS does not point at the
// tunnel yet with domain_not_verified (the client retries). A server that
// predates custom domains ignores the field and sets no DomainURL, which
// the client must treat as a refusal.
//
// A tunnel may ask to join a pool (TunnelRequest.Pool): several clients of
// one owner serve the name together, and the server spreads visitors over
// them. The server confirms it per tunnel (TunnelInfo.Pool), or refuses
// with [CodePoolNotAllowed] (the token may not pool) or [CodePoolMismatch]
// (the pool serves another kind or other access rules). A server that
// predates pools ignores the field and takes the name over from the other
// clients, so a client that asked and finds no confirmation must not serve.
//
// After Welcome, only the server opens streams. For each visitor connection
// it opens a stream and writes a StreamHeader naming the tunnel and the
// visitor's address. The client dials that tunnel's local target and answers
// StreamAck, after which the stream carries the visitor's bytes unchanged, or
// answers Error (unknown tunnel, local service unreachable) and closes the
// stream. Closing one direction of a stream (yamux FIN) passes a half-close
// on to the other end, unless the StreamHeader said close_on_fin: then the
// server's FIN ends the whole stream and the client closes its local
// connection. Either side may send GoAway on the control stream to say it is
// draining; the control stream closing ends the session.
//
// # Kinds of tunnel
//
// Each TunnelRequest names its kind: [KindHTTP] (proxied requests), [KindTCP]
// or [KindTLS]. The data streams of all three look the same to the client:
// a StreamHeader, a StreamAck, then bytes, half-closes passed on. A TCP
// tunnel's own TunnelRequest may list allow_tokens, SHA-256 hashes of the
// tokens that may reach it besides its owner's.
//
// A TCP tunnel has no public listener. Its visitor ("tunnel connect") dials
// the same TLS port with ALPN [ConnectALPN] and writes one Connect frame
// (version, tunnel name, token); the server answers StreamAck once the
// tunnel's local service is connected, after which the TLS connection
// carries the raw bytes both ways (a TLS close_notify is the half-close), or
// Error with code bad_token for every refusal that concerns the tunnel (no
// such TCP tunnel, a token that may not reach it: a visitor cannot tell
// them apart) and closes. A refused visitor never reaches the tunnel's
// client. A TLS tunnel needs no frame at all: a visitor's ClientHello whose
// SNI is the tunnel's name is piped to it whole, unread beyond the SNI.
//
// The version stays 1: old clients send only http tunnels, which every
// server knows; an old server refuses a new kind with bad_request, which a
// client reports as a permanent refusal.
package proto
