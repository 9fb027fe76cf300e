package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/internal/units"
	"github.com/tunnelhq/tunnel/pkg/inspect"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// view is the live status shown on a terminal: a block at the bottom of
// stderr, redrawn every second, while log lines (and the URLs on stdout)
// scroll above it. mux sees streams, not requests (see mux.StreamEvent): a
// visitor connection is one stream, and may carry several requests in
// turn, so the view counts streams per tunnel; it lists the last requests
// when the inspector (--inspect, which reads them) is on, the last streams
// otherwise.
type view struct {
	out io.Writer // the terminal

	mu    sync.Mutex
	drawn int // lines of the block on screen now
	state string
	// drainUntil is when a drain that a signal started ends at the latest
	// (zero: none); again says how to cut it short.
	drainUntil time.Time
	again      string
	tunnels    []viewTunnel
	opens      []viewOpen // stream opens within the last minute
	active     map[string]int
	recent     []viewEvent // the last recentMax ended streams, oldest first
	// With the inspector on, the view lists requests rather than streams.
	inspectURL string
	requests   []inspect.Summary // the last recentMax, oldest first
}

type viewTunnel struct{ name, url, target string }

type viewOpen struct {
	tunnel string
	at     time.Time
}

type viewEvent struct {
	at time.Time
	ev mux.StreamEvent
}

const recentMax = 8

func newView(out io.Writer) *view {
	return &view{out: out, state: "starting", active: make(map[string]int)}
}

// configure names the server and the tunnels asked for, before Run.
func (v *view) configure(server string, tunnels []mux.Tunnel) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.state = "connecting to " + server
	for _, t := range tunnels {
		v.tunnels = append(v.tunnels, viewTunnel{name: t.Name, target: t.Target})
	}
}

// Write prints p (whole log lines) above the block. The logger writes here.
func (v *view) Write(p []byte) (int, error) {
	return v.printAbove(v.out, p)
}

// above returns a writer for w (stdout) that prints above the block, so
// both streams can share the terminal.
func (v *view) above(w io.Writer) io.Writer {
	return writerFunc(func(p []byte) (int, error) { return v.printAbove(w, p) })
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (v *view) printAbove(w io.Writer, p []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.erase()
	n, err := w.Write(p)
	v.draw(time.Now())
	return n, err
}

// ready records the public URLs the server granted.
func (v *view) ready(w *proto.Welcome) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.state = "online"
	for i, t := range w.Tunnels {
		if i < len(v.tunnels) {
			v.tunnels[i].name, v.tunnels[i].url = t.Name, mux.Printable(t.URL, maxPrintedName)
			if t.DomainURL != "" {
				v.tunnels[i].url += " " + mux.Printable(t.DomainURL, maxPrintedName)
			}
		}
	}
}

// draining shows that a signal stopped the client: the streams open may
// finish until the drain timeout, at until; again says how to quit at once.
func (v *view) draining(until time.Time, again string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.drainUntil, v.again = until, again
	v.redraw(time.Now())
}

// quit draws the block a last time as a second signal ends the client.
func (v *view) quit() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.drainUntil = time.Time{}
	v.state = "quit: streams in flight were cut"
	v.redraw(time.Now())
}

// stopped records why the session ended and draws the block a last time.
func (v *view) stopped(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.drainUntil = time.Time{}
	v.state = "stopped"
	if err != nil {
		v.state = "stopped: " + mux.Printable(err.Error(), maxPrintedText)
	}
	v.redraw(time.Now())
}

// onStream is the mux.ClientConfig.OnStream hook. Streams are counted per
// tunnel only for the tunnels on show: tunneld names the tunnel of a
// stream, and one that names others must not grow the view's maps.
func (v *view) onStream(ev mux.StreamEvent) {
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.shown(ev.Tunnel) {
		if ev.Closed {
			v.recentAdd(now, ev)
		}
		return
	}
	if !ev.Closed {
		v.active[ev.Tunnel]++
		v.opens = append(v.opens, viewOpen{ev.Tunnel, now})
		return
	}
	if ev.Err == nil {
		v.active[ev.Tunnel]--
	} else {
		// A refused stream was never reported open.
		v.opens = append(v.opens, viewOpen{ev.Tunnel, now})
	}
	v.recentAdd(now, ev)
}

// inspecting says the inspector runs, at url: the view then lists
// requests (onRequest) instead of streams.
func (v *view) inspecting(url string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.inspectURL = url
}

