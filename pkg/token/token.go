// Package token is how tunneld knows its clients: the tokens they present,
// the set of entries a token is checked against, and the tokens file that
// holds those entries.
//
// It is a package of its own because it has two users that share nothing
// else: the edge, which authenticates each client's Hello against a Set
// (edge.Config.Auth), and the "tunneld token add" command, which writes the
// file (Add) without starting a server. Neither needs the other's code, and
// the rules for the file must be the same for both, so that Add can never
// write a file that the server then refuses.
//
// tunneld reads its tokens from a JSON file (--tokens-file) that holds only
// the SHA-256 of each token, so a leaked file (a backup, a support bundle)
// does not let anyone connect. The file looks like this:
//
//	{
//	  "tokens": [
//	    {
//	      "label": "pi-kitchen",
//	      "sha256": "<64 lowercase hex digits: SHA-256 of the token>",
//	      "names": ["wiki", "dev-*"],
//	      "max_tunnels": 4,
//	      "domains": ["wiki.example.org", "*.apps.example.org"]
//	    }
//	  ]
//	}
//
// label is required and unique; it names the token in logs and errors.
// names lists the names the token may claim: exact names, "*" (any name),
// "prefix-*" or "*-suffix"; absent or empty means random names only.
// max_tunnels caps the token's concurrent tunnels; absent or 0 means the
// server default. connect lists the TCP tunnels the token may reach with
// "tunnel connect" whoever owns them, in the same patterns; absent or empty
// means only its own tunnels and those whose owner allowed it. Unknown fields are an error, so that a typo such as
// "max_tunnel" is reported instead of silently ignored.
//
// access sets the token's policy on visitor access rules (tunnel http
// --basic-auth, --allow-cidr, --deny-cidr, --oidc-allow): {"require": true} refuses any
// tunnel of the token without one, so its services are never open to
// everyone; {"forbid": true} refuses any tunnel with one (the operator
// keeps access control in a proxy of its own, say). Absent: the owner
// chooses.
//
// domains lists the custom domains the token may claim (tunnel http
// --domain): exact domains or "*." and a domain, whose star stands for one
// label (see pkg/domain); absent or empty means none. Listing a domain
// here is not enough to serve it: its DNS must point at the tunnel too.
//
// pool: true lets the token's clients share a name (tunnel http --pool):
// several of its clients asking for the same name with pool serve it
// together. Absent or false: a second client of the token takes the name
// over from the first, and a client asking for a pool is refused. It is a
// yes or no rather than a member count: the token's max_tunnels and the
// server's session limits already bound how many clients it can connect.
//
// Add (tunneld's "token add") is the intended way to write the file.
package token

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tunnelhq/tunnel/internal/atomicfile"
	"github.com/tunnelhq/tunnel/pkg/domain"
	"github.com/tunnelhq/tunnel/pkg/name"
)

// Entry is one token in the tokens file. See the package doc for the file
// format.
type Entry struct {
	// Label names the token in logs and errors. Required, unique in a file.
	Label string `json:"label"`
	// SHA256 is the lowercase hex SHA-256 of the token (see Hash).
	SHA256 string `json:"sha256"`
	// Names are the names the token may claim: exact names ("wiki"), "*" for
	// any name, a prefix pattern ("dev-*") or a suffix pattern ("*-dev").
	// Empty means the token may claim only random names.
	Names []string `json:"names,omitempty"`
	// MaxTunnels caps the token's concurrent tunnels. 0 means the server's
	// default.
	MaxTunnels int `json:"max_tunnels,omitempty"`
	// Connect are the TCP tunnels the token may reach with "tunnel
	// connect", whoever owns them, in the patterns of Names. Empty: only
	// tunnels the token owns or whose owner allowed it.
	Connect []string `json:"connect,omitempty"`
	// Access is the token's policy on visitor access rules; nil leaves
	// them to the client.
	Access *AccessPolicy `json:"access,omitempty"`
	// Domains are the custom domains the token may claim: exact
	// ("wiki.example.org") or one-label wildcards ("*.apps.example.org"),
	// see pkg/domain. Empty: none.
	Domains []string `json:"domains,omitempty"`
	// Pool lets the token's clients share a name (a pool); false: they
	// may not ask for one.
	Pool bool `json:"pool,omitempty"`
}

// AccessPolicy is what the tokens file says of a token's visitor access
// rules. Require and Forbid cannot both be set.
type AccessPolicy struct {
	// Require: every HTTP tunnel of the token must carry an access rule.
	Require bool `json:"require,omitempty"`
	// Forbid: no tunnel of the token may carry one.
	Forbid bool `json:"forbid,omitempty"`
}

