package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACMEConfig turns on automatic certificates from an ACME CA (Let's
// Encrypt by default) through autocert, for the names that static
// certificates do not cover.
type ACMEConfig struct {
	// CacheDir keeps the account key and certificates across restarts
	// (autocert.DirCache). Created 0700 if missing. Required.
	CacheDir string

	// DirectoryURL is the CA's ACME directory. Empty means Let's Encrypt's
	// production directory.
	DirectoryURL string

	// Email is given to the CA as the account's contact, for expiry
	// notices. Empty sends none.
	Email string

	// RootCAs verifies the CA's HTTPS. Nil means the system roots; set it
	// for a private CA (or Pebble in tests).
	RootCAs *x509.CertPool
}

// errNotOurs: autocert's HostPolicy refused a name.
var errNotOurs = errors.New("not the domain, and no tunnel holds the name")

// refusedLogCap bounds how many refused names are remembered for
// log-once; past it the memory is cleared, so a flood of random SNI names
// costs a few log lines, not unbounded memory.
const refusedLogCap = 4096

// newCertManager builds the autocert manager for cfg.ACME. It creates the
// cache directory so that a permission problem shows at startup, not at
// the first visitor.
func (s *Server) newCertManager(cfg *ACMEConfig) (*autocert.Manager, error) {
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("edge: acme: certificate cache: %w", err)
	}
	dir := cfg.DirectoryURL
	if dir == "" {
		dir = autocert.DefaultACMEDirectory
	}
	s.acmeTransport = &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     30 * time.Second,
		Proxy:               http.ProxyFromEnvironment,
	}
	return &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      issuedCache{autocert.DirCache(cfg.CacheDir), s.ops.metrics},
		HostPolicy: s.hostPolicy,
		Email:      cfg.Email,
		Client: &acme.Client{
			DirectoryURL: dir,
			UserAgent:    "tunneld",
			HTTPClient:   &http.Client{Transport: s.acmeTransport, Timeout: time.Minute},
		},
	}, nil
}

// hostPolicy allows the apex and names a tunnel holds (live or on hold for
// a reconnecting owner); anything else is refused before the CA is
// contacted, so no certificate is ever ordered for a name nobody serves.
// host may carry a port: autocert's HTTP-01 handler passes the Host header.
func (s *Server) hostPolicy(_ context.Context, host string) error {
	name, err := ParseHost(host, s.cfg.Domain)
	if err == nil && (name == "" || s.registry.Held(name)) {
		return nil
	}
	if s.noteRefused(host) {
		s.log.Info().Str("host", host).Msg("no certificate for a name no tunnel holds")
	}
	return fmt.Errorf("edge: acme: %q: %w", host, errNotOurs)
}

// noteRefused reports whether host is refused for the first time.
func (s *Server) noteRefused(host string) bool {
	s.refusedMu.Lock()
	defer s.refusedMu.Unlock()
	if _, seen := s.refused[host]; seen {
		return false
	}
	if len(s.refused) >= refusedLogCap {
		clear(s.refused)
	}
	s.refused[host] = struct{}{}
	return true
}

// getCertificate picks the certificate for a handshake: autocert's
// challenge certificate for TLS-ALPN-01, a static certificate covering the
// name, else autocert's (ordered on first use if the policy allows).
func (s *Server) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.certManager != nil && slices.Equal(hello.SupportedProtos, []string{acme.ALPNProto}) {
		return s.certManager.GetCertificate(hello)
	}
	if cert := s.cfg.StaticCerts.Lookup(hello.ServerName); cert != nil {
		return cert, nil
	}
	if s.certManager != nil {
		cert, err := s.certManager.GetCertificate(hello)
		if err != nil && !errors.Is(err, errNotOurs) {
			s.ops.metrics.CertIssued(err)
			// Otherwise only the handshake's debug line would tell.
			s.log.Error().Err(err).Str("host", hello.ServerName).Msg("no certificate from ACME")
		}
		return cert, err
	}
	return nil, fmt.Errorf("edge: no certificate for %q", hello.ServerName)
}

// issuedCache counts each certificate autocert stores as one successful
// issuance: autocert has no hook of its own, and it stores a certificate
// exactly once per order. The account key, HTTP-01 tokens and TLS-ALPN-01
// challenge certificates ("+token") are not issued certificates.
type issuedCache struct {
	autocert.Cache
	rec CertRecorder
}

func (c issuedCache) Put(ctx context.Context, key string, data []byte) error {
	err := c.Cache.Put(ctx, key, data)
	if err == nil && key != "acme_account+key" && !strings.HasSuffix(key, "+http-01") && !strings.HasSuffix(key, "+token") {
		c.rec.CertIssued(nil)
	}
	return err
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
	refused   map[string]struct{}
}
