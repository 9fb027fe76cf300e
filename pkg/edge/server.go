package edge

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/acme"

	"github.com/tunnelhq/tunnel/internal/expiring"
	"github.com/tunnelhq/tunnel/internal/httpserve"
	"github.com/tunnelhq/tunnel/internal/logging"
	"github.com/tunnelhq/tunnel/pkg/certs"
	"github.com/tunnelhq/tunnel/pkg/limit"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/name"
	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// Session is one connected, authenticated client as the edge sees it, and
// the Route to it for the names it claimed. Its fields are set before it is
// registered and never change after; read them freely from any goroutine.
type Session struct {
	// ID identifies the session in logs, the access log and the status
	// page: 16 random hex digits, unique per connection.
	ID string
	// Owner is whom the session's names belong to: the Identity.ID of its
	// token, or for an anonymous client a key of its own (see anonOwner).
	// Another owner cannot claim them, live or on hold.
	Owner string
	// Label is the token's label ("anonymous" without one), for logs and
	// the status page only.
	Label string
	// RemoteAddr is the client's address, host:port, as the connection had it.
	RemoteAddr string
	// Connected is when the client's handshake was accepted.
	Connected time.Time
	// Names are the tunnel names the session serves, in the order of the
	// client's Hello (random ones drawn where it left the name empty).
	Names []string
	// Kinds are the kinds of Names, in the same order (proto.KindHTTP,
	// KindTCP or KindTLS).
	Kinds []string

	// allow maps a TCP tunnel's name to the SHA-256 hashes of the tokens
	// its owner allowed to connect (proto.TunnelRequest.AllowTokens).
	allow map[string][][sha256.Size]byte

	mux             *mux.ServerSession
	tokenMaxTunnels int // the token's own max_tunnels; 0: server defaults

	// requests are the Hello's tunnel requests, in the order of Names:
	// what a ClusterRegistry writes into the table for other nodes.
	requests []proto.TunnelRequest

	// domains maps each custom domain the session serves to the name of
	// its tunnel (proto.TunnelRequest.Domain); set with Names.
	domains map[string]string

	// accessRules maps each of Names that has visitor access rules to
	// them (proto.TunnelRequest.Access); set with Names, before the
	// session is registered.
	accessRules map[string]*accessRules

	// account is whom the per-owner bounds count against: the owner for
	// a token, the source address for anonymous clients (who can make up
	// owner keys at will). Empty means Owner.
	account string
	// maxHeld bounds the names the registry keeps on hold for account
	// after this session; past it the account's oldest hold is dropped.
	// 0 means no bound.
	maxHeld int
}

// Open implements Route: a stream on the session's yamux connection.
func (s *Session) Open(ctx context.Context, h *proto.StreamHeader) (net.Conn, error) {
	return s.mux.Open(ctx, h)
}

// access implements Route: the rules of the session's tunnel name.
func (s *Session) access(name string) *accessRules { return s.accessRules[name] }

// Kind returns the kind of the session's tunnel name (KindHTTP where
// Kinds says nothing), "" if it serves no such name.
func (s *Session) Kind(name string) string {
	i := slices.Index(s.Names, name)
	switch {
	case i < 0:
		return ""
	case i < len(s.Kinds) && s.Kinds[i] != "":
		return s.Kinds[i]
	}
	return proto.KindHTTP
}

// Draining implements Route: closed once the client said it is stopping.
func (s *Session) Draining() <-chan struct{} { return s.mux.Draining() }

// String implements Route: the session's ID.
func (s *Session) String() string { return s.ID }

func (s *Session) accountKey() string {
	if s.account != "" {
		return s.account
	}
	return s.Owner
}

