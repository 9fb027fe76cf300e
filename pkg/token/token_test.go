package token

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/domain"
	"github.com/tunnelhq/tunnel/pkg/name"
)

// testHash is a well-formed hash for entries whose token the test never
// presents.
var testHash = Hash("tk_unused")

func TestSet_Authenticate(t *testing.T) {
	set, err := New([]Entry{
		{Label: "pi", SHA256: Hash("tk_pi"), Names: []string{"wiki", "dev-*"}, MaxTunnels: 4},
		{Label: "laptop", SHA256: Hash("tk_laptop")},
		SharedEntry("s3cret"),
	})
	if err != nil {
		t.Fatalf("New: got %v, want nil", err)
	}
	tests := []struct {
		name      string
		token     string
		wantLabel string // "": want ErrBad
	}{
		{"first", "tk_pi", "pi"},
		{"second", "tk_laptop", "laptop"},
		{"shared", "s3cret", "shared"},
		{"empty", "", ""},
		{"unknown", "tk_nope", ""},
		{"case matters", "TK_PI", ""},
		{"prefix of a token", "tk_p", ""},
		{"hash instead of token", Hash("tk_pi"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := set.Authenticate(tt.token)
			if tt.wantLabel == "" {
				if !errors.Is(err, ErrBad) || id != nil {
					t.Fatalf("Authenticate(%q): got (%v, %v), want (nil, ErrBad)", tt.token, id, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate(%q): got %v, want nil", tt.token, err)
			}
			if id.Label != tt.wantLabel {
				t.Fatalf("Authenticate(%q): got label %q, want %q", tt.token, id.Label, tt.wantLabel)
			}
			if want := "token:" + Hash(tt.token)[:16]; id.ID != want {
				t.Fatalf("Authenticate(%q): got ID %q, want %q", tt.token, id.ID, want)
			}
		})
	}

	t.Run("identity fields", func(t *testing.T) {
		id, err := set.Authenticate("tk_pi")
		if err != nil {
			t.Fatalf("Authenticate: got %v, want nil", err)
		}
		if got, want := strings.Join(id.Patterns, ","), "wiki,dev-*"; got != want {
			t.Fatalf("Patterns: got %q, want %q", got, want)
		}
		if id.MaxTunnels != 4 {
			t.Fatalf("MaxTunnels: got %d, want 4", id.MaxTunnels)
		}
		// The caller owns the result: changing it must not change the set.
		id.Patterns[0] = "*"
		again, _ := set.Authenticate("tk_pi")
		if again.Patterns[0] != "wiki" {
			t.Fatalf("after mutating a returned Identity: got pattern %q, want %q", again.Patterns[0], "wiki")
		}
	})
}

func TestSet_EmptySetRefusesAll(t *testing.T) {
	set, err := New(nil)
	if err != nil {
		t.Fatalf("New(nil): got %v, want nil", err)
	}
	if _, err := set.Authenticate("tk_anything"); !errors.Is(err, ErrBad) {
		t.Fatalf("Authenticate: got %v, want ErrBad", err)
	}
}

func TestNew_Validation(t *testing.T) {
	ok := Entry{Label: "ok", SHA256: Hash("tk_ok")}
	tests := []struct {
		name      string
		entry     Entry  // appended after ok
		wantInErr string // "": valid
		wantIs    error
	}{
		{"valid", Entry{Label: "pi", SHA256: testHash, Names: []string{"wiki", "*", "dev-*", "*-dev", "a*"}, MaxTunnels: 2}, "", nil},
		{"empty label", Entry{SHA256: testHash}, `entry 2 (""): label: empty`, nil},
		{"duplicate label", Entry{Label: "ok", SHA256: testHash}, `entry 2 ("ok"): label: already used by entry 1`, nil},
		{"duplicate hash", Entry{Label: "pi", SHA256: ok.SHA256}, `entry 2 ("pi"): sha256: same token as entry 1`, nil},
		{"short hash", Entry{Label: "pi", SHA256: "abc123"}, `entry 2 ("pi"): sha256: want 64 lowercase hex digits, got 6 characters`, nil},
		{"empty hash", Entry{Label: "pi"}, `entry 2 ("pi"): sha256:`, nil},
		{"uppercase hash", Entry{Label: "pi", SHA256: strings.ToUpper(testHash)}, `entry 2 ("pi"): sha256: want lowercase hex digits`, nil},
		{"non-hex hash", Entry{Label: "pi", SHA256: strings.Repeat("g", 64)}, `entry 2 ("pi"): sha256:`, nil},
		{"negative max", Entry{Label: "pi", SHA256: testHash, MaxTunnels: -1}, `entry 2 ("pi"): max_tunnels: got -1`, nil},
		{"access require", Entry{Label: "pi", SHA256: testHash, Access: &AccessPolicy{Require: true}}, "", nil},
		{"access require and forbid", Entry{Label: "pi", SHA256: testHash, Access: &AccessPolicy{Require: true, Forbid: true}},
			`entry 2 ("pi"): access: require and forbid both set`, nil},
		{"invalid name", Entry{Label: "pi", SHA256: testHash, Names: []string{"Wiki"}}, `entry 2 ("pi"): names:`, name.ErrInvalid},
		{"reserved name", Entry{Label: "pi", SHA256: testHash, Names: []string{"www"}}, `entry 2 ("pi"): names:`, name.ErrReserved},
		{"empty pattern", Entry{Label: "pi", SHA256: testHash, Names: []string{""}}, `names:`, name.ErrInvalid},
		{"star in middle", Entry{Label: "pi", SHA256: testHash, Names: []string{"a*b"}}, `names:`, name.ErrInvalid},
		{"two stars", Entry{Label: "pi", SHA256: testHash, Names: []string{"*a*"}}, `names:`, name.ErrInvalid},
		{"double star", Entry{Label: "pi", SHA256: testHash, Names: []string{"**"}}, `names:`, name.ErrInvalid},
		{"suffix ends with hyphen", Entry{Label: "pi", SHA256: testHash, Names: []string{"*-"}}, `names:`, name.ErrInvalid},
		{"prefix starts with hyphen", Entry{Label: "pi", SHA256: testHash, Names: []string{"-*"}}, `names:`, name.ErrInvalid},
		{"punycode prefix", Entry{Label: "pi", SHA256: testHash, Names: []string{"xn--*"}}, `names:`, name.ErrInvalid},
		{"dotted pattern", Entry{Label: "pi", SHA256: testHash, Names: []string{"*.example.com"}}, `names:`, name.ErrInvalid},
		{"domains", Entry{Label: "pi", SHA256: testHash, Domains: []string{"wiki.example.org", "*.apps.example.org"}}, "", nil},
		{"invalid domain", Entry{Label: "pi", SHA256: testHash, Domains: []string{"Wiki.example.org"}}, `domains:`, domain.ErrInvalid},
		{"bare star domain", Entry{Label: "pi", SHA256: testHash, Domains: []string{"*"}}, `domains:`, domain.ErrInvalid},
		{"single-label domain", Entry{Label: "pi", SHA256: testHash, Domains: []string{"wiki"}}, `domains:`, domain.ErrInvalid},
		{"too long prefix", Entry{Label: "pi", SHA256: testHash, Names: []string{strings.Repeat("a", 63) + "*"}}, `names:`, name.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New([]Entry{ok, tt.entry})
			if tt.wantInErr == "" {
				if err != nil {
					t.Fatalf("New: got %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New: got nil, want error containing %q", tt.wantInErr)
			}
			if !strings.HasPrefix(err.Error(), "tokens: entry 2 (") || !strings.Contains(err.Error(), tt.wantInErr) {
				t.Fatalf("New: got %q, want \"tokens: entry 2 (...\" containing %q", err, tt.wantInErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("New: got %v, want error wrapping %v", err, tt.wantIs)
			}
		})
	}
}

func TestIdentity_MayClaimName(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		claim    string
		random   bool
		want     bool
	}{
		{"exact", []string{"wiki"}, "wiki", false, true},
		{"exact other", []string{"wiki"}, "wikis", false, false},
		{"exact case", []string{"wiki"}, "WIKI", false, false},
		{"any", []string{"*"}, "anything-1", false, true},
		{"prefix", []string{"dev-*"}, "dev-api", false, true},
		{"prefix needs more", []string{"dev-*"}, "dev-", false, false},
		{"prefix other", []string{"dev-*"}, "prod-api", false, false},
		{"prefix case", []string{"dev-*"}, "DEV-api", false, false},
		{"suffix", []string{"*-dev"}, "api-dev", false, true},
		{"suffix needs more", []string{"*-dev"}, "-dev", false, false},
		{"suffix other", []string{"*-dev"}, "api-prod", false, false},
		{"suffix is not prefix", []string{"*-dev"}, "dev-api", false, false},
		{"second pattern", []string{"wiki", "dev-*"}, "dev-x", false, true},
		{"no patterns", nil, "wiki", false, false},
		{"no patterns random", nil, "brisk-otter-4821", true, true},
		{"random ignores patterns", []string{"wiki"}, "brisk-otter-4821", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := &Identity{Patterns: tt.patterns}
			if got := id.MayClaim(tt.claim, tt.random); got != tt.want {
				t.Fatalf("MayClaim(%q, %v) with %q: got %v, want %v", tt.claim, tt.random, tt.patterns, got, tt.want)
			}
		})
	}
}

func TestHash(t *testing.T) {
	// SHA-256("abc") from FIPS 180-2, appendix B.1.
	const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got := Hash("abc"); got != want {
		t.Fatalf("Hash(\"abc\"): got %s, want %s", got, want)
	}
}

func TestGenerate(t *testing.T) {
	seen := make(map[string]bool)
	for range 100 {
		tok, err := Generate()
		if err != nil {
			t.Fatalf("Generate: got %v, want nil", err)
		}
		body, ok := strings.CutPrefix(tok, "tk_")
		if !ok {
			t.Fatalf("Generate: got %q, want prefix tk_", tok)
		}
		raw, err := base64.RawURLEncoding.DecodeString(body)
		if err != nil || len(raw) != 32 {
			t.Fatalf("Generate: got %q (%d bytes, %v), want 32 bytes of unpadded base64url", tok, len(raw), err)
		}
		if seen[tok] {
			t.Fatalf("Generate: got %q twice", tok)
		}
		seen[tok] = true
	}
}

func TestSharedEntry(t *testing.T) {
	e := SharedEntry("s3cret")
	if e.Label != "shared" || e.SHA256 != Hash("s3cret") || len(e.Names) != 1 || e.Names[0] != "*" {
		t.Fatalf("SharedEntry: got %+v, want label shared, hash of the token, names [*]", e)
	}
}

func TestAdd_RoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "conf", "tokens.json") // parent does not exist yet

	tokPi, err := Add(path, Entry{Label: "pi", Names: []string{"wiki", "dev-*"}, MaxTunnels: 4, Connect: []string{"pi-ssh"}, Access: &AccessPolicy{Require: true}, Domains: []string{"wiki.example.org"}})
	if err != nil {
		t.Fatalf("Add pi: got %v, want nil", err)
	}
	tokLaptop, err := Add(path, Entry{Label: "laptop"})
	if err != nil {
		t.Fatalf("Add laptop: got %v, want nil", err)
	}

	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o755} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Fatalf("mode of %s: got %o, want %o", p, got, want)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read tokens file: %v", err)
	}
	if strings.Contains(string(data), tokPi) || strings.Contains(string(data), tokLaptop) {
		t.Fatalf("tokens file contains a plain token:\n%s", data)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("files next to the tokens file: got %d, want 1 (no temporary files left)", len(entries))
	}

	set, err := Load(path, "")
	if err != nil {
		t.Fatalf("Load: got %v, want nil", err)
	}
	id, err := set.Authenticate(tokPi)
	if err != nil {
		t.Fatalf("Authenticate(pi token): got %v, want nil", err)
	}
	if id.Label != "pi" || id.MaxTunnels != 4 || !id.MayClaim("dev-x", false) || id.MayClaim("other", false) {
		t.Fatalf("pi identity: got %+v, want label pi, max 4, names wiki and dev-*", id)
	}
	if !id.AccessRequired || id.AccessForbidden {
		t.Fatalf("pi identity: got access required %v, forbidden %v; want required", id.AccessRequired, id.AccessForbidden)
	}
	if !id.MayConnect("pi-ssh") || id.MayConnect("wiki") {
		t.Fatalf("pi identity: MayConnect: got %v for pi-ssh and %v for wiki, want true and false (connect [pi-ssh])", id.MayConnect("pi-ssh"), id.MayConnect("wiki"))
	}
	if !id.MayClaimDomain("wiki.example.org") || id.MayClaimDomain("other.example.org") {
		t.Fatalf("pi identity: MayClaimDomain: got %v for wiki.example.org and %v for other.example.org, want true and false",
			id.MayClaimDomain("wiki.example.org"), id.MayClaimDomain("other.example.org"))
	}
	id, err = set.Authenticate(tokLaptop)
	if err != nil {
		t.Fatalf("Authenticate(laptop token): got %v, want nil", err)
	}
	if id.Label != "laptop" || id.MayClaim("wiki", false) || id.MayClaimDomain("wiki.example.org") || id.AccessRequired || id.AccessForbidden {
		t.Fatalf("laptop identity: got %+v, want label laptop with random names only", id)
	}
	for _, bad := range []string{"", "tk_wrong", tokPi + "x"} {
		if _, err := set.Authenticate(bad); !errors.Is(err, ErrBad) {
			t.Fatalf("Authenticate(%q): got %v, want ErrBad", bad, err)
		}
	}
}

