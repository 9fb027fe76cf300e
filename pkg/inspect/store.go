package inspect

import (
	"net/http"
	"sync"
	"time"
)

// Exchange is one recorded request and its response. An exchange is
// immutable once the store holds it.
type Exchange struct {
	ID         uint64
	ReplayOf   uint64 // the exchange this one replayed; 0: none
	Tunnel     string
	Target     string // the local service, host:port
	StreamID   uint32 // 0 for a replay
	Visitor    string // X-Forwarded-For's first address, else the stream's visitor
	Start      time.Time
	Duration   time.Duration // from the request's headers to the response's end
	Method     string
	URL        string // the request target, as sent: path and query
	Host       string
	Proto      string
	ReqHeader  http.Header
	ReqBody    Body
	Status     int // 0: no response
	RespProto  string
	RespHeader http.Header
	RespBody   Body
	Upgrade    bool   // the request asked for an upgrade (a WebSocket): what followed was not recorded
	Err        string // why the exchange is incomplete, if it is

	cost int64 // bytes reserved for it in the store
}

// Body is a captured body: Data holds its first bytes, Size counts all.
type Body struct {
	Size int64
	Data []byte
}

// Truncated reports whether Data holds less than the whole body.
func (b Body) Truncated() bool { return int64(len(b.Data)) < b.Size }

// Summary is what the list shows of an exchange.
type Summary struct {
	ID         uint64    `json:"id"`
	ReplayOf   uint64    `json:"replay_of,omitempty"`
	Tunnel     string    `json:"tunnel"`
	Start      time.Time `json:"start"`
	DurationMS float64   `json:"duration_ms"`
	Visitor    string    `json:"visitor"`
	Method     string    `json:"method"`
	URL        string    `json:"url"`
	Status     int       `json:"status"`
	ReqSize    int64     `json:"req_size"`
	RespSize   int64     `json:"resp_size"`
	Upgrade    bool      `json:"upgrade,omitempty"`
	Err        string    `json:"error,omitempty"`
}

// Summary returns the exchange's list entry.
func (e *Exchange) Summary() Summary {
	return Summary{
		ID: e.ID, ReplayOf: e.ReplayOf, Tunnel: e.Tunnel, Start: e.Start,
		DurationMS: float64(e.Duration.Microseconds()) / 1000, Visitor: e.Visitor,
		Method: e.Method, URL: e.URL, Status: e.Status,
		ReqSize: e.ReqBody.Size, RespSize: e.RespBody.Size, Upgrade: e.Upgrade, Err: e.Err,
	}
}

// headerCost approximates what a header costs in memory.
func headerCost(h http.Header) int64 {
	n := int64(0)
	for k, vs := range h {
		n += int64(len(k)) + 16
		for _, v := range vs {
			n += int64(len(v)) + 16
		}
	}
	return n
}

// exchangeCost is what an exchange costs besides its bodies' data and
// headerCost: its struct, strings, header maps and the summary. Measured:
// 20,000 small exchanges (8 headers, a 1 KiB page) took 2,500 bytes of heap
// each where the store counted 1,941 with 512 here; the cap is meant to
// bound the memory, so the count must not be the lower of the two.
const exchangeCost = 1152

// store keeps the recorded exchanges, oldest first, within a memory budget
// shared with the bodies being captured (reserve), and tells subscribers
// of each one added.
type store struct {
	max int64

	mu     sync.Mutex
	used   int64 // reserved: stored exchanges and captures in flight
	nextID uint64
	list   []*Exchange // oldest first; IDs ascending
	subs   map[chan event]struct{}
	onAdd  func(Summary)
}

func newStore(maxMemory int64, onAdd func(Summary)) *store {
	return &store{max: maxMemory, nextID: 1, subs: make(map[chan event]struct{}), onAdd: onAdd}
}

// reserve takes n bytes of the budget, forgetting the oldest exchanges to
// make room; it reports false, taking nothing, when even an empty store
// would not have room (captures in flight hold the rest).
func (s *store) reserve(n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.used+n > s.max && len(s.list) > 0 {
		s.evictOldest()
	}
	if s.used+n > s.max {
		return false
	}
	s.used += n
	return true
}

// release gives n reserved bytes back.
func (s *store) release(n int64) {
	s.mu.Lock()
	s.used -= n
	s.mu.Unlock()
}

func (s *store) evictOldest() {
	old := s.list[0]
	s.list[0] = nil
	s.list = s.list[1:]
	s.used -= old.cost
}

