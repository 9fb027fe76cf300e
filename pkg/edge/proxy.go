package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/httpserve"
	"github.com/tunnelhq/tunnel/internal/logging"
	"github.com/tunnelhq/tunnel/pkg/limit"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/name"
	"github.com/tunnelhq/tunnel/pkg/oidc"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// Why the edge answers a request itself rather than with the tunnel's
// answer: each becomes its status and page in answer, the one place that
// writes them. (name.FromHost's ErrMalformedHost and ErrForeignHost, and the
// proxy's own errors, are mapped there too.)
var (
	// errTunnelOffline: the name is known (held for its owner) but no
	// client is connected for it right now.
	errTunnelOffline = errors.New("tunnel offline")
	// errRouteDown: the route failed before a stream was opened (another
	// node found unreachable); the request may go to the name's next route.
	errRouteDown    = fmt.Errorf("route down: %w", errTunnelOffline)
	errApex         = errors.New("the tunnel domain itself")   // no tunnel is served at the apex
	errNoTunnel     = errors.New("no tunnel registered")       // the name is neither live nor held
	errTunnelBusy   = errors.New("tunnel busy")                // the tunnel has MaxStreamsPerTunnel in flight
	errVisitorShare = errors.New("visitor over its share")     // the source has its MaxRequestsPerVisitor
	errSlowReader   = errors.New("slow reader budget is full") // the source holds some of SlowReaderBudget
	// errNoLogin: the tunnel asks visitors to sign in, and this node has
	// no Config.OIDC (in a cluster, its node has one).
	errNoLogin = errors.New("sign-in not configured on this node")
)

type ctxKey int

const targetKey ctxKey = 0

// targetCtx is a request's context with its target: Value(targetKey) is the
// targetCtx itself (see targetOf). One allocation, where context.WithValue
// takes two, the context and the boxed target.
type targetCtx struct {
	context.Context
	t target
}

func (c *targetCtx) Value(key any) any {
	if key == targetKey {
		return c
	}
	return c.Context.Value(key)
}

// withTarget returns ctx carrying t.
func withTarget(ctx context.Context, t target) context.Context {
	return &targetCtx{Context: ctx, t: t}
}

// targetOf returns the target ctx carries, if any.
func targetOf(ctx context.Context) (target, bool) {
	if c, ok := ctx.Value(targetKey).(*targetCtx); ok {
		return c.t, true
	}
	return target{}, false
}

// target is what the proxy learned about a request, passed to Rewrite and
// to the stream pool's dial through the request context.
type target struct {
	name    string
	host    string // the tunnel's public host, as PublicURL has it
	route   Route
	visitor string // the visitor's address
	// forwarded: the peer is a trusted proxy, so its X-Forwarded-For and
	// -Proto are kept (see Config.TrustedProxies).
	forwarded bool
	// stripAuth: the tunnel checked the visitor's Authorization (basic
	// auth) and its owner did not ask for it to be passed on, so the
	// service never sees the tunnel's password.
	stripAuth bool
	// email is the visitor's verified identity on a tunnel with login
	// (oidc.Gate), for oidc.IdentityHeader; "" on other tunnels.
	email string
	// pool is the pool route the name resolved to, if any; route is then
	// the member picked for the request, and tried the members that
	// failed it so far (see pools.RoundTrip).
	pool  *poolRoute
	tried []Route
}

// proxy is the visitors' handler: it routes each request by its Host to the
// route serving the name, and proxies it there with a ReverseProxy. Every
// answer the edge gives itself, before or instead of the tunnel's, is
// written by answer.
type proxy struct {
	s     *Server
	rp    *httputil.ReverseProxy
	pools *pools
}

func (s *Server) newProxy() *proxy {
	p := &proxy{s: s, pools: &pools{new: s.newStreamPool, skipped: func() { s.ops.poolSkips.Add(1) }}}
	p.pools.reroute = func(ctx context.Context, name string, old Route) (Route, error) {
		rt, err := p.lookup(ctx, name)
		if err != nil {
			return nil, err
		}
		// The visitor passed the old route's access rules; the new route
		// must have the same, or the request is not sent.
		if !sameRules(old.access(name), rt.access(name)) {
			return nil, fmt.Errorf("tunnel %q came back with other access rules: %w", name, errTunnelOffline)
		}
		return rt, nil
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   rewrite,
		Transport: p.pools,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			t, _ := targetOf(r.Context())
			p.answer(w, r, t.host, err)
		},
		ErrorLog:   logging.Std(s.log, zerolog.DebugLevel),
		BufferPool: copyBufPool{},
	}
	return p
}

