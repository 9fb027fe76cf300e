package mux

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/internal/testtls"
	"github.com/tunnelhq/tunnel/internal/testwait"
)

// serveTLS accepts connections on loopback and runs the server side of a
// TLS handshake with cert on each, until the test ends; it returns the
// address.
func serveTLS(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServeOn(t, ln, func(c net.Conn) {
		c.(*tls.Conn).Handshake() // fails: the client refuses the certificate
		c.Close()
	})
	return ln.Addr().String()
}

// lineWriter sends each log line written to it on a channel.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

func TestRunForever_CertificateErrors(t *testing.T) {
	ca, other := testtls.NewCA(t), testtls.NewCA(t)
	for _, tt := range []struct {
		name               string
		cert               tls.Certificate
		trust              *testtls.CA
		unknown, wrongHost bool
		want               string
	}{
		{"unknown authority", ca.Issue(t, "127.0.0.1", "tunnel.test"), other, true, false,
			`presented a certificate for tunnel.test, 127.0.0.1 issued by "test CA", which neither ca.pem nor the system's roots trust (`},
		{"name-only certificate", ca.Issue(t, "tunnel.test", "*.tunnel.test"), ca, false, true,
			"presented a certificate for tunnel.test, *.tunnel.test, not for 127.0.0.1 ("},
		{"both", ca.Issue(t, "tunnel.test"), other, true, true,
			`presented a certificate for tunnel.test, not for 127.0.0.1, and issued by "test CA", which neither ca.pem nor the system's roots trust (`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := serveTLS(t, tt.cert)
			cfg := ClientConfig{Config: DefaultConfig(), Server: addr, TLS: &tls.Config{RootCAs: tt.trust.Pool()},
				CAFile: "ca.pem", Tunnels: []Tunnel{{Target: "127.0.0.1:1"}}}
			errc := make(chan error, 1)
			go func() { errc <- RunForever(context.Background(), cfg) }()
			err := testwait.Recv(t, errc, 10*time.Second)
			var cerr *CertificateError
			if !errors.As(err, &cerr) || cerr.Unknown != tt.unknown || cerr.WrongHost != tt.wrongHost || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a CertificateError (unknown authority %v, wrong host %v) saying %q", err, tt.unknown, tt.wrongHost, tt.want)
			}
		})
	}
}

// What the server chose (the names in its certificate) is listed a few at
// most, without control characters.
func TestCertificateError_NamesBoundedAndPrintable(t *testing.T) {
	ca, other := testtls.NewCA(t), testtls.NewCA(t)
	names := []string{"a.test\x1b[2J", "b.test", "c.test", "d.test", "e.test", "f.test", "127.0.0.1"}
	addr := serveTLS(t, ca.Issue(t, names...))
	err := Run(context.Background(), ClientConfig{Config: DefaultConfig(), Server: addr,
		TLS: &tls.Config{RootCAs: other.Pool()}, Tunnels: []Tunnel{{Target: "127.0.0.1:1"}}})
	want := `presented a certificate for a.test[2J, b.test, c.test, d.test and 3 more issued by "test CA", which the system's roots do not trust`
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\x1b") {
		t.Fatalf("got %v, want %q and no escape", err, want)
	}
}

// An expired certificate is not the client's settings: RunForever keeps
// retrying (a board without a clock boots in 1970).
func TestRunForever_ExpiredCertificateRetried(t *testing.T) {
	ca := testtls.NewCA(t)
	addr := serveTLS(t, ca.IssueFor(t, -time.Minute, "127.0.0.1"))
	lines := make(lineWriter, 16)
	cfg := ClientConfig{Config: DefaultConfig(), Server: addr, TLS: &tls.Config{RootCAs: ca.Pool()},
		Tunnels: []Tunnel{{Target: "127.0.0.1:1"}}, Backoff: Backoff{Initial: time.Millisecond, Max: time.Millisecond}}
	cfg.Logger = zerolog.New(lines)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- RunForever(ctx, cfg) }()
	for range 2 {
		if l := testwait.Recv(t, lines, 10*time.Second); !strings.Contains(l, "connect failed; retrying") || !strings.Contains(l, "expired") {
			t.Fatalf("log line %s: want a retry after an expired certificate", l)
		}
	}
	cancel()
	for {
		select {
		case <-lines: // the retries logged meanwhile
		case err := <-errc:
			if err != nil {
				t.Fatalf("RunForever: got %v, want nil after cancel", err)
			}
			return
		case <-time.After(10 * time.Second):
			t.Fatal("RunForever did not return after cancel")
		}
	}
}
