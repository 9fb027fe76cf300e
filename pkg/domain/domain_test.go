package domain

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/internal/testdns"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestChecker_CNAME(t *testing.T) {
	dns := testdns.Start(t)
	c := NewChecker(Config{Resolver: dns.Addr()})
	ctx := context.Background()

	err := c.Check(ctx, "wiki.example.org", "wiki.tunnel.test", "pi")
	if !errors.Is(err, ErrNotPointing) {
		t.Fatalf("before the record: got %v, want ErrNotPointing", err)
	}
	dns.SetCNAME("wiki.example.org", "WIKI.tunnel.test")
	if err := c.Check(ctx, "wiki.example.org", "wiki.tunnel.test", "pi"); err != nil {
		t.Fatalf("with the CNAME: %v", err)
	}
	if err := c.Check(ctx, "wiki.example.org", "other.tunnel.test", "pi"); !errors.Is(err, ErrNotPointing) {
		t.Fatalf("CNAME to another tunnel: got %v, want ErrNotPointing", err)
	}
	dns.Clear("wiki.example.org")
	if err := c.Check(ctx, "wiki.example.org", "wiki.tunnel.test", "pi"); !errors.Is(err, ErrNotPointing) {
		t.Fatalf("record removed: got %v, want ErrNotPointing", err)
	}
}

func TestChecker_TXT(t *testing.T) {
	dns := testdns.Start(t)
	c := NewChecker(Config{Resolver: dns.Addr()})
	ctx := context.Background()

	dns.SetTXT("_tunnel.example.org", "someone-else")
	err := c.Check(ctx, "example.org", "wiki.tunnel.test", "pi")
	if !errors.Is(err, ErrNotPointing) {
		t.Fatalf("TXT of another label: got %v, want ErrNotPointing", err)
	}
	if !strings.Contains(err.Error(), `_tunnel.example.org holding "pi"`) {
		t.Errorf("error does not say which record to create: %v", err)
	}
	dns.SetTXT("_tunnel.example.org", "v=spf1", "pi")
	if err := c.Check(ctx, "example.org", "wiki.tunnel.test", "pi"); err != nil {
		t.Fatalf("with the TXT: %v", err)
	}
	if err := c.Check(ctx, "example.org", "wiki.tunnel.test", ""); !errors.Is(err, ErrNotPointing) {
		t.Fatalf("empty label (anonymous) matched a TXT record: %v", err)
	}
}

// TestChecker_LookupFailed: a lookup DNS could not answer is
// ErrLookupFailed, never ErrNotPointing, unless the other record verifies
// the domain or could not have (no label).
func TestChecker_LookupFailed(t *testing.T) {
	dns := testdns.Start(t)
	c := NewChecker(Config{Resolver: dns.Addr()})
	ctx := context.Background()
	notPointing := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrNotPointing) || errors.Is(err, ErrLookupFailed) {
			t.Fatalf("%s: got %v, want ErrNotPointing only", what, err)
		}
	}
	failed := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrLookupFailed) || errors.Is(err, ErrNotPointing) {
			t.Fatalf("%s: got %v, want ErrLookupFailed only", what, err)
		}
	}

	dns.SetCNAME("wiki.example.org", "wiki.tunnel.test")
	dns.SetFailure("wiki.example.org", testdns.ServFail)
	failed("CNAME SERVFAIL", c.Check(ctx, "wiki.example.org", "wiki.tunnel.test", "pi"))
	dns.SetTXT("_tunnel.wiki.example.org", "pi")
	if err := c.Check(ctx, "wiki.example.org", "wiki.tunnel.test", "pi"); err != nil {
		t.Fatalf("CNAME SERVFAIL, TXT holding the label: %v", err)
	}
	dns.SetFailure("wiki.example.org", testdns.Answer)
	dns.SetCNAME("wiki.example.org", "elsewhere.example.net")
	dns.SetFailure("_tunnel.wiki.example.org", testdns.ServFail)
	failed("CNAME elsewhere, TXT SERVFAIL", c.Check(ctx, "wiki.example.org", "wiki.tunnel.test", "pi"))
	notPointing("CNAME elsewhere, TXT SERVFAIL, no label", c.Check(ctx, "wiki.example.org", "wiki.tunnel.test", ""))
	dns.SetFailure("_tunnel.wiki.example.org", testdns.Answer)
	dns.Clear("_tunnel.wiki.example.org")
	notPointing("CNAME elsewhere, no TXT", c.Check(ctx, "wiki.example.org", "wiki.tunnel.test", "pi"))
	dns.Clear("wiki.example.org")
	notPointing("no records", c.Check(ctx, "wiki.example.org", "wiki.tunnel.test", "pi"))
	// A server that neither is authoritative nor recurses saying it has
	// nothing (pebble-challtestsrv) has answered.
	dns.SetFailure("wiki.example.org", testdns.Lame)
	dns.SetFailure("_tunnel.wiki.example.org", testdns.Lame)
	notPointing("lame referral", c.Check(ctx, "wiki.example.org", "wiki.tunnel.test", "pi"))

	// A resolver that refuses connections (nothing listens there).
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	gone := ln.LocalAddr().String()
	ln.Close()
	c = NewChecker(Config{Resolver: gone, Timeout: time.Second})
	failed("resolver unreachable", c.Check(ctx, "wiki.example.org", "wiki.tunnel.test", "pi"))
}

