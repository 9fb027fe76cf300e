package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/domain"
)

// TestProcess_TokenAddDomains: "tunneld token add --domain" (repeated, or
// TUNNELD_TOKEN_DOMAINS comma-separated) writes the custom domains a token
// may claim into the tokens file, and refuses an invalid one without
// touching the file.
func TestProcess_TokenAddDomains(t *testing.T) {
	tunneldBin, _ := binaries(t)
	tokensFile := filepath.Join(t.TempDir(), "tokens.json")
	env := []string{"TUNNELD_TOKENS_FILE=" + tokensFile}

	if code, _, stderr := runToEnd(t, tunneldBin, env, "token", "add", "--label", "flags",
		"--domain", "wiki.example.org", "--domain", "*.apps.example.org"); code != 0 {
		t.Fatalf("token add --domain: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runToEnd(t, tunneldBin, append(env, "TUNNELD_TOKEN_DOMAINS=a.example.org,b.example.org"),
		"token", "add", "--label", "env"); code != 0 {
		t.Fatalf("token add with TUNNELD_TOKEN_DOMAINS: exit %d: %s", code, stderr)
	}
	before, err := os.ReadFile(tokensFile)
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runToEnd(t, tunneldBin, env, "token", "add", "--label", "bad", "--domain", "*.org")
	if code != 1 || !strings.Contains(stderr, "domains:") {
		t.Fatalf("token add --domain '*.org': exit %d, stderr:\n%s\nwant exit 1 naming domains", code, stderr)
	}
	after, err := os.ReadFile(tokensFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Fatalf("refused token add changed the file:\n%s", after)
	}

	var file struct {
		Tokens []struct {
			Label   string   `json:"label"`
			Domains []string `json:"domains"`
		} `json:"tokens"`
	}
	if err := json.Unmarshal(after, &file); err != nil {
		t.Fatalf("tokens file: %v\n%s", err, after)
	}
	want := map[string][]string{
		"flags": {"wiki.example.org", "*.apps.example.org"},
		"env":   {"a.example.org", "b.example.org"},
	}
	if len(file.Tokens) != len(want) {
		t.Fatalf("tokens file has %d entries, want %d:\n%s", len(file.Tokens), len(want), after)
	}
	for _, e := range file.Tokens {
		if !slices.Equal(e.Domains, want[e.Label]) {
			t.Errorf("entry %q: domains %q, want %q", e.Label, e.Domains, want[e.Label])
		}
	}
}

// TestDomainCheck_ChallTestSrv runs pkg/domain's DNS check against
// pebble-challtestsrv, the DNS server the ACME tests use: records created
// and removed through its management API, as an owner edits a zone, are
// seen by the next check.
func TestDomainCheck_ChallTestSrv(t *testing.T) {
	_, challBin := pebbleBinaries(t)
	dns := "127.0.0.1:" + strconv.Itoa(freePort(t))
	mgmt := "127.0.0.1:" + strconv.Itoa(freePort(t))
	start(t, challBin, nil, "-dnsserver", dns, "-management", mgmt,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	waitListening(t, mgmt)
	waitDNS(t, dns)

	post := func(path string, body map[string]string) {
		t.Helper()
		b, _ := json.Marshal(body)
		resp, err := http.Post("http://"+mgmt+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", path, resp.StatusCode)
		}
	}
	c := domain.NewChecker(domain.Config{Resolver: dns})
	ctx := context.Background()
	check := func(d string) error { return c.Check(ctx, d, "wiki.tunnel.test", "pi") }

	// challtestsrv answers A queries for any name (-defaultIPv4): a
	// domain that resolves but is no CNAME to the tunnel is refused.
	if err := check("wiki.example.org"); !errors.Is(err, domain.ErrNotPointing) {
		t.Fatalf("before any record: got %v, want ErrNotPointing", err)
	}
	post("/set-cname", map[string]string{"host": "wiki.example.org", "target": "wiki.tunnel.test"})
	if err := check("wiki.example.org"); err != nil {
		t.Fatalf("with the CNAME: %v", err)
	}
	post("/clear-cname", map[string]string{"host": "wiki.example.org"})
	if err := check("wiki.example.org"); !errors.Is(err, domain.ErrNotPointing) {
		t.Fatalf("CNAME removed: got %v, want ErrNotPointing", err)
	}

	post("/set-txt", map[string]string{"host": "_tunnel.example.org", "value": "someone-else"})
	if err := check("example.org"); !errors.Is(err, domain.ErrNotPointing) {
		t.Fatalf("TXT of another label: got %v, want ErrNotPointing", err)
	}
	post("/set-txt", map[string]string{"host": "_tunnel.example.org", "value": "pi"})
	if err := check("example.org"); err != nil {
		t.Fatalf("with the TXT: %v", err)
	}
	post("/clear-txt", map[string]string{"host": "_tunnel.example.org"})
	if err := check("example.org"); !errors.Is(err, domain.ErrNotPointing) {
		t.Fatalf("TXT removed: got %v, want ErrNotPointing", err)
	}
}

// waitDNS asks the DNS server at addr over UDP, the way the checker does,
// until it answers: challtestsrv binds its UDP and TCP sides separately.
func waitDNS(t *testing.T, addr string) {
	t.Helper()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
	settles(t, "DNS server "+addr+" answering over UDP", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := r.LookupHost(ctx, "ready.example.")
		return err == nil, fmt.Sprint(err)
	})
}
