package cluster

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Entry is a name as the view knows it: live (served by a session on some
// node) or on hold for its owner.
type Entry struct {
	Name    string
	Owner   string
	Account string
	Kind    string
	// Live is the serving session; nil while the name is on hold or
	// pooled.
	Live *Live
	// Members are a pooled name's live members, one per session on any
	// node, ordered by session ID; empty unless the name is pooled and
	// live.
	Members []*Live
	// HoldUntil is when the hold ends; zero while live, or while its
	// node's death is not yet given a deadline (held meanwhile).
	HoldUntil time.Time
}

// Live is a live name's record. A value is never modified: a new claim of
// the name makes a new one, with a new Rev.
type Live struct {
	Node    string
	Addr    string // the node's link address
	Session string
	Data    []byte // the edge's bytes (see Tunnel.Data)
	Pool    bool   // a member of the name's pool (see Entry.Members)
	// Rev is the etcd revision of the claim: it changes with every claim
	// of the name, so (name, Rev) names one claim.
	Rev int64

	owner, account, kind string
}

type ownerEntry struct {
	rec ownerRecord
	rev int64
}

// view is the node's copy of the name table, fed by one watch. Every read
// of the edge (Lookup, Kind, Held, Account, Wait) is answered from here.
type view struct {
	c *Cluster

	mu      sync.RWMutex
	live    map[string]*Live
	members map[string]map[string]*Live // pooled name → session → member
	owners  map[string]ownerEntry
	foreign map[string]int           // account → live names on other nodes
	waiters map[string]chan struct{} // closed at name's next change
	rev     int64                    // the table as of this revision
	revCh   chan struct{}            // closed when rev advances

	orphaned chan struct{} // a live name lost its record: tidy soon
	relists  int           // tests: how many times the table was read whole
}

func (v *view) init(c *Cluster) {
	v.c = c
	v.live = make(map[string]*Live)
	v.members = make(map[string]map[string]*Live)
	v.owners = make(map[string]ownerEntry)
	v.foreign = make(map[string]int)
	v.waiters = make(map[string]chan struct{})
	v.revCh = make(chan struct{})
	v.orphaned = make(chan struct{}, 1)
}

// Lookup returns name's entry if it is live or on hold.
func (c *Cluster) Lookup(name string) (Entry, bool) {
	v := &c.v
	v.mu.RLock()
	defer v.mu.RUnlock()
	l := v.live[name]
	o, owned := v.owners[name]
	switch {
	case l != nil:
		return Entry{Name: name, Owner: l.owner, Account: l.account, Kind: l.kind, Live: l}, true
	case len(v.members[name]) > 0:
		ms := sortedMembers(v.members[name])
		return Entry{Name: name, Owner: ms[0].owner, Account: ms[0].account, Kind: ms[0].kind, Members: ms}, true
	case !owned:
		return Entry{}, false
	}
	e := Entry{Name: name, Owner: o.rec.Owner, Account: o.rec.Account, Kind: o.rec.Kind}
	if o.rec.HoldUntil != 0 {
		e.HoldUntil = time.UnixMilli(o.rec.HoldUntil)
		if !time.Now().Before(e.HoldUntil) {
			return Entry{}, false
		}
	}
	return e, true
}

// sortedMembers returns a pool's members ordered by session ID, so every
// node lists them alike.
func sortedMembers(m map[string]*Live) []*Live {
	out := make([]*Live, 0, len(m))
	for _, l := range m {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b *Live) int { return strings.Compare(a.Session, b.Session) })
	return out
}

// Live returns the view's live names, in no order: for status pages. A
// pooled name is listed once per member, each entry with that member in
// Live (and Members empty).
func (c *Cluster) Live() []Entry {
	c.v.mu.RLock()
	defer c.v.mu.RUnlock()
	out := make([]Entry, 0, len(c.v.live))
	for n, l := range c.v.live {
		out = append(out, Entry{Name: n, Owner: l.owner, Account: l.account, Kind: l.kind, Live: l})
	}
	for n, ms := range c.v.members {
		for _, l := range ms {
			out = append(out, Entry{Name: n, Owner: l.owner, Account: l.account, Kind: l.kind, Live: l})
		}
	}
	return out
}

