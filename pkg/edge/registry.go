package edge

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/pkg/proto"
)

// ErrNameTaken is returned by Registry.Claim for a name that another owner
// holds, live or on hold.
var ErrNameTaken = errors.New("name taken")

// Route is the way to the client that serves a tunnel name: what a Registry
// lookup returns, and all the proxy knows of where a request goes. A local
// *Session is one, for every kind of tunnel (HTTP, TCP, TLS); a session on
// another tunneld node (remoteRoute) and a pool of clients sharing a name
// (poolRoute) are others, behind the same methods.
//
// Routes are compared with ==: the proxy keeps one pool of idle streams per
// route, so a stream is never reused for a request routed elsewhere (not
// even to a later holder of the same name), and a stream is only opened on a
// route the name still resolves to. An implementation must therefore be
// comparable, and two values equal only if they reach the same client
// session: a pointer type does this. A pool is the one route that reaches
// several sessions: the proxy sends each request to one of its members,
// and keeps that request's stream under the member, never under the pool.
// Implementations are safe for concurrent use.
type Route interface {
	// Open opens a stream to the client for the tunnel h.Tunnel and sends
	// h, returning once the client has connected its local service. A
	// refusal by the client is a *proto.Error. The caller closes the conn.
	Open(ctx context.Context, h *proto.StreamHeader) (net.Conn, error)
	// Draining is closed once the route takes no new streams (its client
	// is stopping); streams already open may finish.
	Draining() <-chan struct{}
	// String names the route in logs (a local session's ID).
	String() string
	// access returns the visitor access rules of the route's tunnel
	// name, nil for none. Unexported: the proxy enforces them before any
	// stream is opened, so every Route must carry them, and a Route of
	// another kind (another node's session) lives in this package too.
	access(name string) *accessRules
}

// Registry maps tunnel names to the routes that serve them. It is an
// interface so that several tunneld nodes can share one store (the
// ClusterRegistry, on etcd); the in-memory MemoryRegistry serves a single
// node.
//
// Names are claimed by the sessions connected to this node, and looked up
// as Routes: a registry shared by several nodes may answer a lookup with a
// route to a session on another node.
//
// Names belong to an owner (token.Identity.ID). When a session ends its
// names stay reserved for their owner for a hold period, so a client that
// reconnects gets the same names back and nobody else can take them
// meanwhile. Implementations are safe for concurrent use.
type Registry interface {
	// Claim gives all of names to session s, or none of them. A name held
	// by another owner is ErrNameTaken. A name held by a live session of
	// the same owner is taken over: those sessions are returned so the
	// caller can close them (a stale session must never block its owner).
	//
	// A name s asked for with TunnelRequest.Pool (Session.pooled) is
	// shared instead: s joins the pool serving it, or starts one; a pool
	// of another kind or other rules is ErrPoolMismatch, and a registry
	// that cannot pool returns ErrPoolUnsupported. A claim without Pool of
	// a pooled name takes it over from every member, as from one session;
	// a claim with Pool of a name one session holds without takes it over
	// from that session.
	// A registry that cannot decide now (a cluster's store out of reach)
	// returns ErrRegistryUnavailable, and the client is told to retry.
	Claim(s *Session, names []string) (replaced []*Session, err error)
	// Lookup returns the route serving name, or nil and whether the name
	// is held for an owner whose client is away.
	Lookup(name string) (rt Route, held bool)
	// Release takes s's names off the live table and puts them on hold
	// for its owner. Names since claimed by another session are untouched.
	// A pool member leaving takes only itself away: the name goes on hold
	// when the last member leaves.
	Release(s *Session)
	// ReleaseName frees one of s's names at once, with no hold (a custom
	// domain whose DNS no longer points at s's tunnel: whoever it points
	// at now may claim it); s keeps its other names. A name since claimed
	// by another session is untouched.
	ReleaseName(s *Session, name string)
	// ClaimName gives one more name to s, a session that holds a claim
	// already (a custom domain ReleaseName dropped, whose DNS points at
	// s's tunnel again). Unlike Claim it takes nothing over, so it never
	// closes a session: a name live for any other session, even one of
	// the same owner, or held by another owner, is ErrNameTaken, as is
	// any name once s was released. A registry that cannot decide now
	// returns ErrRegistryUnavailable.
	ClaimName(s *Session, name string) error
	// Held reports whether name is live or on hold.
	Held(name string) bool
	// Kind reports the kind of a live or held name (proto.KindHTTP, ...),
	// or "" if the name is neither.
	Kind(name string) string
	// Account reports whom a live or held name counts against (the
	// session's account: see Session), and whether it is live or held.
	Account(name string) (account string, held bool)
	// Wait returns the route serving name as soon as there is one. It
	// returns nil when ctx ends first, or at once when the name is neither
	// live nor on hold. It never polls: a Claim wakes it.
	Wait(ctx context.Context, name string) Route
}

