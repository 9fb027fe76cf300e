package mux

import (
	"io"
	"net"
	"sync"
)

// Copy buffers come in two sizes. A stream starts each direction with a
// small one, which is all a request or a small page needs and all an idle
// keep-alive stream (tunneld pools up to --max-streams-per-tunnel of them)
// holds while it waits; a read that fills it moves the copy to a large one,
// so a bulk transfer goes out in 128 KiB yamux frames (one TLS write each,
// see WireConn) rather than 16 KiB ones; a short read moves it back.
// Measured with BenchmarkTunnel/bulk/tunnel-plain (pkg/edge): 128 KiB
// frames cut CPU per byte by about 7 % against 32 KiB ones.
const (
	smallCopyBuf = 8 << 10
	largeCopyBuf = 128 << 10
)

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallCopyBuf); return &b }}
	largeBufs = sync.Pool{New: func() any { b := make([]byte, largeCopyBuf); return &b }}
)

// pipe copies between a stream and a local connection in both directions.
// When one direction ends cleanly it half-closes the other side's write and
// keeps the other direction running; when one fails it closes both so the
// other direction stops too. With closeOnFIN (see proto.StreamHeader), the
// stream's end closes both at once: the server wants nothing more, and
// copying the local service's output on would only fill the stream's
// window and tunneld's memory with a response nobody reads. It returns when
// both directions are done, with the bytes copied stream->local (in) and
// local->stream (out), having closed both connections.
//
// cp, if not nil, copies each direction instead of copyAdaptive (see
// ClientConfig.Copier); nil is the raw copy.
func pipe(stream, local net.Conn, closeOnFIN bool, cp StreamCopier) (in, out int64) {
	copyIn, copyOut := copyAdaptive, copyAdaptive
	if cp != nil {
		copyIn, copyOut = cp.CopyIn, cp.CopyOut
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if closeOnFIN {
			in, _ = copyIn(local, stream)
			local.Close()
			stream.Close()
			return
		}
		in = copyHalf(local, stream, copyIn)
	}()
	out = copyHalf(stream, local, copyOut)
	wg.Wait()
	local.Close()
	stream.Close()
	return in, out
}

// PipeStream is Pipe for a stream that carries a proto.StreamHeader, whose
// CloseOnFIN it honours (see pipe), for a node that relays a stream it did
// not open itself: tunneld's node links (package peer) join a stream from
// another node to a stream of a local session with it, so that half-close
// and CloseOnFIN pass through the extra hop exactly as they do between
// tunneld and the client. stream is the side whose end, with closeOnFIN,
// ends both; PipeStream returns when both directions are done, having closed
// both connections, with the bytes copied stream->local (in) and
// local->stream (out).
func PipeStream(stream, local net.Conn, closeOnFIN bool) (in, out int64) {
	return pipe(stream, local, closeOnFIN, nil)
}

// copyHalf copies src to dst, then half-closes dst. On an error it closes
// both, which unblocks the opposite direction.
func copyHalf(dst, src net.Conn, copyFn func(io.Writer, io.Reader) (int64, error)) int64 {
	n, err := copyFn(dst, src)
	if err != nil {
		dst.Close()
		src.Close()
		return n
	}
	closeWrite(dst)
	return n
}

// copyAdaptive copies src to dst until EOF (a nil error) or the first error,
// switching between the small and the large buffer as described above.
func copyAdaptive(dst io.Writer, src io.Reader) (int64, error) {
	pool := &smallBufs
	bp := pool.Get().(*[]byte)
	defer func() { pool.Put(bp) }()
	var total int64
	for {
		buf := *bp
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
			if w != n {
				return total, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
		switch {
		case n == len(buf) && pool == &smallBufs:
			pool.Put(bp)
			pool = &largeBufs
			bp = pool.Get().(*[]byte)
		case n < smallCopyBuf && pool == &largeBufs:
			pool.Put(bp)
			pool = &smallBufs
			bp = pool.Get().(*[]byte)
		}
	}
}

// closeWrite half-closes c: TCP and TLS connections have CloseWrite; closing
// a yamux stream only sends FIN and leaves its read side open.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}
