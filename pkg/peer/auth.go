package peer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"time"
)

// ALPN is the TLS application protocol of the node port. Both sides insist
// on it, so a browser or a tunnel client that reaches the port fails in the
// TLS handshake, and a node link never answers on tunneld's public port.
const ALPN = "tunnel-peer/1"

// The handshake after TLS, on the raw TLS connection, before yamux starts:
//
//	dialer   -> acceptor  hello: magic "TPR1", len(from) u8, from, len(to) u8,
//	                      to, incarnation u64, mac [32]
//	acceptor -> dialer    reply: status u8; when statusOK also len(node) u8,
//	                      node, incarnation u64, mac [32]
//
// Each mac is HMAC-SHA256 keyed with the cluster secret over a label of its
// direction, the TLS connection's exported keying material (RFC 5705/8446)
// and the message's bytes before the mac. The keying material is unique to
// this TLS connection, so a proof cannot be replayed on another one, and a
// relay that terminates TLS on both sides sees two connections with two
// different values; the two labels keep one side's proof from being
// reflected as the other's. The acceptor answers only once it has checked
// the dialer's proof, so an unauthenticated dialer learns nothing but
// "refused".
const (
	helloMagic    = "TPR1"
	ekmLabel      = "EXPORTER-tunnel-peer/1"
	dialerLabel   = "tunnel-peer/1 dialer proof\x00"
	acceptorLabel = "tunnel-peer/1 acceptor proof\x00"
	macSize       = sha256.Size
)

// Reply statuses.
const (
	statusOK        = 0
	statusBadSecret = 1 // the dialer's proof is wrong
	statusWrongNode = 2 // the dialer meant another node, or is this node
)

// ErrBadSecret: the other node does not hold our cluster secret (or we not
// its): its proof was wrong, or it refused ours.
var ErrBadSecret = errors.New("peer: cluster secret does not match")

// hello is the dialer's first message.
type hello struct {
	from, to    string
	incarnation uint64
}

// keyingMaterial is what proofs on conn are bound to.
func keyingMaterial(conn *tls.Conn) ([]byte, error) {
	cs := conn.ConnectionState()
	if cs.NegotiatedProtocol != ALPN {
		return nil, fmt.Errorf("tls: negotiated protocol %q, want %q", printable(cs.NegotiatedProtocol), ALPN)
	}
	ekm, err := cs.ExportKeyingMaterial(ekmLabel, nil, 32)
	if err != nil {
		return nil, fmt.Errorf("tls: export keying material: %w", err)
	}
	return ekm, nil
}

func proof(secret []byte, label string, ekm, msg []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	m.Write(ekm)
	m.Write(msg)
	return m.Sum(nil)
}

func appendName(b []byte, s string) []byte { return append(append(b, byte(len(s))), s...) }

// writeHello sends the dialer's hello with its proof.
func writeHello(w io.Writer, secret, ekm []byte, h hello) error {
	b := []byte(helloMagic)
	b = appendName(b, h.from)
	b = appendName(b, h.to)
	b = binary.BigEndian.AppendUint64(b, h.incarnation)
	b = append(b, proof(secret, dialerLabel, ekm, b)...)
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	return nil
}

// readName reads a one-byte length and that many bytes into buf's tail.
func readName(r io.Reader, buf []byte) ([]byte, string, error) {
	start := len(buf)
	buf = append(buf, 0)
	if _, err := io.ReadFull(r, buf[start:]); err != nil {
		return buf, "", err
	}
	n := int(buf[start])
	buf = append(buf, make([]byte, n)...)
	if _, err := io.ReadFull(r, buf[start+1:]); err != nil {
		return buf, "", err
	}
	return buf, string(buf[start+1:]), nil
}