func TestChecker_RateBound(t *testing.T) {
	dns := testdns.Start(t)
	dns.SetCNAME("wiki.example.org", "wiki.tunnel.test")
	// A rate so low that no token comes back during the test.
	c := NewChecker(Config{Resolver: dns.Addr(), Rate: 0.0001, Burst: 2})
	ctx := context.Background()
	for i := range 2 {
		if err := c.Check(ctx, "wiki.example.org", "wiki.tunnel.test", "pi"); err != nil {
			t.Fatalf("check %d within the burst: %v", i, err)
		}
	}
	before := dns.Queries()
	if err := c.Check(ctx, "wiki.example.org", "wiki.tunnel.test", "pi"); !errors.Is(err, ErrBusy) {
		t.Fatalf("check past the burst: got %v, want ErrBusy", err)
	}
	if got := dns.Queries(); got != before {
		t.Errorf("refused check still asked DNS: %d queries, want %d", got, before)
	}
}

func TestChecker_TimeoutBound(t *testing.T) {
	// A server that reads and never answers.
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	c := NewChecker(Config{Resolver: silent.LocalAddr().String(), Timeout: 200 * time.Millisecond})
	start := time.Now()
	err = c.Check(context.Background(), "wiki.example.org", "wiki.tunnel.test", "pi")
	if !errors.Is(err, ErrLookupFailed) || errors.Is(err, ErrNotPointing) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("got %v, want ErrLookupFailed (not ErrNotPointing) after the timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("check took %v with a 200ms timeout", d)
	}
}

func TestValidate(t *testing.T) {
	for _, d := range []string{"wiki.example.org", "a.b", "xn--bcher-kva.example", "1.example.org", strings.Repeat("a", 63) + ".org"} {
		if err := Validate(d); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", d, err)
		}
	}
	for _, d := range []string{"", "org", "Wiki.example.org", "wiki.example.org.", "-a.example.org", "a-.example.org",
		"a..org", "1.2.3.4", "a_b.example.org", "*.example.org", strings.Repeat("a", 64) + ".org",
		strings.Repeat("a.", 127) + "org"} {
		if err := Validate(d); !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%q) = %v, want ErrInvalid", d, err)
		}
	}
}

func TestValidatePattern(t *testing.T) {
	for _, p := range []string{"wiki.example.org", "*.apps.example.org"} {
		if err := ValidatePattern(p); err != nil {
			t.Errorf("ValidatePattern(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"*", "*.org", "*example.org", "a.*.example.org", "*.*.example.org", "wiki*.example.org"} {
		if err := ValidatePattern(p); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidatePattern(%q) = %v, want ErrInvalid", p, err)
		}
	}
}

func TestMatch(t *testing.T) {
	patterns := []string{"wiki.example.org", "*.apps.example.org"}
	for d, want := range map[string]bool{
		"wiki.example.org":     true,
		"a.apps.example.org":   true,
		"apps.example.org":     false,
		"a.b.apps.example.org": false,
		"wiki2.example.org":    false,
		"example.org":          false,
		"a.apps.example.org.x": false,
	} {
		if got := Match(patterns, d); got != want {
			t.Errorf("Match(%q) = %v, want %v", d, got, want)
		}
	}
	if Match(nil, "wiki.example.org") {
		t.Error("no patterns matched a domain")
	}
}
