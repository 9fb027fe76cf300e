package edge

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/name"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// errTunnelOffline: the name is known (held for its owner) but no client is
// connected for it right now.
var errTunnelOffline = errors.New("tunnel offline")

type ctxKey int

const routeKey ctxKey = 0

// route is what the handler learned about a request, passed to Rewrite and
// to the Transport's dial through the request context.
type route struct {
	name    string
	host    string // the tunnel's public host, as PublicURL has it
	sess    *Session
	visitor string // the visitor's address
	// forwarded: the peer is a trusted proxy, so its X-Forwarded-For and
	// -Proto are kept (see Config.TrustedProxies).
	forwarded bool
}

func (s *Server) newHandler() http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    sessionTransport{},
		ErrorHandler: s.proxyError,
		ErrorLog:     stdlog.New(levelWriter{s.log, zerolog.DebugLevel}, "", 0),
		BufferPool:   copyBufPool{},
	}
	return s.paced(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		label, err := name.FromHost(r.Host, s.cfg.Domain)
		if errors.Is(err, name.ErrMalformedHost) {
			refuse(w, r, http.StatusBadRequest, "The Host header is malformed.")
			return
		}
		if err != nil {
			refuse(w, r, http.StatusNotFound, fmt.Sprintf("No tunnel is served at %s.", r.Host))
			return
		}
		if label == "" {
			refuse(w, r, http.StatusNotFound, fmt.Sprintf("This is a tunnel server. Tunnels are served at NAME.%s.", s.cfg.Domain))
			return
		}
		host := s.publicHost(label)
		sess, held := s.registry.Lookup(label)
		if sess == nil && held && s.cfg.OfflineWait > 0 {
			// The client is away, most likely reconnecting: give it a
			// moment to come back before answering "offline".
			wctx, cancel := context.WithTimeout(r.Context(), s.cfg.OfflineWait)
			sess = s.registry.Wait(wctx, label)
			cancel()
		}
		if sess == nil {
			if held {
				refuse(w, r, http.StatusBadGateway, offlineMessage(host))
				return
			}
			refuse(w, r, http.StatusNotFound, fmt.Sprintf("No tunnel is registered at %s.", host))
			return
		}
		release, ok := s.acquireVisitor(w, r, label, host)
		if !ok {
			return
		}
		defer release()
		s.ops.routed(r, sess, label)
		ctx := context.WithValue(r.Context(), routeKey, route{name: label, host: host, sess: sess,
			visitor: s.visitorAddr(r), forwarded: s.forwardedBy(r.RemoteAddr)})
		rp.ServeHTTP(w, r.WithContext(ctx))
	}))
}

// refuse answers a request the edge does not proxy.
func refuse(w http.ResponseWriter, r *http.Request, status int, msg string) {
	closeIfBodyPending(w, r)
	page(w, status, msg)
}

// closeIfBodyPending makes an answer that leaves the request body unread
// close the connection. Otherwise net/http first reads what is left of a
// small body (up to 256 KiB) to reuse the connection, and a visitor that
// announced a body and never sends it would never get the answer.
func closeIfBodyPending(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
}

// publicHost is the host in the tunnel's public URL: name.Domain, with
// the public port unless that is the default one.
func (s *Server) publicHost(name string) string {
	host := name + "." + s.cfg.Domain
	if p := s.cfg.PublicPort; p != 0 && p != 443 {
		host = net.JoinHostPort(host, strconv.Itoa(p))
	}
	return host
}

// forwardingHeaders are headers through which a proxy tells a service who
// the client is or what URL it asked for, besides every X-Forwarded-*. Only
// the edge (or a trusted proxy in front of it) may say these things.
var forwardingHeaders = map[string]bool{
	"Forwarded": true, "X-Real-Ip": true, "True-Client-Ip": true, "X-Client-Ip": true, "Client-Ip": true,
	"Cf-Connecting-Ip": true, "Fastly-Client-Ip": true, "X-Cluster-Client-Ip": true,
	"X-Original-Forwarded-For": true, "X-Proxyuser-Ip": true, "X-Envoy-External-Address": true,
	"X-Original-Url": true, "X-Rewrite-Url": true, "X-Original-Uri": true, "X-Original-Host": true,
	"X-Host": true, "X-Http-Host": true, "Front-End-Https": true, "X-Front-End-Https": true,
	"X-Url-Scheme": true, "X-Scheme": true, "X-Https": true, "X-Client-Cert": true,
	"X-Ssl-Client-Cert": true, "X-Arr-Clientcert": true, "X-Arr-Ssl": true,
}

// isForwardingHeader reports whether a visitor's header h must not reach
// the service. Underscores count as dashes: CGI-style servers (PHP, WSGI
// behind some gateways) read X_Forwarded_For as X-Forwarded-For.
func isForwardingHeader(h string) bool {
	h = http.CanonicalHeaderKey(strings.ReplaceAll(h, "_", "-"))
	return strings.HasPrefix(h, "X-Forwarded") || forwardingHeaders[h]
}

