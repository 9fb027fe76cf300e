// Package peer links the tunneld nodes of a cluster, so that a visitor who
// lands on one node reaches a tunnel client connected to another.
//
// A node that does not hold a tunnel's client (the forwarding node) opens a
// stream on its link to the node that does (the owning node), sends a
// Request (the StreamHeader it would have sent its own client, and the
// session it believes serves the name), and gets back, once the owning node
// has opened a stream on its local session, a net.Conn that behaves like a
// local session's stream: the proxy writes HTTP/1.1 or raw bytes to it, and
// half-close (a yamux FIN) and StreamHeader.CloseOnFIN pass through both
// hops as they do through one (mux.PipeStream joins the two streams on the
// owning node). Which node holds which name is not this package's business:
// the caller (the cluster registry) says where to go. Nothing here depends
// on etcd.
//
// # Why one hop
//
// The owning node serves a forwarded request from its local sessions only
// (OpenFunc), and Links.Open refuses a context that came from a forwarded
// request (ErrSecondHop). Two nodes whose views of the name table disagree
// for a moment would otherwise pass a request back and forth; with one hop
// the worst case is a refusal (ErrWrongSession, "tunnel offline") that the
// forwarding node can retry after its view catches up. Request.Session
// fences the other way: an owning node that no longer serves the name with
// that session refuses, so a node that lost a name cannot serve it.
//
// # Why a secret bound to the connection
//
// Every connection to the node port is TLS (1.3, ALPN tunnel-peer/1, so a
// browser or a tunnel client fails in the handshake), and then each side
// proves it holds the cluster secret: an HMAC of the secret over the TLS
// connection's exported keying material, with one label per direction,
// compared in constant time. The keying material is unique to one TLS
// connection, so a proof seen by a relay (a machine in the middle that
// terminates TLS on both sides) is worthless on its other connection, and
// the two labels keep a proof from being reflected back. The secret itself
// never travels. The TLS certificate may therefore be an ephemeral
// self-signed one; a cluster CA (Config.CA) adds mutual TLS on top. The
// node that is dialed answers only after checking the dialer's proof, and
// no stream is accepted on a connection before both proofs are checked.
//
// Whoever reaches the node port without the secret costs a bounded amount:
// at most MaxHandshakes connections (MaxHandshakesPerIP per address) in
// their handshake, each closed after HandshakeTimeout, each reading at most
// a few hundred bytes after TLS, and a budget of log lines.
//
// # Why one link per pair
//
// Each pair of nodes shares one long-lived TLS connection carrying a yamux
// session, used in both directions: a forwarded request then costs a stream
// (a few bytes), not a TCP and TLS handshake, and yamux's keepalives notice
// a dead node within KeepAliveInterval+WriteTimeout. A link is dialed on the
// first Open to a node and redialed on the next Open after it is lost (with
// a doubling wait after failed dials, so an unreachable node costs a fast
// error, not a dial per request). When two nodes dial each other at once,
// both keep the link dialed by the node whose name sorts first and retire
// the other once its streams are done (see Links.add for the rules that
// keep this consistent across a restart or a link dead on one side only).
//
// # Wiring
//
// tunneld makes one Links per process, serves the node port with it, and
// hands it to the cluster registry, whose Forwarder it is (Links.Forward);
// the owning side opens on the edge's local sessions only:
//
//	var srv *edge.Server // made below; Open runs only once Serve has started
//	cfg := peer.DefaultConfig()
//	cfg.Node, cfg.Secret, cfg.Logger = node, secret, log
//	cfg.Open = func(ctx context.Context, r *peer.Request) (net.Conn, error) {
//		return srv.OpenLocal(ctx, r.Session, &r.Header)
//	}
//	links, err := peer.New(cfg)
//	reg := edge.NewClusterRegistry(cl, links, log)
//	srv, err = edge.NewServer(edge.Config{Registry: reg, ...})
//	go links.Serve(nodePort)
//
// On shutdown, close the Links after the edge has let its visitors'
// requests finish: Close cuts every forwarded stream, both the ones this
// node sent and the ones it serves for other nodes.
package peer
