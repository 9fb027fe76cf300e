package edge

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/httpserve"
	"github.com/tunnelhq/tunnel/internal/logging"
)

// ServePlain serves the plain-HTTP companion listener (port 80) on ln until
// ctx ends, then lets in-flight requests finish within
// Config.ShutdownGrace and returns nil. It closes ln.
//
// It answers ACME HTTP-01 challenges (when Config.ACME is set, and only
// once ServePlain runs does autocert offer HTTP-01 to the CA). Every other
// request is redirected to https with 308, host, path and query kept; or,
// with Config.PlainServesTunnels, proxied to the tunnel like on the TLS port.
// It may run beside Serve, at most once.
func (s *Server) ServePlain(ctx context.Context, ln net.Listener) error {
	var h http.Handler = http.HandlerFunc(s.redirectToHTTPS)
	if s.cfg.PlainServesTunnels {
		h = s.httpSrv.Handler
	}
	if s.acme != nil {
		h = s.acme.HTTPHandler(h)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          logging.Std(s.log, zerolog.DebugLevel),
	}
	s.log.Info().Str("addr", ln.Addr().String()).Bool("redirect", !s.cfg.PlainServesTunnels).Msg("serving plain http")
	if s.cfg.PlainServesTunnels {
		return s.servePlainH1(ctx, srv, ln)
	}
	if err := httpserve.Serve(ctx, srv, ln, s.cfg.ShutdownGrace, nil); err != nil {
		return fmt.Errorf("serve plain http: %w", err)
	}
	return nil
}

// servePlainH1 serves ln's connections on the edge's own HTTP/1.1 path,
// which hands srv what it does not serve, until ctx ends; then both shut
// down within ShutdownGrace.
func (s *Server) servePlainH1(ctx context.Context, srv *http.Server, ln net.Listener) error {
	queue := newConnQueue()
	var conns h1Conns
	var wg sync.WaitGroup
	httpErr := make(chan error, 1)
	go func() { httpErr <- httpserve.Serve(ctx, srv, queue, s.cfg.ShutdownGrace, nil) }()
	acceptErr := acceptUntil(ctx, ln, func(conn net.Conn) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.containPanic(conn)
			s.serveH1(conn, nil, queue, true, &conns)
		}()
	})
	if acceptErr != nil {
		acceptErr = fmt.Errorf("serve plain http: accept: %w", acceptErr)
	}
	ln.Close()
	if !conns.shutdown(s.cfg.ShutdownGrace) {
		s.log.Warn().Msg("grace period over; closing remaining plain http requests")
	}
	wg.Wait()
	if acceptErr != nil {
		queue.Close()
		srv.Close()
	}
	if err := <-httpErr; err != nil && acceptErr == nil {
		acceptErr = fmt.Errorf("serve plain http: %w", err)
	}
	return acceptErr
}

// redirectToHTTPS answers 308 to the same host (port replaced by the
// public port), path and query over https. 308, unlike 301, keeps the
// method and body of a POST.
func (s *Server) redirectToHTTPS(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" || strings.ContainsAny(host, "/\\@ ") {
		httpserve.Page(w, http.StatusBadRequest, "A Host header is required.")
		return
	}
	if strings.Contains(host, ":") { // an IPv6 literal lost its brackets
		host = "[" + host + "]"
	}
	if p := s.cfg.PublicPort; p != 0 && p != 443 {
		host += ":" + strconv.Itoa(p)
	}
	http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
}

// forwardedBy reports whether the peer at remoteAddr is a trusted proxy,
// whose X-Forwarded-* headers are believed.
func (s *Server) forwardedBy(remoteAddr string) bool {
	if len(s.cfg.TrustedProxies) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	return s.trusted(ap.Addr())
}

func (s *Server) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// visitorAddr is the visitor's address as the request tells it: the peer
// itself, or when the peer is a trusted proxy, the rightmost X-Forwarded-For
// entry that is not a trusted proxy (entries left of it could be forged by
// the visitor).
func (s *Server) visitorAddr(r *http.Request) string {
	if !s.forwardedBy(r.RemoteAddr) {
		return r.RemoteAddr
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for _, h := range strings.Split(v, ",") {
			hops = append(hops, strings.TrimSpace(h))
		}
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			break // garbage: trust nothing further left
		}
		if !s.trusted(a) {
			return a.String()
		}
	}
	return r.RemoteAddr
}
