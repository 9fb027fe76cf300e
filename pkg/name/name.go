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
	"strings"
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
// *InvalidError (which wraps ErrInvalid) listing every fault of the name at
// once, or an error wrapping ErrReserved.
//
// A tunnel name is one DNS label of 1 to 63 characters from [a-z0-9-] that
// neither starts nor ends with '-'. Labels with "--" in positions 3 and 4
// (such as "xn--…", punycode) are refused: they are reserved for IDNA and
// would let a client register a look-alike of another name. Uppercase is
// invalid rather than folded, because this is the check for names that
// clients ask for, which must already be in the form visitors will see;
// hosts are lowercased by FromHost before lookup. A reserved name is
// reported only for a name that is otherwise valid.
//
// Every fault, not the first: a user who fixes one and runs again should
// not meet the next one then.
//
// This is the only place that decides what a valid name is.
func Validate(name string) error {
	if name == "" {
		return &InvalidError{Name: name, Faults: []string{"empty"}}
	}
	var faults []string
	if len(name) > MaxLen {
		faults = append(faults, fmt.Sprintf("%d bytes, at most %d allowed", len(name), MaxLen))
	}
	var upper, other charList
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-':
		case r >= 'A' && r <= 'Z':
			upper.add(fmt.Sprintf("%q at offset %d", r, i))
		case r == utf8.RuneError:
			other.add(fmt.Sprintf("byte 0x%02x at offset %d", name[i], i))
		default:
			other.add(fmt.Sprintf("%q at offset %d", r, i))
		}
	}
	if upper.n > 0 {
		faults = append(faults, "uppercase "+upper.String()+": names are lowercase")
	}
	if other.n > 0 {
		faults = append(faults, "character "+other.String()+": only a-z, 0-9 and '-' allowed")
	}
	switch starts, ends := name[0] == '-', name[len(name)-1] == '-'; {
	case starts && ends:
		faults = append(faults, "starts and ends with '-'")
	case starts:
		faults = append(faults, "starts with '-'")
	case ends:
		faults = append(faults, "ends with '-'")
	}
	if len(name) >= 4 && name[2:4] == "--" {
		faults = append(faults, "'--' in positions 3-4 is reserved for IDNA (punycode) labels")
	}
	if len(faults) > 0 {
		return &InvalidError{Name: name, Faults: faults}
	}
	if _, found := slices.BinarySearch(reserved, name); found {
		return fmt.Errorf("%w: %q", ErrReserved, name)
	}
	return nil
}

// InvalidError is Validate's answer for a name that is not a valid label:
// every fault found, in the order of the rules. It wraps ErrInvalid.
type InvalidError struct {
	// Name is the name checked, whole; Error quotes it cut short.
	Name string
	// Faults says what is wrong, one entry per rule broken, such as
	// "uppercase 'W' at offset 0: names are lowercase".
	Faults []string
}

// Error gives every fault on one line, separated by "; ", so that it fits
// a log line, a protocol message and a terminal alike:
//
//	invalid name: "Wiki_": uppercase 'W' at offset 0: names are lowercase; character '_' at offset 4: ...
func (e *InvalidError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrInvalid, quoteName(e.Name), strings.Join(e.Faults, "; "))
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

// maxListed bounds the characters one fault lists, so that a hostile
// multi-kilobyte name gives a short message all the same.
const maxListed = 5

// charList collects the offending characters of one kind for a fault.
type charList struct {
	items []string
	n     int // all of them, listed or not
}

func (l *charList) add(s string) {
	if len(l.items) < maxListed {
		l.items = append(l.items, s)
	}
	l.n++
}

func (l charList) String() string {
	s := strings.Join(l.items, ", ")
	if more := l.n - len(l.items); more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	return s
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
