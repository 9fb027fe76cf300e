package edge_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/internal/testdns"
	"github.com/tunnelhq/tunnel/internal/testtls"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/certs"
	customdomain "github.com/tunnelhq/tunnel/pkg/domain"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// The tokens of the custom domain tests: dora may claim wiki.example.org
// and any one label under apps.example.org, as may eve (another owner).
const (
	doraToken = "tk_dora"
	eveToken  = "tk_eve"
)

// domainEdge is an edge whose tokens may claim custom domains, checked
// against dns, with a certificate for the tunnel domain and the custom
// domains of the tests; hc reaches it with any Host and SNI. log receives
// each message the edge logs about custom domains.
type domainEdge struct {
	*harness
	dns *testdns.Server
	hc  *http.Client
	log chan string
}

func startDomainEdge(t *testing.T, mod func(*edge.Config)) *domainEdge {
	t.Helper()
	dns := testdns.Start(t)
	tlsCfg, pool := testtls.New(t, domain, "*."+domain, "wiki.example.org", "*.apps.example.org", "127.0.0.1")
	logs := make(chan string, 64)
	h := edgetest.Start(t, func(c *edge.Config) {
		tokens, err := token.New([]token.Entry{
			{Label: "alice", SHA256: token.Hash(aliceToken), Names: []string{"*"}},
			{Label: "dora", SHA256: token.Hash(doraToken), Names: []string{"*"}, Domains: []string{"wiki.example.org", "*.apps.example.org"}},
			{Label: "eve", SHA256: token.Hash(eveToken), Names: []string{"*"}, Domains: []string{"wiki.example.org"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Auth = tokens
		c.TLSConfig = tlsCfg
		c.Domains = customdomain.NewChecker(customdomain.Config{Resolver: dns.Addr(), Timeout: 2 * time.Second, Rate: 1000, Burst: 1000})
		c.OfflineWait = 0
		c.Logger = zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logWatch(logs))).Level(zerolog.InfoLevel)
		if mod != nil {
			mod(c)
		}
	})
	h.Pool = pool
	return &domainEdge{harness: h, dns: dns, hc: dialAll(t, h.Addr, pool), log: logs}
}

// logWatch sends each log line about custom domains; lines beyond the
// buffer that nobody reads are dropped.
type logWatch chan string

func (w logWatch) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "custom domain") {
		select {
		case w <- string(p):
		default:
		}
	}
	return len(p), nil
}

// dialAll is an HTTP/1.1 client that dials addr for every host, trusting
// pool: the Host and the TLS server name are the URL's.
func dialAll(t *testing.T, addr string, pool *x509.CertPool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: pool},
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// headersBackend answers with the Host and X-Forwarded-Host it got.
func headersBackend(t *testing.T) string {
	return edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host=%s xfh=%s", r.Host, r.Header.Get("X-Forwarded-Host"))
	}))
}

func (e *domainEdge) domainURL(d, path string) string {
	return fmt.Sprintf("https://%s:%d%s", d, e.Port, path)
}

func TestEdge_CustomDomainRoutedOnceDNSPoints(t *testing.T) {
	e := startDomainEdge(t, nil)
	backend := headersBackend(t)
	tun := mux.Tunnel{Name: "wiki", Target: backend, Domain: "wiki.example.org"}

	// No record yet: refused, and worth retrying.
	_, err := e.Connect(doraToken, tun)
	wantCode(t, err, proto.CodeDomainNotVerified)
	if proto.CodeDomainNotVerified.Permanent() {
		t.Fatal("domain_not_verified is permanent")
	}
	if !strings.Contains(err.Error(), "CNAME record to wiki."+domain) {
		t.Fatalf("refusal %q does not say which record to create", err)
	}
	// Nothing was claimed by the refused client.
	if resp, body := fetch(t, e.hc, e.URL("wiki", "/"), nil); resp.StatusCode != 404 {
		t.Fatalf("name of a refused client: got %d %q, want 404", resp.StatusCode, body)
	}

	e.dns.SetCNAME("wiki.example.org", "wiki."+domain)
	c, err := e.Connect(doraToken, tun)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("https://wiki.example.org:%d", e.Port)
	if got := c.Welcome.Tunnels[0].DomainURL; got != want {
		t.Fatalf("Welcome domain URL: got %q, want %q", got, want)
	}
	// The domain (any case, trailing dot) and the name both reach the service.
	for _, u := range []string{e.domainURL("wiki.example.org", "/"), e.domainURL("WIKI.Example.org.", "/")} {
		resp, body := fetch(t, e.hc, u, nil)
		wantBody := fmt.Sprintf("host=wiki.example.org:%d xfh=wiki.example.org:%d", e.Port, e.Port)
		if resp.StatusCode != 200 || body != wantBody {
			t.Fatalf("%s: got %d %q, want 200 %q", u, resp.StatusCode, body, wantBody)
		}
	}
	resp, body := fetch(t, e.hc, e.URL("wiki", "/"), nil)
	if wantBody := fmt.Sprintf("host=wiki.%s:%d xfh=wiki.%[1]s:%d", domain, e.Port); resp.StatusCode != 200 || body != wantBody {
		t.Fatalf("tunnel name: got %d %q, want 200 %q", resp.StatusCode, body, wantBody)
	}
	// A domain nobody claimed is still nobody's.
	if resp, body := fetch(t, e.hc, e.domainURL("x.apps.example.org", "/"), nil); resp.StatusCode != 404 {
		t.Fatalf("unclaimed domain: got %d %q, want 404", resp.StatusCode, body)
	}
}

