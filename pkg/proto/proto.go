package proto

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Version is the control protocol version this build speaks. A Hello with any
// other version is refused with CodeUnsupportedVersion.
const Version = 1

// ALPN is the TLS application protocol a tunnel client negotiates. tunneld
// uses it to tell a tunnel client from a browser on the same port.
const ALPN = "tunnel/1"

// ConnectALPN is the TLS application protocol of "tunnel connect": a
// visitor of a TCP tunnel. Its connection carries one Connect frame, the
// server's answer (StreamAck or Error), then the tunnel's raw bytes.
const ConnectALPN = "tunnel-connect/1"

// MaxFrameSize is the largest payload, in bytes, that ReadFrame accepts and
// WriteFrame produces. Control messages are small; the limit exists so that a
// hostile peer cannot make us allocate.
const MaxFrameSize = 64 << 10

// headerSize is the frame header: one type byte and a big-endian uint32 length.
const headerSize = 5

// Limits on the fields of messages. They keep every valid message far below
// MaxFrameSize even after re-encoding (JSON may escape one byte into six).
const (
	MaxTunnels      = 32  // tunnels in one Hello
	MaxAllowTokens  = 16  // TunnelRequest.AllowTokens
	maxShortString  = 253 // names, URLs, kinds, addresses, ids, tokens, custom domains
	maxDomainURL    = maxShortString + len("https://") + len(":65535")
	MaxHelloDomains = 4 // tunnels with a TunnelRequest.Domain in one Hello
	maxLongString   = 1024
)

// The length of Hello.OwnerKey, when set: long enough that nobody guesses
// another client's key, short enough to cost nothing.
const (
	MinOwnerKey = 16
	MaxOwnerKey = 64
)

// Sentinel errors for bad input. Errors returned by ReadFrame wrap one of
// these; test with errors.Is.
var (
	ErrFrameTooLarge   = errors.New("proto: frame exceeds MaxFrameSize")
	ErrUnknownType     = errors.New("proto: unknown message type")
	ErrTruncatedFrame  = errors.New("proto: truncated frame")
	ErrMalformed       = errors.New("proto: malformed message")
	ErrUnexpected      = errors.New("proto: unexpected message")
	ErrVersionMismatch = errors.New("proto: unsupported protocol version")
)

type msgType uint8

const (
	msgHello msgType = iota + 1
	msgWelcome
	msgError
	msgGoAway
	msgStreamHeader
	msgStreamAck
	msgPing
	msgPong
	msgConnect
)

// Message is one control-protocol message. The concrete types are the
// pointer types *Hello, *Welcome, *Error, *GoAway, *StreamHeader, *StreamAck,
// *Ping, *Pong and *Connect.
type Message interface {
	msgType() msgType
	validate() error
}

// Hello is the client's first message on the control stream.
type Hello struct {
	// Version is the protocol version the client speaks; see Version.
	Version int `json:"version"`
	// ClientVersion is the client's software version, for logs.
	ClientVersion string `json:"client_version,omitempty"`
	// Token authenticates the client. Empty means anonymous.
	Token string `json:"token,omitempty"`
	// OwnerKey identifies an anonymous client across reconnects: a random
	// secret the client makes once per process and sends on every
	// connect. The server gives the client's names to a hash of it, so
	// only the same key gets them back (from any address); another client
	// behind the same address cannot. Empty: the names belong to this
	// session alone. MinOwnerKey to MaxOwnerKey bytes; ignored with a
	// Token. Optional: servers that predate it ignore it.
	OwnerKey string `json:"owner_key,omitempty"`
	// Tunnels are the tunnels asked for, 1 to MaxTunnels of them.
	Tunnels []TunnelRequest `json:"tunnels"`
}

