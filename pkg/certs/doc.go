// Package certs issues and holds tunneld's certificates: static ones
// obtained elsewhere (Static: PEM files and directories, reloaded on
// SIGHUP) and automatic ones from an ACME CA (ACME: autocert, with a weekly
// order budget).
//
// # Why a package of its own
//
// Getting a certificate is a concern apart from serving a port, with more
// than one user: the cluster keeps autocert's cache in a shared store and
// shares the order budget across nodes (see "Several nodes, one cache"),
// and custom domains will add per-token domain policies. So the rules live here and the edge
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
//
// # Several nodes, one cache
//
// Nodes behind one name share autocert's cache (ACMEConfig.Cache, package
// clustercert: etcd), so each serves the certificates any of them got, and
// the CA's validation may reach any of them: autocert writes a challenge's
// token through the cache before it asks the CA to validate, and a node
// that does not hold it in memory reads it from there (TLS-ALPN-01 in
// GetCertificate, HTTP-01 in HTTPHandler). What a shared cache alone does
// not give is ordering once: each node's autocert orders a name it finds
// nowhere, all at the same moment when a name is new. Hence ACMEConfig.Lock,
// a cluster-wide lock per name, taken in two places.
//
// A first order. GetCertificate takes the lock when autocert may order:
// it does not hold the certificate (issuedCache remembers what autocert
// has loaded or stored), the host policy allows the name, and the cache
// has no valid certificate for it. Then autocert runs under the lock and
// reads the cache again, finding what another node stored while this one
// waited. The lock is taken here, around autocert, and not in the cache's
// Get: autocert reads a certificate from its cache under a mutex that
// every handshake of the node takes, so waiting there for another node's
// order would stall all of them. The wait is bounded by the visitor's
// handshake: a node that gives up orders nothing, and its next handshake
// finds the certificate. After an order that failed, autocert answers the
// name from that failure for a minute without ordering, so the lock is
// skipped for half of that.
//
// A renewal. autocert renews from a timer on every node that holds the
// certificate, and its renewal first reads the cache, adopting a
// certificate there that is not due yet (renewal.go: "a race is likely
// unavoidable in a distributed environment but we try nonetheless").
// issuedCache makes that read wait for the lock: autocert reads a
// certificate it holds only from its renewal timer, so such a read is a
// renewal starting. The first node renews and stores; each of the others
// then reads the renewed certificate under the lock and adopts it. The
// lock is released when autocert's renewal returns (it cancels the
// context it gave the cache), success or not. Other ways were weighed:
// only one node renewing, the others dropping their copy when a watch saw
// a newer one, needs autocert's in-memory state cleared from outside,
// which it does not allow; different RenewBefore per node still lets two
// renew when the first one fails.
//
// The order budget counts on the node that orders (in the cache's Get,
// which misses only there). ACMEConfig.OrderLog keeps its record where all
// nodes share it, so that the budget is the cluster's, as the CA's limit
// is.
package certs