func TestEdge_CustomDomainTXT(t *testing.T) {
	e := startDomainEdge(t, nil)
	// A random name cannot be a CNAME's target: the TXT record with the
	// token's label is the way, and another label's does not count.
	tun := mux.Tunnel{Target: headersBackend(t), Domain: "a.apps.example.org"}
	e.dns.SetTXT("_tunnel.a.apps.example.org", "eve")
	_, err := e.Connect(doraToken, tun)
	wantCode(t, err, proto.CodeDomainNotVerified)
	e.dns.SetTXT("_tunnel.a.apps.example.org", "v=spf1 -all", "dora")
	if _, err := e.Connect(doraToken, tun); err != nil {
		t.Fatal(err)
	}
	if resp, body := fetch(t, e.hc, e.domainURL("a.apps.example.org", "/"), nil); resp.StatusCode != 200 {
		t.Fatalf("got %d %q, want 200", resp.StatusCode, body)
	}
}

func TestEdge_CustomDomainOneClient(t *testing.T) {
	e := startDomainEdge(t, nil)
	e.dns.SetCNAME("wiki.example.org", "wiki."+domain)
	if _, err := e.Connect(doraToken, mux.Tunnel{Name: "wiki", Target: headersBackend(t), Domain: "wiki.example.org"}); err != nil {
		t.Fatal(err)
	}
	// Another owner allowed the same domain, whose record it could not
	// have anyway, cannot take it: the domain is claimed like a name.
	e.dns.SetTXT("_tunnel.wiki.example.org", "eve")
	_, err := e.Connect(eveToken, mux.Tunnel{Name: "evewiki", Target: headersBackend(t), Domain: "wiki.example.org"})
	wantCode(t, err, proto.CodeNameTaken)
	// Nor may one Hello ask for a domain twice.
	_, err = e.Connect(doraToken,
		mux.Tunnel{Name: "one", Target: headersBackend(t), Domain: "b.apps.example.org"},
		mux.Tunnel{Name: "two", Target: headersBackend(t), Domain: "b.apps.example.org"})
	wantCode(t, err, proto.CodeDomainNotAllowed)
	// Nor claim a name under the tunnel domain as a custom domain.
	_, err = e.Connect(doraToken, mux.Tunnel{Name: "x", Target: headersBackend(t), Domain: "wiki." + domain})
	wantCode(t, err, proto.CodeDomainNotAllowed)
}

func TestEdge_CustomDomainAccessRules(t *testing.T) {
	e := startDomainEdge(t, nil)
	e.dns.SetCNAME("wiki.example.org", "wiki."+domain)
	e.dns.SetCNAME("intra.apps.example.org", "intra."+domain)
	addr, conns := countingBackend(t)
	access := &proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: bcryptHash(t, "s3cret pass")}}}
	deny := &proto.Access{DenyCIDR: []string{netip.MustParsePrefix("127.0.0.0/8").String()}}
	if _, err := e.Connect(doraToken,
		mux.Tunnel{Name: "wiki", Target: addr, Access: access, Domain: "wiki.example.org"},
		mux.Tunnel{Name: "intra", Target: addr, Access: deny, Domain: "intra.apps.example.org"}); err != nil {
		t.Fatal(err)
	}
	u := e.domainURL("wiki.example.org", "/")
	resp, body := fetch(t, e.hc, u, nil)
	realm := fmt.Sprintf(`Basic realm="wiki.example.org:%d", charset="UTF-8"`, e.Port)
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != realm {
		t.Fatalf("no password: got %d %q %q, want 401 with realm %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body, realm)
	}
	resp, body = fetch(t, e.hc, u, func(r *http.Request) { r.SetBasicAuth("ann", "wrong") })
	if resp.StatusCode != 401 {
		t.Fatalf("wrong password: got %d %q, want 401", resp.StatusCode, body)
	}
	resp, body = fetch(t, e.hc, e.domainURL("intra.apps.example.org", "/"), nil)
	if resp.StatusCode != 403 {
		t.Fatalf("denied address: got %d %q, want 403", resp.StatusCode, body)
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("refused visitors made the client dial its service %d times, want 0", n)
	}
	resp, body = fetch(t, e.hc, u, func(r *http.Request) { r.SetBasicAuth("ann", "s3cret pass") })
	if resp.StatusCode != 200 || body != "service ok; authorization: none" {
		t.Fatalf("right password: got %d %q, want 200 with the Authorization stripped", resp.StatusCode, body)
	}
}

