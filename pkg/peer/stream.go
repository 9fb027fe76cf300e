package peer

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// Each forwarded stream starts with one frame from the forwarding node (the
// request) and one from the owning node (the answer), then carries raw bytes
// both ways. A frame is a big-endian uint16 length and that many bytes of
// JSON, at most maxFrame: a request is a StreamHeader and a session ID,
// whose fields proto bounds far below it, and an answer's message is cut
// to maxMessage.
const (
	maxFrame   = 8 << 10
	maxMessage = 1024
)

// wireRequest is a Request on the wire, with the forwarding node's
// deadline, so that the owning node gives up when it does.
type wireRequest struct {
	Request
	TimeoutMS int64 `json:"timeout_ms"`
}

// answer is the owning node's reply. OK, or an error: a *proto.Error, or
// the kind of a local error that the forwarding node must see as the same
// (Cause).
type answer struct {
	OK    bool         `json:"ok,omitempty"`
	Error *proto.Error `json:"error,omitempty"`
	Cause string       `json:"cause,omitempty"`
}

// Causes of a refusal that is not a *proto.Error.
const (
	causeProto        = ""              // Error is the client's own refusal
	causeWrongSession = "wrong_session" // ErrWrongSession
	causeTimeout      = "timeout"       // context.DeadlineExceeded
	causeClosed       = "closed"        // the client's session is gone (mux.IsClosed)
	causeOther        = "other"
)

// ErrWrongSession: the owning node no longer serves the name with the
// session the forwarding node named (Request.Session). An OpenFunc returns
// an error wrapping it; Links.Open returns one wrapping it, and the
// forwarding node should look the name up again.
var ErrWrongSession = errors.New("peer: the node serves that name with another session")

// errRemoteClosed is what the forwarding node sees when the owning node's
// client session was gone: it wraps net.ErrClosed, so mux.IsClosed (the
// edge's "tunnel offline") holds for it as it would locally.
var errRemoteClosed = fmt.Errorf("peer: the tunnel's session on the owning node is closed: %w", net.ErrClosed)

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %T: %w", v, err)
	}
	if len(b) > maxFrame {
		return fmt.Errorf("encode %T: %d bytes, at most %d", v, len(b), maxFrame)
	}
	buf := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(b)), uint16(len(b)))
	if _, err := w.Write(append(buf, b...)); err != nil {
		return fmt.Errorf("write %T: %w", v, err)
	}
	return nil
}

func readFrame(r io.Reader, v any) error {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("read %T: %w", v, err)
	}
	n := binary.BigEndian.Uint16(hdr[:])
	if n > maxFrame {
		return fmt.Errorf("read %T: %d bytes, at most %d", v, n, maxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("read %T: %w", v, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("read %T: %w", v, err)
	}
	return nil
}

// checkRequest checks what proto checks of a StreamHeader (by encoding it),
// and the session's size.
func checkRequest(req *Request) error {
	if _, err := proto.AppendFrame(nil, &req.Header); err != nil {
		return err
	}
	if len(req.Session) > maxSession {
		return fmt.Errorf("session: %d bytes, at most %d", len(req.Session), maxSession)
	}
	return nil
}

// refusal turns an OpenFunc's error into an answer.
func refusal(err error) answer {
	var perr *proto.Error
	switch {
	case errors.As(err, &perr):
		// As proto bounds it, so that any refusal fits a frame.
		e := *perr
		if len(e.Code) > maxSession {
			e.Code = proto.CodeInternal
		}
		if len(e.Message) > maxMessage {
			e.Message = strings.ToValidUTF8(e.Message[:maxMessage], "")
		}
		return answer{Error: &e}
	case errors.Is(err, ErrWrongSession):
		return answer{Error: &proto.Error{Code: proto.CodeUnknownTunnel, Message: "another session serves the name"}, Cause: causeWrongSession}
	case errors.Is(err, context.DeadlineExceeded):
		return answer{Error: &proto.Error{Code: proto.CodeLocalUnreachable, Message: "the tunnel did not answer in time"}, Cause: causeTimeout}
	case mux.IsClosed(err):
		return answer{Error: &proto.Error{Code: proto.CodeUnknownTunnel, Message: "the tunnel's session is closed"}, Cause: causeClosed}
	}
	return answer{Error: &proto.Error{Code: proto.CodeInternal, Message: "the owning node failed to open the stream"}, Cause: causeOther}
}

// err turns a refusal back into the error the forwarding node returns.
func (a answer) err(node string) error {
	if a.Error == nil || a.Error.Code == "" {
		return fmt.Errorf("peer: node %s: malformed answer", node)
	}
	switch a.Cause {
	case causeProto:
		return a.Error
	case causeWrongSession:
		return fmt.Errorf("node %s: %w", node, ErrWrongSession)
	case causeTimeout:
		return fmt.Errorf("node %s: open: %w", node, context.DeadlineExceeded)
	case causeClosed:
		return fmt.Errorf("node %s: %w", node, errRemoteClosed)
	}
	return fmt.Errorf("node %s: %s", node, a.Error.Message)
}

// timeoutOf is what a request tells the owning node of the forwarding
// node's deadline: the time left, within limit.
func timeoutOf(ctx context.Context, limit time.Duration) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		if left := time.Until(d); left < limit {
			return max(left, time.Millisecond)
		}
	}
	return limit
}
