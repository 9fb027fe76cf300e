// Package testdns is a small authoritative DNS server on loopback UDP for
// tests: it answers CNAME and TXT questions from tables the test changes
// while it runs, as an owner changes a zone, and NXDOMAIN otherwise; a name
// may be made to fail (SERVFAIL) or to go unanswered, as a broken zone or
// an unreachable server does. It
// exists because both the custom domains' check (package domain) and the
// edge that runs it need a real DNS server to ask; only tests import it.
package testdns

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Server is a running DNS server; Start makes one.
type Server struct {
	conn *net.UDPConn
	done chan struct{}

	mu      sync.Mutex
	cnames  map[string]string   // lowercase name with dot -> target with dot
	txts    map[string][]string // lowercase name with dot -> one TXT record each
	fail    map[string]Failure  // lowercase name with dot -> how it fails
	queries int
	asked   chan struct{} // closed, and replaced, at each question
}

// Failure is how the server fails a name's questions (SetFailure).
type Failure int

const (
	// Answer answers from the tables: no failure.
	Answer Failure = iota
	// ServFail answers SERVFAIL.
	ServFail
	// Silent reads the question and never answers, as a server out of
	// reach: the asker times out.
	Silent
	// Lame answers NOERROR with no records, neither authoritative nor
	// recursive, as pebble-challtestsrv does for a name it has nothing for
	// (Go calls it a "lame referral").
	Lame
)

// Start serves on 127.0.0.1 until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{conn: conn, done: make(chan struct{}), cnames: map[string]string{}, txts: map[string][]string{}, fail: map[string]Failure{}, asked: make(chan struct{})}
	go s.serve()
	t.Cleanup(func() { conn.Close(); <-s.done })
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.conn.LocalAddr().String() }

// SetCNAME makes name (no trailing dot) a CNAME to target.
func (s *Server) SetCNAME(name, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cnames[strings.ToLower(name)+"."] = target + "."
}

// SetTXT gives name one TXT record per value.
func (s *Server) SetTXT(name string, values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txts[strings.ToLower(name)+"."] = values
}

// Clear removes name's records.
func (s *Server) Clear(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cnames, strings.ToLower(name)+".")
	delete(s.txts, strings.ToLower(name)+".")
}

// SetFailure makes the questions about name (no trailing dot) fail as f
// until it is set back to Answer; its records stay as they were.
func (s *Server) SetFailure(name string, f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == Answer {
		delete(s.fail, strings.ToLower(name)+".")
		return
	}
	s.fail[strings.ToLower(name)+"."] = f
}

// Queries is how many questions the server read, answered or not.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// WaitQueries waits until the server has read n questions in all (see
// Queries), failing t after d.
func (s *Server) WaitQueries(t testing.TB, n int, d time.Duration) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		got, asked := s.queries, s.asked
		s.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-asked:
		case <-deadline.C:
			t.Fatalf("testdns: %d questions within %v, want %d", got, d, n)
		}
	}
}

func (s *Server) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if out, ok := s.answer(buf[:n]); ok {
			s.conn.WriteToUDP(out, from)
		}
	}
}

func (s *Server) answer(in []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(in)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries++
	close(s.asked)
	s.asked = make(chan struct{})
	key := strings.ToLower(q.Name.String())
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
	b.EnableCompression()
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
	switch s.fail[key] {
	case Silent:
		return nil, false
	case ServFail, Lame:
		rcode := dnsmessage.RCodeServerFailure
		if s.fail[key] == Lame {
			rcode = dnsmessage.RCodeSuccess
		}
		b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RCode: rcode})
		b.StartQuestions()
		b.Question(q)
		out, err := b.Finish()
		return out, err == nil
	}
	cname, hasCNAME := s.cnames[key]
	txt, hasTXT := s.txts[key]
	if !hasCNAME && !hasTXT {
		b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeNameError})
	}
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	switch {
	case hasCNAME:
		b.CNAMEResource(rh, dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(cname)})
	case hasTXT && q.Type == dnsmessage.TypeTXT:
		for _, v := range txt { // one record per value
			b.TXTResource(rh, dnsmessage.TXTResource{TXT: []string{v}})
		}
	}
	out, err := b.Finish()
	return out, err == nil
}
