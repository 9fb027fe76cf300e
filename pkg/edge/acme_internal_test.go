package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/certs"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// acmeServer is a Server for tunnel.test with ACME against a directory
// nobody answers (orders fail on the network, after the budget has had its
// say), its registry holding names for hold, and its log to the test and
// to logs if given. perOwner 0 is the default budget.
func acmeServer(t *testing.T, hold time.Duration, perOwner int, logs io.Writer) (*Server, *MemoryRegistry, *certs.ACMEConfig) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Domain = "tunnel.test"
	cfg.AllowAnonymous = true
	cfg.ACME = &certs.ACMEConfig{CacheDir: filepath.Join(t.TempDir(), "cache"), DirectoryURL: "https://127.0.0.1:1/dir", OrdersPerOwnerPerWeek: perOwner}
	reg := NewMemoryRegistry(hold)
	cfg.Registry = reg
	var w io.Writer = zerolog.NewTestWriter(t)
	if logs != nil {
		w = zerolog.MultiLevelWriter(w, logs)
	}
	cfg.Logger = zerolog.New(w)
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, reg, cfg.ACME
}

func TestServer_HostPolicy(t *testing.T) {
	s, reg, acme := acmeServer(t, time.Minute, 0, nil)
	if fi, err := os.Stat(acme.CacheDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir: %v, %v; want created 0700", fi, err)
	}
	live := &Session{ID: "1", Owner: "a"}
	if _, err := reg.Claim(live, []string{"wiki"}); err != nil {
		t.Fatal(err)
	}
	away := &Session{ID: "2", Owner: "b"}
	if _, err := reg.Claim(away, []string{"blog"}); err != nil {
		t.Fatal(err)
	}
	reg.Release(away) // on hold for its owner
	// TCP and TLS tunnels never get a certificate, live or on hold.
	passthrough := &Session{ID: "3", Owner: "c", Names: []string{"secure", "pi-ssh"}, Kinds: []string{proto.KindTLS, proto.KindTCP}}
	if _, err := reg.Claim(passthrough, passthrough.Names); err != nil {
		t.Fatal(err)
	}
	heldTLS := &Session{ID: "4", Owner: "d", Names: []string{"vault"}, Kinds: []string{proto.KindTLS}}
	if _, err := reg.Claim(heldTLS, heldTLS.Names); err != nil {
		t.Fatal(err)
	}
	reg.Release(heldTLS)
	// Custom domains: allowed while claimed live, never on hold nor once
	// dropped (ReleaseName), and never one nobody claimed.
	withDomains := &Session{ID: "5", Owner: "e", Names: []string{"docs"}, domains: map[string]string{
		"docs.example.org": "docs", "gone.example.org": "docs"}}
	if _, err := reg.Claim(withDomains, []string{"docs", "docs.example.org", "gone.example.org"}); err != nil {
		t.Fatal(err)
	}
	reg.ReleaseName(withDomains, "gone.example.org")
	awayDomain := &Session{ID: "6", Owner: "f", Names: []string{"shop"}, domains: map[string]string{"shop.example.org": "shop"}}
	if _, err := reg.Claim(awayDomain, []string{"shop", "shop.example.org"}); err != nil {
		t.Fatal(err)
	}
	reg.Release(awayDomain)

	for _, tt := range []struct {
		host string
		ok   bool
	}{
		{"tunnel.test", true},
		{"wiki.tunnel.test", true},
		{"wiki.tunnel.test:5002", true}, // HTTP-01 on a non-80 port passes the Host with its port
		{"blog.tunnel.test", true},
		{"free.tunnel.test", false},
		{"secure.tunnel.test", false},
		{"pi-ssh.tunnel.test", false},
		{"vault.tunnel.test", false},
		{"a.wiki.tunnel.test", false},
		{"example.com", false},
		{"127.0.0.1", false},
		{"docs.example.org", true},
		{"DOCS.example.org.:5002", true},
		{"gone.example.org", false},
		{"shop.example.org", false},
		{"free.example.org", false},
	} {
		err := s.hostPolicy(context.Background(), tt.host)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, certs.ErrNotServed)) {
			t.Errorf("hostPolicy(%q): got %v, want allowed %v", tt.host, err, tt.ok)
		}
	}
	if !s.noteRefused("x.tunnel.test") || s.noteRefused("x.tunnel.test") {
		t.Error("noteRefused: want true once, then false")
	}
}

