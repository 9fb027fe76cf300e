package edge

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/internal/expiring"
	"github.com/tunnelhq/tunnel/pkg/certs"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// The certificates themselves (static files, ACME with its order budget)
// are package certs'; what is here needs the registry: the host policy
// that lets ACME order only names a tunnel holds, and the choice between
// the sources for a handshake.

// refusedLogCap bounds how many refused names are remembered for
// log-once; past it the least recently refused is forgotten, so a flood of
// random SNI names costs a few log lines, not unbounded memory.
const refusedLogCap = 4096

// hostPolicy allows the apex, names an HTTP tunnel holds (live or on
// hold for a reconnecting owner), and custom domains a tunnel serves now
// (claimed live, so verified in DNS: not one on hold, refused, or dropped
// by the re-check, since anyone can make a visitor ask for any name);
// anything else is refused before the CA is contacted, so no certificate
// is ever ordered for a name nobody serves. host may carry a port:
// autocert's HTTP-01 handler passes the Host header.
func (s *Server) hostPolicy(_ context.Context, host string) error {
	key, _, err := s.routeHost(host)
	switch {
	case err != nil:
	case key == "":
		return nil
	case strings.Contains(key, "."): // a custom domain
		if rt, _ := s.registry.Lookup(key); rt != nil && s.registry.Kind(key) == proto.KindHTTP {
			return nil
		}
	case s.registry.Held(key) && s.registry.Kind(key) == proto.KindHTTP:
		// TCP and TLS tunnels never get a certificate: a TLS tunnel's
		// service holds its own, and a TCP tunnel's visitors handshake
		// with the apex.
		return nil
	}
	if s.noteRefused(host) {
		s.log.Info().Str("host", host).Msg("no certificate for a name no tunnel holds")
	}
	return fmt.Errorf("edge: acme: %q: %w", host, certs.ErrNotServed)
}

// noteRefused reports whether host is refused for the first time.
func (s *Server) noteRefused(host string) bool {
	s.refusedMu.Lock()
	defer s.refusedMu.Unlock()
	now := time.Now()
	if _, seen := s.refused.Get(host, now); seen {
		return false
	}
	s.refused.Put(host, struct{}{}, now)
	return true
}

// getCertificate picks the certificate for a handshake: autocert's
// challenge certificate for TLS-ALPN-01, a static certificate covering the
// name, else ACME's (ordered on first use if the policy allows).
func (s *Server) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.acme != nil && certs.IsChallenge(hello) {
		return s.acme.GetCertificate(hello)
	}
	if cert := s.cfg.StaticCerts.Lookup(hello.ServerName); cert != nil {
		return cert, nil
	}
	if s.acme != nil {
		return s.acme.GetCertificate(hello)
	}
	return nil, fmt.Errorf("edge: no certificate for %q", hello.ServerName)
}

// modernCipherSuites are the TLS 1.2 suites offered: forward secret AEADs
// only. TLS 1.3 suites are not configurable and all fine.
var modernCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// refusedSet is the log-once memory of hostPolicy.
type refusedSet struct {
	refusedMu sync.Mutex
	refused   *expiring.Table[string, struct{}] // no ttl: until evicted
}
