package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/inspect"
	"github.com/tunnelhq/tunnel/pkg/mux"
)

// defaultInspect is where the inspector listens unless told otherwise:
// ngrok's port, which its users already type. When it is taken (another
// tunnel running), the next free port up to defaultInspect+inspectTries-1,
// then any.
const (
	defaultInspect = "127.0.0.1:4040"
	inspectTries   = 20
)

// inspectOff reports whether --inspect turns the inspector off.
func inspectOff(addr string) bool {
	switch strings.ToLower(strings.TrimSpace(addr)) {
	case "", "false", "off", "no", "0":
		return true
	}
	return false
}

// parseSize reads a byte count as the flags take it: bytes, or a number
// with KiB, MiB or GiB (K, M, G for short, any case).
func parseSize(s string) (int64, error) {
	num, unit := strings.TrimSpace(s), int64(1)
	lower := strings.ToLower(num)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"b", 1}} {
		if strings.HasSuffix(lower, u.suffix) {
			num, unit = strings.TrimSpace(num[:len(num)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("%q: want bytes, or a number with KiB, MiB or GiB (e.g. 1MiB)", s)
	}
	return n * unit, nil
}

// isLoopback reports whether host (no port) names this machine only.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// listenInspector binds addr; with next (addr is the default) and its port
// taken, the next free port, then any, so that a second tunnel on the
// machine gets an inspector too.
func listenInspector(addr string, next bool) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	if !next || !errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("listen on %s (--inspect): %w", addr, err)
	}
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	for p := port + 1; p < port+inspectTries && p <= math.MaxUint16; p++ {
		if ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p))); err == nil {
			return ln, nil
		}
	}
	ln, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("listen on %s (--inspect): %w", addr, err)
	}
	return ln, nil
}

// inspector is the running --inspect: the recorder that cfg's streams go
// through, and its page and API.
type inspector struct {
	in   *inspect.Inspector
	ln   net.Listener
	url  string // the page, with ?token= when the token was made up here
	done chan error
}

// publicURL is the page's URL without a token made up here: what may go
// to a log line.
func (i *inspector) publicURL() string {
	u, _, _ := strings.Cut(i.url, "?")
	return u
}

// startInspector sets up --inspect, unless it is off (nil, nil): it binds
// the listener, hooks the recorder into cfg's HTTP streams, and reports
// each exchange to onExchange (the live view), if set. Serve with run.
func startInspector(o options, cfg *mux.ClientConfig, log zerolog.Logger, onExchange func(inspect.Summary)) (*inspector, error) {
	if inspectOff(o.inspect) {
		return nil, nil
	}
	icfg := inspect.DefaultConfig()
	icfg.Logger = log
	icfg.Version = version
	icfg.OnExchange = onExchange
	var err error
	if icfg.MaxBody, err = parseSize(o.inspectMaxBody); err != nil {
		return nil, fmt.Errorf("--inspect-max-body: %w", err)
	}
	if icfg.MaxMemory, err = parseSize(o.inspectMaxMemory); err != nil {
		return nil, fmt.Errorf("--inspect-max-memory: %w", err)
	}
	host, _, err := net.SplitHostPort(o.inspect)
	if err != nil {
		return nil, fmt.Errorf("--inspect %q: want host:port, or false", o.inspect)
	}
	limitMemory(icfg.MaxMemory)
	icfg.Token = o.inspectToken
	if icfg.Token == "" && !isLoopback(host) {
		// Off loopback, anyone who reaches the port would read every
		// request (tokens, cookies): a token is required, made up here
		// when not given, and printed with the URL.
		var b [16]byte
		rand.Read(b[:])
		icfg.Token = hex.EncodeToString(b[:])
	}
	in, err := inspect.New(icfg)
	if err != nil {
		return nil, fmt.Errorf("--inspect: %w", err)
	}
	ln, err := listenInspector(o.inspect, o.inspect == defaultInspect)
	if err != nil {
		return nil, err
	}
	page := "http://" + pageHost(ln.Addr().(*net.TCPAddr)) + "/"
	if icfg.Token != "" && o.inspectToken == "" {
		page += "?token=" + url.QueryEscape(icfg.Token)
	}
	cfg.Copier = in.Copier
	return &inspector{in: in, ln: ln, url: page, done: make(chan error, 1)}, nil
}

// pageHost is how a browser reaches the listener: an unspecified address
// (0.0.0.0, ::) through loopback.
func pageHost(a *net.TCPAddr) string {
	ip := a.IP
	if ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(a.Port))
}

// run serves the inspector until ctx ends; wait returns once it has.
func (i *inspector) run(ctx context.Context) {
	go func() { i.done <- i.in.Serve(ctx, i.ln) }()
}

func (i *inspector) wait() error { return <-i.done }

// inspectHeadroom is what the client may use besides the recordings when
// the inspector is on: its sessions, streams and buffers, and the garbage
// collector's working room.
const inspectHeadroom = 24 << 20

// limitMemory sets the Go runtime's soft memory limit to the recordings'
// cap plus inspectHeadroom, unless GOMEMLIMIT says otherwise. The
// recordings are live heap that no collection frees, and with the default
// pacing (the heap grows to twice what is live before a collection) a
// client holding 64 MiB of them reached 231 MiB of RSS after 100,000
// requests (make bench, the inspector row). Under the limit the collector
// runs more often once the recordings are full, and the runtime returns
// freed memory to the system sooner; the runtime caps the collector's CPU
// should the live heap ever outgrow the limit.
func limitMemory(recordings int64) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(recordings + inspectHeadroom)
}
