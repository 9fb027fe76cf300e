package edge

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/mux"
)

// Config configures a Server. Start from DefaultConfig.
type Config struct {
	// Logger receives the edge's events. Use zerolog.Nop() for silence.
	Logger zerolog.Logger

	// Domain is the apex under which tunnels get names: a tunnel "wiki" is
	// served at wiki.<Domain>. Lowercase, no trailing dot. Required.
	Domain string

	// TLSConfig provides the certificates for the public listener
	// (autocert's, static ones, or a test's). Required. The Server clones
	// it and sets NextProtos and MinVersion itself.
	TLSConfig *tls.Config

	// PublicPort is the port written in tunnels' public URLs. 0 or 443
	// writes none.
	PublicPort int

	// Auth checks client tokens. Nil accepts no token at all, so then
	// AllowAnonymous must be set.
	Auth Authenticator

	// AllowAnonymous lets clients without a token in. An anonymous client
	// may claim any free name; its names belong to its IP address.
	AllowAnonymous bool

	// Registry maps names to sessions. Nil means a MemoryRegistry with
	// NameHold.
	Registry Registry

	// NameHold is how long a departed client's names stay reserved for its
	// token (used only when Registry is nil). Default 5 minutes.
	NameHold time.Duration

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
	// starts before sessions are closed under them. Default 10 s.
	ShutdownGrace time.Duration
}

// DefaultConfig returns a Config with every default filled in; Domain and
// TLSConfig still have to be set.
func DefaultConfig() Config {
	return Config{
		Logger:               zerolog.Nop(),
		NameHold:             5 * time.Minute,
		OfflineWait:          5 * time.Second,
		MaxTunnelsPerSession: 8,
		Mux:                  mux.DefaultConfig(),
		TLSHandshakeTimeout:  10 * time.Second,
		ReadHeaderTimeout:    10 * time.Second,
		IdleTimeout:          2 * time.Minute,
		MaxHeaderBytes:       64 << 10,
		ShutdownGrace:        10 * time.Second,
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
	if c.TLSConfig == nil {
		errs = append(errs, errors.New("TLS config is required"))
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
	if c.OfflineWait < 0 {
		errs = append(errs, fmt.Errorf("offline wait %v is negative", c.OfflineWait))
	}
	if c.MaxTunnelsPerSession <= 0 {
		errs = append(errs, fmt.Errorf("max tunnels per session must be positive, got %d", c.MaxTunnelsPerSession))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"TLS handshake timeout", c.TLSHandshakeTimeout},
		{"read header timeout", c.ReadHeaderTimeout},
		{"idle timeout", c.IdleTimeout},
		{"shutdown grace", c.ShutdownGrace},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %v", d.name, d.v))
		}
	}
	if c.MaxHeaderBytes <= 0 {
		errs = append(errs, fmt.Errorf("max header bytes must be positive, got %d", c.MaxHeaderBytes))
	}
	if err := c.Mux.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	return nil
}