// Server is tunneld's public side. Build it with NewServer and run it with
// Serve; a Server serves one listener once.
type Server struct {
	cfg       Config
	log       zerolog.Logger
	tlsConfig *tls.Config
	registry  Registry
	// hostSuffix follows a name in its public host: "." + Domain, and
	// portSuffix (":" + PublicPort unless that is the default one; see
	// publicHost). portSuffix alone follows a custom domain.
	hostSuffix, portSuffix string

	acme       *certs.ACME // nil without Config.ACME
	refusedSet             // names the ACME host policy refused, for log-once

	httpSrv   *http.Server
	httpConns *connQueue
	limits    *limit.Limits
	pacer     *limit.Pacer
	ops       *ops   // metrics, access log, status (ops.go)
	proxy     *proxy // the visitors' handler, and the stream pools of the routes (proxy.go)

	// h1 are the visitor connections the edge's own HTTP/1.1 path
	// serves (h1conn.go); what it does not serve goes to httpConns.
	h1 h1Conns

	// bcryptSlots bounds the visitor password checks running at once
	// (access.go).
	bcryptSlots chan struct{}

	// rechecks is what the custom domains' re-check remembers between
	// passes (domains.go); only its goroutine touches it.
	rechecks map[domainKey]*domainCheck

	mu       sync.Mutex
	sessions map[*Session]struct{}
	closing  bool

	wg sync.WaitGroup // connection and session goroutines
}

// NewServer validates cfg and builds a Server. It starts nothing.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With().Str("component", "edge").Logger()
	cfg.Mux.Logger = log
	reg := cfg.Registry
	if reg == nil {
		reg = NewMemoryRegistry(cfg.NameHold)
	}
	s := &Server{
		cfg:        cfg,
		log:        log,
		registry:   reg,
		httpConns:  newConnQueue(),
		sessions:   make(map[*Session]struct{}),
		refusedSet: refusedSet{refused: expiring.New[string, struct{}](refusedLogCap, 0)},
		ops:        newOps(cfg),
		hostSuffix: "." + cfg.Domain,

		bcryptSlots: newBcryptSlots(),
	}
	if p := cfg.PublicPort; p != 0 && p != 443 {
		s.portSuffix = ":" + strconv.Itoa(p)
	}
	s.hostSuffix += s.portSuffix
	s.limits = limit.New(limitConfig(cfg), log, s.ops.metrics)
	s.pacer = newPacer(cfg, log, s.ops.metrics)
	s.proxy = s.newProxy()
	if a, ok := reg.(interface{ attach(*Server) }); ok {
		a.attach(s) // a ClusterRegistry drops its routes' pools and closes replaced sessions
	}
	// Session tickets stay on (the tls.Config default): resuming saves
	// visitors a full handshake.
	tlsConfig := cfg.TLSConfig.Clone()
	if tlsConfig == nil {
		tlsConfig = &tls.Config{GetCertificate: s.getCertificate}
	}
	if cfg.ACME != nil {
		a, err := certs.NewACME(cfg.ACME, cfg.Domain, s.hostPolicy, reg, s.ops.metrics, log)
		if err != nil {
			return nil, err
		}
		s.acme = a
		tlsConfig.NextProtos = append(tlsConfig.NextProtos, acme.ALPNProto)
	}
	tlsConfig.NextProtos = nextProtos(tlsConfig.NextProtos)
	if tlsConfig.MinVersion < tls.VersionTLS12 {
		tlsConfig.MinVersion = tls.VersionTLS12
	}
	if tlsConfig.CipherSuites == nil {
		tlsConfig.CipherSuites = modernCipherSuites
	}
	s.tlsConfig = tlsConfig
	s.httpSrv = &http.Server{
		Handler:           withTLSState(s.ops.instrument(s.paced(s.proxy))),
		ConnContext:       handoffContext,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          logging.Std(log, zerolog.DebugLevel),
	}
	return s, nil
}

