// The edge's own reader for the common response head (issue 14): a head
// that came whole in a stream's read buffer and says nothing unusual is
// read in place and written again for the visitor, without an
// http.Response, a header map or a string per line. Anything else goes
// to http.ReadResponse from the same unread bytes, as before.
//
// Why the edge reads these itself: http.ReadResponse, removeHopHeaders and
// http.Header.Write were a tenth of tunneld's CPU on small requests, most
// of it the allocations of a head that is passed on nearly as it came.
//
// What "plain" means is chosen so that the visitor gets what net/http's
// reader and writer would have given it, header for header: the status
// line of HTTP/1.1 or HTTP/1.0 with three digits from 200 to 599, lines
// ended by CRLF, names that are tokens (no white space before the colon,
// no obs-fold), values of the bytes textproto accepts, one Content-Length
// of digits (none only where no body may follow), no Transfer-Encoding,
// no Trailer, a Connection that names nothing but close and keep-alive,
// and no header named Close (which "Connection: close" would remove).
// TestH1_ResponseHeadFastMatchesSlow and FuzzParsePlainHead hold the two
// readers to the same answers.

package edge

import (
	"bufio"
	"io"
	"net/http"
	"strconv"

	"golang.org/x/net/http/httpguts"
)

// plainHead is what parsePlainHead read of a response head.
type plainHead struct {
	code int
	// length is the Content-Length; -1 when there is none, which a
	// plain head has only where no body may follow (HEAD, 204, 304).
	length int64
	// close: the service ends the stream after this response, as
	// http.Response.Close says (HTTP/1.0 without keep-alive, or
	// Connection: close).
	close bool
	// typed: the head has a Content-Type; otherwise the edge sniffs one
	// from the body's first bytes, as net/http's server does.
	typed bool
}

// headScan is how far parsePlainHead got.
type headScan int

const (
	headPlain      headScan = iota // a plain head, read whole
	headIncomplete                 // plain so far, its end not in the bytes
	headOther                      // not plain: net/http's reader reads it
)

// parsePlainHead reads the response head at the start of b, sent for a
// request of method, and appends to out the head the visitor gets: the
// status line as writeStatusHead writes it, each kept header with its
// name in canonical form and its value trimmed (as net/http's reader and
// http.Header.Write would give them), hop-by-hop headers left out as
// removeHopHeaders leaves them, the Content-Length written again from its
// value where a body may follow, then a Date when the service gave none,
// the Cache-Control net/http adds for "Pragma: no-cache", and a Connection
// line of conn, if any (see h1Request.connection). The Content-Type a body needs and the final
// CRLF are the caller's. n is the head's length in b.
//
// The headers keep the service's order where net/http's writer sorts
// them: the order of fields with different names carries no meaning
// (RFC 9110 5.3), and fields of the same name keep theirs.
func parsePlainHead(b []byte, method, conn string, out []byte) (ph plainHead, n int, _ []byte, st headScan) {
	line, rest, st := nextLine(b)
	if st != headPlain {
		return ph, 0, out, st
	}
	// "HTTP/1.x DDD" and an optional reason, which is not passed on.
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[7] != '0' && line[7] != '1' || line[8] != ' ' ||
		len(line) > 12 && line[12] != ' ' {
		return ph, 0, out, headOther
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return ph, 0, out, headOther
		}
		ph.code = ph.code*10 + int(c-'0')
	}
	if ph.code < 200 || ph.code > 599 {
		return ph, 0, out, headOther // 1xx and 101 take net/http's loop
	}
	for _, c := range line[12:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return ph, 0, out, headOther
		}
	}
	http10 := line[7] == '0'
	bodyAllowed := bodyAllowedFor(method, ph.code)
	out = appendStatusLine(out, ph.code)

	ph.length = -1
	var hasDate, hasCacheControl, pragmaNoCache, seenPragma, connClose, connKeepAlive bool
	for {
		line, rest, st = nextLine(rest)
		if st != headPlain {
			return ph, 0, out, st
		}
		if len(line) == 0 {
			break
		}
		colon := -1
		for i, c := range line {
			if c == ':' {
				colon = i
				break
			}
			if !httpguts.IsTokenRune(rune(c)) {
				return ph, 0, out, headOther // white space before the colon, obs-fold, ...
			}
		}
		if colon <= 0 {
			return ph, 0, out, headOther
		}
		name, value := line[:colon], line[colon+1:]
		for _, c := range value {
			// textproto's validHeaderValueByte: no control byte but HTAB.
			if c < ' ' && c != '\t' || c == 0x7f {
				return ph, 0, out, headOther
			}
		}
		value = trimOWS(value)
		switch {
		case equalFold(name, "content-length"):
			if ph.length >= 0 || len(value) == 0 || len(value) > 18 {
				return ph, 0, out, headOther
			}
			var v int64
			for _, c := range value {
				if c < '0' || c > '9' {
					return ph, 0, out, headOther
				}
				v = v*10 + int64(c-'0')
			}
			ph.length = v
			if bodyAllowed {
				// As forward sets it: the number, written again.
				out = append(out, "Content-Length: "...)
				out = strconv.AppendInt(out, v, 10)
				out = append(out, "\r\n"...)
				continue
			}
		case equalFold(name, "transfer-encoding"), equalFold(name, "trailer"), equalFold(name, "close"):
			return ph, 0, out, headOther
		case equalFold(name, "connection"):
			for len(value) > 0 {
				elem := value
				if i := indexByte(value, ','); i >= 0 {
					elem, value = value[:i], value[i+1:]
				} else {
					value = nil
				}
				switch elem = trimOWS(elem); {
				case len(elem) == 0:
				case equalFold(elem, "close"):
					connClose = true
				case equalFold(elem, "keep-alive"):
					connKeepAlive = true
				default:
					return ph, 0, out, headOther // it names a header to remove
				}
			}
			continue
		case isHopHeader(name):
			continue
		case equalFold(name, "date"):
			hasDate = true
		case equalFold(name, "content-type"):
			ph.typed = true
		case equalFold(name, "cache-control"):
			hasCacheControl = true
		case equalFold(name, "pragma"):
			// net/http looks at the first Pragma only.
			if !seenPragma {
				seenPragma = true
				pragmaNoCache = string(value) == "no-cache"
			}
		}
		out = appendCanonicalKey(out, name)
		out = append(out, ": "...)
		out = append(out, value...)
		out = append(out, "\r\n"...)
	}
	if bodyAllowed && ph.length < 0 {
		return ph, 0, out, headOther // a body to the end of the stream
	}
	if http10 {
		ph.close = connClose || !connKeepAlive
	} else {
		ph.close = connClose
	}
	if !hasDate {
		out = append(out, "Date: "...)
		out = append(out, httpDate()...)
		out = append(out, "\r\n"...)
	}
	if pragmaNoCache && !hasCacheControl {
		out = append(out, "Cache-Control: no-cache\r\n"...)
	}
	if conn != "" {
		out = append(out, "Connection: "...)
		out = append(out, conn...)
		out = append(out, "\r\n"...)
	}
	return ph, len(b) - len(rest), out, headPlain
}

