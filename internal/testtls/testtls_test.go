package testtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"
)

func TestNew_Handshake(t *testing.T) {
	server, pool := New(t, "tunnel.test", "*.tunnel.test", "127.0.0.1")
	for _, tt := range []struct {
		serverName string
		wantOK     bool
	}{
		{"127.0.0.1", true},
		{"tunnel.test", true},
		{"wiki.tunnel.test", true},
		{"a.b.tunnel.test", false},
		{"localhost", false},
	} {
		err := handshake(t, server, &tls.Config{RootCAs: pool, ServerName: tt.serverName})
		var verr *tls.CertificateVerificationError
		if tt.wantOK != (err == nil) || !tt.wantOK && !errors.As(err, &verr) {
			t.Errorf("handshake with ServerName %q: got %v, want ok=%v", tt.serverName, err, tt.wantOK)
		}
	}

	// Another CA's pool does not trust it.
	if err := handshake(t, server, &tls.Config{RootCAs: NewCA(t).Pool(), ServerName: "127.0.0.1"}); err == nil {
		t.Error("handshake trusting another CA: got nil, want a verification error")
	}
}

func TestCA_IssueFor(t *testing.T) {
	ca := NewCA(t)
	cert := ca.IssueFor(t, -time.Minute, "old.test")
	if !cert.Leaf.NotAfter.Before(time.Now()) {
		t.Errorf("NotAfter: got %v, want in the past", cert.Leaf.NotAfter)
	}
	pair, err := tls.X509KeyPair(CertPEM(cert), KeyPEM(t, cert))
	if err != nil {
		t.Fatalf("X509KeyPair of CertPEM and KeyPEM: got %v, want nil", err)
	}
	if err := pair.Leaf.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("signed by the CA: got %v, want nil", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.PEM()) {
		t.Error("AppendCertsFromPEM(ca.PEM()): got false, want the CA added")
	}
}

// handshake runs one TLS handshake over loopback TCP and returns the
// client's error.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if conn, err := ln.Accept(); err == nil {
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			_ = conn.(*tls.Conn).Handshake() // the client reports the outcome
			conn.Close()
		}
	}()
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), client)
	if err == nil {
		conn.Close()
	}
	<-done
	return err
}