// nextProtos puts the tunnel protocol first, then HTTP/2 and HTTP/1.1,
// keeping any others the caller set (acme-tls/1 for autocert).
func nextProtos(existing []string) []string {
	out := []string{proto.ALPN, proto.ConnectALPN, "h2", "http/1.1"}
	for _, p := range existing {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Serve accepts connections on ln, a plain TCP listener, until ctx ends,
// then shuts down gracefully (see the package doc) and returns nil. It
// closes ln. A Server must not be served twice.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.ops.listening.Store(true) // before the log line: "serving" means /readyz can say so
	defer s.ops.listening.Store(false)
	s.log.Info().Str("addr", ln.Addr().String()).Str("domain", s.cfg.Domain).Msg("serving")
	// The queue of handshaken conns is served until shutdown says stop,
	// after the GOAWAYs; httpserve.Serve then gives requests ShutdownGrace.
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	defer stopHTTP()
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		// The own path's connections get the same grace, beside
		// net/http's.
		h1Done := make(chan struct{})
		go func() {
			defer close(h1Done)
			<-httpCtx.Done()
			if !s.h1.shutdown(s.cfg.ShutdownGrace) {
				s.log.Warn().Msg("grace period over; closing remaining requests")
			}
		}()
		httpserve.Serve(httpCtx, s.httpSrv, s.httpConns, s.cfg.ShutdownGrace, func(err error) {
			s.log.Warn().Err(err).Msg("grace period over; closing remaining requests")
		})
		stopHTTP()
		<-h1Done
	}()

	// The custom domains' re-check ends when shutdown begins (ctx), or
	// when Serve returns for a failed accept.
	recheckCtx, stopRecheck := context.WithCancel(ctx)
	recheckDone := make(chan struct{})
	go func() {
		defer close(recheckDone)
		if s.cfg.Domains != nil {
			s.recheckDomains(recheckCtx)
		}
	}()
	defer func() { stopRecheck(); <-recheckDone }()

	acceptErr := acceptUntil(ctx, ln, func(conn net.Conn) {
		s.wg.Add(1)
		go s.handleConn(ctx, conn)
	})
	ln.Close()
	s.shutdown(stopHTTP, httpDone)
	if acceptErr != nil {
		return fmt.Errorf("accept: %w", acceptErr)
	}
	return nil
}

// acceptUntil gives each connection ln accepts to handle until ctx ends,
// which closes ln, or Accept fails. It returns Accept's error, or nil
// when ctx ended the loop.
func acceptUntil(ctx context.Context, ln net.Listener, handle func(net.Conn)) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		handle(conn)
	}
}

// shutdown runs the shutdown order described in the package doc.
func (s *Server) shutdown(stopHTTP context.CancelFunc, httpDone <-chan struct{}) {
	s.mu.Lock()
	s.closing = true
	sessions := make([]*Session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	s.log.Info().Int("sessions", len(sessions)).Msg("shutting down")

	for _, sess := range sessions {
		if err := sess.mux.GoAway("server shutting down"); err != nil {
			s.log.Debug().Err(err).Str("session_id", sess.ID).Msg("goaway")
		}
	}
	stopHTTP() // httpserve.Serve shuts httpSrv down within ShutdownGrace
	<-httpDone
	for _, sess := range sessions {
		sess.mux.Close()
	}
	s.wg.Wait() // every session's done hook has run: its pool is dropped
	if s.acme != nil {
		s.acme.Close()
	}
	s.log.Info().Msg("stopped")
}

// handleConn completes the TLS handshake and dispatches on ALPN.
func (s *Server) handleConn(ctx context.Context, raw net.Conn) {
	handedOff := false // to a session's control loop, which finishes for us
	defer func() {
		if !handedOff {
			s.wg.Done()
		}
	}()
	defer s.containPanic(raw)
	guard, ok := s.limits.AdmitConn(raw.RemoteAddr())
	if !ok {
		raw.Close()
		return
	}
	defer func() {
		if !handedOff {
			guard.Release()
		}
	}()
	hctx, cancel := context.WithTimeout(ctx, s.cfg.TLSHandshakeTimeout)
	defer cancel()
	replay, passed := s.passthrough(hctx, ctx, raw, guard)
	if passed {
		return
	}
	conn := tls.Server(mux.WireConn(replay), s.tlsConfig)
	err := conn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		s.rejectHandshake(raw, err)
		return
	}
	switch conn.ConnectionState().NegotiatedProtocol {
	case proto.ALPN:
		handedOff = s.handleSession(ctx, conn, guard)
	case proto.ConnectALPN:
		s.handleConnect(ctx, conn, guard)
	case acme.ALPNProto:
		// A CA's TLS-ALPN-01 check: the handshake itself, answered by
		// autocert's challenge certificate, was the whole point.
		conn.Close()
	case "h2":
		guard.HandshakeDone()
		s.httpConns.push(conn)
	default:
		// HTTP/1.1, or no ALPN: the edge's own path, which hands
		// net/http what it does not serve.
		guard.HandshakeDone()
		state := conn.ConnectionState()
		s.serveH1(conn, &state, s.httpConns, false, &s.h1)
	}
}

