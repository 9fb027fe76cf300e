package edge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestServer_HostPolicy(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Domain = "tunnel.test"
	cfg.AllowAnonymous = true
	cfg.ACME = &ACMEConfig{CacheDir: filepath.Join(t.TempDir(), "cache"), DirectoryURL: "https://127.0.0.1:1/dir"}
	reg := NewMemoryRegistry(time.Minute)
	cfg.Registry = reg
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t))
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(cfg.ACME.CacheDir); err != nil || fi.Mode().Perm() != 0o700 {
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

	for _, tt := range []struct {
		host string
		ok   bool
	}{
		{"tunnel.test", true},
		{"wiki.tunnel.test", true},
		{"wiki.tunnel.test:5002", true}, // HTTP-01 on a non-80 port passes the Host with its port
		{"blog.tunnel.test", true},
		{"free.tunnel.test", false},
		{"a.wiki.tunnel.test", false},
		{"example.com", false},
		{"127.0.0.1", false},
	} {
		err := s.hostPolicy(context.Background(), tt.host)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, errNotOurs)) {
			t.Errorf("hostPolicy(%q): got %v, want allowed %v", tt.host, err, tt.ok)
		}
	}
	if !s.noteRefused("x.tunnel.test") || s.noteRefused("x.tunnel.test") {
		t.Error("noteRefused: want true once, then false")
	}
}

func TestStaticCerts_Lookup(t *testing.T) {
	dir := t.TempDir()
	writePair(t, dir, "wild", []string{"tunnel.test", "*.tunnel.test"}, time.Hour)
	writePair(t, dir, "other", []string{"other.test"}, time.Hour)
	writePair(t, dir, "old", []string{"old.test"}, -time.Minute)
	c, err := LoadStaticCerts(CertFiles{Dirs: []string{dir}})
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

// writePair writes a self-signed NAME.crt and NAME.key into dir.
func writePair(t *testing.T, dir, name string, dnsNames []string, validFor time.Duration) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), DNSNames: dnsNames,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(validFor),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	for file, block := range map[string]*pem.Block{
		name + ".crt": {Type: "CERTIFICATE", Bytes: der},
		name + ".key": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