// ErrBad is returned by Authenticate for an empty or unknown token. It
// deliberately says nothing more, so a client cannot tell the two apart.
var ErrBad = errors.New("bad token")

// Identity is who a token proves the client to be.
type Identity struct {
	// ID is the stable owner id used by the name registry: "token:" followed
	// by the first 16 hex digits of the token's SHA-256. It survives a label
	// change and reveals nothing usable about the token.
	ID string
	// Label is the token's label, for logs.
	Label string
	// Patterns are the names the identity may claim; see Entry.Names.
	Patterns []string
	// MaxTunnels caps concurrent tunnels; 0 means the server default.
	MaxTunnels int
	// AccessRequired and AccessForbidden are the entry's AccessPolicy.
	AccessRequired, AccessForbidden bool
	// Connect are the TCP tunnels the identity may reach; see Entry.Connect.
	Connect []string
	// Pool says the identity's clients may share a name; see Entry.Pool.
	Pool bool
	// Domains are the custom domains the identity may claim; see
	// Entry.Domains.
	Domains []string
}

// MayClaimDomain reports whether the tokens file lets the identity claim
// the custom domain d, which must already be valid (domain.Validate). It
// says nothing of DNS: the edge still checks that d points at the tunnel.
func (id *Identity) MayClaimDomain(d string) bool {
	return domain.Match(id.Domains, d)
}

// MayConnect reports whether the identity was granted the TCP tunnel name
// by the tokens file (Entry.Connect), with MayClaim's pattern rules.
func (id *Identity) MayConnect(name string) bool {
	return matchAny(id.Connect, name)
}

// MayClaim reports whether the identity may hold name. name must already be
// valid (name.Validate) and is compared as is, without case folding. A random
// name, one the server chose because the client asked for none, is always
// allowed: pass random=true.
//
// A pattern's star matches one or more characters, so "dev-*" allows
// "dev-api" but not "dev-", and "*" allows every name.
func (id *Identity) MayClaim(name string, random bool) bool {
	if random {
		return true
	}
	return matchAny(id.Patterns, name)
}

// matchAny reports whether one of patterns (see Entry.Names) matches name.
func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		switch {
		case p == "*":
			return true
		case strings.HasSuffix(p, "*"):
			prefix := p[:len(p)-1]
			if len(name) > len(prefix) && strings.HasPrefix(name, prefix) {
				return true
			}
		case strings.HasPrefix(p, "*"):
			suffix := p[1:]
			if len(name) > len(suffix) && strings.HasSuffix(name, suffix) {
				return true
			}
		case p == name:
			return true
		}
	}
	return false
}

// Set is the set of entries client tokens are checked against (it satisfies
// edge.Authenticator). It is immutable after New or Load and safe for
// concurrent use; to change the tokens, build a new set.
type Set struct {
	tokens []setToken
}

type setToken struct {
	hash [sha256.Size]byte
	id   Identity
}

// New validates entries and returns a Set over them. An empty
// list is valid: such a set refuses every token.
//
// Each entry needs a non-empty label not used by another entry, a SHA256 of
// exactly 64 lowercase hex digits not used by another entry, valid name
// patterns and MaxTunnels >= 0. A pattern is "*", a name that passes
// name.Validate, or such a name's prefix or suffix with one "*" in its place
// ("dev-*", "*-dev"); a pattern that no valid name could match is refused.
// Errors name the entry by position (from 1) and label:
//
//	tokens: entry 2 ("pi"): sha256: want 64 lowercase hex digits, got 12 characters
func New(entries []Entry) (*Set, error) {
	return newSet(entries, "")
}