// TunnelRequest asks for one tunnel.
type TunnelRequest struct {
	// Name is the DNS label asked for; empty asks the server to pick one.
	Name string `json:"name,omitempty"`
	// Kind is the tunnel's protocol: KindHTTP, KindTCP or KindTLS. A
	// server that predates a kind refuses the Hello with CodeBadRequest.
	Kind string `json:"kind"`
	// AllowTokens, for a KindTCP tunnel only, are the lowercase hex
	// SHA-256 of tokens (besides the owner's own) that may connect to it,
	// at most MaxAllowTokens. Only the hashes travel: the server never
	// learns the tokens themselves.
	AllowTokens []string `json:"allow_tokens,omitempty"`
	// Access, if set, says which visitors the server lets through to an
	// HTTP tunnel, before any stream is opened. A server that predates it
	// ignores it: a client that sets it must check TunnelInfo.Access in the
	// Welcome, or its service would be open to everyone.
	Access *Access `json:"access,omitempty"`
	// Pool asks to share the name with the owner's other clients that ask
	// for it with the same kind and access rules: the server spreads the
	// tunnel's visitors over them. Without it, a client takes the name
	// over from its owner's other clients. A server that predates pools
	// ignores it (and takes the name over): a client that sets it must
	// check TunnelInfo.Pool in the Welcome.
	Pool bool `json:"pool,omitempty"`
	// Domain, for a KindHTTP tunnel only, is a custom domain
	// (wiki.example.org) to serve besides NAME.DOMAIN, at most 253 bytes;
	// at most MaxHelloDomains tunnels of one Hello have one.
	// The server checks that the token may claim it and that its DNS
	// points at the tunnel. A server that predates custom domains ignores
	// it: a client that sets it must check TunnelInfo.DomainURL in the
	// Welcome.
	Domain string `json:"domain,omitempty"`
}

// Limits on Access: per tunnel, and for all the tunnels of one Hello
// together, which keeps a Hello with every rule it may have far below
// MaxFrameSize (a user name may escape one byte into six).
const (
	MaxAccessUsers      = 4   // Access.BasicAuth
	MaxAccessCIDRs      = 16  // Access.AllowCIDR and DenyCIDR together
	maxHelloAccessUsers = 32  // users in all of a Hello's tunnels
	maxHelloAccessCIDRs = 128 // prefixes in all of a Hello's tunnels
	MaxAccessUser       = 64  // bytes of a user name
	MaxAccessOIDC       = 16  // Access.OIDCAllow
	maxHelloAccessOIDC  = 24  // OIDCAllow entries in all of a Hello's tunnels
	MaxOIDCAllow        = 254 // bytes of an OIDCAllow entry: the longest email address
	maxAccessHash       = 72  // bytes of a password hash (bcrypt's are 60)
	maxCIDR             = 49  // an IPv6 prefix with a zone would be longer; none is valid
)

// Access are a tunnel's visitor rules, enforced by the server. An empty
// Access lets everyone in, as a nil one does. The server checks the
// contents (prefixes that parse, hashes it can verify) and refuses the Hello
// with CodeBadRequest otherwise; the codec checks only sizes.
type Access struct {
	// BasicAuth are the users that may visit, with HTTP basic auth: a
	// visitor must send one's name and password. None: no password asked.
	BasicAuth []BasicAuthUser `json:"basic_auth,omitempty"`
	// AllowCIDR are the prefixes (CIDR, IPv4 or IPv6) a visitor's address
	// must be in; none: every address not denied.
	AllowCIDR []string `json:"allow_cidr,omitempty"`
	// DenyCIDR are prefixes whose visitors are refused, whatever
	// AllowCIDR says.
	DenyCIDR []string `json:"deny_cidr,omitempty"`
	// PassAuthorization passes the visitor's Authorization header on to
	// the service; by default the server removes it once it has checked
	// it, so the service never sees the tunnel's password.
	PassAuthorization bool `json:"pass_authorization,omitempty"`
	// OIDCAllow asks the server to make visitors sign in with its OpenID
	// Connect issuer and lets through only these identities: an email
	// address ("ann@example.com") or every address of a domain
	// ("@example.com"), at most MaxAccessOIDC of MaxOIDCAllow bytes each.
	// A server without an issuer refuses the Hello; one that predates
	// OIDCAllow ignores it, so a client that sets it must check
	// TunnelInfo.OIDC in the Welcome.
	OIDCAllow []string `json:"oidc_allow,omitempty"`
}

