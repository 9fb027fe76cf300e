package e2e

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
)

// load sends GETs to url through c from workers goroutines, each one
// request after the other, until it is ended, and counts the answers that
// were not a 200 (with the body want, unless want is ""). Its bound is its
// workers; a test ends it (or its cleanup does) after the answers it waits
// for.
type load struct {
	ok, failed atomic.Int64
	lastErr    atomic.Value
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(t *testing.T, c *http.Client, url, want string, workers int) *load {
	l := &load{stop: make(chan struct{})}
	for range workers {
		l.wg.Add(1)
		go l.run(c, url, want)
	}
	t.Cleanup(l.end)
	return l
}

func (l *load) run(c *http.Client, url, want string) {
	defer l.wg.Done()
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		resp, err := c.Get(url)
		if err != nil {
			l.failed.Add(1)
			l.lastErr.Store(err.Error())
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || want != "" && string(body) != want {
			l.failed.Add(1)
			l.lastErr.Store(fmt.Sprintf("%d %q", resp.StatusCode, body))
			continue
		}
		l.ok.Add(1)
	}
}

// end stops the load and waits for its last requests.
func (l *load) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// waitServed waits until the load has had n more answers than now.
func (l *load) waitServed(t *testing.T, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	settles(t, fmt.Sprintf("%d more requests served", n), func() (bool, string) {
		return l.ok.Load() >= target, fmt.Sprintf("%d served, %d failed, last error %v", l.ok.Load(), l.failed.Load(), l.lastErr.Load())
	})
}

// getConcurrently sends n GETs to url through c, workers at a time, and
// returns how many failed or were not a 200.
func getConcurrently(c *http.Client, url string, n, workers int) int64 {
	var wg sync.WaitGroup
	var failed atomic.Int64
	next := make(chan struct{})
	go func() {
		defer close(next)
		for range n {
			next <- struct{}{}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				resp, err := c.Get(url)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return failed.Load()
}