// newSet is New with the file the entries came from, if any,
// named in errors.
func newSet(entries []Entry, path string) (*Set, error) {
	where := "tokens: "
	if path != "" {
		where += path + ": "
	}
	s := &Set{tokens: make([]setToken, 0, len(entries))}
	labels := make(map[string]int, len(entries))
	hashes := make(map[[sha256.Size]byte]int, len(entries))
	for i, e := range entries {
		n := i + 1
		fail := func(format string, args ...any) error {
			return fmt.Errorf(where+"entry %d (%q): "+format, append([]any{n, e.Label}, args...)...)
		}
		if e.Label == "" {
			return nil, fail("label: empty")
		}
		if prev, dup := labels[e.Label]; dup {
			return nil, fail("label: already used by entry %d", prev)
		}
		labels[e.Label] = n

		hash, err := parseHash(e.SHA256)
		if err != nil {
			return nil, fail("sha256: %w", err)
		}
		if prev, dup := hashes[hash]; dup {
			// Two entries for one token would make its identity depend on
			// the order of the file.
			return nil, fail("sha256: same token as entry %d", prev)
		}
		hashes[hash] = n

		for _, p := range e.Names {
			if err := validatePattern(p); err != nil {
				return nil, fail("names: %w", err)
			}
		}
		for _, p := range e.Connect {
			if err := validatePattern(p); err != nil {
				return nil, fail("connect: %w", err)
			}
		}
		for _, p := range e.Domains {
			if err := domain.ValidatePattern(p); err != nil {
				return nil, fail("domains: %w", err)
			}
		}
		if e.MaxTunnels < 0 {
			return nil, fail("max_tunnels: got %d, want 0 (server default) or more", e.MaxTunnels)
		}
		var policy AccessPolicy
		if e.Access != nil {
			policy = *e.Access
		}
		if policy.Require && policy.Forbid {
			return nil, fail("access: require and forbid both set")
		}
		s.tokens = append(s.tokens, setToken{
			hash: hash,
			id: Identity{
				ID:         "token:" + hex.EncodeToString(hash[:8]),
				Label:      e.Label,
				Patterns:   slices.Clone(e.Names),
				MaxTunnels: e.MaxTunnels,
				Connect:    slices.Clone(e.Connect),
				Pool:       e.Pool,
				Domains:    slices.Clone(e.Domains),

				AccessRequired:  policy.Require,
				AccessForbidden: policy.Forbid,
			},
		})
	}
	return s, nil
}

// parseHash decodes a 64-digit lowercase hex SHA-256.
func parseHash(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	if len(s) != hex.EncodedLen(sha256.Size) {
		return h, fmt.Errorf("want %d lowercase hex digits, got %d characters", hex.EncodedLen(sha256.Size), len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return h, fmt.Errorf("want lowercase hex digits, got %q at offset %d", c, i)
		}
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("decode hex: %w", err)
	}
	return h, nil
}

// validatePattern checks one entry of Entry.Names. A star pattern is
// checked by putting one letter in the star's place and validating the
// result: "dev-*" is fine because "dev-x" is a valid name, while "*-" or
// "xn--*" are refused because no valid name can end in '-' or start "xn--".
func validatePattern(p string) error {
	if p == "*" {
		return nil
	}
	stars := strings.Count(p, "*")
	switch {
	case stars == 0:
		return name.Validate(p)
	case stars > 1 || !strings.HasPrefix(p, "*") && !strings.HasSuffix(p, "*"):
		return fmt.Errorf("%w: pattern %q: want \"*\", or one '*' at the start or end", name.ErrInvalid, p)
	}
	if err := name.Validate(strings.Replace(p, "*", "x", 1)); err != nil {
		if errors.Is(err, name.ErrReserved) {
			// The placeholder happened to spell a reserved name; other
			// names still match the pattern, and name.Validate refuses the
			// reserved one when it is claimed.
			return nil
		}
		return fmt.Errorf("pattern %q matches no valid name: %w", p, err)
	}
	return nil
}

// Authenticate hashes token with SHA-256 and compares the hash with every
// entry in constant time, without stopping at a match, so the time taken
// says nothing about which entry matched or how close a guess was. It
// returns a fresh copy of the matching Identity, or ErrBad for an empty
// or unknown token. Only a Set from Load can hold one token twice (in the
// file and as the shared secret); then the first entry, the file's, wins.
func (s *Set) Authenticate(token string) (*Identity, error) {
	if token == "" {
		return nil, ErrBad
	}
	sum := sha256.Sum256([]byte(token))
	match := -1
	for i := range s.tokens {
		if subtle.ConstantTimeCompare(sum[:], s.tokens[i].hash[:]) == 1 && match < 0 {
			match = i
		}
	}
	if match < 0 {
		return nil, ErrBad
	}
	id := s.tokens[match].id
	id.Patterns = slices.Clone(id.Patterns)
	id.Connect = slices.Clone(id.Connect)
	return &id, nil
}

// Load returns the Set tunneld checks client tokens against: the entries of
// the tokens file at path, if path is not empty, then SharedEntry(shared),
// if shared is not empty. With both empty the set refuses every token.
//
// The shared entry is checked on its own, not against the file's entries:
// the file may have an entry labelled "shared" too, and a token that is
// both in the file and the shared secret proves the file's identity.
//
// The file format is (see the package doc):
//
//	{"tokens":[{"label":"pi-kitchen","sha256":"<64 hex>","names":["wiki","dev-*"],"max_tunnels":4}]}
//
// Unknown fields and trailing data are errors, so typos are caught at
// startup instead of silently granting the wrong rights. Syntax errors give
// the line and column; invalid entries are named as by New, after the
// path: tokens: /etc/tunneld/tokens.json: entry 2 ("pi"): sha256: ….
func Load(path, shared string) (*Set, error) {
	s := &Set{}
	if path != "" {
		entries, err := readFile(path)
		if err != nil {
			return nil, err
		}
		if s, err = newSet(entries, path); err != nil {
			return nil, err
		}
	}
	if shared != "" {
		// A shared entry is always valid: a fixed label, a hash and "*".
		sh, err := New([]Entry{SharedEntry(shared)})
		if err != nil {
			return nil, fmt.Errorf("shared token: %w", err)
		}
		s.tokens = append(s.tokens, sh.tokens...)
	}
	return s, nil
}