// onRequest is the inspector's OnExchange hook.
func (v *view) onRequest(s inspect.Summary) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.requests = append(v.requests, s)
	if len(v.requests) > recentMax {
		v.requests = v.requests[len(v.requests)-recentMax:]
	}
}

func (v *view) shown(name string) bool {
	for _, t := range v.tunnels {
		if t.name == name {
			return true
		}
	}
	return false
}

func (v *view) recentAdd(now time.Time, ev mux.StreamEvent) {
	v.recent = append(v.recent, viewEvent{now, ev})
	if len(v.recent) > recentMax {
		v.recent = v.recent[len(v.recent)-recentMax:]
	}
}

// run redraws the block every second until ctx ends.
func (v *view) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		v.mu.Lock()
		v.redraw(time.Now())
		v.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (v *view) redraw(now time.Time) {
	v.erase()
	v.draw(now)
}

// erase moves to the block's first line and clears to the end of the
// screen. Called with v.mu held.
func (v *view) erase() {
	if v.drawn > 0 {
		fmt.Fprintf(v.out, "\x1b[%dF\x1b[J", v.drawn)
		v.drawn = 0
	}
}

func (v *view) draw(now time.Time) {
	lines := v.render(now)
	io.WriteString(v.out, strings.Join(lines, "\n")+"\n")
	v.drawn = len(lines)
}

// render lays the block out. Called with v.mu held.
func (v *view) render(now time.Time) []string {
	cut := 0
	for cut < len(v.opens) && now.Sub(v.opens[cut].at) > time.Minute {
		cut++
	}
	v.opens = v.opens[cut:]
	perMin := make(map[string]int)
	for _, o := range v.opens {
		perMin[o.tunnel]++
	}
	state := v.state
	if !v.drainUntil.IsZero() {
		open := 0
		for _, n := range v.active {
			open += n
		}
		left := max(v.drainUntil.Sub(now), 0).Round(time.Second)
		state = "stopping"
		if open > 0 {
			state = fmt.Sprintf("draining %s (up to %s more); %s", streamsWord(int64(open)), shortDuration(left), v.again)
		}
	}
	lines := []string{"─── tunnel · " + state + " ───"}
	for _, t := range v.tunnels {
		url := t.url
		if url == "" {
			url = "(waiting for the server)"
		}
		name := mux.Printable(t.name, maxPrintedName)
		if name == "" {
			name = "(random)"
		}
		lines = append(lines, fmt.Sprintf("  %-14s %s → %s   %d streams/min, %d open",
			name, url, t.target, perMin[t.name], v.active[t.name]))
	}
	if v.inspectURL != "" {
		return append(lines, v.renderRequests()...)
	}
	if len(v.recent) == 0 {
		return append(lines, "  no streams yet")
	}
	lines = append(lines, "  last streams:")
	for i := len(v.recent) - 1; i >= 0; i-- {
		r := v.recent[i]
		line := fmt.Sprintf("    %s  %-14s %-21s ", r.at.Format(time.TimeOnly),
			mux.Printable(r.ev.Tunnel, maxPrintedName), mux.Printable(r.ev.Visitor, maxPrintedName))
		if r.ev.Err != nil {
			line += "refused: " + mux.Printable(r.ev.Err.Error(), maxPrintedText)
		} else {
			line += fmt.Sprintf("%s in, %s out, %s", units.Bytes(r.ev.BytesIn), units.Bytes(r.ev.BytesOut), r.ev.Duration.Round(time.Millisecond))
		}
		lines = append(lines, line)
	}
	return lines
}

// renderRequests lays out the inspector's line and the last requests,
// newest first: time, tunnel, method, path, status, duration. Called with
// v.mu held.
func (v *view) renderRequests() []string {
	lines := []string{"  inspector      " + v.inspectURL}
	if len(v.requests) == 0 {
		return append(lines, "  no requests yet")
	}
	lines = append(lines, "  last requests:")
	for i := len(v.requests) - 1; i >= 0; i-- {
		r := v.requests[i]
		status := strconv.Itoa(r.Status)
		switch {
		case r.Err != "" && r.Status == 0:
			status = "—"
		case r.ReplayOf != 0:
			status += " (replay)"
		}
		lines = append(lines, fmt.Sprintf("    %s  %-14s %-7s %-36s %-4s %s", r.Start.Format(time.TimeOnly),
			mux.Printable(r.Tunnel, maxPrintedName), mux.Printable(r.Method, 7), mux.Printable(r.URL, 36), status,
			time.Duration(r.DurationMS*float64(time.Millisecond)).Round(time.Millisecond)))
	}
	return lines
}
