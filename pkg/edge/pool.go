// Pools: several clients of one owner serving one tunnel name.

package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// ErrPoolMismatch is returned by Registry.Claim for a session that asks to
// join a pool serving another kind of tunnel, or other visitor access
// rules (or, for a TCP tunnel, other allowed tokens): the edge refuses the
// client with proto.CodePoolMismatch.
var ErrPoolMismatch = errors.New("pool serves another kind or other access rules")

// ErrPoolUnsupported is returned by Registry.Claim when the registry
// cannot pool names (both of this package's can): the edge refuses the
// client with proto.CodePoolNotAllowed.
var ErrPoolUnsupported = errors.New("pools are not supported by this server's name table")

// poolRoute is a name served by a pool: the sessions of one owner that
// asked for it with TunnelRequest.Pool, the same kind and the same rules.
// A registry returns one poolRoute for the pool's whole life, from its
// first member to its last, whoever joins and leaves meanwhile; the next
// pool of the name is another poolRoute.
//
// The proxy picks a member for each request (pick) and sends it over that
// member's own stream pool, so a kept stream belongs to the member that
// opened it and is reused only for requests routed to that member; Open,
// for TCP and TLS visitors, does the same per connection. A member whose
// stream open fails is skipped: the visitor is sent to the next one.
//
// The member list is copied on write (by the registry, under its lock) and
// read without a lock, so picking costs one atomic load and an add.
type poolRoute struct {
	name, kind, owner string
	rules             *accessRules // the members' visitor rules, all the same

	// members are Sessions here and, in a cluster, remoteRoutes to
	// members on other nodes.
	members atomic.Pointer[[]Route]
	next    atomic.Uint64 // the round robin's counter

	// Members that failed a request before any answer rest: pick passes
	// them over while another member can serve, for memberRestMin after
	// the first failure, twice as long after each further one up to
	// memberRestMax, until one succeeds. A member whose link went silent
	// (its stream opens time out) then costs one visitor that timeout per
	// rest, not every Nth visitor until the keepalive notices. resting
	// counts rests, so the healthy pool's pick costs one atomic load.
	restMu  sync.Mutex
	rests   map[Route]memberRest
	resting atomic.Int32

	draining  chan struct{} // closed when the last member left
	drainOnce sync.Once
}

func newPoolRoute(name string, first *Session) *poolRoute {
	p := &poolRoute{name: name, kind: first.Kind(name), owner: first.Owner, rules: first.access(name),
		draining: make(chan struct{})}
	p.members.Store(&[]Route{first})
	return p
}

// newEmptyPool returns a pool with no member yet (a cluster's, whose
// members the registry sets from the name table).
func newEmptyPool(name, kind, owner string, rules *accessRules) *poolRoute {
	p := &poolRoute{name: name, kind: kind, owner: owner, rules: rules, draining: make(chan struct{})}
	p.members.Store(&[]Route{})
	return p
}

// list returns the members now; the slice is never modified.
func (p *poolRoute) list() []Route { return *p.members.Load() }

// sessions returns the members that are sessions of this node.
func (p *poolRoute) sessions() []*Session {
	var out []*Session
	for _, m := range p.list() {
		if s, ok := m.(*Session); ok {
			out = append(out, s)
		}
	}
	return out
}

// has reports whether rt is a member.
func (p *poolRoute) has(rt Route) bool { return slices.Contains(p.list(), rt) }

// set replaces the members. The registry calls it under its lock.
func (p *poolRoute) set(ms []Route) {
	p.members.Store(&ms)
	p.forgetRests(ms)
}

// add makes s a member. The registry calls it under its lock.
func (p *poolRoute) add(s Route) {
	old := p.list()
	if slices.Contains(old, s) {
		return
	}
	p.members.Store(new(append(slices.Clip(old), s)))
}

// remove takes s out, reporting whether it was a member. The registry calls
// it under its lock.
func (p *poolRoute) remove(s Route) bool {
	old := p.list()
	i := slices.Index(old, s)
	if i < 0 {
		return false
	}
	ms := slices.Delete(slices.Clone(old), i, i+1)
	p.members.Store(&ms)
	p.forgetRests(ms)
	return true
}

