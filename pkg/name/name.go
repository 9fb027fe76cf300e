// Package name holds the rules for tunnel names: which names a client may
// ask for (Validate), how the server draws one when a client asks for none
// (Random), and how a visitor's Host header or TLS SNI value maps back to a
// name under the tunnel domain (FromHost).
//
// It is its own package because more than the edge needs these rules: the
// edge checks the names a client asks for and routes visitors by them, the
// token package checks the names and patterns a token may claim, and the
// development certificates are issued per name. It imports only the
// standard library, so the client could use it too without pulling in any
// server code.
package name

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"unicode/utf8"
)

var (
	// ErrInvalid is returned by Validate for a name that is not a
	// lowercase DNS label we accept. The wrapping error gives the reason.
	ErrInvalid = errors.New("invalid name")
	// ErrReserved is returned by Validate for a well-formed name that
	// the server keeps for itself (see reserved).
	ErrReserved = errors.New("reserved name")
)

// MaxLen is the longest name in bytes: the DNS limit for one label
// (RFC 1035 §2.3.4).
const MaxLen = 63

// reserved are refused by Validate. They are names a visitor or a
// mail, DNS or ACME client could take for the operator's own service, so a
// tunnel must never answer under them. Keep the list sorted: Validate
// searches it with a binary search, and a test checks the order.
var reserved = []string{
	"acme", "admin", "api", "assets", "autoconfig", "autodiscover", "cdn",
	"dns", "ftp", "health", "imap", "localhost", "mail", "metrics", "ns1",
	"ns2", "pop", "smtp", "static", "status", "tunnel", "tunneld", "www",
}

// Validate reports whether name may be a tunnel name. It returns nil, an
// error wrapping ErrInvalid with the reason, or an error wrapping
// ErrReserved.
//
// A tunnel name is one DNS label of 1 to 63 characters from [a-z0-9-] that
// neither starts nor ends with '-'. Labels with "--" in positions 3 and 4
// (such as "xn--…", punycode) are refused: they are reserved for IDNA and
// would let a client register a look-alike of another name. Uppercase is
// invalid rather than folded, because this is the check for names that
// clients ask for, which must already be in the form visitors will see;
// hosts are lowercased by FromHost before lookup.
//
// This is the only place that decides what a valid name is.
func Validate(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalid)
	case len(name) > MaxLen:
		return fmt.Errorf("%w: %s: %d bytes, at most %d allowed",
			ErrInvalid, quoteName(name), len(name), MaxLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			continue
		}
		if c >= 'A' && c <= 'Z' {
			return fmt.Errorf("%w: %s: uppercase %q at offset %d, names are lowercase",
				ErrInvalid, quoteName(name), c, i)
		}
		r, _ := utf8.DecodeRuneInString(name[i:])
		return fmt.Errorf("%w: %s: character %q at offset %d, only a-z, 0-9 and '-' allowed",
			ErrInvalid, quoteName(name), r, i)
	}
	switch {
	case name[0] == '-' || name[len(name)-1] == '-':
		return fmt.Errorf("%w: %q: starts or ends with '-'", ErrInvalid, name)
	case len(name) >= 4 && name[2:4] == "--":
		return fmt.Errorf("%w: %q: '--' in positions 3-4 is reserved for IDNA (punycode) labels",
			ErrInvalid, name)
	}
	if _, found := slices.BinarySearch(reserved, name); found {
		return fmt.Errorf("%w: %q", ErrReserved, name)
	}
	return nil
}

// quoteName quotes a client-supplied name for an error message, cut short so
// that a hostile multi-kilobyte name cannot bloat log lines.
func quoteName(name string) string {
	const limit = MaxLen + 1
	if len(name) <= limit {
		return fmt.Sprintf("%q", name)
	}
	return fmt.Sprintf("%q…", name[:limit])
}

// Word lists for Random: 64 short, friendly, lowercase words each, so a
// name reads well when spoken and (with the number) is unlikely to collide.
// A test checks that every word is [a-z]+ and that the lists have no
// duplicates.
var (
	adjectives = []string{
		"amber", "bold", "brave", "breezy", "bright", "brisk", "calm", "clever",
		"cosmic", "cozy", "crisp", "curious", "dapper", "eager", "early", "fancy",
		"fluffy", "gentle", "giddy", "glad", "golden", "grand", "happy", "hardy",
		"humble", "jaunty", "jolly", "keen", "kind", "lively", "lucky", "mellow",
		"merry", "mighty", "misty", "nimble", "noble", "plucky", "polite", "proud",
		"quick", "quiet", "rapid", "rosy", "rustic", "sandy", "shiny", "silent",
		"silver", "sleek", "snappy", "sparkly", "spry", "steady", "sunny", "swift",
		"tidy", "tiny", "vivid", "warm", "wise", "witty", "zany", "zesty",
	}
	nouns = []string{
		"badger", "bear", "beaver", "bison", "cat", "crane", "deer", "dingo",
		"dolphin", "eagle", "falcon", "ferret", "finch", "fox", "gecko", "hare",
		"hawk", "heron", "ibis", "jackal", "koala", "lark", "lemur", "lion",
		"llama", "lynx", "marmot", "mole", "moose", "newt", "ocelot", "orca",
		"otter", "owl", "panda", "parrot", "pelican", "penguin", "puffin", "quail",
		"rabbit", "raven", "robin", "salmon", "seal", "shark", "sloth", "sparrow",
		"squid", "stoat", "swan", "tapir", "tiger", "toucan", "trout", "turtle",
		"walrus", "weasel", "whale", "wolf", "wombat", "yak", "zebra", "mink",
	}
)

// Random returns a readable random name such as "brisk-otter-4821": an
// adjective, a noun and four digits (1000-9999), chosen with crypto/rand so
// that names cannot be predicted and squatted. The result always passes
// Validate. It is safe for concurrent use.
//
// There are about 37 million such names; the caller still has to check that
// the one it got is free.
func Random() string {
	return fmt.Sprintf("%s-%s-%d",
		adjectives[randIntn(len(adjectives))],
		nouns[randIntn(len(nouns))],
		1000+randIntn(9000))
}

// randIntn returns a uniform random int in [0, n) from crypto/rand.
func randIntn(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		// crypto/rand.Reader does not fail on supported platforms (since Go
		// 1.24 it crashes the program instead of returning an error), so this
		// is unreachable; a panic is better than a predictable name.
		panic(fmt.Sprintf("name: read crypto/rand: %v", err))
	}
	return int(v.Int64())
}