// BasicAuthUser is one basic-auth user: the name, and a hash of the
// password (bcrypt, "$2a$", "$2b$" or "$2y$", with its own salt and a cost of
// at most 12, which bounds what one check costs the server).
// Only the hash travels: the server never learns the password from the
// client, and a Hello seen in a log or a dump does not give it away.
type BasicAuthUser struct {
	User string `json:"user"`
	Hash string `json:"hash"`
}

// Empty reports whether a has no rule: nil, or nothing set.
func (a *Access) Empty() bool {
	return a == nil || len(a.BasicAuth) == 0 && len(a.AllowCIDR) == 0 && len(a.DenyCIDR) == 0 && len(a.OIDCAllow) == 0
}

func (a *Access) validate() error {
	if a == nil {
		return nil
	}
	if len(a.BasicAuth) > MaxAccessUsers {
		return fmt.Errorf("access: %d basic_auth users, at most %d", len(a.BasicAuth), MaxAccessUsers)
	}
	if n := len(a.AllowCIDR) + len(a.DenyCIDR); n > MaxAccessCIDRs {
		return fmt.Errorf("access: %d prefixes, at most %d", n, MaxAccessCIDRs)
	}
	for _, u := range a.BasicAuth {
		if err := checkString("access: basic_auth user", u.User, MaxAccessUser); err != nil {
			return err
		}
		if err := checkString("access: basic_auth hash", u.Hash, maxAccessHash); err != nil {
			return err
		}
	}
	for _, list := range [][]string{a.AllowCIDR, a.DenyCIDR} {
		for _, c := range list {
			if err := checkString("access: cidr", c, maxCIDR); err != nil {
				return err
			}
		}
	}
	if len(a.OIDCAllow) > MaxAccessOIDC {
		return fmt.Errorf("access: %d oidc_allow entries, at most %d", len(a.OIDCAllow), MaxAccessOIDC)
	}
	for _, e := range a.OIDCAllow {
		if err := checkString("access: oidc_allow", e, MaxOIDCAllow); err != nil {
			return err
		}
	}
	return nil
}

// The kinds of tunnel.
const (
	// KindHTTP is an HTTP tunnel: the server proxies HTTP requests for
	// NAME.DOMAIN.
	KindHTTP = "http"
	// KindTCP is a raw TCP tunnel: nothing public listens for it; a
	// visitor with a token the owner allowed reaches it through
	// ConnectALPN ("tunnel connect").
	KindTCP = "tcp"
	// KindTLS is a TLS passthrough tunnel: a TLS connection whose
	// ClientHello names NAME.DOMAIN is piped whole, never terminated, to
	// the client's local service, which holds its own certificate.
	KindTLS = "tls"
)

// ValidKind reports whether k is a kind this build knows.
func ValidKind(k string) bool { return k == KindHTTP || k == KindTCP || k == KindTLS }

// Welcome accepts a Hello.
type Welcome struct {
	// SessionID names the session in logs on both sides.
	SessionID string `json:"session_id"`
	// Tunnels lists the tunnels granted, in the order of Hello.Tunnels.
	Tunnels []TunnelInfo `json:"tunnels"`
	// Limits are the server's limits for this session.
	Limits Limits `json:"limits"`
	// Heartbeat tells the client how often to expect signs of life.
	Heartbeat Heartbeat `json:"heartbeat"`
}

// TunnelInfo describes one granted tunnel.
type TunnelInfo struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// URL is the tunnel's public URL, e.g. https://wiki.example.com.
	URL string `json:"url"`
	// Access says the server enforces the tunnel's TunnelRequest.Access:
	// set for every tunnel that asked for a rule. A server that predates
	// access rules never sets it.
	Access bool `json:"access,omitempty"`
	// OIDC says the server makes the tunnel's visitors sign in and checks
	// TunnelRequest.Access.OIDCAllow. A server that predates OpenID
	// Connect login never sets it, even where it sets Access.
	OIDC bool `json:"oidc,omitempty"`
	// Pool says the name is served by a pool the session joined
	// (TunnelRequest.Pool). A server that predates pools never sets it.
	Pool bool `json:"pool,omitempty"`
	// DomainURL is the public URL under the tunnel's custom domain
	// (TunnelRequest.Domain), e.g. https://wiki.example.org; set only
	// when the server serves it.
	DomainURL string `json:"domain_url,omitempty"`
}

