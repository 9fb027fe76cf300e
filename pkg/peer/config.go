package peer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/validate"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// MinSecret is the shortest cluster secret, in bytes: 256 bits, so that
// guessing it is out of the question whatever the rate of tries.
const MinSecret = 32

// maxNode bounds a node name: a host name fits, and the handshake carries
// it behind a one-byte length.
const maxNode = 253

// Request is what a forwarding node asks of the node that holds a tunnel's
// client: open a stream to that client, as a local Route.Open would.
type Request struct {
	// Header is the stream header the owning node sends its client,
	// unchanged (tunnel name, visitor address, CloseOnFIN).
	Header proto.StreamHeader `json:"header"`
	// Session is the route (the local session ID on the owning node) that
	// the forwarding node believes serves Header.Tunnel. The owning node's
	// OpenFunc refuses, with an error wrapping ErrWrongSession, when its
	// session for the name is another: a node that lost a name must not
	// serve it on the strength of a stale table (fencing). Empty means any.
	Session string `json:"session,omitempty"`
}

// maxSession bounds Request.Session.
const maxSession = 253

// OpenFunc opens a stream to a client connected to THIS node, for a request
// another node forwarded. It must open on a local session only, never
// forward again: a request crosses at most one node link (ctx carries a
// mark that makes Links.Open refuse it, see Forwarded). A *proto.Error it
// returns reaches the forwarding node as a *proto.Error; an error wrapping
// ErrWrongSession, context.DeadlineExceeded or one mux.IsClosed accepts
// (the client is gone) arrives as an error wrapping the same. ctx ends when
// the forwarding node gives up, at its deadline, or when the Links close.
// It is called from many goroutines at once.
type OpenFunc func(ctx context.Context, req *Request) (net.Conn, error)

// Config configures a node's links. The zero value is not usable; start
// from DefaultConfig.
type Config struct {
	// Node is this node's name, unique in the cluster (tunneld's default
	// is the host name): 1 to 253 bytes of printable ASCII, no spaces.
	// When two nodes dial each other at once, the link dialed by the node
	// whose name sorts first is kept.
	Node string

	// Secret is the cluster secret all nodes share, at least MinSecret
	// bytes (see ReadSecret). It never travels: each side proves it holds
	// it with an HMAC bound to the TLS connection.
	Secret []byte

	// Certificate is what this node shows on the node port and when it
	// dials. nil: New makes an ephemeral self-signed one; it need not be
	// trusted, since the secret's binding to the connection is what
	// authenticates.
	Certificate *tls.Certificate

	// CA, if set, is a cluster CA: each side then also requires the
	// other's certificate to chain to it (mutual TLS) before the secret is
	// even checked. It needs Certificate, issued by CA. Host names in the
	// certificates are not checked: any certificate of the CA is a node.
	CA *x509.CertPool

	// Logger receives link events. Use zerolog.Nop() for silence.
	Logger zerolog.Logger

	// Open serves the streams other nodes open on this one. nil: every
	// forwarded request is refused with proto.CodeUnknownTunnel.
	Open OpenFunc

	// HandshakeTimeout bounds an incoming connection's TLS handshake and
	// authentication together, and the same on a dial; a connection that
	// has not proved the secret by then is closed. It also bounds the
	// owning node's read of a stream's request. Default 5 s.
	HandshakeTimeout time.Duration

	// DialTimeout bounds the TCP connect of a dial. Default 5 s.
	DialTimeout time.Duration

	// OpenTimeout bounds a forwarded open: the owning node's OpenFunc and
	// its answer, unless Open's context ends first. Default 15 s.
	OpenTimeout time.Duration

	// KeepAliveInterval is how often each side pings a link; a peer that
	// does not answer within WriteTimeout ends the link, so a dead node is
	// noticed within KeepAliveInterval+WriteTimeout. Default 5 s.
	KeepAliveInterval time.Duration

	// WriteTimeout bounds writing one frame to a link, and a keepalive's
	// wait for its answer. Default 10 s.
	WriteTimeout time.Duration

	// StreamWindow is the most one forwarded stream may have in flight
	// unacknowledged, in bytes (see mux.Config.StreamWindow). Default 1 MiB.
	StreamWindow uint32

	// MaxHandshakes bounds the incoming connections not yet authenticated,
	// in all; more are closed at once. MaxHandshakesPerIP bounds them per
	// source address. Defaults 64 and 8: a cluster has few nodes, and
	// anyone else on the node port is an attacker whose cost to us must
	// stay bounded.
	MaxHandshakes      int
	MaxHandshakesPerIP int

	// RedialMin and RedialMax bound the wait after a failed dial before
	// the next one: it starts at RedialMin and doubles up to RedialMax.
	// Meanwhile an Open to that node fails at once. Defaults 100 ms and 5 s.
	RedialMin, RedialMax time.Duration
}

