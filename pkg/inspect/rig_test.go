package inspect_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/inspect"
	"github.com/tunnelhq/tunnel/pkg/mux"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rig is the inspector on a real path: a visitor's TCP connection to
// front is copied by the inspector's StreamCopier to a real local service
// (an httptest.Server), the way pkg/mux's pipe copies a stream to it, with
// the same half-closes. Exchanges recorded arrive on recorded.
type rig struct {
	in       *inspect.Inspector
	front    string // where visitors connect
	target   string // the local service
	api      *httptest.Server
	recorded chan inspect.Summary
	raw      bool // copy with io.Copy, as the inspector off: for benchmarks
}

func newRig(t testing.TB, cfg inspect.Config, service http.Handler) *rig {
	t.Helper()
	r := &rig{recorded: make(chan inspect.Summary, 1024)}
	cfg.OnExchange = func(s inspect.Summary) {
		select {
		case r.recorded <- s:
		default: // a benchmark does not wait for them
		}
	}
	in, err := inspect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.in = in
	svc := httptest.NewServer(service)
	t.Cleanup(svc.Close)
	r.target = svc.Listener.Addr().String()

	r.front = testnet.Serve(t, r.pipe)
	r.api = httptest.NewServer(in.Handler())
	t.Cleanup(r.api.Close)
	t.Cleanup(func() {
		// testing keeps an ended test's cleanups, and with them this
		// inspector, for a while: empty its store, or the tests that
		// follow (and -count) run with its recordings still held.
		req, _ := http.NewRequest(http.MethodDelete, r.api.URL+"/api/exchanges", nil)
		if resp, err := r.api.Client().Do(req); err == nil {
			resp.Body.Close()
		}
		r.api.Client().CloseIdleConnections()
	})
	return r
}

// pipe is pkg/mux's pipe with the inspector's copier: each direction
// copied until its source ends, then the other side's write half-closed.
func (r *rig) pipe(visitor net.Conn) {
	local, err := net.Dial("tcp", r.target)
	if err != nil {
		visitor.Close()
		return
	}
	copyIn, copyOut := plainCopy, plainCopy
	if !r.raw {
		cp := r.in.Copier(mux.StreamInfo{Tunnel: "wiki", Target: r.target, Visitor: visitor.RemoteAddr().String()})
		copyIn, copyOut = cp.CopyIn, cp.CopyOut
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		half(local, visitor, copyIn)
	}()
	half(visitor, local, copyOut)
	<-done
	visitor.Close()
	local.Close()
}

func half(dst, src net.Conn, copyFn func(io.Writer, io.Reader) (int64, error)) {
	if _, err := copyFn(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	dst.(*net.TCPConn).CloseWrite()
}

// client is a visitor's HTTP client: every connection goes to front.
func (r *rig) client(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", r.front)
		},
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// wait returns the next exchange recorded.
func (r *rig) wait(t *testing.T) inspect.Summary {
	t.Helper()
	return testwait.Recv(t, r.recorded, 10*time.Second)
}

func newListener(t *testing.T) (net.Listener, error) {
	t.Helper()
	return net.Listen("tcp", "127.0.0.1:0")
}

// plainCopy is the raw copy as pkg/mux does it: read into a buffer, write
// it on (a yamux stream offers no splice, so neither does this).
func plainCopy(dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, 128<<10)
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
}
