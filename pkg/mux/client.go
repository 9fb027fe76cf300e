package mux

import (
	"context"
	"crypto/rand"
	"encoding/base64"
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

// ErrServerGoAway is returned by Serve when tunneld said it is draining
// (a restart, usually): the caller should connect again.
var ErrServerGoAway = errors.New("mux: server is draining")

// ErrSessionLost is returned by Serve when the connection to tunneld ended
// without a GoAway: a network failure or a crashed server.
var ErrSessionLost = errors.New("mux: session lost")

// ClientSession is tunnel's end of the session with tunneld.
//
// Client returns it after a successful handshake; call Serve to handle the
// streams tunneld opens, and Close when done.
type ClientSession struct {
	cfg     Config
	log     zerolog.Logger
	sess    *guardedSession
	ctrl    *yamux.Stream
	welcome *proto.Welcome

	streamLog  logLimit // warnings about single streams: tunneld chooses how many
	oddMessage bool     // an unexpected control message was logged

	ctrlMu sync.Mutex // serialises writes on ctrl

	goAwayOnce sync.Once
	goAway     chan struct{}

	active     atomic.Int64                  // streams being handled
	maxStreams int                           // bound on active
	onStream   func(StreamEvent)             // set before Serve; nil: no events
	copier     func(StreamInfo) StreamCopier // set before Serve; nil: raw copies
	copied     map[string]bool               // the tunnels copier is for (HTTP ones)

	// cut ends when the streams must stop whatever their local service
	// does (the drain timed out, or Close): it cancels their dials and
	// closes their local connections. Closing the session alone ends only
	// the stream side, and a local service that neither answers nor
	// closes would keep its copy, and the drain, waiting forever.
	cut        context.Context
	cutStreams context.CancelFunc

	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Client starts tunnel's side of a session on conn, an established TLS
// connection: it opens the control stream, sends hello and waits for the
// answer, all within cfg.HandshakeTimeout. A refusal by the server is
// returned as a *proto.Error (test with errors.As and look at its Code).
// Client owns conn: on error it is closed. An anonymous hello (no Token)
// without an OwnerKey is sent with this process's (see ownerKey).
func Client(ctx context.Context, conn net.Conn, hello *proto.Hello, cfg Config) (*ClientSession, error) {
	if err := cfg.Validate(); err != nil {
		conn.Close()
		return nil, err
	}
	log := cfg.Logger
	maxStreams := cfg.clientMaxStreams(len(hello.Tunnels))
	sess, err := startSession(conn, cfg, log, false, maxStreams)
	if err != nil {
		return nil, fmt.Errorf("start yamux client: %w", err)
	}
	ctrl, err := sess.OpenStream()
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("open control stream: %w", err)
	}
	ctrl.SetDeadline(time.Now().Add(cfg.HandshakeTimeout))
	stop := context.AfterFunc(ctx, func() { ctrl.SetDeadline(time.Now()) })
	defer stop()
	if hello.Token == "" && hello.OwnerKey == "" {
		h := *hello
		h.OwnerKey = ownerKey()
		hello = &h
	}
	if err := proto.WriteFrame(ctrl, hello); err != nil {
		sess.Close()
		return nil, fmt.Errorf("send hello: %w", handshakeErr(ctx, err))
	}
	welcome, err := proto.ReadAs[*proto.Welcome](ctrl)
	if err != nil {
		sess.Close()
		var perr *proto.Error
		if errors.As(err, &perr) {
			return nil, perr
		}
		return nil, fmt.Errorf("read welcome: %w", handshakeErr(ctx, err))
	}
	if len(welcome.Tunnels) != len(hello.Tunnels) {
		sess.Close()
		return nil, fmt.Errorf("read welcome: %w: %d tunnels granted, %d asked for",
			proto.ErrMalformed, len(welcome.Tunnels), len(hello.Tunnels))
	}
	if !stop() {
		sess.Close()
		return nil, ctx.Err()
	}
	ctrl.SetDeadline(time.Time{})
	cut, cutStreams := context.WithCancel(context.Background())
	c := &ClientSession{
		cut:        cut,
		cutStreams: cutStreams,
		cfg:        cfg,
		maxStreams: maxStreams,
		log:        log.With().Str("session_id", welcome.SessionID).Logger(),
		sess:       sess,
		ctrl:       ctrl,
		welcome:    welcome,
		goAway:     make(chan struct{}),
	}
	c.wg.Add(1)
	go c.controlLoop()
	return c, nil
}

// ownerKey is this process's proto.Hello.OwnerKey, sent by every anonymous
// Hello that has none: made once, so that a reconnect, from whatever
// address, gets the names back, and nobody else can.
var ownerKey = sync.OnceValue(func() string {
	var b [24]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
})

func handshakeErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, yamux.ErrTimeout) {
		return fmt.Errorf("no answer from server: %w", context.DeadlineExceeded)
	}
	return err
}

