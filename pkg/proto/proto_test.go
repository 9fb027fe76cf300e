package proto

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func sampleMessages() []Message {
	return []Message{
		&Hello{Version: Version, ClientVersion: "test", Token: "s3cret", Tunnels: []TunnelRequest{{Name: "wiki", Kind: KindHTTP}, {Kind: KindHTTP}}},
		&Hello{Version: Version, OwnerKey: strings.Repeat("k", MinOwnerKey), Tunnels: []TunnelRequest{{Kind: KindHTTP}}},
		&Hello{Version: Version, Token: "s3cret", Tunnels: []TunnelRequest{{Name: "wiki", Kind: KindHTTP, Pool: true}}},
		&Welcome{SessionID: "abc", Tunnels: []TunnelInfo{{Name: "wiki", Kind: KindHTTP, URL: "https://wiki.example.com", Pool: true}}},
		&Hello{Version: Version, Tunnels: []TunnelRequest{{Name: "wiki", Kind: KindHTTP, Domain: "wiki.example.org"}}},
		&Welcome{SessionID: "abc", Tunnels: []TunnelInfo{{Name: "wiki", Kind: KindHTTP, URL: "https://wiki.example.com", DomainURL: "https://wiki.example.org"}}},
		&Hello{Version: Version, Tunnels: []TunnelRequest{{Name: "wiki", Kind: KindHTTP, Access: &Access{
			BasicAuth: []BasicAuthUser{{User: "ann", Hash: "$2a$10$" + strings.Repeat("x", 53)}},
			AllowCIDR: []string{"192.0.2.0/24", "2001:db8::/32"}, DenyCIDR: []string{"192.0.2.7/32"}, PassAuthorization: true}}}},
		&Welcome{SessionID: "abc", Tunnels: []TunnelInfo{{Name: "wiki", Kind: KindHTTP, URL: "https://wiki.example.com", Access: true}},
			Limits: Limits{MaxStreams: 100, MaxFrameSize: MaxFrameSize}, Heartbeat: Heartbeat{IntervalMS: 10000, TimeoutMS: 30000}},
		&Error{Code: CodeNameTaken, Message: `name "wiki" is held by another token`},
		&GoAway{Reason: "restart"},
		&StreamHeader{Tunnel: "wiki", RemoteAddr: "203.0.113.7:5123"},
		&StreamAck{},
		&Ping{Seq: 7},
		&Pong{Seq: 7},
		&Hello{Version: Version, Token: "s3cret", Tunnels: []TunnelRequest{{Name: "pi-ssh", Kind: KindTCP,
			AllowTokens: []string{strings.Repeat("ab", 32)}}, {Name: "secure", Kind: KindTLS}}},
		&Connect{Version: Version, Tunnel: "pi-ssh", Token: "s3cret"},
	}
}

