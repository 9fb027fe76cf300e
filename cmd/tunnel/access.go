package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// Visitor access rules (issue 18): tunneld lets a visitor through to the
// tunnel only with a basic-auth user's password, only from the allowed
// prefixes, and only signed in at its OpenID Connect issuer as an allowed
// identity (--oidc-allow). The rules are the client owner's; tunneld enforces
// them before it opens any stream, and only a bcrypt hash of each password
// leaves this process.

// accessFlags are the access flags of "tunnel http". They apply to every
// TARGET given on the command line (or by --targets); a --config file's
// tunnels may each have their own instead.
func accessFlags() []cli.Flag {
	return []cli.Flag{
		// The env var goes to Value, the command line's to Destination,
		// so that the flag replaces the env var instead of adding to it.
		&cli.GenericFlag{Name: "basic-auth", EnvVars: []string{"TUNNEL_BASIC_AUTH"}, Value: &userList{}, Destination: &userList{},
			Usage: "USER:PASSWORD visitors must give (basic auth); repeat for up to 4 users (the env var: one); only a bcrypt hash goes to tunneld, which strips the Authorization header unless --pass-authorization"},
		&cli.StringSliceFlag{Name: "allow-cidr", EnvVars: []string{"TUNNEL_ALLOW_CIDR"},
			Usage: "only visitors from this prefix (192.0.2.0/24, 2001:db8::/32, an address) may visit; repeatable"},
		&cli.StringSliceFlag{Name: "deny-cidr", EnvVars: []string{"TUNNEL_DENY_CIDR"},
			Usage: "visitors from this prefix are refused, whatever --allow-cidr says; repeatable"},
		&cli.BoolFlag{Name: "pass-authorization", EnvVars: []string{"TUNNEL_PASS_AUTHORIZATION"},
			Usage: "with --basic-auth, pass the visitor's Authorization header on to the service"},
		&cli.StringSliceFlag{Name: "oidc-allow", EnvVars: []string{"TUNNEL_OIDC_ALLOW"},
			Usage: "visitors sign in at tunneld's OpenID Connect issuer and only this EMAIL or @DOMAIN may visit; repeatable (env: comma-separated); the service gets the email in X-Tunnel-User-Email"},
	}
}

// userList is --basic-auth's value: each use adds one USER:PASSWORD, whole
// (a password may hold commas, which a string slice flag would split on).
type userList struct{ list []string }

func (u *userList) Set(v string) error {
	u.list = append(u.list, v)
	return nil
}

// String never shows the passwords: urfave/cli prints it in --help.
func (u *userList) String() string { return "" }

// accessOptions are the access settings of the command line or its env
// vars: set says one of them was given, and then they apply to every
// tunnel, the file's included.
type accessOptions struct {
	set       bool
	basicAuth []string
	allow     []string
	deny      []string
	pass      bool
	oidc      []string
}

// accessSettings reads the access flags, or for bare "tunnel" (which has
// no such flags) their env vars alone, as httpSetting does for --name.
// "tunnel tcp" and "tunnel tls" take none: the rules are HTTP's.
func accessSettings(c *cli.Context) accessOptions {
	var o accessOptions
	switch c.Command.Name {
	case proto.KindTCP, proto.KindTLS:
		return o
	case proto.KindHTTP:
		for _, f := range c.Command.Flags {
			if g, ok := f.(*cli.GenericFlag); ok && g.Name == "basic-auth" {
				o.basicAuth = g.Destination.(*userList).list
				if len(o.basicAuth) == 0 {
					o.basicAuth = g.Value.(*userList).list
				}
			}
		}
		o.allow, o.deny, o.pass = c.StringSlice("allow-cidr"), c.StringSlice("deny-cidr"), c.Bool("pass-authorization")
		o.oidc = c.StringSlice("oidc-allow")
		o.set = c.IsSet("basic-auth") || c.IsSet("allow-cidr") || c.IsSet("deny-cidr") || c.IsSet("pass-authorization") || c.IsSet("oidc-allow")
		return o
	}
	list := func(env string) []string {
		v, ok := os.LookupEnv(env)
		if ok {
			o.set = true
		}
		return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
	}
	if v, ok := os.LookupEnv("TUNNEL_BASIC_AUTH"); ok {
		o.set, o.basicAuth = true, []string{v}
	}
	o.allow, o.deny, o.oidc = list("TUNNEL_ALLOW_CIDR"), list("TUNNEL_DENY_CIDR"), list("TUNNEL_OIDC_ALLOW")
	if v, ok := os.LookupEnv("TUNNEL_PASS_AUTHORIZATION"); ok {
		o.set, o.pass = true, v == "true" || v == "1"
	}
	return o
}

