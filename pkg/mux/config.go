package mux

import (
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/validate"
)

// Config holds the session settings both roles share. The zero value is not
// usable; start from DefaultConfig.
type Config struct {
	// Logger receives session events. Use zerolog.Nop() for silence.
	Logger zerolog.Logger

	// StreamWindow is the most a stream may have in flight unacknowledged,
	// in bytes. One stream cannot move more than StreamWindow per round trip,
	// so yamux's 256 KiB default caps a stream at 25 MiB/s over a 10 ms path.
	// It is also what a receiver may have to buffer per stream when its
	// reader falls behind (a slow visitor), and yamux keeps a receive
	// buffer's capacity for the stream's life: tunneld pools streams, so the
	// window bounds memory per stream, 256 of them per tunnel. Default 1 MiB:
	// 20 MiB/s per stream over a 50 ms path, more than a home uplink; on
	// loopback 8 MiB moved 1 GiB no faster (make bench, bulk phase) and
	// raised tunneld's peak RSS from 50 to 121 MiB.
	StreamWindow uint32

	// KeepAliveInterval is how often each side pings the other. A peer that
	// does not answer within WriteTimeout ends the session, so a silently dead
	// link is noticed within KeepAliveInterval+WriteTimeout (PeerTimeout,
	// 30 s by default: both binaries' --peer-timeout). Default 15 s;
	// at least 250 ms, since the peer's guard allows one ping per 100 ms on
	// average (pingEvery).
	KeepAliveInterval time.Duration

	// WriteTimeout bounds writing one frame to the connection, and the
	// keepalive's wait for an answer. It does not limit how long a slow
	// visitor may take: stream writes wait on flow control, not on this.
	// Default 15 s, half of the default PeerTimeout (see SetPeerTimeout).
	WriteTimeout time.Duration

	// AcceptBacklog is how many opened streams may wait for Accept before the
	// opener blocks. Default 256.
	AcceptBacklog int

	// HandshakeTimeout bounds the control handshake (opening the control
	// stream, Hello, Welcome) and reading a data stream's header or
	// acknowledgement. An unauthenticated connection is dropped after it.
	// Default 10 s.
	HandshakeTimeout time.Duration

	// DialTimeout bounds the client's dial of a local target. Default 10 s.
	DialTimeout time.Duration

	// DrainTimeout bounds how long a client that is stopping waits for
	// in-flight streams before closing the session. Default 10 s.
	DrainTimeout time.Duration

	// maxStreams is ClientConfig.MaxStreams, for Client; 0 means its
	// default for the tunnels asked for.
	maxStreams int
}

// minKeepAlive is the shortest KeepAliveInterval: a peer's guard ends a
// session that pings more than once per pingEvery on average.
const minKeepAlive = 250 * time.Millisecond

// maxLoggedString bounds a peer's string (a GoAway reason, a tunnel name)
// in our log lines.
const maxLoggedString = 128

// streamsPerTunnel is what a client lets tunneld have open per tunnel
// unless told otherwise: tunneld's default cap of requests in flight per
// tunnel (256, --max-streams-per-tunnel) plus as many idle streams in its
// keep-alive pool. defaultMaxStreams is the least a client allows.
const (
	streamsPerTunnel  = 512
	defaultMaxStreams = 1024
)

// clientMaxStreams is the bound on tunneld's open streams for a client that
// asks for tunnels tunnels.
func (c Config) clientMaxStreams(tunnels int) int {
	if c.maxStreams > 0 {
		return c.maxStreams
	}
	return max(defaultMaxStreams, streamsPerTunnel*tunnels)
}

// DefaultConfig returns the settings tunnel and tunneld use unless told
// otherwise.
func DefaultConfig() Config {
	return Config{
		Logger:            zerolog.Nop(),
		StreamWindow:      1 << 20,
		KeepAliveInterval: 15 * time.Second,
		WriteTimeout:      15 * time.Second,
		AcceptBacklog:     256,
		HandshakeTimeout:  10 * time.Second,
		DialTimeout:       10 * time.Second,
		DrainTimeout:      10 * time.Second,
	}
}

// minStreamWindow is yamux's own initial window; it refuses anything smaller.
// maxStreamWindow bounds what one slow reader can make a peer buffer.
const (
	minStreamWindow = 256 << 10
	maxStreamWindow = 64 << 20
)

// ParseWindow reads a stream window as the flags take it, a number of bytes
// or a number followed by KiB or MiB (K and M for short, any case), and
// checks it is one Validate accepts.
func ParseWindow(s string) (uint32, error) {
	num, unit := strings.TrimSpace(s), uint64(1)
	lower := strings.ToLower(num)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"k", 1 << 10}, {"m", 1 << 20}} {
		if strings.HasSuffix(lower, u.suffix) {
			num, unit = strings.TrimSpace(num[:len(num)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil || n*unit > math.MaxUint32 {
		return 0, fmt.Errorf("stream window %q: want bytes, or a number with KiB or MiB (e.g. 1MiB)", s)
	}
	if w := n * unit; w < minStreamWindow || w > maxStreamWindow {
		return 0, fmt.Errorf("stream window %q is outside 256KiB to 64MiB", s)
	}
	return uint32(n * unit), nil
}

// Validate reports the first setting that is out of range.
func (c Config) Validate() error {
	var errs []error
	if c.StreamWindow < minStreamWindow || c.StreamWindow > maxStreamWindow {
		errs = append(errs, fmt.Errorf("stream window %d bytes is outside %d KiB to %d MiB", c.StreamWindow, minStreamWindow>>10, maxStreamWindow>>20))
	}
	errs = append(errs,
		validate.Positive("keepalive interval", c.KeepAliveInterval),
		validate.Positive("write timeout", c.WriteTimeout),
		validate.Positive("handshake timeout", c.HandshakeTimeout),
		validate.Positive("dial timeout", c.DialTimeout),
		validate.Positive("drain timeout", c.DrainTimeout),
		validate.Positive("accept backlog", c.AcceptBacklog),
	)
	if c.KeepAliveInterval > 0 && c.KeepAliveInterval < minKeepAlive {
		errs = append(errs, fmt.Errorf("keepalive interval %v is under %v: the peer would take it for a ping flood", c.KeepAliveInterval, minKeepAlive))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mux: %w", err)
	}
	return nil
}

// ServerStreamCloseTimeout is how long tunneld waits for a client to close a
// stream tunneld has closed before yamux resets it (see startSession): what
// the client sent meanwhile stays buffered in tunneld that long at most.
const ServerStreamCloseTimeout = 5 * time.Second

// yamuxConfig is the one place our yamux settings are decided. yamux logs
// through log, which is the session's own (see yamuxLog).
func (c Config) yamuxConfig(log io.Writer) *yamux.Config {
	return &yamux.Config{
		AcceptBacklog:          c.AcceptBacklog,
		EnableKeepAlive:        true,
		KeepAliveInterval:      c.KeepAliveInterval,
		ConnectionWriteTimeout: c.WriteTimeout,
		MaxStreamWindowSize:    c.StreamWindow,
		// A stream whose SYN is never acknowledged means the peer is stuck;
		// yamux then closes the whole session, which is what we want.
		StreamOpenTimeout: c.HandshakeTimeout,
		// After we half-close, a peer that never closes its side would keep
		// the stream forever; reclaim it after this.
		StreamCloseTimeout: time.Minute,
		Logger:             stdlog.New(log, "", 0),
	}
}