// waitLog reads the edge's custom domain log lines until one holds msg.
func (e *domainEdge) waitLog(t *testing.T, msg string) {
	t.Helper()
	for !strings.Contains(testwait.Recv(t, e.log, 15*time.Second), msg) {
	}
}

// nameBackend answers with its name.
func nameBackend(t *testing.T, name string) string {
	return edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, name)
	}))
}

// TestEdge_CustomDomainRecheck: the re-check keeps a domain served while
// DNS cannot answer (SERVFAIL, no answer), logging that once, drops it
// once DNS answers that it points elsewhere, serves it again once it
// points back, and leaves it to whoever claimed it meanwhile.
func TestEdge_CustomDomainRecheck(t *testing.T) {
	e := startDomainEdge(t, func(c *edge.Config) { c.DomainRecheck = 20 * time.Millisecond })
	const d = "wiki.example.org"
	e.dns.SetCNAME(d, "wiki."+domain)
	if _, err := e.Connect(doraToken, mux.Tunnel{Name: "wiki", Target: nameBackend(t, "dora"), Domain: d}); err != nil {
		t.Fatal(err)
	}
	want := func(what string, u string, code int, body string) {
		t.Helper()
		resp, got := fetch(t, e.hc, u, nil)
		if resp.StatusCode != code || code == 200 && got != body {
			t.Fatalf("%s: got %d %q, want %d %q", what, resp.StatusCode, got, code, body)
		}
	}
	want("before", e.domainURL(d, "/"), 200, "dora")

	for _, f := range []testdns.Failure{testdns.ServFail, testdns.Silent} {
		e.dns.SetFailure(d, f)
		e.waitLog(t, "custom domain's DNS lookup failed; still served")
		want(fmt.Sprintf("DNS failing (%d)", f), e.domainURL(d, "/"), 200, "dora")
		// Logged once, not at every pass: wait for later passes' questions
		// (each line is written before the next pass asks).
		e.dns.WaitQueries(t, e.dns.Queries()+6, 30*time.Second)
		for len(e.log) > 0 {
			if line := <-e.log; strings.Contains(line, "lookup failed") {
				t.Fatalf("a second line for one failure: %s", line)
			}
		}
		e.dns.SetFailure(d, testdns.Answer)
		e.waitLog(t, "custom domain's DNS lookup answers again")
		want("DNS answering again", e.domainURL(d, "/"), 200, "dora")
	}

	e.dns.Clear(d)
	e.waitLog(t, "custom domain no longer points at its tunnel")
	want("after its record went", e.domainURL(d, "/"), 404, "")
	want("the tunnel's name after its domain went", e.URL("wiki", "/"), 200, "dora")

	e.dns.SetCNAME(d, "wiki."+domain)
	e.waitLog(t, "custom domain points at its tunnel again; served again")
	want("record back", e.domainURL(d, "/"), 200, "dora")

	// Dropped at once, not on hold: whoever the domain points at now may
	// claim it, and keeps it when it points back at the first tunnel.
	e.dns.Clear(d)
	e.waitLog(t, "custom domain no longer points at its tunnel")
	e.dns.SetTXT("_tunnel."+d, "eve")
	if _, err := e.Connect(eveToken, mux.Tunnel{Name: "evewiki", Target: nameBackend(t, "eve"), Domain: d}); err != nil {
		t.Fatal(err)
	}
	e.dns.SetCNAME(d, "wiki."+domain)
	e.waitLog(t, "custom domain points at its tunnel again but cannot be claimed")
	want("another owner took it", e.domainURL(d, "/"), 200, "eve")
	want("the first tunnel's name", e.URL("wiki", "/"), 200, "dora")
}

