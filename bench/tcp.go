package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunnelhq/tunnel/pkg/devcert"
)

// TCPRow is one figure of the tcp phase: a TCP tunnel reached through
// "tunnel connect --listen" against the same local server reached
// directly, and a TLS passthrough tunnel against the same TLS server
// reached directly.
type TCPRow struct {
	// Target is direct, tunnel-connect, direct-tls or tls-passthrough.
	Target string `json:"target"`
	// Measure is bulk-1 or bulk-8 (MB/s downloaded over one or 8
	// connections at once) or connects (connections per second, each a
	// one-byte exchange, 8 at a time).
	Measure string  `json:"measure"`
	Value   Stat    `json:"value"`
	Ratio   float64 `json:"vs_direct,omitempty"`
}

// benchToken is the token the tcp phase's visitor shows; the owner allows
// it with --allow-token.
const benchToken = "tk_bench_connect"

// tcpPhase starts a local source server (plain and TLS), a tunneld, two
// owners (tunnel tcp, tunnel tls) and a tunnel connect --listen, and
// measures each target in turn, interleaved within each repeat.
func (e *env) tcpPhase(ctx context.Context, rep *Report) error {
	plain, err := startSource(nil)
	if err != nil {
		return err
	}
	defer plain.close()
	srvTLS, err := devcert.TLSConfig(e.certsDir, "localhost")
	if err != nil {
		return fmt.Errorf("tcp phase: %w", err)
	}
	secure, err := startSource(srvTLS)
	if err != nil {
		return err
	}
	defer secure.close()

	srv, addr, err := e.startTunneld(ctx)
	if err != nil {
		return err
	}
	bin := filepath.Join(e.o.BinDir, "tunnel")
	common := []string{"--dev", "--server", addr, "--certs-dir", e.certsDir, "--log-format", "json", "--max-streams", "1000000"}
	var procs []*proc
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
		srv.stop()
		e.procs = e.procs[:len(e.procs)-1]
	}()
	for _, args := range [][]string{
		{"tcp", "--allow-token", benchToken, "--name", "bench-tcp", plain.addr},
		{"tls", "--name", "bench-tls", secure.addr},
	} {
		p, err := startProc("tunnel-"+args[0], bin, nil, append(common, args...)...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		if _, err := p.line(30 * time.Second); err != nil {
			return fmt.Errorf("tunnel %s: %w", args[0], err)
		}
	}
	visitor, err := startProc("tunnel-connect", bin, []string{"TUNNEL_TOKEN=" + benchToken},
		"--dev", "--server", addr, "--certs-dir", e.certsDir, "--log-format", "json", "connect", "--listen", "127.0.0.1:0", "bench-tcp.localhost")
	if err != nil {
		return err
	}
	procs = append(procs, visitor)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	listen, err := waitLogAddr(wctx, visitor, "listening")
	cancel()
	if err != nil {
		return err
	}
	cliTLS, err := clientTLS(e.certsDir)
	if err != nil {
		return err
	}
	cliTLS.ServerName = "bench-tls.localhost"

	type target struct {
		name string
		dial func(ctx context.Context) (net.Conn, error)
	}
	var d net.Dialer
	dialTCP := func(a string) func(ctx context.Context) (net.Conn, error) {
		return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }
	}
	dialTLS := func(a string) func(ctx context.Context) (net.Conn, error) {
		return func(ctx context.Context) (net.Conn, error) {
			td := tls.Dialer{NetDialer: &d, Config: cliTLS}
			return td.DialContext(ctx, "tcp", a)
		}
	}
	targets := []target{
		{"direct", dialTCP(plain.addr)}, {"tunnel-connect", dialTCP(listen)},
		{"direct-tls", dialTLS(secure.addr)}, {"tls-passthrough", dialTLS(addr)},
	}
	rows := map[[2]string]*TCPRow{}
	var order [][2]string
	add := func(t, m string, v float64) {
		k := [2]string{t, m}
		if rows[k] == nil {
			rows[k] = &TCPRow{Target: t, Measure: m}
			order = append(order, k)
		}
		rows[k].Value.add(v)
	}
	for r := 0; r < e.o.Repeat; r++ {
		for _, tg := range targets {
			for _, streams := range []int{1, 8} {
				e.logf("tcp: %s bulk %d streams, run %d", tg.name, streams, r+1)
				mbps, err := bulkDown(ctx, tg.dial, e.o.Bulk, streams)
				if err != nil {
					return fmt.Errorf("tcp: %s bulk %d: %w", tg.name, streams, err)
				}
				add(tg.name, fmt.Sprintf("bulk-%d", streams), mbps)
			}
			if tg.name == "direct" || tg.name == "tunnel-connect" {
				e.logf("tcp: %s connects, run %d", tg.name, r+1)
				cps, err := connectsPerSecond(ctx, tg.dial, e.o.Duration, 8)
				if err != nil {
					return fmt.Errorf("tcp: %s connects: %w", tg.name, err)
				}
				add(tg.name, "connects", cps)
			}
		}
	}
	for _, k := range order {
		row := *rows[k]
		base := map[string]string{"tunnel-connect": "direct", "tls-passthrough": "direct-tls"}[row.Target]
		if b := rows[[2]string{base, row.Measure}]; b != nil && b.Value.Median > 0 {
			row.Ratio = row.Value.Median / b.Value.Median
		}
		rep.TCP = append(rep.TCP, row)
	}
	return nil
}

// source is a local server that answers each connection's 8-byte
// big-endian size with that many bytes, then half-closes.
type source struct {
	ln   net.Listener
	addr string
	wg   sync.WaitGroup
}

func startSource(cfg *tls.Config) (*source, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	s := &source{ln: ln, addr: ln.Addr().String()}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *source) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go s.answer(c)
	}
}

var zeros = make([]byte, 128<<10)

func (s *source) answer(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	for n := int64(binary.BigEndian.Uint64(hdr[:])); n > 0; {
		k := min(n, int64(len(zeros)))
		if _, err := c.Write(zeros[:k]); err != nil {
			return
		}
		n -= k
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, c)
}

// close stops the server and waits for its connections, which the
// clients have closed by then.
func (s *source) close() {
	s.ln.Close()
	s.wg.Wait()
}

// fetchN asks the source behind c for n bytes and reads them to the end.
func fetchN(c net.Conn, n int64) error {
	defer c.Close()
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	got, err := io.Copy(io.Discard, c)
	if err == nil && got != n {
		err = fmt.Errorf("got %d bytes, want %d", got, n)
	}
	return err
}

// bulkDown downloads total bytes over streams connections at once and
// returns the MB/s.
func bulkDown(ctx context.Context, dial func(context.Context) (net.Conn, error), total int64, streams int) (float64, error) {
	each := total / int64(streams)
	start := time.Now()
	errs := make(chan error, streams)
	for range streams {
		go func() {
			c, err := dial(ctx)
			if err != nil {
				errs <- err
				return
			}
			errs <- fetchN(c, each)
		}()
	}
	var first error
	for range streams {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return 0, first
	}
	return float64(each*int64(streams)) / 1e6 / time.Since(start).Seconds(), nil
}

// connectsPerSecond runs workers loops of connect, one-byte exchange and
// close for d and returns the connections completed per second.
func connectsPerSecond(ctx context.Context, dial func(context.Context) (net.Conn, error), d time.Duration, workers int) (float64, error) {
	var done atomic.Int64
	var firstErr error
	var mu sync.Mutex
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				c, err := dial(ctx)
				if err == nil {
					err = fetchN(c, 1)
				}
				if err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}
