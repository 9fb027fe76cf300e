package name

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
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
		{"empty", "", ErrInvalid},
		{"64 chars", strings.Repeat("a", 64), ErrInvalid},
		{"dots and uppercase", "A..b", ErrInvalid},
		{"leading hyphen", "-x", ErrInvalid},
		{"trailing hyphen", "x-", ErrInvalid},
		{"only hyphen", "-", ErrInvalid},
		{"punycode", "xn--80ak6aa92e", ErrInvalid},
		{"r-ldh", "ab--cd", ErrInvalid},
		{"path", "../etc", ErrInvalid},
		{"uppercase", "WIKI", ErrInvalid},
		{"mixed case", "Wiki", ErrInvalid},
		{"trailing dot", "wiki.", ErrInvalid},
		{"underscore", "wi_ki", ErrInvalid},
		{"acme challenge", "_acme-challenge", ErrInvalid},
		{"space", "wi ki", ErrInvalid},
		{"nul", "wi\x00ki", ErrInvalid},
		{"cyrillic i", "w\u0456ki", ErrInvalid},
		{"invalid utf8", "wi\xffki", ErrInvalid},
		{"star", "*", ErrInvalid},
		{"reserved www", "www", ErrReserved},
		{"reserved api", "api", ErrReserved},
		{"reserved localhost", "localhost", ErrReserved},
		{"reserved tunneld", "tunneld", ErrReserved},
		{"reserved uppercase is invalid first", "WWW", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.in)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Validate(%q): got %v, want nil", tt.in, err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("Validate(%q): got %v, want error wrapping %v", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestValidate_EveryReservedNameRefused(t *testing.T) {
	if !slices.IsSorted(reserved) {
		t.Fatalf("reserved is not sorted: %q", reserved)
	}
	for _, n := range reserved {
		if err := Validate(n); !errors.Is(err, ErrReserved) {
			t.Errorf("Validate(%q): got %v, want ErrReserved", n, err)
		}
	}
}

func TestValidate_LongNameQuotedShort(t *testing.T) {
	err := Validate(strings.Repeat("a", 100000))
	if got, limit := len(err.Error()), 300; got > limit {
		t.Fatalf("error message length: got %d, want at most %d", got, limit)
	}
}

// Validate names every fault of a name at once, so that fixing one does
// not just reveal the next.
func TestValidate_EveryFault(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"", `invalid name: "": empty`},
		{"Wiki_Page-", `invalid name: "Wiki_Page-": uppercase 'W' at offset 0, 'P' at offset 5: names are lowercase; ` +
			`character '_' at offset 4: only a-z, 0-9 and '-' allowed; ends with '-'`},
		{"-", `invalid name: "-": starts and ends with '-'`},
		{"-ab--", `invalid name: "-ab--": starts and ends with '-'`},
		{"xn--a-", `invalid name: "xn--a-": ends with '-'; '--' in positions 3-4 is reserved for IDNA (punycode) labels`},
		{"wi\xffk\u0456", "invalid name: \"wi\\xffk\u0456\":" + ` character byte 0xff at offset 2, 'і' at offset 4: only a-z, 0-9 and '-' allowed`},
		{strings.Repeat("A", 70), `invalid name: "` + strings.Repeat("A", 64) + `"…: 70 bytes, at most 63 allowed; ` +
			`uppercase 'A' at offset 0, 'A' at offset 1, 'A' at offset 2, 'A' at offset 3, 'A' at offset 4 and 65 more: names are lowercase`},
	}
	for _, tt := range tests {
		err := Validate(tt.in)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Validate(%q):\n got %v\nwant %s", tt.in, err, tt.want)
		}
		var ie *InvalidError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &ie) || ie.Name != tt.in {
			t.Errorf("Validate(%q): got %#v, want an *InvalidError for the name, wrapping ErrInvalid", tt.in, err)
		}
	}
}

// A hostile name of every bad kind still gives a short message.
func TestValidate_HostileNameShortMessage(t *testing.T) {
	err := Validate("-" + strings.Repeat("_A\x00", 30000) + "-")
	if got, limit := len(err.Error()), 600; got > limit {
		t.Fatalf("error message length: got %d, want at most %d: %v", got, limit, err)
	}
}

func TestRandom_WordLists(t *testing.T) {
	for listName, list := range map[string][]string{"adjectives": adjectives, "nouns": nouns} {
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

func TestRandom_AlwaysValid(t *testing.T) {
	// The longest adjective and noun together must still fit in a label.
	longest := func(l []string) int {
		n := 0
		for _, w := range l {
			n = max(n, len(w))
		}
		return n
	}
	if got := longest(adjectives) + longest(nouns) + len("--0000"); got > MaxLen {
		t.Fatalf("longest possible random name: got %d bytes, want at most %d", got, MaxLen)
	}
	seen := make(map[string]bool)
	for range 2000 {
		n := Random()
		if err := Validate(n); err != nil {
			t.Fatalf("Random() = %q: Validate: got %v, want nil", n, err)
		}
		parts := strings.Split(n, "-")
		if len(parts) != 3 || len(parts[2]) != 4 {
			t.Fatalf("Random() = %q: got %d parts, want adjective-noun-NNNN", n, len(parts))
		}
		seen[n] = true
	}
	// 2000 draws from ~37 million names: more than a handful of repeats
	// means the randomness is broken.
	if got, want := len(seen), 1990; got < want {
		t.Fatalf("distinct names in 2000 draws: got %d, want at least %d", got, want)
	}
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{
		"wiki", "a", "A..b", "-x", "x-", "xn--80ak6aa92e", "ab--cd", "", "../etc",
		"WIKI", "wiki.", "wi_ki", "www", "w\u0456ki", strings.Repeat("a", 63),
		strings.Repeat("a", 64), "brisk-otter-4821",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := Validate(name)
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
			if slices.Contains(reserved, name) {
				t.Fatalf("accepted reserved %q", name)
			}
			return
		}
		if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrReserved) {
			t.Fatalf("Validate(%q): got %v, want ErrInvalid or ErrReserved", name, err)
		}
	})
}