// Welcome is the server's answer to the Hello: session id and public URLs.
func (c *ClientSession) Welcome() *proto.Welcome { return c.welcome }

// controlLoop reads the control stream until it ends.
func (c *ClientSession) controlLoop() {
	defer c.wg.Done()
	for {
		m, err := proto.ReadFrame(c.ctrl)
		if err != nil {
			if !isEnded(err) {
				c.log.Warn().Err(err).Msg("control stream broken")
			}
			c.sess.Close()
			return
		}
		switch m := m.(type) {
		case *proto.GoAway:
			c.goAwayOnce.Do(func() {
				c.log.Info().Str("reason", Printable(m.Reason, maxLoggedString)).Msg("server is draining")
				close(c.goAway)
			})
		case *proto.Ping:
			c.ctrlMu.Lock()
			err := proto.WriteFrame(c.ctrl, &proto.Pong{Seq: m.Seq})
			c.ctrlMu.Unlock()
			if err != nil {
				c.sess.Close()
				return
			}
		case *proto.Pong:
		default:
			if !c.oddMessage {
				c.oddMessage = true // once: tunneld could send them forever
				c.log.Warn().Str("type", fmt.Sprintf("%T", m)).Msg("unexpected message on control stream; ignored from now on")
			}
		}
	}
}

// Serve handles the streams tunneld opens until ctx ends or the session
// does. targets maps each granted tunnel name (see Welcome) to the local
// address, host:port, its streams are piped to. A stream naming any other
// tunnel is refused.
//
// When ctx ends, Serve tells the server it is draining, lets in-flight
// streams finish within cfg.DrainTimeout, and returns nil. When the session
// ends it returns ErrServerGoAway if the server had said GoAway (a planned
// restart), or an error wrapping ErrSessionLost. A server's GoAway does not
// stop Serve: the server still opens streams for requests in flight until
// it closes the session; watch GoAway to connect a new session meanwhile.
// Serve does not close the session; call Close after it returns.
func (c *ClientSession) Serve(ctx context.Context, targets map[string]string) error {
	var streams sync.WaitGroup
	var err error
accept:
	for {
		st, aerr := c.sess.AcceptStreamWithContext(ctx)
		if aerr != nil {
			switch {
			case ctx.Err() != nil:
				c.sendGoAway("client stopping")
			case isGoAway(c.goAway):
				err = ErrServerGoAway
			default:
				err = fmt.Errorf("%w: %v", ErrSessionLost, aerr)
			}
			break accept
		}
		if c.active.Load() >= int64(c.maxStreams) {
			// Normally the guard ends the session first (it counts open
			// streams); this bounds the handlers even while a finished one
			// still waits for its stream to be reclaimed. No dial, no
			// goroutine: the stream is just closed.
			c.warnStream(c.log.Warn().Int("max_streams", c.maxStreams), "too many streams at once; refused")
			st.Close()
			continue
		}
		c.active.Add(1)
		streams.Add(1)
		go c.handleStream(&streams, st, targets)
	}
	c.drain(&streams)
	return err
}

// GoAway is closed when the server has said it is draining.
func (c *ClientSession) GoAway() <-chan struct{} { return c.goAway }

