package peer

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// Errors of Links.Open, besides the owning node's refusals (see OpenFunc).
var (
	// ErrClosed: the Links are closed.
	ErrClosed = errors.New("peer: links closed")
	// ErrUnreachable: no link to the node could be made (dial, TLS or
	// authentication failed, or the last try did so within the redial
	// wait), or the link was lost before the node answered. It matches
	// net.ErrClosed too (errors.Is), so mux.IsClosed holds for it: the
	// edge answers a visitor "tunnel offline", as it does when a local
	// client's session is gone.
	ErrUnreachable error = unreachable{}
	// ErrSecondHop: Open was called with the context of a forwarded
	// request (from an OpenFunc): a request crosses one node link at most,
	// so that two nodes whose tables disagree cannot pass it back and forth.
	ErrSecondHop = errors.New("peer: a forwarded request may not be forwarded again")
)

type unreachable struct{}

func (unreachable) Error() string        { return "peer: node unreachable" }
func (unreachable) Is(target error) bool { return target == net.ErrClosed }

// retirePoll is how often a retired link checks whether its last stream is
// gone, to close it. Retiring happens only when two nodes dial each other
// at once, so the poll costs nothing in the steady state.
const retirePoll = 100 * time.Millisecond

// Links are one node's links to the other nodes of a tunneld cluster: the
// node port (Serve) where other nodes connect, and the streams this node
// opens to clients connected elsewhere (Open).
//
// There is at most one link, a TLS connection carrying a yamux session, per
// pair of nodes, used in both directions. It is dialed on the first Open to
// a node, kept for as long as it lives (keepalives notice a dead node), and
// dialed again on the next Open after it is lost; after a failed dial, Opens
// to that node fail at once until RedialMin (doubling to RedialMax) has
// passed. Links are safe for concurrent use.
type Links struct {
	cfg         Config
	log         zerolog.Logger
	incarnation uint64 // random per Links: a peer that restarted has another
	serverTLS   *tls.Config
	clientTLS   *tls.Config
	yamuxCfg    *yamux.Config

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu         sync.Mutex
	closed     bool
	peers      map[string]*peerState
	all        map[*link]struct{} // every link with a session, kept or retired
	listeners  map[net.Listener]struct{}
	handshakes int
	perIP      map[string]int

	wg        sync.WaitGroup
	closeOnce sync.Once

	refusedLog logLimit

	streamsOut, streamsIn   atomic.Uint64
	dials, dialFailures     atomic.Uint64
	refused                 atomic.Uint64
	bytesForwarded, bytesIn atomic.Uint64
}

// peerState is what Links know of one other node.
type peerState struct {
	link     *link         // the kept link, nil when none
	dialing  chan struct{} // closed when the dial in progress ends; nil when none
	dialErr  error         // the last dial's failure, nil after a success
	nextDial time.Time     // no dial before this after a failure
	backoff  time.Duration
}

// link is one authenticated TLS connection to a node, with its session.
type link struct {
	peer        string // the other node
	dialer      string // the node that dialed it
	incarnation uint64 // the other node's
	sess        *yamux.Session
	log         zerolog.Logger

	mu    sync.Mutex
	ended bool                  // the session is over: see serveLink
	local map[net.Conn]struct{} // local streams piped to this link's streams
}

// track registers conn, a local stream piped to one of lk's streams, to be
// closed when lk ends. It reports false, having closed conn, if lk has
// ended already.
func (lk *link) track(conn net.Conn) bool {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if lk.ended {
		conn.Close()
		return false
	}
	if lk.local == nil {
		lk.local = make(map[net.Conn]struct{})
	}
	lk.local[conn] = struct{}{}
	return true
}

func (lk *link) untrack(conn net.Conn) {
	lk.mu.Lock()
	delete(lk.local, conn)
	lk.mu.Unlock()
}

// end closes the local streams piped to lk's streams. yamux ends a lost
// session's streams with EOF, which the pipe takes for a half-close: a
// local service that waits on after a half-close (an idle TCP tunnel)
// would hold its pipe, and Close, forever.
func (lk *link) end() {
	lk.mu.Lock()
	lk.ended = true
	local := lk.local
	lk.local = nil
	lk.mu.Unlock()
	for conn := range local {
		conn.Close()
	}
}

