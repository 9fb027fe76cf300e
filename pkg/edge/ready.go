package edge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Domain is the apex domain the edge serves tunnels under (Config.Domain).
func (s *Server) Domain() string { return s.cfg.Domain }

// Ready reports why the edge cannot serve visitors yet: it is not
// listening, its cluster is degraded (a ClusterRegistry whose etcd is out
// of reach), or its TLS config yields no valid certificate for the domain.
// With autocert, asking for the certificate may start its issuance.
func (s *Server) Ready() error {
	if !s.ops.listening.Load() {
		return errors.New("not listening")
	}
	if d, ok := s.registry.(interface{ Degraded() bool }); ok && d.Degraded() {
		return errors.New("cluster degraded: etcd out of reach; new clients are refused for now")
	}
	cert, err := s.apexCertificate()
	if err != nil {
		return fmt.Errorf("certificate for %s: %w", s.cfg.Domain, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("certificate for %s: %w", s.cfg.Domain, err)
		}
	}
	if err := leaf.VerifyHostname(s.cfg.Domain); err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return fmt.Errorf("certificate for %s: valid from %s to %s only", s.cfg.Domain, leaf.NotBefore, leaf.NotAfter)
	}
	return nil
}

// apexCertificate asks the TLS config for a certificate the way a handshake
// for the apex domain would.
func (s *Server) apexCertificate() (*tls.Certificate, error) {
	c := s.tlsConfig
	hello := &tls.ClientHelloInfo{ServerName: s.cfg.Domain}
	if c.GetCertificate != nil {
		cert, err := c.GetCertificate(hello)
		if err != nil || cert != nil {
			if err == nil && len(cert.Certificate) == 0 {
				return nil, errors.New("empty certificate")
			}
			return cert, err
		}
	}
	for i := range c.Certificates {
		if len(c.Certificates[i].Certificate) > 0 {
			return &c.Certificates[i], nil
		}
	}
	return nil, errors.New("no certificate configured")
}