func isGoAway(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// drain waits for in-flight streams, cutting them off after DrainTimeout:
// then the session and every stream's local connection are closed, so it
// returns soon after the timeout whatever the local services do.
func (c *ClientSession) drain(streams *sync.WaitGroup) {
	done := make(chan struct{})
	go func() {
		streams.Wait()
		close(done)
	}()
	t := time.NewTimer(c.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		c.log.Warn().Int64("streams", c.active.Load()).Msg("drain timeout; closing in-flight streams")
		c.cutStreams()
		c.sess.Close()
		<-done
	}
}

func (c *ClientSession) sendGoAway(reason string) {
	c.ctrlMu.Lock()
	defer c.ctrlMu.Unlock()
	c.ctrl.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
	if err := proto.WriteFrame(c.ctrl, &proto.GoAway{Reason: reason}); err != nil && !isEnded(err) {
		c.log.Debug().Err(err).Msg("send goaway")
	}
}

// handleStream reads a stream's header, connects the tunnel's local target,
// acknowledges, and pipes until both directions are done.
func (c *ClientSession) handleStream(wg *sync.WaitGroup, st *yamux.Stream, targets map[string]string) {
	defer wg.Done()
	defer c.active.Add(-1)
	log := c.log.With().Uint32("stream_id", st.StreamID()).Logger()

	st.SetDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
	hdr, err := proto.ReadAs[*proto.StreamHeader](st)
	if err != nil {
		c.warnStream(log.Warn().Err(err), "bad stream header")
		st.Close()
		return
	}
	log = log.With().Str("host", Printable(hdr.Tunnel, maxLoggedString)).Logger()
	addr, ok := targets[hdr.Tunnel]
	if !ok {
		c.warnStream(log.Warn(), "stream for a tunnel this client does not serve; refused")
		perr := &proto.Error{Code: proto.CodeUnknownTunnel, Message: fmt.Sprintf("this client does not serve %q", hdr.Tunnel)}
		c.refuse(st, perr)
		c.event(StreamEvent{Tunnel: hdr.Tunnel, StreamID: st.StreamID(), Visitor: hdr.RemoteAddr, Closed: true, Err: perr})
		return
	}
	d := net.Dialer{Timeout: c.cfg.DialTimeout}
	local, err := d.DialContext(c.cut, "tcp", addr)
	if err != nil {
		if c.cut.Err() != nil {
			log.Debug().Err(err).Msg("dial canceled: the session is stopping")
		} else {
			c.warnStream(log.Warn().Err(err), "local service unreachable")
		}
		c.refuse(st, &proto.Error{Code: proto.CodeLocalUnreachable, Message: "the local service refused the connection"})
		c.event(StreamEvent{Tunnel: hdr.Tunnel, StreamID: st.StreamID(), Visitor: hdr.RemoteAddr, Closed: true, Err: err})
		return
	}
	if err := proto.WriteFrame(st, &proto.StreamAck{}); err != nil {
		local.Close()
		st.Close()
		return
	}
	st.SetDeadline(time.Time{})
	stop := context.AfterFunc(c.cut, func() { local.Close() })
	defer stop()
	start := time.Now()
	ev := StreamEvent{Tunnel: hdr.Tunnel, StreamID: st.StreamID(), Visitor: hdr.RemoteAddr}
	c.event(ev)
	var cp StreamCopier
	if c.copier != nil && c.copied[hdr.Tunnel] {
		cp = c.copier(StreamInfo{Tunnel: hdr.Tunnel, Target: addr, StreamID: st.StreamID(), Visitor: hdr.RemoteAddr})
		if cp != nil {
			cp = containedCopier{cp: cp, log: log}
		}
	}
	in, out := pipe(st, local, hdr.CloseOnFIN, cp)
	ev.Closed, ev.BytesIn, ev.BytesOut, ev.Duration = true, in, out, time.Since(start)
	c.event(ev)
	log.Debug().Int64("bytes_in", in).Int64("bytes_out", out).Dur("duration", ev.Duration).Msg("stream closed")
}

// warnStream logs a warning about one stream within the session's budget
// for them (logLimit): tunneld decides how many streams there are.
func (c *ClientSession) warnStream(ev *zerolog.Event, msg string) {
	ok, n := c.streamLog.allow()
	if !ok {
		ev.Discard()
		return
	}
	if n > 0 {
		ev = ev.Int("suppressed", n)
	}
	ev.Msg(msg)
}

func (c *ClientSession) event(ev StreamEvent) {
	if c.onStream != nil {
		c.onStream(ev)
	}
}

func (c *ClientSession) refuse(st *yamux.Stream, e *proto.Error) {
	_ = proto.WriteFrame(st, e)
	st.Close()
}

// Close ends the session and every stream on it, with the streams' local
// connections, and waits for the session's goroutines. It is safe to call more than once and concurrently.
func (c *ClientSession) Close() error {
	c.closeOnce.Do(func() {
		c.cutStreams()
		if err := c.sess.Close(); err != nil && !isEnded(err) {
			c.closeErr = err
		}
		c.wg.Wait()
	})
	return c.closeErr
}

// Done is closed when the session has ended.
func (c *ClientSession) Done() <-chan struct{} { return c.sess.CloseChan() }