// drain marks the pool over: its last member left, or a client that did
// not ask for a pool took the name over.
func (p *poolRoute) drain() { p.drainOnce.Do(func() { close(p.draining) }) }

// memberRestMin and memberRestMax bound a failed member's rest (see
// poolRoute.rests).
const (
	memberRestMin = time.Second
	memberRestMax = 30 * time.Second
)

// memberRest is a failed member's rest: passed over until until; the next
// failure rests it for next.
type memberRest struct {
	until time.Time
	next  time.Duration
}

// failed rests m after a request failed on it before any answer.
func (p *poolRoute) failed(m Route) {
	now := time.Now()
	p.restMu.Lock()
	defer p.restMu.Unlock()
	if !p.has(m) {
		return // left meanwhile: nothing to pass over
	}
	r, ok := p.rests[m]
	if !ok {
		r.next = memberRestMin
		if p.rests == nil {
			p.rests = make(map[Route]memberRest)
		}
		p.resting.Add(1)
	}
	p.rests[m] = memberRest{until: now.Add(r.next), next: min(2*r.next, memberRestMax)}
}

// served ends m's rest, if it had one: m answered.
func (p *poolRoute) served(m Route) {
	if p.resting.Load() == 0 {
		return
	}
	p.restMu.Lock()
	defer p.restMu.Unlock()
	if _, ok := p.rests[m]; ok {
		delete(p.rests, m)
		p.resting.Add(-1)
	}
}

// restingNow reports whether m is in a rest that has not run out.
func (p *poolRoute) restingNow(m Route, now time.Time) bool {
	p.restMu.Lock()
	defer p.restMu.Unlock()
	r, ok := p.rests[m]
	return ok && now.Before(r.until)
}

// forgetRests drops the rests of routes that are no longer members, so
// a long-lived pool whose clients come and go keeps none of them.
func (p *poolRoute) forgetRests(ms []Route) {
	if p.resting.Load() == 0 {
		return
	}
	p.restMu.Lock()
	defer p.restMu.Unlock()
	for m := range p.rests {
		if !slices.Contains(ms, m) {
			delete(p.rests, m)
			p.resting.Add(-1)
		}
	}
}

// pick returns the next member in round robin that is not draining and not
// in tried, passing over resting members while another can serve; nil if
// there is none.
func (p *poolRoute) pick(tried []Route) Route {
	select {
	case <-p.draining:
		return nil // the name has another route now, or none
	default:
	}
	ms := p.list()
	n := uint64(len(ms))
	if n == 0 {
		return nil
	}
	start := p.next.Add(1) - 1
	checkRests := p.resting.Load() > 0
	var now time.Time
	var rested Route // the first resting member, if no other can serve
	for i := range n {
		m := ms[(start+i)%n]
		if slices.Contains(tried, m) {
			continue
		}
		select {
		case <-m.Draining():
			continue
		default:
		}
		if checkRests {
			if now.IsZero() {
				now = time.Now()
			}
			if p.restingNow(m, now) {
				if rested == nil {
					rested = m
				}
				continue
			}
		}
		return m
	}
	return rested
}

// Open implements Route: a stream on the next member, skipping each
// member whose open fails, until one succeeds or every member failed
// (the last failure is returned). Used by TCP and TLS visitors; HTTP
// requests pick a member themselves (see pools.RoundTrip).
func (p *poolRoute) Open(ctx context.Context, h *proto.StreamHeader) (net.Conn, error) {
	conn, _, err := p.openMember(ctx, h, nil)
	return conn, err
}