func rawFrame(t msgType, payload string) []byte {
	b := []byte{byte(t), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

func TestFrame_RoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		var buf bytes.Buffer
		if err := WriteFrame(&buf, m); err != nil {
			t.Fatalf("write %T: %v", m, err)
		}
		buf.WriteString("trailing stream bytes")
		got, err := ReadFrame(&buf)
		if err != nil {
			t.Fatalf("read %T: %v", m, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("got %#v, want %#v", got, m)
		}
		if rest := buf.String(); rest != "trailing stream bytes" {
			t.Errorf("ReadFrame consumed past the frame: rest %q", rest)
		}
	}
}

func TestReadFrame_RejectsBadInput(t *testing.T) {
	huge := []byte{byte(msgHello), 0xff, 0xff, 0xff, 0xff}
	tests := []struct {
		name  string
		input []byte
		want  error
	}{
		{"oversized length", huge, ErrFrameTooLarge},
		{"one past the limit", rawFrame(msgHello, strings.Repeat(" ", MaxFrameSize+1)), ErrFrameTooLarge},
		{"unknown type", rawFrame(0x42, `{}`), ErrUnknownType},
		{"type zero", rawFrame(0, `{}`), ErrUnknownType},
		{"truncated header", []byte{byte(msgHello), 0, 0}, ErrTruncatedFrame},
		{"truncated payload", rawFrame(msgHello, `{"version":1}`)[:9], ErrTruncatedFrame},
		{"empty payload", rawFrame(msgPing, ``), ErrMalformed},
		{"not json", rawFrame(msgPing, `hello`), ErrMalformed},
		{"json array", rawFrame(msgPing, `[1]`), ErrMalformed},
		{"trailing garbage", rawFrame(msgPing, `{"seq":1} x`), ErrMalformed},
		{"wrong field type", rawFrame(msgPing, `{"seq":"x"}`), ErrMalformed},
		{"hello without version", rawFrame(msgHello, `{"tunnels":[{"kind":"http"}]}`), ErrMalformed},
		{"hello without tunnels", rawFrame(msgHello, `{"version":1}`), ErrMalformed},
		{"hello unknown kind", rawFrame(msgHello, `{"version":1,"tunnels":[{"kind":"udp"}]}`), ErrMalformed},
		{"hello too many tunnels", rawFrame(msgHello, `{"version":1,"tunnels":[`+strings.Repeat(`{"kind":"http"},`, MaxTunnels)+`{"kind":"http"}]}`), ErrMalformed},
		{"hello long token", rawFrame(msgHello, `{"version":1,"token":"`+strings.Repeat("a", 300)+`","tunnels":[{"kind":"http"}]}`), ErrMalformed},
		{"hello short owner key", rawFrame(msgHello, `{"version":1,"owner_key":"`+strings.Repeat("k", MinOwnerKey-1)+`","tunnels":[{"kind":"http"}]}`), ErrMalformed},
		{"hello long owner key", rawFrame(msgHello, `{"version":1,"owner_key":"`+strings.Repeat("k", MaxOwnerKey+1)+`","tunnels":[{"kind":"http"}]}`), ErrMalformed},
		{"invalid utf-8", rawFrame(msgStreamHeader, "{\"tunnel\":\"\xff\"}"), ErrMalformed},
		{"error without code", rawFrame(msgError, `{"message":"x"}`), ErrMalformed},
		{"header without tunnel", rawFrame(msgStreamHeader, `{}`), ErrMalformed},
		{"allow tokens on an http tunnel", rawFrame(msgHello, `{"version":1,"tunnels":[{"kind":"http","allow_tokens":["`+strings.Repeat("ab", 32)+`"]}]}`), ErrMalformed},
		{"allow token not a hash", rawFrame(msgHello, `{"version":1,"tunnels":[{"kind":"tcp","allow_tokens":["tk_plain"]}]}`), ErrMalformed},
		{"allow token uppercase hash", rawFrame(msgHello, `{"version":1,"tunnels":[{"kind":"tcp","allow_tokens":["`+strings.Repeat("AB", 32)+`"]}]}`), ErrMalformed},
		{"too many allow tokens", rawFrame(msgHello, `{"version":1,"tunnels":[{"kind":"tcp","allow_tokens":[`+strings.Repeat(`"`+strings.Repeat("ab", 32)+`",`, MaxAllowTokens)+`"`+strings.Repeat("ab", 32)+`"]}]}`), ErrMalformed},
		{"domain on a tcp tunnel", rawFrame(msgHello, `{"version":1,"tunnels":[{"kind":"tcp","domain":"wiki.example.org"}]}`), ErrMalformed},
		{"domain on a tls tunnel", rawFrame(msgHello, `{"version":1,"tunnels":[{"kind":"tls","domain":"wiki.example.org"}]}`), ErrMalformed},
		{"long domain", rawFrame(msgHello, `{"version":1,"tunnels":[{"kind":"http","domain":"`+strings.Repeat("a", 254)+`"}]}`), ErrMalformed},
		{"too many domains", rawFrame(msgHello, `{"version":1,"tunnels":[`+strings.Repeat(`{"kind":"http","domain":"a.example.org"},`, MaxHelloDomains)+`{"kind":"http","domain":"a.example.org"}]}`), ErrMalformed},
		{"long domain url", rawFrame(msgWelcome, `{"session_id":"s","tunnels":[{"name":"w","kind":"http","url":"u","domain_url":"https://`+strings.Repeat("a", 260)+`"}]}`), ErrMalformed},
		{"connect without version", rawFrame(msgConnect, `{"tunnel":"pi-ssh","token":"x"}`), ErrMalformed},
		{"connect without tunnel", rawFrame(msgConnect, `{"version":1,"token":"x"}`), ErrMalformed},
		{"connect long token", rawFrame(msgConnect, `{"version":1,"tunnel":"pi-ssh","token":"`+strings.Repeat("a", 300)+`"}`), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(tt.input))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReadFrame_CleanEOF(t *testing.T) {
	if _, err := ReadFrame(bytes.NewReader(nil)); err != io.EOF {
		t.Fatalf("got %v, want io.EOF", err)
	}
}

// countingReader fails the test if ReadFrame allocates from an untrusted length
// before checking it: we can only observe that it stops reading early.
func TestReadFrame_OversizedDoesNotReadPayload(t *testing.T) {
	r := &countingReader{r: bytes.NewReader(append([]byte{byte(msgHello), 0x7f, 0xff, 0xff, 0xff}, make([]byte, 1<<20)...))}
	if _, err := ReadFrame(r); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v, want ErrFrameTooLarge", err)
	}
	if r.n != headerSize {
		t.Fatalf("read %d bytes, want only the %d-byte header", r.n, headerSize)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestWriteFrame_RefusesInvalid(t *testing.T) {
	bad := []Message{
		&Hello{Version: Version},
		&StreamHeader{},
		&Error{},
		&Hello{Version: Version, Tunnels: []TunnelRequest{{Kind: KindHTTP, Name: strings.Repeat("a", 300)}}},
	}
	for _, m := range bad {
		if err := WriteFrame(io.Discard, m); !errors.Is(err, ErrMalformed) {
			t.Errorf("WriteFrame(%#v): got %v, want ErrMalformed", m, err)
		}
	}
}

func TestHello_CheckVersion(t *testing.T) {
	if err := (&Hello{Version: Version}).CheckVersion(); err != nil {
		t.Fatalf("same version: %v", err)
	}
	if err := (&Hello{Version: Version + 1}).CheckVersion(); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("got %v, want ErrVersionMismatch", err)
	}
}

func TestReadAs(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteFrame(&buf, &Error{Code: CodeBadToken, Message: "no"}); err != nil {
		t.Fatal(err)
	}
	_, err := ReadAs[*Welcome](&buf)
	var perr *Error
	if !errors.As(err, &perr) || perr.Code != CodeBadToken {
		t.Fatalf("got %v, want *Error with code bad_token", err)
	}
	if !perr.Code.Permanent() {
		t.Errorf("bad_token should be permanent")
	}
	if err := WriteFrame(&buf, &Ping{Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadAs[*Welcome](&buf); !errors.Is(err, ErrUnexpected) {
		t.Fatalf("got %v, want ErrUnexpected", err)
	}
}

func seedFrames() [][]byte {
	var seeds [][]byte
	for _, m := range sampleMessages() {
		b, err := AppendFrame(nil, m)
		if err != nil {
			panic(err)
		}
		seeds = append(seeds, b)
	}
	return append(seeds,
		[]byte{byte(msgHello), 0xff, 0xff, 0xff, 0xff},
		rawFrame(0x42, `{}`),
		[]byte{byte(msgHello), 0, 0},
		rawFrame(msgHello, `{"version":1,"tunnels":[{"kind":"http","name":"\u2028\u0000"}]}`),
	)
}

func FuzzReadFrame(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ReadFrame(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(b) > headerSize+MaxFrameSize {
			// Only the first frame is read; make sure its length was in bounds.
			if n := binary.BigEndian.Uint32(b[1:]); n > MaxFrameSize {
				t.Fatalf("accepted a %d-byte frame", n)
			}
		}
		var buf bytes.Buffer
		if err := WriteFrame(&buf, m); err != nil {
			t.Fatalf("re-encode accepted frame %#v: %v", m, err)
		}
		again, err := ReadFrame(&buf)
		if err != nil {
			t.Fatalf("re-read re-encoded frame: %v", err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip changed the message: %#v -> %#v", m, again)
		}
	})
}

func TestHello_AccessBounds(t *testing.T) {
	user := BasicAuthUser{User: "ann", Hash: "$2a$10$" + strings.Repeat("x", 53)}
	users := func(n int) []BasicAuthUser {
		out := make([]BasicAuthUser, n)
		for i := range out {
			out[i] = user
		}
		return out
	}
	cidrs := func(n int) []string { return slices.Repeat([]string{"2001:db8::/32"}, n) }
	// The largest Hello the bounds allow, each user name escaping to six
	// bytes a byte, still fits in a frame.
	full := &Hello{Version: Version}
	for i := range MaxTunnels {
		a := &Access{
			BasicAuth: []BasicAuthUser{{User: strings.Repeat("\x01", MaxAccessUser), Hash: strings.Repeat("$", maxAccessHash)}},
			AllowCIDR: cidrs(maxHelloAccessCIDRs / MaxTunnels)}
		if i < maxHelloAccessOIDC {
			a.OIDCAllow = []string{strings.Repeat("\x01", MaxOIDCAllow)}
		}
		full.Tunnels = append(full.Tunnels, TunnelRequest{Kind: KindHTTP, Access: a})
	}
	emails := func(n int) []string { return slices.Repeat([]string{"ann@example.com"}, n) }
	tests := []struct {
		name string
		h    *Hello
		want string // "": valid
	}{
		{"full", full, ""},
		{"most users", &Hello{Version: Version, Tunnels: []TunnelRequest{{Kind: KindHTTP, Access: &Access{BasicAuth: users(MaxAccessUsers)}}}}, ""},
		{"too many users", &Hello{Version: Version, Tunnels: []TunnelRequest{{Kind: KindHTTP, Access: &Access{BasicAuth: users(MaxAccessUsers + 1)}}}}, "basic_auth users"},
		{"too many prefixes", &Hello{Version: Version, Tunnels: []TunnelRequest{{Kind: KindHTTP, Access: &Access{
			AllowCIDR: cidrs(MaxAccessCIDRs / 2), DenyCIDR: cidrs(MaxAccessCIDRs/2 + 1)}}}}, "prefixes, at most"},
		{"long user", &Hello{Version: Version, Tunnels: []TunnelRequest{{Kind: KindHTTP, Access: &Access{
			BasicAuth: []BasicAuthUser{{User: strings.Repeat("u", MaxAccessUser+1), Hash: user.Hash}}}}}}, "basic_auth user"},
		{"long hash", &Hello{Version: Version, Tunnels: []TunnelRequest{{Kind: KindHTTP, Access: &Access{
			BasicAuth: []BasicAuthUser{{User: "ann", Hash: strings.Repeat("h", maxAccessHash+1)}}}}}}, "basic_auth hash"},
		{"long prefix", &Hello{Version: Version, Tunnels: []TunnelRequest{{Kind: KindHTTP, Access: &Access{
			DenyCIDR: []string{strings.Repeat("1", maxCIDR+1)}}}}}, "access: cidr"},
		{"most oidc", &Hello{Version: Version, Tunnels: []TunnelRequest{{Kind: KindHTTP, Access: &Access{OIDCAllow: emails(MaxAccessOIDC)}}}}, ""},
		{"too many oidc", &Hello{Version: Version, Tunnels: []TunnelRequest{{Kind: KindHTTP, Access: &Access{OIDCAllow: emails(MaxAccessOIDC + 1)}}}}, "oidc_allow entries, at most"},
		{"long oidc", &Hello{Version: Version, Tunnels: []TunnelRequest{{Kind: KindHTTP, Access: &Access{
			OIDCAllow: []string{strings.Repeat("a", MaxOIDCAllow-11) + "@example.com"}}}}}, "access: oidc_allow"},
		{"too many oidc in all", &Hello{Version: Version, Tunnels: []TunnelRequest{
			{Kind: KindHTTP, Access: &Access{OIDCAllow: emails(MaxAccessOIDC)}},
			{Kind: KindHTTP, Access: &Access{OIDCAllow: emails(maxHelloAccessOIDC - MaxAccessOIDC + 1)}}}}, "oidc_allow entries in all"},
	}
	over := &Hello{Version: Version}
	for range MaxTunnels {
		over.Tunnels = append(over.Tunnels, TunnelRequest{Kind: KindHTTP, Access: &Access{BasicAuth: users(2)}})
	}
	tests = append(tests, struct {
		name string
		h    *Hello
		want string
	}{"too many users in all", over, "users and"})
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			var buf bytes.Buffer
			err := WriteFrame(&buf, tt.h)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("WriteFrame: %v", err)
				}
				if _, err := ReadFrame(&buf); err != nil {
					t.Fatalf("ReadFrame: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrMalformed containing %q", err, tt.want)
			}
		})
	}
}

// TestAccess_OldPeersSeeNothingNew: without rules, a Hello and a Welcome
// carry no "access" key, byte for byte what a client or server of before
// access rules sends; and a peer of before them, which ignores unknown
// keys, reads one with rules.
func TestAccess_OldPeersSeeNothingNew(t *testing.T) {
	for _, m := range []Message{
		&Hello{Version: Version, Tunnels: []TunnelRequest{{Name: "wiki", Kind: KindHTTP}}},
		&Welcome{SessionID: "s", Tunnels: []TunnelInfo{{Name: "wiki", Kind: KindHTTP, URL: "https://wiki.example.com"}}},
	} {
		b, err := AppendFrame(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("access")) {
			t.Errorf("%T without rules: got %s, want no access key", m, b[headerSize:])
		}
		if bytes.Contains(b, []byte("pool")) {
			t.Errorf("%T without a pool: got %s, want no pool key", m, b[headerSize:])
		}
	}
	b, err := AppendFrame(nil, &Hello{Version: Version, Tunnels: []TunnelRequest{{Name: "wiki", Kind: KindHTTP,
		Access: &Access{AllowCIDR: []string{"192.0.2.0/24"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	// What a peer of before access rules decodes a Hello into.
	var old struct {
		Version int `json:"version"`
		Tunnels []struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"tunnels"`
	}
	if err := json.Unmarshal(b[headerSize:], &old); err != nil || len(old.Tunnels) != 1 || old.Tunnels[0].Name != "wiki" {
		t.Fatalf("an old peer reads %+v, %v; want the tunnel wiki", old, err)
	}
}

// A refusal for an unreachable cluster store is worth retrying: the client
// reconnects instead of giving up.
func TestErrorCode_UnavailableIsRetryable(t *testing.T) {
	for _, c := range []ErrorCode{CodeUnavailable, CodeRateLimited, CodeNameTaken, CodeDraining, CodeDomainNotVerified} {
		if c.Permanent() {
			t.Errorf("%s is permanent, want retryable", c)
		}
	}
}

// A token that may not claim a domain will not be allowed it on a retry:
// the client stops instead of reconnecting for ever.
func TestErrorCode_DomainNotAllowedIsPermanent(t *testing.T) {
	if !CodeDomainNotAllowed.Permanent() {
		t.Error("domain_not_allowed is retryable, want permanent")
	}
}

// A Hello with the most custom domains it may carry, each as long as
// allowed, still encodes: the bound keeps it inside MaxFrameSize.
func TestHello_DomainBounds(t *testing.T) {
	h := &Hello{Version: Version}
	for range MaxTunnels {
		h.Tunnels = append(h.Tunnels, TunnelRequest{Name: strings.Repeat("n", maxShortString), Kind: KindHTTP})
	}
	for i := range MaxHelloDomains {
		h.Tunnels[i].Domain = strings.Repeat("d", maxShortString)
	}
	if _, err := AppendFrame(nil, h); err != nil {
		t.Fatalf("largest valid Hello with domains: %v", err)
	}
}

// A pool refusal is permanent: the same Hello cannot succeed with the same
// token or against the same pool.
func TestErrorCode_PoolRefusalsArePermanent(t *testing.T) {
	for _, c := range []ErrorCode{CodePoolNotAllowed, CodePoolMismatch} {
		if !c.Permanent() {
			t.Errorf("%s is retryable, want permanent", c)
		}
	}
}