// Stats are counters for metrics. Counts are since New.
type Stats struct {
	Links        int    // kept links: nodes reachable now without a dial
	StreamsOut   uint64 // streams this node forwarded to another
	StreamsIn    uint64 // streams other nodes forwarded here and OpenFunc served
	Dials        uint64 // links dialed
	DialFailures uint64 // dials that did not end in an authenticated link
	Refused      uint64 // incoming connections refused before authentication
	BytesOut     uint64 // bytes of served streams sent back to the forwarding nodes
	BytesIn      uint64 // bytes of served streams received from the forwarding nodes
}

type forwardedKey struct{}

// Forwarded reports whether ctx is that of a request another node forwarded
// here (the context an OpenFunc gets).
func Forwarded(ctx context.Context) bool { return ctx.Value(forwardedKey{}) != nil }

// New makes a node's Links from cfg; it starts nothing (see Serve, Open).
func New(cfg Config) (*Links, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	server, client, err := tlsConfigs(cfg)
	if err != nil {
		return nil, err
	}
	var inc [8]byte
	if _, err := rand.Read(inc[:]); err != nil {
		return nil, fmt.Errorf("peer: incarnation: %w", err)
	}
	log := cfg.Logger.With().Str("component", "peer").Str("node", cfg.Node).Logger()
	ctx, cancel := context.WithCancel(context.Background())
	return &Links{
		cfg:         cfg,
		log:         log,
		incarnation: binary.BigEndian.Uint64(inc[:]),
		serverTLS:   server,
		clientTLS:   client,
		yamuxCfg: &yamux.Config{
			// Links are between authenticated nodes: the backlog is
			// generous, and a stream whose SYN is not acknowledged
			// within OpenTimeout means the peer is stuck.
			AcceptBacklog:          1024,
			EnableKeepAlive:        true,
			KeepAliveInterval:      cfg.KeepAliveInterval,
			ConnectionWriteTimeout: cfg.WriteTimeout,
			MaxStreamWindowSize:    cfg.StreamWindow,
			StreamOpenTimeout:      cfg.OpenTimeout,
			StreamCloseTimeout:     time.Minute,
			Logger:                 stdlog.New(levelWriter{log}, "", 0),
		},
		ctx:       ctx,
		cancel:    cancel,
		peers:     make(map[string]*peerState),
		all:       make(map[*link]struct{}),
		listeners: make(map[net.Listener]struct{}),
		perIP:     make(map[string]int),
	}, nil
}

// levelWriter passes yamux's log lines on at Debug: what matters of them
// (a link lost) the Links log themselves.
type levelWriter struct{ l zerolog.Logger }