// tokensFile is the top-level JSON object of the tokens file.
type tokensFile struct {
	Tokens []Entry `json:"tokens"`
}

// readFile reads and strictly decodes the tokens file without
// validating the entries.
func readFile(path string) ([]Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokens: read: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f tokensFile
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("tokens: parse %s: file is empty, want {\"tokens\":[...]}", path)
		}
		return nil, fmt.Errorf("tokens: parse %s: %s%w", path, jsonErrorPosition(data, err), err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("tokens: parse %s: trailing data after the top-level object", path)
	}
	return f.Tokens, nil
}

// jsonErrorPosition turns the byte offset of a JSON syntax or type error
// into "line L, column C: " so the user can find it; "" if there is none.
func jsonErrorPosition(data []byte, err error) string {
	var offset int64
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		offset = syn.Offset
	case errors.As(err, &typ):
		offset = typ.Offset
	default:
		return ""
	}
	if offset <= 0 || offset > int64(len(data)) {
		return ""
	}
	before := data[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(offset) - bytes.LastIndexByte(before, '\n') - 1
	return fmt.Sprintf("line %d, column %d: ", line, col)
}

// SharedEntry turns a plain shared secret (from an environment variable,
// for scripted setups) into an entry labelled "shared" that may claim any
// name. token should not be empty: Authenticate refuses the empty token
// whatever the entries say.
func SharedEntry(token string) Entry {
	return Entry{Label: "shared", SHA256: Hash(token), Names: []string{"*"}}
}

// Hash returns the lowercase hex SHA-256 of token, the form stored in
// Entry.SHA256. A plain hash (no salt, no slow KDF) is enough because
// tokens from Generate carry 256 random bits; it is not suitable for
// human-chosen passwords.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// tokenPrefix marks our tokens so that secret scanners and people can
// recognise them.
const tokenPrefix = "tk_"

// Generate returns a new random token: "tk_" followed by 32 bytes from
// crypto/rand in unpadded base64url (46 characters in all).
func Generate() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Add creates a random token, adds the entry e with the token's hash to the
// tokens file at path and returns the token, which is shown to the user
// once and never stored.
//
// A missing file is created, with its parent directory (0755, so the
// service's user can reach the file) if needed.
// A duplicate label, invalid names or domains, or a negative MaxTunnels are refused and
// leave the file untouched; so is an existing file that does not parse. The
// new file is written atomically (a temporary file in the same directory,
// fsync, rename), so a crash leaves either the old file or the new one. A
// new file is 0600; an existing one keeps its mode, so an operator who made
// it readable by the service's user (the systemd unit's DynamicUser needs
// 0644) does not lose that on the next Add. Concurrent Add calls on the same file, from one process or
// several, are not coordinated: the last rename wins and the other entry is
// lost. If path is a symlink, it is replaced by a regular file.
//
// e is the new entry as the file will hold it, but for its SHA256, which
// Add fills in from the token it generates (any value in e is ignored).
func Add(path string, e Entry) (string, error) {
	label := e.Label
	entries, err := readFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("add token %q: %w", label, err)
	}
	for _, old := range entries {
		if old.Label == label {
			return "", fmt.Errorf("add token %q: label already used in %s", label, path)
		}
	}

	token, err := Generate()
	if err != nil {
		return "", fmt.Errorf("add token %q: %w", label, err)
	}
	e.SHA256 = Hash(token)
	entries = append(entries, e)
	// Validate the whole file as the server will load it, so Add can
	// never write a file that tunneld then refuses.
	if _, err := newSet(entries, path); err != nil {
		return "", fmt.Errorf("add token %q: %w", label, err)
	}
	data, err := json.MarshalIndent(tokensFile{Tokens: entries}, "", "  ")
	if err != nil {
		return "", fmt.Errorf("add token %q: encode: %w", label, err)
	}
	data = append(data, '\n')

	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("add token %q: create directory: %w", label, err)
	}
	mode := fs.FileMode(0o600)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	if err := atomicfile.Write(path, data, mode); err != nil {
		return "", fmt.Errorf("add token %q: %w", label, err)
	}
	return token, nil
}
