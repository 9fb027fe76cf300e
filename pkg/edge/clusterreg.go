// The Registry of several tunneld nodes sharing one name table in etcd
// (package cluster): a name may be served by a session here or on another
// node, reached through a Forwarder.

package edge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/cluster"
	"github.com/tunnelhq/tunnel/pkg/metrics"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// ErrRegistryUnavailable is returned by Registry.Claim when the registry
// cannot decide now (a cluster's etcd out of reach). The edge refuses the
// client with proto.CodeUnavailable, which it retries.
var ErrRegistryUnavailable = errors.New("name table unavailable")

// Forwarder carries a stream to a session on another node: it opens a
// stream to the tunnel h.Tunnel on the node's session (session is the
// session ID this node believes serves the name; the other node refuses if
// it no longer does) and sends h. Safe for concurrent use. The caller
// closes the conn. A refusal by the client or the other node is a
// *proto.Error.
type Forwarder interface {
	Forward(ctx context.Context, node, addr, session string, h *proto.StreamHeader) (net.Conn, error)
}

// ClusterRegistry is the Registry of a node in a cluster: names are
// claimed in the cluster's table (one etcd transaction per session), and
// looked up in the node's view of it. A name served here is its local
// *Session; a name served by another node is a route that opens through
// the Forwarder, carrying the visitor access rules the serving node wrote
// into the table, so they are enforced here exactly as there. A pooled
// name is one poolRoute for the pool's life, over its members here
// (Sessions) and a remoteRoute per member on another node.
//
// A ClusterRegistry serves one Server (Config.Registry). Safe for
// concurrent use.
type ClusterRegistry struct {
	c   *cluster.Cluster
	fwd Forwarder
	log zerolog.Logger

	mu     sync.Mutex
	srv    *Server                 // set by NewServer (attach)
	local  map[string]*Session     // sessions of this node that claimed names, by ID
	remote map[string]*remoteRoute // name → the route of its current claim on another node
	pools  map[string]*clusterPool // pooled name → its pool route, for the pool's life
}

// clusterPool is a pooled name's one poolRoute, with the members it was
// last built from: sessions of this node, and a remoteRoute per member on
// another node (each with its own stream pool).
type clusterPool struct {
	route   *poolRoute
	revs    []int64                 // the members' claim revisions the route was built from
	fenced  bool                    // whether local members were left out for fencing
	remotes map[string]*remoteRoute // session ID → route, members on other nodes
}

// NewClusterRegistry builds the Registry over c, forwarding through fwd
// (nil: names served elsewhere are found, but their requests fail as
// offline). It sets c's hooks.
func NewClusterRegistry(c *cluster.Cluster, fwd Forwarder, log zerolog.Logger) *ClusterRegistry {
	r := &ClusterRegistry{c: c, fwd: fwd, log: log.With().Str("component", "registry").Logger(),
		local: make(map[string]*Session), remote: make(map[string]*remoteRoute), pools: make(map[string]*clusterPool)}
	c.SetHooks(cluster.Hooks{Changed: r.changed, Lost: r.lost})
	return r
}

// Degraded reports whether the cluster's etcd is out of reach (see
// cluster.Cluster.Degraded); the edge's Ready reports it.
func (r *ClusterRegistry) Degraded() bool { return r.c.Degraded() }

// attach ties r to the Server that uses it: its stream pools and sessions.
func (r *ClusterRegistry) attach(s *Server) {
	r.mu.Lock()
	r.srv = s
	r.mu.Unlock()
	r.registerMetrics(s.ops.metrics)
}

// registerMetrics exports the cluster's counters and lease state.
func (r *ClusterRegistry) registerMetrics(m *metrics.Set) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	errs := []error{
		m.CounterFunc("cluster_etcd_requests_total", "Requests this node made to etcd (claims, releases, lease keepalives, reads).",
			func() float64 { return float64(r.c.Stats().RoundTrips) }),
		m.CounterFunc("cluster_etcd_errors_total", "Requests to etcd that failed.",
			func() float64 { return float64(r.c.Stats().Errors) }),
		m.GaugeFunc("cluster_lease_ok", "1 while this node's etcd lease is confirmed within its TTL.",
			func() float64 { return b(r.c.Stats().LeaseOK) }),
		m.GaugeFunc("cluster_degraded", "1 while etcd is out of reach (claims refused, the view may be stale) or names are not yet re-asserted.",
			func() float64 { return b(r.c.Degraded()) }),
		m.GaugeFunc("cluster_fenced", "1 while this node serves none of its names: its lease went unconfirmed for too long.",
			func() float64 { return b(r.c.Fenced()) }),
	}
	if err := errors.Join(errs...); err != nil {
		r.log.Debug().Err(err).Msg("cluster metrics not registered") // another Server shares the Set
	}
}

