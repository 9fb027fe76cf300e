package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/pkg/mux"
)

// usageOf runs the app on args, with actions that run no tunnel, and
// returns the usage error it gives.
func usageOf(t *testing.T, args ...string) *usageError {
	t.Helper()
	app := newApp()
	nop := func(*cli.Context) error { return nil }
	app.Action, app.Commands[0].Action = runOrHelp(nop), nop
	err := app.Run(append([]string{"tunnel"}, args...))
	var uerr *usageError
	if !errors.As(err, &uerr) {
		t.Fatalf("%q: got %v, want a usage error", args, err)
	}
	return uerr
}

func TestUsageMessage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "wiki", "http", "8080"},
			"--name is a flag of `tunnel http`, so it goes after http: tunnel http --name wiki 8080"},
		{[]string{"-name", "wiki", "8080"},
			"--name is a flag of `tunnel http`, so it goes after http: tunnel http -name wiki 8080"},
		{[]string{"--token=sec ret", "--name", "wiki", "http"},
			"--name is a flag of `tunnel http`, so it goes after http: tunnel --token=*** http --name wiki"},
		{[]string{"http", "--quiet", "8080"},
			"--quiet is a global flag, so it goes before http: tunnel --quiet http 8080"},
		{[]string{"http", "--token", "sec", "8080"},
			"--token is a global flag, so it goes before http: tunnel --token *** http 8080"},
		{[]string{"--nope"}, "flag provided but not defined: --nope; see tunnel --help"},
		{[]string{"http", "--nope", "8080"}, "flag provided but not defined: --nope; see tunnel http --help"},
		{[]string{"--server"}, "flag needs an argument: --server; see tunnel --help"},
		// A stray argument where the command goes: a typo of http is
		// named, anything else is not guessed at.
		{[]string{"htp", "8080"}, `unknown command "htp": did you mean http? see tunnel --help`},
		{[]string{"--dev", "htpp"}, `unknown command "htpp": did you mean http? see tunnel --help`},
		{[]string{"8080"}, `unknown command "8080"; see tunnel --help`},
		{[]string{"web", "8080"}, `unknown command "web"; see tunnel --help`},
	} {
		uerr := usageOf(t, tt.args...)
		if got := usageMessage(append([]string{"tunnel"}, tt.args...), uerr); got != tt.want {
			t.Errorf("%q:\n got %s\nwant %s", tt.args, got, tt.want)
		}
	}
}

// TestBareTunnel_HelpOrUsageError: bare "tunnel" with no tunnels
// configured, and "tunnel help", print the help on stdout and succeed
// (README: "One rule for every setting"); a stray argument is a usage
// error, even when the environment gives tunnels to run.
func TestBareTunnel_HelpOrUsageError(t *testing.T) {
	t.Setenv("TUNNEL_TARGETS", "")
	t.Setenv("TUNNEL_CONFIG", "")
	for _, args := range [][]string{nil, {"help"}} {
		app := newApp()
		var out bytes.Buffer
		app.Writer = &out
		if err := app.Run(append([]string{"tunnel"}, args...)); err != nil {
			t.Fatalf("%q: got %v, want the help", args, err)
		}
		if !strings.Contains(out.String(), "USAGE:") {
			t.Errorf("%q: stdout is not the help:\n%s", args, out.String())
		}
	}
	t.Setenv("TUNNEL_SERVER", "example.com:443")
	t.Setenv("TUNNEL_TARGETS", "wiki=8080")
	if got, want := usageOf(t, "8080").Error(), `unknown command "8080"`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestCertHint(t *testing.T) {
	for _, tt := range []struct {
		err  mux.CertificateError
		want string
	}{
		{mux.CertificateError{Server: "127.0.0.1:8443", Names: []string{"*.example.com", "example.com"}, WrongHost: true},
			"connect by a name the certificate covers: --server example.com:8443 (TUNNEL_SERVER)"},
		{mux.CertificateError{Server: "127.0.0.1:8443", Unknown: true},
			"no --ca was given, so only the system's roots are trusted: pass the PEM file of the CA that signed tunneld's certificate with --ca FILE (TUNNEL_CA), or --dev for a local tunneld --dev"},
		{mux.CertificateError{Server: "[::1]:443", Names: []string{"*.example.com"}, CAFile: "ca.pem", Unknown: true, WrongHost: true},
			"connect by a name the certificate covers: --server NAME:443 (TUNNEL_SERVER); and check --ca (TUNNEL_CA), which gave ca.pem: " +
				"it must hold the CA that signed tunneld's certificate (for tunneld --dev, the ca.pem in its --certs-dir, made anew if that directory was removed)"},
	} {
		if got := certHint(&tt.err); got != tt.want {
			t.Errorf("%+v:\n got %s\nwant %s", tt.err, got, tt.want)
		}
	}
}

// warnIdleTargets warns about the target nothing listens on, and only it.
func TestWarnIdleTargets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	idle := closed.Addr().String()
	closed.Close()

	var logs bytes.Buffer
	warnIdleTargets(context.Background(), zerolog.New(&logs), []mux.Tunnel{
		{Name: "up", Target: ln.Addr().String()}, {Name: "idle", Target: idle}})
	want := `{"level":"warn","target":"` + idle + `","tunnel":"idle","message":"nothing listens on ` + idle +
		` yet: visitors get an error page until it does"}` + "\n"
	if got := logs.String(); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	if strings.Contains(logs.String(), ln.Addr().String()) {
		t.Fatal("warned about the target that listens")
	}
}
