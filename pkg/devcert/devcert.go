// Package devcert makes and keeps the development certificates of
// tunneld --dev: a local CA made on first run and kept in a directory, so
// that browsers, curl and the tunnel client can be told to trust it once and
// keep working across restarts, and the leaves it signs for the server.
//
// It is its own package because three programs use it and only one is the
// server: tunneld serves with TLSConfig (--dev, "tunneld certs"), the tunnel
// client finds the CA by CAFile (--dev), and the bench does both. So it
// imports neither pkg/edge nor pkg/mux, and the client may import it without
// pulling in server code.
package devcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/internal/atomicfile"
	"github.com/tunnelhq/tunnel/pkg/name"
)

// CAFile is the CA certificate's file name inside the directory given to
// TLSConfig. Clients trust it with --ca (curl: --cacert).
const CAFile = "ca.pem"

const (
	caKeyFile   = "ca-key.pem"
	leafFile    = "localhost.pem"
	leafKeyFile = "localhost-key.pem"

	caValidity   = 5 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// leafRenewBefore renews the stored leaf this long before it expires,
	// so a long-running dev server does not start serving an expired one.
	leafRenewBefore = 30 * 24 * time.Hour
	// clockSkew backdates NotBefore so a client whose clock is a little
	// behind still accepts a certificate made a moment ago.
	clockSkew = time.Hour
	// cacheSize caps the per-name leaves kept in memory. Any visitor can
	// pick the SNI, so without a cap the cache would be a memory leak.
	cacheSize = 1024
)

// TLSConfig returns a TLS configuration for development, backed by
// certificates in dir that it creates on first use and reuses afterwards:
//
//	ca.pem, ca-key.pem               ECDSA P-256 CA, valid 5 years
//	localhost.pem, localhost-key.pem leaf for localhost, <domain>, *.<domain>,
//	                                 127.0.0.1 and ::1, valid 1 year, signed by the CA
//
// dir is created with mode 0700 if missing; keys are written 0600 and
// certificates 0644. domain is the tunnel domain, lowercase without a
// trailing dot, such as "localhost".
//
// The returned config has MinVersion TLS 1.2 and a GetCertificate that,
// for an SNI of one label under domain ("wiki.localhost"), returns a leaf
// for exactly that name, signed by the CA when first asked for and kept in
// a bounded in-memory cache. Per-name leaves exist because OpenSSL, and so
// curl, refuses a wildcard with a single label after the star, such as
// *.localhost. For any other SNI, or none, it returns the stored leaf.
// NextProtos is left for the caller to set. The config is safe for
// concurrent handshakes.
//
// The CA is never overwritten. If ca.pem or ca-key.pem is missing, damaged,
// does not match the other, or has expired, TLSConfig returns an error
// saying which file and what to do, because a new CA would silently break
// every client that trusts the old one. A damaged or half-missing leaf pair
// is also an error. A readable leaf that is no longer right (expiring within
// 30 days, not signed by this CA, or not covering domain) is replaced, since
// it is derived from the CA and nobody trusts it directly.
func TLSConfig(dir, domain string) (*tls.Config, error) {
	c, err := load(dir, domain)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.getCertificate,
	}, nil
}

// Ensure makes the certificates in dir as TLSConfig does, for a command that
// only wants them on disk ("tunneld certs"), and reports the same errors.
func Ensure(dir, domain string) error {
	_, err := load(dir, domain)
	return err
}

// store serves the certificates behind TLSConfig.
type store struct {
	domain string
	caCert *x509.Certificate
	caKey  crypto.Signer
	leaf   *tls.Certificate // the stored localhost leaf
	// leafKey is the stored leaf's key, reused for every per-name leaf: it
	// saves a key generation per name, and sharing it is fine for development.
	leafKey crypto.Signer

	mu    sync.Mutex
	cache map[string]*tls.Certificate // by SNI name; at most cacheSize
}

func load(dir, domain string) (*store, error) {
	if err := checkDomain(domain); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev certs: create directory: %w", err)
	}
	caCert, caKey, err := loadOrCreateCA(dir)
	if err != nil {
		return nil, err
	}
	leaf, leafKey, err := loadOrCreateLeaf(dir, domain, caCert, caKey)
	if err != nil {
		return nil, err
	}
	return &store{
		domain:  domain,
		caCert:  caCert,
		caKey:   caKey,
		leaf:    leaf,
		leafKey: leafKey,
		cache:   make(map[string]*tls.Certificate),
	}, nil
}