func (w levelWriter) Write(p []byte) (int, error) {
	w.l.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Stats returns the counters.
func (l *Links) Stats() Stats {
	l.mu.Lock()
	n := 0
	for _, ps := range l.peers {
		if ps.link != nil && !ps.link.sess.IsClosed() {
			n++
		}
	}
	l.mu.Unlock()
	return Stats{
		Links:        n,
		StreamsOut:   l.streamsOut.Load(),
		StreamsIn:    l.streamsIn.Load(),
		Dials:        l.dials.Load(),
		DialFailures: l.dialFailures.Load(),
		Refused:      l.refused.Load(),
		BytesOut:     l.bytesForwarded.Load(),
		BytesIn:      l.bytesIn.Load(),
	}
}

// Open opens a stream to a tunnel's client connected to node, whose node
// port is addr (used only when a link must be dialed), and returns it once
// that node's OpenFunc has connected it: the caller then uses it as it uses
// a local session's stream (edge's Route.Open), HTTP/1.1 or raw bytes, Close
// half-closing it. A refusal of the owning node is returned as OpenFunc
// describes; a node that cannot be reached, or whose link is lost before it
// answers (twice: the first loss is retried on a new link), is an error
// wrapping ErrUnreachable; no answer within the deadline is
// context.DeadlineExceeded. ctx bounds the whole open, as does Config.OpenTimeout;
// its end abandons the stream, and the owning node's OpenFunc with it.
func (l *Links) Open(ctx context.Context, node, addr string, req *Request) (net.Conn, error) {
	if Forwarded(ctx) {
		return nil, ErrSecondHop
	}
	if node == l.cfg.Node {
		return nil, fmt.Errorf("peer: open on node %s: that is this node", node)
	}
	if err := checkNode(node); err != nil {
		return nil, fmt.Errorf("peer: open: %w", err)
	}
	if err := checkRequest(req); err != nil {
		return nil, fmt.Errorf("peer: open: request: %w", err)
	}
	for attempt := 0; ; attempt++ {
		lk, err := l.link(ctx, node, addr)
		if err != nil {
			return nil, err
		}
		conn, answered, err := l.openOn(ctx, lk, req)
		if err == nil {
			l.streamsOut.Add(1)
			return conn, nil
		}
		// A link lost before the owning node answered is replaced, once:
		// none of the caller's bytes has gone, so the request may go again.
		if answered || attempt > 0 || ctx.Err() != nil || !lk.sess.IsClosed() {
			return nil, err
		}
	}
}

// Forward is Open with the request's fields as arguments, the shape of
// the cluster registry's forwarder (edge.Forwarder): *Links is one.
func (l *Links) Forward(ctx context.Context, node, addr, session string, h *proto.StreamHeader) (net.Conn, error) {
	if h == nil {
		return nil, errors.New("peer: forward: no stream header")
	}
	return l.Open(ctx, node, addr, &Request{Header: *h, Session: session})
}

// openOn sends req on a new stream of lk and reads the answer. answered
// says the owning node answered (a refusal is final).
func (l *Links) openOn(ctx context.Context, lk *link, req *Request) (conn net.Conn, answered bool, err error) {
	st, err := lk.sess.OpenStream()
	if err != nil {
		return nil, false, fmt.Errorf("peer: node %s: open stream: %w: %w", lk.peer, ErrUnreachable, err)
	}
	timeout := timeoutOf(ctx, l.cfg.OpenTimeout)
	st.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	fail := func(op string, err error) error {
		stop()
		st.Close()
		var ne net.Error
		switch {
		case ctx.Err() != nil:
			err = ctx.Err()
		case errors.As(err, &ne) && ne.Timeout():
			err = context.DeadlineExceeded
		case lk.sess.IsClosed():
			err = fmt.Errorf("%w: link lost: %w", ErrUnreachable, err)
		}
		return fmt.Errorf("peer: node %s: %s: %w", lk.peer, op, err)
	}
	if err := writeFrame(st, wireRequest{Request: *req, TimeoutMS: timeout.Milliseconds()}); err != nil {
		return nil, false, fail("send request", err)
	}
	var a answer
	if err := readFrame(st, &a); err != nil {
		return nil, false, fail("read answer", err)
	}
	if !a.OK {
		stop()
		st.Close()
		return nil, true, a.err(lk.peer)
	}
	if !stop() {
		st.Close()
		return nil, true, fmt.Errorf("peer: node %s: %w", lk.peer, ctx.Err())
	}
	st.SetDeadline(time.Time{})
	return st, true, nil
}

// link returns the link to node, dialing addr if there is none. Concurrent
// callers share one dial; each waits for it within its own ctx.
func (l *Links) link(ctx context.Context, node, addr string) (*link, error) {
	for dials := 0; ; {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, ErrClosed
		}
		ps := l.peers[node]
		if ps == nil {
			ps = &peerState{}
			l.peers[node] = ps
		}
		if lk := ps.link; lk != nil && !lk.sess.IsClosed() {
			l.mu.Unlock()
			return lk, nil
		}
		if ps.dialing == nil {
			if ps.dialErr != nil && time.Now().Before(ps.nextDial) {
				err := ps.dialErr
				l.mu.Unlock()
				return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, node, err)
			}
			if dials == 2 {
				// Two links made and lost at once: the node is there
				// but something ends every link; let the caller retry.
				l.mu.Unlock()
				return nil, fmt.Errorf("%w: %s: its links end as soon as they are made", ErrUnreachable, node)
			}
			dials++
			ps.dialing = make(chan struct{})
			l.wg.Add(1)
			go l.dial(node, addr, ps, ps.dialing)
		}
		done := ps.dialing
		l.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return nil, fmt.Errorf("peer: wait for the link to %s: %w", node, ctx.Err())
		}
	}
}

