package name

import (
	"errors"
	"strings"
	"testing"
)

func TestFromHost(t *testing.T) {
	tests := []struct {
		name    string
		host    string
		domain  string
		want    string
		wantErr bool // wrapping ErrForeignHost
	}{
		{"plain", "wiki.example.com", "example.com", "wiki", false},
		{"port, case, trailing dot", "WIKI.Example.com.:8443", "example.com", "wiki", false},
		{"port", "wiki.example.com:443", "example.com", "wiki", false},
		{"empty port", "wiki.example.com:", "example.com", "wiki", false},
		{"trailing dot", "wiki.example.com.", "example.com", "wiki", false},
		{"localhost domain", "wiki.localhost:8443", "localhost", "wiki", false},
		{"odd label kept", "wi_ki.example.com", "example.com", "wi_ki", false},
		{"punycode label kept", "xn--80ak6aa92e.example.com", "example.com", "xn--80ak6aa92e", false},
		{"apex", "example.com", "example.com", "", false},
		{"apex with port and dot", "EXAMPLE.com.:443", "example.com", "", false},
		{"other domain", "wiki.example.org", "example.com", "", true},
		{"suffix without dot", "wikiexample.com", "example.com", "", true},
		{"deeper name", "a.b.example.com", "example.com", "", true},
		{"empty label", ".example.com", "example.com", "", true},
		{"two trailing dots", "wiki.example.com..", "example.com", "", true},
		{"empty host", "", "example.com", "", true},
		{"just a port", ":443", "example.com", "", true},
		{"ipv4", "127.0.0.1", "localhost", "", true},
		{"ipv4 with port", "127.0.0.1:8443", "localhost", "", true},
		{"ipv4 under numeric domain", "127.0.0.1", "0.0.1", "", true},
		{"ipv4 with trailing dot", "127.0.0.1.", "0.0.1", "", true},
		{"numeric label", "123.example.com", "example.com", "123", false},
		{"numeric label under numeric domain", "1.2.3", "2.3", "1", false},
		{"ipv6 bracketed with port", "[::1]:443", "localhost", "", true},
		{"ipv6 bracketed", "[::1]", "localhost", "", true},
		{"ipv6 bare", "::1", "localhost", "", true},
		{"bracketed name", "[wiki.example.com]:443", "example.com", "", true},
		{"kelvin sign", "wi\u212aki.example.com", "example.com", "", true},
		{"cyrillic", "w\u0456ki.example.com", "example.com", "", true},
		{"space", "wi ki.example.com", "example.com", "", true},
		{"no domain configured", "wiki", "", "", true},
		// A port that is not one: the rest would reach the service.
		{"junk after the port", "wiki.example.com:8443,evil.example", "example.com", "", true},
		{"junk instead of the port", "WIKI.Example.com.:evil.example", "example.com", "", true},
		{"port and semicolon", "wiki.example.com:1;evil.example", "example.com", "", true},
		{"port too large", "wiki.example.com:65536", "example.com", "", true},
		{"port too long", "wiki.example.com:000443", "example.com", "", true},
		{"negative port", "wiki.example.com:-1", "example.com", "", true},
		{"largest port", "wiki.example.com:65535", "example.com", "wiki", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromHost(tt.host, tt.domain)
			if tt.wantErr {
				if !errors.Is(err, ErrForeignHost) {
					t.Fatalf("FromHost(%q, %q): got (%q, %v), want error wrapping ErrForeignHost",
						tt.host, tt.domain, got, err)
				}
				if got != "" {
					t.Fatalf("FromHost(%q, %q): got name %q with error, want \"\"", tt.host, tt.domain, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("FromHost(%q, %q): got (%q, %v), want (%q, nil)", tt.host, tt.domain, got, err, tt.want)
			}
		})
	}
}

func FuzzFromHost(f *testing.F) {
	for _, s := range []string{
		"wiki.example.com", "WIKI.Example.com.:8443", "example.com", "a.b.example.com",
		".example.com", "[::1]:443", "127.0.0.1", "::1", "wi\u212aki.example.com",
		"wiki.example.com..", ":443", "[wiki.example.com]:443", "",
	} {
		f.Add(s, "example.com")
	}
	f.Add("wiki.localhost:8443", "localhost")
	f.Fuzz(func(t *testing.T, host, domain string) {
		name, err := FromHost(host, domain)
		if err != nil {
			if !errors.Is(err, ErrForeignHost) {
				t.Fatalf("FromHost(%q, %q): got %v, want error wrapping ErrForeignHost", host, domain, err)
			}
			if name != "" {
				t.Fatalf("FromHost(%q, %q): got name %q with error, want \"\"", host, domain, name)
			}
			return
		}
		if strings.ContainsAny(name, ".:[]") {
			t.Fatalf("FromHost(%q, %q): got name %q, want no '.', ':' or brackets", host, domain, name)
		}
		if strings.ToLower(name) != name {
			t.Fatalf("FromHost(%q, %q): got name %q, want lowercase", host, domain, name)
		}
		for i := 0; i < len(name); i++ {
			if name[i] <= ' ' || name[i] >= 0x7f {
				t.Fatalf("FromHost(%q, %q): got name %q, want printable ASCII", host, domain, name)
			}
		}
	})
}
