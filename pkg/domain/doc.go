// Package domain is what tunneld knows about custom domains: names such as
// wiki.example.org that a client asks to serve next to its NAME.DOMAIN.
//
// It is a package of its own because a custom domain is a name the operator
// does not own: before tunneld serves one, or asks an ACME CA for a
// certificate for it, it must see that the domain's owner pointed it at the
// tunnel. That check talks to DNS on behalf of whoever holds a token, so it
// is bounded here, in one place, in time (Config.Timeout per check) and in
// rate (Config.Rate, Config.Burst across all checks): a token holder cannot
// make tunneld do unbounded DNS work by asking for many domains.
//
// The tokens file (pkg/token) uses Validate and ValidatePattern for the
// domains a token may claim, and Match to decide a claim; the edge uses a
// Checker before serving and periodically after.
//
// # What the DNS check accepts
//
// A domain D is verified for a tunnel whose public host is NAME.DOMAIN and
// whose token has the label L when either record exists:
//
//	D.          CNAME  NAME.DOMAIN.
//	_tunnel.D.  TXT    "L"
//
// The CNAME is the usual way (the visitor's lookup then ends at tunneld's
// address). The TXT record is for a domain that cannot be a CNAME, an apex
// such as example.org, whose A/AAAA records the owner points at tunneld
// by hand; its value is the token's label exactly, one string, no prefix.
// Names compare without case and without the trailing dot.
//
// # Patterns
//
// A token's entry lists exact domains ("wiki.example.org") or wildcards
// ("*.apps.example.org"). A wildcard's star stands for exactly one label, as
// in a TLS certificate: "*.apps.example.org" allows "a.apps.example.org",
// not "apps.example.org" nor "a.b.apps.example.org".
package domain
