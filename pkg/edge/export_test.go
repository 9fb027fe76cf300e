package edge

// H1Conns is how many visitor connections the edge's own HTTP/1.1 path
// serves now, for tests that must know which path a request took.
func (s *Server) H1Conns() int {
	s.h1.mu.Lock()
	defer s.h1.mu.Unlock()
	return len(s.h1.conns)
}

// H1Handoffs is how many connections the own path has handed to
// net/http's server so far.
func (s *Server) H1Handoffs() int64 { return s.h1.handoffs.Load() }

// H1FastHeads is how many response heads the own path's own reader has
// read so far (the rest went to http.ReadResponse).
func (s *Server) H1FastHeads() int64 { return s.h1.fastHeads.Load() }
