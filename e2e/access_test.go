package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testhttp"
)

// TestProcess_VisitorAccess: the built tunnel and tunneld with issue 18's
// rules: a token written by "token add --access require", and a server that
// requires a rule of anonymous clients, refuse a tunnel without one (exit 3); basic auth from the environment asks for a
// password, lets the right one through with the Authorization header
// stripped, and refuses a wrong one; an address rule refuses the visitor
// with 403; /api/tunnels shows the rules but no hash.
func TestProcess_VisitorAccess(t *testing.T) {
	tunneldBin, tunnelBin := binaries(t)
	tokens := filepath.Join(t.TempDir(), "tokens.json")
	if code, _, stderr := runToEnd(t, tunneldBin, nil, "token", "add", "--tokens-file", tokens, "--label", "x", "--access", "maybe"); code != 1 ||
		!strings.Contains(stderr, `--access "maybe": want require or forbid`) {
		t.Fatalf("token add --access maybe: exit %d, stderr:\n%s\nwant exit 1 naming the choices", code, stderr)
	}
	code, strict, stderr := runToEnd(t, tunneldBin, nil, "token", "add", "--tokens-file", tokens, "--label", "strict", "--name", "*", "--access", "require")
	if code != 0 {
		t.Fatalf("token add --access require: exit %d, stderr:\n%s", code, stderr)
	}
	strict = strings.TrimSpace(strict)
	tunneld, addr, certs := startDevTunneld(t, nil, "--require-access-anonymous", "--admin-listen", "127.0.0.1:0", "--tokens-file", tokens)
	_, port, _ := net.SplitHostPort(addr)
	admin := adminAddr(tunneld)

	code, _, stderr = runToEnd(t, tunnelBin, []string{"TUNNEL_TOKEN=" + strict}, "--dev", "--server", addr, "--certs-dir", certs, "http", "--name", "mine", "9")
	if code != 3 || !strings.Contains(stderr, "this token requires an access rule on every http tunnel") {
		t.Fatalf("a tunnel without a rule, with a token that requires one: exit %d, stderr:\n%s\nwant exit 3", code, stderr)
	}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "service %s; authorization: %q", r.URL.Path, r.Header.Get("Authorization"))
	}))
	t.Cleanup(backend.Close)
	_, backendPort, _ := net.SplitHostPort(backend.Listener.Addr().String())

	code, _, stderr = runToEnd(t, tunnelBin, nil, "--dev", "--server", addr, "--certs-dir", certs, "http", "--name", "open", backendPort)
	if code != 3 || !strings.Contains(stderr, "this server requires an access rule on every http tunnel") {
		t.Fatalf("a tunnel without a rule: exit %d, stderr:\n%s\nwant exit 3 saying a rule is required", code, stderr)
	}

	client, url := startDevClient(t, []string{"TUNNEL_BASIC_AUTH=ann:correct horse, battery"}, addr, certs,
		"http", "--allow-cidr", "127.0.0.0/8", "--name", "wiki", backendPort)
	if want := "https://wiki.localhost:" + port; url != want {
		t.Fatalf("tunnel printed %q, want %q", url, want)
	}
	ready := client.waitLine(client.stderr, "the tunnel ready log line", func(l string) bool { return strings.Contains(l, `"tunnel ready"`) })
	if !strings.Contains(ready, `"access":"basic auth (ann); allow 127.0.0.0/8"`) || strings.Contains(ready, "battery") {
		t.Errorf("tunnel ready: got %s, want the rules named, without the password", ready)
	}
	tr := visitorTransport(t, filepath.Join(certs, "ca.pem"), addr)
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: waitTimeout}
	get := func(user, password string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url+"/page", nil)
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	resp, body := get("", "")
	if want := `Basic realm="wiki.localhost:` + port + `", charset="UTF-8"`; resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != want {
		t.Fatalf("no password: got %d, WWW-Authenticate %q (%q); want 401 with %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body, want)
	}
	if resp, body := get("ann", "correct horse"); resp.StatusCode != 401 {
		t.Fatalf("a wrong password: got %d %q, want 401", resp.StatusCode, body)
	}
	if resp, body := get("ann", "correct horse, battery"); resp.StatusCode != 200 || body != `service /page; authorization: ""` {
		t.Fatalf("the right password: got %d %q, want 200 with no Authorization reaching the service", resp.StatusCode, body)
	}

	_, denied := startDevClient(t, nil, addr, certs, "http", "--deny-cidr", "127.0.0.1", "--name", "private", backendPort)
	dresp, dbody := testhttp.Get(t, hc, denied+"/")
	if dresp != 403 || !strings.Contains(dbody, "Your address may not visit private.localhost") {
		t.Fatalf("a denied address: got %d %q, want 403", dresp, dbody)
	}

	var status struct {
		Tunnels []struct {
			Name   string `json:"name"`
			Access *struct {
				Users []string `json:"basic_auth_users"`
				Allow []string `json:"allow_cidr"`
				Deny  []string `json:"deny_cidr"`
			} `json:"access"`
		} `json:"tunnels"`
	}
	acode, abody := testhttp.Get(t, &http.Client{Timeout: 10 * time.Second}, "http://"+admin+"/api/tunnels")
	if acode != 200 || json.Unmarshal([]byte(abody), &status) != nil {
		t.Fatalf("/api/tunnels: got %d %q", acode, abody)
	}
	if strings.Contains(abody, "$2a$") || strings.Contains(abody, "battery") {
		t.Errorf("/api/tunnels shows a hash or a password: %s", abody)
	}
	got := map[string]string{}
	for _, tn := range status.Tunnels {
		if tn.Access != nil {
			got[tn.Name] = fmt.Sprint(tn.Access.Users, tn.Access.Allow, tn.Access.Deny)
		}
	}
	if want := map[string]string{"wiki": "[ann] [127.0.0.0/8] []", "private": "[] [] [127.0.0.1/32]"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("/api/tunnels access: got %v, want %v", got, want)
	}
}
