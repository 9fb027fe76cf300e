// Package certpool builds the set of roots a TLS client trusts when a flag
// names an extra CA file. It exists because both mains need it: the tunnel
// client (--ca, to trust a dev or private CA for tunneld) and tunneld
// (--acme-ca-root, to trust a test ACME server). It is internal, not under
// pkg/edge, because the client must not import server code.
package certpool

import (
	"crypto/x509"
	"fmt"
	"os"
)

// WithFile returns the system roots plus the PEM certificates in file. It
// fails if file cannot be read or holds no PEM certificate.
func WithFile(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return pool, nil
}