// rejectHandshake closes a connection whose TLS handshake failed, answering
// a plain-HTTP request with a readable 400 the way net/http does.
func (s *Server) rejectHandshake(raw net.Conn, err error) {
	defer raw.Close()
	var rhe tls.RecordHeaderError
	if errors.As(err, &rhe) && rhe.Conn != nil && looksLikeHTTP(rhe.RecordHeader[:]) {
		raw.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = raw.Write([]byte("HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" +
			"This port speaks HTTPS only: use https://\n"))
	}
	s.log.Debug().Err(err).Str("remote_addr", raw.RemoteAddr().String()).Msg("tls handshake failed")
}

func looksLikeHTTP(hdr []byte) bool {
	switch string(hdr) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH", "CONNE":
		return true
	}
	return false
}

// handleSession takes one tunnel client through its handshake. Once the
// client is accepted, the session's control loop runs the rest (draining,
// disconnect) through mux's Notify hooks, and this goroutine ends: an idle
// client costs one goroutine less. It reports whether it handed the session
// off, in which case the hooks release guard and s.wg when the session ends.
func (s *Server) handleSession(ctx context.Context, conn *tls.Conn, guard *limit.Conn) (handedOff bool) {
	remote := conn.RemoteAddr().String()
	log := s.log.With().Str("remote_addr", remote).Logger()
	ms, hello, err := mux.Server(ctx, conn, s.cfg.Mux)
	if err != nil {
		if errors.Is(err, proto.ErrVersionMismatch) || errors.Is(err, proto.ErrMalformed) ||
			errors.Is(err, proto.ErrUnknownType) || errors.Is(err, proto.ErrFrameTooLarge) || errors.Is(err, proto.ErrUnexpected) ||
			errors.Is(err, proto.ErrTruncatedFrame) {
			log.Warn().Err(err).Msg("client handshake refused")
		} else {
			log.Debug().Err(err).Msg("client handshake failed")
		}
		return
	}
	sess, perr := s.admitLimited(ctx, ms, hello, remote, guard)
	if perr != nil {
		lvl := zerolog.WarnLevel
		if perr.Code == proto.CodeBadToken {
			lvl = zerolog.DebugLevel // the limits log bursts of these
		}
		log.WithLevel(lvl).Str("code", string(perr.Code)).Str("reason", perr.Message).Msg("client refused")
		s.ops.refused(string(perr.Code))
		ms.Reject(perr)
		return
	}
	log = log.With().Str("session_id", sess.ID).Str("label", sess.Label).Logger()

	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.unregister(sess)
		ms.Reject(&proto.Error{Code: proto.CodeDraining, Message: "server is shutting down"})
		return false
	}
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()
	forget := func() {
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
	}

	up := make(chan struct{})  // sessionUp has run: sessionDown may
	var drainBound *time.Timer // both hooks run on the control loop's goroutine
	ms.Notify(func() {
		// The client is stopping: route nothing new to it and let go of
		// its idle streams (and of each one that becomes idle from now on)
		// so its in-flight work can finish quickly. Nobody else's pool is
		// touched. A client that then keeps its session open is closed
		// after ShutdownGrace, like in-flight work at our own shutdown.
		s.registry.Release(sess)
		s.proxy.pools.closeIdle(sess)
		drainBound = time.AfterFunc(s.cfg.ShutdownGrace, func() {
			log.Warn().Dur("grace", s.cfg.ShutdownGrace).Msg("draining client kept its session open; closing it")
			ms.Close()
		})
	}, func() {
		<-up
		if drainBound != nil {
			drainBound.Stop()
		}
		s.registry.Release(sess)
		ms.Close()
		s.proxy.pools.drop(sess)
		log.Info().Dur("duration", time.Since(sess.Connected)).Str("reason", disconnectReason(ctx, ms)).Msg("tunnel disconnected")
		s.ops.sessionDown(sess)
		forget()
		guard.Release()
		s.wg.Done()
	})
	if err := ms.Accept(s.welcome(sess)); err != nil {
		s.unregister(sess)
		forget()
		log.Info().Err(err).Msg("client left during handshake")
		return false
	}
	log.Info().Strs("names", sess.Names).Msg("tunnel registered")
	s.ops.sessionUp(sess)
	close(up)
	return true
}