// Limits are a server's limits on one session. Zero means no limit.
type Limits struct {
	MaxStreams   int `json:"max_streams,omitempty"`
	MaxFrameSize int `json:"max_frame_size,omitempty"`
}

// Heartbeat settings, in milliseconds. Zero means the feature is off.
type Heartbeat struct {
	IntervalMS int64 `json:"interval_ms,omitempty"`
	TimeoutMS  int64 `json:"timeout_ms,omitempty"`
}

// ErrorCode is a machine-readable reason carried by Error.
type ErrorCode string

// Error codes. Clients decide on the code, never on the message.
const (
	CodeBadToken           ErrorCode = "bad_token"
	CodeNameTaken          ErrorCode = "name_taken"
	CodeNameNotAllowed     ErrorCode = "name_not_allowed"
	CodeInvalidName        ErrorCode = "invalid_name"
	CodeTooManyTunnels     ErrorCode = "too_many_tunnels"
	CodeUnsupportedVersion ErrorCode = "unsupported_version"
	CodeBadRequest         ErrorCode = "bad_request"
	CodeUnknownTunnel      ErrorCode = "unknown_tunnel"
	CodeLocalUnreachable   ErrorCode = "local_unreachable"
	CodeDraining           ErrorCode = "draining"
	// CodeRateLimited: too many sessions from the client's address; it may
	// retry later.
	CodeRateLimited ErrorCode = "rate_limited"
	CodeInternal    ErrorCode = "internal"
	// CodeUnavailable: the server cannot decide the claim now (the store
	// its cluster of nodes shares is out of reach); the same Hello may
	// succeed in a moment, on this server or another.
	CodeUnavailable ErrorCode = "unavailable"
	// CodePoolNotAllowed: the client asked for a pool (TunnelRequest.Pool)
	// and its token may not pool, or the server cannot pool the name.
	CodePoolNotAllowed ErrorCode = "pool_not_allowed"
	// CodePoolMismatch: the pool the client asked to join serves another
	// kind of tunnel, or other visitor access rules.
	CodePoolMismatch ErrorCode = "pool_mismatch"
	// CodeDomainNotAllowed: the token may not claim the custom domain
	// (TunnelRequest.Domain), or the domain is not a valid one. Permanent.
	CodeDomainNotAllowed ErrorCode = "domain_not_allowed"
	// CodeDomainNotVerified: the custom domain's DNS does not point at the
	// tunnel yet (or could not be checked now); the same Hello may succeed
	// once the owner created the record, so the client retries.
	CodeDomainNotVerified ErrorCode = "domain_not_verified"
)

// Permanent reports whether retrying with the same Hello cannot succeed, so
// a client should stop instead of reconnecting.
func (c ErrorCode) Permanent() bool {
	switch c {
	case CodeBadToken, CodeNameNotAllowed, CodeInvalidName, CodeTooManyTunnels,
		CodeUnsupportedVersion, CodeBadRequest, CodeDomainNotAllowed, CodePoolNotAllowed, CodePoolMismatch:
		return true
	}
	return false
}

// Error refuses a Hello or a stream. It implements error, so a refusal can be
// returned as is; test with errors.As.
type Error struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message,omitempty"`
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// GoAway says the sender is draining: no new streams should be started on
// this session. A server sends it before a restart; the client should
// reconnect.
type GoAway struct {
	Reason string `json:"reason,omitempty"`
}

