package inspect

import (
	"bufio"
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// The copier reads each message's head itself rather than with
// http.ReadRequest and http.ReadResponse: they build a Request or Response,
// a URL, a header map and a string per header value for every exchange,
// which the store would re-encode and drop at once. With the store full
// that garbage was most of what made the collector run (BenchmarkCopier,
// inspect-full). What is read here is what the recording needs: the start
// line, the headers encoded as the store keeps them (see appendHeader), and
// how the body is framed, by net/http's rules (RFC 9112, section 6), so
// that the parser follows a stream exactly where net/http would have.

// maxHead bounds a message's head, as net/http's server does (1 MiB of
// headers and a little more): a longer one is copied raw, not recorded.
const maxHead = 1<<20 + 4096

var (
	errNotHTTP1   = errors.New("not HTTP/1.x")
	errMalformed  = errors.New("malformed HTTP head")
	errHeadTooBig = errors.New("HTTP head too large")
)

// head is what the copier keeps of a request's or a response's head.
type head struct {
	method, target, proto string // request; proto for both
	status                int    // response
	host                  string // request: the authority, from the target or Host
	visitor               string // request: X-Forwarded-For's first address
	upgrade               bool   // Connection: upgrade
	chunked               bool   // Transfer-Encoding: chunked
	length                int64  // Content-Length; -1: none
}

// headReader reads heads from one direction of a stream. Its buffers are
// reused from one message to the next.
type headReader struct {
	br   *bufio.Reader
	long []byte // a line longer than br's buffer, gathered
	hdr  []byte // the headers of the message read last, encoded

	host   []byte // a request's Host
	hosts  int    // Host headers seen
	xff    []byte // a request's first X-Forwarded-For; nil: none
	xffBuf []byte
}

// line returns the next line without its line ending; it is valid until
// the next read. budget is what the head may still use.
func (r *headReader) line(budget *int) ([]byte, error) {
	l, err := r.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		r.long = append(r.long[:0], l...)
		for err == bufio.ErrBufferFull && len(r.long) <= *budget {
			l, err = r.br.ReadSlice('\n')
			r.long = append(r.long, l...)
		}
		l = r.long
	}
	if *budget -= len(l); *budget < 0 {
		return nil, errHeadTooBig
	}
	if err != nil {
		return nil, err
	}
	l = l[:len(l)-1]
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	return l, nil
}

// request reads a request's head, its headers into r.hdr.
func (r *headReader) request() (head, error) {
	budget := maxHead
	l, err := r.line(&budget)
	if err != nil {
		return head{}, err
	}
	method, rest, ok1 := bytes.Cut(l, []byte(" "))
	target, proto, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || !isToken(method) || len(target) == 0 && string(method) != "CONNECT" {
		return head{}, errMalformed
	}
	if !isHTTP1(proto) {
		return head{}, errNotHTTP1
	}
	// One string for the start line's parts and the Host (read below):
	// the exchange's strings are substrings of it.
	s := string(l)
	h := head{method: s[:len(method)], target: s[len(method)+1 : len(method)+1+len(target)], proto: s[len(s)-len(proto):]}
	if err := r.headers(&h, &budget, true); err != nil {
		return head{}, err
	}
	if r.hosts > 1 {
		return head{}, errMalformed // net/http: "too many Host headers"
	}
	// The authority: an absolute target's (RFC 9112, 3.2.2) or a
	// CONNECT's, else the Host header's (as net/http, which reads a
	// CONNECT's authority as http://AUTHORITY).
	auth := h.target
	if h.method != "CONNECT" || strings.HasPrefix(auth, "/") {
		auth = absoluteAuthority(auth)
	} else {
		auth = absoluteAuthority("http://" + auth)
	}
	if h.host = auth; auth == "" {
		h.host = string(r.host)
	}
	if r.xff != nil {
		first, _, _ := bytes.Cut(r.xff, []byte(","))
		h.visitor = string(bytes.TrimSpace(first))
	}
	if !h.chunked && h.length < 0 {
		h.length = 0 // a request without a length has no body
	}
	return h, nil
}

