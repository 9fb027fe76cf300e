package edge

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/validate"
	"github.com/tunnelhq/tunnel/pkg/certs"
	"github.com/tunnelhq/tunnel/pkg/domain"
	"github.com/tunnelhq/tunnel/pkg/limit"
	"github.com/tunnelhq/tunnel/pkg/metrics"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/oidc"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// Authenticator checks a token presented by a client; a *token.Set is one.
// Implementations are safe for concurrent use.
type Authenticator interface {
	// Authenticate returns the identity the token proves, or an error
	// wrapping token.ErrBad. The returned Identity belongs to the caller.
	Authenticate(token string) (*token.Identity, error)
}

// Config configures a Server. Start from DefaultConfig.
type Config struct {
	// Logger receives the edge's events. Use zerolog.Nop() for silence.
	Logger zerolog.Logger

	// Domain is the apex under which tunnels get names: a tunnel "wiki" is
	// served at wiki.<Domain>. Lowercase, no trailing dot. Required.
	Domain string

	// TLSConfig provides the certificates for the public listener, for
	// tests and --dev. Nil means the Server builds its own from StaticCerts
	// and ACME; one of the three is required, and TLSConfig excludes the
	// other two. The Server clones it and sets NextProtos, MinVersion
	// (TLS 1.2 at least) and, if unset, CipherSuites itself.
	TLSConfig *tls.Config

	// StaticCerts serves the names its certificates cover (a wildcard made
	// elsewhere, say). The caller may Reload it at any time.
	StaticCerts *certs.Static

	// ACME gets certificates automatically for the apex and for names that
	// tunnels hold, on first use, for whatever StaticCerts does not cover.
	// Nil turns it off.
	ACME *certs.ACMEConfig

	// PlainServesTunnels makes ServePlain proxy tunnels over plain HTTP
	// instead of redirecting to https, for deployments behind a
	// TLS-terminating load balancer.
	PlainServesTunnels bool

	// TrustedProxies are the peers whose X-Forwarded-For and -Proto are
	// believed. Empty trusts nobody: the headers a visitor sends are
	// dropped. X-Forwarded-Host is always the tunnel's public host.
	TrustedProxies []netip.Prefix

	// PublicPort is the port written in tunnels' public URLs. 0 or 443
	// writes none.
	PublicPort int

	// Auth checks client tokens. Nil accepts no token at all, so then
	// AllowAnonymous must be set.
	Auth Authenticator

	// AllowAnonymous lets clients without a token in. An anonymous client
	// may claim any free name; its names belong to the owner key it sends
	// (proto.Hello.OwnerKey), or without one to its session alone, and
	// its limits (MaxTunnelsPerToken, held names) count against its
	// source address.
	AllowAnonymous bool
	// RequireAccessAnonymous refuses an anonymous client's HTTP tunnel
	// that carries no visitor access rule (basic auth or address prefixes), so
	// that nobody can put a service open to everyone on this server
	// without a token. Tokens have their own policy (token.AccessPolicy).
	RequireAccessAnonymous bool
	// OIDC is the OpenID Connect login tunnels may ask for (proto.Access
	// OIDCAllow): the edge serves its callback on the apex
	// (oidc.CallbackPath) and puts its Gate in front of those tunnels. The
	// caller owns it (and closes it after Serve). Nil: a tunnel asking for
	// login is refused, with an error saying so.
	OIDC *oidc.Login

	// Registry maps names to sessions. Nil means a MemoryRegistry with
	// NameHold.
	Registry Registry

	// NameHold is how long a departed client's names stay reserved for its
	// token (used only when Registry is nil). Default 5 minutes. At most
	// as many names as the token may have tunnels (MaxTunnelsPerToken or
	// its own max_tunnels) are held for it; past that its oldest hold ends.
	NameHold time.Duration

	// Domains checks the DNS of custom domains (TunnelRequest.Domain):
	// at admission, and every DomainRecheck after. Nil means this server
	// serves no custom domains, and refuses a client that asks for one
	// (CodeDomainNotAllowed).
	Domains *domain.Checker
	// DomainRecheck is how often the custom domains of connected
	// sessions are checked again; a domain that no longer points at its
	// tunnel stops being served. Zero means 10 minutes.
	DomainRecheck time.Duration

	// OfflineWait is how long a visitor's request to a name on hold (its
	// client away, likely reconnecting) waits for the client to come back
	// before it is answered 502 "tunnel offline". Zero answers at once.
	// Default 5 s.
	OfflineWait time.Duration

	// MaxTunnelsPerSession is the default number of tunnels one client may
	// ask for; a token's own max_tunnels overrides it. Default 8.
	MaxTunnelsPerSession int

	// Mux configures the client sessions (keepalives, windows, timeouts).
	// Its Logger is replaced by this Config's.
	Mux mux.Config

	// TLSHandshakeTimeout bounds a TLS handshake on the public port.
	// Default 10 s.
	TLSHandshakeTimeout time.Duration

	// ReadHeaderTimeout bounds reading a visitor's request headers.
	// Default 10 s.
	ReadHeaderTimeout time.Duration

	// IdleTimeout closes visitor keep-alive connections idle this long.
	// Default 2 minutes.
	IdleTimeout time.Duration

	// MaxHeaderBytes caps a visitor's request headers. Default 64 KiB.
	MaxHeaderBytes int

	// ShutdownGrace is how long in-flight requests may run after shutdown
	// starts before sessions are closed under them. It bounds a client's
	// own shutdown too: a client that said GoAway gets no new requests and
	// is closed this long after, whether or not it has closed its session.
	// Default 10 s.
	ShutdownGrace time.Duration

	// MaxHandshakes caps connections in their handshake (TLS, and a client's
	// Hello until it is answered) across the server. Connections beyond it
	// are closed at once. Default 4096.
	MaxHandshakes int

	// MaxHandshakesPerIP caps handshakes in progress from one source
	// address (an IPv4 address or an IPv6 /64), so that one peer cannot use
	// up MaxHandshakes. Default 256 (a NAT can hide many browsers).
	MaxHandshakesPerIP int

	// MaxSessionsPerIP caps tunnel client sessions from one source address;
	// a client over it is refused with proto.CodeRateLimited. Default 16.
	MaxSessionsPerIP int

	// MaxTunnelsPerToken caps the tunnels one token (or one anonymous
	// source) holds across all its sessions; a token's own max_tunnels
	// overrides it. Default 32.
	MaxTunnelsPerToken int

	// MaxStreamsPerTunnel caps the visitor requests in flight through one
	// tunnel (each holds a stream); a request over it is answered 503 with
	// Retry-After at once, never queued. Default 256.
	MaxStreamsPerTunnel int

	// MaxRequestsPerVisitor caps the requests in flight through one tunnel
	// from one visitor source (an IPv4 address or an IPv6 /64; behind a
	// trusted proxy, the X-Forwarded-For address), so that one visitor
	// cannot take all of the tunnel's MaxStreamsPerTunnel slots, nor make
	// tunneld buffer more than this many stream windows for responses it
	// does not take. A request over it waits (holding no slot) until one of
	// the source's own requests finishes: at most 256 wait per source and
	// tunnel, each at most 30 s, then 429 with Retry-After. A value at or
	// above MaxStreamsPerTunnel leaves only that limit. Default 16: with the
	// 1 MiB stream window, the most one source can make tunneld hold for one
	// tunnel before the stalls are cut is about 24 MiB of buffers (32 gave
	// +64 MiB of RSS in make bench's attack phase, the limit), and a
	// browser loading a gallery over HTTP/2 still gets every image, 16 at a
	// time.
	MaxRequestsPerVisitor int

	// VisitorIdleTimeout bounds how long a visitor may leave its request
	// stalled: a read of its request body that gets no byte, or a write (or
	// flush) of the response that the visitor does not take, for this long
	// ends the request (the HTTP/1 connection or the HTTP/2 stream is cut).
	// It limits a pause, not a transfer: a download may take hours as long
	// as it keeps moving, and a response with long gaps between writes
	// (server-sent events) is not affected. Upgraded connections
	// (WebSocket) are not governed by it. Default 60 s.
	VisitorIdleTimeout time.Duration

	// SlowReaderBudget bounds, in bytes, what tunneld holds for visitors
	// that do not take their responses. A response whose write to the
	// visitor has been blocked for a second (or half of
	// VisitorIdleTimeout, if shorter) counts as holding one and a half
	// Mux.StreamWindow (what the client may push into the stream
	// meanwhile, in a buffer that grows by doubling) plus 64 KiB of proxy
	// buffers; a response the visitor abandoned counts as much (less if
	// less of it was left) for mux.ServerStreamCloseTimeout (5 s), as long
	// as its stream may keep it.
	// Over the budget, the source addresses holding more than an equal
	// share of it have their stalled responses cut, longest stalled first,
	// and their new requests refused with 429. Default 256 MiB (160 stalled
	// responses at the default 1 MiB window).
	SlowReaderBudget int64

	// AuthFailDelay is the wait imposed on a source address's next
	// authentication after its first few failures; it doubles with each
	// further failure up to AuthFailMaxDelay. Other addresses are not
	// slowed. Default 250 ms.
	AuthFailDelay time.Duration

	// AuthFailMaxDelay caps AuthFailDelay's growth. It must stay below
	// Mux.HandshakeTimeout, which bounds the whole handshake. Default 5 s.
	AuthFailMaxDelay time.Duration
	// AccessLog logs one info event per visitor request (component
	// "access"). Default on.
	AccessLog bool

	// AccessLogger, if not nil, is the logger the access log writes to
	// instead of Logger, still with component "access": tunneld gives it
	// a buffered output (metrics.LogBuffer), so that a request does not
	// cost a write(2), while its other lines stay unbuffered. The caller
	// flushes and closes that output. Nil: Logger.
	AccessLogger *zerolog.Logger

	// Metrics receives the edge's metrics; share it with the parts of
	// tunneld that report to it (limit.Recorder, certs.Recorder). Nil
	// means a metrics.Set of the Server's own (see Server.Metrics).
	Metrics *metrics.Set
}

