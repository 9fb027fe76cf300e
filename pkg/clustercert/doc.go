// Package clustercert keeps the certificates of a cluster of tunneld nodes
// in etcd, so that every node serves every certificate, any node answers
// any ACME challenge, and a name is ordered once, not once per node.
//
// # Why
//
// Behind one DNS name, a visitor's handshake for a name lands on any node,
// and so does the CA's validation of a challenge. With a cache directory
// per node, each node would order every name itself (N orders against
// Let's Encrypt's 50 per registered domain per week, and its 5 duplicate
// certificates per week), and a challenge would fail whenever the CA
// reached another node than the one that ordered.
//
// # What is stored
//
// Cache is an autocert.Cache under Config.Prefix+"cache/": the account key
// (the first node to register keeps it), each certificate with its private
// key in PEM, and the challenge tokens: TLS-ALPN-01 certificates ("+token")
// and HTTP-01 key authorizations ("+http-01"). autocert writes a token
// through the cache before it tells the CA to validate, and reads it back
// through the cache when a node does not hold it in memory (its
// GetCertificate for "acme-tls/1", its HTTPHandler), so the node the CA
// reaches answers from etcd. Tokens are stored on a lease of an hour, so
// that a node dying mid-order leaves none behind. Values are bounded
// (MaxValueSize) and a missing key is autocert.ErrCacheMiss itself, which
// autocert compares with ==.
//
// # Ordering once
//
// Locker is a lock per name under Config.Prefix+"lock/": an etcd
// concurrency.Mutex on a lease of its own, held only while a node orders or
// renews, so a node that dies holding it frees it within Config.LockTTL.
// package certs takes it (ACMEConfig.Lock) in two places. Before a
// handshake may order (the node's autocert does not hold the certificate
// and etcd has none), it locks the name and then lets autocert look again:
// the first node orders, the others wait and find the certificate stored.
// Around a renewal, which autocert starts from a timer on every node that
// holds the certificate, it locks the name before autocert's read of the
// cache: the first node renews, and the others read the renewed
// certificate, which autocert adopts instead of ordering (renewal.go reads
// the cache first for exactly this). The package doc of certs has the
// details.
//
// The lock keeps concurrent orders apart; it is not a fence: a holder
// paused for longer than the TTL may order while another does. The worst
// case is a duplicate order, not a wrong certificate.
//
// # The order budget
//
// certs' weekly order budget (--acme-orders-per-week) stays per node: with
// the lock, a name is charged only on the node that ordered it, so N nodes
// order at most N times the budget in all. Making it cluster-wide is a
// counter in etcd (see the report of issue 15); until then, an operator of
// N nodes divides the budget by N.
//
// This package never imports the edge: tunneld hands the store to
// certs.ACMEConfig with Store.Configure.
package clustercert