// nextLine cuts the line at the start of b, without its CRLF. A line
// ended by a bare LF, which net/http's reader takes, is left to it.
func nextLine(b []byte) (line, rest []byte, st headScan) {
	i := indexByte(b, '\n')
	if i < 0 {
		return nil, b, headIncomplete
	}
	if i == 0 || b[i-1] != '\r' {
		return nil, b, headOther
	}
	return b[:i-1], b[i+1:], headPlain
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// trimOWS trims spaces and tabs at both ends, as textproto trims values.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold: b is lower, ignoring ASCII case; lower is in lower case.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// isHopHeader: name is one of hopHeaders, ignoring case.
func isHopHeader(name []byte) bool {
	for _, k := range hopHeaders {
		if len(k) == len(name) && equalFoldCanon(name, k) {
			return true
		}
	}
	return false
}

func equalFoldCanon(b []byte, s string) bool {
	for i, c := range b {
		d := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// appendCanonicalKey appends name, a token, in canonical form (what
// http.CanonicalHeaderKey gives): upper case first and after each dash,
// lower case elsewhere.
func appendCanonicalKey(out, name []byte) []byte {
	upper := true
	for _, c := range name {
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		out = append(out, c)
		upper = c == '-'
	}
	return out
}

// appendStatusLine appends the status line writeStatusHead writes.
func appendStatusLine(out []byte, code int) []byte {
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(code), 10)
	out = append(out, ' ')
	if text := http.StatusText(code); text != "" {
		out = append(out, text...)
	} else {
		out = append(out, "status code "...)
		out = strconv.AppendInt(out, int64(code), 10)
	}
	return append(out, "\r\n"...)
}

// readPlainHead reads a plain response head off pc, for a request of
// method, if one is there: the bytes the stream has in its read buffer,
// and more as they come while the head read so far is plain and fits
// the buffer. It consumes nothing unless it reports ok; pc.head then
// holds the visitor's head (see parsePlainHead). Reads go through pc.lr,
// whose bound the caller set for the head.
func (pc *pconn) readPlainHead(method, conn string) (plainHead, bool) {
	br := pc.br
	if _, err := br.Peek(1); err != nil {
		return plainHead{}, false
	}
	for {
		b, _ := br.Peek(br.Buffered())
		ph, n, out, st := parsePlainHead(b, method, conn, pc.head[:0])
		switch st {
		case headPlain:
			pc.head = out
			br.Discard(n)
			return ph, true
		case headOther:
			return plainHead{}, false
		}
		if len(b) >= br.Size() {
			return plainHead{}, false // a head larger than the buffer
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			return plainHead{}, false
		}
	}
}

// lengthBody is a body of n bytes on a stream's reader: the framing a
// plain head gives. Like net/http's body, it returns io.EOF with the last
// bytes, and io.ErrUnexpectedEOF for a stream that ends (or fails) short.
type lengthBody struct {
	r *bufio.Reader
	n int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	m, err := b.r.Read(p)
	b.n -= int64(m)
	switch {
	case b.n == 0:
		return m, io.EOF
	case err != nil:
		return m, io.ErrUnexpectedEOF
	}
	return m, nil
}
