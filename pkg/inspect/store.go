package inspect

import (
	"encoding/binary"
	"iter"
	"net/http"
	"slices"
	"sync"
	"time"
	"unsafe"
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

// record is how the store keeps an exchange. The store holds up to
// MaxMemory of them, and the collector marks every one at each cycle:
// with the store full that cycle comes often (the client runs under a
// soft memory limit of the cap plus a little, cmd/tunnel's limitMemory),
// so a record is a few objects with few pointers. Its strings and both
// headers are one string, text, that the collector need not scan; the
// headers are decoded (exchange) only when the page or the API asks.
type record struct {
	id       uint64
	replayOf uint64
	streamID uint32
	upgrade  bool
	status   int
	start    time.Time
	duration time.Duration
	text     string          // the fields, one after the other; see field
	ends     [nFields]uint32 // where each field ends in text
	reqBody  Body
	respBody Body
	cost     int64 // bytes reserved for it in the store
}

// A field of a record's text.
const (
	fTunnel = iota
	fTarget
	fVisitor
	fMethod
	fURL
	fHost
	fProto
	fRespProto
	fErr
	fReqHeader  // encoded: see appendHeader
	fRespHeader // encoded
	nFields
)

func (r *record) field(i int) string {
	start := uint32(0)
	if i > 0 {
		start = r.ends[i-1]
	}
	return r.text[start:r.ends[i]]
}

// recordText is the length of the text of e's record.
func recordText(e *Exchange, reqHdr, respHdr []byte) int {
	return len(e.Tunnel) + len(e.Target) + len(e.Visitor) + len(e.Method) + len(e.URL) + len(e.Host) +
		len(e.Proto) + len(e.RespProto) + len(e.Err) + len(reqHdr) + len(respHdr)
}

// newRecord encodes e, whose headers are reqHdr and respHdr, encoded (see
// appendHeader). Only the store calls it, once e is complete.
func newRecord(e *Exchange, reqHdr, respHdr []byte) *record {
	strs := [...]string{fTunnel: e.Tunnel, fTarget: e.Target, fVisitor: e.Visitor, fMethod: e.Method,
		fURL: e.URL, fHost: e.Host, fProto: e.Proto, fRespProto: e.RespProto, fErr: e.Err}
	n := recordText(e, reqHdr, respHdr)
	r := &record{
		id: e.ID, replayOf: e.ReplayOf, streamID: e.StreamID, upgrade: e.Upgrade, status: e.Status,
		start: e.Start, duration: e.Duration, reqBody: e.ReqBody, respBody: e.RespBody,
	}
	b := make([]byte, 0, n)
	for i, s := range strs[:fReqHeader] {
		b = append(b, s...)
		r.ends[i] = uint32(len(b))
	}
	b = append(b, reqHdr...)
	r.ends[fReqHeader] = uint32(len(b))
	b = append(b, respHdr...)
	r.ends[fRespHeader] = uint32(len(b))
	r.text = unsafe.String(unsafe.SliceData(b), len(b)) // b is never written again
	return r
}

// A header is encoded as its name and value pairs, each name's values in
// order, every string preceded by its length as a uvarint: a value may
// hold any byte (an edited replay's, say). The copier writes the pairs as
// they came (headReader); appendHeader encodes an http.Header, names
// sorted.
func appendHeader(b []byte, h http.Header) []byte {
	var buf [32]string
	keys := buf[:0]
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			b = binary.AppendUvarint(b, uint64(len(k)))
			b = append(b, k...)
			b = binary.AppendUvarint(b, uint64(len(v)))
			b = append(b, v...)
		}
	}
	return b
}

// headerPairs yields an encoded header's name and value pairs, in the
// order appendHeader wrote them; the strings share enc's memory.
func headerPairs(enc string) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for len(enc) > 0 {
			var kv [2]string
			for i := range kv {
				n, w := uvarint(enc)
				if w <= 0 || uint64(len(enc)-w) < n {
					return // not written by appendHeader: never happens
				}
				kv[i], enc = enc[w:w+int(n)], enc[w+int(n):]
			}
			if !yield(kv[0], kv[1]) {
				return
			}
		}
	}
}