// DefaultConfig returns a Config with every default filled in; Domain and
// the certificates (TLSConfig, StaticCerts or ACME) still have to be set.
func DefaultConfig() Config {
	l := limit.DefaultConfig()
	return Config{
		Logger:               zerolog.Nop(),
		NameHold:             5 * time.Minute,
		OfflineWait:          5 * time.Second,
		DomainRecheck:        defaultDomainRecheck,
		MaxTunnelsPerSession: 8,
		Mux:                  mux.DefaultConfig(),
		TLSHandshakeTimeout:  10 * time.Second,
		ReadHeaderTimeout:    10 * time.Second,
		IdleTimeout:          2 * time.Minute,
		MaxHeaderBytes:       64 << 10,
		ShutdownGrace:        10 * time.Second,
		MaxHandshakes:        l.MaxHandshakes,
		MaxHandshakesPerIP:   l.MaxHandshakesPerIP,
		MaxSessionsPerIP:     l.MaxSessionsPerIP,
		MaxTunnelsPerToken:   32,
		MaxStreamsPerTunnel:  l.MaxStreamsPerTunnel,
		AuthFailDelay:        l.AuthFailDelay,
		AuthFailMaxDelay:     l.AuthFailMaxDelay,
		AccessLog:            true,

		MaxRequestsPerVisitor: l.MaxRequestsPerVisitor,
		VisitorIdleTimeout:    l.VisitorIdleTimeout,
		SlowReaderBudget:      l.SlowReaderBudget,
	}
}

