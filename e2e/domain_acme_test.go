package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// challSet calls pebble-challtestsrv's management API (set-cname,
// clear-cname, set-txt, clear-txt), as an owner edits a zone.
func (pb *pebble) challSet(t *testing.T, path string, body map[string]string) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post("http://"+pb.challMgmt+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %d", path, resp.StatusCode)
	}
}

// addToken runs "tunneld token add" on file with args and returns the
// secret it prints.
func addToken(t *testing.T, file string, args ...string) string {
	t.Helper()
	tunneldBin, _ := binaries(t)
	code, stdout, stderr := runToEnd(t, tunneldBin, []string{"TUNNELD_TOKENS_FILE=" + file}, append([]string{"token", "add"}, args...)...)
	if code != 0 {
		t.Fatalf("token add %q: exit %d: %s", args, code, stderr)
	}
	return strings.TrimSpace(stdout)
}

// TestACME_CustomDomain runs the whole custom domain story with the built
// binaries against Pebble, whose DNS server (pebble-challtestsrv) is also
// the one tunneld checks records with: refused until the CNAME exists,
// then served with a certificate Pebble issued for the domain; a TXT
// record instead of the CNAME; the refusals of a token without the domain
// and of another owner; no order for a domain nobody serves; and the
// re-check that stops serving a domain whose record is gone.
func TestACME_CustomDomain(t *testing.T) {
	tlsPort := freePort(t)
	pb := startPebble(t, freePort(t), tlsPort)
	addr := "127.0.0.1:" + strconv.Itoa(tlsPort)
	port := strconv.Itoa(tlsPort)
	tokens := filepath.Join(t.TempDir(), "tokens.json")
	pi := addToken(t, tokens, "--label", "pi", "--name", "*", "--domain", "wiki.example.org", "--domain", "*.apps.example.org")
	other := addToken(t, tokens, "--label", "other", "--name", "*", "--domain", "wiki.example.org")
	tunneld := acmeTunneld(t, pb, addr, "", filepath.Join(t.TempDir(), "autocert"),
		"--tokens-file", tokens, "--dns-resolver", pb.dns, "--domain-recheck", "200ms")
	backendPort := newBackend(t, "hello custom domain")

	// Before the record exists: refused, retried, and the log says which
	// record to create.
	client := acmeClient(t, pb.root, tlsPort, []string{"TUNNEL_TOKEN=" + pi},
		"--retry-max", "1s", "http", "--name", "wiki", "--domain", "wiki.example.org", backendPort)
	client.waitLine(client.stderr, "the retried refusal", func(l string) bool {
		return strings.Contains(l, "connect failed; retrying") && strings.Contains(l, "domain_not_verified") &&
			strings.Contains(l, "CNAME record to wiki."+acmeDomain)
	})
	if n := countLines(tunneld, "tunnel registered"); n != 0 {
		t.Fatalf("tunnel registered %d times before its domain's record existed", n)
	}

	pb.challSet(t, "/set-cname", map[string]string{"host": "wiki.example.org", "target": "wiki." + acmeDomain})
	nameURL := client.waitLine(client.stdout, "the tunnel's URL", isURL)
	domainURL := client.waitLineFrom(client.stdout, 1, "the custom domain's URL", isURL)
	if want := "https://wiki." + acmeDomain + ":" + port; nameURL != want {
		t.Fatalf("tunnel URL %q, want %q", nameURL, want)
	}
	if want := "https://wiki.example.org:" + port; domainURL != want {
		t.Fatalf("custom domain URL %q, want %q", domainURL, want)
	}
	ordersBefore := pb.orders()
	if got, want := fetchWithin(t, acmeWait, pb.root, addr, domainURL+"/page"), "hello custom domain /page\n"; got != want {
		t.Fatalf("custom domain: got %q, want %q", got, want)
	}
	leaf, err := handshake(t, pb.root, addr, "wiki.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("wiki.example.org"); err != nil || pb.orders() != ordersBefore+1 {
		t.Fatalf("certificate for wiki.example.org: %v; %d orders, want %d", err, pb.orders(), ordersBefore+1)
	}

	t.Run("txt record", func(t *testing.T) {
		c := acmeClient(t, pb.root, tlsPort, []string{"TUNNEL_TOKEN=" + pi},
			"--retry-max", "1s", "http", "--domain", "a.apps.example.org", backendPort)
		c.waitLine(c.stderr, "the retried refusal", func(l string) bool {
			return strings.Contains(l, "domain_not_verified") && strings.Contains(l, `_tunnel.a.apps.example.org holding \"pi\"`)
		})
		pb.challSet(t, "/set-txt", map[string]string{"host": "_tunnel.a.apps.example.org", "value": "pi"})
		c.waitLine(c.stdout, "the tunnel's URL", isURL)
		u := c.waitLineFrom(c.stdout, 1, "the custom domain's URL", isURL)
		if got, want := fetchWithin(t, acmeWait, pb.root, addr, u+"/txt"), "hello custom domain /txt\n"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})

	t.Run("token without the domain", func(t *testing.T) {
		c := acmeClient(t, pb.root, tlsPort, []string{"TUNNEL_TOKEN=s3cret"}, "http", "--domain", "wiki.example.org", backendPort)
		if code := c.exitCode(); code != 3 {
			t.Fatalf("exit code %d, want 3 (refused for good)", code)
		}
		if s := c.stderr.String(); !strings.Contains(s, `server refused: domain_not_allowed: this token may not claim the domain \"wiki.example.org\"`) &&
			!strings.Contains(s, `server refused: domain_not_allowed: this token may not claim the domain "wiki.example.org"`) {
			t.Fatalf("stderr does not say why:\n%s", s)
		}
	})

	t.Run("domain under another owner", func(t *testing.T) {
		// Its record could point anywhere: the claim, like a name's, is
		// the first owner's while it serves.
		c := acmeClient(t, pb.root, tlsPort, []string{"TUNNEL_TOKEN=" + other},
			"--retry-max", "1s", "http", "--name", "wiki", "--domain", "wiki.example.org", backendPort)
		c.waitLine(c.stderr, "the refusal", func(l string) bool {
			return strings.Contains(l, "connect failed; retrying") && strings.Contains(l, "name_taken")
		})
		c.stop()
		if got, want := fetchWithin(t, acmeWait, pb.root, addr, domainURL+"/still"), "hello custom domain /still\n"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})

	t.Run("no order for a domain nobody serves", func(t *testing.T) {
		before := pb.orders()
		if _, err := handshake(t, pb.root, addr, "b.apps.example.org"); err == nil {
			t.Fatal("handshake for an unclaimed custom domain succeeded")
		}
		if n := pb.orders(); n != before {
			t.Fatalf("Pebble saw %d orders, want still %d", n, before)
		}
	})

	t.Run("recheck drops a domain whose record is gone", func(t *testing.T) {
		pb.challSet(t, "/clear-cname", map[string]string{"host": "wiki.example.org"})
		tunneld.waitLine(tunneld.stderr, "the re-check's log line", func(l string) bool {
			return strings.Contains(l, "custom domain no longer points at its tunnel") && strings.Contains(l, "wiki.example.org")
		})
		// No longer served, not even its certificate (the host policy
		// allows a domain only while it is claimed): the handshake fails.
		if _, err := handshake(t, pb.root, addr, "wiki.example.org"); err == nil {
			t.Fatal("handshake for the dropped domain succeeded")
		}
		if got, want := fetchWithin(t, acmeWait, pb.root, addr, nameURL+"/name"), "hello custom domain /name\n"; got != want {
			t.Fatalf("the tunnel's name after its domain was dropped: got %q, want %q", got, want)
		}
	})
}