// dial makes a link to node at addr and adds it, then wakes the Opens
// waiting for it. It runs on the Links' context, not an Open's: one
// caller giving up does not cancel a dial others wait for.
func (l *Links) dial(node, addr string, ps *peerState, done chan struct{}) {
	defer l.wg.Done()
	l.dials.Add(1)
	lk, err := l.dialLink(node, addr)
	if err == nil {
		if l.start(lk) {
			l.add(lk)
		} else {
			err = ErrClosed
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// All of it before the waiters wake: they see the dial counted and
	// logged.
	ps.dialing = nil
	defer close(done)
	if err == nil {
		ps.dialErr, ps.backoff = nil, 0
		lk.log.Info().Msg("node link dialed")
		return
	}
	ps.dialErr = err
	ps.backoff = min(max(2*ps.backoff, l.cfg.RedialMin), l.cfg.RedialMax)
	ps.nextDial = time.Now().Add(ps.backoff)
	if !l.closed {
		l.dialFailures.Add(1)
		// At most one line per redial wait: bounded by RedialMin.
		l.log.Warn().Err(err).Str("peer", node).Str("addr", addr).Dur("retry_after", ps.backoff).Msg("node link dial failed")
	}
}

// dialLink dials addr and authenticates both ways.
func (l *Links) dialLink(node, addr string) (*link, error) {
	dctx, cancel := context.WithTimeout(l.ctx, l.cfg.DialTimeout)
	raw, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	tc := tls.Client(mux.WireConn(raw), l.clientTLS)
	tc.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout))
	stop := context.AfterFunc(l.ctx, func() { tc.SetDeadline(time.Now()) })
	peer, inc, err := l.dialHandshake(tc, node)
	if err == nil && !stop() {
		err = ErrClosed
	}
	stop()
	if err != nil {
		tc.Close()
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	tc.SetDeadline(time.Time{})
	sess, err := yamux.Client(mux.FrameWriter(tc), l.yamuxCfg)
	if err != nil {
		tc.Close()
		return nil, fmt.Errorf("%s: start session: %w", addr, err)
	}
	return l.newLink(peer, l.cfg.Node, inc, tc, sess), nil
}

func (l *Links) dialHandshake(tc *tls.Conn, node string) (string, uint64, error) {
	if err := tc.Handshake(); err != nil {
		return "", 0, fmt.Errorf("tls handshake: %w", err)
	}
	ekm, err := keyingMaterial(tc)
	if err != nil {
		return "", 0, err
	}
	if err := writeHello(tc, l.cfg.Secret, ekm, hello{from: l.cfg.Node, to: node, incarnation: l.incarnation}); err != nil {
		return "", 0, err
	}
	peer, inc, err := readReply(tc, l.cfg.Secret, ekm)
	if err != nil {
		return "", 0, err
	}
	if peer != node {
		return "", 0, fmt.Errorf("the node there is %q, not %q", printable(peer), node)
	}
	return peer, inc, nil
}

func (l *Links) newLink(peer, dialer string, inc uint64, conn net.Conn, sess *yamux.Session) *link {
	return &link{
		peer: peer, dialer: dialer, incarnation: inc, sess: sess,
		log: l.log.With().Str("peer", peer).Str("remote_addr", conn.RemoteAddr().String()).Str("dialer", dialer).Logger(),
	}
}

// start serves lk's incoming streams until its session ends. It reports
// false, having closed lk, when the Links are closed.
func (l *Links) start(lk *link) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		lk.sess.Close()
		return false
	}
	l.all[lk] = struct{}{}
	l.wg.Add(1)
	go l.serveLink(lk)
	return true
}