// Validate reports every setting that is missing or out of range.
func (c Config) Validate() error {
	var errs []error
	if c.Domain == "" {
		errs = append(errs, errors.New("domain is required"))
	} else if c.Domain != strings.ToLower(c.Domain) || strings.HasSuffix(c.Domain, ".") || strings.ContainsAny(c.Domain, ":/ ") {
		errs = append(errs, fmt.Errorf("domain %q: want a lowercase host name without port or trailing dot", c.Domain))
	}
	switch {
	case c.TLSConfig == nil && c.StaticCerts == nil && c.ACME == nil:
		errs = append(errs, errors.New("no certificates: set a TLS config, static certificates or ACME"))
	case c.TLSConfig != nil && (c.StaticCerts != nil || c.ACME != nil):
		errs = append(errs, errors.New("a TLS config excludes static certificates and ACME"))
	}
	if c.ACME != nil {
		if err := c.ACME.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Auth == nil && !c.AllowAnonymous {
		errs = append(errs, errors.New("no tokens configured and anonymous clients not allowed: nobody could connect"))
	}
	if c.PublicPort < 0 || c.PublicPort > 65535 {
		errs = append(errs, fmt.Errorf("public port %d out of range", c.PublicPort))
	}
	if c.NameHold < 0 {
		errs = append(errs, fmt.Errorf("name hold %v is negative", c.NameHold))
	}
	if c.DomainRecheck < 0 {
		errs = append(errs, fmt.Errorf("domain recheck %v is negative", c.DomainRecheck))
	}
	if c.OfflineWait < 0 {
		errs = append(errs, fmt.Errorf("offline wait %v is negative", c.OfflineWait))
	}
	errs = append(errs,
		validate.Positive("max tunnels per session", c.MaxTunnelsPerSession),
		validate.Positive("TLS handshake timeout", c.TLSHandshakeTimeout),
		validate.Positive("read header timeout", c.ReadHeaderTimeout),
		validate.Positive("idle timeout", c.IdleTimeout),
		validate.Positive("shutdown grace", c.ShutdownGrace),
		validate.Positive("visitor idle timeout", c.VisitorIdleTimeout),
		validate.Positive("max handshakes", c.MaxHandshakes),
		validate.Positive("max handshakes per IP", c.MaxHandshakesPerIP),
		validate.Positive("max sessions per IP", c.MaxSessionsPerIP),
		validate.Positive("max tunnels per token", c.MaxTunnelsPerToken),
		validate.Positive("max streams per tunnel", c.MaxStreamsPerTunnel),
		validate.Positive("max requests per visitor", c.MaxRequestsPerVisitor),
		validate.Positive("slow reader budget (bytes)", c.SlowReaderBudget),
		validate.Positive("max header bytes", c.MaxHeaderBytes),
	)
	switch {
	case c.AuthFailDelay <= 0 || c.AuthFailMaxDelay < c.AuthFailDelay:
		errs = append(errs, fmt.Errorf("auth fail delay %v and max delay %v: want 0 < delay <= max", c.AuthFailDelay, c.AuthFailMaxDelay))
	case c.AuthFailMaxDelay >= c.Mux.HandshakeTimeout:
		errs = append(errs, fmt.Errorf("auth fail max delay %v must be below the handshake timeout %v", c.AuthFailMaxDelay, c.Mux.HandshakeTimeout))
	}
	if err := c.Mux.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	return nil
}