// TestEdge_CustomDomainStaticCert: a static certificate (--cert) that
// covers a custom domain serves it, with no ACME at all.
func TestEdge_CustomDomainStaticCert(t *testing.T) {
	ca := testtls.NewCA(t)
	dir := t.TempDir()
	cert := ca.Issue(t, domain, "*."+domain, "wiki.example.org", "127.0.0.1")
	crt, key := filepath.Join(dir, "site.crt"), filepath.Join(dir, "site.key")
	if err := os.WriteFile(crt, testtls.CertPEM(cert), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, testtls.KeyPEM(t, cert), 0o600); err != nil {
		t.Fatal(err)
	}
	static, err := certs.LoadStatic(certs.Files{Pairs: []certs.Pair{{Cert: crt, Key: key}}})
	if err != nil {
		t.Fatal(err)
	}
	e := startDomainEdge(t, func(c *edge.Config) {
		c.TLSConfig = nil
		c.StaticCerts = static
	})
	e.Pool, e.hc = ca.Pool(), dialAll(t, e.Addr, ca.Pool())
	e.dns.SetCNAME("wiki.example.org", "wiki."+domain)
	if _, err := e.Connect(doraToken, mux.Tunnel{Name: "wiki", Target: headersBackend(t), Domain: "wiki.example.org"}); err != nil {
		t.Fatal(err)
	}
	if resp, body := fetch(t, e.hc, e.domainURL("wiki.example.org", "/"), nil); resp.StatusCode != 200 {
		t.Fatalf("got %d %q, want 200", resp.StatusCode, body)
	}
}

// TestClusterRegistry_CustomDomain: a custom domain claimed on node A
// travels in the cluster's table: a visitor on node B reaches it, with
// its tunnel's access rules and its Host, and another owner on B cannot
// claim it; once A's re-check drops it, B's view drops it too.
func TestClusterRegistry_CustomDomain(t *testing.T) {
	dns := testdns.Start(t)
	tlsCfg, pool := testtls.New(t, domain, "*."+domain, "wiki.example.org", "127.0.0.1")
	tokens, err := token.New([]token.Entry{
		{Label: "dora", SHA256: token.Hash(doraToken), Names: []string{"*"}, Domains: []string{"wiki.example.org"}},
		{Label: "eve", SHA256: token.Hash(eveToken), Names: []string{"*"}, Domains: []string{"wiki.example.org"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := make(chan string, 64)
	e := etcdtest.Start(t, 1)
	nodes := startClusterWith(t, e, &directForwarder{}, func(c *edge.Config) {
		c.Auth = tokens
		c.TLSConfig = tlsCfg
		c.Domains = customdomain.NewChecker(customdomain.Config{Resolver: dns.Addr(), Rate: 1000, Burst: 1000})
		c.DomainRecheck = 20 * time.Millisecond
		c.Logger = zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logWatch(logs))).Level(zerolog.InfoLevel)
	}, "a", "b")
	a, b := nodes[0], nodes[1]
	a.Pool, b.Pool = pool, pool
	dns.SetCNAME("wiki.example.org", "wiki."+domain)
	addr, _ := countingBackend(t)
	access := &proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: bcryptHash(t, "pass")}}}
	cl, err := a.Connect(doraToken, mux.Tunnel{Name: "wiki", Target: addr, Access: access, Domain: "wiki.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	b.seen(t, "wiki.example.org", cl.Welcome.SessionID)
	// Both nodes show the domain on its tunnel's row, not as a tunnel.
	for _, n := range nodes {
		ts := n.Srv.Tunnels()
		if len(ts) != 1 || ts[0].Name != "wiki" || ts[0].Domain != "wiki.example.org" || ts[0].DomainStatus != edge.DomainServed {
			t.Fatalf("Tunnels on node %s: got %+v, want wiki alone with its domain served", n.c.Node(), ts)
		}
	}

	hc := dialAll(t, b.Addr, pool)
	u := fmt.Sprintf("https://wiki.example.org:%d/", b.Port)
	if code, body := clusterGet(t, hc, u, nil); code != 401 {
		t.Fatalf("on node b without a password: got %d %q, want 401", code, body)
	}
	code, body := clusterGet(t, hc, u, func(r *http.Request) { r.SetBasicAuth("ann", "pass") })
	if code != 200 || body != "service ok; authorization: none" {
		t.Fatalf("on node b: got %d %q, want 200 from the service", code, body)
	}
	dns.SetTXT("_tunnel.wiki.example.org", "eve")
	_, err = b.Connect(eveToken, mux.Tunnel{Name: "evewiki", Target: addr, Domain: "wiki.example.org"})
	wantCode(t, err, proto.CodeNameTaken)

	dns.Clear("wiki.example.org")
	dns.Clear("_tunnel.wiki.example.org")
	for {
		if strings.Contains(testwait.Recv(t, logs, 10*time.Second), "custom domain no longer points at its tunnel") {
			break
		}
	}
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		ch := b.c.Changes("wiki.example.org")
		if _, ok := b.c.Lookup("wiki.example.org"); !ok {
			break
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatal("node b still shows the dropped domain")
		}
	}
	if code, body := clusterGet(t, hc, fmt.Sprintf("https://wiki.%s:%d/", domain, b.Port), func(r *http.Request) { r.SetBasicAuth("ann", "pass") }); code != 200 {
		t.Fatalf("the tunnel's name on node b after its domain went: got %d %q, want 200", code, body)
	}
}

