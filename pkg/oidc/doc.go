// Package oidc is tunneld's OpenID Connect login in front of a tunnel (issue
// 18): a tunnel whose owner asked for it (tunnel http --oidc-allow) lets a
// visitor through only once the visitor has signed in at the operator's
// issuer as an allowed identity. The edge calls Gate for each request to
// such a tunnel and Callback for the one callback URL; this package never
// imports the edge.
//
// Why one callback URL: issuers do not accept wildcard redirect URIs, and
// tunnels come and go under NAME.DOMAIN, so every login comes back to the
// same URL (by default https://DOMAIN/.tunnel/oidc/callback) and is then
// handed to the tunnel's own host with a ticket:
//
//  1. A visitor of https://wiki.DOMAIN/page without a session cookie gets a
//     host-only flow cookie (a random binding) and is redirected to the
//     issuer: authorization code flow with PKCE (S256), a nonce, and a state
//     that is sealed (AES-GCM) and carries the host, the path, the nonce,
//     the PKCE verifier, the binding and an expiry. Nothing is kept in
//     memory for a login in progress.
//  2. The issuer sends the browser to the callback with a code and the
//     state. Callback opens the state, exchanges the code (with the
//     verifier), verifies the ID token with go-oidc (issuer, audience,
//     expiry, signature), checks the nonce and that the email is verified,
//     and redirects to https://wiki.DOMAIN/.tunnel/oidc/finish with a ticket:
//     sealed, bound to that host and to the binding, valid for a minute and
//     used once.
//  3. Gate, on the tunnel's host, takes the ticket only from the browser
//     that holds the binding (so nobody can sign a victim in as themselves),
//     sets the session cookie (host-only, Secure, HttpOnly, SameSite=Lax,
//     sealed, carrying the email, the host and the expiry) and redirects to
//     the original path, which is always a path on the same host.
//  4. Later requests carry the session cookie: Gate checks it and the
//     tunnel's allow list; a refused identity gets a 403 page that names it.
//     The edge passes the email to the service in IdentityHeader and removes
//     the cookies (StripCookies), so the service can neither trust a
//     visitor's own header nor replay the session.
//
// The cookie key seals states, tickets and sessions, each under a key of its
// own derived from it, so none can stand in for another. Several tunneld
// nodes behind one name must share it (tunneld --oidc-cookie-key-file), or a
// login finished on one node is unknown to the next.
//
// What a stranger can make it spend: a login start costs a random draw and
// a seal, no memory; garbage states, tickets and cookies are refused after
// a bounded base64 decode and one AES-GCM open, and are not logged; the
// memory of used tickets is a bounded table (see maxUsedTickets).
package oidc
