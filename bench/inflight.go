package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// InflightRow is the memory a tunneld and a tunnel client hold per request
// in flight through one tunnel.
type InflightRow struct {
	N           int     `json:"n"`
	Process     string  `json:"process"`
	BeforeMiB   float64 `json:"rss_before_mib"`
	DuringMiB   float64 `json:"rss_in_flight_mib"`
	PerStreamKB float64 `json:"per_stream_kib"`
	GoroutinesB int     `json:"goroutines_before"`
	GoroutinesD int     `json:"goroutines_in_flight"`
}

// inflightLimit bounds the whole phase: n visitors connect, wait, and finish.
const inflightLimit = 3 * time.Minute

// inflight starts a fresh tunneld and tunnel, sends o.Inflight slow requests
// at once (plain HTTP/1.1, one connection each) to a backend that holds
// every request until all of them have arrived, and reads both processes'
// RSS and goroutines before and with all of them in flight. Then it releases
// them and checks that every one got its 200. The backend is a process of
// its own (this harness re-executed), so that no process needs more than
// o.Inflight connections' worth of open files.
func (e *env) inflight(ctx context.Context, rep *Report) error {
	n := e.o.Inflight
	limit, err := raiseNoFile() // tunneld, tunnel and the backend inherit it
	if err != nil {
		return err
	}
	if need := uint64(n + 512); limit < need {
		return fmt.Errorf("inflight %d needs %d open files per process, the limit is %d (lower -inflight)", n, need, limit)
	}
	ctx, cancel := context.WithTimeout(ctx, inflightLimit)
	defer cancel()

	e.logf("inflight: %d requests", n)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	back, err := startProc("slow-backend", self, []string{roleEnv + "=slow-backend"}, "-n", strconv.Itoa(n))
	if err != nil {
		return err
	}
	defer back.stop()
	backAddr, err := back.line(30 * time.Second)
	if err != nil {
		return err
	}
	pr, err := e.startPair(ctx, backAddr, " (in-flight)", false, "--max-streams-per-tunnel", strconv.Itoa(n+64))
	defer func() {
		if pr != nil {
			pr.tunnel.stop()
			pr.tunneld.stop()
			e.forget(pr.procs()...)
		}
	}()
	if err != nil {
		return err
	}
	// Settle as the other phases do, then take "before".
	select {
	case <-time.After(settle(e.o)):
	case <-ctx.Done():
		return ctx.Err()
	}
	procs := pr.procs()
	before := make([]procStat, len(procs))
	beforeG := make([]int, len(procs))
	for i, p := range procs {
		before[i], beforeG[i] = readProc(p.pid()), goroutines(pr.metricsOf(p))
	}

	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, pr.plainAddr)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	_, port, _ := net.SplitHostPort(pr.plainAddr)
	url := "http://bench.localhost:" + port + "/slow"
	results := make(chan error, n)
	for range n {
		go func() {
			req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
			if err != nil {
				results <- err
				return
			}
			resp, err := client.Do(req)
			if err != nil {
				results <- err
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && (resp.StatusCode != http.StatusOK || string(body) != "ok") {
				err = fmt.Errorf("got %d %q", resp.StatusCode, body)
			}
			results <- err
		}()
	}
	allIn := make(chan error, 1)
	go func() {
		l, err := back.line(inflightLimit)
		if err == nil && l != "all in" {
			err = fmt.Errorf("slow-backend printed %q", l)
		}
		allIn <- err
	}()
	done := 0
	var firstErr error
	select {
	case firstErr = <-allIn:
	case err := <-results:
		// A request ended before all were in flight: it can only have failed.
		done++
		firstErr = fmt.Errorf("a request ended before all %d were in flight: %v", n, err)
	case <-ctx.Done():
		firstErr = fmt.Errorf("not all %d requests in flight: %w", n, ctx.Err())
	}
	var during []procStat
	var duringG []int
	if firstErr == nil {
		for _, p := range procs {
			during = append(during, readProc(p.pid()))
			duringG = append(duringG, goroutines(pr.metricsOf(p)))
		}
	}
	// Release them: the backend answers every held request once its
	// /release is asked for.
	if resp, err := http.Get("http://" + backAddr + "/release"); err == nil {
		resp.Body.Close()
	} else if firstErr == nil {
		firstErr = fmt.Errorf("release the held requests: %w", err)
	}
	for ; done < n; done++ {
		if err := <-results; err != nil && firstErr == nil {
			firstErr = fmt.Errorf("in-flight request: %w", err)
		}
	}
	if firstErr != nil {
		return firstErr
	}
	for i, p := range procs {
		rep.Inflight = append(rep.Inflight, InflightRow{N: n, Process: p.name,
			BeforeMiB: mib(before[i].RSS), DuringMiB: mib(during[i].RSS),
			PerStreamKB: float64(during[i].RSS-before[i].RSS) / 1024 / float64(n),
			GoroutinesB: beforeG[i], GoroutinesD: duringG[i]})
	}
	return nil
}

// slowBackend is the in-flight phase's backend: it prints its address,
// holds every request until -n of them have arrived, prints "all in", and
// answers them all ("ok") once GET /release comes.
func slowBackend(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("slow-backend", flag.ContinueOnError)
	n := fs.Int("n", 1, "requests to hold")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := raiseNoFile(); err != nil {
		return err
	}
	var arrived atomic.Int64
	release := make(chan struct{})
	var once sync.Once
	mx := http.NewServeMux()
	mx.HandleFunc("GET /release", func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(release) })
	})
	mx.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) == int64(*n) {
			fmt.Println("all in")
		}
		select {
		case <-release:
			w.Write([]byte("ok"))
		case <-r.Context().Done():
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mx, ReadHeaderTimeout: 10 * time.Second}
	context.AfterFunc(ctx, func() { srv.Close() })
	fmt.Println(ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// forget drops stopped processes from the ones checkAlive and stop watch.
func (e *env) forget(gone ...*proc) {
	var keep []*proc
	for _, p := range e.procs {
		if !slices.Contains(gone, p) {
			keep = append(keep, p)
		}
	}
	e.procs = keep
}