// add stores e, whose bodies' data (bodyCost) are already reserved, and
// gives it its ID. Its headers are reserved here; if even that does not
// fit, the headers are dropped.
func (s *store) add(e *Exchange, bodyCost int64) {
	hc := exchangeCost + headerCost(e.ReqHeader) + headerCost(e.RespHeader)
	s.mu.Lock()
	for s.used+hc > s.max && len(s.list) > 0 {
		s.evictOldest()
	}
	if s.used+hc > s.max {
		e.ReqHeader, e.RespHeader, hc = nil, nil, exchangeCost
	}
	s.used += hc
	e.cost = bodyCost + hc
	e.ID = s.nextID
	s.nextID++
	s.list = append(s.list, e)
	sum := e.Summary()
	s.publish(event{sum: sum})
	s.mu.Unlock()
	if s.onAdd != nil {
		s.onAdd(sum)
	}
}

// get returns the exchange with id, or nil.
func (s *store) get(id uint64) *Exchange {
	s.mu.Lock()
	defer s.mu.Unlock()
	lo, hi := 0, len(s.list)
	for lo < hi {
		m := (lo + hi) / 2
		switch {
		case s.list[m].ID == id:
			return s.list[m]
		case s.list[m].ID < id:
			lo = m + 1
		default:
			hi = m
		}
	}
	return nil
}

// all returns the stored exchanges, oldest first.
func (s *store) all() []*Exchange {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Exchange(nil), s.list...)
}

// clear forgets every stored exchange.
func (s *store) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.list {
		s.used -= e.cost
	}
	s.list = nil
	s.publish(event{cleared: true})
}

// event is what subscribers are told: an exchange added, or all cleared.
type event struct {
	sum     Summary
	cleared bool
}

// publish tells every subscriber of ev. Called with s.mu held.
func (s *store) publish(ev event) {
	for ch := range s.subs {
		select {
		case ch <- ev:
		default:
			// A subscriber that falls this far behind is dropped; its
			// page reconnects and lists again.
			delete(s.subs, ch)
			close(ch)
		}
	}
}

// stats returns the bytes reserved and the exchanges stored.
func (s *store) stats() (used int64, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, len(s.list)
}

// subscribe returns a channel of the events (exchanges added, clears) from
// now on, closed if the subscriber falls behind, and a function that ends the
// subscription.
func (s *store) subscribe() (<-chan event, func()) {
	ch := make(chan event, 256)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.subs[ch]; ok {
			delete(s.subs, ch)
			close(ch)
		}
	}
}

// capture keeps the first bytes written to it, up to max and as far as the
// store's budget allows, and counts them all. It is an io.Writer that never
// fails.
type capture struct {
	st       *store
	max      int64
	data     []byte
	reserved int64 // of st's budget, for data's capacity
	size     int64
	full     bool  // no more is kept: max reached or no budget
	hint     int64 // the body's declared length (Content-Length), if known: the first allocation's size
}

func newCapture(st *store, max int64) *capture {
	return &capture{st: st, max: max}
}

// sizeHint tells the capture the body's declared length; -1: unknown.
func (c *capture) sizeHint(n int64) *capture {
	c.hint = n
	return c
}

func (c *capture) Write(p []byte) (int, error) {
	c.size += int64(len(p))
	if c.full {
		return len(p), nil
	}
	keep := p
	if room := c.max - int64(len(c.data)); int64(len(keep)) > room {
		keep = keep[:room]
		c.full = true
	}
	if need := len(c.data) + len(keep); need > cap(c.data) {
		newCap := int64(max(2*cap(c.data), need, 4096))
		if cap(c.data) == 0 && c.hint >= int64(need) {
			newCap = c.hint // a declared length: one allocation, no spare to trim
		}
		newCap = min(newCap, c.max)
		if !c.st.reserve(newCap - c.reserved) {
			c.full = true
			return len(p), nil
		}
		grown := make([]byte, len(c.data), newCap)
		copy(grown, c.data)
		c.data = grown
		c.reserved = newCap
	}
	c.data = append(c.data, keep...)
	return len(p), nil
}

// body returns what was captured, in a slice of its own length: the
// capture grows by doubling, and a small body would otherwise hold (and
// count against the budget) up to twice its size. The reservation left
// goes with it (see cost).
func (c *capture) body() Body {
	if spare := int64(cap(c.data) - len(c.data)); spare > 0 {
		c.data = append([]byte(nil), c.data...)
		c.st.release(spare)
		c.reserved -= spare
	}
	c.full = true // nothing more is kept once the body is taken
	return Body{Size: c.size, Data: c.data}
}

// cost is the budget the captured data holds.
func (c *capture) cost() int64 { return c.reserved }