// uvarint is binary.Uvarint on a string.
func uvarint(s string) (uint64, int) {
	var x uint64
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			return x | uint64(c)<<(7*i), i + 1
		}
		x |= uint64(c&0x7f) << (7 * i)
	}
	return 0, 0
}

// decodeHeader returns an encoded header as an http.Header; nil if it was
// (nil or dropped).
func decodeHeader(enc string) http.Header {
	if enc == "" {
		return nil
	}
	h := http.Header{}
	for k, v := range headerPairs(enc) {
		h[k] = append(h[k], v)
	}
	return h
}

// headerGet is http.Header.Get on an encoded header; name is canonical.
func headerGet(enc, name string) string {
	for k, v := range headerPairs(enc) {
		if k == name {
			return v
		}
	}
	return ""
}

// exchange returns the record as an Exchange, its headers decoded.
func (r *record) exchange() *Exchange {
	return &Exchange{
		ID: r.id, ReplayOf: r.replayOf, Tunnel: r.field(fTunnel), Target: r.field(fTarget),
		StreamID: r.streamID, Visitor: r.field(fVisitor), Start: r.start, Duration: r.duration,
		Method: r.field(fMethod), URL: r.field(fURL), Host: r.field(fHost), Proto: r.field(fProto),
		ReqHeader: decodeHeader(r.field(fReqHeader)), ReqBody: r.reqBody,
		Status: r.status, RespProto: r.field(fRespProto), RespHeader: decodeHeader(r.field(fRespHeader)),
		RespBody: r.respBody, Upgrade: r.upgrade, Err: r.field(fErr),
	}
}

// summary is the record's list entry.
func (r *record) summary() Summary {
	return Summary{
		ID: r.id, ReplayOf: r.replayOf, Tunnel: r.field(fTunnel), Start: r.start,
		DurationMS: float64(r.duration.Microseconds()) / 1000, Visitor: r.field(fVisitor),
		Method: r.field(fMethod), URL: r.field(fURL), Status: r.status,
		ReqSize: r.reqBody.Size, RespSize: r.respBody.Size, Upgrade: r.upgrade, Err: r.field(fErr),
	}
}

// recordCost is what a record costs besides its text and its bodies'
// data: the record (200 bytes, in the 208-byte size class) and its place
// in the store's list (8 bytes, up to twice that while append grows the
// list, and the old list until the next collection). The margin covers
// what TestStore_CountsWhatItHolds measures and this does not name: the
// count must not be the lower of the two, as the cap bounds the memory.
const recordCost = 208 + 48

// textCost is what a text of n bytes holds: n rounded up to its size
// class, which wastes at most an eighth above 128 bytes.
func textCost(n int) int64 { return int64(n + n/8 + 16) }

// store keeps the recorded exchanges, oldest first, within a memory budget
// shared with the bodies being captured (reserve), and tells subscribers
// of each one added.
type store struct {
	max int64

	mu     sync.Mutex
	used   int64 // reserved: stored exchanges and captures in flight
	nextID uint64
	list   []*record // oldest first; IDs ascending
	// readers counts the API handlers reading records (reading): while
	// any does, evicted bodies are not reused.
	readers int
	// spare holds evicted bodies' memory for the next captures (take),
	// counted in used: with the store full, every exchange would
	// otherwise allocate its body afresh, memory the runtime, kept near
	// its soft limit, has just given back to the system and must fault in
	// again.
	spare [][]byte
	subs  map[chan event]struct{}
	onAdd func(Summary)
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
	if !s.makeRoom(n) {
		return false
	}
	s.used += n
	return true
}

// makeRoom forgets the oldest exchanges, then the spare bodies, until n
// more bytes fit; false if they do not even then. Called with s.mu held.
func (s *store) makeRoom(n int64) bool {
	for s.used+n > s.max && len(s.list) > 0 {
		s.evictOldest()
	}
	for s.used+n > s.max && len(s.spare) > 0 {
		last := len(s.spare) - 1
		s.used -= int64(cap(s.spare[last]))
		s.spare[last] = nil
		s.spare = s.spare[:last]
	}
	return s.used+n <= s.max
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
	if s.readers == 0 {
		s.keepSpare(old.reqBody.Data)
		s.keepSpare(old.respBody.Data)
	}
}