// checkDomain accepts dot-separated LDH labels, lowercase, no trailing
// dot: the form every name in a certificate is compared in.
func checkDomain(domain string) error {
	if domain == "" {
		return errors.New("dev certs: domain is empty")
	}
	for _, label := range strings.Split(domain, ".") {
		if !labelOK(label) {
			return fmt.Errorf("dev certs: domain %q: want lowercase DNS labels (a-z, 0-9, '-') without a trailing dot", domain)
		}
	}
	return nil
}

// labelOK reports whether s is one lowercase LDH label. It is a syntax
// check only (unlike name.Validate, reserved and punycode labels pass), so
// that the dev server presents a valid certificate for any host name it
// might be asked for and the edge, not TLS, decides what exists.
func labelOK(s string) bool {
	if s == "" || len(s) > name.MaxLen || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// getCertificate is the tls.Config.GetCertificate of TLSConfig.
func (c *store) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	host := name.Lower(strings.TrimSuffix(hello.ServerName, "."))
	if label, ok := strings.CutSuffix(host, "."+c.domain); ok && labelOK(label) {
		return c.leafFor(host)
	}
	return c.leaf, nil
}

// leafFor returns the cached leaf for name, making it if needed.
func (c *store) leafFor(name string) (*tls.Certificate, error) {
	c.mu.Lock()
	cert, ok := c.cache[name]
	c.mu.Unlock()
	if ok {
		return cert, nil
	}

	// Sign outside the lock so one slow handshake does not hold up others;
	// two handshakes racing for a new name both sign, and one result wins.
	cert, err := newLeaf([]string{name}, nil, c.caCert, c.caKey, c.leafKey)
	if err != nil {
		return nil, fmt.Errorf("dev certs: leaf for %q: %w", name, err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.cache[name]; ok {
		return prev, nil
	}
	if len(c.cache) >= cacheSize {
		// Evict an arbitrary entry: a miss only costs one signature.
		for k := range c.cache {
			delete(c.cache, k)
			break
		}
	}
	c.cache[name] = cert
	return cert, nil
}

// loadOrCreateCA loads the CA from dir, or creates it if neither of its
// files exists.
func loadOrCreateCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPath := filepath.Join(dir, CAFile)
	keyPath := filepath.Join(dir, caKeyFile)
	certExists, keyExists, err := pairExists(certPath, keyPath)
	if err != nil {
		return nil, nil, err
	}
	remedy := fmt.Sprintf("restore it from a backup, or remove %s and %s to make a new CA that every client must trust again",
		CAFile, caKeyFile)

	switch {
	case !certExists && !keyExists:
		return createCA(certPath, keyPath)
	case certExists && !keyExists:
		return nil, nil, fmt.Errorf("dev certs: %s exists but %s is missing: %s", certPath, caKeyFile, remedy)
	case !certExists && keyExists:
		return nil, nil, fmt.Errorf("dev certs: %s exists but %s is missing: %s", keyPath, CAFile, remedy)
	}

	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("dev certs: load CA from %s and %s: %w (restore them from a backup, or remove both to make a new CA that every client must trust again)",
			certPath, caKeyFile, err)
	}
	cert, key, err := pairParts(pair)
	if err != nil {
		return nil, nil, fmt.Errorf("dev certs: load CA from %s: %w", certPath, err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, fmt.Errorf("dev certs: %s is not a CA certificate (restore it from a backup, or remove it and %s to make a new CA)",
			certPath, caKeyFile)
	}
	if now := time.Now(); now.After(cert.NotAfter) {
		return nil, nil, fmt.Errorf("dev certs: CA in %s expired on %s: remove %s and %s to make a new one",
			certPath, cert.NotAfter.Format(time.DateOnly), CAFile, caKeyFile)
	}
	return cert, key, nil
}

func createCA(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("dev certs: generate CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"tunneld --dev"}, CommonName: "tunneld development CA"},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // signs leaves only, never another CA
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("dev certs: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("dev certs: parse new CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, err
	}

	// O_EXCL: if another tunneld created the CA since we looked, fail
	// instead of replacing it. The key goes first, so a crash in between
	// leaves a key without a certificate, which the next run reports.
	if err := atomicfile.Create(keyPath, keyPEM, 0o600); err != nil {
		return nil, nil, fmt.Errorf("dev certs: write CA key: %w", err)
	}
	if err := atomicfile.Create(certPath, encodeCert(der), 0o644); err != nil {
		os.Remove(keyPath) // ours, written just above, useless without the certificate
		return nil, nil, fmt.Errorf("dev certs: write CA certificate: %w", err)
	}
	return cert, key, nil
}

// loadOrCreateLeaf loads the stored localhost leaf, or makes a new one if
// there is none or the stored one no longer fits (see TLSConfig).
func loadOrCreateLeaf(dir, domain string, caCert *x509.Certificate, caKey crypto.Signer) (*tls.Certificate, crypto.Signer, error) {
	certPath := filepath.Join(dir, leafFile)
	keyPath := filepath.Join(dir, leafKeyFile)
	certExists, keyExists, err := pairExists(certPath, keyPath)
	if err != nil {
		return nil, nil, err
	}
	remedy := fmt.Sprintf("remove %s and %s to make new ones", leafFile, leafKeyFile)

	dnsNames := []string{"localhost"}
	if domain != "localhost" {
		dnsNames = append(dnsNames, domain)
	}
	dnsNames = append(dnsNames, "*."+domain)
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}

	switch {
	case certExists != keyExists:
		return nil, nil, fmt.Errorf("dev certs: only one of %s and %s exists in %s: %s",
			leafFile, leafKeyFile, dir, remedy)
	case certExists && keyExists:
		pair, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return nil, nil, fmt.Errorf("dev certs: load %s (%s): %w", certPath, remedy, err)
		}
		cert, key, err := pairParts(pair)
		if err != nil {
			return nil, nil, fmt.Errorf("dev certs: load %s (%s): %w", certPath, remedy, err)
		}
		if leafFits(cert, caCert, dnsNames, ips) {
			return &pair, key, nil
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("dev certs: generate leaf key: %w", err)
	}
	leaf, err := newLeaf(dnsNames, ips, caCert, caKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("dev certs: create leaf: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	// Key first: a crash between the two renames leaves a pair that does
	// not match, which the next run reports as damaged.
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return nil, nil, fmt.Errorf("dev certs: write leaf key: %w", err)
	}
	if err := atomicfile.Write(certPath, encodeCert(leaf.Certificate[0]), 0o644); err != nil {
		return nil, nil, fmt.Errorf("dev certs: write leaf certificate: %w", err)
	}
	return leaf, key, nil
}

// leafFits reports whether a stored leaf can still be served: signed by
// this CA, not about to expire, and covering every name we need.
func leafFits(cert, caCert *x509.Certificate, dnsNames []string, ips []net.IP) bool {
	if cert.CheckSignatureFrom(caCert) != nil {
		return false
	}
	// Renew when expiring soon, unless the leaf already lasts as long as the
	// CA and a new one could not do better. (An expired leaf always fails
	// here: one capped at the CA's end has an expired CA, refused earlier.)
	if time.Now().Add(leafRenewBefore).After(cert.NotAfter) && cert.NotAfter.Before(caCert.NotAfter) {
		return false
	}
	for _, n := range dnsNames {
		if !slices.Contains(cert.DNSNames, n) {
			return false
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// newLeaf signs a server certificate for dnsNames and ips with the CA,
// for the public half of key.
func newLeaf(dnsNames []string, ips []net.IP, caCert *x509.Certificate, caKey, key crypto.Signer) (*tls.Certificate, error) {
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(leafValidity)
	if caCert.NotAfter.Before(notAfter) {
		notAfter = caCert.NotAfter // a leaf cannot outlive its CA
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"tunneld --dev"}, CommonName: dnsNames[0]},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// pairParts returns the parsed certificate and signing key of a pair
// loaded by tls.LoadX509KeyPair, which has already checked that they match.
func pairParts(pair tls.Certificate) (*x509.Certificate, crypto.Signer, error) {
	cert := pair.Leaf
	if cert == nil {
		var err error
		if cert, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, nil, fmt.Errorf("parse certificate: %w", err)
		}
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("private key of type %T cannot sign", pair.PrivateKey)
	}
	return cert, key, nil
}

func serialNumber() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("dev certs: serial number: %w", err)
	}
	return serial, nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("dev certs: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// pairExists reports whether a certificate file and its key file exist,
// each on its own: a pair with one half missing is damaged, and the callers
// say how to repair it.
func pairExists(certPath, keyPath string) (certExists, keyExists bool, err error) {
	if certExists, err = fileExists(certPath); err != nil {
		return false, false, err
	}
	if keyExists, err = fileExists(keyPath); err != nil {
		return false, false, err
	}
	return certExists, keyExists, nil
}

// fileExists reports whether path exists; errors other than "does not
// exist" (permissions, I/O) are returned rather than treated as absence, so
// an unreadable CA is never mistaken for a missing one and replaced.
func fileExists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("dev certs: %w", err)
	}
}
