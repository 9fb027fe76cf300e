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
// case is a duplicate order, or a failed validation when the two orders'
// TLS-ALPN-01 certificates overwrite each other in the cache (retried
// later); never a wrong certificate served.
//
// # When etcd is unreachable
//
// Certificates a node holds in memory are served as before. A name the
// node does not hold gets no certificate (its cache read fails), and no
// new order is placed, since the lock cannot be taken: the handshake fails
// and the next one tries again. A renewal waits for the lock for the
// renewal's 10 minutes, then autocert retries within the hour; renewals
// start 30 days before expiry, so only an outage of weeks costs a
// certificate.
//
// # The order budget
//
// OrderLog is certs' weekly order budget record (--acme-orders-per-week,
// --acme-orders-per-owner) at Config.Prefix+"orders": one key holding the
// orders of the last week as JSON, at most the budget of them, updated by
// compare-and-swap on its revision. Let's Encrypt counts certificates per
// registered domain, whichever node asked, so the budget is the cluster's:
// with a record per node, N nodes would order N times the budget. It also
// survives restarts, which the record in memory of a single node does not.
//
// This package never imports the edge: tunneld hands the store to
// certs.ACMEConfig with Store.Configure.
package clustercert