type regEntry struct {
	name      string
	owner     string
	account   string    // whose held-name bound the entry counts against
	kind      string    // the tunnel's kind, kept while on hold
	session   *Session  // nil while on hold or pooled
	holdUntil time.Time // meaningful only while session and pool are nil

	// pool is the name's pool while pooled and live (session is then nil).
	pool *poolRoute

	// While on hold, the entry is in two lists, oldest first: every hold
	// (for expiry) and its account's holds (for the bound).
	inHolds, inAccount *list.Element
}

// live reports whether a session or a pool serves e.
func (e *regEntry) live() bool { return e.session != nil || e.pool != nil }

// route is e's live route, or nil.
func (e *regEntry) route() Route {
	switch {
	case e.pool != nil:
		return e.pool
	case e.session != nil:
		return e.session
	}
	return nil
}

// expireBatch is how many run-out holds one Claim or Release drops at
// most. A run-out hold counts as free anyway (Lookup and Claim check the
// time); the tidying keeps the table from growing, and the batch keeps one
// call from paying for a million holds that ran out together.
const expireBatch = 64

// MemoryRegistry is the single-node Registry: its routes are the sessions
// connected to this node. Build it with NewMemoryRegistry; it has no
// exported fields, and is safe for concurrent use.
//
// Every operation costs the same whatever the table holds: names are found
// by map, a session's names are kept with it, and holds run out in the
// order they began (they all last the same time), so the oldest is always
// first in a list. Holds are bounded per account (Session.account, for
// anonymous clients their source address): past a session's maxHeld, the
// account's oldest hold is dropped.
type MemoryRegistry struct {
	hold time.Duration
	now  func() time.Time

	mu        sync.Mutex
	entries   map[string]*regEntry
	bySession map[*Session][]string    // names each session claimed (some may since be another's)
	holds     *list.List               // of *regEntry on hold, oldest first
	heldBy    map[string]*list.List    // account → its entries on hold, oldest first
	waiters   map[string]chan struct{} // closed when the name is claimed or dropped

	waitHook func(name string) // tests: called when a Wait starts blocking
}

// NewMemoryRegistry returns an empty registry that holds a departed
// client's names for hold (zero: released at once).
func NewMemoryRegistry(hold time.Duration) *MemoryRegistry {
	return &MemoryRegistry{hold: hold, now: time.Now, entries: make(map[string]*regEntry),
		bySession: make(map[*Session][]string), holds: list.New(), heldBy: make(map[string]*list.List),
		waiters: make(map[string]chan struct{})}
}

// Claim implements Registry.
func (r *MemoryRegistry) Claim(s *Session, names []string) ([]*Session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.expireLocked(now)
	var replaced []*Session
	for _, n := range names {
		e, ok := r.entries[n]
		if !ok {
			continue
		}
		if !e.live() && !now.Before(e.holdUntil) {
			r.dropLocked(n) // its hold has run out
			continue
		}
		if e.owner != s.Owner {
			return nil, fmt.Errorf("%w: %q", ErrNameTaken, n)
		}
		if e.pool != nil && s.pooled(n) {
			if !poolFits(e.pool, s, n) {
				return nil, fmt.Errorf("%w: %q", ErrPoolMismatch, n)
			}
			continue // s joins; nobody is replaced
		}
		var olds []*Session
		if e.pool != nil {
			olds = e.pool.sessions()
		} else if e.session != nil {
			olds = []*Session{e.session}
		}
		for _, old := range olds {
			if old != s && !slices.Contains(replaced, old) {
				replaced = append(replaced, old)
			}
		}
	}
	for _, n := range names {
		e, ok := r.entries[n]
		if !ok {
			e = &regEntry{name: n}
			r.entries[n] = e
		}
		r.unholdLocked(e)
		e.owner, e.account, e.kind = s.Owner, s.accountKey(), s.Kind(n)
		if e.kind == "" {
			e.kind = proto.KindHTTP // a session that does not list the name (tests): the original kind
		}
		switch {
		case s.pooled(n) && e.pool != nil:
			e.pool.add(s)
		case s.pooled(n):
			e.session, e.pool = nil, newPoolRoute(n, s)
		default:
			if e.pool != nil {
				e.pool.drain() // taken over: its members are replaced below
			}
			e.session, e.pool = s, nil
		}
		r.bySession[s] = append(r.bySession[s], n)
		r.wakeLocked(n)
	}
	// The replaced sessions lose every name they had, not only the ones
	// asked for again; the rest go on hold for the owner.
	for _, old := range replaced {
		r.releaseLocked(old, now)
	}
	return replaced, nil
}

// Lookup implements Registry.
func (r *MemoryRegistry) Lookup(name string) (Route, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[name]
	if !ok {
		return nil, false
	}
	if rt := e.route(); rt != nil {
		return rt, true
	}
	if r.now().Before(e.holdUntil) {
		return nil, true
	}
	r.dropLocked(name)
	return nil, false
}

