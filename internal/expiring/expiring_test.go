package expiring

import (
	"testing"
	"time"
)

// TestTable_Bounds: Put forgets the least recently put key when full,
// PutIfRoom keeps the keys it has, and keys expired by now make room.
func TestTable_Bounds(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	e := New[string, int](2, time.Minute)
	e.Put("a", 1, now)
	e.Put("b", 2, now.Add(time.Second))
	e.Put("c", 3, now.Add(2*time.Second))
	if _, ok := e.Get("a", now.Add(2*time.Second)); ok {
		t.Error("Put: the least recently put key is still remembered past the size")
	}
	if e.PutIfRoom("d", 4, now.Add(3*time.Second)) {
		t.Error("PutIfRoom: a new key was remembered in a full table")
	}
	if !e.PutIfRoom("b", 5, now.Add(3*time.Second)) {
		t.Error("PutIfRoom: a key already remembered was refused")
	}
	if v, ok := e.Get("b", now.Add(3*time.Second)); !ok || v != 5 {
		t.Errorf("get b: got %d %v, want 5 true", v, ok)
	}
	// c expires a minute after it was put, and makes room.
	later := now.Add(2*time.Second + time.Minute)
	if _, ok := e.Get("c", later); ok {
		t.Error("Get: an expired key is still remembered")
	}
	if !e.PutIfRoom("d", 4, later) {
		t.Error("PutIfRoom: no room made by an expired key")
	}
	if n := e.lru.Len(); n > 2 {
		t.Errorf("%d keys remembered, want at most 2", n)
	}
}
