package domain

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// ErrInvalid is wrapped by every error of Validate and ValidatePattern.
var ErrInvalid = errors.New("invalid domain")

// ErrNotPointing means DNS answered and does not (yet) point the domain at
// the tunnel: neither the CNAME nor the TXT record of the package doc
// exists (no such name, no such record, a CNAME elsewhere, a TXT record
// without the label). It is worth retrying once the owner has created the
// record.
var ErrNotPointing = errors.New("domain does not point at this tunnel")

// ErrLookupFailed means DNS could not answer (a timeout, SERVFAIL, a
// refusal, the resolver out of reach), so whether the domain points at the
// tunnel is unknown. It is worth retrying; unlike ErrNotPointing it says
// nothing about the domain's records.
var ErrLookupFailed = errors.New("DNS lookup of the domain failed")

// ErrBusy means the check was not made because the rate of DNS checks is
// at its bound; worth retrying later.
var ErrBusy = errors.New("too many domain checks, try again later")

// MaxLen is the longest domain accepted, the DNS limit for a name without
// its trailing dot.
const MaxLen = 253

// Validate checks that d is a lowercase domain name of at least two labels,
// each 1 to 63 of a-z, 0-9 and '-', neither starting nor ending with '-',
// the last not all digits (so no IP address passes), MaxLen at most.
func Validate(d string) error {
	if d == "" {
		return fmt.Errorf("%w: empty", ErrInvalid)
	}
	if len(d) > MaxLen {
		return fmt.Errorf("%w: %d characters, want at most %d", ErrInvalid, len(d), MaxLen)
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return fmt.Errorf("%w: %q: want at least two labels (wiki.example.org)", ErrInvalid, d)
	}
	for _, l := range labels {
		if err := validLabel(l); err != nil {
			return fmt.Errorf("%w: %q: %s", ErrInvalid, d, err)
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return fmt.Errorf("%w: %q: last label is all digits", ErrInvalid, d)
	}
	return nil
}

func validLabel(l string) error {
	if l == "" || len(l) > 63 {
		return fmt.Errorf("label of %d characters, want 1 to 63", len(l))
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with '-'", l)
	}
	for i := 0; i < len(l); i++ {
		if c := l[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("label %q: character %q, want a-z, 0-9 or '-'", l, c)
		}
	}
	return nil
}

// ValidatePattern checks one domain pattern of a token: a domain (Validate)
// or "*." followed by a domain of at least two labels.
func ValidatePattern(p string) error {
	if rest, ok := strings.CutPrefix(p, "*."); ok {
		if err := Validate(rest); err != nil {
			return fmt.Errorf("pattern %q: %w", p, err)
		}
		return nil
	}
	if strings.Contains(p, "*") {
		return fmt.Errorf("%w: pattern %q: want a domain or \"*.\" and a domain", ErrInvalid, p)
	}
	return Validate(p)
}

// Match reports whether one of patterns (each valid, see ValidatePattern)
// allows the valid domain d. A wildcard stands for exactly one label.
func Match(patterns []string, d string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool {
		if rest, ok := strings.CutPrefix(p, "*."); ok {
			first, parent, found := strings.Cut(d, ".")
			return found && first != "" && parent == rest
		}
		return p == d
	})
}

// Config bounds a Checker.
type Config struct {
	// Resolver is the DNS server as HOST:PORT; empty means the system's
	// resolver.
	Resolver string
	// Timeout bounds one Check, both lookups together. 0 means 5 s.
	Timeout time.Duration
	// Rate and Burst bound how many checks start, across all callers:
	// Rate per second on average, Burst at once. 0 means 5 per second
	// and a burst of 20.
	Rate  float64
	Burst int
}

// Checker verifies that custom domains point at their tunnel (see the
// package doc). It is safe for concurrent use and holds no goroutines.
type Checker struct {
	resolver *net.Resolver
	timeout  time.Duration
	limit    *rate.Limiter
}

// NewChecker returns a Checker bounded by cfg.
func NewChecker(cfg Config) *Checker {
	c := &Checker{resolver: net.DefaultResolver, timeout: cfg.Timeout}
	if c.timeout <= 0 {
		c.timeout = 5 * time.Second
	}
	r, b := cfg.Rate, cfg.Burst
	if r <= 0 {
		r = 5
	}
	if b <= 0 {
		b = 20
	}
	c.limit = rate.NewLimiter(rate.Limit(r), b)
	if cfg.Resolver != "" {
		addr := cfg.Resolver
		c.resolver = &net.Resolver{
			PreferGo: true,
			Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		}
	}
	return c
}

// Check reports whether DNS points domain at the tunnel whose public host
// is target (NAME.DOMAIN) and whose token is labelled label: nil if so,
// an error wrapping ErrNotPointing if DNS answered and neither record
// points here, ErrLookupFailed if a lookup whose answer could have
// verified the domain failed (timeout, SERVFAIL, refused, network), ErrBusy
// if the rate bound refused the check. Only an answer counts as "no such
// record": a lookup that failed never wraps ErrNotPointing.
func (c *Checker) Check(ctx context.Context, domain, target, label string) error {
	if !c.limit.Allow() {
		return fmt.Errorf("domain %s: %w", domain, ErrBusy)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	cname, cerr := c.resolver.LookupCNAME(ctx, domain+".")
	if cerr == nil && sameName(cname, target) {
		return nil
	}
	txts, terr := c.resolver.LookupTXT(ctx, "_tunnel."+domain+".")
	if terr == nil && label != "" && slices.Contains(txts, label) {
		return nil
	}
	// The TXT record cannot verify a token without a label, so only its
	// answer matters when there is one.
	failed := cerr
	if failed == nil || answered(failed) {
		failed = nil
		if label != "" && terr != nil && !answered(terr) {
			failed = terr
		}
	}
	if failed != nil {
		if ctx.Err() != nil || isTimeout(failed) {
			return fmt.Errorf("domain %s: %w: DNS lookups took longer than %v", domain, ErrLookupFailed, c.timeout)
		}
		return fmt.Errorf("domain %s: %w: %v", domain, ErrLookupFailed, failed)
	}
	return fmt.Errorf("domain %s: %w: want a CNAME record to %s or a TXT record at _tunnel.%s holding %q",
		domain, ErrNotPointing, target, domain, label)
}

// sameName compares two DNS names without case and trailing dot.
func sameName(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}

// answered reports whether a lookup's err is DNS's answer that the record
// does not exist (NXDOMAIN, or the name without a record of the type),
// rather than a failure to get an answer.
//
// A "lame referral" counts as an answer too: a NOERROR reply with no
// records from a server that neither is authoritative nor recurses. It is
// how such a server (pebble-challtestsrv, which the end-to-end tests use as
// --dns-resolver, or an authoritative server that forgets its AA bit) says
// it has no record, not a transient failure, so retrying would not change
// it. Go has no sentinel for it (net's errLameReferral is unexported), so
// this is the one place that reads a DNS error's text.
func answered(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && (de.IsNotFound || !de.IsTimeout && !de.IsTemporary && de.Err == "lame referral")
}

// isTimeout reports whether err is a DNS lookup that ran out of time: the
// resolver's own deadline, set from the context's, may fire just before
// the context notices.
func isTimeout(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsTimeout
}
