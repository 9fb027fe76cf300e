package testlog

import (
	"fmt"
	"sync"
	"testing"
)

func TestBuffer_ConcurrentWritesAllKept(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				fmt.Fprintf(&b, "line %d.%d\n", i, j)
			}
		}()
	}
	wg.Wait()
	if got := b.Count("line "); got != 800 {
		t.Fatalf("Count = %d, want 800", got)
	}
	if got := b.Count("line 3.42\n"); got != 1 {
		t.Fatalf("Count of one line = %d, want 1; buffer:\n%s", got, b.String())
	}
}