// openMember is Open, also returning the member whose stream it is;
// skipped, if not nil, is called for each member skipped.
func (p *poolRoute) openMember(ctx context.Context, h *proto.StreamHeader, skipped func()) (net.Conn, Route, error) {
	var tried []Route
	err := fmt.Errorf("pool %q: no member: %w", p.name, errTunnelOffline)
	for {
		m := p.pick(tried)
		if m == nil {
			return nil, nil, err
		}
		if len(tried) > 0 && skipped != nil {
			skipped()
		}
		conn, oerr := m.Open(ctx, h)
		if oerr == nil {
			p.served(m)
			return conn, m, nil
		}
		if ctx.Err() != nil {
			return nil, nil, oerr
		}
		p.failed(m)
		tried, err = append(tried, m), oerr
	}
}

// Draining implements Route: closed once the pool is over.
func (p *poolRoute) Draining() <-chan struct{} { return p.draining }

// String implements Route: "pool:" and the name.
func (p *poolRoute) String() string { return "pool:" + p.name }

func (p *poolRoute) access(string) *accessRules { return p.rules }

// routesTo reports whether a request routed to rt may still be sent
// there, when the name's route is now cur: rt is cur, or a member of the
// pool cur.
func routesTo(cur, rt Route) bool {
	if cur == rt {
		return true
	}
	p, ok := cur.(*poolRoute)
	if !ok {
		return false
	}
	return p.has(rt)
}

// poolFits reports whether s may join p for name: same kind, same visitor
// rules and, for a TCP tunnel, the same allowed tokens as the pool's first
// member, so every member is reached on the same terms.
func poolFits(p *poolRoute, s *Session, name string) bool {
	if s.Kind(name) != p.kind || !sameRules(p.rules, s.access(name)) {
		return false
	}
	ms := p.list()
	if len(ms) == 0 {
		return true
	}
	first, ok := ms[0].(*Session)
	return ok && slices.Equal(first.allow[name], s.allow[name])
}

// pooled reports whether the session asked for name with
// TunnelRequest.Pool.
func (s *Session) pooled(name string) bool {
	i := slices.Index(s.Names, name)
	return i >= 0 && i < len(s.requests) && s.requests[i].Pool
}

// checkPool refuses a Hello that asks for a pool when the token id may not
// pool (Identity.Pool); an anonymous client (id nil) never may: its owner
// key is free to make up, and a pool would let one client's name gather
// any number of others. A pool of a random name is refused too: nobody
// else could ask for it. So is a pool with a custom domain: the domain is
// claimed as a name of one session, and a second member asking for it
// would take the whole pool over.
func checkPool(id *token.Identity, hello *proto.Hello) *proto.Error {
	for i, t := range hello.Tunnels {
		if !t.Pool {
			continue
		}
		if t.Domain != "" {
			return &proto.Error{Code: proto.CodeBadRequest, Message: fmt.Sprintf(
				"tunnel %d: a pool cannot serve a custom domain: one client serves a domain", i+1)}
		}
		if id != nil && id.Pool && t.Name != "" {
			continue
		}
		if id != nil && id.Pool {
			return &proto.Error{Code: proto.CodeBadRequest, Message: fmt.Sprintf(
				"tunnel %d: a pool needs a name: the clients of a pool share one", i+1)}
		}
		who := "anonymous clients"
		if id != nil {
			who = fmt.Sprintf("the token %q", id.Label)
		}
		return &proto.Error{Code: proto.CodePoolNotAllowed, Message: fmt.Sprintf(
			"%s may not share a name in a pool (tunneld token add --pool grants it)", who)}
	}
	return nil
}

// openError: a route's Open failed, so nothing of the request was sent and
// a pool may send it to another member.
type openError struct{ err error }

func (e *openError) Error() string { return e.err.Error() }
func (e *openError) Unwrap() error { return e.err }

// memberFailed reports whether a request r that failed with err on a pool
// member may go to another member: the member was no longer the name's or
// draining (errRouteDown), its stream open failed, or its stream ended
// with no answer at all and r can be sent again (a member killed with
// requests in flight). The visitor then never sees the member's failure.
func memberFailed(err error, r *http.Request) bool {
	if r.Context().Err() != nil {
		return false
	}
	var oe *openError
	var ue *unansweredError
	return errors.Is(err, errRouteDown) || errors.As(err, &oe) || errors.As(err, &ue) && isReplayable(r)
}
