// Tunnel names: which names a client may ask for, how the server picks one
// when the client asks for none, and how a visitor's Host header or SNI value
// maps back to a name.

package edge

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"
)

var (
	// ErrInvalidName is returned by ValidateName for a name that is not a
	// lowercase DNS label we accept. The wrapping error gives the reason.
	ErrInvalidName = errors.New("invalid name")
	// ErrReservedName is returned by ValidateName for a well-formed name that
	// the server keeps for itself (see reservedNames).
	ErrReservedName = errors.New("reserved name")
	// ErrForeignHost is returned by ParseHost for a host that is neither the
	// tunnel domain nor exactly one label under it.
	ErrForeignHost = errors.New("host is not under the tunnel domain")
	// ErrMalformedHost is returned by ParseHost (wrapped together with
	// ErrForeignHost) for a host whose port is not a port, such as
	// "wiki.example.com:443,evil.example": a visitor's request with such a
	// Host is refused (400), never forwarded.
	ErrMalformedHost = errors.New("malformed host")
)

// maxNameLen is the DNS limit for one label (RFC 1035 §2.3.4).
const maxNameLen = 63

// reservedNames are refused by ValidateName. They are names a visitor or a
// mail, DNS or ACME client could take for the operator's own service, so a
// tunnel must never answer under them. Keep the list sorted: ValidateName
// searches it with a binary search, and a test checks the order.
var reservedNames = []string{
	"acme", "admin", "api", "assets", "autoconfig", "autodiscover", "cdn",
	"dns", "ftp", "health", "imap", "localhost", "mail", "metrics", "ns1",
	"ns2", "pop", "smtp", "static", "status", "tunnel", "tunneld", "www",
}

// ValidateName reports whether name may be a tunnel name. It returns nil, an
// error wrapping ErrInvalidName with the reason, or an error wrapping
// ErrReservedName.
//
// A tunnel name is one DNS label of 1 to 63 characters from [a-z0-9-] that
// neither starts nor ends with '-'. Labels with "--" in positions 3 and 4
// (such as "xn--…", punycode) are refused: they are reserved for IDNA and
// would let a client register a look-alike of another name. Uppercase is
// invalid rather than folded, because this is the check for names that
// clients ask for, which must already be in the form visitors will see;
// hosts are lowercased by ParseHost before lookup.
//
// This is the only place that decides what a valid name is.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(name) > maxNameLen:
		return fmt.Errorf("%w: %s: %d bytes, at most %d allowed",
			ErrInvalidName, quoteName(name), len(name), maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			continue
		}
		if c >= 'A' && c <= 'Z' {
			return fmt.Errorf("%w: %s: uppercase %q at offset %d, names are lowercase",
				ErrInvalidName, quoteName(name), c, i)
		}
		r, _ := utf8.DecodeRuneInString(name[i:])
		return fmt.Errorf("%w: %s: character %q at offset %d, only a-z, 0-9 and '-' allowed",
			ErrInvalidName, quoteName(name), r, i)
	}
	switch {
	case name[0] == '-' || name[len(name)-1] == '-':
		return fmt.Errorf("%w: %q: starts or ends with '-'", ErrInvalidName, name)
	case len(name) >= 4 && name[2:4] == "--":
		return fmt.Errorf("%w: %q: '--' in positions 3-4 is reserved for IDNA (punycode) labels",
			ErrInvalidName, name)
	}
	if _, found := slices.BinarySearch(reservedNames, name); found {
		return fmt.Errorf("%w: %q", ErrReservedName, name)
	}
	return nil
}

// quoteName quotes a client-supplied name for an error message, cut short so
// that a hostile multi-kilobyte name cannot bloat log lines.
func quoteName(name string) string {
	const limit = maxNameLen + 1
	if len(name) <= limit {
		return fmt.Sprintf("%q", name)
	}
	return fmt.Sprintf("%q…", name[:limit])
}

// Word lists for RandomName: 64 short, friendly, lowercase words each, so a
// name reads well when spoken and (with the number) is unlikely to collide.
// A test checks that every word is [a-z]+ and that the lists have no
// duplicates.
var (
	nameAdjectives = []string{
		"amber", "bold", "brave", "breezy", "bright", "brisk", "calm", "clever",
		"cosmic", "cozy", "crisp", "curious", "dapper", "eager", "early", "fancy",
		"fluffy", "gentle", "giddy", "glad", "golden", "grand", "happy", "hardy",
		"humble", "jaunty", "jolly", "keen", "kind", "lively", "lucky", "mellow",
		"merry", "mighty", "misty", "nimble", "noble", "plucky", "polite", "proud",
		"quick", "quiet", "rapid", "rosy", "rustic", "sandy", "shiny", "silent",
		"silver", "sleek", "snappy", "sparkly", "spry", "steady", "sunny", "swift",
		"tidy", "tiny", "vivid", "warm", "wise", "witty", "zany", "zesty",
	}
	nameNouns = []string{
		"badger", "bear", "beaver", "bison", "cat", "crane", "deer", "dingo",
		"dolphin", "eagle", "falcon", "ferret", "finch", "fox", "gecko", "hare",
		"hawk", "heron", "ibis", "jackal", "koala", "lark", "lemur", "lion",
		"llama", "lynx", "marmot", "mole", "moose", "newt", "ocelot", "orca",
		"otter", "owl", "panda", "parrot", "pelican", "penguin", "puffin", "quail",
		"rabbit", "raven", "robin", "salmon", "seal", "shark", "sloth", "sparrow",
		"squid", "stoat", "swan", "tapir", "tiger", "toucan", "trout", "turtle",
		"walrus", "weasel", "whale", "wolf", "wombat", "yak", "zebra", "mink",
	}
)

