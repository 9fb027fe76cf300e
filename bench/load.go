package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// target is one way to reach the backend: directly, through the bare pipe,
// or through tunneld and tunnel.
type target struct {
	Name    string
	baseURL string // scheme://host:port, the Host the request carries
	dial    string // where to connect, whatever the URL says
	tls     *tls.Config
	h2c     bool // HTTP/2 without TLS (direct and pipe)
	noH2    bool // HTTP/1.1 only (tunneld's plain listener has no h2c)
	subset  bool // measured only where includes* says (see run.go)
	inspect bool // the client with its request inspector on: small HTTP/1.1 and one-stream bulk only
	// variant names a tunnel that differs from tunnel by one setting,
	// through the same tunneld ("basic-auth": the tunnel asks visitors for
	// a password; "pool": two clients serve it, --pool). It is measured on small HTTP/1.1 requests only, as a
	// ratio to tunnel in the same run.
	variant string
	auth    string // user:password every request carries as basic auth; "": none
}

// transport returns a client for one load worker: its own connection pool,
// so c workers hold c connections.
func (t target) transport(h2 bool, maxConns int) *http.Transport {
	p := new(http.Protocols)
	switch {
	case !h2:
		p.SetHTTP1(true)
	case t.h2c:
		p.SetUnencryptedHTTP2(true)
	default:
		p.SetHTTP2(true)
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	var tlsCfg *tls.Config
	if t.tls != nil {
		// A Transport adds "h2" to its TLS config's NextProtos in place:
		// each gets its own copy.
		tlsCfg = t.tls.Clone()
		// Resume TLS sessions, as browsers do.
		tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(4096)
	}
	return &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, t.dial)
		},
		TLSClientConfig:     tlsCfg,
		Protocols:           p,
		MaxIdleConnsPerHost: maxConns,
		MaxConnsPerHost:     maxConns,
		DisableCompression:  true,
		ReadBufferSize:      32 << 10,
		WriteBufferSize:     32 << 10,
	}
}

// latencies is a sample of request latencies.
type latencies []time.Duration

func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(l)-1))
	return l[i]
}

// closedResult is one closed-loop run.
type closedResult struct {
	Requests int64
	Errors   int64
	Elapsed  time.Duration
	P50      time.Duration
	P99      time.Duration
	P999     time.Duration
}

func (r closedResult) rate() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// closedLoop runs conns workers, each on its own connection, each sending
// the next request as soon as the last is answered, for d after a short
// warm-up. The clock starts once every worker has had one answer, so a
// slow first handshake (a loaded machine, -race) never eats the window.
func closedLoop(ctx context.Context, t target, h2 bool, conns int, d time.Duration) (closedResult, error) {
	var errs atomic.Int64
	var firstErrOnce sync.Once
	var firstErr error // set once, read after wg.Wait
	samples := make([]latencies, conns)
	counts := make([]int64, conns)
	var wg, connected sync.WaitGroup
	clock := make(chan struct{})
	var measureFrom, until time.Time // written before clock is closed
	connected.Add(conns)
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := t.transport(h2, 1)
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			err := get(ctx, c, t.baseURL+"/") // the connection's first answer, not measured
			if err != nil {
				errs.Add(1)
				firstErrOnce.Do(func() { firstErr = err })
			}
			connected.Done()
			select {
			case <-clock:
			case <-ctx.Done():
				return
			}
			lat := make(latencies, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(until) {
					break
				}
				err := get(ctx, c, t.baseURL+"/")
				t1 := time.Now()
				if err != nil {
					errs.Add(1)
					firstErrOnce.Do(func() { firstErr = err })
					continue
				}
				if t0.After(measureFrom) && t1.Before(until) {
					lat = append(lat, t1.Sub(t0))
				}
			}
			samples[w], counts[w] = lat, int64(len(lat))
		}()
	}
	connected.Wait()
	start := time.Now()
	measureFrom, until = start.Add(d/10), start.Add(d/10+d)
	close(clock)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return closedResult{}, err
	}
	var all latencies
	for _, s := range samples {
		all = append(all, s...)
	}
	slices.Sort(all)
	r := closedResult{Requests: int64(len(all)), Errors: errs.Load(), Elapsed: d,
		P50: all.pct(50), P99: all.pct(99), P999: all.pct(99.9)}
	if r.Requests == 0 {
		return r, fmt.Errorf("%s: no request succeeded: %v", t.Name, firstErr)
	}
	return r, nil
}

func get(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != pageSize {
		return fmt.Errorf("GET %s: status %d, %d bytes", url, resp.StatusCode, n)
	}
	return nil
}

// openResult is one fixed-rate run.
type openResult struct {
	Rate     int
	Sent     int64
	Errors   int64
	Achieved float64
	P50      time.Duration
	P99      time.Duration
	P999     time.Duration
}