// admit authenticates a Hello, validates the names it asks for and claims
// them. A non-nil *proto.Error is the refusal to send.
func (s *Server) admit(ctx context.Context, ms *mux.ServerSession, hello *proto.Hello, remote string) (*Session, *proto.Error) {
	sess, id, perr := s.authenticate(ms, hello, remote)
	if perr != nil {
		return nil, perr
	}
	asked, perr := s.validateNames(sess, id, hello)
	if perr != nil {
		return nil, perr
	}
	rules, perr := compileAccessAll(hello, s.cfg.OIDC != nil)
	if perr != nil {
		return nil, perr
	}
	if perr := s.checkAccessPolicy(id, hello); perr != nil {
		return nil, perr
	}
	if perr := checkPool(id, hello); perr != nil {
		return nil, perr
	}
	if perr := s.claim(ctx, sess, hello, asked, rules); perr != nil {
		return nil, perr
	}
	return sess, nil
}

// authenticate checks hello's token, or lets an anonymous client in if
// the server allows them, and builds the session with its owner and bounds;
// its Names are left to claim. id is nil for an anonymous client.
func (s *Server) authenticate(ms *mux.ServerSession, hello *proto.Hello, remote string) (sess *Session, id *token.Identity, perr *proto.Error) {
	sess = &Session{
		ID:         newSessionID(),
		RemoteAddr: remote,
		Connected:  time.Now(),
		mux:        ms,
	}
	switch {
	case hello.Token == "" && s.cfg.AllowAnonymous:
		// An anonymous client's names belong to its owner key, so that
		// another client behind the same address cannot take them over,
		// and the client itself gets them back from a new address. Its
		// limits count against its source address, since keys are free.
		sess.Owner, sess.Label = anonOwner(hello.OwnerKey, sess.ID), "anonymous"
		sess.account = "anon:" + limit.SourceKey(ms.RemoteAddr()).String()
	case hello.Token == "":
		return nil, nil, &proto.Error{Code: proto.CodeBadToken, Message: "a token is required"}
	default:
		var err error
		if s.cfg.Auth == nil {
			err = token.ErrBad
		} else {
			id, err = s.cfg.Auth.Authenticate(hello.Token)
		}
		if err != nil {
			return nil, nil, &proto.Error{Code: proto.CodeBadToken, Message: "the token is not valid"}
		}
		sess.Owner, sess.Label, sess.tokenMaxTunnels = id.ID, id.Label, id.MaxTunnels
	}
	// A departed client's names stay on hold for it, at most as many as
	// it may have tunnels: churning fresh names cannot pile them up.
	sess.maxHeld = s.cfg.MaxTunnelsPerToken
	if sess.tokenMaxTunnels > 0 {
		sess.maxHeld = sess.tokenMaxTunnels
	}
	return sess, id, nil
}

// validateNames checks the tunnels hello asks for against the session's
// tunnel limit, the name rules and what the token id (nil: anonymous) may
// claim, and returns the names asked for, in order; the tunnels that leave
// the name empty get a random one in claim.
func (s *Server) validateNames(sess *Session, id *token.Identity, hello *proto.Hello) (asked []string, perr *proto.Error) {
	maxTunnels := s.cfg.MaxTunnelsPerSession
	if sess.tokenMaxTunnels > 0 {
		maxTunnels = sess.tokenMaxTunnels
	}
	if len(hello.Tunnels) > maxTunnels {
		return nil, &proto.Error{Code: proto.CodeTooManyTunnels,
			Message: fmt.Sprintf("%d tunnels asked for, at most %d allowed", len(hello.Tunnels), maxTunnels)}
	}
	for _, t := range hello.Tunnels {
		if t.Name == "" {
			continue
		}
		if err := name.Validate(t.Name); err != nil {
			code := proto.CodeInvalidName
			if errors.Is(err, name.ErrReserved) {
				code = proto.CodeNameNotAllowed
			}
			return nil, &proto.Error{Code: code, Message: err.Error()}
		}
		if slices.Contains(asked, t.Name) {
			return nil, &proto.Error{Code: proto.CodeInvalidName, Message: fmt.Sprintf("name %q asked for twice", t.Name)}
		}
		if id != nil && !id.MayClaim(t.Name, false) {
			return nil, &proto.Error{Code: proto.CodeNameNotAllowed, Message: fmt.Sprintf("this token may not claim %q", t.Name)}
		}
		asked = append(asked, t.Name)
	}
	if perr := s.validateDomains(id, hello); perr != nil {
		return nil, perr
	}
	return asked, nil
}

