package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Tunnel is one name a session claims: its kind, and Data, opaque bytes
// the edge keeps with the live record (what a forwarding node needs to
// enforce the visitors' access rules).
type Tunnel struct {
	Name string
	Kind string
	Data []byte
	// Pool shares the name: the session joins the members serving it (on
	// any node) if they have the same owner, Kind and Data, or starts a
	// pool. Without Pool, a claim of a pooled name takes over every member.
	Pool bool
	// Match, for a pool member, is what every member of the pool must
	// have alike (the visitor rules, not a token's label that may differ
	// per member); nil compares Data whole.
	Match []byte
}

// ClaimRequest is one session's claim: all of Tunnels, or none.
type ClaimRequest struct {
	Session string // the session ID, unique in the cluster
	Owner   string // whom the names belong to
	Account string // whom the per-token limits count (empty: Owner)
	Tunnels []Tunnel
}

// Replaced is a session whose names a claim took over (same owner).
type Replaced struct {
	Node, Session string
}

// ownerRecord is the value of owners/<name>: who owns the name, outside any
// lease so it outlives a node. HoldUntil is zero while the name is live (or
// its node died and no node has given it a deadline yet).
type ownerRecord struct {
	Owner     string `json:"owner"`
	Account   string `json:"account,omitempty"`
	Kind      string `json:"kind,omitempty"`
	HoldUntil int64  `json:"hold_until_ms,omitempty"` // Unix ms
	Pool      bool   `json:"pool,omitempty"`          // the name is (or was) a pool's
}

