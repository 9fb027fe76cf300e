// Host names: FromHost is here rather than in the edge because it is the
// other half of what a name is. Validate says which labels may be names;
// FromHost says which host, under the tunnel domain, denotes which label,
// and both must agree on case, length and quoting for a name to mean one
// thing everywhere. The edge routes with it (Host header, ACME host policy).

package name

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

var (
	// ErrForeignHost is returned by FromHost for a host that is neither the
	// tunnel domain nor exactly one label under it.
	ErrForeignHost = errors.New("host is not under the tunnel domain")
	// ErrMalformedHost is returned by FromHost (wrapped together with
	// ErrForeignHost) for a host whose port is not a port, such as
	// "wiki.example.com:443,evil.example": a visitor's request with such a
	// Host is refused (400), never forwarded.
	ErrMalformedHost = errors.New("malformed host")
)

// FromHost maps a Host header or TLS SNI value to a tunnel name under
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
func FromHost(host, domain string) (string, error) {
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
	h = Lower(h)
	h = strings.TrimSuffix(h, ".")

	// h has no ':' left, so the only address it can be is IPv4, all
	// digits and dots: only those are parsed, because ParseAddr's error for
	// a name, the common case, costs every request an allocation.
	if digitsAndDots(h) {
		if _, err := netip.ParseAddr(h); err == nil {
			return "", fmt.Errorf("%w: %s: IP address", ErrForeignHost, quoteName(host))
		}
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

// digitsAndDots reports whether s holds nothing but ASCII digits and dots.
func digitsAndDots(s string) bool {
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return false
		}
	}
	return true
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

// Lower lowercases A-Z only and keeps every other byte, the way DNS compares
// names (RFC 4343). See FromHost for why not strings.ToLower: a look-alike
// such as the Kelvin sign must never fold onto a real name.
func Lower(s string) string {
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