// Changes returns a channel closed at the next change of name in the view.
// Take it before reading the entry, so no change is missed.
func (c *Cluster) Changes(name string) <-chan struct{} {
	v := &c.v
	v.mu.Lock()
	defer v.mu.Unlock()
	ch, ok := v.waiters[name]
	if !ok {
		ch = make(chan struct{})
		v.waiters[name] = ch
	}
	return ch
}

// isTunnel reports whether the table's name is a tunnel's: a name with a
// dot is a custom domain, which the edge claims beside its tunnel's name
// and which counts toward no tunnel limit.
func isTunnel(name string) bool { return !strings.Contains(name, ".") }

// ForeignTunnels counts account's live tunnel names (custom domains aside)
// served by other nodes.
func (c *Cluster) ForeignTunnels(account string) int {
	c.v.mu.RLock()
	defer c.v.mu.RUnlock()
	return c.v.foreign[account]
}

// waitRev waits until the view is as of rev or later, or ctx ends, and
// reports whether it is.
func (v *view) waitRev(ctx context.Context, rev int64) bool {
	for {
		v.mu.RLock()
		cur, ch := v.rev, v.revCh
		v.mu.RUnlock()
		if cur >= rev {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		case <-v.c.ctx.Done():
			return false
		}
	}
}

// relist reads the whole table and replaces the view with it, returning
// the revision read.
func (v *view) relist(ctx context.Context) (int64, error) {
	c := v.c
	resp, err := c.cli.Get(ctx, c.cfg.Prefix, clientv3.WithPrefix())
	if c.count(err) != nil {
		return 0, err
	}
	live := make(map[string]*Live)
	members := make(map[string]map[string]*Live)
	owners := make(map[string]ownerEntry)
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		switch {
		case strings.HasPrefix(k, c.kMembers):
			if n, l := v.decodeMember(kv); l != nil {
				if members[n] == nil {
					members[n] = make(map[string]*Live)
				}
				members[n][l.Session] = l
			}
		case strings.HasPrefix(k, c.kNames):
			if l := v.decodeLive(kv); l != nil {
				live[k[len(c.kNames):]] = l
			}
		case strings.HasPrefix(k, c.kOwners):
			if o, ok := decodeOwner(kv); ok {
				owners[k[len(c.kOwners):]] = o
			}
		}
	}
	v.mu.Lock()
	changed := make(map[string]struct{})
	for n := range v.live {
		changed[n] = struct{}{}
	}
	for n := range v.owners {
		changed[n] = struct{}{}
	}
	for n := range live {
		changed[n] = struct{}{}
	}
	for n := range owners {
		changed[n] = struct{}{}
	}
	for n := range v.members {
		changed[n] = struct{}{}
	}
	for n := range members {
		changed[n] = struct{}{}
	}
	v.live, v.owners, v.members = live, owners, members
	v.foreign = make(map[string]int)
	for n, l := range live {
		if l.Node != c.cfg.Node && isTunnel(n) {
			v.foreign[l.account]++
		}
	}
	for n, ms := range members {
		for _, l := range ms {
			if l.Node != c.cfg.Node && isTunnel(n) {
				v.foreign[l.account]++
			}
		}
	}
	v.relists++
	v.advanceLocked(resp.Header.Revision)
	v.mu.Unlock()
	v.settle(changed, live)
	return resp.Header.Revision, nil
}

// advanceLocked moves the view to rev and wakes waitRev.
func (v *view) advanceLocked(rev int64) {
	if rev > v.rev {
		v.rev = rev
		close(v.revCh)
		v.revCh = make(chan struct{})
	}
}