// Wait implements Registry.
func (r *MemoryRegistry) Wait(ctx context.Context, name string) Route {
	for {
		r.mu.Lock()
		e, ok := r.entries[name]
		switch {
		case !ok:
			r.mu.Unlock()
			return nil
		case e.live():
			rt := e.route()
			r.mu.Unlock()
			return rt
		case !r.now().Before(e.holdUntil):
			r.dropLocked(name)
			r.mu.Unlock()
			return nil
		}
		ch, ok := r.waiters[name]
		if !ok {
			ch = make(chan struct{})
			r.waiters[name] = ch
		}
		r.mu.Unlock()
		if r.waitHook != nil {
			r.waitHook(name)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
	}
}

// wakeLocked wakes the Waits on name.
func (r *MemoryRegistry) wakeLocked(name string) {
	if ch, ok := r.waiters[name]; ok {
		close(ch)
		delete(r.waiters, name)
	}
}

// dropLocked forgets name, waking its Waits so they see it gone.
func (r *MemoryRegistry) dropLocked(name string) {
	if e, ok := r.entries[name]; ok {
		r.unholdLocked(e)
	}
	delete(r.entries, name)
	r.wakeLocked(name)
}

// Account implements Registry.
func (r *MemoryRegistry) Account(name string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[name]
	if !ok {
		return "", false
	}
	if !e.live() && !r.now().Before(e.holdUntil) {
		r.dropLocked(name)
		return "", false
	}
	return e.account, true
}

// Kind implements Registry.
func (r *MemoryRegistry) Kind(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[name]
	if !ok || !e.live() && !r.now().Before(e.holdUntil) {
		return ""
	}
	return e.kind
}

// Held implements Registry.
func (r *MemoryRegistry) Held(name string) bool {
	_, held := r.Lookup(name)
	return held
}

// Release implements Registry.
func (r *MemoryRegistry) Release(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.expireLocked(now)
	r.releaseLocked(s, now)
}

// ReleaseName implements Registry.
func (r *MemoryRegistry) ReleaseName(s *Session, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	names, ok := r.bySession[s]
	if !ok || !slices.Contains(names, name) {
		return
	}
	r.bySession[s] = slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == name })
	if e, ok := r.entries[name]; ok && e.session == s {
		r.dropLocked(name)
	}
}

// ClaimName implements Registry.
func (r *MemoryRegistry) ClaimName(s *Session, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	names, ok := r.bySession[s]
	if !ok {
		return fmt.Errorf("%w: %q: session %s is no longer registered", ErrNameTaken, name, s.ID)
	}
	now := r.now()
	r.expireLocked(now)
	e, ok := r.entries[name]
	switch {
	case !ok:
		e = &regEntry{name: name}
		r.entries[name] = e
	case e.session == s:
		return nil
	case e.live():
		return fmt.Errorf("%w: %q: served by %s", ErrNameTaken, name, e.route())
	case e.owner != s.Owner && now.Before(e.holdUntil):
		return fmt.Errorf("%w: %q", ErrNameTaken, name)
	}
	r.unholdLocked(e)
	e.owner, e.account, e.session, e.kind = s.Owner, s.accountKey(), s, s.Kind(name)
	if e.kind == "" {
		e.kind = proto.KindHTTP
	}
	if !slices.Contains(names, name) {
		r.bySession[s] = append(slices.Clone(names), name)
	}
	r.wakeLocked(name)
	return nil
}

// releaseLocked puts the names s still serves on hold (or drops them with
// no hold) and forgets s. A pooled name loses s only, and goes on hold
// with its last member.
func (r *MemoryRegistry) releaseLocked(s *Session, now time.Time) {
	names, ok := r.bySession[s]
	if !ok {
		return
	}
	delete(r.bySession, s)
	for _, n := range names {
		e, ok := r.entries[n]
		if !ok {
			continue
		}
		switch {
		case e.pool != nil && e.pool.remove(s):
			if len(e.pool.list()) > 0 {
				continue
			}
			e.pool.drain()
		case e.session != s:
			continue
		}
		if r.hold == 0 {
			r.dropLocked(n)
			continue
		}
		e.session, e.pool = nil, nil
		e.holdUntil = now.Add(r.hold)
		e.inHolds = r.holds.PushBack(e)
		acct := r.heldBy[e.account]
		if acct == nil {
			acct = list.New()
			r.heldBy[e.account] = acct
		}
		e.inAccount = acct.PushBack(e)
		for s.maxHeld > 0 && acct.Len() > s.maxHeld {
			r.dropLocked(acct.Front().Value.(*regEntry).name)
		}
	}
}

// unholdLocked takes e off the hold lists, if it is on them.
func (r *MemoryRegistry) unholdLocked(e *regEntry) {
	if e.inHolds == nil {
		return
	}
	r.holds.Remove(e.inHolds)
	acct := r.heldBy[e.account]
	acct.Remove(e.inAccount)
	if acct.Len() == 0 {
		delete(r.heldBy, e.account)
	}
	e.inHolds, e.inAccount = nil, nil
}

// expireLocked drops up to expireBatch holds that have run out, oldest
// first, so names nobody asks for again do not accumulate.
func (r *MemoryRegistry) expireLocked(now time.Time) {
	for range expireBatch {
		front := r.holds.Front()
		if front == nil || now.Before(front.Value.(*regEntry).holdUntil) {
			return
		}
		r.dropLocked(front.Value.(*regEntry).name)
	}
}
