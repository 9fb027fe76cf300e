package mux

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"time"
)

// SplitServers splits a server setting into its addresses: one host:port,
// or several separated by commas (the nodes of a tunneld cluster). Blank
// entries are dropped.
func SplitServers(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// validServers reports the first entry of s that is not host:port, or
// that s names none.
func validServers(s string) error {
	servers := SplitServers(s)
	if len(servers) == 0 {
		return fmt.Errorf("mux: server address %q: want host:port", s)
	}
	for _, a := range servers {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("mux: server address %q: want host:port", a)
		}
	}
	return nil
}

// tlsDial is one dial of tunneld: which servers, how to trust them, and
// what to speak.
type tlsDial struct {
	servers string        // SplitServers' input
	timeout time.Duration // for each address tried, TCP and TLS together
	tls     *tls.Config   // NextProtos set by the caller; ServerName set per server when empty
	alpn    string        // the protocol tunneld must choose
	what    string        // for the ALPN error: "a tunneld", ...
	caFile  string        // for a CertificateError's message
	wrap    func(net.Conn) net.Conn
}

// dialTLS connects to one of d.servers. The servers are tried in a random
// order, and so are the addresses a server's host name resolves to: the
// nodes of a cluster then share the clients, and one that is down costs
// a reconnecting client one failed attempt, not its whole backoff. A
// certificate tunneld should not have ends the dial at once (every node
// of one deployment shares its trust; trying more would hide the fault).
// It returns the connection and the server, as given, it reached.
func dialTLS(ctx context.Context, d tlsDial) (*tls.Conn, string, error) {
	servers := SplitServers(d.servers)
	rand.Shuffle(len(servers), func(i, j int) { servers[i], servers[j] = servers[j], servers[i] })
	var errs []error
	for _, server := range servers {
		host, port, err := net.SplitHostPort(server)
		if err != nil {
			errs = append(errs, fmt.Errorf("server %q: want host:port", server))
			continue
		}
		addrs, err := resolve(ctx, host)
		if err != nil {
			errs = append(errs, fmt.Errorf("dial %s: %w", server, err))
			continue
		}
		cfg := d.tls.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		for _, a := range addrs {
			conn, err := dialOne(ctx, d, net.JoinHostPort(a, port), server, cfg)
			if err == nil {
				return conn, server, nil
			}
			var cerr *CertificateError
			if errors.As(err, &cerr) || ctx.Err() != nil {
				return nil, "", err
			}
			errs = append(errs, err)
		}
	}
	if len(errs) == 1 {
		return nil, "", errs[0]
	}
	return nil, "", &dialErrors{errs: errs}
}

// resolve returns host's addresses in a random order; an IP address is
// its own.
func resolve(ctx context.Context, host string) ([]string, error) {
	if net.ParseIP(host) != nil {
		return []string{host}, nil
	}
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	return addrs, nil
}

// dialOne dials addr (one address of server) and completes the TLS
// handshake within d.timeout.
func dialOne(ctx context.Context, d tlsDial, addr, server string, cfg *tls.Config) (*tls.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	var nd net.Dialer
	raw, err := nd.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", server, err)
	}
	wrapped := raw
	if d.wrap != nil {
		wrapped = d.wrap(raw)
	}
	conn := tls.Client(wrapped, cfg)
	if err := conn.HandshakeContext(dctx); err != nil {
		raw.Close()
		var cerr *CertificateError
		if errors.As(certificateError(err, server, d.caFile, cfg.RootCAs), &cerr) {
			return nil, cerr // it names the server itself
		}
		return nil, fmt.Errorf("dial %s: %w", server, err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != d.alpn {
		conn.Close()
		return nil, fmt.Errorf("dial %s: server does not speak %s (negotiated %q): is this %s?", server, d.alpn, p, d.what)
	}
	return conn, nil
}

// dialErrors is the failure of every address a dial tried, on one line.
type dialErrors struct{ errs []error }

func (e *dialErrors) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return fmt.Sprintf("no server answered (%d tried): %s", len(e.errs), strings.Join(msgs, "; "))
}

func (e *dialErrors) Unwrap() []error { return e.errs }