// settle runs after the view changed, without its lock: it wakes the
// names' waiters, tells the edge, finds local sessions whose names another
// session took over, and signals orphaned names to the tidying.
func (v *view) settle(changed map[string]struct{}, lives map[string]*Live) {
	c := v.c
	v.mu.Lock()
	orphan := false
	for n := range changed {
		if ch, ok := v.waiters[n]; ok {
			close(ch)
			delete(v.waiters, n)
		}
		if o, ok := v.owners[n]; ok && o.rec.HoldUntil == 0 && v.live[n] == nil && len(v.members[n]) == 0 {
			orphan = true
		}
	}
	v.mu.Unlock()
	if orphan {
		select {
		case v.orphaned <- struct{}{}:
		default:
		}
	}
	var lost []string
	v.mu.RLock()
	pooled := make(map[string]bool, len(changed))
	for n := range changed {
		pooled[n] = len(v.members[n]) > 0
	}
	v.mu.RUnlock()
	c.lmu.Lock()
	for n := range changed {
		if l := lives[n]; l != nil {
			// A claim without Pool took the name: every local member of
			// its pool (if it was one) lost it.
			for sid, lc := range c.local {
				if _, ok := lc.revs[n]; ok && lc.pooled(n) && sid != l.Session {
					delete(lc.revs, n)
					lost = append(lost, sid)
				}
			}
		}
		sid, ok := c.byName[n]
		l := lives[n]
		if ok && pooled[n] && l == nil {
			// A pool took over the name this session held alone.
			delete(c.byName, n)
			if lc := c.local[sid]; lc != nil {
				delete(lc.revs, n)
			}
			lost = append(lost, sid)
			continue
		}
		if !ok || l == nil || l.Session == sid {
			continue
		}
		// Another session took the name over: ours is stale.
		delete(c.byName, n)
		if lc := c.local[sid]; lc != nil {
			delete(lc.revs, n)
		}
		lost = append(lost, sid)
	}
	c.lmu.Unlock()
	h := c.hooks.Load()
	if h.Changed != nil {
		for n := range changed {
			h.Changed(n)
		}
	}
	if h.Lost != nil {
		for _, sid := range lost {
			c.log.Info().Str("session_id", sid).Msg("session's name taken over elsewhere")
			h.Lost(sid)
		}
	}
}

func (v *view) decodeLive(kv *mvccpb.KeyValue) *Live {
	var r liveRecord
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		v.c.log.Warn().Err(err).Str("key", string(kv.Key)).Msg("bad live record ignored")
		return nil
	}
	return &Live{Node: r.Node, Addr: r.Addr, Session: r.Session, Data: r.Data, Pool: r.Pool, Rev: kv.ModRevision,
		owner: r.Owner, account: r.Account, kind: r.Kind}
}

// decodeMember decodes members/<name>/<session>, returning the name.
func (v *view) decodeMember(kv *mvccpb.KeyValue) (string, *Live) {
	rest := string(kv.Key)[len(v.c.kMembers):]
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return "", nil
	}
	return rest[:i], v.decodeLive(kv)
}

func decodeOwner(kv *mvccpb.KeyValue) (ownerEntry, bool) {
	var r ownerRecord
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		return ownerEntry{}, false
	}
	return ownerEntry{rec: r, rev: kv.ModRevision}, true
}

// watchLoop keeps the view current: one watch from the revision the view
// was read at; when the watch fails (compaction, a lost stream), the table
// is read whole again and a new watch starts from there.
func (v *view) watchLoop(rev int64) {
	c := v.c
	defer c.wg.Done()
	for c.ctx.Err() == nil {
		v.watch(rev)
		for c.ctx.Err() == nil {
			ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ClaimTimeout)
			r, err := v.relist(ctx)
			cancel()
			if err == nil {
				rev = r
				break
			}
			c.log.Debug().Err(err).Msg("re-read the name table")
			t := time.NewTimer(500 * time.Millisecond)
			select {
			case <-t.C:
			case <-c.ctx.Done():
				t.Stop()
			}
		}
	}
}

