package edge

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error // nil: valid
	}{
		{"simple", "wiki", nil},
		{"digits and hyphen", "my-app-2", nil},
		{"single char", "a", nil},
		{"single digit", "7", nil},
		{"double hyphen not at 3-4", "a--b", nil},
		{"double hyphen later", "abc--d", nil},
		{"63 chars", strings.Repeat("a", 63), nil},
		{"random-looking", "brisk-otter-4821", nil},
		{"empty", "", ErrInvalidName},
		{"64 chars", strings.Repeat("a", 64), ErrInvalidName},
		{"dots and uppercase", "A..b", ErrInvalidName},
		{"leading hyphen", "-x", ErrInvalidName},
		{"trailing hyphen", "x-", ErrInvalidName},
		{"only hyphen", "-", ErrInvalidName},
		{"punycode", "xn--80ak6aa92e", ErrInvalidName},
		{"r-ldh", "ab--cd", ErrInvalidName},
		{"path", "../etc", ErrInvalidName},
		{"uppercase", "WIKI", ErrInvalidName},
		{"mixed case", "Wiki", ErrInvalidName},
		{"trailing dot", "wiki.", ErrInvalidName},
		{"underscore", "wi_ki", ErrInvalidName},
		{"acme challenge", "_acme-challenge", ErrInvalidName},
		{"space", "wi ki", ErrInvalidName},
		{"nul", "wi\x00ki", ErrInvalidName},
		{"cyrillic i", "w\u0456ki", ErrInvalidName},
		{"invalid utf8", "wi\xffki", ErrInvalidName},
		{"star", "*", ErrInvalidName},
		{"reserved www", "www", ErrReservedName},
		{"reserved api", "api", ErrReservedName},
		{"reserved localhost", "localhost", ErrReservedName},
		{"reserved tunneld", "tunneld", ErrReservedName},
		{"reserved uppercase is invalid first", "WWW", ErrInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.in)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("ValidateName(%q): got %v, want nil", tt.in, err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("ValidateName(%q): got %v, want error wrapping %v", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestValidateName_EveryReservedNameRefused(t *testing.T) {
	if !slices.IsSorted(reservedNames) {
		t.Fatalf("reservedNames is not sorted: %q", reservedNames)
	}
	for _, n := range reservedNames {
		if err := ValidateName(n); !errors.Is(err, ErrReservedName) {
			t.Errorf("ValidateName(%q): got %v, want ErrReservedName", n, err)
		}
	}
}

func TestValidateName_LongNameQuotedShort(t *testing.T) {
	err := ValidateName(strings.Repeat("a", 100000))
	if got, limit := len(err.Error()), 300; got > limit {
		t.Fatalf("error message length: got %d, want at most %d", got, limit)
	}
}

func TestRandomName_WordLists(t *testing.T) {
	for listName, list := range map[string][]string{"adjectives": nameAdjectives, "nouns": nameNouns} {
		if got, want := len(list), 64; got != want {
			t.Errorf("%s: got %d words, want %d", listName, got, want)
		}
		seen := make(map[string]bool)
		for _, w := range list {
			if seen[w] {
				t.Errorf("%s: duplicate %q", listName, w)
			}
			seen[w] = true
			if w == "" || strings.Trim(w, "abcdefghijklmnopqrstuvwxyz") != "" {
				t.Errorf("%s: got word %q, want [a-z]+", listName, w)
			}
		}
	}
}

func TestRandomName_AlwaysValid(t *testing.T) {
	// The longest adjective and noun together must still fit in a label.
	longest := func(l []string) int {
		n := 0
		for _, w := range l {
			n = max(n, len(w))
		}
		return n
	}
	if got := longest(nameAdjectives) + longest(nameNouns) + len("--0000"); got > maxNameLen {
		t.Fatalf("longest possible random name: got %d bytes, want at most %d", got, maxNameLen)
	}
	seen := make(map[string]bool)
	for range 2000 {
		n := RandomName()
		if err := ValidateName(n); err != nil {
			t.Fatalf("RandomName() = %q: ValidateName: got %v, want nil", n, err)
		}
		parts := strings.Split(n, "-")
		if len(parts) != 3 || len(parts[2]) != 4 {
			t.Fatalf("RandomName() = %q: got %d parts, want adjective-noun-NNNN", n, len(parts))
		}
		seen[n] = true
	}
	// 2000 draws from ~37 million names: more than a handful of repeats
	// means the randomness is broken.
	if got, want := len(seen), 1990; got < want {
		t.Fatalf("distinct names in 2000 draws: got %d, want at least %d", got, want)
	}
}

func TestParseHost(t *testing.T) {
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
			got, err := ParseHost(tt.host, tt.domain)
			if tt.wantErr {
				if !errors.Is(err, ErrForeignHost) {
					t.Fatalf("ParseHost(%q, %q): got (%q, %v), want error wrapping ErrForeignHost",
						tt.host, tt.domain, got, err)
				}
				if got != "" {
					t.Fatalf("ParseHost(%q, %q): got name %q with error, want \"\"", tt.host, tt.domain, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseHost(%q, %q): got (%q, %v), want (%q, nil)", tt.host, tt.domain, got, err, tt.want)
			}
		})
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{
		"wiki", "a", "A..b", "-x", "x-", "xn--80ak6aa92e", "ab--cd", "", "../etc",
		"WIKI", "wiki.", "wi_ki", "www", "w\u0456ki", strings.Repeat("a", 63),
		strings.Repeat("a", 64), "brisk-otter-4821",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		if err == nil {
			if len(name) < 1 || len(name) > 63 {
				t.Fatalf("accepted %q: got %d bytes, want 1-63", name, len(name))
			}
			if strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
				t.Fatalf("accepted %q: got characters outside [a-z0-9-]", name)
			}
			if name[0] == '-' || name[len(name)-1] == '-' {
				t.Fatalf("accepted %q: got leading or trailing '-'", name)
			}
			if len(name) >= 4 && name[2:4] == "--" {
				t.Fatalf("accepted %q: got '--' at positions 3-4", name)
			}
			if slices.Contains(reservedNames, name) {
				t.Fatalf("accepted reserved %q", name)
			}
			return
		}
		if !errors.Is(err, ErrInvalidName) && !errors.Is(err, ErrReservedName) {
			t.Fatalf("ValidateName(%q): got %v, want ErrInvalidName or ErrReservedName", name, err)
		}
	})
}

func FuzzParseHost(f *testing.F) {
	for _, s := range []string{
		"wiki.example.com", "WIKI.Example.com.:8443", "example.com", "a.b.example.com",
		".example.com", "[::1]:443", "127.0.0.1", "::1", "wi\u212aki.example.com",
		"wiki.example.com..", ":443", "[wiki.example.com]:443", "",
	} {
		f.Add(s, "example.com")
	}
	f.Add("wiki.localhost:8443", "localhost")
	f.Fuzz(func(t *testing.T, host, domain string) {
		name, err := ParseHost(host, domain)
		if err != nil {
			if !errors.Is(err, ErrForeignHost) {
				t.Fatalf("ParseHost(%q, %q): got %v, want error wrapping ErrForeignHost", host, domain, err)
			}
			if name != "" {
				t.Fatalf("ParseHost(%q, %q): got name %q with error, want \"\"", host, domain, name)
			}
			return
		}
		if strings.ContainsAny(name, ".:[]") {
			t.Fatalf("ParseHost(%q, %q): got name %q, want no '.', ':' or brackets", host, domain, name)
		}
		if strings.ToLower(name) != name {
			t.Fatalf("ParseHost(%q, %q): got name %q, want lowercase", host, domain, name)
		}
		for i := 0; i < len(name); i++ {
			if name[i] <= ' ' || name[i] >= 0x7f {
				t.Fatalf("ParseHost(%q, %q): got name %q, want printable ASCII", host, domain, name)
			}
		}
	})
}