// ServeHTTP routes r by its Host, applies the tunnel's access rules (see
// checkAccess), takes a slot of the tunnel for it (see acquireVisitor) and
// proxies it, or answers why not. A visitor the rules refuse takes no slot
// and opens no stream: it costs the client nothing.
func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := p.s
	// key is what the registry knows the host by: a tunnel name, or a
	// custom domain, which stands for the name of its tunnel (label).
	key, host, err := s.routeHost(r.Host)
	if err == nil && key == "" && s.cfg.OIDC != nil && r.URL.Path == oidc.CallbackPath {
		// The one callback URL of every tunnel's login.
		s.cfg.OIDC.Callback(w, r)
		return
	}
	if err == nil && key == "" {
		err = errApex
	}
	if err != nil {
		p.answer(w, r, "", err)
		return
	}
	if k := s.registry.Kind(key); k != "" && k != proto.KindHTTP {
		// A TCP or TLS tunnel is not an HTTP one: nothing here for a browser.
		p.answer(w, r, host, errNoTunnel)
		return
	}
	rt, err := p.lookup(r.Context(), key)
	if err != nil {
		if errors.Is(err, errNoTunnel) && strings.Contains(key, ".") {
			err = name.ErrForeignHost // a domain nobody claimed: as before custom domains
		}
		p.answer(w, r, host, err)
		return
	}
	label := tunnelFor(rt, key)
	rules := rt.access(label)
	if err := s.checkAccess(r, rules); err != nil {
		p.answer(w, r, host, err)
		return
	}
	var email string
	if rules != nil && rules.oidc != nil {
		if s.cfg.OIDC == nil {
			// A cluster node without the issuer the tunnel's node has:
			// it cannot check who the visitor is, so nobody passes.
			p.answer(w, r, host, errNoLogin)
			return
		}
		// After the address rules and basic auth, which cost less; the
		// gate answers a visitor it does not let through itself.
		var ok bool
		if email, ok = s.cfg.OIDC.Gate(w, r, host, rules.oidc); !ok {
			return
		}
	}
	slot, err := s.acquireVisitor(w, r, label)
	if err != nil {
		p.answer(w, r, host, err)
		return
	}
	defer slot.Release()
	pool, _ := rt.(*poolRoute)
	if pool != nil {
		// Each request goes to one member, in turn; its stream is that
		// member's, kept in that member's stream pool.
		m := pool.pick(nil)
		if m == nil {
			p.answer(w, r, host, errTunnelOffline)
			return
		}
		rt = m
	}
	s.ops.routed(w, rt, label)
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		// The body is sent to the service while its answer comes back.
		// Without this, net/http's first write of that answer waits on
		// the lock of a body read in progress, so a visitor that stops
		// sending its upload halfway would keep the service's early
		// answer (a 413, a 401) from reaching it until its idle timeout.
		http.NewResponseController(w).EnableFullDuplex()
	}
	ctx := withTarget(r.Context(), target{name: label, host: host, route: rt, pool: pool,
		visitor: s.visitorAddr(r), forwarded: s.forwardedBy(r.RemoteAddr),
		stripAuth: rules.stripsAuth(), email: email})
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}

// lookup returns the route serving name: errNoTunnel if nobody holds the
// name, errTunnelOffline if its client is away for longer than OfflineWait.
func (p *proxy) lookup(ctx context.Context, name string) (Route, error) {
	reg := p.s.registry
	rt, held := reg.Lookup(name)
	if rt == nil && held && p.s.cfg.OfflineWait > 0 {
		// The client is away, most likely reconnecting: give it a
		// moment to come back before answering "offline".
		wctx, cancel := context.WithTimeout(ctx, p.s.cfg.OfflineWait)
		rt = reg.Wait(wctx, name)
		cancel()
	}
	switch {
	case rt != nil:
		return rt, nil
	case held:
		return nil, errTunnelOffline
	default:
		return nil, errNoTunnel
	}
}