// watch applies the events after rev until the watch ends.
func (v *view) watch(rev int64) {
	c := v.c
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	wch := c.cli.Watch(clientv3.WithRequireLeader(ctx), c.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for resp := range wch {
		if resp.CompactRevision != 0 || resp.Canceled || resp.Err() != nil {
			c.log.Debug().Err(resp.Err()).Int64("compact_revision", resp.CompactRevision).Msg("watch ended")
			return
		}
		v.apply(resp)
	}
}

// apply applies one watch response's events.
func (v *view) apply(resp clientv3.WatchResponse) {
	c := v.c
	changed := make(map[string]struct{})
	lives := make(map[string]*Live)
	v.mu.Lock()
	for _, ev := range resp.Events {
		k := string(ev.Kv.Key)
		var n string
		switch {
		case strings.HasPrefix(k, c.kNames):
			n = k[len(c.kNames):]
			if old := v.live[n]; old != nil && old.Node != c.cfg.Node && isTunnel(n) {
				v.foreign[old.account]--
				if v.foreign[old.account] <= 0 {
					delete(v.foreign, old.account)
				}
			}
			delete(v.live, n)
			if ev.Type == clientv3.EventTypePut {
				if l := v.decodeLive(ev.Kv); l != nil {
					v.live[n] = l
					if l.Node != c.cfg.Node && isTunnel(n) {
						v.foreign[l.account]++
					}
				}
			}
			lives[n] = v.live[n]
		case strings.HasPrefix(k, c.kMembers):
			rest := k[len(c.kMembers):]
			i := strings.LastIndexByte(rest, '/')
			if i < 0 {
				continue
			}
			n = rest[:i]
			sid := rest[i+1:]
			if old := v.members[n][sid]; old != nil && old.Node != c.cfg.Node && isTunnel(n) {
				v.foreign[old.account]--
				if v.foreign[old.account] <= 0 {
					delete(v.foreign, old.account)
				}
			}
			delete(v.members[n], sid)
			if ev.Type == clientv3.EventTypePut {
				if _, l := v.decodeMember(ev.Kv); l != nil {
					if v.members[n] == nil {
						v.members[n] = make(map[string]*Live)
					}
					v.members[n][sid] = l
					if l.Node != c.cfg.Node && isTunnel(n) {
						v.foreign[l.account]++
					}
				}
			}
			if len(v.members[n]) == 0 {
				delete(v.members, n)
			}
		case strings.HasPrefix(k, c.kOwners):
			n = k[len(c.kOwners):]
			delete(v.owners, n)
			if ev.Type == clientv3.EventTypePut {
				if o, ok := decodeOwner(ev.Kv); ok {
					v.owners[n] = o
				}
			}
		default:
			continue
		}
		changed[n] = struct{}{}
	}
	v.advanceLocked(resp.Header.Revision)
	v.mu.Unlock()
	v.settle(changed, lives)
}

// orphan is a live name whose record died with its node's lease.
type tidyItem struct {
	name string
	rev  int64
	rec  ownerRecord
}

// tidyWork returns up to n names that lost their node (live in owners/,
// no live record) and up to n holds that ran out.
func (v *view) tidyWork(now time.Time, n int) (orphans, expired []tidyItem) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for name, o := range v.owners {
		if v.live[name] != nil || len(v.members[name]) > 0 {
			continue
		}
		switch {
		case o.rec.HoldUntil == 0 && len(orphans) < n:
			orphans = append(orphans, tidyItem{name: name, rev: o.rev, rec: o.rec})
		case o.rec.HoldUntil != 0 && now.UnixMilli() >= o.rec.HoldUntil && len(expired) < n:
			expired = append(expired, tidyItem{name: name, rev: o.rev, rec: o.rec})
		}
		if len(orphans) >= n && len(expired) >= n {
			break
		}
	}
	return orphans, expired
}