// add makes lk the kept link to its node, unless the node has another that
// wins the tie-break, which then stays and lk is retired.
//
// A node dials only when it has no link, so a second link between the same
// two nodes means one of three things. The other node restarted (another
// incarnation) or dropped the old link (it dialed both): the new one is
// kept. Or both nodes dialed at once: each keeps the link dialed by the
// node whose name sorts first, so both keep the same one. That last rule
// would keep forever a link that is dead on this side only, so when it
// favours the old link, the old link must answer a ping first: a node that
// answers on it still holds it, and applies the same rule.
func (l *Links) add(lk *link) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return
		}
		ps := l.peers[lk.peer]
		if ps == nil {
			ps = &peerState{}
			l.peers[lk.peer] = ps
		}
		old := ps.link
		switch {
		case old == nil || old.sess.IsClosed():
			ps.link = lk
			l.mu.Unlock()
			return
		case old.incarnation != lk.incarnation:
			ps.link = lk
			l.mu.Unlock()
			old.log.Info().Msg("node restarted: its old link is closed")
			old.sess.Close()
			return
		case old.dialer == lk.dialer || lk.dialer == min(l.cfg.Node, lk.peer):
			ps.link = lk
			l.mu.Unlock()
			l.retire(old)
			return
		}
		l.mu.Unlock()
		if _, err := old.sess.Ping(); err == nil {
			l.retire(lk)
			return
		}
		old.log.Info().Msg("node link dead: it did not answer a ping")
		old.sess.Close()
	}
}

// retire closes lk once it carries no stream: another link to its node is
// kept. It waits a handshake's time first, in which the other node sees
// the kept link too and stops opening streams on lk.
func (l *Links) retire(lk *link) {
	lk.log.Debug().Msg("node link retired: another link to the node is kept")
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.wg.Add(1)
	go l.closeWhenIdle(lk)
}

func (l *Links) closeWhenIdle(lk *link) {
	defer l.wg.Done()
	grace := time.NewTimer(l.cfg.HandshakeTimeout)
	defer grace.Stop()
	select {
	case <-grace.C:
	case <-lk.sess.CloseChan():
		return
	case <-l.ctx.Done():
		return
	}
	tick := time.NewTicker(retirePoll)
	defer tick.Stop()
	for lk.sess.NumStreams() > 0 {
		select {
		case <-tick.C:
		case <-lk.sess.CloseChan():
			return
		case <-l.ctx.Done():
			return
		}
	}
	lk.sess.Close()
}

// serveLink accepts the streams the other node opens on lk, until the
// session ends; then it drops lk.
func (l *Links) serveLink(lk *link) {
	defer l.wg.Done()
	for {
		st, err := lk.sess.AcceptStream()
		if err != nil {
			break
		}
		// wg.Add while Close waits is sound: this goroutine's own count
		// keeps the group above zero.
		l.wg.Add(1)
		go l.serveStream(lk, st)
	}
	lk.sess.Close()
	lk.end()
	l.mu.Lock()
	delete(l.all, lk)
	kept := false
	if ps := l.peers[lk.peer]; ps != nil && ps.link == lk {
		ps.link, kept = nil, true
	}
	closed := l.closed
	l.mu.Unlock()
	if kept && !closed {
		lk.log.Info().Msg("node link lost")
	}
}

// serveStream serves one stream another node opened: reads its request,
// opens the local stream with OpenFunc, answers, then pipes both.
func (l *Links) serveStream(lk *link, st *yamux.Stream) {
	defer l.wg.Done()
	st.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout))
	var req wireRequest
	if err := readFrame(st, &req); err != nil {
		lk.log.Debug().Err(err).Msg("forwarded stream without a request")
		st.Close()
		return
	}
	if err := checkRequest(&req.Request); err != nil {
		lk.log.Warn().Err(err).Msg("malformed forwarded request")
		writeFrame(st, answer{Error: &proto.Error{Code: proto.CodeBadRequest, Message: "malformed request"}})
		st.Close()
		return
	}
	st.SetDeadline(time.Time{})
	timeout := min(max(time.Duration(req.TimeoutMS)*time.Millisecond, time.Millisecond), l.cfg.OpenTimeout)
	ctx, cancel := context.WithTimeout(l.ctx, timeout)
	defer cancel()
	ctx = context.WithValue(ctx, forwardedKey{}, lk.peer)

	// The forwarding node sends nothing more until it has the answer, so
	// a read that returns means it gave up (its Open's context ended):
	// the local open is abandoned with it.
	var abandoned atomic.Bool
	watched := make(chan struct{})
	go l.watchAbandon(st, cancel, &abandoned, watched)
	conn, err := l.openLocal(ctx, &req.Request)
	st.SetReadDeadline(time.Unix(1, 0))
	<-watched
	st.SetReadDeadline(time.Time{})
	if abandoned.Load() {
		if conn != nil {
			conn.Close()
		}
		st.Close()
		lk.log.Debug().Str("tunnel", req.Header.Tunnel).Msg("forwarded open abandoned by the forwarding node")
		return
	}
	st.SetWriteDeadline(time.Now().Add(l.cfg.WriteTimeout))
	if err != nil {
		lk.log.Debug().Err(err).Str("tunnel", req.Header.Tunnel).Msg("forwarded open refused")
		writeFrame(st, refusal(err))
		st.Close()
		return
	}
	if err := writeFrame(st, answer{OK: true}); err != nil {
		conn.Close()
		st.Close()
		return
	}
	st.SetWriteDeadline(time.Time{})
	if !lk.track(conn) {
		st.Close()
		return
	}
	defer lk.untrack(conn)
	l.streamsIn.Add(1)
	in, out := mux.PipeStream(st, conn, req.Header.CloseOnFIN)
	l.bytesIn.Add(uint64(in))
	l.bytesForwarded.Add(uint64(out))
}

