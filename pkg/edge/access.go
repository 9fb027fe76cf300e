// Visitor access rules (issue 18): a tunnel's owner may ask for basic auth,
// address rules and OpenID Connect login, which the edge enforces before it
// takes a slot of the tunnel or opens a stream, so a refused visitor costs
// the client nothing.

package edge

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/tunnelhq/tunnel/internal/expiring"
	"github.com/tunnelhq/tunnel/pkg/oidc"
	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// Why a visitor is refused by the tunnel's access rules; answer maps each
// to its status and page.
var (
	errAddrDenied   = errors.New("visitor address not allowed") // 403: AllowCIDR or DenyCIDR
	errAuthRequired = errors.New("basic auth required")         // 401: no, malformed or wrong credentials
	errAuthBusy     = errors.New("password checks all busy")    // 503: every bcrypt slot is taken
)

// authWaitError: the visitor's source sent too many wrong passwords and
// must wait this long before another is checked (429).
type authWaitError struct{ wait time.Duration }

func (e *authWaitError) Error() string { return fmt.Sprintf("wrong passwords: wait %v", e.wait) }

// maxBcryptCost bounds the cost of a hash a client may send: each check of
// a visitor's password costs the server 2^cost rounds, and a client that
// chose 31 would make one check take hours. The client uses
// bcrypt.DefaultCost (10); 12 leaves an owner room to ask for more.
const maxBcryptCost = 12

// verifiedSize and verifiedTTL bound the memory of credentials already
// checked, per tunnel (see remembered).
const (
	verifiedSize = 256
	verifiedTTL  = 10 * time.Minute
)

// newBcryptSlots makes the Server's bound on password checks running at
// once: one per core (at least two), so that guesses from many addresses
// cannot take every core; a visitor that finds them all taken is told to
// retry (503).
func newBcryptSlots() chan struct{} { return make(chan struct{}, max(2, runtime.GOMAXPROCS(0))) }

// accessRules are one tunnel's proto.Access, checked and parsed. Safe for
// concurrent use; the rules never change after compileAccess.
type accessRules struct {
	users     []accessUser
	allow     []netip.Prefix
	deny      []netip.Prefix
	passAuth  bool
	oidc      *oidc.Allow  // nil: no login
	summary   AccessStatus // what the status page and /api/tunnels show: no hash
	cacheSalt [32]byte     // keys verified, so its keys say nothing of passwords

	mu       sync.Mutex
	verified *expiring.Table[[32]byte, struct{}] // Authorization values that passed, by verifiedKey
}

// sameRules reports whether a and b enforce the same rules (nil: none).
// The sign-in allow list is compared through the summary, which lists it.
func sameRules(a, b *accessRules) bool {
	if a == nil || b == nil {
		return a == b
	}
	return slices.EqualFunc(a.users, b.users, func(x, y accessUser) bool {
		return x.name == y.name && bytes.Equal(x.hash, y.hash)
	}) && slices.Equal(a.allow, b.allow) && slices.Equal(a.deny, b.deny) &&
		a.passAuth == b.passAuth && reflect.DeepEqual(a.summary, b.summary)
}

type accessUser struct {
	name string
	hash []byte
}

// AccessStatus is what the status page and /api/tunnels show of a tunnel's
// access rules: never the password hashes.
type AccessStatus struct {
	BasicAuthUsers    []string `json:"basic_auth_users,omitempty"`
	AllowCIDR         []string `json:"allow_cidr,omitempty"`
	DenyCIDR          []string `json:"deny_cidr,omitempty"`
	PassAuthorization bool     `json:"pass_authorization,omitempty"`
	OIDCAllow         []string `json:"oidc_allow,omitempty"`
}

// errNoIssuer refuses a tunnel that asks for login on a server without an
// issuer: it could not be enforced.
var errNoIssuer = errors.New("--oidc-allow asks for OpenID Connect login, but this server has no issuer configured (tunneld --oidc-issuer)")

