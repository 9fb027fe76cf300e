package mux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/proto"
)

// ErrPeerLimit is why a session ends when the peer sent what no peer of
// ours sends: a second stream from a client, a ping flood, streams beyond
// the client's bound. It is wrapped with the detail.
var ErrPeerLimit = errors.New("mux: peer broke the session's limits")

// yamux frame types and flags (yamux's spec.md), as the guard reads them.
const (
	yamuxVersion    = 0
	yamuxTypeWindow = 1
	yamuxTypePing   = 2
	yamuxTypeGoAway = 3
	yamuxFlagSYN    = 1
	yamuxFlagACK    = 2
)

// The budget of what a peer may make yamux do. yamux v0.1.2 answers each
// ping in a goroutine of its own that waits until the answer is written, so
// a peer that sends pings and never reads parks one goroutine per 12 bytes
// it sends (400,000 pings took tunneld to 288,000 goroutines and 1.6 GB).
// Our peers ping once per KeepAliveInterval (15 s by default) and wait for
// the answer before the next, so these leave a legitimate peer two orders of
// magnitude of room.
const (
	// maxPendingPings is how many of the peer's pings may wait for their
	// answer to be written: it bounds yamux's reply goroutines per session.
	maxPendingPings = 8
	// pingBurst and pingEvery are a token bucket on the peer's pings:
	// pingBurst at once, then one per pingEvery. It bounds the work (a
	// goroutine and a TLS record per ping) a peer that does read can ask.
	pingBurst = 16
	pingEvery = 100 * time.Millisecond
	// maxGoAways is how many yamux GoAway frames a peer may send: one says
	// "no new streams", a second one an error that ends the session.
	maxGoAways = 2
	// preAuthBudget is how many bytes a client may send before tunneld
	// accepts it (ServerSession.Accept): its stream's SYN, one Hello (at
	// most proto.MaxFrameSize) and a few keepalive pings. Without it each
	// unauthenticated connection could make tunneld buffer yamux's 256 KiB
	// initial stream window until the handshake timeout.
	preAuthBudget = proto.MaxFrameSize + 16<<10
)

// guard sits between yamux and the connection on both roles and reads the
// yamux frames the peer sends as they pass, to enforce the budget above and
// the session's rules (package doc) before yamux acts on them. A peer that
// breaks them gets an error from Read, which ends the yamux session: yamux
// logs that one error, not one line per offending frame.
//
// Read keeps a small state machine across reads of any size: the header
// bytes collected so far, then the data body to skip, arithmetically; it
// allocates nothing. Write watches yamux's own frames (one Write per header,
// one per body, from yamux's single send loop) only to see each ping answer
// leave, so that maxPendingPings counts what really waits.
type guard struct {
	net.Conn
	server bool // tunneld's end: the peer may open one stream only

	// Read side, used by yamux's receive goroutine only.
	hdr       [yamuxHeaderSize]byte
	have      int    // header bytes collected
	body      uint32 // data body bytes left to skip
	streams   int    // streams the peer opened (server role)
	opens     int    // streams the peer opened in this Read (client role)
	goAways   int
	tokens    int
	refilled  time.Time
	preAuth   int // bytes read before authenticated
	err       error
	maxOpen   int           // client role: peer streams open at once
	ready     chan struct{} // closed when sess is set
	sess      *yamux.Session
	readyOnce sync.Once

	// Write side, yamux's send goroutine.
	wbody uint32 // body bytes of the frame being written

	pending atomic.Int32 // peer pings not answered yet
	authed  atomic.Bool
}

// newGuard wraps conn. maxOpen bounds, on the client, the streams tunneld
// may have open at once; the server passes 0 (a client opens one stream).
func newGuard(conn net.Conn, server bool, maxOpen int) *guard {
	return &guard{Conn: conn, server: server, maxOpen: maxOpen, tokens: pingBurst,
		refilled: time.Now(), ready: make(chan struct{})}
}

// attach gives the guard the session it protects, for its stream count.
func (g *guard) attach(s *yamux.Session) {
	g.readyOnce.Do(func() {
		g.sess = s
		close(g.ready)
	})
}

// authenticated lifts the pre-authentication byte budget.
func (g *guard) authenticated() { g.authed.Store(true) }

func (g *guard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.Conn.Read(p)
	if n > 0 {
		g.opens = 0
		if perr := g.scan(p[:n]); perr != nil {
			g.err = perr
			return 0, perr
		}
	}
	return n, err
}

// scan follows the frames in b, which continues what earlier reads returned.
func (g *guard) scan(b []byte) error {
	if g.server && !g.authed.Load() {
		g.preAuth += len(b)
		if g.preAuth > preAuthBudget {
			return fmt.Errorf("%w: %d bytes before authentication, at most %d", ErrPeerLimit, g.preAuth, preAuthBudget)
		}
	}
	for len(b) > 0 {
		if g.body > 0 {
			skip := min(uint32(len(b)), g.body) // #nosec: len(b) is a read's size
			g.body -= skip
			b = b[skip:]
			continue
		}
		c := copy(g.hdr[g.have:], b)
		g.have += c
		b = b[c:]
		if g.have < yamuxHeaderSize {
			return nil
		}
		g.have = 0
		if err := g.frame(); err != nil {
			return err
		}
	}
	return nil
}