// rewrite sends the request to the session the handler routed it to (see
// sessionTransport) with the tunnel's public host as Host, whatever the
// visitor wrote, and sets X-Forwarded-For, -Host and -Proto from the real
// connection. Every forwarding or client-address header the visitor sent
// (isForwardingHeader) is removed, so a visitor can neither forge its
// address nor make the service build links to another host. Only a trusted
// proxy's X-Forwarded-For is extended, and its -Proto kept (a
// TLS-terminating load balancer says https). Not even a trusted proxy's
// X-Forwarded-Host is kept: some load balancers pass the visitor's on
// untouched, and the edge knows the public host anyway.
func rewrite(pr *httputil.ProxyRequest) {
	rt := pr.In.Context().Value(routeKey).(route)
	pr.SetURL(&url.URL{Scheme: "http", Host: rt.name})
	pr.Out.Host = rt.host
	for h := range pr.Out.Header {
		if isForwardingHeader(h) {
			delete(pr.Out.Header, h)
		}
	}
	if rt.forwarded {
		pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	}
	pr.SetXForwarded()
	pr.Out.Header.Set("X-Forwarded-Host", rt.host)
	if v := pr.In.Header.Get("X-Forwarded-Proto"); rt.forwarded && v != "" {
		pr.Out.Header.Set("X-Forwarded-Proto", v)
	}
}

// sessionTransport sends each request over the Transport of the session the
// handler routed it to. Each session has a Transport of its own, so a
// pooled stream is only ever reused for a request routed to the session it
// belongs to: never for a later holder of the same name.
type sessionTransport struct{}

func (sessionTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return r.Context().Value(routeKey).(route).sess.transport.RoundTrip(r)
}

// newTransport builds sess's Transport: its pool holds only sess's streams.
func (s *Server) newTransport(sess *Session) *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return s.dialTunnel(ctx, sess, addr)
		},
		// Finished streams are kept for the next request to the same
		// tunnel: opening one costs a round trip to the client and a dial
		// of the local service. A tunnel never has more than
		// MaxStreamsPerTunnel requests in flight, so keeping that many idle
		// means a steady load reuses streams instead of churning them (with
		// 64 kept, 256 busy visitors opened a stream for most requests).
		MaxIdleConns:          max(1024, s.cfg.MaxStreamsPerTunnel),
		MaxIdleConnsPerHost:   s.cfg.MaxStreamsPerTunnel,
		IdleConnTimeout:       60 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Pass the visitor's Accept-Encoding and the service's encoding
		// through untouched.
		DisableCompression: true,
		// The default 4 KiB buffers: large body copies bypass them anyway,
		// and every idle stream in the pool keeps both.
	}
}

// dialTunnel opens a stream on sess for the tunnel named by addr's host,
// if sess still serves that name and is not draining; otherwise the request
// fails as offline rather than reach a session that no longer holds the name.
func (s *Server) dialTunnel(ctx context.Context, sess *Session, addr string) (net.Conn, error) {
	name, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial tunnel %q: %w", addr, err)
	}
	select {
	case <-sess.mux.Draining():
		return nil, fmt.Errorf("dial tunnel %q: client draining: %w", name, errTunnelOffline)
	default:
	}
	if cur, _ := s.registry.Lookup(name); cur != sess {
		return nil, fmt.Errorf("dial tunnel %q: %w", name, errTunnelOffline)
	}
	var visitor string
	if rt, ok := ctx.Value(routeKey).(route); ok {
		visitor = rt.visitor
	}
	start := time.Now()
	conn, err := sess.mux.Open(ctx, &proto.StreamHeader{Tunnel: name, RemoteAddr: visitor, CloseOnFIN: true})
	s.ops.streamOpened(start, err)
	if err != nil {
		return nil, fmt.Errorf("dial tunnel %q: %w", name, err)
	}
	return conn, nil
}

// proxyError is the one place proxy errors become HTTP responses.
func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	rt, _ := r.Context().Value(routeKey).(route)
	log := s.log.Debug().Err(err).Str("host", rt.host).Str("remote_addr", r.RemoteAddr)
	var perr *proto.Error
	switch {
	case r.Context().Err() != nil:
		// The visitor left; nobody reads this answer.
		log.Msg("visitor gone")
		w.WriteHeader(http.StatusBadGateway)
	case errors.As(err, &perr) && perr.Code == proto.CodeLocalUnreachable:
		log.Msg("local service unreachable")
		page(w, http.StatusBadGateway, fmt.Sprintf("The client for %s is connected, but its local service refused the connection.", rt.host))
	case errors.As(err, &perr):
		log.Msg("client refused stream")
		page(w, http.StatusBadGateway, fmt.Sprintf("The client for %s refused the request.", rt.host))
	case errors.Is(err, context.DeadlineExceeded):
		log.Msg("tunnel timeout")
		page(w, http.StatusGatewayTimeout, fmt.Sprintf("The tunnel %s did not answer in time.", rt.host))
	case errors.Is(err, errTunnelOffline) || isClosed(err):
		log.Msg("tunnel offline")
		page(w, http.StatusBadGateway, offlineMessage(rt.host))
	default:
		log.Msg("proxy error")
		page(w, http.StatusBadGateway, fmt.Sprintf("The tunnel %s failed to answer.", rt.host))
	}
}

func offlineMessage(host string) string {
	return fmt.Sprintf("Tunnel offline: no client is connected for %s right now.", host)
}

// page writes a short plain-text page. Plain text cannot carry script, so
// echoing the host is safe.
func page(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintf(w, "%d %s\n\n%s\n", status, http.StatusText(status), msg)
}

// copyBufPool lends ReverseProxy its copy buffers instead of a fresh 32 KiB
// per response.
type copyBufPool struct{}

var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

func (copyBufPool) Get() []byte  { return *copyBufs.Get().(*[]byte) }
func (copyBufPool) Put(b []byte) { copyBufs.Put(&b) }
