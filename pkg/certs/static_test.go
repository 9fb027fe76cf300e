package certs

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
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

