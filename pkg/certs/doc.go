// Package certs issues and holds tunneld's certificates: static ones
// obtained elsewhere (Static: PEM files and directories, reloaded on
// SIGHUP) and automatic ones from an ACME CA (ACME: autocert, with a weekly
// order budget).
//
// # Why a package of its own
//
// Getting a certificate is a concern apart from serving a port, with more
// than one user coming: the cluster work will keep autocert's cache in a
// shared store and share the order budget across nodes, and custom domains
// will add per-token domain policies. So the rules live here and the edge
// keeps only the glue that needs its name table: the host policy (is this
// the domain, or a name a tunnel holds?), the log-once memory of the names
// it refused, and the choice of source for each handshake. certs never
// imports the edge; the edge hands it the policy as a function and its
// registry as Owners.
//
// # Static certificates
//
// Static serves the names its certificates cover, exactly or by a wildcard
// one label deep; a renewed file beside the old one wins because it lasts
// longer, and an expired certificate is not served, so ACME can take the
// name over. Reload reads the files again and swaps the set only if they
// all load, so a bad file never takes certificates away from a running
// server. Files.Require names what the set must cover (tunneld without
// ACME: the domain and *.domain), so that a certificate for the wrong
// names is refused when it is loaded, with the names missing and the files
// read (NotCoveredError), instead of failing each visitor's handshake.
//
// # ACME and its budget
//
// autocert orders a certificate on the first handshake for a name its
// HostPolicy allows. Tunnel names are chosen by clients, and Let's Encrypt
// issues at most 50 certificates per registered domain per week, after
// which every order fails, the operator's own names' too. So new orders are
// budgeted per week, in all and per owner (ACMEConfig.OrdersPerWeek,
// OrdersPerOwnerPerWeek), and a name whose order failed waits orderRetry
// before the next. The budget is checked where autocert finds no
// certificate in its cache (issuedCache): its HostPolicy runs on every
// handshake, cached certificate or not, while a cache miss is exactly an
// order about to be placed. The same cache counts each stored certificate
// as one issuance, since autocert has no hook of its own.
package certs