// openLoop sends rate requests per second for d over HTTP/1.1 keep-alive,
// each at its scheduled time whether or not earlier ones were answered, and
// measures latency from the scheduled time, so a stall shows as latency
// instead of as a slower send rate. At most maxInFlight wait at once;
// requests beyond that count as errors.
func openLoop(ctx context.Context, t target, rate int, d time.Duration) (openResult, error) {
	const maxInFlight = 2048
	// At most 256 connections, as a population of browsers would hold:
	// with one connection per waiting request, any stall made the
	// generator dial hundreds of connections at once, and only the tunnel
	// (HTTPS) paid a TLS handshake for each, which fed the stall. Requests
	// that wait for a connection still count from their scheduled time.
	const maxConns = 256
	tr := t.transport(false, maxConns)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	n := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	// A quarter of a second at the same rate goes first and is not
	// measured: it fills the connection pool, as the closed loop's warm-up
	// does. Without it every target starts by dialling a burst of
	// connections, and only the tunnel pays a TLS handshake for each.
	warm := rate / 4
	total := warm + n
	lat := make(latencies, total)
	var errs atomic.Int64
	var firstErrOnce sync.Once
	var firstErr error // set once, read after wg.Wait
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxInFlight)
	start := time.Now()
	sent := 0
	for i := 0; i < total && ctx.Err() == nil; i++ {
		at := start.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			time.Sleep(w) // pacing the schedule, not synchronisation
		}
		measured := i >= warm
		select {
		case sem <- struct{}{}:
		default:
			if measured {
				errs.Add(1)
			}
			lat[i] = -1
			continue
		}
		if measured {
			sent++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := get(ctx, c, t.baseURL+"/"); err != nil {
				if measured {
					errs.Add(1)
					firstErrOnce.Do(func() { firstErr = err })
				}
				lat[i] = -1
				return
			}
			lat[i] = time.Since(at)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start.Add(time.Duration(warm) * interval))
	if err := ctx.Err(); err != nil {
		return openResult{}, err
	}
	lat = lat[warm:]
	ok := slices.DeleteFunc(lat, func(v time.Duration) bool { return v <= 0 })
	slices.Sort(ok)
	r := openResult{Rate: rate, Sent: int64(sent), Errors: errs.Load(),
		Achieved: float64(len(ok)) / elapsed.Seconds(),
		P50:      ok.pct(50), P99: ok.pct(99), P999: ok.pct(99.9)}
	if len(ok) == 0 {
		return r, fmt.Errorf("%s: no request succeeded at %d req/s: %v", t.Name, rate, firstErr)
	}
	return r, nil
}

// bulk moves total bytes over streams parallel HTTP/1.1 connections, down
// (GET) or up (POST), and returns the elapsed time. Every byte is counted.
func bulk(ctx context.Context, t target, up bool, streams int, total int64) (time.Duration, error) {
	per := total / int64(streams)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := t.transport(false, 1)
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			if err := bulkOne(ctx, c, t.baseURL, up, per); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, fmt.Errorf("%s: %w", t.Name, err)
	}
	return time.Since(start), nil
}

func bulkOne(ctx context.Context, c *http.Client, base string, up bool, n int64) error {
	var req *http.Request
	var err error
	if up {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, base+"/up", io.LimitReader(patternReader{}, n))
		if req != nil {
			req.ContentLength = n
		}
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/bulk?n=%d", base, n), nil)
	}
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	buf := make([]byte, 64<<10)
	got, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{resp.Body}, buf)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", req.URL.Path, resp.StatusCode)
	}
	if !up && got != n {
		return fmt.Errorf("download: got %d bytes, want %d", got, n)
	}
	if up && resp.Header.Get("X-Received") != fmt.Sprint(n) {
		return fmt.Errorf("upload: server received %s bytes, want %d", resp.Header.Get("X-Received"), n)
	}
	return nil
}

// patternReader is an endless source that costs no more than a copy.
type patternReader struct{}

var pattern = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

func (patternReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		n += copy(p[n:], pattern)
	}
	return n, nil
}

// connectTimes connects n clients to tunneld one after another (TLS, Hello,
// Welcome; a full TLS handshake each time, as tunnel does) and returns the
// sorted times.
func connectTimes(ctx context.Context, server string, tlsCfg *tls.Config, n int) (latencies, error) {
	out := make(latencies, 0, n)
	for range n {
		t0 := time.Now()
		s, err := connectOnce(ctx, server, tlsCfg)
		if err != nil {
			return nil, err
		}
		out = append(out, time.Since(t0))
		s.Close()
	}
	slices.Sort(out)
	return out, nil
}