// frame checks one complete header in g.hdr.
func (g *guard) frame() error {
	h := g.hdr[:]
	typ, flags := h[1], binary.BigEndian.Uint16(h[2:4])
	id, length := binary.BigEndian.Uint32(h[4:8]), binary.BigEndian.Uint32(h[8:12])
	if h[0] != yamuxVersion || typ > yamuxTypeGoAway {
		return fmt.Errorf("%w: not a yamux frame (version %d, type %d)", ErrPeerLimit, h[0], typ)
	}
	switch typ {
	case yamuxTypeData, yamuxTypeWindow:
		if typ == yamuxTypeData {
			g.body = length
		}
		if flags&yamuxFlagSYN != 0 {
			return g.opened(id)
		}
	case yamuxTypePing:
		if flags&yamuxFlagSYN != 0 {
			return g.ping()
		}
	case yamuxTypeGoAway:
		if g.goAways++; g.goAways > maxGoAways {
			return fmt.Errorf("%w: more than %d GoAway frames", ErrPeerLimit, maxGoAways)
		}
	}
	return nil
}

// opened checks a stream the peer opens.
func (g *guard) opened(id uint32) error {
	if g.server {
		// A client opens its control stream, and nothing else, ever.
		if g.streams++; g.streams > 1 || id%2 != 1 {
			return fmt.Errorf("%w: the client opened a second stream (id %d); only tunneld opens streams", ErrPeerLimit, id)
		}
		return nil
	}
	if id == 0 || id%2 != 0 {
		return fmt.Errorf("%w: tunneld opened stream %d, which is not one of its ids", ErrPeerLimit, id)
	}
	<-g.ready
	// yamux has registered the streams of earlier reads (it reads again
	// only once it has handled what it has), not yet those of this one.
	// The control stream is ours.
	g.opens++
	if n := g.sess.NumStreams() - 1 + g.opens; n > g.maxOpen {
		return fmt.Errorf("%w: tunneld opened more than %d streams at once (ClientConfig.MaxStreams)", ErrPeerLimit, g.maxOpen)
	}
	return nil
}

// ping charges one of the peer's pings to the bucket and the pending count.
func (g *guard) ping() error {
	now := time.Now()
	if add := int(now.Sub(g.refilled) / pingEvery); add > 0 && g.tokens < pingBurst {
		g.tokens = min(pingBurst, g.tokens+add)
		g.refilled = g.refilled.Add(time.Duration(add) * pingEvery)
	}
	if g.tokens == pingBurst {
		g.refilled = now // a full bucket gains nothing until one is taken
	}
	if g.tokens == 0 {
		return fmt.Errorf("%w: more than %d pings at once, or one per %v", ErrPeerLimit, pingBurst, pingEvery)
	}
	g.tokens--
	if g.pending.Add(1) > maxPendingPings {
		return fmt.Errorf("%w: %d pings sent without reading their answers", ErrPeerLimit, maxPendingPings+1)
	}
	return nil
}

// Write passes yamux's frames on, noting each ping answer that leaves.
func (g *guard) Write(p []byte) (int, error) {
	if g.wbody > 0 {
		g.wbody -= min(g.wbody, uint32(len(p))) // #nosec: a frame's body
	} else if len(p) >= yamuxHeaderSize {
		switch p[1] {
		case yamuxTypeData:
			g.wbody = binary.BigEndian.Uint32(p[8:12]) - min(binary.BigEndian.Uint32(p[8:12]), uint32(len(p)-yamuxHeaderSize))
		case yamuxTypePing:
			if binary.BigEndian.Uint16(p[2:4])&yamuxFlagACK != 0 {
				// Counted as answered once handed on: a peer that does
				// not read then stalls the send loop on the first one
				// that cannot be written, and the rest wait as pending.
				defer g.pending.Add(-1)
			}
		}
	}
	return g.Conn.Write(p)
}

// guardedSession is what both roles start on a connection: yamux above the guard,
// above the frameWriter, above the TLS connection, logging through a
// bounded bridge of its own.
type guardedSession struct {
	*yamux.Session
	guard *guard
	ylog  *yamuxLog
}

func startSession(conn net.Conn, cfg Config, log zerolog.Logger, server bool, maxOpen int) (*guardedSession, error) {
	g := newGuard(newFrameWriter(conn), server, maxOpen)
	ylog := &yamuxLog{l: log}
	ycfg := cfg.yamuxConfig(ylog)
	if server {
		// tunneld closes a stream when it wants nothing more from it (a
		// visitor left, a pooled stream retired) and says so in the
		// StreamHeader (CloseOnFIN). Until the client closes too, what it
		// sends is buffered here, up to a window per stream, and the
		// stream's slot is already free: a client that ignores the flag
		// (an old or hostile one) gets ServerStreamCloseTimeout, not a
		// minute, before the stream is reset.
		ycfg.StreamCloseTimeout = ServerStreamCloseTimeout
	}
	var ys *yamux.Session
	var err error
	if server {
		ys, err = yamux.Server(g, ycfg)
	} else {
		ys, err = yamux.Client(g, ycfg)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	g.attach(ys)
	ylog.sess.Store(ys)
	return &guardedSession{Session: ys, guard: g, ylog: ylog}, nil
}

// Close ends the yamux session and reports the log lines it suppressed.
func (s *guardedSession) Close() error {
	err := s.Session.Close()
	s.ylog.close()
	return err
}