// StreamHeader is the first frame of every stream the server opens.
type StreamHeader struct {
	// Tunnel is the name of the tunnel the stream is for.
	Tunnel string `json:"tunnel"`
	// RemoteAddr is the address of the visitor whose connection opened the
	// stream. Streams may be reused for later requests of other visitors; the
	// proxied request's X-Forwarded-For is authoritative.
	RemoteAddr string `json:"remote_addr,omitempty"`
	// CloseOnFIN says the server will never half-close this stream: when
	// it closes its side, it wants nothing more, so the client closes the
	// local connection at once instead of passing the half-close on and
	// copying the local service's output until the stream's window fills.
	// tunneld sets it on HTTP streams, whose FIN means a visitor left or a
	// pooled stream was retired. A client that does not know the field
	// keeps half-closing, and the server reclaims the stream after yamux's
	// close timeout instead.
	CloseOnFIN bool `json:"close_on_fin,omitempty"`
}

// Connect is the first frame of a ConnectALPN connection: the visitor of a
// TCP tunnel says which tunnel it wants and proves it may. The server
// answers StreamAck once the tunnel's local service is connected (raw bytes
// follow), or Error; a refused visitor never reaches the tunnel's client.
type Connect struct {
	// Version is the protocol version the visitor speaks; see Version.
	Version int `json:"version"`
	// Tunnel is the name of the TCP tunnel.
	Tunnel string `json:"tunnel"`
	// Token is the tunnel owner's token, one it allowed (AllowTokens), or
	// one granted the name by the server's tokens file.
	Token string `json:"token,omitempty"`
}

// StreamAck is the client's answer to a StreamHeader when the local target
// is connected; from then on the stream carries raw bytes.
type StreamAck struct{}

// Ping asks the peer to answer with a Pong carrying the same Seq.
type Ping struct {
	Seq uint64 `json:"seq"`
}

// Pong answers a Ping.
type Pong struct {
	Seq uint64 `json:"seq"`
}

func (*Hello) msgType() msgType        { return msgHello }
func (*Welcome) msgType() msgType      { return msgWelcome }
func (*Error) msgType() msgType        { return msgError }
func (*GoAway) msgType() msgType       { return msgGoAway }
func (*StreamHeader) msgType() msgType { return msgStreamHeader }
func (*StreamAck) msgType() msgType    { return msgStreamAck }
func (*Ping) msgType() msgType         { return msgPing }
func (*Pong) msgType() msgType         { return msgPong }
func (*Connect) msgType() msgType      { return msgConnect }

func newMessage(t msgType) (Message, error) {
	switch t {
	case msgHello:
		return &Hello{}, nil
	case msgWelcome:
		return &Welcome{}, nil
	case msgError:
		return &Error{}, nil
	case msgGoAway:
		return &GoAway{}, nil
	case msgStreamHeader:
		return &StreamHeader{}, nil
	case msgStreamAck:
		return &StreamAck{}, nil
	case msgPing:
		return &Ping{}, nil
	case msgPong:
		return &Pong{}, nil
	case msgConnect:
		return &Connect{}, nil
	}
	return nil, fmt.Errorf("%w: 0x%02x", ErrUnknownType, uint8(t))
}

// CheckVersion returns an error wrapping ErrVersionMismatch when the Hello
// was sent by a client speaking another protocol version.
func (h *Hello) CheckVersion() error {
	if h.Version != Version {
		return fmt.Errorf("%w: client speaks %d, server speaks %d", ErrVersionMismatch, h.Version, Version)
	}
	return nil
}

