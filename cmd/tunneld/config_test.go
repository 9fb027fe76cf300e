package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/internal/testtls"
	"github.com/tunnelhq/tunnel/pkg/certs"
	"github.com/tunnelhq/tunnel/pkg/cluster"
	"github.com/tunnelhq/tunnel/pkg/edge"
)

func TestParsePrefix(t *testing.T) {
	for _, tt := range []struct {
		in, want string // want "" means an error
	}{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{" 192.0.2.1 ", "192.0.2.1/32"},
		{"::ffff:192.0.2.1", "192.0.2.1/32"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"example.com", ""},
		{"10.0.0.0/33", ""},
	} {
		p, err := parsePrefix(tt.in)
		got := ""
		if err == nil {
			got = p.String()
		}
		if got != tt.want {
			t.Errorf("parsePrefix(%q): got %q (%v), want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestServerConfig_ACMEOrderBudget: the order budget flags and their env
// vars reach certs.ACMEConfig, with the package's defaults when unset.
func TestServerConfig_ACMEOrderBudget(t *testing.T) {
	parse := func(t *testing.T, args ...string) (*certs.ACMEConfig, error) {
		t.Helper()
		var got *certs.ACMEConfig
		app := &cli.App{Name: "tunneld", Flags: append(serveFlags(), adminFlags()...), Action: func(c *cli.Context) error {
			cfg, _, err := serverConfig(c, zerolog.Nop())
			got = cfg.ACME
			return err
		}}
		base := []string{"tunneld", "--domain", "tunnel.test", "--token", "tk", "--cert-cache", t.TempDir()}
		err := app.Run(append(base, args...))
		return got, err
	}
	acme, err := parse(t)
	if err != nil || acme.OrdersPerWeek != certs.DefaultOrdersPerWeek || acme.OrdersPerOwnerPerWeek != certs.DefaultOrdersPerOwnerPerWeek {
		t.Fatalf("defaults: got %+v, %v", acme, err)
	}
	acme, err = parse(t, "--acme-orders-per-week", "7", "--acme-orders-per-owner", "3")
	if err != nil || acme.OrdersPerWeek != 7 || acme.OrdersPerOwnerPerWeek != 3 {
		t.Fatalf("flags: got %+v, %v", acme, err)
	}
	t.Setenv("TUNNELD_ACME_ORDERS_PER_WEEK", "9")
	t.Setenv("TUNNELD_ACME_ORDERS_PER_OWNER", "4")
	acme, err = parse(t)
	if err != nil || acme.OrdersPerWeek != 9 || acme.OrdersPerOwnerPerWeek != 4 {
		t.Fatalf("env: got %+v, %v", acme, err)
	}
	if _, err := parse(t, "--acme-orders-per-owner", "0"); err == nil {
		t.Fatal("--acme-orders-per-owner 0: got nil error")
	}
}

func TestParseBytes(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64 // 0 means an error
	}{
		{"256MiB", 256 << 20},
		{"1g", 1 << 30},
		{" 64 KiB ", 64 << 10},
		{"1000", 1000},
		{"0", 0},
		{"-1MiB", 0},
		{"1.5GiB", 0},
		{"99999999999GiB", 0},
		{"MiB", 0},
	} {
		got, err := parseBytes(tt.in)
		if (err != nil) != (tt.want == 0) || got != tt.want {
			t.Errorf("parseBytes(%q): got %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

// TestServerConfig_DefaultsAreTheEdges: with no tuning flags, serverConfig
// gives the edge's own defaults back. The flag defaults are read from
// edge.DefaultConfig; this catches one that does not survive its round trip
// through the flag's text (a byte size that is not whole MiB, say).
func TestServerConfig_DefaultsAreTheEdges(t *testing.T) {
	var got edge.Config
	app := &cli.App{Name: "tunneld", Flags: append(serveFlags(), adminFlags()...), Action: func(c *cli.Context) error {
		var err error
		got, _, err = serverConfig(c, zerolog.Nop())
		return err
	}}
	if err := app.Run([]string{"tunneld", "--domain", "tunnel.test", "--token", "tk", "--cert-cache", t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	want := edge.DefaultConfig()
	for _, f := range []struct {
		flag      string
		got, want any
	}{
		{"name-hold", got.NameHold, want.NameHold},
		{"offline-wait", got.OfflineWait, want.OfflineWait},
		{"domain-recheck", got.DomainRecheck, want.DomainRecheck},
		{"peer-timeout (keepalive)", got.Mux.KeepAliveInterval, want.Mux.KeepAliveInterval},
		{"peer-timeout (write timeout)", got.Mux.WriteTimeout, want.Mux.WriteTimeout},
		{"stream-window", got.Mux.StreamWindow, want.Mux.StreamWindow},
		{"max-tunnels", got.MaxTunnelsPerSession, want.MaxTunnelsPerSession},
		{"max-tunnels-per-token", got.MaxTunnelsPerToken, want.MaxTunnelsPerToken},
		{"max-sessions-per-ip", got.MaxSessionsPerIP, want.MaxSessionsPerIP},
		{"max-handshakes", got.MaxHandshakes, want.MaxHandshakes},
		{"max-handshakes-per-ip", got.MaxHandshakesPerIP, want.MaxHandshakesPerIP},
		{"max-streams-per-tunnel", got.MaxStreamsPerTunnel, want.MaxStreamsPerTunnel},
		{"max-requests-per-visitor", got.MaxRequestsPerVisitor, want.MaxRequestsPerVisitor},
		{"visitor-idle-timeout", got.VisitorIdleTimeout, want.VisitorIdleTimeout},
		{"slow-reader-budget", got.SlowReaderBudget, want.SlowReaderBudget},
		{"auth-fail-delay", got.AuthFailDelay, want.AuthFailDelay},
		{"auth-fail-max-delay", got.AuthFailMaxDelay, want.AuthFailMaxDelay},
		{"shutdown-grace", got.ShutdownGrace, want.ShutdownGrace},
		{"access-log", got.AccessLog, want.AccessLog},
	} {
		if f.got != f.want {
			t.Errorf("--%s: got %v, want %v", f.flag, f.got, f.want)
		}
	}
}

// TestServerConfig_CertificateMustCoverDomain: without ACME the static
// certificates must cover the domain and *.domain, and the error says what
// to do; with ACME (the default) the names they lack are ACME's.
func TestServerConfig_CertificateMustCoverDomain(t *testing.T) {
	dir := t.TempDir()
	ca := testtls.NewCA(t)
	write := func(name string, names ...string) (certFile, keyFile string) {
		cert := ca.Issue(t, names...)
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		if err := os.WriteFile(certFile, testtls.CertPEM(cert), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, testtls.KeyPEM(t, cert), 0o600); err != nil {
			t.Fatal(err)
		}
		return certFile, keyFile
	}
	otherCert, otherKey := write("other", "other.test", "*.other.test")
	ownCert, ownKey := write("own", "tunnel.test", "*.tunnel.test")
	run := func(args ...string) error {
		app := &cli.App{Name: "tunneld", Flags: append(serveFlags(), adminFlags()...), Action: func(c *cli.Context) error {
			_, _, err := serverConfig(c, zerolog.Nop())
			return err
		}}
		base := []string{"tunneld", "--domain", "tunnel.test", "--token", "tk", "--cert-cache", t.TempDir()}
		return app.Run(append(base, args...))
	}

	err := run("--cert", otherCert, "--key", otherKey, "--acme=false")
	var nc *certs.NotCoveredError
	if !errors.As(err, &nc) || !strings.Contains(err.Error(), "give tunneld a certificate for tunnel.test and *.tunnel.test") {
		t.Errorf("another domain's certificate without ACME: got %v, want a NotCoveredError with what to do", err)
	}
	if err := run("--cert", otherCert, "--key", otherKey); err != nil {
		t.Errorf("another domain's certificate with ACME: got %v, want nil", err)
	}
	if err := run("--cert", ownCert, "--key", ownKey, "--acme=false"); err != nil {
		t.Errorf("the domain's own certificate without ACME: got %v, want nil", err)
	}
}

func TestServerConfig_RequireAccessAnonymous(t *testing.T) {
	parse := func(t *testing.T, args ...string) bool {
		t.Helper()
		var got bool
		app := &cli.App{Name: "tunneld", Flags: append(serveFlags(), adminFlags()...), Action: func(c *cli.Context) error {
			cfg, _, err := serverConfig(c, zerolog.Nop())
			got = cfg.RequireAccessAnonymous
			return err
		}}
		base := []string{"tunneld", "--domain", "tunnel.test", "--allow-anonymous", "--cert-cache", t.TempDir()}
		if err := app.Run(append(base, args...)); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if parse(t) {
		t.Error("default: got required, want not")
	}
	if !parse(t, "--require-access-anonymous") {
		t.Error("flag: got not required, want required")
	}
	t.Setenv("TUNNELD_REQUIRE_ACCESS_ANONYMOUS", "true")
	if !parse(t) {
		t.Error("env: got not required, want required")
	}
}

// TestClusterConfig: the cluster flags are read and checked; without
// --cluster-etcd there is no cluster, and its other flags are refused.
func TestClusterConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(good, []byte(strings.Repeat("s", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(short, []byte("too short"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte(strings.Repeat("s", 32)), 0o644); err != nil {
		t.Fatal(err)
	}
	parse := func(env map[string]string, args ...string) (*clusterSetup, error) {
		t.Helper()
		for k, v := range env {
			t.Setenv(k, v)
		}
		var got *clusterSetup
		app := &cli.App{Name: "tunneld", Flags: clusterFlags(), Action: func(c *cli.Context) error {
			var err error
			got, err = clusterConfig(c, zerolog.Nop(), time.Minute)
			return err
		}}
		err := app.Run(append([]string{"tunneld"}, args...))
		return got, err
	}
	if cs, err := parse(nil); cs != nil || err != nil {
		t.Fatalf("no flags: got %+v, %v; want no cluster", cs, err)
	}
	if _, err := parse(nil, "--cluster-node", "a"); err == nil || !strings.Contains(err.Error(), "needs --cluster-etcd") {
		t.Fatalf("--cluster-node alone: %v", err)
	}
	cs, err := parse(nil, "--cluster-etcd", "http://10.0.0.1:2379,http://10.0.0.2:2379", "--cluster-etcd", "http://10.0.0.3:2379",
		"--cluster-node", "n1", "--cluster-listen", "10.0.0.5:7443", "--cluster-secret-file", good)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.Config.Endpoints) != 3 || cs.Config.Node != "n1" || cs.Config.Addr != "10.0.0.5:7443" ||
		cs.Listen != "10.0.0.5:7443" || len(cs.Secret) != 32 || cs.Config.Hold != time.Minute || cs.Config.TLS != nil {
		t.Fatalf("got %+v", cs)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--cluster-etcd", "http://e:2379"}, "--cluster-listen is required"},
		{[]string{"--cluster-etcd", "http://e:2379", "--cluster-listen", ":7443"}, "--cluster-advertise is required"},
		{[]string{"--cluster-etcd", "http://e:2379", "--cluster-listen", "nope"}, "--cluster-listen"},
		{[]string{"--cluster-etcd", "http://e:2379", "--cluster-listen", "h:7443", "--cluster-advertise", ":1"}, "no host"},
		{[]string{"--cluster-etcd", "http://e:2379", "--cluster-listen", "h:7443"}, "--cluster-secret-file is required"},
		{[]string{"--cluster-etcd", "http://e:2379", "--cluster-listen", "h:7443", "--cluster-secret-file", short}, "at least 32"},
		{[]string{"--cluster-etcd", "http://e:2379", "--cluster-listen", "h:7443", "--cluster-secret-file", open}, "readable by other users"},
		{[]string{"--cluster-etcd", "http://e:2379", "--cluster-listen", "h:7443", "--cluster-secret-file", good, "--cluster-ca", good}, "go together"},
		{[]string{"--cluster-etcd", "http://e:2379", "--cluster-listen", "h:7443", "--cluster-secret-file", good,
			"--cluster-ca", good, "--cluster-cert", good, "--cluster-key", good}, "no PEM certificate"},
		{[]string{"--cluster-etcd", "http://e:2379", "--cluster-listen", "h:7443", "--cluster-secret-file", filepath.Join(dir, "none")}, "no such file"},
		{[]string{"--cluster-etcd", "http://e:2379", "--cluster-listen", "h:7443", "--cluster-etcd-cert", good}, "go together"},
		{[]string{"--cluster-etcd", "http://e:2379", "--cluster-listen", "h:7443", "--cluster-etcd-ca", good}, "--cluster-etcd-ca"},
		{[]string{"--cluster-etcd", "http://e:2379", "--cluster-listen", "h:7443", "--cluster-node", "a/b"}, "cannot hold"},
	} {
		if _, err := parse(nil, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want an error with %q", tt.args, err, tt.want)
		}
	}
	// Last: the environment stays set until the test ends.
	cs, err = parse(map[string]string{"TUNNELD_CLUSTER_ETCD": "http://e:2379", "TUNNELD_CLUSTER_LISTEN": ":7443",
		"TUNNELD_CLUSTER_ADVERTISE": "n2.internal:7443", "TUNNELD_CLUSTER_SECRET_FILE": good})
	if err != nil {
		t.Fatal(err)
	}
	if host, _ := os.Hostname(); cs.Config.Node != host || cs.Config.Addr != "n2.internal:7443" {
		t.Fatalf("from env: got %+v", cs.Config)
	}
}

// TestStartClusterNode: with --cluster-etcd, tunneld joins a real etcd,
// registers its node under its advertised address and binds its node
// port; Close leaves, and is safe twice.
func TestStartClusterNode(t *testing.T) {
	e := etcdtest.Start(t, 1)
	cs := &clusterSetup{Config: cluster.Config{Endpoints: e.Endpoints(), Node: "n1", Addr: "127.0.0.1:7443",
		LeaseTTL: 2 * time.Second, Log: zerolog.Nop()}, Listen: "127.0.0.1:0", Secret: []byte(strings.Repeat("s", 32))}
	var cfg edge.Config
	n, err := startClusterNode(context.Background(), cs, &cfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.Registry.(*edge.ClusterRegistry); !ok {
		t.Fatalf("registry: got %T, want the cluster's", cfg.Registry)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := e.Client().Get(ctx, cluster.DefaultPrefix+"nodes/n1")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "127.0.0.1:7443" {
		t.Fatalf("node record: %v, %v", resp, err)
	}
	serveCtx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- n.serve(serveCtx) }()
	c, err := net.Dial("tcp", n.ln.Addr().String())
	if err != nil {
		t.Fatalf("node port: %v", err)
	}
	c.Close()
	stop()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n.Close()
	if _, err := net.Dial("tcp", n.ln.Addr().String()); err == nil {
		t.Fatal("node port still open after Close")
	}
}