// compileAccess checks a tunnel's proto.Access and parses it; nil for no
// rule. login is whether the server has an OpenID Connect issuer. Its
// errors are the refusal's message, for the owner to read.
func compileAccess(a *proto.Access, login bool) (*accessRules, error) {
	if a.Empty() {
		if a != nil && a.PassAuthorization {
			return nil, errors.New("pass_authorization without basic auth: there is nothing to pass on")
		}
		return nil, nil
	}
	r := &accessRules{passAuth: a.PassAuthorization}
	if r.passAuth && len(a.BasicAuth) == 0 {
		return nil, errors.New("pass_authorization without basic auth: there is nothing to pass on")
	}
	for _, u := range a.BasicAuth {
		if err := checkUser(u.User); err != nil {
			return nil, err
		}
		for _, o := range r.users {
			if o.name == u.User {
				return nil, fmt.Errorf("basic auth user %q given twice", u.User)
			}
		}
		cost, err := bcrypt.Cost([]byte(u.Hash))
		if err != nil {
			return nil, fmt.Errorf("basic auth user %q: password hash is not bcrypt: %v", u.User, err)
		}
		if cost > maxBcryptCost {
			return nil, fmt.Errorf("basic auth user %q: bcrypt cost %d, at most %d", u.User, cost, maxBcryptCost)
		}
		r.users = append(r.users, accessUser{name: u.User, hash: []byte(u.Hash)})
		r.summary.BasicAuthUsers = append(r.summary.BasicAuthUsers, u.User)
	}
	var err error
	if r.allow, err = parsePrefixes("allow_cidr", a.AllowCIDR); err != nil {
		return nil, err
	}
	if r.deny, err = parsePrefixes("deny_cidr", a.DenyCIDR); err != nil {
		return nil, err
	}
	r.summary.AllowCIDR, r.summary.DenyCIDR = a.AllowCIDR, a.DenyCIDR
	r.summary.PassAuthorization = a.PassAuthorization
	if len(a.OIDCAllow) > 0 {
		if !login {
			return nil, errNoIssuer
		}
		if r.oidc, err = oidc.ParseAllow(a.OIDCAllow); err != nil {
			return nil, err
		}
		r.summary.OIDCAllow = r.oidc.List()
	}
	if len(r.users) > 0 {
		rand.Read(r.cacheSalt[:])
		r.verified = expiring.New[[32]byte, struct{}](verifiedSize, verifiedTTL)
	}
	return r, nil
}

// checkUser refuses user names a browser cannot send: empty, with a ':'
// (basic auth's separator) or a control character.
func checkUser(u string) error {
	if u == "" {
		return errors.New("basic auth: empty user name")
	}
	if strings.ContainsRune(u, ':') {
		return fmt.Errorf("basic auth user %q: a user name cannot hold ':'", u)
	}
	for _, c := range u {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("basic auth user %q: control character in the user name", u)
		}
	}
	return nil
}

