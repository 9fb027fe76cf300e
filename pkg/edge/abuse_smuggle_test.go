package edge_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/pkg/mux"
)

// smuggleHostileRows send the request smuggling shapes: heads whose body
// length one HTTP parser reads differently from another, so that bytes the
// edge took for a body could reach a service as a request of their own
// (or the other way round). Whatever the edge makes of each, every
// request the service sees is one the edge routed to it and logged: the
// service and the edge never disagree on where a request ends.
func smuggleHostileRows() []hostileRow {
	return []hostileRow{
		{"smuggled requests never reach a service unrouted", nil, smuggledRequests},
	}
}

func smuggledRequests(t *testing.T, a *abuse) {
	var mu sync.Mutex
	var seen []string
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		io.WriteString(w, "served")
	}))
	if _, err := a.Connect(aliceToken, mux.Tunnel{Name: "smug", Target: addr}); err != nil {
		t.Fatal(err)
	}
	host := a.host("smug")
	inner := "GET /smuggled HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	shapes := []struct{ name, raw string }{
		{"length then chunked", "POST / HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: " + fmt.Sprint(5+len(inner)) +
			"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + inner},
		{"chunked then length", "POST / HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(inner), inner)},
		{"a second coding", "POST / HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: identity\r\n" +
			"Content-Length: " + fmt.Sprint(len(inner)) + "\r\n\r\n" + inner},
		{"space before the colon", "POST / HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding : chunked\r\nContent-Length: " +
			fmt.Sprint(5+len(inner)) + "\r\n\r\n0\r\n\r\n" + inner},
		{"folded coding", "POST / HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: " +
			fmt.Sprint(5+len(inner)) + "\r\n\r\n0\r\n\r\n" + inner},
		{"lengths that differ", "POST / HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 0\r\nContent-Length: " +
			fmt.Sprint(len(inner)) + "\r\n\r\n" + inner},
		{"bare line feeds", "POST / HTTP/1.1\nHost: " + host + "\nContent-Length: " + fmt.Sprint(len(inner)) + "\n\n" + inner},
		// A field ending in a bare CR, then a lone LF: read as one CRLF,
		// the line ended before its start (FuzzH1Head found it).
		{"bare carriage return then a lone line feed", "POST / HTTP/1.1\r\nHost: " + host + "\r\nX-A: 1\r\r\n\nContent-Length: " +
			fmt.Sprint(len(inner)) + "\r\n\r\n" + inner},
		{"chunk size ended by a bare line feed", "POST / HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x;x\n%s\r\n0\r\n\r\n", len(inner), inner)},
		{"expect continue", "POST / HTTP/1.1\r\nHost: " + host + "\r\nExpect: 100-continue\r\nContent-Length: " +
			fmt.Sprint(len(inner)) + "\r\n\r\n" + inner},
		{"pipelined", "POST / HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 3\r\n\r\nabc" + inner},
	}
	for _, s := range shapes {
		mu.Lock()
		seen = nil
		mu.Unlock()
		logged := func(req string) int {
			method, path, _ := strings.Cut(req, " ")
			return a.logs.Count(fmt.Sprintf(`"method":%q,"path":%q`, method, path))
		}
		before := map[string]int{}
		for _, req := range []string{"POST /", "GET /smuggled", "GET /last"} {
			before[req] = logged(req)
		}
		// A last request that closes the connection ends every shape
		// the edge reads to its end.
		last := "GET /last HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"
		sendAll(t, a, host, s.raw+last)
		mu.Lock()
		got := seen
		mu.Unlock()
		counts := map[string]int{}
		for _, req := range got {
			counts[req]++
		}
		for req, n := range counts {
			if routed := logged(req) - before[req]; n > routed {
				t.Errorf("%s: the service saw %q %d times, the edge routed it %d times (service saw %q)", s.name, req, n, routed, got)
			}
		}
	}
}

// sendAll sends raw on one TLS connection and reads answers until the
// edge closes it. The edge logs a request (and the service records it)
// before its answer is written, and answers the requests of a connection in
// turn, so once the connection is over, both have recorded what they will.
func sendAll(t *testing.T, a *abuse, sni, raw string) {
	t.Helper()
	c := a.tlsFrom(t, "http/1.1", strings.Split(sni, ":")[0])
	c.SetDeadline(time.Now().Add(30 * time.Second))
	wrote := make(chan error, 1)
	go func(c *tls.Conn) {
		_, err := io.WriteString(c, raw)
		wrote <- err
	}(c)
	br := bufio.NewReader(c)
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	c.Close()
	<-wrote
}