// claimAttempts is how many times claim draws fresh random names when the
// registry already holds one it drew.
const claimAttempts = 6

// claim draws random names for the tunnels of hello that left theirs empty,
// sets sess.Names, and claims them all in the registry. Random names are
// drawn last so they never collide with asked-for ones, and drawn again if
// the registry holds one by the time of the claim. The custom domains are
// claimed with the names, once their DNS points at their tunnels (checked
// once: a fresh random name cannot be a CNAME's target, so a redraw does
// not change the answer). Sessions of the same owner that the claim
// replaced are closed.
func (s *Server) claim(ctx context.Context, sess *Session, hello *proto.Hello, asked []string, rules []*accessRules) *proto.Error {
	random := len(hello.Tunnels) - len(asked)
	// The session's streams get a pool of their own before a visitor can
	// find it under one of its names.
	s.proxy.pools.add(sess)
	for attempt := 1; ; attempt++ {
		names := slices.Clone(asked)
		for range random {
			names = append(names, s.freeRandomName(names))
		}
		sess.Names = orderNames(hello, names)
		sess.Kinds, sess.allow = kindsOf(hello, sess.Names)
		sess.accessRules = accessByName(rules, sess.Names)
		sess.requests = hello.Tunnels
		sess.domains = domainsOf(hello, sess.Names)
		if attempt == 1 && sess.domains != nil {
			if perr := s.verifyDomains(ctx, sess); perr != nil {
				s.proxy.pools.drop(sess)
				return perr
			}
			// The domains go on hold with the names: they must not
			// crowd the names out of the account's hold bound.
			if sess.maxHeld > 0 {
				sess.maxHeld += len(sess.domains)
			}
		}
		claimed := sess.Names
		for _, t := range hello.Tunnels {
			if t.Domain != "" {
				claimed = append(slices.Clip(claimed), t.Domain)
			}
		}
		replaced, err := s.registry.Claim(sess, claimed)
		if err == nil {
			for _, old := range replaced {
				s.log.Info().Str("session_id", old.ID).Str("by", sess.ID).Msg("session replaced by its owner")
				// Its done hook (see handleSession) releases what it held.
				old.mux.Close()
			}
			return nil
		}
		if errors.Is(err, ErrRegistryUnavailable) {
			s.proxy.pools.drop(sess)
			return &proto.Error{Code: proto.CodeUnavailable, Message: "the name table is unavailable for now; try again"}
		}
		if errors.Is(err, ErrPoolMismatch) {
			s.proxy.pools.drop(sess)
			return &proto.Error{Code: proto.CodePoolMismatch, Message: err.Error() + " than this client asks for: every client of a pool must ask for the same kind and access rules"}
		}
		if errors.Is(err, ErrPoolUnsupported) {
			s.proxy.pools.drop(sess)
			return &proto.Error{Code: proto.CodePoolNotAllowed, Message: err.Error()}
		}
		if !errors.Is(err, ErrNameTaken) || random == 0 || attempt == claimAttempts {
			s.proxy.pools.drop(sess)
			return &proto.Error{Code: proto.CodeNameTaken, Message: err.Error() + " is held by another client"}
		}
	}
}

// unregister takes an admitted session that will not serve (or serves no
// more) off the registry, and drops its stream pool.
func (s *Server) unregister(sess *Session) {
	s.registry.Release(sess)
	s.proxy.pools.drop(sess)
}