// parsePrefixes parses CIDR prefixes, refusing those with host bits set
// (10.1.2.3/8 is most likely a typo for a /32 or for 10.0.0.0/8).
func parsePrefixes(field string, list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, c := range list {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("%s %q: not a CIDR prefix such as 192.0.2.0/24 or 2001:db8::/32", field, c)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("%s %q: host bits set, did you mean %s?", field, c, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

// hasRule reports whether the request was given any access rule, for the
// operator's "require some rule" policies.
func hasRule(a *proto.Access) bool { return !a.Empty() }

// checkAccessPolicy applies the operator's policies to the HTTP tunnels a
// Hello asks for: a token may require or forbid access rules (id nil:
// anonymous, under Config.RequireAccessAnonymous). TCP and TLS tunnels
// cannot carry them, so a requirement leaves them alone.
func (s *Server) checkAccessPolicy(id *token.Identity, hello *proto.Hello) *proto.Error {
	require := id == nil && s.cfg.RequireAccessAnonymous || id != nil && id.AccessRequired
	forbid := id != nil && id.AccessForbidden
	for i, t := range hello.Tunnels {
		switch {
		case require && t.Kind == proto.KindHTTP && !hasRule(t.Access):
			who := "this server requires"
			if id != nil {
				who = "this token requires"
			}
			return &proto.Error{Code: proto.CodeBadRequest, Message: fmt.Sprintf(
				"tunnel %d (%s): %s an access rule on every http tunnel: --basic-auth, --allow-cidr, --deny-cidr or --oidc-allow", i+1, tunnelLabel(t), who)}
		case forbid && hasRule(t.Access):
			return &proto.Error{Code: proto.CodeBadRequest, Message: fmt.Sprintf(
				"tunnel %d (%s): this token may not set access rules (--basic-auth, --allow-cidr, --deny-cidr, --oidc-allow)", i+1, tunnelLabel(t))}
		}
	}
	return nil
}

// compileAccessAll compiles the access rules of hello's tunnels, in order;
// login: the server has an OpenID Connect issuer.
func compileAccessAll(hello *proto.Hello, login bool) ([]*accessRules, *proto.Error) {
	var out []*accessRules
	for i, t := range hello.Tunnels {
		if !t.Access.Empty() && t.Kind != proto.KindHTTP {
			return nil, &proto.Error{Code: proto.CodeBadRequest, Message: fmt.Sprintf(
				"tunnel %d (%s): access rules are for http tunnels, not %s", i+1, tunnelLabel(t), t.Kind)}
		}
		r, err := compileAccess(t.Access, login)
		if err != nil {
			return nil, &proto.Error{Code: proto.CodeBadRequest, Message: fmt.Sprintf("tunnel %d (%s): access: %v", i+1, tunnelLabel(t), err)}
		}
		if r != nil && out == nil {
			out = make([]*accessRules, len(hello.Tunnels))
		}
		if r != nil {
			out[i] = r
		}
	}
	return out, nil
}

func tunnelLabel(t proto.TunnelRequest) string {
	if t.Name == "" {
		return "random name"
	}
	return t.Name
}

// accessByName maps names (in the order of the Hello) to their rules.
func accessByName(rules []*accessRules, names []string) map[string]*accessRules {
	var m map[string]*accessRules
	for i, r := range rules {
		if r == nil {
			continue
		}
		if m == nil {
			m = make(map[string]*accessRules)
		}
		m[names[i]] = r
	}
	return m
}

// checkAccess applies the tunnel's rules to r: the visitor's address (as
// visitorAddr believes it, trusted proxies respected) first, since that
// costs nothing, then basic auth. nil lets the request through.
func (s *Server) checkAccess(r *http.Request, rules *accessRules) error {
	if rules == nil {
		return nil
	}
	if !s.addrPasses(r, rules) {
		return errAddrDenied
	}
	if len(rules.users) == 0 {
		return nil
	}
	auth := r.Header["Authorization"]
	switch {
	case len(auth) == 0:
		return errAuthRequired // a browser's first try: not a failure
	case len(auth) == 1 && rules.remembered(auth[0]):
		return nil // checked lately: no bcrypt, and no guess to limit
	}
	src := s.visitorSource(r)
	if d := s.limits.VisitorAuthWait(src); d > 0 {
		return &authWaitError{wait: d}
	}
	user, pass, ok := r.BasicAuth()
	if len(auth) != 1 || !ok {
		s.limits.VisitorAuthFailed(src, s.log)
		return errAuthRequired
	}
	ok, busy := rules.verify(user, pass, s.bcryptSlots)
	if busy {
		return errAuthBusy
	}
	if !ok {
		s.limits.VisitorAuthFailed(src, s.log)
		return errAuthRequired
	}
	rules.remember(auth[0])
	return nil
}

// addrPasses applies the address rules of rules (not nil) to r's visitor.
func (s *Server) addrPasses(r *http.Request, rules *accessRules) bool {
	if len(rules.allow) == 0 && len(rules.deny) == 0 {
		return true
	}
	return rules.addrAllowed(s.visitorAddr(r))
}

// admitsAtOnce reports whether rules let r through on what costs nothing
// and changes nothing: no login to check, the visitor's address allowed,
// and, where the tunnel has users, the one Authorization header a bcrypt
// check passed lately. The edge's own HTTP/1.1 path serves such requests
// itself; every other one goes to checkAccess on net/http's path, which
// counts the failures, pays bcrypt and answers.
func (s *Server) admitsAtOnce(r *http.Request, rules *accessRules) bool {
	if rules == nil {
		return true
	}
	if rules.oidc != nil || !s.addrPasses(r, rules) {
		return false
	}
	if len(rules.users) == 0 {
		return true
	}
	auth := r.Header["Authorization"]
	return len(auth) == 1 && rules.remembered(auth[0])
}

// stripsAuth reports whether a request that passed rules (nil: none)
// goes to the service without its Authorization: the tunnel checked it
// (basic auth) and its owner did not ask for it to be passed on.
func (r *accessRules) stripsAuth() bool { return r != nil && len(r.users) > 0 && !r.passAuth }

// addrAllowed reports whether the visitor at addr (host:port, or a bare
// address from X-Forwarded-For) may visit: deny wins over allow. An
// address that does not parse is refused.
func (r *accessRules) addrAllowed(addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return false
		}
		a = ap.Addr()
	}
	a = a.Unmap().WithZone("")
	for _, p := range r.deny {
		if p.Contains(a) {
			return false
		}
	}
	if len(r.allow) == 0 {
		return true
	}
	for _, p := range r.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// verifiedKey is the key of an Authorization header value in the memory
// of credentials that passed: a SHA-256 salted per tunnel, so the table
// holds nothing a password could be read back from. A usual header is
// hashed from a buffer on the stack.
func (r *accessRules) verifiedKey(header string) [32]byte {
	var b [256]byte
	buf := append(b[:0], r.cacheSalt[:]...)
	return sha256.Sum256(append(buf, header...))
}

// remembered reports whether the Authorization header value passed verify
// within verifiedTTL: a visitor's browser sends the same one with every
// request, and paying bcrypt's tens of milliseconds on each would make a
// page of fifty assets take seconds.
func (r *accessRules) remembered(header string) bool {
	key := r.verifiedKey(header)
	r.mu.Lock()
	_, hit := r.verified.Get(key, time.Now())
	r.mu.Unlock()
	return hit
}

// remember notes that the Authorization header value passed verify.
func (r *accessRules) remember(header string) {
	key := r.verifiedKey(header)
	r.mu.Lock()
	r.verified.Put(key, struct{}{}, time.Now())
	r.mu.Unlock()
}

// verify checks a visitor's credentials against the users with one bcrypt
// check whatever the user name (an unknown one is checked against a real
// hash and then refused), so the time taken tells nothing about which
// names exist. busy: none of slots was free, nothing was checked.
func (r *accessRules) verify(user, pass string, slots chan struct{}) (ok, busy bool) {
	hash, known := r.users[0].hash, 0
	for _, u := range r.users {
		if subtle.ConstantTimeCompare([]byte(u.name), []byte(user)) == 1 {
			hash, known = u.hash, 1
		}
	}
	if len(pass) > 72 { // bcrypt reads no further: more cannot be the password the client hashed
		known = 0
	}
	select {
	case slots <- struct{}{}:
	default:
		return false, true
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(pass))
	<-slots
	return err == nil && known == 1, false
}
