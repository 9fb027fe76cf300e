package certs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Files names the static certificates to load: PEM pairs, and
// directories in which every NAME.crt goes with its NAME.key.
type Files struct {
	// Pairs are certificate chain and private key file paths.
	Pairs []Pair
	// Dirs are scanned at every load, so a certificate added to one is
	// picked up by Reload.
	Dirs []string
	// Require are server names the set must cover with an unexpired
	// certificate; "*.parent" asks for a wildcard certificate for parent.
	// A load that leaves one uncovered fails with a *NotCoveredError (and
	// Reload keeps the previous set). Empty requires nothing.
	Require []string
}

// NotCoveredError is a load whose certificates do not cover every name
// Files.Require asks for: a permanent mistake, since visitors to those
// names would get a TLS alert.
type NotCoveredError struct {
	// Missing are the required names that no unexpired certificate covers.
	Missing []string
	// Loaded are the certificate files read, each with the DNS names it
	// gives, and whether it has expired.
	Loaded []LoadedFile
}

// LoadedFile is one certificate file of a load, for NotCoveredError.
type LoadedFile struct {
	Path     string
	DNSNames []string
	Expired  bool
}

func (e *NotCoveredError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "static certificates do not cover %s; loaded: ", strings.Join(e.Missing, ", "))
	for i, f := range e.Loaded {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%s", f.Path, strings.Join(f.DNSNames, ", "))
		if f.Expired {
			b.WriteString("; expired")
		}
		b.WriteString(")")
	}
	return b.String()
}

// Pair is one PEM certificate chain file and its private key file.
type Pair struct{ Cert, Key string }

// Static holds certificates obtained elsewhere (a wildcard made by
// DNS-01, a company CA's) and picks one by TLS server name. The server
// serves a name from these when one covers it and asks ACME only for the
// rest. Safe for concurrent use; Reload swaps the set atomically, so
// handshakes in progress and established connections are untouched.
type Static struct {
	files Files

	mu     sync.RWMutex
	byName map[string]*tls.Certificate // "host" or "*.parent", lowercase
	first  *tls.Certificate            // for clients that send no SNI
}

// LoadStatic reads files. It fails if any pair does not load or the
// whole set is empty.
func LoadStatic(files Files) (*Static, error) {
	c := &Static{files: files}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again and, if they all load, replaces the set. On
// error the previous set stays in use.
func (c *Static) Reload() error {
	pairs := append([]Pair(nil), c.files.Pairs...)
	for _, dir := range c.files.Dirs {
		found, err := pairsInDir(dir)
		if err != nil {
			return err
		}
		pairs = append(pairs, found...)
	}
	if len(pairs) == 0 {
		return errors.New("static certificates: no certificate found")
	}
	byName := make(map[string]*tls.Certificate)
	var first *tls.Certificate
	now := time.Now()
	loaded := make([]LoadedFile, 0, len(pairs))
	for _, p := range pairs {
		cert, err := tls.LoadX509KeyPair(p.Cert, p.Key)
		if err != nil {
			return fmt.Errorf("static certificates: load %s and %s: %w", p.Cert, p.Key, err)
		}
		if len(cert.Leaf.DNSNames) == 0 {
			return fmt.Errorf("static certificates: %s names no DNS name", p.Cert)
		}
		if first == nil {
			first = &cert
		}
		loaded = append(loaded, LoadedFile{Path: p.Cert, DNSNames: cert.Leaf.DNSNames, Expired: now.After(cert.Leaf.NotAfter)})
		for _, n := range cert.Leaf.DNSNames {
			n = strings.ToLower(n)
			// A later certificate for the same name wins only if it lasts
			// longer, so a renewed file placed beside the old one is used.
			if old, ok := byName[n]; !ok || cert.Leaf.NotAfter.After(old.Leaf.NotAfter) {
				byName[n] = &cert
			}
		}
	}
	var missing []string
	for _, n := range c.files.Require {
		if lookup(byName, first, n, now) == nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return &NotCoveredError{Missing: missing, Loaded: loaded}
	}
	c.mu.Lock()
	c.byName, c.first = byName, first
	c.mu.Unlock()
	return nil
}

// pairsInDir lists NAME.crt files in dir with their NAME.key, in name order.
func pairsInDir(dir string) ([]Pair, error) {
	certs, err := filepath.Glob(filepath.Join(dir, "*.crt"))
	if err != nil {
		return nil, fmt.Errorf("static certificates: %s: %w", dir, err)
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("static certificates: %w", err)
	}
	sort.Strings(certs)
	var pairs []Pair
	for _, cert := range certs {
		key := strings.TrimSuffix(cert, ".crt") + ".key"
		if _, err := os.Stat(key); err != nil {
			return nil, fmt.Errorf("static certificates: %s has no key beside it: %w", cert, err)
		}
		pairs = append(pairs, Pair{Cert: cert, Key: key})
	}
	return pairs, nil
}

// Lookup returns the certificate covering serverName (exactly or by a
// wildcard one label deep), or nil. An empty serverName gets the first
// certificate loaded. Expired certificates are not returned, so ACME can
// take over a name whose static certificate lapsed.
func (c *Static) Lookup(serverName string) *tls.Certificate {
	if c == nil {
		return nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return lookup(c.byName, c.first, serverName, time.Now())
}

// lookup is Lookup on a set, as of now. A serverName of "*.parent" finds
// a wildcard certificate for parent only.
func lookup(byName map[string]*tls.Certificate, first *tls.Certificate, serverName string, now time.Time) *tls.Certificate {
	name := strings.TrimSuffix(strings.ToLower(serverName), ".")
	cert := first
	if name != "" {
		cert = byName[name]
		if i := strings.IndexByte(name, '.'); cert == nil && i > 0 {
			cert = byName["*"+name[i:]]
		}
	}
	if cert == nil || now.After(cert.Leaf.NotAfter) {
		return nil
	}
	return cert
}