// watchAbandon reads st until the read deadline stops it; any other end
// of the read means the forwarding node gave up.
func (l *Links) watchAbandon(st *yamux.Stream, cancel context.CancelFunc, abandoned *atomic.Bool, done chan<- struct{}) {
	defer close(done)
	var b [1]byte
	_, err := st.Read(b[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return
	}
	abandoned.Store(true)
	cancel()
}

func (l *Links) openLocal(ctx context.Context, req *Request) (net.Conn, error) {
	if l.cfg.Open == nil {
		return nil, &proto.Error{Code: proto.CodeUnknownTunnel, Message: "this node serves no forwarded streams"}
	}
	return l.cfg.Open(ctx, req)
}

// Serve accepts other nodes' connections on ln, the node port, until Close;
// then it returns nil. Each connection must finish its TLS handshake and
// prove the cluster secret within HandshakeTimeout, and at most
// MaxHandshakes (MaxHandshakesPerIP from one address) may be doing so at
// once; the rest are closed. An accept error other than ln's closing (no
// file descriptor left) pauses the loop, up to a second, rather than
// ending it. Serve closes ln when it returns. It may be called for several
// listeners.
func (l *Links) Serve(ln net.Listener) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	l.listeners[ln] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.listeners, ln)
		l.mu.Unlock()
		ln.Close()
	}()
	var pause time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if l.ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("peer: accept: %w", err)
			}
			// Out of file descriptors, or a connection reset before it
			// was accepted: whoever reaches the port can cause these, so
			// they must not stop the node port. Wait a little, as
			// net/http does, and go on.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			if ok, suppressed := l.refusedLog.allow(); ok {
				l.log.Warn().Err(err).Int("suppressed", suppressed).Dur("retry_after", pause).Msg("node port accept failed")
			}
			select {
			case <-time.After(pause):
			case <-l.ctx.Done():
				return nil
			}
			continue
		}
		pause = 0
		if ip, ok := l.admit(c); ok {
			go l.accept(c, ip)
		}
	}
}

// admit counts c among the handshakes in progress, or closes it when
// there are too many.
func (l *Links) admit(c net.Conn) (string, bool) {
	ip := c.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	l.mu.Lock()
	over := l.handshakes >= l.cfg.MaxHandshakes || l.perIP[ip] >= l.cfg.MaxHandshakesPerIP
	if l.closed || over {
		l.mu.Unlock()
		if over { // counted before the close, which the other end sees
			l.refused.Add(1)
			l.logRefused(c, errors.New("too many connections in their handshake"))
		}
		c.Close()
		return "", false
	}
	l.handshakes++
	l.perIP[ip]++
	l.wg.Add(1)
	l.mu.Unlock()
	return ip, true
}