// Spare bodies: small ones (the churn of a full store), and a few.
const (
	spareMin = 256
	spareMax = 16 << 10
	maxSpare = 64
)

// keepSpare keeps an evicted body's memory for take. Called with s.mu
// held and no reader.
func (s *store) keepSpare(b []byte) {
	c := cap(b)
	if c < spareMin || c > spareMax {
		return
	}
	if len(s.spare) == maxSpare {
		// The oldest spare has found no taker: its size is not asked.
		s.used -= int64(cap(s.spare[0]))
		s.spare = append(s.spare[:0], s.spare[1:]...) // the last slot is overwritten below
	}
	s.spare = append(s.spare, b[:0])
	s.used += int64(c)
}

// take returns a spare body of capacity n, already counted in used, or
// nil.
func (s *store) take(n int64) []byte {
	if n < spareMin || n > spareMax {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.spare) - 1; i >= 0; i-- {
		if b := s.spare[i]; int64(cap(b)) == n {
			s.spare = append(s.spare[:i], s.spare[i+1:]...)
			return b
		}
	}
	return nil
}

// reading marks an API handler reading records until the function it
// returns is called: a record's bodies are reused once it is evicted, so
// whoever reads them (an Exchange from get, records from all) does so in
// such a window.
func (s *store) reading() (done func()) {
	s.mu.Lock()
	s.readers++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.readers--
		s.mu.Unlock()
	}
}

// add stores e, whose bodies' data (bodyCost) are already reserved and
// whose headers are reqHdr and respHdr, encoded, and gives it its ID. The
// rest of its record is reserved here; if even that does not fit, its
// headers are dropped.
func (s *store) add(e *Exchange, reqHdr, respHdr []byte, bodyCost int64) {
	s.mu.Lock()
	e.ID = s.nextID
	s.nextID++
	rc := recordCost + textCost(recordText(e, reqHdr, respHdr))
	if !s.makeRoom(rc) {
		e.ReqHeader, e.RespHeader, reqHdr, respHdr = nil, nil, nil, nil
		rc = recordCost + textCost(recordText(e, nil, nil))
	}
	r := newRecord(e, reqHdr, respHdr)
	s.used += rc
	r.cost = bodyCost + rc
	s.list = append(s.list, r)
	sum := r.summary()
	s.publish(event{sum: sum})
	s.mu.Unlock()
	if s.onAdd != nil {
		s.onAdd(sum)
	}
}

// addExchange is add for an exchange whose headers are e's.
func (s *store) addExchange(e *Exchange, bodyCost int64) {
	s.add(e, appendHeader(nil, e.ReqHeader), appendHeader(nil, e.RespHeader), bodyCost)
}

// get returns the exchange with id, or nil.
func (s *store) get(id uint64) *Exchange {
	s.mu.Lock()
	defer s.mu.Unlock()
	lo, hi := 0, len(s.list)
	for lo < hi {
		m := (lo + hi) / 2
		switch {
		case s.list[m].id == id:
			return s.list[m].exchange()
		case s.list[m].id < id:
			lo = m + 1
		default:
			hi = m
		}
	}
	return nil
}

// all returns the stored exchanges, oldest first.
func (s *store) all() []*record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*record(nil), s.list...)
}

// clear forgets every stored exchange.
func (s *store) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.list {
		s.used -= e.cost
	}
	for _, b := range s.spare {
		s.used -= int64(cap(b))
	}
	s.list, s.spare = nil, nil
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

// init readies a capture in place; hint is the body's declared length
// (Content-Length), or negative: unknown.
func (c *capture) init(st *store, max, hint int64) {
	*c = capture{st: st, max: max, hint: hint}
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
		if cap(c.data) == 0 {
			if b := c.st.take(newCap); b != nil {
				c.data, c.reserved = b, newCap
				c.data = append(c.data, keep...)
				return len(p), nil
			}
		}
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