func (h *Hello) validate() error {
	if h.Version <= 0 {
		return errors.New("hello: version missing")
	}
	if err := checkString("hello: client_version", h.ClientVersion, maxShortString); err != nil {
		return err
	}
	if err := checkString("hello: token", h.Token, maxShortString); err != nil {
		return err
	}
	if n := len(h.OwnerKey); n != 0 && (n < MinOwnerKey || n > MaxOwnerKey) {
		return fmt.Errorf("hello: owner_key: %d bytes, want %d to %d", n, MinOwnerKey, MaxOwnerKey)
	}
	if err := checkString("hello: owner_key", h.OwnerKey, MaxOwnerKey); err != nil {
		return err
	}
	if len(h.Tunnels) == 0 || len(h.Tunnels) > MaxTunnels {
		return fmt.Errorf("hello: %d tunnels, want 1 to %d", len(h.Tunnels), MaxTunnels)
	}
	users, cidrs, oidc, domains := 0, 0, 0, 0
	for i, t := range h.Tunnels {
		if t.Domain != "" {
			domains++
		}
		if t.Access != nil {
			users, cidrs = users+len(t.Access.BasicAuth), cidrs+len(t.Access.AllowCIDR)+len(t.Access.DenyCIDR)
			oidc += len(t.Access.OIDCAllow)
		}
		if err := checkString("hello: tunnel name", t.Name, maxShortString); err != nil {
			return fmt.Errorf("tunnel %d: %w", i, err)
		}
		if !ValidKind(t.Kind) {
			return fmt.Errorf("hello: tunnel %d: unknown kind %.32q", i, t.Kind)
		}
		if len(t.AllowTokens) > 0 && t.Kind != KindTCP {
			return fmt.Errorf("hello: tunnel %d: allow_tokens on a %s tunnel, only tcp ones take them", i, t.Kind)
		}
		if len(t.AllowTokens) > MaxAllowTokens {
			return fmt.Errorf("hello: tunnel %d: %d allow_tokens, at most %d", i, len(t.AllowTokens), MaxAllowTokens)
		}
		for _, h := range t.AllowTokens {
			if !isHexSHA256(h) {
				return fmt.Errorf("hello: tunnel %d: allow_tokens: want 64 lowercase hex digits", i)
			}
		}
		if err := t.Access.validate(); err != nil {
			return fmt.Errorf("hello: tunnel %d: %w", i, err)
		}
		if t.Domain != "" && t.Kind != KindHTTP {
			return fmt.Errorf("hello: tunnel %d: domain on a %s tunnel, only http ones take one", i, t.Kind)
		}
		if err := checkString("hello: tunnel domain", t.Domain, maxShortString); err != nil {
			return fmt.Errorf("tunnel %d: %w", i, err)
		}
	}
	if users > maxHelloAccessUsers || cidrs > maxHelloAccessCIDRs {
		return fmt.Errorf("hello: access: %d users and %d prefixes in all, at most %d and %d", users, cidrs, maxHelloAccessUsers, maxHelloAccessCIDRs)
	}
	if domains > MaxHelloDomains {
		return fmt.Errorf("hello: %d tunnels with a domain, at most %d", domains, MaxHelloDomains)
	}
	if oidc > maxHelloAccessOIDC {
		return fmt.Errorf("hello: access: %d oidc_allow entries in all, at most %d", oidc, maxHelloAccessOIDC)
	}
	return nil
}

func (w *Welcome) validate() error {
	if err := checkString("welcome: session_id", w.SessionID, maxShortString); err != nil {
		return err
	}
	if len(w.Tunnels) == 0 || len(w.Tunnels) > MaxTunnels {
		return fmt.Errorf("welcome: %d tunnels, want 1 to %d", len(w.Tunnels), MaxTunnels)
	}
	for i, t := range w.Tunnels {
		for _, f := range []struct{ name, v string }{{"name", t.Name}, {"kind", t.Kind}, {"url", t.URL}} {
			if f.v == "" {
				return fmt.Errorf("welcome: tunnel %d: %s missing", i, f.name)
			}
			if err := checkString("welcome: tunnel "+f.name, f.v, maxShortString); err != nil {
				return err
			}
		}
		if err := checkString("welcome: tunnel domain_url", t.DomainURL, maxDomainURL); err != nil {
			return err
		}
	}
	if w.Limits.MaxStreams < 0 || w.Limits.MaxFrameSize < 0 || w.Heartbeat.IntervalMS < 0 || w.Heartbeat.TimeoutMS < 0 {
		return errors.New("welcome: negative limit")
	}
	return nil
}

func (e *Error) validate() error {
	if e.Code == "" {
		return errors.New("error: code missing")
	}
	if err := checkString("error: code", string(e.Code), maxShortString); err != nil {
		return err
	}
	return checkString("error: message", e.Message, maxLongString)
}