// routeData is what the table keeps of a tunnel for the other nodes: the
// visitor access rules (hashes only) and the tokens allowed to connect to
// a TCP tunnel (SHA-256, hex).
type routeData struct {
	Access *proto.Access `json:"access,omitempty"`
	Allow  []string      `json:"allow,omitempty"`
	Label  string        `json:"label,omitempty"` // the token's label, for status pages
	// Tunnel, on a custom domain's record, is the name of the tunnel that
	// claimed it: what the forwarded stream names (see tunnelFor).
	Tunnel string `json:"tunnel,omitempty"`
}

// Claim implements Registry.
func (r *ClusterRegistry) Claim(s *Session, names []string) ([]*Session, error) {
	req := cluster.ClaimRequest{Session: s.ID, Owner: s.Owner, Account: s.accountKey()}
	for _, n := range names {
		t, err := tunnelRecord(s, n)
		if err != nil {
			return nil, err
		}
		req.Tunnels = append(req.Tunnels, t)
	}
	// Known before the claim, so a lookup right after it finds the session.
	r.mu.Lock()
	r.local[s.ID] = s
	r.mu.Unlock()
	rep, err := r.c.Claim(context.Background(), req)
	if err != nil {
		r.mu.Lock()
		delete(r.local, s.ID)
		r.mu.Unlock()
		if errors.Is(err, cluster.ErrNameTaken) {
			return nil, fmt.Errorf("%w%s", ErrNameTaken, strings.TrimPrefix(err.Error(), cluster.ErrNameTaken.Error()))
		}
		if errors.Is(err, cluster.ErrPoolMismatch) {
			return nil, fmt.Errorf("%w%s", ErrPoolMismatch, strings.TrimPrefix(err.Error(), cluster.ErrPoolMismatch.Error()))
		}
		return nil, fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	var replaced []*Session
	r.mu.Lock()
	for _, x := range rep {
		if x.Node == r.c.Node() {
			if old := r.local[x.Session]; old != nil && old != s {
				replaced = append(replaced, old)
			}
		}
	}
	r.mu.Unlock()
	return replaced, nil
}

// tunnelRecord is what the table keeps of s's name n: its kind and the
// routeData other nodes enforce.
func tunnelRecord(s *Session, n string) (cluster.Tunnel, error) {
	k := s.Kind(n)
	if k == "" {
		k = proto.KindHTTP
	}
	d := routeData{Label: s.Label}
	i := indexOf(s.Names, n)
	if t, ok := s.domains[n]; ok {
		// A custom domain carries its tunnel's name and access rules.
		d.Tunnel, i = t, indexOf(s.Names, t)
	}
	if i >= 0 && i < len(s.requests) {
		d.Access = s.requests[i].Access
	}
	for _, h := range s.allow[n] {
		d.Allow = append(d.Allow, hex.EncodeToString(h[:]))
	}
	data, err := json.Marshal(d)
	if err != nil {
		return cluster.Tunnel{}, fmt.Errorf("claim %q: %w", n, err)
	}
	t := cluster.Tunnel{Name: n, Kind: k, Data: data, Pool: s.pooled(n)}
	if t.Pool {
		// Members must agree on the rules, not on their token's label.
		d.Label = ""
		if t.Match, err = json.Marshal(d); err != nil {
			return cluster.Tunnel{}, fmt.Errorf("claim %q: %w", n, err)
		}
	}
	return t, nil
}

// ClaimName implements Registry, with cluster.Cluster.ClaimName: one
// transaction that takes over nothing.
func (r *ClusterRegistry) ClaimName(s *Session, name string) error {
	r.mu.Lock()
	mine := r.local[s.ID] == s
	r.mu.Unlock()
	if !mine {
		return fmt.Errorf("%w: %q: session %s is no longer registered", ErrNameTaken, name, s.ID)
	}
	t, err := tunnelRecord(s, name)
	if err != nil {
		return err
	}
	if err := r.c.ClaimName(context.Background(), s.ID, t); err != nil {
		if errors.Is(err, cluster.ErrNameTaken) {
			return fmt.Errorf("%w%s", ErrNameTaken, strings.TrimPrefix(err.Error(), cluster.ErrNameTaken.Error()))
		}
		return fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	return nil
}

func indexOf(names []string, n string) int {
	for i, x := range names {
		if x == n {
			return i
		}
	}
	return -1
}

// Release implements Registry.
func (r *ClusterRegistry) Release(s *Session) {
	r.mu.Lock()
	if r.local[s.ID] != s {
		r.mu.Unlock()
		return
	}
	delete(r.local, s.ID)
	r.mu.Unlock()
	r.c.Release(context.Background(), s.ID)
}

// ReleaseName implements Registry.
func (r *ClusterRegistry) ReleaseName(s *Session, name string) {
	r.mu.Lock()
	mine := r.local[s.ID] == s
	r.mu.Unlock()
	if mine {
		r.c.ReleaseName(context.Background(), s.ID, name)
	}
}

// Lookup implements Registry. A name of this node is served only while
// the node is not fenced (its lease confirmed recently enough; see package
// cluster).
func (r *ClusterRegistry) Lookup(name string) (Route, bool) {
	e, ok := r.c.Lookup(name)
	switch {
	case !ok:
		return nil, false
	case len(e.Members) > 0:
		if p := r.pool(name, e); p != nil {
			return p, true
		}
		return nil, true
	case e.Live == nil:
		return nil, true
	case e.Live.Node == r.c.Node():
		if r.c.Fenced() {
			return nil, true
		}
		r.mu.Lock()
		s := r.local[e.Live.Session]
		r.mu.Unlock()
		if s == nil {
			return nil, true // released here, not yet in the table
		}
		return s, true
	}
	r.mu.Lock()
	rt := r.remote[name]
	if rt != nil && rt.rev == e.Live.Rev {
		r.mu.Unlock()
		if rt.down(time.Now()) > 0 {
			return nil, true
		}
		return rt, true
	}
	old := rt
	rt = r.newRemote(name, e)
	if rt != nil {
		r.remote[name] = rt
	} else {
		delete(r.remote, name)
	}
	srv := r.srv
	r.mu.Unlock()
	if old != nil {
		old.gone(srv)
	}
	if rt == nil {
		return nil, true
	}
	return rt, true
}

// pool returns the pool route of e, a pooled name, brought up to date
// with its members: the same route for the pool's whole life (its streams
// are kept per member, never under the pool), with a Session per member
// here (none while this node is fenced) and a remoteRoute per member on
// another node. nil if no member can be reached.
func (r *ClusterRegistry) pool(name string, e cluster.Entry) *poolRoute {
	fenced := r.c.Fenced()
	r.mu.Lock()
	cp := r.pools[name]
	if cp != nil && cp.route != nil && cp.fenced == fenced && sameRevs(cp.revs, e.Members) {
		r.mu.Unlock()
		if len(cp.route.list()) == 0 {
			return nil
		}
		return cp.route
	}
	var gone []*remoteRoute
	if cp == nil {
		cp = &clusterPool{remotes: make(map[string]*remoteRoute)}
		r.pools[name] = cp
	}
	var ms []Route
	remotes := make(map[string]*remoteRoute, len(cp.remotes))
	cp.revs = cp.revs[:0]
	for _, m := range e.Members {
		cp.revs = append(cp.revs, m.Rev)
		if m.Node == r.c.Node() {
			if s := r.local[m.Session]; s != nil && !fenced {
				ms = append(ms, s)
			}
			continue
		}
		rt := cp.remotes[m.Session]
		if rt == nil || rt.rev != m.Rev {
			rt = r.newRemote(name, cluster.Entry{Name: name, Owner: e.Owner, Kind: e.Kind, Live: m})
		}
		if rt != nil {
			remotes[m.Session] = rt
			ms = append(ms, rt)
		}
	}
	for sid, rt := range cp.remotes {
		if remotes[sid] != rt {
			gone = append(gone, rt)
		}
	}
	cp.remotes, cp.fenced = remotes, fenced
	if cp.route == nil && len(ms) > 0 {
		// The members' rules are alike (the claim compared them): the
		// first reachable member's are the pool's. With no member
		// reachable yet, the route is built when one is.
		rules := ms[0].(interface{ access(string) *accessRules }).access(name)
		k := e.Kind
		if k == "" {
			k = proto.KindHTTP
		}
		cp.route = newEmptyPool(name, k, e.Owner, rules)
	}
	p := cp.route
	if p != nil {
		p.set(ms)
	}
	srv := r.srv
	r.mu.Unlock()
	for _, rt := range gone {
		rt.gone(srv)
	}
	if len(ms) == 0 {
		return nil
	}
	return p
}

// sameRevs reports whether members are the claims revs was built from.
func sameRevs(revs []int64, members []*cluster.Live) bool {
	if len(revs) != len(members) {
		return false
	}
	for i, m := range members {
		if m.Rev != revs[i] {
			return false
		}
	}
	return true
}

// endPool drains name's pool route, if it has one, when the name is no
// longer pooled.
func (r *ClusterRegistry) endPool(name string) {
	r.mu.Lock()
	cp := r.pools[name]
	if cp == nil {
		r.mu.Unlock()
		return
	}
	if e, ok := r.c.Lookup(name); ok && len(e.Members) > 0 {
		r.mu.Unlock()
		r.pool(name, e) // members changed: brought up to date
		return
	}
	delete(r.pools, name)
	srv := r.srv
	r.mu.Unlock()
	if cp.route != nil {
		cp.route.drain()
	}
	for _, rt := range cp.remotes {
		rt.gone(srv)
	}
}

// newRemote builds the route of e, a name live on another node; nil if its
// record's data cannot be read, so that rules that cannot be enforced fail
// closed (the name looks offline).
func (r *ClusterRegistry) newRemote(name string, e cluster.Entry) *remoteRoute {
	rt := &remoteRoute{reg: r, name: name, kind: e.Kind, owner: e.Owner, node: e.Live.Node, addr: e.Live.Addr,
		session: e.Live.Session, rev: e.Live.Rev, draining: make(chan struct{})}
	var d routeData
	if len(e.Live.Data) > 0 {
		if err := json.Unmarshal(e.Live.Data, &d); err != nil {
			r.log.Warn().Err(err).Str("host", name).Msg("unreadable route data; name not served here")
			return nil
		}
	}
	rules, err := compileAccess(d.Access, true) // checked by the node it was claimed on
	if err != nil {
		r.log.Warn().Err(err).Str("host", name).Msg("access rules not valid; name not served here")
		return nil
	}
	rt.rules = rules
	rt.tunnel = d.Tunnel
	for _, h := range d.Allow {
		var sum [sha256.Size]byte
		if _, err := hex.Decode(sum[:], []byte(h)); err == nil {
			rt.allow = append(rt.allow, sum)
		}
	}
	return rt
}

// changed is the cluster's hook: a name's record changed, so its remote
// route, if its claim is over, drains and loses its pool.
func (r *ClusterRegistry) changed(name string) {
	r.endPool(name)
	r.mu.Lock()
	rt := r.remote[name]
	if rt == nil {
		r.mu.Unlock()
		return
	}
	if e, ok := r.c.Lookup(name); ok && e.Live != nil && e.Live.Rev == rt.rev {
		r.mu.Unlock()
		return
	}
	delete(r.remote, name)
	srv := r.srv
	r.mu.Unlock()
	rt.gone(srv)
}

// lost is the cluster's hook: a session of this node lost its names to
// another session (its owner reconnected elsewhere). It is closed; its
// done hook releases what it still holds. The close runs on a goroutine
// the Server waits for: it waits for the session's control loop, whose
// Release waits for the cluster's watch, which calls this hook.
func (r *ClusterRegistry) lost(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, srv := r.local[id], r.srv
	if s == nil || srv == nil {
		return
	}
	r.log.Info().Str("session_id", id).Msg("session replaced by its owner on another node")
	srv.wg.Add(1) // the session's own count is still held: it is in local
	go srv.closeSession(s)
}

// Held implements Registry.
func (r *ClusterRegistry) Held(name string) bool {
	_, ok := r.c.Lookup(name)
	return ok
}

// Kind implements Registry.
func (r *ClusterRegistry) Kind(name string) string {
	e, ok := r.c.Lookup(name)
	switch {
	case !ok:
		return ""
	case e.Kind == "":
		return proto.KindHTTP
	}
	return e.Kind
}

// Account implements Registry.
func (r *ClusterRegistry) Account(name string) (string, bool) {
	e, ok := r.c.Lookup(name)
	if !ok {
		return "", false
	}
	return e.Account, true
}

// Wait implements Registry: woken by the view's changes of name.
func (r *ClusterRegistry) Wait(ctx context.Context, name string) Route {
	for {
		ch := r.c.Changes(name)
		rt, held := r.Lookup(name)
		if rt != nil || !held {
			return rt
		}
		// A route counted as down is tried again when its time is up,
		// unless its record changes first.
		var retry <-chan time.Time
		r.mu.Lock()
		down := r.remote[name]
		r.mu.Unlock()
		var t *time.Timer
		if down != nil {
			if d := down.down(time.Now()); d > 0 {
				t = time.NewTimer(d)
				retry = t.C
			}
		}
		done := false
		select {
		case <-ch:
		case <-retry:
		case <-ctx.Done():
			done = true
		}
		if t != nil {
			t.Stop()
		}
		if done {
			return nil
		}
	}
}

// remoteTunnels lists the tunnels other nodes serve, from the view.
func (r *ClusterRegistry) remoteTunnels(s *Server) []TunnelStatus {
	var out []TunnelStatus
	type sessionTunnel struct{ session, tunnel string }
	domains := make(map[sessionTunnel]string) // a custom domain is shown on its tunnel's row
	for _, e := range r.c.Live() {
		if e.Live.Node == r.c.Node() {
			continue
		}
		var d routeData
		_ = json.Unmarshal(e.Live.Data, &d) // unreadable: shown without label or rules
		if d.Tunnel != "" {
			domains[sessionTunnel{e.Live.Session, d.Tunnel}] = e.Name
			continue
		}
		k := e.Kind
		if k == "" {
			k = proto.KindHTTP
		}
		ts := TunnelStatus{Name: e.Name, Kind: k, URL: s.kindURL(k, e.Name), Label: d.Label,
			SessionID: e.Live.Session, Node: e.Live.Node, Pool: e.Live.Pool}
		if rules, err := compileAccess(d.Access, true); err == nil && rules != nil {
			sum := rules.summary
			ts.Access = &sum
		}
		out = append(out, ts)
	}
	for i := range out {
		if d, ok := domains[sessionTunnel{out[i].SessionID, out[i].Name}]; ok {
			out[i].Domain, out[i].DomainStatus = d, DomainServed
		}
	}
	return out
}

// foreignTunnels counts account's live tunnels on other nodes, for the
// per-token limit (see addTunnels).
func (r *ClusterRegistry) foreignTunnels(account string) int { return r.c.ForeignTunnels(account) }

// remoteRoute is a name served by a session on another node, for one
// claim: a new claim of the name is a new route, so streams pooled for
// this one are never reused for the next.
type remoteRoute struct {
	reg                 *ClusterRegistry
	name, kind, owner   string
	tunnel              string // for a custom domain, its tunnel's name
	node, addr, session string
	rev                 int64
	rules               *accessRules
	allow               [][sha256.Size]byte
	draining            chan struct{}
	drainOnce           sync.Once
	// downUntil (Unix ns) is set when a forward through rt failed for want
	// of the node (its link down, the node dead or behind): until then
	// Lookup treats the name as offline, so visitors wait for the client's
	// reconnect (the offline wait) instead of failing at once against a
	// record that lives on until the dead node's lease runs out.
	downUntil atomic.Int64
}

// routeDownFor is how long a route whose forward failed counts as offline
// before it is tried again, unless its record changes first: long enough
// that a visitor's offline wait sees a reconnecting client's new claim,
// short enough that a link's brief loss does not keep the name offline.
const routeDownFor = time.Second

// down reports for how much longer rt counts as offline; 0 if it does not.
func (rt *remoteRoute) down(now time.Time) time.Duration {
	return time.Duration(max(rt.downUntil.Load()-now.UnixNano(), 0))
}

// Open implements Route: a stream through the Forwarder.
func (rt *remoteRoute) Open(ctx context.Context, h *proto.StreamHeader) (net.Conn, error) {
	if rt.reg.fwd == nil {
		return nil, fmt.Errorf("tunnel %q on node %s: no node link: %w", rt.name, rt.node, errTunnelOffline)
	}
	conn, err := rt.reg.fwd.Forward(ctx, rt.node, rt.addr, rt.session, h)
	var perr *proto.Error
	switch {
	case err == nil:
		return conn, nil
	case errors.As(err, &perr) && perr.Code == proto.CodeUnknownTunnel:
		// The node no longer serves the name with that session (our view
		// was behind): to the visitor, the tunnel is offline until the
		// view shows where it went.
		rt.markDown()
		return nil, fmt.Errorf("forward to node %s: %v: %w", rt.node, err, errRouteDown)
	case perr == nil && ctx.Err() == nil:
		// No answer from the node at all: its link is down, or it died
		// and its records live on until its lease runs out.
		rt.markDown()
		return nil, fmt.Errorf("forward to node %s: %v: %w", rt.node, err, errRouteDown)
	}
	return nil, fmt.Errorf("forward to node %s: %w", rt.node, err)
}

// markDown makes rt count as offline for routeDownFor, and wakes the
// waiters of its name so they wait for what comes next.
func (rt *remoteRoute) markDown() {
	rt.downUntil.Store(time.Now().Add(routeDownFor).UnixNano())
}

// Draining implements Route: closed once the claim is over.
func (rt *remoteRoute) Draining() <-chan struct{} { return rt.draining }

// String implements Route: node/session.
func (rt *remoteRoute) String() string { return rt.node + "/" + rt.session }

func (rt *remoteRoute) access(string) *accessRules { return rt.rules }

// gone drains rt and drops its stream pool.
func (rt *remoteRoute) gone(srv *Server) {
	rt.drainOnce.Do(func() { close(rt.draining) })
	if srv != nil {
		srv.proxy.pools.drop(rt)
	}
}

// OpenLocal opens a stream for h.Tunnel on a session of this node, for
// another node that forwards a visitor here. It refuses (a *proto.Error,
// CodeUnknownTunnel) when the name is not this node's per the table, when
// the node is fenced, or when the session serving it here is not session:
// the forwarding node's view is stale, and it must not reach a session it
// did not mean.
func (s *Server) OpenLocal(ctx context.Context, session string, h *proto.StreamHeader) (net.Conn, error) {
	var sess *Session
	if cr, ok := s.registry.(*ClusterRegistry); ok {
		sess = cr.localSession(ctx, h.Tunnel, session)
	} else if rt, _ := s.registry.Lookup(h.Tunnel); rt != nil {
		sess, _ = rt.(*Session)
	}
	if sess == nil || sess.ID != session {
		return nil, &proto.Error{Code: proto.CodeUnknownTunnel, Message: fmt.Sprintf("tunnel %q is not served here by session %s", h.Tunnel, session)}
	}
	select {
	case <-sess.Draining():
		return nil, &proto.Error{Code: proto.CodeUnknownTunnel, Message: fmt.Sprintf("tunnel %q: client draining", h.Tunnel)}
	default:
	}
	start := time.Now()
	conn, err := sess.Open(ctx, h)
	s.ops.streamOpened(start, err)
	return conn, err
}

// localWait bounds how long OpenLocal waits for this node's view to show
// a claim another node's view already shows: the views follow the same
// revisions, each at its own pace, so the forwarding node may be ahead.
const localWait = 2 * time.Second

// localSession returns the local session serving name if it is session,
// waiting up to localWait for this node's view to catch up with a claim
// session made here; nil if it does not, or session is not one of this
// node's.
func (r *ClusterRegistry) localSession(ctx context.Context, name, session string) *Session {
	t := time.NewTimer(localWait)
	defer t.Stop()
	for {
		r.mu.Lock()
		_, here := r.local[session]
		r.mu.Unlock()
		if !here {
			return nil // checked first: no waiter is left for a name never here
		}
		ch := r.c.Changes(name)
		rt, _ := r.Lookup(name)
		if sess, ok := rt.(*Session); ok && sess.ID == session {
			return sess
		}
		if p, ok := rt.(*poolRoute); ok {
			for _, m := range p.sessions() {
				if m.ID == session {
					return m
				}
			}
		}
		select {
		case <-ch:
		case <-t.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// closeSession closes sess on a goroutine counted in s.wg by the caller.
func (s *Server) closeSession(sess *Session) {
	defer s.wg.Done()
	sess.mux.Close()
}