// applyAccess gives each HTTP tunnel its access rules: the command line's
// (or env vars') for all when they were given, else for tunnels from the
// file their own (fromFile[i] is tunnels[i]'s entry; nil when the tunnels
// did not come from the file). TCP and TLS tunnels take none: a file
// tunnel of theirs that has some is an error.
func applyAccess(tunnels []mux.Tunnel, cmd accessOptions, fromFile []fileTunnel) error {
	isHTTP := func(t mux.Tunnel) bool { return t.Kind == "" || t.Kind == proto.KindHTTP }
	if cmd.set || fromFile == nil {
		// One set of rules for all: each password hashed once.
		a, err := cmd.access()
		if err != nil {
			return err
		}
		for i := range tunnels {
			if isHTTP(tunnels[i]) {
				tunnels[i].Access = a
			}
		}
		return nil
	}
	for i := range tunnels {
		f := fromFile[i]
		o := accessOptions{basicAuth: f.BasicAuth, allow: f.AllowCIDR, deny: f.DenyCIDR, pass: f.PassAuthorization, oidc: f.OIDCAllow}
		a, err := o.access()
		if err != nil {
			return fmt.Errorf("--config: tunnel %d: %w", i+1, err)
		}
		if a != nil && !isHTTP(tunnels[i]) {
			return fmt.Errorf("--config: tunnel %d: basic_auth, allow_cidr, deny_cidr and oidc_allow are for http tunnels, not %s", i+1, tunnels[i].Kind)
		}
		tunnels[i].Access = a
	}
	return nil
}

// bcryptCost is the cost of the hashes sent: bcrypt's default, about 50 ms
// a password on a laptop, paid once at start-up here and at each visitor's
// first request by tunneld (which accepts up to 12). Tests lower it.
var bcryptCost = bcrypt.DefaultCost

// access checks the options and makes the rules of them, hashing each
// password; nil when there is none.
func (o accessOptions) access() (*proto.Access, error) {
	if len(o.basicAuth) == 0 && len(o.allow) == 0 && len(o.deny) == 0 && len(o.oidc) == 0 {
		if o.pass {
			return nil, errors.New("--pass-authorization goes with --basic-auth")
		}
		return nil, nil
	}
	if o.pass && len(o.basicAuth) == 0 {
		return nil, errors.New("--pass-authorization goes with --basic-auth")
	}
	a := &proto.Access{PassAuthorization: o.pass}
	if len(o.basicAuth) > proto.MaxAccessUsers {
		return nil, fmt.Errorf("%d basic-auth users, at most %d", len(o.basicAuth), proto.MaxAccessUsers)
	}
	if n := len(o.allow) + len(o.deny); n > proto.MaxAccessCIDRs {
		return nil, fmt.Errorf("%d prefixes, at most %d allowed and denied together", n, proto.MaxAccessCIDRs)
	}
	for _, up := range o.basicAuth {
		u, err := hashUser(up)
		if err != nil {
			return nil, err
		}
		for _, o := range a.BasicAuth {
			if o.User == u.User {
				return nil, fmt.Errorf("basic-auth user %q given twice", u.User)
			}
		}
		a.BasicAuth = append(a.BasicAuth, u)
	}
	var err error
	if a.AllowCIDR, err = prefixes("allow-cidr", o.allow); err != nil {
		return nil, err
	}
	if a.DenyCIDR, err = prefixes("deny-cidr", o.deny); err != nil {
		return nil, err
	}
	if a.OIDCAllow, err = oidcAllow(o.oidc); err != nil {
		return nil, err
	}
	return a, nil
}