// TestAdd_KeepsExistingMode: Add rewrites the file but keeps the mode the
// operator gave it (README "Deploying": 0644 for the systemd unit's dynamic
// user); only a new file gets 0600.
func TestAdd_KeepsExistingMode(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o600} {
		path := filepath.Join(t.TempDir(), "tokens.json")
		if err := os.WriteFile(path, []byte(`{"tokens":[]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // not subject to the umask
			t.Fatal(err)
		}
		if _, err := Add(path, Entry{Label: "pi"}); err != nil {
			t.Fatalf("Add: got %v, want nil", err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != mode {
			t.Errorf("mode after Add to a %o file: got %o, want it kept", mode, got)
		}
	}
}

func TestAdd_Refusals(t *testing.T) {
	tests := []struct {
		name      string
		existing  string // file content before; "" for no file
		label     string
		names     []string
		max       int
		wantInErr string
		wantIs    error
	}{
		{"duplicate label", `{"tokens":[{"label":"pi","sha256":"` + testHash + `"}]}`, "pi", nil, 0, `label already used`, nil},
		{"invalid name", "", "pi", []string{"WIKI"}, 0, `names:`, name.ErrInvalid},
		{"reserved name", "", "pi", []string{"admin"}, 0, `names:`, name.ErrReserved},
		{"bad pattern", "", "pi", []string{"a*b"}, 0, `names:`, name.ErrInvalid},
		{"empty label", "", "", nil, 0, `label: empty`, nil},
		{"negative max", "", "pi", nil, -2, `max_tunnels`, nil},
		{"unparsable file", `{"tokens":[`, "pi", nil, 0, `parse`, nil},
		{"unknown field in file", `{"tokens":[],"extra":1}`, "pi", nil, 0, `unknown field "extra"`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.json")
			if tt.existing != "" {
				if err := os.WriteFile(path, []byte(tt.existing), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			tok, err := Add(path, Entry{Label: tt.label, Names: tt.names, MaxTunnels: tt.max})
			if err == nil || !strings.Contains(err.Error(), tt.wantInErr) {
				t.Fatalf("Add: got (%q, %v), want error containing %q", tok, err, tt.wantInErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("Add: got %v, want error wrapping %v", err, tt.wantIs)
			}
			data, readErr := os.ReadFile(path)
			switch {
			case tt.existing == "" && readErr == nil:
				t.Fatalf("Add failed but created %s:\n%s", path, data)
			case tt.existing != "" && string(data) != tt.existing:
				t.Fatalf("Add failed but changed the file: got %q, want %q", data, tt.existing)
			}
		})
	}
}

func TestLoad_Errors(t *testing.T) {
	good := `{"label":"pi","sha256":"` + testHash + `"}`
	tests := []struct {
		name      string
		content   string
		wantInErr string
	}{
		{"empty file", ``, `file is empty`},
		{"bad json", "{\n  \"tokens\": [\n    {\"label\": \"pi\",}\n  ]\n}", `line 3, column 20: invalid character '}'`},
		{"truncated", `{"tokens":[` + good, `unexpected EOF`},
		{"wrong type", `{"tokens":[{"label":"pi","sha256":"` + testHash + `","max_tunnels":"4"}]}`, `line 1, column`},
		{"unknown field", `{"tokens":[{"label":"pi","sha256":"` + testHash + `","max_tunnel":4}]}`, `unknown field "max_tunnel"`},
		{"unknown top-level field", `{"token":[]}`, `unknown field "token"`},
		{"trailing data", `{"tokens":[]} {}`, `trailing data`},
		{"bad hash", `{"tokens":[{"label":"pi","sha256":"abcd"}]}`, `entry 1 ("pi"): sha256: want 64 lowercase hex digits, got 4 characters`},
		{"duplicate label", `{"tokens":[` + good + `,{"label":"pi","sha256":"` + Hash("x") + `"}]}`, `entry 2 ("pi"): label: already used by entry 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path, "")
			if err == nil || !strings.Contains(err.Error(), tt.wantInErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Load: got %v, want error naming %s and containing %q", err, path, tt.wantInErr)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.json"), "")
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Load: got %v, want error wrapping os.ErrNotExist", err)
		}
	})

	t.Run("valid", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "tokens.json")
		if err := os.WriteFile(path, []byte(`{"tokens":[`+good+`]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path, ""); err != nil {
			t.Fatalf("Load: got %v, want nil", err)
		}
	})
}

func TestLoad_FileAndShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	// The file has its own "shared" label and holds the shared secret too:
	// neither clashes with the shared entry, and the file's entry wins.
	file := `{"tokens":[` +
		`{"label":"laptop","sha256":"` + Hash("file-token") + `","names":["wiki"]},` +
		`{"label":"shared","sha256":"` + Hash("other-token") + `"},` +
		`{"label":"both","sha256":"` + Hash("both-token") + `","names":["wiki"]}]}`
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, shared string
		checks             map[string]string // token -> label; "" for ErrBad
	}{
		{"file and shared", path, "shared-token", map[string]string{
			"file-token": "laptop", "other-token": "shared", "shared-token": "shared", "wrong": "", "": ""}},
		{"file wins", path, "both-token", map[string]string{"both-token": "both"}},
		{"shared only", "", "shared-token", map[string]string{"shared-token": "shared", "file-token": ""}},
		{"file only", path, "", map[string]string{"file-token": "laptop", "shared-token": ""}},
		{"neither", "", "", map[string]string{"shared-token": "", "": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := Load(tc.path, tc.shared)
			if err != nil {
				t.Fatalf("Load: got %v, want nil", err)
			}
			for tok, wantLabel := range tc.checks {
				id, err := set.Authenticate(tok)
				if wantLabel == "" {
					if !errors.Is(err, ErrBad) {
						t.Errorf("Authenticate(%q): got %v, %v; want ErrBad", tok, id, err)
					}
					continue
				}
				if err != nil || id.Label != wantLabel {
					t.Errorf("Authenticate(%q): got %v, %v; want label %q", tok, id, err, wantLabel)
				}
			}
		})
	}
}

func TestLoad_AccessPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	file := `{"tokens":[` +
		`{"label":"strict","sha256":"` + Hash("strict-token") + `","access":{"require":true}},` +
		`{"label":"plain","sha256":"` + Hash("plain-token") + `","access":{"forbid":true}},` +
		`{"label":"free","sha256":"` + Hash("free-token") + `"}]}`
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := Load(path, "")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	for tok, want := range map[string][2]bool{
		"strict-token": {true, false}, "plain-token": {false, true}, "free-token": {false, false},
	} {
		id, err := set.Authenticate(tok)
		if err != nil {
			t.Fatalf("Authenticate(%q): %v", tok, err)
		}
		if got := [2]bool{id.AccessRequired, id.AccessForbidden}; got != want {
			t.Errorf("%s: got required, forbidden = %v, want %v", id.Label, got, want)
		}
	}
	bad := `{"tokens":[{"label":"pi","sha256":"` + testHash + `","access":{"requires":true}}]}`
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, ""); err == nil || !strings.Contains(err.Error(), `unknown field "requires"`) {
		t.Errorf("a typo in access: got %v, want unknown field \"requires\"", err)
	}
}

// TestAdd_Pool: a token added with Pool lets its clients share a name; one
// added without does not, and the file says pool only for the first.
func TestAdd_Pool(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	tokPool, err := Add(path, Entry{Label: "pis", Pool: true})
	if err != nil {
		t.Fatalf("Add pis: got %v, want nil", err)
	}
	tokSolo, err := Add(path, Entry{Label: "solo"})
	if err != nil {
		t.Fatalf("Add solo: got %v, want nil", err)
	}
	set, err := Load(path, "")
	if err != nil {
		t.Fatalf("Load: got %v, want nil", err)
	}
	for _, tt := range []struct {
		tok  string
		want bool
	}{{tokPool, true}, {tokSolo, false}} {
		id, err := set.Authenticate(tt.tok)
		if err != nil {
			t.Fatalf("Authenticate: got %v, want nil", err)
		}
		if id.Pool != tt.want {
			t.Errorf("%s: Pool got %v, want %v", id.Label, id.Pool, tt.want)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), `"pool": true`); n != 1 {
		t.Errorf("the file says pool %d times, want once:\n%s", n, data)
	}
}
