package mux

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
)

// CertificateError is what Run and RunForever return when tunneld's
// certificate was refused because no trusted CA signed it or because it
// does not cover the name or address dialed. These two are the client's
// settings that do not match the server (its CA file, its --server), so
// RunForever stops on them until a session has once come up, instead of
// retrying forever (see RunForever). The message says what the server
// presented, in terms a user can act on; Unwrap gives the crypto/tls error.
//
// An expired or not yet valid certificate is not a CertificateError: a
// board without a real-time clock boots in 1970 until NTP answers, and
// that passes by itself.
type CertificateError struct {
	// Server is the address dialed, host:port.
	Server string
	// CAFile is ClientConfig.CAFile: the file of roots trusted besides the
	// system's, or empty for the system's only.
	CAFile string
	// Names are the DNS names and IP addresses the certificate covers (its
	// common name when it has neither), made printable, at most
	// maxCertNames of them; NamesLeft counts the rest.
	Names     []string
	NamesLeft int
	// Issuer names the certificate's issuer, printable.
	Issuer string
	// Unknown is true when no trusted CA signed the certificate, WrongHost
	// when it does not cover Server's host; both may be true.
	Unknown, WrongHost bool
	// Err is the error from the TLS handshake.
	Err error
}

// maxCertNames bounds the names a CertificateError lists: a certificate
// may carry hundreds, and a hostile server chooses them.
const maxCertNames = 4

func (e *CertificateError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tunneld at %s presented a certificate for %s", e.Server, e.names())
	if e.WrongHost {
		host, _, err := net.SplitHostPort(e.Server)
		if err != nil {
			host = e.Server
		}
		fmt.Fprintf(&b, ", not for %s", host)
		if e.Unknown {
			b.WriteString(", and")
		}
	}
	if e.Unknown {
		trusted := "the system's roots do not trust"
		if e.CAFile != "" {
			trusted = "neither " + e.CAFile + " nor the system's roots trust"
		}
		fmt.Fprintf(&b, " issued by %q, which %s", e.Issuer, trusted)
	}
	fmt.Fprintf(&b, " (%s)", Printable(e.Err.Error(), 2*maxLoggedString))
	return b.String()
}

func (e *CertificateError) Unwrap() error { return e.Err }

func (e *CertificateError) names() string {
	s := strings.Join(e.Names, ", ")
	if e.NamesLeft > 0 {
		s += fmt.Sprintf(" and %d more", e.NamesLeft)
	}
	return s
}

// certificateError returns err as a *CertificateError when it is a refused
// certificate of that kind, else err unchanged. roots are the client's
// (nil: the system's).
//
// crypto/tls reports one fault, the host name before the CA; a
// certificate with both wrong is checked against roots again so that the
// user hears of both at once.
func certificateError(err error, server, caFile string, roots *x509.CertPool) error {
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) || len(verr.UnverifiedCertificates) == 0 {
		return err
	}
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	isUnknown, wrongHost := errors.As(err, &unknown), errors.As(err, &hostname)
	if !isUnknown && !wrongHost {
		return err
	}
	leaf := verr.UnverifiedCertificates[0]
	if wrongHost {
		inter := x509.NewCertPool()
		for _, c := range verr.UnverifiedCertificates[1:] {
			inter.AddCert(c)
		}
		_, verifyErr := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		isUnknown = errors.As(verifyErr, &unknown)
	}
	var all []string
	all = append(all, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		all = append(all, ip.String())
	}
	if len(all) == 0 && leaf.Subject.CommonName != "" {
		all = append(all, leaf.Subject.CommonName)
	}
	ce := &CertificateError{Server: server, CAFile: caFile, Unknown: isUnknown, WrongHost: wrongHost, Err: err}
	for i, n := range all {
		if i == maxCertNames {
			ce.NamesLeft = len(all) - i
			break
		}
		ce.Names = append(ce.Names, Printable(n, maxLoggedString))
	}
	issuer := leaf.Issuer.CommonName
	if issuer == "" {
		issuer = leaf.Issuer.String()
	}
	ce.Issuer = Printable(issuer, maxLoggedString)
	return ce
}