// liveRecord is the value of names/<name>, under the serving node's lease.
type liveRecord struct {
	Owner   string `json:"owner"`
	Account string `json:"account,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Node    string `json:"node"`
	Addr    string `json:"addr"`
	Session string `json:"session"`
	Data    []byte `json:"data,omitempty"`
	Pool    bool   `json:"pool,omitempty"`  // a member record (members/<name>/<session>)
	Match   []byte `json:"match,omitempty"` // see Tunnel.Match
}

// poolMatch is the bytes a pool member must share with the others.
func poolMatch(data, match []byte) []byte {
	if match != nil {
		return match
	}
	return data
}

// memberPrefix is the key prefix of name's pool members.
func (c *Cluster) memberPrefix(name string) string { return c.kMembers + name + "/" }

// memberKey is the live record of session's membership in name's pool.
func (c *Cluster) memberKey(name, session string) string { return c.memberPrefix(name) + session }

// claimAttempts bounds how often Claim reads again after losing a race.
const claimAttempts = 5

// Claim gives all of req's names to req.Session, or none: each name must
// be free (no owner record, or a hold that ran out) or the owner's (live on
// any node, or on hold). It is one etcd transaction over the names, which
// compares the revisions it read. A live record of the same owner is taken
// over; its session is returned (the node that serves it closes it when
// its watch sees the change). Errors wrap ErrNameTaken, ErrUnavailable or
// ErrClosed. On success the view already shows the claim.
func (c *Cluster) Claim(ctx context.Context, req ClaimRequest) ([]Replaced, error) {
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if req.Account == "" {
		req.Account = req.Owner
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ClaimTimeout)
	defer cancel()
	for range claimAttempts {
		replaced, rev, revs, err := c.claimOnce(ctx, req, true)
		if errors.Is(err, errRace) {
			continue
		}
		if err != nil {
			return nil, err
		}
		lc := &localClaim{session: req.Session, owner: req.Owner, account: req.Account, tunnels: req.Tunnels, revs: revs}
		c.lmu.Lock()
		for _, old := range c.local {
			// A local session replaced by this claim loses the names; a
			// member of a pool this claim joins keeps its own.
			for _, t := range req.Tunnels {
				if !t.Pool || !old.pooled(t.Name) {
					delete(old.revs, t.Name)
				}
			}
		}
		c.local[req.Session] = lc
		for _, t := range req.Tunnels {
			if t.Pool {
				if sid, ok := c.byName[t.Name]; ok && sid != req.Session {
					delete(c.byName, t.Name)
				}
				continue
			}
			c.byName[t.Name] = req.Session
		}
		c.lmu.Unlock()
		if c.v.waitRev(ctx, rev) {
			c.checkLost(req.Session, req.Tunnels)
		}
		return replaced, nil
	}
	return nil, fmt.Errorf("%w: claim lost %d races in a row", ErrUnavailable, claimAttempts)
}

var errRace = errors.New("cluster: raced")

// pooled reports whether lc claimed name as a pool member.
func (lc *localClaim) pooled(name string) bool {
	for _, t := range lc.tunnels {
		if t.Name == name {
			return t.Pool
		}
	}
	return false
}

// checkLost calls Hooks.Lost for session if the view shows any of its
// names served by another session: a takeover the watch delivered before
// the claim was recorded as local.
func (c *Cluster) checkLost(session string, tunnels []Tunnel) {
	for _, t := range tunnels {
		e, ok := c.Lookup(t.Name)
		if !ok {
			continue
		}
		taken := e.Live != nil && e.Live.Session != session
		if t.Pool {
			taken = e.Live != nil // a claim without Pool took the name over
		} else if len(e.Members) > 0 {
			taken = true // a pool took it over from this session
		}
		if taken {
			if h := c.hooks.Load(); h.Lost != nil {
				h.Lost(session)
			}
			return
		}
	}
}

// unavailable wraps an etcd error as ErrUnavailable and marks the node
// degraded.
func (c *Cluster) unavailable(op string, err error) error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	c.markDegraded()
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, op, err)
}

// claimOnce reads the names and writes them if the reads still hold;
// without takeover, a live record of another session is ErrNameTaken.
func (c *Cluster) claimOnce(ctx context.Context, req ClaimRequest, takeover bool) ([]Replaced, int64, map[string]int64, error) {
	reads := make([]clientv3.Op, 0, 3*len(req.Tunnels))
	for _, t := range req.Tunnels {
		reads = append(reads, clientv3.OpGet(c.kOwners+t.Name), clientv3.OpGet(c.kNames+t.Name),
			clientv3.OpGet(c.memberPrefix(t.Name), clientv3.WithPrefix()))
	}
	resp, err := c.cli.Txn(ctx).Then(reads...).Commit()
	if c.count(err) != nil {
		return nil, 0, nil, c.unavailable("read names", err)
	}
	now := time.Now()
	c.lmu.Lock()
	lease := c.lease
	c.lmu.Unlock()
	var replaced []Replaced
	cmps := make([]clientv3.Cmp, 0, 2*len(req.Tunnels))
	puts := make([]clientv3.Op, 0, 2*len(req.Tunnels))
	readRev := resp.Header.Revision
	for i, t := range req.Tunnels {
		okv, lkv := resp.Responses[3*i].GetResponseRange().Kvs, resp.Responses[3*i+1].GetResponseRange().Kvs
		mkv := resp.Responses[3*i+2].GetResponseRange().Kvs
		var orev, lrev int64
		if len(okv) > 0 {
			orev = okv[0].ModRevision
			var o ownerRecord
			if err := json.Unmarshal(okv[0].Value, &o); err != nil {
				return nil, 0, nil, fmt.Errorf("%w: %q: bad owner record: %v", ErrUnavailable, t.Name, err)
			}
			if o.Owner != req.Owner {
				free := len(lkv) == 0 && len(mkv) == 0 && o.HoldUntil != 0 && now.UnixMilli() >= o.HoldUntil
				if !free {
					return nil, 0, nil, fmt.Errorf("%w: %q", ErrNameTaken, t.Name)
				}
			}
		}
		if len(lkv) > 0 {
			lrev = lkv[0].ModRevision
			var l liveRecord
			if err := json.Unmarshal(lkv[0].Value, &l); err != nil {
				return nil, 0, nil, fmt.Errorf("%w: %q: bad live record: %v", ErrUnavailable, t.Name, err)
			}
			if l.Owner != req.Owner {
				return nil, 0, nil, fmt.Errorf("%w: %q", ErrNameTaken, t.Name)
			}
			r := Replaced{Node: l.Node, Session: l.Session}
			if l.Session != req.Session && !takeover {
				return nil, 0, nil, fmt.Errorf("%w: %q: taken over by session %s", ErrNameTaken, t.Name, l.Session)
			}
			if l.Session != req.Session && !contains(replaced, r) {
				replaced = append(replaced, r)
			}
			if t.Pool {
				// A pool's claim of a name one session holds alone takes
				// it over from that session.
				puts = append(puts, clientv3.OpDelete(c.kNames+t.Name))
			}
		}
		for _, kv := range mkv {
			var m liveRecord
			if err := json.Unmarshal(kv.Value, &m); err != nil {
				return nil, 0, nil, fmt.Errorf("%w: %q: bad member record: %v", ErrUnavailable, t.Name, err)
			}
			if m.Owner != req.Owner {
				return nil, 0, nil, fmt.Errorf("%w: %q", ErrNameTaken, t.Name)
			}
			if m.Session == req.Session {
				continue // this session's own member (re-asserted)
			}
			if t.Pool {
				if m.Kind != t.Kind || !bytes.Equal(poolMatch(m.Data, m.Match), poolMatch(t.Data, t.Match)) {
					return nil, 0, nil, fmt.Errorf("%w: %q", ErrPoolMismatch, t.Name)
				}
				continue // joins: nobody is replaced
			}
			if !takeover {
				return nil, 0, nil, fmt.Errorf("%w: %q: taken over by a pool", ErrNameTaken, t.Name)
			}
			// A claim without Pool takes the name over from every member.
			if r := (Replaced{Node: m.Node, Session: m.Session}); !contains(replaced, r) {
				replaced = append(replaced, r)
			}
			puts = append(puts, clientv3.OpDelete(string(kv.Key)))
		}
		// Every claim rewrites the owner record, so claims of one name
		// (joins of one pool included) are ordered by its revision; the
		// members' range must also be as read (none added or rewritten).
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(c.kOwners+t.Name), "=", orev),
			clientv3.Compare(clientv3.ModRevision(c.kNames+t.Name), "=", lrev),
			clientv3.Compare(clientv3.ModRevision(c.memberPrefix(t.Name)), "<", readRev+1).WithPrefix())
		ov, _ := json.Marshal(ownerRecord{Owner: req.Owner, Account: req.Account, Kind: t.Kind, Pool: t.Pool})
		lv, _ := json.Marshal(liveRecord{Owner: req.Owner, Account: req.Account, Kind: t.Kind, Node: c.cfg.Node,
			Addr: c.cfg.Addr, Session: req.Session, Data: t.Data, Pool: t.Pool, Match: t.Match})
		key := c.kNames + t.Name
		if t.Pool {
			key = c.memberKey(t.Name, req.Session)
		}
		puts = append(puts, clientv3.OpPut(c.kOwners+t.Name, string(ov)),
			clientv3.OpPut(key, string(lv), clientv3.WithLease(lease)))
	}
	tresp, err := c.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
	if c.count(err) != nil {
		return nil, 0, nil, c.unavailable("claim names", err)
	}
	if !tresp.Succeeded {
		return nil, 0, nil, errRace
	}
	rev := tresp.Header.Revision
	revs := make(map[string]int64, len(req.Tunnels))
	for _, t := range req.Tunnels {
		revs[t.Name] = rev
	}
	return replaced, rev, revs, nil
}

func contains(rs []Replaced, r Replaced) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// Release takes session's names off the live table and puts them on hold
// for their owner (Config.Hold; none: frees them). Names since taken by
// another session are untouched. It is one transaction, bounded by
// ClaimTimeout; if etcd does not take it, it is retried once etcd is back
// (the names stay live under this node's lease meanwhile, served by no
// session, so visitors see them held).
func (c *Cluster) Release(ctx context.Context, session string) {
	c.lmu.Lock()
	lc, ok := c.local[session]
	if ok {
		delete(c.local, session)
		for n := range lc.revs {
			if c.byName[n] == session {
				delete(c.byName, n)
			}
		}
	}
	c.lmu.Unlock()
	if !ok || len(lc.revs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ClaimTimeout)
	defer cancel()
	if rev := c.releaseOrQueue(ctx, lc, func(e *zerolog.Event) *zerolog.Event { return e }); rev != 0 {
		c.v.waitRev(ctx, rev)
	}
}

// ReleaseName frees one of session's names at once, with no hold (the
// edge drops a custom domain whose DNS no longer points at its tunnel, and
// whoever it points at now may claim it); the session keeps its other
// names, and a later reassertion does not write this one again.
func (c *Cluster) ReleaseName(ctx context.Context, session, name string) {
	c.lmu.Lock()
	lc, ok := c.local[session]
	var one *localClaim
	if ok {
		if rev, live := lc.revs[name]; live {
			for _, t := range lc.tunnels {
				if t.Name == name {
					one = &localClaim{session: session, owner: lc.owner, account: lc.account,
						tunnels: []Tunnel{t}, revs: map[string]int64{name: rev}, noHold: true}
				}
			}
			delete(lc.revs, name)
			if c.byName[name] == session {
				delete(c.byName, name)
			}
		}
	}
	c.lmu.Unlock()
	if one == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ClaimTimeout)
	defer cancel()
	if rev := c.releaseOrQueue(ctx, one, func(e *zerolog.Event) *zerolog.Event { return e.Str("name", name) }); rev != 0 {
		c.v.waitRev(ctx, rev)
	}
}

// ClaimName gives one more name to session, a session of this node with a
// claim (the edge serves a custom domain again once its DNS points at the
// tunnel again, after ReleaseName dropped it). Unlike Claim it takes
// nothing over: a name live for any other session, even the same owner's,
// is ErrNameTaken, as is a name another owner owns; so no session anywhere
// loses a name to it. It is one transaction over the name, retried after a
// lost race. Errors wrap ErrNameTaken (also once session is released),
// releaseOrQueue frees lc's names in etcd, returning the revision it
// wrote at (0 if it did not); a release etcd does not take is queued, the
// node marked degraded, and the release retried when etcd is back. log
// adds to the warning what was being released (nil: no warning).
func (c *Cluster) releaseOrQueue(ctx context.Context, lc *localClaim, log func(*zerolog.Event) *zerolog.Event) int64 {
	rev, err := c.releaseOnce(ctx, lc)
	if err == nil {
		return rev
	}
	if c.ctx.Err() == nil {
		if log != nil {
			log(c.log.Warn().Err(err).Str("session_id", lc.session)).Msg("release failed; retried when etcd is back")
		}
		c.markDegraded()
		c.lmu.Lock()
		c.released = append(c.released, lc)
		c.lmu.Unlock()
	}
	return 0
}

// ErrUnavailable or ErrClosed. On success the view already shows the claim.
func (c *Cluster) ClaimName(ctx context.Context, session string, t Tunnel) error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	c.lmu.Lock()
	lc, ok := c.local[session]
	c.lmu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %q: session %s holds no claim on this node", ErrNameTaken, t.Name, session)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ClaimTimeout)
	defer cancel()
	req := ClaimRequest{Session: session, Owner: lc.owner, Account: lc.account, Tunnels: []Tunnel{t}}
	for range claimAttempts {
		_, rev, revs, err := c.claimOnce(ctx, req, false)
		if errors.Is(err, errRace) {
			continue
		}
		if err != nil {
			return err
		}
		c.lmu.Lock()
		still := c.local[session] == lc
		if still {
			lc.revs[t.Name] = revs[t.Name]
			i := slices.IndexFunc(lc.tunnels, func(x Tunnel) bool { return x.Name == t.Name })
			if i >= 0 {
				lc.tunnels[i] = t
			} else {
				lc.tunnels = append(lc.tunnels, t)
			}
			c.byName[t.Name] = session
		}
		c.lmu.Unlock()
		if !still {
			// Released while the transaction ran: free what it wrote.
			one := &localClaim{session: session, owner: lc.owner, account: lc.account,
				tunnels: []Tunnel{t}, revs: revs, noHold: true}
			c.releaseOrQueue(ctx, one, nil)
			return fmt.Errorf("%w: %q: session %s was released meanwhile", ErrNameTaken, t.Name, session)
		}
		c.v.waitRev(ctx, rev)
		return nil
	}
	return fmt.Errorf("%w: claim lost %d races in a row", ErrUnavailable, claimAttempts)
}

func (c *Cluster) releaseOnce(ctx context.Context, lc *localClaim) (int64, error) {
	ops := make([]clientv3.Op, 0, len(lc.revs))
	holdUntil := time.Now().Add(c.cfg.Hold).UnixMilli()
	for _, t := range lc.tunnels {
		rev, ok := lc.revs[t.Name]
		if !ok {
			continue
		}
		if t.Pool {
			// A member leaves alone; when it was the last, the owner
			// record is left with no live record and no member, and the
			// tidying gives it its hold at once (as after a node's death).
			key := c.memberKey(t.Name, lc.session)
			ops = append(ops, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", rev)},
				[]clientv3.Op{clientv3.OpDelete(key)}, nil))
			continue
		}
		then := []clientv3.Op{clientv3.OpDelete(c.kNames + t.Name)}
		if c.cfg.Hold > 0 && !lc.noHold {
			ov, _ := json.Marshal(ownerRecord{Owner: lc.owner, Account: lc.account, Kind: t.Kind, HoldUntil: holdUntil})
			then = append(then, clientv3.OpPut(c.kOwners+t.Name, string(ov)))
		} else {
			then = append(then, clientv3.OpDelete(c.kOwners+t.Name))
		}
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(c.kNames+t.Name), "=", rev)}, then, nil))
	}
	resp, err := c.cli.Txn(ctx).Then(ops...).Commit()
	if c.count(err) != nil {
		return 0, fmt.Errorf("release: %w", err)
	}
	return resp.Header.Revision, nil
}

// reassertAll writes every local session's names again under the current
// lease, after etcd was away or the lease ran out, and retries the
// releases etcd did not take. A session whose name another session took
// meanwhile (or another owner, once its hold ended) is lost: Hooks.Lost.
func (c *Cluster) reassertAll(ctx context.Context) error {
	c.lmu.Lock()
	released := c.released
	c.released = nil
	claims := make([]*localClaim, 0, len(c.local))
	for _, lc := range c.local {
		claims = append(claims, lc)
	}
	c.reassert = false
	c.lmu.Unlock()
	fail := func(err error, rest []*localClaim) error {
		c.lmu.Lock()
		c.released = append(c.released, rest...)
		c.reassert = true
		c.lmu.Unlock()
		return err
	}
	for i, lc := range released {
		if _, err := c.releaseOnce(ctx, lc); err != nil {
			return fail(err, released[i:])
		}
	}
	for _, lc := range claims {
		var err error
		for range claimAttempts {
			if err = c.reassertOne(ctx, lc); !errors.Is(err, errRace) {
				break
			}
		}
		switch {
		case errors.Is(err, ErrNameTaken), errors.Is(err, ErrPoolMismatch):
			// A pool of other rules that formed meanwhile took the name
			// as surely as another session.
			c.log.Warn().Err(err).Str("session_id", lc.session).Msg("session lost a name while etcd was away")
			if h := c.hooks.Load(); h.Lost != nil {
				h.Lost(lc.session)
			}
		case err != nil:
			return fail(err, nil)
		}
	}
	return nil
}

// reassertOne writes lc's names again under the current lease if they are
// still lc's: owned by its owner, and live for its session or not live.
func (c *Cluster) reassertOne(ctx context.Context, lc *localClaim) error {
	c.lmu.Lock()
	if c.local[lc.session] != lc {
		c.lmu.Unlock()
		return nil // released meanwhile
	}
	var tunnels []Tunnel
	for _, t := range lc.tunnels {
		if _, ok := lc.revs[t.Name]; ok {
			tunnels = append(tunnels, t)
		}
	}
	c.lmu.Unlock()
	if len(tunnels) == 0 {
		return nil
	}
	if c.beforeReassertWrite != nil {
		c.beforeReassertWrite()
	}
	req := ClaimRequest{Session: lc.session, Owner: lc.owner, Account: lc.account, Tunnels: tunnels}
	_, rev, revs, err := c.claimOnce(ctx, req, false)
	if err != nil {
		return err
	}
	// Merge, never replace: while the transaction ran, ClaimName may have
	// given the session one more name (kept, with the newer of the two
	// revisions), and ReleaseName may have dropped one that this
	// transaction has just written again (freed below, with no hold, as
	// ReleaseName meant).
	c.lmu.Lock()
	var stale *localClaim
	for name, r := range revs {
		if cur, live := lc.revs[name]; live && c.local[lc.session] == lc {
			lc.revs[name] = max(cur, r)
			continue
		}
		if stale == nil {
			stale = &localClaim{session: lc.session, owner: lc.owner, account: lc.account,
				revs: map[string]int64{}, noHold: true}
		}
		stale.revs[name] = r
		for _, t := range tunnels {
			if t.Name == name {
				stale.tunnels = append(stale.tunnels, t)
			}
		}
	}
	c.lmu.Unlock()
	if stale != nil {
		c.releaseOrQueue(ctx, stale, nil)
	}
	c.v.waitRev(ctx, rev)
	return nil
}

// tidyBatch bounds the etcd writes of one tidying pass.
const tidyBatch = 64

// tidyLoop gives hold deadlines to the names of dead nodes and deletes
// holds that ran out, a bounded batch per pass.
func (c *Cluster) tidyLoop() {
	defer c.wg.Done()
	every := c.cfg.LeaseTTL / 2
	if c.cfg.Hold > 0 && c.cfg.Hold/4 < every {
		every = max(c.cfg.Hold/4, 100*time.Millisecond)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		case <-c.v.orphaned:
		}
		if c.paused.Load() {
			continue
		}
		c.tidy()
	}
}

func (c *Cluster) tidy() {
	orphans, expired := c.v.tidyWork(time.Now(), tidyBatch)
	if len(orphans)+len(expired) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ClaimTimeout)
	defer cancel()
	holdUntil := time.Now().Add(c.cfg.Hold).UnixMilli()
	var ops []clientv3.Op
	for _, o := range orphans {
		// A live name whose node died: its hold starts now. Whichever node
		// sees it first writes the deadline; the others' compare fails.
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(c.kOwners+o.name), "=", o.rev),
			clientv3.Compare(clientv3.CreateRevision(c.kNames+o.name), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(c.memberPrefix(o.name)), "=", 0).WithPrefix()}
		var then clientv3.Op
		if c.cfg.Hold > 0 {
			rec := o.rec
			rec.HoldUntil = holdUntil
			v, _ := json.Marshal(rec)
			then = clientv3.OpPut(c.kOwners+o.name, string(v))
		} else {
			then = clientv3.OpDelete(c.kOwners + o.name)
		}
		ops = append(ops, clientv3.OpTxn(cmps, []clientv3.Op{then}, nil))
	}
	for _, e := range expired {
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(c.kOwners+e.name), "=", e.rev),
			clientv3.Compare(clientv3.CreateRevision(c.kNames+e.name), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(c.memberPrefix(e.name)), "=", 0).WithPrefix()}
		ops = append(ops, clientv3.OpTxn(cmps, []clientv3.Op{clientv3.OpDelete(c.kOwners + e.name)}, nil))
	}
	_, err := c.cli.Txn(ctx).Then(ops...).Commit()
	if c.count(err) != nil && c.ctx.Err() == nil {
		c.log.Debug().Err(err).Msg("tidy holds")
	}
}
