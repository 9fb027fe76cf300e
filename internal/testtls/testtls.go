// Package testtls makes throwaway certificates for tests: an in-memory CA,
// server certificates it signs for 127.0.0.1, localhost or any test names,
// and the pool a client trusts them with.
//
// It exists so that the tests of pkg/mux, pkg/edge and e2e build their TLS
// the same way instead of each keeping its own copy of the x509 templates.
// Nothing outside tests imports it; the development CA that tunneld --dev
// keeps on disk is pkg/devcert's.
package testtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// skew backdates every NotBefore, so a certificate made a moment ago is
// already valid.
const skew = time.Hour

// CA is a certificate authority that lives only in memory.
type CA struct {
	// Cert is the CA's own certificate, what a client trusts.
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a CA valid from an hour ago for a day. It fails t on error.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-skew), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testtls: create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testtls: parse CA: %v", err)
	}
	return &CA{Cert: cert, key: key}
}

// New makes a CA and a server config whose certificate it signed for names
// (see Issue), and returns the config and the pool that trusts the CA. This
// is what most tests want.
func New(t testing.TB, names ...string) (server *tls.Config, pool *x509.CertPool) {
	t.Helper()
	ca := NewCA(t)
	return ca.ServerConfig(t, names...), ca.Pool()
}

// Pool returns a pool holding only the CA, for a client's RootCAs.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// PEM returns the CA certificate in PEM, for a file a client is pointed at.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// ServerConfig returns a TLS config serving a certificate for names signed
// by ca. Only Certificates is set; the test adds NextProtos and the rest.
func (ca *CA) ServerConfig(t testing.TB, names ...string) *tls.Config {
	t.Helper()
	return &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, names...)}}
}

// Issue signs a server certificate for names, valid from an hour ago for an
// hour. Each name is an IP literal ("127.0.0.1") or a DNS name, wildcards
// included ("*.tunnel.test"); the first is also the subject's common name.
// The key is a fresh ECDSA P-256 key, and Leaf is set.
func (ca *CA) Issue(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	return ca.IssueFor(t, time.Hour, names...)
}

// IssueFor is Issue with the certificate expiring validFor from now; a
// negative validFor gives an expired certificate.
func (ca *CA) IssueFor(t testing.TB, validFor time.Duration, names ...string) tls.Certificate {
	t.Helper()
	if len(names) == 0 {
		t.Fatal("testtls: a certificate needs at least one name")
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-skew), NotAfter: time.Now().Add(validFor),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	key := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testtls: sign %q: %v", names, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testtls: parse %q: %v", names, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// CertPEM returns cert's chain in PEM, for a certificate file.
func CertPEM(cert tls.Certificate) []byte {
	var out []byte
	for _, der := range cert.Certificate {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return out
}

// KeyPEM returns cert's private key as PKCS #8 in PEM, for a key file.
func KeyPEM(t testing.TB, cert tls.Certificate) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatalf("testtls: encode key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testtls: generate key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatalf("testtls: serial number: %v", err)
	}
	return n
}