// oidcAllow checks --oidc-allow entries as far as the client can: tunneld
// (which the client does not import) checks them again, whole. Each is an
// email address or @DOMAIN.
func oidcAllow(list []string) ([]string, error) {
	if len(list) > proto.MaxAccessOIDC {
		return nil, fmt.Errorf("%d --oidc-allow entries, at most %d", len(list), proto.MaxAccessOIDC)
	}
	var out []string
	for _, e := range list {
		e = strings.ToLower(strings.TrimSpace(e))
		_, domain, ok := strings.Cut(e, "@")
		switch {
		case !ok || domain == "" || strings.Contains(domain, "@"):
			return nil, fmt.Errorf("--oidc-allow %q: want an email address (ann@example.com) or @DOMAIN (@example.com)", e)
		case len(e) > proto.MaxOIDCAllow:
			return nil, fmt.Errorf("--oidc-allow %q: longer than %d bytes", e, proto.MaxOIDCAllow)
		case strings.ContainsFunc(e, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			return nil, fmt.Errorf("--oidc-allow %q: space or control character", e)
		}
		out = append(out, e)
	}
	return out, nil
}

// hashUser reads USER:PASSWORD and hashes the password with bcrypt at its
// bcryptCost. bcrypt reads 72 bytes at most,
// so a longer password is refused rather than silently cut.
func hashUser(up string) (proto.BasicAuthUser, error) {
	user, pass, ok := strings.Cut(up, ":")
	switch {
	case !ok:
		return proto.BasicAuthUser{}, errors.New("basic-auth: want USER:PASSWORD")
	case user == "":
		return proto.BasicAuthUser{}, errors.New("basic-auth: empty USER before ':'")
	case len(user) > proto.MaxAccessUser:
		return proto.BasicAuthUser{}, fmt.Errorf("basic-auth user: %d bytes, at most %d", len(user), proto.MaxAccessUser)
	case strings.ContainsFunc(user, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return proto.BasicAuthUser{}, fmt.Errorf("basic-auth user %q: control character", user)
	case pass == "":
		return proto.BasicAuthUser{}, fmt.Errorf("basic-auth user %q: empty PASSWORD", user)
	case len(pass) > 72:
		return proto.BasicAuthUser{}, fmt.Errorf("basic-auth user %q: the password has %d bytes, bcrypt takes at most 72", user, len(pass))
	}
	if _, err := bcrypt.Cost([]byte(pass)); err == nil {
		return proto.BasicAuthUser{User: user, Hash: pass}, nil // already a hash
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcryptCost)
	if err != nil {
		return proto.BasicAuthUser{}, fmt.Errorf("basic-auth user %q: %w", user, err)
	}
	return proto.BasicAuthUser{User: user, Hash: string(h)}, nil
}

// prefixes checks prefixes as tunneld will, taking a bare address for
// itself alone (/32 or /128).
func prefixes(flag string, list []string) ([]string, error) {
	var out []string
	for _, s := range list {
		s = strings.TrimSpace(s)
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			out = append(out, netip.PrefixFrom(a, a.BitLen()).String())
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--%s %q: want a prefix such as 192.0.2.0/24 or 2001:db8::/32, or one address", flag, s)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("--%s %q: host bits set, did you mean %s?", flag, s, p.Masked())
		}
		out = append(out, p.String())
	}
	return out, nil
}

// describeAccess says what rules a tunnel has, for its "tunnel ready" log
// line: "basic auth (ann, bo); allow 192.0.2.0/24; deny 192.0.2.66/32",
// "" for none. Never a password or hash.
func describeAccess(a *proto.Access) string {
	if a.Empty() {
		return ""
	}
	var parts []string
	if len(a.BasicAuth) > 0 {
		users := make([]string, len(a.BasicAuth))
		for i, u := range a.BasicAuth {
			users[i] = u.User
		}
		p := "basic auth (" + strings.Join(users, ", ") + ")"
		if a.PassAuthorization {
			p += ", Authorization passed on"
		}
		parts = append(parts, p)
	}
	if len(a.AllowCIDR) > 0 {
		parts = append(parts, "allow "+strings.Join(a.AllowCIDR, ", "))
	}
	if len(a.DenyCIDR) > 0 {
		parts = append(parts, "deny "+strings.Join(a.DenyCIDR, ", "))
	}
	if len(a.OIDCAllow) > 0 {
		parts = append(parts, "sign-in as "+strings.Join(a.OIDCAllow, ", "))
	}
	return strings.Join(parts, "; ")
}