func (g *GoAway) validate() error { return checkString("goaway: reason", g.Reason, maxLongString) }

func (s *StreamHeader) validate() error {
	if s.Tunnel == "" {
		return errors.New("stream header: tunnel missing")
	}
	if err := checkString("stream header: tunnel", s.Tunnel, maxShortString); err != nil {
		return err
	}
	return checkString("stream header: remote_addr", s.RemoteAddr, maxShortString)
}

func (c *Connect) validate() error {
	if c.Version <= 0 {
		return errors.New("connect: version missing")
	}
	if c.Tunnel == "" {
		return errors.New("connect: tunnel missing")
	}
	if err := checkString("connect: tunnel", c.Tunnel, maxShortString); err != nil {
		return err
	}
	return checkString("connect: token", c.Token, maxShortString)
}

// isHexSHA256 reports whether s is 64 lowercase hex digits.
func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (*StreamAck) validate() error { return nil }
func (*Ping) validate() error      { return nil }
func (*Pong) validate() error      { return nil }

func checkString(field, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s: %d bytes, limit %d", field, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s: not valid UTF-8", field)
	}
	return nil
}

// WriteFrame encodes m as one frame and writes it to w with a single Write,
// so that frames from one writer never interleave. It refuses messages that
// ReadFrame would refuse.
func WriteFrame(w io.Writer, m Message) error {
	buf, err := AppendFrame(nil, m)
	if err != nil {
		return err
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("proto: write frame: %w", err)
	}
	return nil
}

// AppendFrame appends the encoding of m to b and returns the extended slice.
func AppendFrame(b []byte, m Message) ([]byte, error) {
	if err := m.validate(); err != nil {
		return b, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	start := len(b)
	b = append(b, byte(m.msgType()), 0, 0, 0, 0)
	buf := bytes.NewBuffer(b)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return b[:start], fmt.Errorf("proto: encode %T: %w", m, err)
	}
	b = buf.Bytes()
	b = b[:len(b)-1] // Encoder adds a newline.
	n := len(b) - start - headerSize
	if n > MaxFrameSize {
		return b[:start], fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	binary.BigEndian.PutUint32(b[start+1:], uint32(n))
	return b, nil
}

// ReadFrame reads exactly one frame from r and decodes it. It reads no byte
// past the frame, so the rest of r (a data stream's payload) is untouched.
// Errors wrap ErrFrameTooLarge, ErrUnknownType, ErrTruncatedFrame or
// ErrMalformed for bad input, or are r's own error (io.EOF before any byte).
func ReadFrame(r io.Reader) (Message, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: header", ErrTruncatedFrame)
		}
		return nil, err
	}
	m, err := newMessage(msgType(hdr[0]))
	if err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrameSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: payload", ErrTruncatedFrame)
		}
		return nil, err
	}
	if len(payload) == 0 || payload[0] != '{' {
		return nil, fmt.Errorf("%w: payload is not a JSON object", ErrMalformed)
	}
	// encoding/json would silently turn invalid UTF-8 into U+FFFD.
	if !utf8.Valid(payload) {
		return nil, fmt.Errorf("%w: payload is not valid UTF-8", ErrMalformed)
	}
	if err := json.Unmarshal(payload, m); err != nil {
		return nil, fmt.Errorf("%w: %T: %v", ErrMalformed, m, err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return m, nil
}

// ReadAs reads one frame and requires it to be of type T. A frame of another
// type is ErrUnexpected, except an *Error, which is returned as the error
// itself so callers can errors.As it.
func ReadAs[T Message](r io.Reader) (T, error) {
	var zero T
	m, err := ReadFrame(r)
	if err != nil {
		return zero, err
	}
	if v, ok := m.(T); ok {
		return v, nil
	}
	if e, ok := m.(*Error); ok {
		return zero, e
	}
	return zero, fmt.Errorf("%w: got %T, want %T", ErrUnexpected, m, zero)
}
