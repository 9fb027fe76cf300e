// Package cluster is the name table several tunneld nodes share, kept in
// etcd: who owns each tunnel name, which node's session serves it, and how
// long a departed client's names stay on hold. It never imports the edge:
// the edge's ClusterRegistry adapts it to edge.Registry.
//
// Why etcd: unique claims need a linearizable compare-and-swap, a dead
// node's names must be freed without it, and every node must learn of
// every change in order. etcd gives all three (transactions, leases,
// revisioned watches) on a proven consensus; we write none of our own.
//
// # Keys
//
// Under Config.Prefix (default "/tunnel/"):
//
//	nodes/<node>    the node's link address, under the node's lease;
//	                written at Open only if absent, so two live processes
//	                never share a node name
//	names/<name>    the live record: owner, account, kind, node, address,
//	                session ID and the edge's data (access rules); under
//	                the serving node's lease, so it dies with the node
//	members/<name>/<session>
//	                a pooled name's live records, one per member session,
//	                each under its own node's lease (so a dead node takes
//	                only its members away); the same fields as names/
//	owners/<name>   the owner record: owner, account, kind, whether the
//	                name is a pool's and, once the name is off the live
//	                table, the end of its hold (Unix ms); under no lease,
//	                so it outlives the node
//
// A name is live through names/<name> (one session) or through members/
// (a pool), never both: the claim that writes one deletes the other.
//
// # Claims
//
// A claim reads every name's two records in one read-only transaction,
// decides (free, the same owner's, or ErrNameTaken), then writes all of
// them in one transaction whose conditions are the ModRevisions it read:
// all names or none, and two claims that raced cannot both succeed (the
// loser reads again, a bounded number of times, and then sees the
// winner). A name is free when it has no owner record, or one of another
// owner whose hold ended and that has no live record. A live record of the
// same owner is taken over: the node serving it sees the change in its
// watch and the edge closes that stale session (Hooks.Lost). etcd allows
// 128 operations per transaction by default, so one session claims at
// most 64 names (fewer when it takes over pools: one delete per member).
//
// # Pools
//
// A claim with Tunnel.Pool joins the members of the name, on any node, if
// they have the same owner, kind and Match (or Data): otherwise
// ErrPoolMismatch; nobody is replaced. It takes the name over from a
// session that holds it alone (names/<name> is deleted in the same
// transaction). A claim without Pool of a pooled name takes it over from
// every member, as from one session. Each claim rewrites the owner record,
// conditioned on its revision, and the members' range must be as read
// (no key in it modified since the read), so two claims of one name,
// joins included, are ordered. A member's Release deletes its own record
// only; when the last one leaves (or its node dies), the owner record is
// left with no live record and no member, and the tidying gives it its
// hold as for a dead node's name (at once: the view's change signals it).
// Fencing and re-assertion are per member: a node whose lease ran out
// writes its members again under its new lease, beside the others.
//
// A node of a version before pools ignores members/: it sees a pooled
// name as an owner record with no live record, so it serves no visitor
// of it, may write a hold deadline into the owner record (which newer
// nodes ignore while members live), and once that runs out would let
// another owner claim the name there. Non-pool records are unchanged, so
// a cluster upgraded node by node works for everything else; upgrade
// every node before clients use pools on it.
//
// # Holds
//
// Release deletes the live records and writes the hold's end into the
// owner records, in one transaction (each name conditional on its live
// record still being this session's). When a node dies, its lease takes
// the live records with it and leaves the owner records with no end: the
// name is held, indefinitely, until some node gives it one. Every node's
// view notices such orphans and writes now+Hold into the owner record,
// conditional on the record's revision and on there still being no live
// record, so exactly one node does. The hold therefore begins when the
// lease ran out (plus the watch's delay), cluster-wide. Expired owner
// records are deleted by the same tidying, a bounded batch per pass; a
// hold that ran out counts as free before it is deleted, since lookups and
// claims compare the time. Holds are wall-clock deadlines: nodes' clocks
// must agree within a small part of Hold (NTP). The bound on holds per
// account that MemoryRegistry keeps is not kept cluster-wide.
//
// # The view
//
// Each node reads the table once, then follows one watch from that
// revision: Lookup, Changes (for Wait), ForeignTunnels and so on never
// touch etcd. When the watch ends (its revision compacted, its member lost
// its leader, the stream lost) the table is read whole again and a new
// watch starts from there; while etcd is away the view keeps answering
// with what it has. Claim and Release return once the view shows their own
// write, so a lookup right after a claim finds it.
//
// # Per-token limits
//
// The edge counts a token's tunnels on this node itself and adds
// ForeignTunnels, the live names of the account on other nodes, from the
// view. The claim does not re-check the count in its transaction: two
// sessions of one token connecting to two nodes at the same moment can
// both pass, an over-count bounded by one session's tunnels per node,
// corrected at the next connect.
//
// # Quorum loss
//
// A claim is bounded by ClaimTimeout and fails with ErrUnavailable, which
// the edge sends as a retryable refusal; the node is Degraded (the edge's
// /readyz says so) from that failed claim or from its second keepalive in
// a row that failed (one alone is a member going away under a request,
// which must not make /readyz flap). Connected tunnels keep serving from the view, here and
// through other nodes. The lease cannot expire without a leader, and a new
// leader restarts every lease's TTL, so when etcd comes back the node's
// keepalive succeeds and it re-asserts its names (writes them again,
// unless another session took one meanwhile: that session is Lost). If
// the lease did run out (the node alone was cut off), it takes a new lease
// and re-asserts the same way. No client is dropped unless it lost a name.
//
// # Fencing
//
// Another owner can claim a name only after its live record is gone and
// its hold ended. The live record goes when this node's lease ends, which
// is no earlier than the moment the lease's last renewal was sent plus the
// TTL etcd answered (the leader counts from when it handled the renewal,
// later than we sent it); the hold then runs Hold from when another node
// saw the record go. So the name cannot be another owner's before
// confirmed+Hold, where confirmed is that send time plus TTL, as measured
// here. A node whose lease is not renewed (paused, partitioned) treats
// its own names as not served (Fenced) from confirmed+Hold minus a margin
// (LeaseTTL/4, for clock rates and a request already on its way): it
// stops before another owner's client can be reached under the name. The
// same owner may take the name elsewhere at once; that is the same
// client's reconnect, and the stale session here is closed when the watch
// shows it (or when the client's link is found dead).
//
// # Goroutines
//
// Open starts three, stopped and waited for by Close: keepLoop (the lease,
// every LeaseTTL/3), watchLoop (the view) and tidyLoop (hold deadlines and
// expiry).
package cluster