// TestEdge_CustomDomainOIDC: a tunnel with login asks visitors of its
// custom domain to sign in too; the ticket and the session cookie are the
// domain's own (host-only), as they are a name's.
func TestEdge_CustomDomainOIDC(t *testing.T) {
	dns := testdns.Start(t)
	tlsCfg, pool := testtls.New(t, domain, "*."+domain, "wiki.example.org", "127.0.0.1")
	le := startLoginEdge(t, nil, func(c *edge.Config) {
		tokens, err := token.New([]token.Entry{
			{Label: "dora", SHA256: token.Hash(doraToken), Names: []string{"*"}, Domains: []string{"wiki.example.org"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Auth = tokens
		c.TLSConfig = tlsCfg
		c.Domains = customdomain.NewChecker(customdomain.Config{Resolver: dns.Addr()})
	})
	le.Pool = pool
	dns.SetCNAME("wiki.example.org", "wiki."+domain)
	addr, _ := identityBackend(t)
	if _, err := le.Connect(doraToken, mux.Tunnel{Name: "wiki", Target: addr, Domain: "wiki.example.org",
		Access: &proto.Access{OIDCAllow: []string{"@example.com"}}}); err != nil {
		t.Fatal(err)
	}
	b := le.browserClient(t)
	tr := b.Transport.(*http.Transport)
	tr.DialContext = func(ctx context.Context, network, a string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(a)
		if host == "wiki.example.org" || host == domain || strings.HasSuffix(host, "."+domain) {
			a = le.Addr
		}
		var d net.Dialer
		return d.DialContext(ctx, network, a)
	}
	u := fmt.Sprintf("https://wiki.example.org:%d/page", le.Port)
	resp, body := signIn(t, b, u, "ann", nil)
	if resp.StatusCode != 200 || resp.Request.URL.String() != u || !strings.Contains(body, `email=["ann@example.com"]`) {
		t.Fatalf("ended at %s with %d %q, want %s with 200 for ann@example.com", resp.Request.URL, resp.StatusCode, body, u)
	}
	// The domain's session is not the name's: a visit there signs in again.
	resp, err := b.Get(le.URL("wiki", "/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.HasPrefix(resp.Request.URL.Path, "/login/") {
		t.Fatalf("the tunnel's name with the domain's session: ended at %s (%d), want the provider's login", resp.Request.URL, resp.StatusCode)
	}
}

// TestEdge_CustomDomainPlainHTTP: on the plain-HTTP port, a custom domain
// is redirected to https like a name, or, behind a TLS-terminating load
// balancer (PlainServesTunnels), proxied to its tunnel by its Host.
func TestEdge_CustomDomainPlainHTTP(t *testing.T) {
	for _, serve := range []bool{false, true} {
		e := startDomainEdge(t, func(c *edge.Config) { c.PlainServesTunnels = serve })
		e.dns.SetCNAME("wiki.example.org", "wiki."+domain)
		if _, err := e.Connect(doraToken, mux.Tunnel{Name: "wiki", Target: headersBackend(t), Domain: "wiki.example.org"}); err != nil {
			t.Fatal(err)
		}
		c := plainClient(t, servePlain(t, e.harness))
		resp, body := fetch(t, c, "http://wiki.example.org/x", nil)
		switch want := fmt.Sprintf("https://wiki.example.org:%d/x", e.Port); {
		case !serve && (resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want):
			t.Fatalf("redirect: got %d %q, want 308 to %s", resp.StatusCode, resp.Header.Get("Location"), want)
		case serve && (resp.StatusCode != 200 || !strings.HasPrefix(body, fmt.Sprintf("host=wiki.example.org:%d ", e.Port))):
			t.Fatalf("served: got %d %q, want 200 with the domain as Host", resp.StatusCode, body)
		}
	}
}