// response reads a response's head, its headers into r.hdr.
func (r *headReader) response() (head, error) {
	budget := maxHead
	l, err := r.line(&budget)
	if err != nil {
		return head{}, err
	}
	proto, rest, _ := bytes.Cut(l, []byte(" "))
	code, _, _ := bytes.Cut(rest, []byte(" "))
	if !isHTTP1(proto) {
		return head{}, errNotHTTP1
	}
	status, err := strconv.Atoi(string(code))
	if len(code) != 3 || err != nil || status < 100 {
		return head{}, errMalformed
	}
	h := head{status: status, proto: internProto(proto)}
	if err := r.headers(&h, &budget, false); err != nil {
		return head{}, err
	}
	return h, nil
}

// bodyLength says how a response to method with head h is framed: -2 no
// body, -1 until the stream ends, else Content-Length (chunked is h's).
func (h *head) responseLength(method string) int64 {
	switch {
	case method == "HEAD" || h.status/100 == 1 || h.status == 204 || h.status == 304:
		return -2
	case h.chunked:
		return -1
	case h.length >= 0:
		return h.length
	}
	return -1
}

// headers reads header lines up to the blank one into r.hdr, encoded,
// and sets h's framing and upgrade; a request's Host (which net/http keeps
// apart from the headers) and X-Forwarded-For go to r.host and r.xff.
func (r *headReader) headers(h *head, budget *int, request bool) error {
	r.hdr, r.host, r.xff, r.hosts = r.hdr[:0], r.host[:0], nil, 0
	h.length = -1
	te := 0
	var teChunked bool
	for {
		l, err := r.line(budget)
		if err != nil {
			return err
		}
		if len(l) == 0 {
			break
		}
		k, v, ok := bytes.Cut(l, []byte(":"))
		spaced := bytes.IndexByte(k, ' ') >= 0
		if !ok || !isKey(k) || !validValue(v) {
			// As net/http (textproto); obsolete line folding too, which
			// it joins but headReader refuses.
			return errMalformed
		}
		v = bytes.Trim(v, " \t")
		// The key, canonical as net/http's (not when it holds a space,
		// which net/http keeps as it is), straight into the encoding.
		start := len(r.hdr)
		r.hdr = appendUvarint(r.hdr, len(k))
		ks := len(r.hdr)
		if spaced {
			r.hdr = append(r.hdr, k...)
		} else {
			r.hdr = appendCanonical(r.hdr, k)
		}
		switch string(r.hdr[ks:]) { // constant cases: no allocation
		case "Host":
			if request {
				r.hosts++
				r.host = append(r.host[:0], v...)
				r.hdr = r.hdr[:start]
				continue
			}
		case "X-Forwarded-For":
			if request && r.xff == nil {
				r.xff = append(r.xffBuf[:0], v...)
				r.xffBuf = r.xff
			}
		case "Transfer-Encoding":
			te++
			teChunked = bytes.EqualFold(v, []byte("chunked"))
			r.hdr = r.hdr[:start] // net/http drops it from the headers
			continue
		case "Content-Length":
			n, err := parseLength(v)
			if err != nil || (h.length >= 0 && n != h.length) {
				return errMalformed
			}
			h.length = n
		case "Connection":
			if hasToken(v, "upgrade") {
				h.upgrade = true
			}
		}
		r.hdr = appendUvarint(r.hdr, len(v))
		r.hdr = append(r.hdr, v...)
	}
	// net/http: one Transfer-Encoding, chunked, and only from HTTP/1.1 on.
	if te > 0 && h.proto != "HTTP/1.0" {
		if te > 1 || !teChunked {
			return errMalformed
		}
		h.chunked = true
	}
	if h.chunked && h.length >= 0 {
		// net/http: chunked overrides a Content-Length, which it drops
		// from the headers (tunneld refuses such a request; a local
		// service may still answer so). Rare: rebuilt, not in place.
		enc := string(r.hdr)
		r.hdr = r.hdr[:0]
		for k, v := range headerPairs(enc) {
			if k == "Content-Length" {
				continue
			}
			r.hdr = appendUvarint(r.hdr, len(k))
			r.hdr = append(r.hdr, k...)
			r.hdr = appendUvarint(r.hdr, len(v))
			r.hdr = append(r.hdr, v...)
		}
		h.length = -1
	}
	return nil
}