// RandomName returns a readable random name such as "brisk-otter-4821": an
// adjective, a noun and four digits (1000-9999), chosen with crypto/rand so
// that names cannot be predicted and squatted. The result always passes
// ValidateName. It is safe for concurrent use.
//
// There are about 37 million such names; the caller still has to check that
// the one it got is free.
func RandomName() string {
	return fmt.Sprintf("%s-%s-%d",
		nameAdjectives[randIntn(len(nameAdjectives))],
		nameNouns[randIntn(len(nameNouns))],
		1000+randIntn(9000))
}

// randIntn returns a uniform random int in [0, n) from crypto/rand.
func randIntn(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		// crypto/rand.Reader does not fail on supported platforms (since Go
		// 1.24 it crashes the program instead of returning an error), so this
		// is unreachable; a panic is better than a predictable name.
		panic(fmt.Sprintf("edge: read crypto/rand: %v", err))
	}
	return int(v.Int64())
}

// ParseHost maps a Host header or TLS SNI value to a tunnel name under
// domain, which must be lowercase without a trailing dot (e.g. "example.com").
//
// It strips a port ("wiki.example.com:8443"; empty, or up to five digits no
// greater than 65535, anything else wraps ErrMalformedHost), lowercases ASCII letters and
// drops one trailing dot, so "WIKI.Example.com.:8443" gives "wiki". The apex
// ("example.com") gives ("", nil). Everything else gives ("", err) with err
// wrapping ErrForeignHost: another domain, a deeper name such as
// "a.b.example.com", an empty label (".example.com"), an IP address in any
// form ("127.0.0.1", "[::1]:443"), and any byte outside printable ASCII.
//
// It does not validate the name: a syntactically odd label under the domain
// ("wi_ki") is returned as is, and lookup simply will not find it. The name
// returned is never empty when err is nil unless host is the apex, and never
// contains '.', ':' or an uppercase letter.
func ParseHost(host, domain string) (string, error) {
	if domain == "" {
		return "", fmt.Errorf("%w: %s: no tunnel domain configured", ErrForeignHost, quoteName(host))
	}
	// Host headers and SNI are ASCII (internationalised names travel as
	// punycode). Refusing other bytes, instead of Unicode-lowercasing them,
	// keeps look-alikes such as the Kelvin sign, which lowercases to 'k',
	// from ever mapping onto a real name.
	for i := 0; i < len(host); i++ {
		if host[i] <= ' ' || host[i] >= 0x7f {
			return "", fmt.Errorf("%w: %s: byte 0x%02x at offset %d", ErrForeignHost, quoteName(host), host[i], i)
		}
	}

	h := host
	switch {
	case strings.ContainsAny(h, "[]"):
		// "[::1]" or "[::1]:443": brackets only ever hold an IPv6 literal,
		// and a bracket anywhere else is no host name at all.
		return "", fmt.Errorf("%w: %s: IP address", ErrForeignHost, quoteName(host))
	case strings.Count(h, ":") > 1:
		// An unbracketed IPv6 address ("::1"); no port to strip.
		return "", fmt.Errorf("%w: %s: IP address", ErrForeignHost, quoteName(host))
	default:
		if i := strings.IndexByte(h, ':'); i >= 0 {
			if !validPort(h[i+1:]) {
				return "", fmt.Errorf("%w: %w: %s: the port is not a number", ErrForeignHost, ErrMalformedHost, quoteName(host))
			}
			h = h[:i]
		}
	}
	h = asciiLower(h)
	h = strings.TrimSuffix(h, ".")

	if _, err := netip.ParseAddr(h); err == nil {
		return "", fmt.Errorf("%w: %s: IP address", ErrForeignHost, quoteName(host))
	}
	if h == domain {
		return "", nil
	}
	label, ok := strings.CutSuffix(h, "."+domain)
	switch {
	case !ok:
		return "", fmt.Errorf("%w: %s is not under %q", ErrForeignHost, quoteName(host), domain)
	case label == "":
		return "", fmt.Errorf("%w: %s: empty label", ErrForeignHost, quoteName(host))
	case strings.Contains(label, "."):
		return "", fmt.Errorf("%w: %s: more than one label under %q", ErrForeignHost, quoteName(host), domain)
	}
	return label, nil
}

// validPort reports whether p, what follows a host's ':', is a port: empty
// (RFC 3986 allows "host:") or one to five digits up to 65535.
func validPort(p string) bool {
	if len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n <= 65535
}

// asciiLower lowercases A-Z only; see ParseHost for why not strings.ToLower.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
