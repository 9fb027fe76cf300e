package edge

import (
	"testing"
	"time"
)

// TestExpiringBounds: put forgets the least recently put key when full,
// putIfRoom keeps the keys it has, and keys expired by now make room.
func TestExpiringBounds(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	e := newExpiring[string, int](2, time.Minute)
	e.put("a", 1, now)
	e.put("b", 2, now.Add(time.Second))
	e.put("c", 3, now.Add(2*time.Second))
	if _, ok := e.get("a", now.Add(2*time.Second)); ok {
		t.Error("put: the least recently put key is still remembered past the size")
	}
	if e.putIfRoom("d", 4, now.Add(3*time.Second)) {
		t.Error("putIfRoom: a new key was remembered in a full table")
	}
	if !e.putIfRoom("b", 5, now.Add(3*time.Second)) {
		t.Error("putIfRoom: a key already remembered was refused")
	}
	if v, ok := e.get("b", now.Add(3*time.Second)); !ok || v != 5 {
		t.Errorf("get b: got %d %v, want 5 true", v, ok)
	}
	// c expires a minute after it was put, and makes room.
	later := now.Add(2*time.Second + time.Minute)
	if _, ok := e.get("c", later); ok {
		t.Error("get: an expired key is still remembered")
	}
	if !e.putIfRoom("d", 4, later) {
		t.Error("putIfRoom: no room made by an expired key")
	}
	if n := e.lru.Len(); n > 2 {
		t.Errorf("%d keys remembered, want at most 2", n)
	}
}