// trailer reads a chunked body's trailer, up to its blank line: not
// recorded, but the next message starts after it.
func (r *headReader) trailer() error {
	budget := maxHead
	for {
		l, err := r.line(&budget)
		if err != nil {
			return err
		}
		if len(l) == 0 {
			return nil
		}
	}
}

func appendUvarint(b []byte, n int) []byte {
	for ; n >= 0x80; n >>= 7 {
		b = append(b, byte(n)|0x80)
	}
	return append(b, byte(n))
}

// appendCanonical appends key as http.CanonicalHeaderKey writes it (key
// is a token): upper case first and after each '-', lower case elsewhere.
func appendCanonical(b, key []byte) []byte {
	upper := true
	for _, c := range key {
		switch {
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		b = append(b, c)
		upper = c == '-'
	}
	return b
}

// validValue reports whether net/http accepts v as a header value: no
// control bytes but tab.
func validValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// parseLength parses a Content-Length value as net/http does: digits only.
func parseLength(v []byte) (int64, error) {
	if len(v) == 0 {
		return 0, errMalformed
	}
	n := int64(0)
	for _, c := range v {
		if c < '0' || c > '9' || n > (1<<62)/10 {
			return 0, errMalformed
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

// hasToken reports whether the comma-separated list v holds tok, in any case.
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		t, v, _ = bytes.Cut(v, []byte(","))
		if bytes.EqualFold(bytes.TrimSpace(t), []byte(tok)) {
			return true
		}
	}
	return false
}

func isHTTP1(proto []byte) bool {
	return len(proto) == 8 && string(proto[:7]) == "HTTP/1." && '0' <= proto[7] && proto[7] <= '9'
}

func internProto(p []byte) string {
	switch string(p) {
	case "HTTP/1.1":
		return "HTTP/1.1"
	case "HTTP/1.0":
		return "HTTP/1.0"
	}
	return string(p)
}

// isKey reports whether net/http (textproto) accepts k as a header name:
// a token, or one with spaces in it.
func isKey(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for _, c := range k {
		if c != ' ' && (c >= 0x80 || !tokenChar[c]) {
			return false
		}
	}
	return true
}

// isToken reports whether b is a non-empty RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c >= 0x80 || !tokenChar[c] {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// absoluteAuthority returns an absolute-form target's authority
// (http://HOST/path gives HOST, without user information), else "".
func absoluteAuthority(target string) string {
	i := indexScheme(target)
	if i < 0 {
		return ""
	}
	rest := target[i+3:]
	end := len(rest)
	for j := 0; j < len(rest); j++ {
		if c := rest[j]; c == '/' || c == '?' || c == '#' {
			end = j
			break
		}
	}
	auth := rest[:end]
	if at := lastIndexByte(auth, '@'); at >= 0 {
		auth = auth[at+1:]
	}
	return auth
}

// indexScheme returns where "://" follows a scheme at target's start, or -1.
func indexScheme(target string) int {
	for i := 0; i < len(target); i++ {
		c := target[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		case i > 0 && c == ':' && len(target) >= i+3 && target[i+1:i+3] == "//":
			return i
		default:
			return -1
		}
	}
	return -1
}

func lastIndexByte(s string, c byte) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == c {
			return i
		}
	}
	return -1
}
