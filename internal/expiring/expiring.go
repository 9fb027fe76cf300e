// Package expiring is tunneld's bounded per-key memory: "log this once a
// minute per source", "delay this source for ten minutes after its last
// failure", "log a refused name once". A Table remembers a value per key
// until a ttl has passed since it was last put (a ttl of zero: until
// evicted), and at most a fixed number of keys, so that a flood of keys
// from the network cannot grow it without end. The limits (package limit)
// and the ACME host policy and order budget use it.
//
// It stands on golang-lru's simplelru, not on its expirable package:
// expirable (v2.0.7) starts a goroutine per cache that nothing can stop (its
// Close is commented out), which would leak one per server and fail goleak
// in every test; and it reads time.Now itself, where tests drive a clock.
// The time-ordered LRU list makes forgetting expired keys cost only the
// keys forgotten, not a sweep of the whole map.
package expiring

import (
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Table remembers a value per key for a while, and at most size keys. It
// is not safe for concurrent use; each user holds it under the mutex it
// already has. Every method takes the time to judge expiry by.
type Table[K comparable, V any] struct {
	ttl  time.Duration
	size int
	lru  *simplelru.LRU[K, stamped[V]] // least recently put at the back
}

type stamped[V any] struct {
	v  V
	at time.Time // when it was put
}

// New returns a table of at most size keys, each forgotten ttl after it
// was last put (ttl zero: only when evicted). size must be positive; it is
// always one of its callers' constants, so New panics otherwise.
func New[K comparable, V any](size int, ttl time.Duration) *Table[K, V] {
	lru, err := simplelru.NewLRU[K, stamped[V]](size, nil)
	if err != nil {
		panic(err)
	}
	return &Table[K, V]{ttl: ttl, size: size, lru: lru}
}

func (e *Table[K, V]) expired(s stamped[V], now time.Time) bool {
	return e.ttl > 0 && now.Sub(s.at) >= e.ttl
}

// Get returns k's value if it has not expired by now.
func (e *Table[K, V]) Get(k K, now time.Time) (V, bool) {
	s, ok := e.lru.Peek(k)
	if !ok || e.expired(s, now) {
		e.lru.Remove(k)
		var zero V
		return zero, false
	}
	return s.v, true
}

// Put remembers v for k as of now, evicting the least recently put key
// when size keys are remembered and none has expired.
func (e *Table[K, V]) Put(k K, v V, now time.Time) {
	e.forget(now)
	e.lru.Add(k, stamped[V]{v, now})
}

// PutIfRoom is Put for a table whose bound keeps the keys it has: when size
// keys are remembered and none has expired, a new key is not remembered and
// PutIfRoom reports false.
func (e *Table[K, V]) PutIfRoom(k K, v V, now time.Time) bool {
	e.forget(now)
	if e.lru.Len() >= e.size && !e.lru.Contains(k) {
		return false
	}
	e.lru.Add(k, stamped[V]{v, now})
	return true
}

// forget drops the keys expired by now. Keys are put in time order, so
// they are the back of the list.
func (e *Table[K, V]) forget(now time.Time) {
	for {
		_, s, ok := e.lru.GetOldest()
		if !ok || !e.expired(s, now) {
			return
		}
		e.lru.RemoveOldest()
	}
}