// DefaultConfig returns the defaults, with Node, Secret and Open unset.
func DefaultConfig() Config {
	return Config{
		Logger:             zerolog.Nop(),
		HandshakeTimeout:   5 * time.Second,
		DialTimeout:        5 * time.Second,
		OpenTimeout:        15 * time.Second,
		KeepAliveInterval:  5 * time.Second,
		WriteTimeout:       10 * time.Second,
		StreamWindow:       1 << 20,
		MaxHandshakes:      64,
		MaxHandshakesPerIP: 8,
		RedialMin:          100 * time.Millisecond,
		RedialMax:          5 * time.Second,
	}
}

// Validate reports every setting that is out of range.
func (c Config) Validate() error {
	var errs []error
	if err := checkNode(c.Node); err != nil {
		errs = append(errs, err)
	}
	if len(c.Secret) < MinSecret {
		errs = append(errs, fmt.Errorf("cluster secret is %d bytes, want at least %d", len(c.Secret), MinSecret))
	}
	if c.CA != nil && c.Certificate == nil {
		errs = append(errs, errors.New("a cluster CA needs this node's certificate"))
	}
	if c.StreamWindow < 256<<10 || c.StreamWindow > 64<<20 {
		errs = append(errs, fmt.Errorf("stream window %d bytes is outside 256 KiB to 64 MiB", c.StreamWindow))
	}
	errs = append(errs,
		validate.Positive("handshake timeout", c.HandshakeTimeout),
		validate.Positive("dial timeout", c.DialTimeout),
		validate.Positive("open timeout", c.OpenTimeout),
		validate.Positive("keepalive interval", c.KeepAliveInterval),
		validate.Positive("write timeout", c.WriteTimeout),
		validate.Positive("max handshakes", c.MaxHandshakes),
		validate.Positive("max handshakes per ip", c.MaxHandshakesPerIP),
		validate.Positive("redial min", c.RedialMin),
		validate.Positive("redial max", c.RedialMax),
	)
	if c.RedialMax < c.RedialMin {
		errs = append(errs, fmt.Errorf("redial max %v is under redial min %v", c.RedialMax, c.RedialMin))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	return nil
}

// checkNode reports whether name may name a node.
func checkNode(name string) error {
	if name == "" || len(name) > maxNode {
		return fmt.Errorf("node name %q: want 1 to %d bytes", printable(name), maxNode)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("node name %q: printable ASCII without spaces only", printable(name))
		}
	}
	return nil
}

// printable bounds and sanitises a string a peer sent, for a log line.
func printable(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max]
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// ReadSecret reads a cluster secret from a file: its content with
// surrounding white space removed, at least MinSecret bytes. A file that
// other users may read is refused: the secret lets anyone who holds it
// speak for a node.
func ReadSecret(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cluster secret: %w", err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("cluster secret: %s is readable by other users (mode %v): chmod o-rwx it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster secret: %w", err)
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) < MinSecret {
		return nil, fmt.Errorf("cluster secret: %s holds %d bytes, want at least %d", path, len(b), MinSecret)
	}
	return b, nil
}
