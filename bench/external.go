package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/pkg/devcert"
)

// The small-request and bulk figures users quote come from separate load
// generator processes, wrk and curl, not from Go code sharing the harness's
// process with the backend: the issue measured direct at 36,500 req/s with
// wrk where our in-process generator found 23,000, so its ratios read higher
// than a user's. These drive them and read their results.

// wrkScript makes wrk print its figures as one JSON line (latencies in
// microseconds) after a marker, instead of the text we would have to parse.
const wrkScript = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"errors\":%d,\"non2xx\":%d,\"p50_us\":%d,\"p99_us\":%d,\"p999_us\":%d}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
`

// wrkOut is what wrkScript prints.
type wrkOut struct {
	Requests   int64 `json:"requests"`
	DurationUS int64 `json:"duration_us"`
	Bytes      int64 `json:"bytes"`
	Errors     int64 `json:"errors"`
	Non2xx     int64 `json:"non2xx"`
	P50US      int64 `json:"p50_us"`
	P99US      int64 `json:"p99_us"`
	P999US     int64 `json:"p999_us"`
}

// wrkDuration rounds d up to whole seconds: wrk takes no finer unit.
func wrkDuration(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// wrkThreads is how the issue ran wrk (-t2 on 2 cores), with no more threads
// than connections.
func wrkThreads(conns int) int { return min(2, conns) }

// runWrk runs wrk against t's page with conns connections for d (whole
// seconds) and returns its figures as a closedResult. wrk resolves names with
// getaddrinfo, which knows no *.localhost: it connects to t.dial and sends
// t's host in a Host header (over HTTPS it then sends no SNI).
func runWrk(ctx context.Context, wrk, scriptPath string, t target, conns int, d time.Duration) (closedResult, error) {
	u, err := url.Parse(t.baseURL)
	if err != nil {
		return closedResult{}, err
	}
	scheme := "http"
	if t.tls != nil {
		scheme = "https"
	}
	secs := wrkDuration(d)
	args := []string{"-t", strconv.Itoa(wrkThreads(conns)), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", secs), "--timeout", "10s", "-s", scriptPath,
		"-H", "Host: " + u.Host}
	if t.auth != "" {
		args = append(args, "-H", "Authorization: Basic "+base64.StdEncoding.EncodeToString([]byte(t.auth)))
	}
	args = append(args, scheme+"://"+t.dial+"/")
	cctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, wrk, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return closedResult{}, fmt.Errorf("%s: wrk %s: %w: %s%s", t.Name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	w, err := parseWrk(stdout.String())
	if err != nil {
		return closedResult{}, fmt.Errorf("%s: %w", t.Name, err)
	}
	r := closedResult{Requests: w.Requests, Errors: w.Errors + w.Non2xx,
		Elapsed: time.Duration(w.DurationUS) * time.Microsecond,
		P50:     time.Duration(w.P50US) * time.Microsecond,
		P99:     time.Duration(w.P99US) * time.Microsecond,
		P999:    time.Duration(w.P999US) * time.Microsecond}
	if r.Requests == 0 || r.Elapsed <= 0 {
		return r, fmt.Errorf("%s: wrk completed no request: %s", t.Name, stdout.String())
	}
	// Every answer must be the page: a tunnel answering a short error page
	// fast would otherwise look like a fast tunnel.
	if per := w.Bytes / w.Requests; per < pageSize {
		return r, fmt.Errorf("%s: wrk read %d bytes per response, want at least the %d-byte page: %s", t.Name, per, pageSize, stdout.String())
	}
	return r, nil
}

// warmUp runs wrk against t for a second, unmeasured, so that what a
// target does once (heap growth, pools of streams and connections, TLS
// session caches) is not in the first measured run: on a busy machine a
// pipe or pair that had served nothing yet answered no request in the
// first second. wrk itself has no warm-up. Its result, even a failure, is
// the measured run's to show.
func (e *env) warmUp(ctx context.Context, t target, conns int) {
	e.logf("warm-up %s, %d conns", t.Name, conns)
	runWrk(ctx, e.o.Wrk, e.wrkScript, t, conns, time.Second)
}

// parseWrk finds wrkScript's line in wrk's output.
func parseWrk(out string) (wrkOut, error) {
	var w wrkOut
	for _, l := range strings.Split(out, "\n") {
		if j, ok := strings.CutPrefix(strings.TrimSpace(l), "WRKJSON "); ok {
			if err := json.Unmarshal([]byte(j), &w); err != nil {
				return w, fmt.Errorf("wrk's JSON line %q: %w", j, err)
			}
			return w, nil
		}
	}
	return w, fmt.Errorf("no WRKJSON line in wrk's output: %q", out)
}

// writeWrkScript writes wrkScript into dir and returns its path.
func writeWrkScript(dir string) (string, error) {
	p := filepath.Join(dir, "report.lua")
	return p, os.WriteFile(p, []byte(wrkScript), 0o644)
}

// curlBulk moves total bytes with streams curl processes at once, down
// (GET /bulk) or up (PUT /up of a sparse file of the stream's share), and
// returns the wall time from the first start to the last exit. Each
// process's byte count and status are checked.
func curlBulk(ctx context.Context, curl, certsDir, tmp string, t target, up bool, streams int, total int64) (time.Duration, error) {
	per := total / int64(streams)
	u, err := url.Parse(t.baseURL)
	if err != nil {
		return 0, err
	}
	args := []string{"-sS", "--fail", "-o", "/dev/null", "--connect-to", u.Host + ":" + t.dial}
	if t.tls != nil {
		args = append(args, "--cacert", filepath.Join(certsDir, devcert.CAFile), "--http1.1")
	}
	if up {
		f := filepath.Join(tmp, fmt.Sprintf("up-%d", per))
		if st, err := os.Stat(f); err != nil || st.Size() != per {
			if err := os.WriteFile(f, nil, 0o644); err != nil {
				return 0, err
			}
			// Sparse: reading it costs the page cache's zero page, no disk.
			if err := os.Truncate(f, per); err != nil {
				return 0, err
			}
		}
		args = append(args, "-T", f, "-w", "%{http_code} %{size_upload}", t.baseURL+"/up")
	} else {
		args = append(args, "-w", "%{http_code} %{size_download}", fmt.Sprintf("%s/bulk?n=%d", t.baseURL, per))
	}
	if u.Host != "" && !strings.Contains(u.Host, ":") {
		// --connect-to names HOST:PORT; a URL without a port has the scheme's.
		return 0, fmt.Errorf("%s: base URL %q has no port", t.Name, t.baseURL)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	start := time.Now()
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(cctx, curl, args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				errs <- fmt.Errorf("curl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
				cancel()
				return
			}
			// curl -T is a PUT, which /up takes as it takes a POST.
			want := fmt.Sprintf("200 %d", per)
			if got := strings.TrimSpace(stdout.String()); got != want {
				errs <- fmt.Errorf("curl %s: got %q, want %q", strings.Join(args, " "), got, want)
				cancel()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, fmt.Errorf("%s: %w", t.Name, err)
	}
	return elapsed, nil
}
