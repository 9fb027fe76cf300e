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
	"sync"
	"time"

	"github.com/rs/zerolog"

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
	host    string // the visitor's Host, normalised, for pages
	visitor string // the visitor's address
	// forwarded: the peer is a trusted proxy, so its X-Forwarded-* headers
	// are kept (see Config.TrustedProxies).
	forwarded bool
}

func (s *Server) newHandler() http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    s.transport,
		ErrorHandler: s.proxyError,
		ErrorLog:     stdlog.New(levelWriter{s.log, zerolog.DebugLevel}, "", 0),
		BufferPool:   copyBufPool{},
	}
	return s.paced(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, err := ParseHost(r.Host, s.cfg.Domain)
		if err != nil {
			page(w, http.StatusNotFound, fmt.Sprintf("No tunnel is served at %s.", r.Host))
			return
		}
		if name == "" {
			page(w, http.StatusNotFound, fmt.Sprintf("This is a tunnel server. Tunnels are served at NAME.%s.", s.cfg.Domain))
			return
		}
		host := name + "." + s.cfg.Domain
		sess, held := s.registry.Lookup(name)
		if sess == nil && held && s.cfg.OfflineWait > 0 {
			// The client is away, most likely reconnecting: give it a
			// moment to come back before answering "offline".
			wctx, cancel := context.WithTimeout(r.Context(), s.cfg.OfflineWait)
			sess = s.registry.Wait(wctx, name)
			cancel()
		}
		if sess == nil {
			if held {
				page(w, http.StatusBadGateway, offlineMessage(host))
				return
			}
			page(w, http.StatusNotFound, fmt.Sprintf("No tunnel is registered at %s.", host))
			return
		}
		release, ok := s.acquireVisitor(w, r, name, host)
		if !ok {
			return
		}
		defer release()
		s.ops.routed(r, sess, name)
		ctx := context.WithValue(r.Context(), routeKey, route{name: name, host: host,
			visitor: s.visitorAddr(r), forwarded: s.forwardedBy(r.RemoteAddr)})
		rp.ServeHTTP(w, r.WithContext(ctx))
	}))
}

// rewrite sends the request to the tunnel's name (the Transport's dial maps
// it to a stream) with the visitor's Host, and sets X-Forwarded-For,
// -Host and -Proto from the real connection. ReverseProxy has already
// removed any X-Forwarded-* the visitor sent; Forwarded, X-Real-IP and
// True-Client-IP are removed here too, so a visitor cannot forge its address
// toward the local service. Only a trusted proxy's X-Forwarded-For is
// extended, and its -Proto and -Host kept (a TLS-terminating load balancer
// says https).
func rewrite(pr *httputil.ProxyRequest) {
	rt := pr.In.Context().Value(routeKey).(route)
	pr.SetURL(&url.URL{Scheme: "http", Host: rt.name})
	pr.Out.Host = pr.In.Host
	pr.Out.Header.Del("Forwarded")
	// Other client-address headers some services trust; only the edge
	// knows the visitor's address.
	pr.Out.Header.Del("X-Real-Ip")
	pr.Out.Header.Del("True-Client-Ip")
	if rt.forwarded {
		pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	}
	pr.SetXForwarded()
	if rt.forwarded {
		for _, h := range []string{"X-Forwarded-Proto", "X-Forwarded-Host"} {
			if v := pr.In.Header.Get(h); v != "" {
				pr.Out.Header.Set(h, v)
			}
		}
	}
}

func (s *Server) newTransport() *http.Transport {
	return &http.Transport{
		DialContext: s.dialTunnel,
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

// dialTunnel opens a stream on the session currently serving the tunnel
// named by addr's host.
func (s *Server) dialTunnel(ctx context.Context, _, addr string) (net.Conn, error) {
	name, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial tunnel %q: %w", addr, err)
	}
	sess, _ := s.registry.Lookup(name)
	if sess == nil {
		return nil, fmt.Errorf("dial tunnel %q: %w", name, errTunnelOffline)
	}
	var visitor string
	if rt, ok := ctx.Value(routeKey).(route); ok {
		visitor = rt.visitor
	}
	start := time.Now()
	conn, err := sess.mux.Open(ctx, &proto.StreamHeader{Tunnel: name, RemoteAddr: visitor})
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