// TestServer_ACMEOrderBudget: certificates are ordered for at most 20 names
// of one owner and 40 in all per week (the defaults); past that the order is
// refused before the CA is contacted, with one log line per budget and a
// count in tunneld_rate_limited_total. The CA here is unreachable, so an
// allowed order fails on the network instead: what matters is which fail
// for the budget.
func TestServer_ACMEOrderBudget(t *testing.T) {
	var logs bytes.Buffer
	s, reg, _ := acmeServer(t, time.Minute, 0, &logs)
	for _, owner := range []string{"a", "b", "c"} {
		sess := &Session{ID: owner, Owner: owner}
		var names []string
		for i := range 25 {
			names = append(names, fmt.Sprintf("%s%d", owner, i))
		}
		if _, err := reg.Claim(sess, names); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(name string) bool {
		t.Helper()
		_, err := s.getCertificate(&tls.ClientHelloInfo{ServerName: name + ".tunnel.test",
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}})
		if err == nil {
			t.Fatalf("%s: got a certificate from an unreachable CA", name)
		}
		return errors.Is(err, certs.ErrOrderBudget)
	}
	for _, tt := range []struct {
		owner    string
		from, to int // names owner+from .. owner+to-1
		refused  bool
	}{
		{"a", 0, 20, false}, // a's 20
		{"a", 20, 22, true},
		{"a", 0, 1, false},  // counted already (refused for a retry too soon, not for the budget)
		{"b", 0, 20, false}, // 40 in all
		{"b", 20, 21, true},
		{"c", 0, 1, true},
	} {
		for i := tt.from; i < tt.to; i++ {
			name := fmt.Sprintf("%s%d", tt.owner, i)
			if got := refused(name); got != tt.refused {
				t.Errorf("%s: refused for the budget %v, want %v", name, got, tt.refused)
			}
		}
	}
	if _, err := s.getCertificate(&tls.ClientHelloInfo{ServerName: "tunnel.test"}); err == nil || strings.Contains(err.Error(), "budget") {
		t.Errorf("apex: got %v, want a network error, not the budget", err)
	}
	if n := strings.Count(logs.String(), "weekly ACME order budget is spent"); n != 2 {
		t.Errorf("budget refusals logged %d times, want 2 (owner a, the server)", n)
	}
	fams, err := s.Metrics().Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "tunneld_rate_limited_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			counts[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if counts["acme_order_owner"] != 2 || counts["acme_order_server"] != 2 {
		t.Errorf("rate_limited_total: got %v, want acme_order_owner 2, acme_order_server 2", counts)
	}
}

// TestServer_ACMEOrderBudgetAnonymous: an anonymous client's names count
// against its source address, whatever owner key it sends. (The window,
// the retry and the cache are package certs' to test.)
func TestServer_ACMEOrderBudgetAnonymous(t *testing.T) {
	s, reg, _ := acmeServer(t, time.Hour, 1, nil)
	for i, key := range []string{"anon:key:1", "anon:key:2"} {
		sess := &Session{ID: key, Owner: key, account: "anon:192.0.2.1/32"}
		if _, err := reg.Claim(sess, []string{fmt.Sprintf("anon%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name    string
		refused bool
	}{
		{"anon0", false},
		{"anon1", true}, // the address's one
	} {
		_, err := s.getCertificate(&tls.ClientHelloInfo{ServerName: tt.name + ".tunnel.test",
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}})
		if got := errors.Is(err, certs.ErrOrderBudget); got != tt.refused {
			t.Errorf("%s: got %v, want refused for the budget %v", tt.name, err, tt.refused)
		}
	}
}