// readHello reads the dialer's hello and checks its proof. The read is
// bounded: at most 4+1+255+1+255+8+32 bytes, whatever the peer sends.
func readHello(r io.Reader, secret, ekm []byte) (hello, error) {
	var h hello
	buf := make([]byte, len(helloMagic), 4+2*256+8+macSize)
	if _, err := io.ReadFull(r, buf); err != nil {
		return h, fmt.Errorf("read hello: %w", err)
	}
	if string(buf) != helloMagic {
		return h, fmt.Errorf("read hello: %w: not a node link hello", ErrBadSecret)
	}
	var err error
	if buf, h.from, err = readName(r, buf); err != nil {
		return h, fmt.Errorf("read hello: %w", err)
	}
	if buf, h.to, err = readName(r, buf); err != nil {
		return h, fmt.Errorf("read hello: %w", err)
	}
	var tail [8 + macSize]byte
	if _, err := io.ReadFull(r, tail[:]); err != nil {
		return h, fmt.Errorf("read hello: %w", err)
	}
	buf = append(buf, tail[:8]...)
	h.incarnation = binary.BigEndian.Uint64(tail[:8])
	if !hmac.Equal(tail[8:], proof(secret, dialerLabel, ekm, buf)) {
		return h, fmt.Errorf("hello from %q: %w", printable(h.from), ErrBadSecret)
	}
	return h, nil
}

// writeReply answers a hello: statusOK with this node's own proof, or a
// refusal, which carries nothing else.
func writeReply(w io.Writer, status byte, secret, ekm []byte, node string, incarnation uint64) error {
	b := []byte{status}
	if status == statusOK {
		b = appendName(b, node)
		b = binary.BigEndian.AppendUint64(b, incarnation)
		b = append(b, proof(secret, acceptorLabel, ekm, b)...)
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("send reply: %w", err)
	}
	return nil
}

// readReply reads the acceptor's answer and checks its proof; it returns the
// acceptor's node name and incarnation.
func readReply(r io.Reader, secret, ekm []byte) (string, uint64, error) {
	buf := make([]byte, 1, 1+256+8+macSize)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", 0, fmt.Errorf("read reply: %w", err)
	}
	switch buf[0] {
	case statusOK:
	case statusBadSecret:
		return "", 0, fmt.Errorf("refused: %w", ErrBadSecret)
	case statusWrongNode:
		return "", 0, errors.New("refused: that address is not the node asked for")
	default:
		return "", 0, fmt.Errorf("refused: unknown status %d", buf[0])
	}
	buf, node, err := readName(r, buf)
	if err != nil {
		return "", 0, fmt.Errorf("read reply: %w", err)
	}
	var tail [8 + macSize]byte
	if _, err := io.ReadFull(r, tail[:]); err != nil {
		return "", 0, fmt.Errorf("read reply: %w", err)
	}
	buf = append(buf, tail[:8]...)
	if !hmac.Equal(tail[8:], proof(secret, acceptorLabel, ekm, buf)) {
		return "", 0, fmt.Errorf("reply from %q: %w", printable(node), ErrBadSecret)
	}
	return node, binary.BigEndian.Uint64(tail[:8]), nil
}

// tlsConfigs builds the node port's TLS config and the dialer's.
func tlsConfigs(cfg Config) (server, client *tls.Config, err error) {
	cert := cfg.Certificate
	if cert == nil {
		c, err := selfSigned(cfg.Node)
		if err != nil {
			return nil, nil, err
		}
		cert = &c
	}
	server = &tls.Config{
		Certificates: []tls.Certificate{*cert},
		MinVersion:   tls.VersionTLS13, // keying material export is sound in 1.3
		NextProtos:   []string{ALPN},
		// Links live long and are few: resumption would save nothing,
		// and a ticket is one more thing a stranger gets for a handshake.
		SessionTicketsDisabled: true,
	}
	client = &tls.Config{
		Certificates: []tls.Certificate{*cert},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{ALPN},
		// The server's certificate is checked against the CA below, if
		// any; without one, the secret's proof bound to this connection
		// is what authenticates the node, not its certificate.
		InsecureSkipVerify: true,
		ServerName:         "tunnel-peer",
	}
	if cfg.CA != nil {
		verify := verifyChain(cfg.CA)
		server.ClientAuth = tls.RequireAnyClientCert
		server.VerifyPeerCertificate = verify
		client.VerifyPeerCertificate = verify
	}
	return server, client, nil
}

// verifyChain checks a peer's certificate chain against the cluster CA,
// for either role and without host names.
func verifyChain(ca *x509.CertPool) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("peer: no certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, der := range raw {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return fmt.Errorf("peer: certificate: %w", err)
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{
			Roots: ca, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err != nil {
			return fmt.Errorf("peer: certificate not from the cluster CA: %w", err)
		}
		return nil
	}
}

// selfSigned makes the ephemeral certificate a node shows when it has none.
func selfSigned(node string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("peer: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("peer: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: node},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("peer: self-signed certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