// accept authenticates an incoming connection and makes it a link.
func (l *Links) accept(c net.Conn, ip string) {
	defer l.wg.Done()
	tc := tls.Server(mux.WireConn(c), l.serverTLS)
	lk, status, err := l.acceptHandshake(tc)
	l.mu.Lock()
	l.handshakes--
	if l.perIP[ip]--; l.perIP[ip] == 0 {
		delete(l.perIP, ip)
	}
	l.mu.Unlock()
	if err != nil {
		// Counted and logged before the refusal leaves, so that whoever
		// sees the refusal sees it counted. A handshake cut by Close is
		// not a refusal.
		var ne net.Error
		if cut := l.ctx.Err() != nil && (errors.Is(err, ErrClosed) || errors.As(err, &ne) && ne.Timeout()); !cut {
			l.refused.Add(1)
			l.logRefused(c, err)
		}
		if status != statusOK {
			writeReply(tc, status, nil, nil, "", 0)
		}
		tc.Close()
		return
	}
	if l.start(lk) {
		lk.log.Info().Msg("node link accepted")
		l.add(lk)
	}
}

// acceptHandshake runs the TLS handshake and checks the dialer's proof.
// On an error, status is the refusal to send (statusOK: none).
func (l *Links) acceptHandshake(tc *tls.Conn) (*link, byte, error) {
	tc.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout))
	stop := context.AfterFunc(l.ctx, func() { tc.SetDeadline(time.Now()) })
	defer stop()
	if err := tc.Handshake(); err != nil {
		return nil, statusOK, fmt.Errorf("tls handshake: %w", err)
	}
	ekm, err := keyingMaterial(tc)
	if err != nil {
		return nil, statusOK, err
	}
	h, err := readHello(tc, l.cfg.Secret, ekm)
	if err != nil {
		if errors.Is(err, ErrBadSecret) {
			return nil, statusBadSecret, err
		}
		return nil, statusOK, err
	}
	if h.to != l.cfg.Node || h.from == l.cfg.Node || checkNode(h.from) != nil {
		return nil, statusWrongNode, fmt.Errorf("node %q dialed node %q: this is %q", printable(h.from), printable(h.to), l.cfg.Node)
	}
	if err := writeReply(tc, statusOK, l.cfg.Secret, ekm, l.cfg.Node, l.incarnation); err != nil {
		return nil, statusOK, err
	}
	if !stop() {
		return nil, statusOK, ErrClosed
	}
	tc.SetDeadline(time.Time{})
	sess, err := yamux.Server(mux.FrameWriter(tc), l.yamuxCfg)
	if err != nil {
		return nil, statusOK, fmt.Errorf("start session: %w", err)
	}
	return l.newLink(h.from, h.from, h.incarnation, tc, sess), statusOK, nil
}

// logRefused logs a connection refused before authentication, within the
// refusals' log budget: whoever reaches the node port decides how often
// this happens, not how much we log.
func (l *Links) logRefused(c net.Conn, err error) {
	ok, suppressed := l.refusedLog.allow()
	if !ok {
		return
	}
	ev := l.log.Warn().Err(err).Str("remote_addr", c.RemoteAddr().String())
	if suppressed > 0 {
		ev = ev.Int("suppressed", suppressed)
	}
	if errors.Is(err, ErrBadSecret) {
		ev.Msg("node link refused: wrong cluster secret")
		return
	}
	ev.Msg("node link refused")
}

// Close stops every Serve, closes every link (and so every forwarded
// stream, both ways) and waits for the Links' goroutines. Opens waiting
// for a dial fail with ErrClosed. It is safe to call more than once and
// concurrently.
func (l *Links) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		lns := make([]net.Listener, 0, len(l.listeners))
		for ln := range l.listeners {
			lns = append(lns, ln)
		}
		links := make([]*link, 0, len(l.all))
		for lk := range l.all {
			links = append(links, lk)
		}
		l.mu.Unlock()
		l.cancel()
		for _, ln := range lns {
			ln.Close()
		}
		for _, lk := range links {
			lk.sess.Close()
		}
		l.wg.Wait()
	})
	return nil
}

// Log budget for refusals: logBurst lines, then one per logEvery, each
// saying how many were suppressed since the last.
const (
	logBurst = 5
	logEvery = 10 * time.Second
)

type logLimit struct {
	mu         sync.Mutex
	used       int
	last       time.Time
	suppressed int
}

func (l *logLimit) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.used < logBurst {
		l.used++
		l.last = now
		return true, 0
	}
	if now.Sub(l.last) >= logEvery {
		n := l.suppressed
		l.last, l.suppressed = now, 0
		return true, n
	}
	l.suppressed++
	return false, 0
}
