package oidc

import (
	"fmt"
	"strings"
)

// Allow is a tunnel's list of identities that may pass its login: exact
// email addresses and whole domains. Comparison ignores case. The zero
// Allow lets nobody in. Safe for concurrent use; it never changes.
type Allow struct {
	emails  map[string]bool
	domains map[string]bool
	list    []string // as given, lowercased: for the status page
}

// ParseAllow reads a tunnel's --oidc-allow entries: "ann@example.com" or
// "@example.com" (every address at example.com, not its subdomains). Its
// errors are for the tunnel's owner to read.
func ParseAllow(entries []string) (*Allow, error) {
	a := &Allow{emails: make(map[string]bool), domains: make(map[string]bool)}
	for _, e := range entries {
		e = strings.ToLower(strings.TrimSpace(e))
		local, domain, ok := strings.Cut(e, "@")
		switch {
		case !ok || domain == "" || strings.Contains(domain, "@"):
			return nil, fmt.Errorf("oidc_allow %q: want an email address (ann@example.com) or @DOMAIN (@example.com)", e)
		case len(e) > maxEmail:
			return nil, fmt.Errorf("oidc_allow %q: longer than %d bytes", e, maxEmail)
		case strings.ContainsFunc(e, func(r rune) bool { return r <= ' ' || r == 0x7f || r == ',' }):
			return nil, fmt.Errorf("oidc_allow %q: space, comma or control character", e)
		case !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, "."):
			return nil, fmt.Errorf("oidc_allow %q: the domain %q is not a domain name such as example.com", e, domain)
		}
		if local == "" {
			a.domains[domain] = true
		} else {
			a.emails[e] = true
		}
		a.list = append(a.list, e)
	}
	return a, nil
}

// Permits reports whether the verified email may visit.
func (a *Allow) Permits(email string) bool {
	if a == nil {
		return false
	}
	email = strings.ToLower(email)
	if a.emails[email] {
		return true
	}
	i := strings.LastIndexByte(email, '@')
	return i >= 0 && a.domains[email[i+1:]]
}

// List returns the entries, lowercased, in the order given.
func (a *Allow) List() []string {
	if a == nil {
		return nil
	}
	return a.list
}
