package mux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/proto"
)

// ServerSession is tunneld's end of one client connection.
//
// Server returns it after reading the client's Hello; the caller must then
// call Accept or Reject, and eventually Close. Open and GoAway are safe to
// call from many goroutines.
type ServerSession struct {
	cfg  Config
	log  zerolog.Logger
	conn net.Conn
	sess *guardedSession
	ctrl *yamux.Stream

	stopHandshake func() bool // cancels the handshake deadline's context hook

	ctrlMu sync.Mutex // serialises writes on ctrl

	drainOnce sync.Once
	draining  chan struct{}
	onDrain   func() // see Notify
	onDone    func()

	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Server starts tunneld's side of a session on conn, an established TLS
// connection, and reads the client's Hello within cfg.HandshakeTimeout.
//
// A Hello that is malformed or of another protocol version is answered with
// an Error frame and closes the session; the returned error then wraps a
// proto sentinel (ErrMalformed, ErrVersionMismatch, ...). On success the
// handshake deadline keeps running until Accept or Reject. Server owns conn
// from the moment it is called: on error conn is closed.
func Server(ctx context.Context, conn net.Conn, cfg Config) (*ServerSession, *proto.Hello, error) {
	if err := cfg.Validate(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	log := cfg.Logger.With().Str("remote_addr", conn.RemoteAddr().String()).Logger()
	sess, err := startSession(conn, cfg, log, true, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("start yamux server: %w", err)
	}
	deadline := time.Now().Add(cfg.HandshakeTimeout)
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	ctrl, err := sess.AcceptStreamWithContext(hctx)
	if err != nil {
		sess.Close()
		return nil, nil, fmt.Errorf("accept control stream: %w", err)
	}
	s := &ServerSession{
		cfg:      cfg,
		log:      log,
		conn:     conn,
		sess:     sess,
		ctrl:     ctrl,
		draining: make(chan struct{}),
	}
	ctrl.SetDeadline(deadline)
	// The parent context ending aborts the handshake at once.
	s.stopHandshake = context.AfterFunc(ctx, func() { ctrl.SetDeadline(time.Now()) })

	hello, err := proto.ReadAs[*proto.Hello](ctrl)
	if err != nil {
		err = fmt.Errorf("read hello: %w", err)
		if errors.Is(err, proto.ErrMalformed) || errors.Is(err, proto.ErrUnknownType) ||
			errors.Is(err, proto.ErrFrameTooLarge) || errors.Is(err, proto.ErrUnexpected) ||
			errors.Is(err, proto.ErrTruncatedFrame) {
			s.Reject(&proto.Error{Code: proto.CodeBadRequest, Message: err.Error()})
		} else {
			s.Close()
		}
		return nil, nil, err
	}
	if err := hello.CheckVersion(); err != nil {
		s.Reject(&proto.Error{Code: proto.CodeUnsupportedVersion, Message: err.Error()})
		return nil, nil, err
	}
	return s, hello, nil
}

// Notify registers functions the control loop calls: onDrain when the
// client says GoAway (after Draining is closed), onDone once the session has
// ended and the control loop has stopped. Either may be nil. Call it before
// Accept. They spare the caller a goroutine parked on Draining and Done for
// the session's whole life: tunneld holds thousands of idle sessions.
func (s *ServerSession) Notify(onDrain, onDone func()) {
	s.onDrain, s.onDone = onDrain, onDone
}

// Accept sends Welcome, ends the handshake deadline and starts serving the
// control stream. After Accept the server may Open streams.
func (s *ServerSession) Accept(w *proto.Welcome) error {
	s.ctrlMu.Lock()
	err := proto.WriteFrame(s.ctrl, w)
	s.ctrlMu.Unlock()
	if err != nil {
		s.Close()
		return fmt.Errorf("send welcome: %w", err)
	}
	if !s.stopHandshake() {
		s.Close()
		return fmt.Errorf("send welcome: %w", context.Canceled)
	}
	s.ctrl.SetDeadline(time.Time{})
	s.sess.guard.authenticated()
	s.wg.Add(1)
	go s.controlLoop()
	return nil
}

// Reject tells the client why it is refused and closes the session. It waits
// briefly for the client to hang up first, so the refusal is not lost to a
// TCP reset.
func (s *ServerSession) Reject(e *proto.Error) error {
	s.stopHandshake()
	s.ctrl.SetDeadline(time.Now().Add(time.Second))
	s.ctrlMu.Lock()
	err := proto.WriteFrame(s.ctrl, e)
	s.ctrlMu.Unlock()
	if err == nil {
		s.ctrl.Close()
		// The client closes the session after reading the refusal.
		_, _ = io.Copy(io.Discard, s.ctrl)
	}
	s.Close()
	if err != nil {
		return fmt.Errorf("send refusal: %w", err)
	}
	return nil
}

// controlLoop serves the control stream: answers pings, notes the client's
// GoAway, and ends the session when the client closes the stream.
func (s *ServerSession) controlLoop() {
	defer func() {
		s.sess.Close()
		s.wg.Done()
		// After wg.Done, so that onDone may call Close.
		if s.onDone != nil {
			s.onDone()
		}
	}()
	for {
		m, err := proto.ReadFrame(s.ctrl)
		if err != nil {
			if !isEnded(err) {
				s.log.Warn().Err(err).Msg("control stream broken")
			}
			return
		}
		switch m := m.(type) {
		case *proto.Ping:
			s.ctrlMu.Lock()
			err = proto.WriteFrame(s.ctrl, &proto.Pong{Seq: m.Seq})
			s.ctrlMu.Unlock()
			if err != nil {
				return
			}
		case *proto.Pong:
		case *proto.GoAway:
			s.drainOnce.Do(func() {
				// Once: later GoAways change nothing and are not logged.
				s.log.Info().Str("reason", Printable(m.Reason, maxLoggedString)).Msg("client is draining")
				close(s.draining)
				if s.onDrain != nil {
					s.onDrain()
				}
			})
		default:
			s.log.Warn().Str("type", fmt.Sprintf("%T", m)).Msg("unexpected message on control stream")
			return
		}
	}
}

// Open opens a data stream for a visitor, sends its header and waits for the
// client to connect the tunnel's local target. A refusal from the client is
// returned as a *proto.Error (test with errors.As). ctx bounds the whole
// exchange, as does cfg.HandshakeTimeout.
func (s *ServerSession) Open(ctx context.Context, hdr *proto.StreamHeader) (net.Conn, error) {
	st, err := s.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	deadline := time.Now().Add(s.cfg.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	st.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	if err := proto.WriteFrame(st, hdr); err != nil {
		stop()
		st.Close()
		return nil, s.openErr(ctx, "send stream header", err)
	}
	if _, err := proto.ReadAs[*proto.StreamAck](st); err != nil {
		stop()
		st.Close()
		return nil, s.openErr(ctx, "read stream ack", err)
	}
	if !stop() {
		st.Close()
		return nil, ctx.Err()
	}
	st.SetDeadline(time.Time{})
	return st, nil
}

func (s *ServerSession) openErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, ctx.Err())
	}
	if errors.Is(err, yamux.ErrTimeout) {
		return fmt.Errorf("%s: %w", op, context.DeadlineExceeded)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// GoAway tells the client that this server is draining: it should reconnect
// and expect no new streams on this session.
func (s *ServerSession) GoAway(reason string) error {
	s.ctrlMu.Lock()
	defer s.ctrlMu.Unlock()
	s.ctrl.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	defer s.ctrl.SetWriteDeadline(time.Time{})
	if err := proto.WriteFrame(s.ctrl, &proto.GoAway{Reason: reason}); err != nil {
		return fmt.Errorf("send goaway: %w", err)
	}
	return nil
}

// Done is closed when the session has ended, for any reason.
func (s *ServerSession) Done() <-chan struct{} { return s.sess.CloseChan() }

// Draining is closed when the client has said GoAway: it is stopping and
// should be given no new streams.
func (s *ServerSession) Draining() <-chan struct{} { return s.draining }

// NumStreams is the number of open streams, the control stream included.
func (s *ServerSession) NumStreams() int { return s.sess.NumStreams() }

// RemoteAddr is the client's address.
func (s *ServerSession) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Close ends the session and every stream on it, and waits for the session's
// goroutines. It is safe to call more than once and concurrently.
func (s *ServerSession) Close() error {
	s.closeOnce.Do(func() {
		// Unhook from the caller's context: it usually outlives the session.
		s.stopHandshake()
		if err := s.sess.Close(); err != nil && !isEnded(err) {
			s.closeErr = err
		}
		s.wg.Wait()
	})
	return s.closeErr
}

// IsClosed reports errors that mean a session or stream was closed or shut
// down (or the context using it canceled): the connection is gone, not
// broken. The edge answers a visitor's request that failed so with "tunnel
// offline".
func IsClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) ||
		errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, yamux.ErrStreamClosed)
}

// isEnded reports errors that are expected when a session or stream ends:
// IsClosed's, plus the peer's end of stream and reset. Such errors are not
// logged. It is wider than IsClosed on purpose: for the edge, a stream the
// client ended (EOF, reset) means its local service failed to answer, not
// that the tunnel is offline.
func isEnded(err error) bool {
	return IsClosed(err) || errors.Is(err, io.EOF) || errors.Is(err, yamux.ErrConnectionReset)
}