// anonOwner is the owner of an anonymous client's names: a hash of its
// owner key (never the key itself, which would then show in logs and
// status pages), or with no key one unique to the session, which nobody
// else can claim names for.
func anonOwner(key, sessionID string) string {
	if key == "" {
		return "anon:session:" + sessionID
	}
	sum := sha256.Sum256([]byte(key))
	return "anon:key:" + hex.EncodeToString(sum[:16])
}

// orderNames lays names back out in the order of hello.Tunnels: asked-for
// names came first in names, then random ones.
func orderNames(hello *proto.Hello, names []string) []string {
	out := make([]string, 0, len(hello.Tunnels))
	asked, drawn := 0, 0
	for _, t := range hello.Tunnels {
		if t.Name != "" {
			asked++
		}
	}
	for _, t := range hello.Tunnels {
		if t.Name != "" {
			out = append(out, t.Name)
		} else {
			out = append(out, names[asked+drawn])
			drawn++
		}
	}
	return out
}

func (s *Server) freeRandomName(taken []string) string {
	for {
		n := name.Random()
		if !slices.Contains(taken, n) && !s.registry.Held(n) {
			return n
		}
	}
}

func (s *Server) welcome(sess *Session) *proto.Welcome {
	w := &proto.Welcome{
		SessionID: sess.ID,
		Limits:    proto.Limits{MaxFrameSize: proto.MaxFrameSize},
		Heartbeat: proto.Heartbeat{
			IntervalMS: s.cfg.Mux.KeepAliveInterval.Milliseconds(),
			TimeoutMS:  s.cfg.Mux.PeerTimeout().Milliseconds(),
		},
	}
	for _, n := range sess.Names {
		k := sess.Kind(n)
		r := sess.access(n)
		w.Tunnels = append(w.Tunnels, proto.TunnelInfo{Name: n, Kind: k, URL: s.kindURL(k, n), Access: r != nil, OIDC: r != nil && r.oidc != nil,
			Pool: sess.pooled(n)})
	}
	for i, t := range sess.requests {
		if t.Domain != "" && i < len(w.Tunnels) {
			w.Tunnels[i].DomainURL = "https://" + s.domainHost(t.Domain)
		}
	}
	return w
}

// PublicURL is the URL visitors use for the HTTP tunnel name.
func (s *Server) PublicURL(name string) string {
	return "https://" + s.publicHost(name)
}

// kindURL is the URL of a tunnel name of kind k: https:// for HTTP,
// tcp:// (reached with "tunnel connect") and tls:// (any TLS client) for
// the others.
func (s *Server) kindURL(k, name string) string {
	switch k {
	case proto.KindTCP, proto.KindTLS:
		return k + "://" + s.publicHost(name)
	}
	return s.PublicURL(name)
}

// kindsOf lays out the kinds of hello's tunnels in the order of names (the
// same as hello's) and the allowed token hashes of its TCP tunnels. The
// hashes were checked by proto (64 lowercase hex digits).
func kindsOf(hello *proto.Hello, names []string) ([]string, map[string][][sha256.Size]byte) {
	kinds := make([]string, len(hello.Tunnels))
	var allow map[string][][sha256.Size]byte
	for i, t := range hello.Tunnels {
		kinds[i] = t.Kind
		for _, h := range t.AllowTokens {
			var sum [sha256.Size]byte
			if _, err := hex.Decode(sum[:], []byte(h)); err != nil {
				continue
			}
			if allow == nil {
				allow = make(map[string][][sha256.Size]byte)
			}
			allow[names[i]] = append(allow[names[i]], sum)
		}
	}
	return kinds, allow
}

func newSessionID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// connQueue is a net.Listener fed with connections whose TLS handshake the
// edge has already done, so net/http serves them (HTTP/2 included: it sees
// a *tls.Conn that negotiated h2).
type connQueue struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) {
	select {
	case q.conns <- c:
	case <-q.done:
		c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.closeOnce.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return queueAddr{} }

type queueAddr struct{}

func (queueAddr) Network() string { return "edge" }
func (queueAddr) String() string  { return "edge" }