// answer is the one place the edge's own answers to visitors are written:
// err, why the request is not (or not fully) answered by its tunnel, becomes
// a status and a short plain page naming host. Before the request reaches
// the proxy (r carries no target), an answer that leaves a body unread
// closes the connection (closeIfBodyPending); once it has, the error is
// logged, and a visitor that left gets a bare status nobody reads.
func (p *proxy) answer(w http.ResponseWriter, r *http.Request, host string, err error) {
	s := p.s
	_, proxied := targetOf(r.Context())
	logged := func(event string) {
		s.log.Debug().Err(err).Str("host", host).Str("remote_addr", r.RemoteAddr).Msg(event)
	}
	if proxied && r.Context().Err() != nil {
		logged("visitor gone")
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	status, event, retry := http.StatusBadGateway, "", ""
	var msg string
	var perr *proto.Error
	var wait *authWaitError
	switch {
	case errors.Is(err, name.ErrMalformedHost):
		status, msg = http.StatusBadRequest, "The Host header is malformed."
	case errors.Is(err, name.ErrForeignHost):
		status, msg = http.StatusNotFound, fmt.Sprintf("No tunnel is served at %s.", r.Host)
	case errors.Is(err, errApex):
		status, msg = http.StatusNotFound, fmt.Sprintf("This is a tunnel server. Tunnels are served at NAME.%s.", s.cfg.Domain)
	case errors.Is(err, errNoTunnel):
		status, msg = http.StatusNotFound, fmt.Sprintf("No tunnel is registered at %s.", host)
	case errors.Is(err, errTunnelBusy):
		status, retry = http.StatusServiceUnavailable, strconv.Itoa(int(limit.RetryAfter/time.Second))
		msg = fmt.Sprintf("The tunnel %s is busy: too many requests in flight. Try again shortly.", host)
	case errors.Is(err, errVisitorShare):
		status, retry = http.StatusTooManyRequests, strconv.Itoa(int(limit.RetryAfter/time.Second))
		msg = fmt.Sprintf("Too many requests in flight from your address to %s (at most %d at once). Try again when some have finished.",
			host, s.limits.PerVisitor())
	case errors.Is(err, errSlowReader):
		status, retry = http.StatusTooManyRequests, "10"
		msg = fmt.Sprintf("The server is short of memory for responses not taken, and your address holds some of it: %s will answer again once they are gone.", host)
	case errors.Is(err, errNoLogin):
		status, msg = http.StatusServiceUnavailable, fmt.Sprintf("%s asks visitors to sign in, and this server has no sign-in configured.", host)
	case errors.Is(err, errAddrDenied):
		status, msg = http.StatusForbidden, fmt.Sprintf("Your address may not visit %s.", host)
	case errors.Is(err, errAuthRequired):
		// The realm is the tunnel's host, so a browser keeps one password
		// per tunnel; host holds no quote (a name and a port).
		w.Header().Set("WWW-Authenticate", `Basic realm="`+host+`", charset="UTF-8"`)
		status, msg = http.StatusUnauthorized, fmt.Sprintf("%s asks for a user name and password.", host)
	case errors.As(err, &wait):
		status, retry = http.StatusTooManyRequests, strconv.Itoa(int((wait.wait+time.Second-1)/time.Second))
		msg = fmt.Sprintf("Too many wrong passwords for tunnels from your address. Try %s again later.", host)
	case errors.Is(err, errAuthBusy):
		status, retry = http.StatusServiceUnavailable, strconv.Itoa(int(limit.RetryAfter/time.Second))
		msg = fmt.Sprintf("The server is busy checking passwords. Try %s again shortly.", host)
	case errors.As(err, &perr) && perr.Code == proto.CodeLocalUnreachable:
		event, msg = "local service unreachable", fmt.Sprintf("The client for %s is connected, but its local service refused the connection.", host)
	case errors.As(err, &perr):
		event, msg = "client refused stream", fmt.Sprintf("The client for %s refused the request.", host)
	case errors.Is(err, context.DeadlineExceeded):
		status = http.StatusGatewayTimeout
		event, msg = "tunnel timeout", fmt.Sprintf("The tunnel %s did not answer in time.", host)
	case errors.Is(err, errTunnelOffline) || mux.IsClosed(err):
		event, msg = "tunnel offline", fmt.Sprintf("Tunnel offline: no client is connected for %s right now.", host)
	default:
		event, msg = "proxy error", fmt.Sprintf("The tunnel %s failed to answer.", host)
	}
	if proxied {
		logged(event)
	} else {
		closeIfBodyPending(w, r)
	}
	if retry != "" {
		w.Header().Set("Retry-After", retry)
	}
	httpserve.Page(w, status, msg)
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
// the public port unless that is the default one. The suffix is built once
// (NewServer), so each request pays one concatenation; neither a name nor
// Domain holds a ':', so no brackets are ever needed.
func (s *Server) publicHost(name string) string {
	return name + s.hostSuffix
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
// behind some gateways) read X_Forwarded_For as X-Forwarded-For. The
// X-Tunnel-User-* headers are tunneld's own, saying who signed in
// (oidc.IdentityHeader): on every tunnel, with login or not, only the
// edge may set them.
func isForwardingHeader(h string) bool {
	h = http.CanonicalHeaderKey(strings.ReplaceAll(h, "_", "-"))
	return strings.HasPrefix(h, "X-Forwarded") || strings.HasPrefix(h, "X-Tunnel-User") || forwardingHeaders[h]
}

// rewrite sends the request to the route the proxy chose for it (see
// pools) with the tunnel's public host as Host, whatever the
// visitor wrote, and sets X-Forwarded-For, -Host and -Proto from the real
// connection. Every forwarding or client-address header the visitor sent
// (isForwardingHeader) is removed, so a visitor can neither forge its
// address nor make the service build links to another host. Only a trusted
// proxy's X-Forwarded-For is extended, and its -Proto kept (a
// TLS-terminating load balancer says https). Not even a trusted proxy's
// X-Forwarded-Host is kept: some load balancers pass the visitor's on
// untouched, and the edge knows the public host anyway.
func rewrite(pr *httputil.ProxyRequest) {
	rt, _ := targetOf(pr.In.Context())
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
	if rt.stripAuth {
		delete(pr.Out.Header, "Authorization")
	}
	if rt.email != "" {
		// The session cookie stays with the edge: a service that saw it
		// could replay it as the visitor.
		oidc.StripCookies(pr.Out.Header)
		pr.Out.Header.Set(oidc.IdentityHeader, rt.email)
	}
	pr.SetXForwarded()
	pr.Out.Header.Set("X-Forwarded-Host", rt.host)
	if v := pr.In.Header.Get("X-Forwarded-Proto"); rt.forwarded && v != "" {
		pr.Out.Header.Set("X-Forwarded-Proto", v)
	}
}

// pools keeps a streamPool per route and sends each request over the
// one of the route the proxy chose for it. A route's pool keeps only that
// route's streams, so a kept stream is only ever reused for a request
// routed to the route it was opened on: never for a later holder of the same
// name. The Server adds a session's pool before the session claims its
// names and drops it when the session ends. Safe for concurrent use.
type pools struct {
	new func(Route) *streamPool
	m   sync.Map // Route → *streamPool
	// reroute finds the route of a request whose route went down before
	// a stream was opened (errRouteDown): it waits, as a lookup does, for
	// the name's client to be back, on this node or another.
	reroute func(ctx context.Context, name string, old Route) (Route, error)
	// skipped counts a request sent on to a pool's next member.
	skipped func()
}

// maxReroutes bounds how many times one request is sent to a new route
// after its route went down.
const maxReroutes = 2

// add gives rt a pool of its own.
func (p *pools) add(rt Route) { p.m.Store(rt, p.new(rt)) }

// closeIdle closes rt's idle streams and keeps none from now on: rt is
// draining.
func (p *pools) closeIdle(rt Route) {
	if sp, ok := p.m.Load(rt); ok {
		sp.(*streamPool).close()
	}
}

// drop closes rt's idle streams and forgets its pool. A request still
// routed to rt fails as offline.
func (p *pools) drop(rt Route) {
	if sp, ok := p.m.LoadAndDelete(rt); ok {
		sp.(*streamPool).close()
	}
}

// RoundTrip sends r over its route's pool. A route that went down before
// any stream was opened (another node's, found dead) is looked up again,
// and r sent to the name's new route: nothing of r was sent, so any
// request may go. A pool member that fails r (memberFailed) is skipped:
// r goes to the pool's next member, each member tried once.
func (p *pools) RoundTrip(r *http.Request) (*http.Response, error) {
	tg, _ := targetOf(r.Context())
	for attempt := 0; ; {
		res, err := p.roundTrip(r, tg)
		if err == nil {
			if tg.pool != nil {
				tg.pool.served(tg.route)
			}
			return res, nil
		}
		if tg.pool != nil && memberFailed(err, r) {
			tg.pool.failed(tg.route)
			tg.tried = append(tg.tried, tg.route)
			if next := tg.pool.pick(tg.tried); next != nil {
				if p.skipped != nil {
					p.skipped()
				}
				tg.route = next
				r = r.WithContext(withTarget(r.Context(), tg))
				continue
			}
		}
		if attempt == maxReroutes || p.reroute == nil || !errors.Is(err, errRouteDown) {
			return res, err
		}
		attempt++
		rt, rerr := p.reroute(r.Context(), tg.name, tg.route)
		if rerr != nil {
			return nil, rerr
		}
		tg.route, tg.pool, tg.tried = rt, nil, nil
		if pool, ok := rt.(*poolRoute); ok {
			m := pool.pick(nil)
			if m == nil {
				return nil, fmt.Errorf("pool %q: %w", tg.name, errTunnelOffline)
			}
			tg.route, tg.pool = m, pool
		}
		r = r.WithContext(withTarget(r.Context(), tg))
	}
}

// roundTrip sends r once over the stream pool of tg.route (tg is r's
// target, which RoundTrip keeps).
func (p *pools) roundTrip(r *http.Request, tg target) (*http.Response, error) {
	rt := tg.route
	sp, ok := p.m.Load(rt)
	if !ok {
		rr, remote := rt.(*remoteRoute)
		if !remote && tg.pool != nil {
			// The member's session ended since it was picked.
			return nil, fmt.Errorf("route %s: %w", rt, errRouteDown)
		}
		if !remote {
			return nil, fmt.Errorf("route %s: %w", rt, errTunnelOffline)
		}
		// Another node's route gets its pool at its first request, and
		// loses it when its claim is over (remoteRoute.gone): checked
		// after the store, so a pool is never left behind.
		sp, _ = p.m.LoadOrStore(rt, p.new(rt))
		select {
		case <-rr.Draining():
			p.drop(rt)
			return nil, fmt.Errorf("route %s: %w", rt, errTunnelOffline)
		default:
		}
	}
	return sp.(*streamPool).RoundTrip(r)
}

// newStreamPool builds rt's pool. Finished streams are kept for the next
// request to the same tunnel: opening one costs a round trip to the client
// and a dial of the local service. A tunnel never has more than
// MaxStreamsPerTunnel requests in flight, so keeping that many means a
// steady load reuses streams instead of churning them (with 64 kept, 256
// busy visitors opened a stream for most requests).
func (s *Server) newStreamPool(rt Route) *streamPool {
	return &streamPool{
		dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return s.dialTunnel(ctx, rt, addr)
		},
		max:  s.cfg.MaxStreamsPerTunnel,
		idle: idleStreamTimeout,
	}
}

// dialTunnel opens a stream on rt for the tunnel named by addr's host, if
// the name still resolves to rt and rt is not draining; otherwise
// (errRouteDown) the request goes to the name's next route, if one comes
// within the offline wait, rather than reach a client that no longer
// holds the name.
func (s *Server) dialTunnel(ctx context.Context, rt Route, addr string) (net.Conn, error) {
	name, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial tunnel %q: %w", addr, err)
	}
	select {
	case <-rt.Draining():
		return nil, fmt.Errorf("dial tunnel %q: client draining: %w", name, errRouteDown)
	default:
	}
	if cur, _ := s.registry.Lookup(name); !routesTo(cur, rt) {
		return nil, fmt.Errorf("dial tunnel %q: %w", name, errRouteDown)
	}
	var visitor string
	if t, ok := targetOf(ctx); ok {
		visitor = t.visitor
	}
	start := time.Now()
	conn, err := rt.Open(ctx, &proto.StreamHeader{Tunnel: name, RemoteAddr: visitor, CloseOnFIN: true})
	s.ops.streamOpened(start, err)
	if err != nil {
		return nil, &openError{fmt.Errorf("dial tunnel %q: %w", name, err)}
	}
	return conn, nil
}

// copyBufPool lends ReverseProxy its copy buffers instead of a fresh 32 KiB
// per response. The pool holds array pointers, not slices: turning the
// slice ReverseProxy hands back into one costs nothing, where a *[]byte
// would cost an allocation on every Put.
type copyBufPool struct{}

const copyBufSize = 32 << 10

var copyBufs = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

func (copyBufPool) Get() []byte { return copyBufs.Get().(*[copyBufSize]byte)[:] }

func (copyBufPool) Put(b []byte) {
	if len(b) == copyBufSize {
		copyBufs.Put((*[copyBufSize]byte)(b))
	}
}
