package certs

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testtls"
)

func TestStatic_Lookup(t *testing.T) {
	dir := t.TempDir()
	writePair(t, dir, "wild", []string{"tunnel.test", "*.tunnel.test"}, time.Hour)
	writePair(t, dir, "other", []string{"other.test"}, time.Hour)
	writePair(t, dir, "old", []string{"old.test"}, -time.Minute)
	c, err := LoadStatic(Files{Dirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, want string // want: the certificate's first DNS name, "" for none
	}{
		{"tunnel.test", "tunnel.test"},
		{"WIKI.tunnel.test.", "tunnel.test"},
		{"a.b.tunnel.test", ""},
		{"other.test", "other.test"},
		{"x.other.test", ""},
		{"old.test", ""}, // expired: left to ACME
		{"example.com", ""},
	} {
		got := ""
		if cert := c.Lookup(tt.name); cert != nil {
			got = cert.Leaf.DNSNames[0]
		}
		if got != tt.want {
			t.Errorf("Lookup(%q): got %q, want %q", tt.name, got, tt.want)
		}
	}

	// A failed reload keeps the set in use.
	os.Remove(filepath.Join(dir, "other.key"))
	if err := c.Reload(); err == nil {
		t.Fatal("Reload with a certificate missing its key succeeded")
	}
	if c.Lookup("other.test") == nil {
		t.Error("after a failed reload the previous certificates are gone")
	}
}

// writePair writes NAME.crt and NAME.key into dir, for dnsNames and
// expiring validFor from now.
func writePair(t *testing.T, dir, name string, dnsNames []string, validFor time.Duration) {
	t.Helper()
	cert := testtls.NewCA(t).IssueFor(t, validFor, dnsNames...)
	keyDER, _ := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	for file, block := range map[string]*pem.Block{
		name + ".crt": {Type: "CERTIFICATE", Bytes: cert.Certificate[0]},
		name + ".key": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStatic_Require: a set that leaves a required name uncovered does not
// load, names what is missing and what was loaded, and on Reload leaves
// the previous set in use. A certificate for one name under the domain is
// not a wildcard, and an expired one covers nothing.
func TestStatic_Require(t *testing.T) {
	require := []string{"tunnel.test", "*.tunnel.test"}
	for _, tt := range []struct {
		name     string
		dnsNames []string
		validFor time.Duration
		missing  []string
	}{
		{"other domain", []string{"other.test", "*.other.test"}, time.Hour, require},
		{"apex only", []string{"tunnel.test"}, time.Hour, []string{"*.tunnel.test"}},
		{"one name, not a wildcard", []string{"tunnel.test", "wiki.tunnel.test"}, time.Hour, []string{"*.tunnel.test"}},
		{"wildcard only", []string{"*.tunnel.test"}, time.Hour, []string{"tunnel.test"}},
		{"expired", require, -time.Minute, require},
		{"covered", require, time.Hour, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writePair(t, dir, "site", tt.dnsNames, tt.validFor)
			c, err := LoadStatic(Files{Dirs: []string{dir}, Require: require})
			if tt.missing == nil {
				if err != nil || c.Lookup("wiki.tunnel.test") == nil {
					t.Fatalf("got %v, want loaded and wiki.tunnel.test served", err)
				}
				return
			}
			var nc *NotCoveredError
			if !errors.As(err, &nc) {
				t.Fatalf("got %v, want a NotCoveredError", err)
			}
			if !slices.Equal(nc.Missing, tt.missing) {
				t.Errorf("missing: got %q, want %q", nc.Missing, tt.missing)
			}
			file := filepath.Join(dir, "site.crt")
			want := []LoadedFile{{Path: file, DNSNames: tt.dnsNames, Expired: tt.validFor < 0}}
			if !reflect.DeepEqual(nc.Loaded, want) {
				t.Errorf("loaded: got %+v, want %+v", nc.Loaded, want)
			}
			if msg := err.Error(); !strings.Contains(msg, file) || !strings.Contains(msg, tt.missing[0]) {
				t.Errorf("message %q names neither the file nor %s", msg, tt.missing[0])
			}
		})
	}

	dir := t.TempDir()
	writePair(t, dir, "site", require, time.Hour)
	c, err := LoadStatic(Files{Dirs: []string{dir}, Require: require})
	if err != nil {
		t.Fatal(err)
	}
	served := c.Lookup("wiki.tunnel.test")
	writePair(t, dir, "site", []string{"other.test"}, time.Hour)
	var nc *NotCoveredError
	if err := c.Reload(); !errors.As(err, &nc) {
		t.Fatalf("reload of a certificate for another domain: got %v, want a NotCoveredError", err)
	}
	if got := c.Lookup("wiki.tunnel.test"); got != served {
		t.Error("after a refused reload the previous certificate is no longer served")
	}
}
