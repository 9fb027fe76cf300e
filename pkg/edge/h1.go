// The head of a visitor's HTTP/1.1 request, read and checked by the edge
// itself (issue 14), for a forwarding path without net/http's server loop.
//
// Why the edge parses heads itself: it sits in front of services whose
// HTTP parsers it does not know, so what it accepts must mean one thing
// only. Anything net/http's server would refuse is refused here too, and
// so is what net/http tolerates but another parser could read differently
// (the request smuggling shapes): both Content-Length and
// Transfer-Encoding, Content-Lengths that differ or are lists, a transfer
// coding other than chunked, Transfer-Encoding in HTTP/1.0, obs-fold, a
// line ended by a bare LF, a space before a header's colon. What is
// accepted is never passed on as the bytes read: writeRequestHead writes
// the head again from what was parsed, in one canonical form.

package edge

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// headError is a request head the edge refuses: the status and the text
// of the answer, which writeHeadError words the way net/http's server does.
type headError struct {
	status int
	text   string
	// say: the answer names text, as net/http's answers do for its own
	// checks after parsing (Host, version); parse errors get the bare
	// status.
	say bool
}

func (e *headError) Error() string {
	if e.text == "" {
		return fmt.Sprintf("request head: %d %s", e.status, http.StatusText(e.status))
	}
	return fmt.Sprintf("request head: %d %s: %s", e.status, http.StatusText(e.status), e.text)
}

func badHead(text string) *headError { return &headError{status: http.StatusBadRequest, text: text} }

var (
	errHeadTooLarge  = &headError{status: http.StatusRequestHeaderFieldsTooLarge}
	errUnsupportedTE = &headError{status: http.StatusNotImplemented, text: "Unsupported transfer encoding"}
	errVersion       = &headError{status: http.StatusHTTPVersionNotSupported, text: "unsupported protocol version", say: true}
	errExpectation   = &headError{status: http.StatusExpectationFailed}
)

// writeHeadError writes the answer to a refused head, byte for byte what
// net/http's server writes for the same refusal, and the connection is
// closed after it.
func writeHeadError(w io.Writer, err *headError) error {
	const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	var s string
	switch {
	case err == errExpectation:
		// net/http answers this one as a response of its own, empty.
		s = "HTTP/1.1 417 Expectation Failed\r\nConnection: close\r\nContent-Length: 0\r\nDate: " +
			time.Now().UTC().Format(http.TimeFormat) + "\r\n\r\n"
	case err == errUnsupportedTE:
		s = fmt.Sprintf("HTTP/1.1 %d %s%s%s", err.status, http.StatusText(err.status), errorHeaders, err.text)
	case !err.say:
		pub := strconv.Itoa(err.status) + " " + http.StatusText(err.status)
		s = "HTTP/1.1 " + pub + errorHeaders + pub
	default:
		st := fmt.Sprintf("%d %s: %s", err.status, http.StatusText(err.status), err.text)
		s = "HTTP/1.1 " + st + errorHeaders + st
	}
	_, werr := io.WriteString(w, s)
	return werr
}

// h1Request is one visitor request whose head was read and accepted, with
// the framing of its body decided.
type h1Request struct {
	http.Request // Body is not set: the caller frames it (copyRequestBody)
	url          url.URL
	// chunked: the body is sent chunked (ContentLength is -1); otherwise
	// it is ContentLength bytes long.
	chunked bool
	// expectContinue: the visitor waits for 100 Continue before it sends
	// the body (HTTP/1.1, a body announced).
	expectContinue bool
	// close: the connection ends after this exchange (Connection: close,
	// or HTTP/1.0 without Connection: keep-alive).
	close bool
	// keepAlive10: an HTTP/1.0 visitor asks to keep the connection. It
	// is kept when the answer has a length (or no body), and the answer
	// then says "Connection: keep-alive", as net/http's server does.
	keepAlive10 bool
	// upgrade: the visitor asks to switch protocols (Connection: upgrade
	// and an Upgrade header).
	upgrade bool
}

// connection is the Connection header of the answer to r: "close" when
// the connection ends after it, "keep-alive" for an HTTP/1.0 visitor
// that asked to keep it, as net/http's server says; "" otherwise.
func (r *h1Request) connection(closing bool) string {
	switch {
	case closing:
		return "close"
	case r.keepAlive10:
		return "keep-alive"
	}
	return ""
}

// headReader reads request heads off one visitor connection. Not safe for
// concurrent use.
type headReader struct {
	br  *bufio.Reader
	max int // the head's bound in bytes: Config.MaxHeaderBytes
	// lastPOST: the previous request was a POST, after which up to four
	// stray CR or LF bytes are skipped, as net/http does for old clients.
	lastPOST bool
	head     []byte // the head being read, lines without their CRLF
	ends     []int  // where each line of head ends
}

// read reads and checks the next request head. io.EOF: the visitor closed
// the connection between requests, having sent nothing of a new one. A
// *headError is a head refused, to answer with writeHeadError.
//
// The head becomes one string, and every name and value a part of it: one
// allocation for all of them, where net/http makes one or two per line.
func (hr *headReader) read() (*h1Request, error) {
	if hr.lastPOST {
		peek, _ := hr.br.Peek(4)
		n := 0
		for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
			n++
		}
		hr.br.Discard(n)
	}
	budget := hr.max + 4096 // net/http's own slack over MaxHeaderBytes
	hr.head, hr.ends = hr.head[:0], hr.ends[:0]
	for {
		var err error
		start := len(hr.head)
		hr.head, err = readLine(hr.br, hr.head, &budget)
		if err != nil {
			if len(hr.ends) == 0 && start == len(hr.head) && err == io.EOF {
				return nil, io.EOF
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(hr.ends) > 0 && start == len(hr.head) {
			break // the empty line
		}
		hr.ends = append(hr.ends, len(hr.head))
	}
	head := string(hr.head)
	r, err := parseRequestLine(head[:hr.ends[0]])
	if err != nil {
		return nil, err
	}
	n := len(hr.ends) - 1
	r.Header = make(http.Header, n)
	values := make([]string, n) // each field's value slice, cut from one array
	for i := 1; i <= n; i++ {
		if err := addHeaderLine(r.Header, head[hr.ends[i-1]:hr.ends[i]], values[i-1:i:i]); err != nil {
			return nil, err
		}
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	hr.lastPOST = r.Method == http.MethodPost
	return r, nil
}

// readLine appends the next line from br to dst without its CRLF, taking
// its length off budget. A line not ended by CRLF is refused.
//
// The CR is looked for in this line's own bytes: dst may end with an
// earlier line that ends in a bare CR, and a lone LF after it must not be
// read as that line's CRLF (FuzzH1Head found it: "\r\r\n\n\r\n" ended a
// line before its own start, and the head's first line past its end).
func readLine(br *bufio.Reader, dst []byte, budget *int) ([]byte, error) {
	begin := len(dst)
	for {
		chunk, err := br.ReadSlice('\n')
		*budget -= len(chunk)
		if *budget < 0 {
			return dst, errHeadTooLarge
		}
		dst = append(dst, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if len(chunk) > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return dst, err
		}
		if len(dst)-begin < 2 || dst[len(dst)-2] != '\r' {
			return dst, badHead("line not ended by CRLF")
		}
		return dst[:len(dst)-2], nil
	}
}

// parseRequestLine parses "METHOD target HTTP/1.x" the way net/http does,
// and refuses any version but 1.0 and 1.1.
func parseRequestLine(line string) (*h1Request, error) {
	method, rest, ok1 := strings.Cut(line, " ")
	target, version, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return nil, badHead("malformed HTTP request")
	}
	if !isToken(method) {
		return nil, badHead("invalid method")
	}
	var major, minor int
	switch version {
	case "HTTP/1.1":
		major, minor = 1, 1
	case "HTTP/1.0":
		major, minor = 1, 0
	default:
		var ok bool
		if major, minor, ok = http.ParseHTTPVersion(version); !ok {
			return nil, badHead("malformed HTTP version")
		}
		if major != 1 {
			return nil, errVersion
		}
		// HTTP/1.2 and later minors are served as 1.1 (the head the
		// service gets says 1.1), as net/http serves them.
	}
	if target == "" {
		return nil, badHead("empty request target")
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return nil, badHead("invalid request target")
		}
	}
	r := &h1Request{}
	r.Method, r.RequestURI, r.Proto, r.ProtoMajor, r.ProtoMinor = method, target, version, major, minor
	if u, ok := plainPath(target); ok {
		r.url = u
	} else {
		raw := target
		authority := method == http.MethodConnect && !strings.HasPrefix(raw, "/")
		if authority {
			raw = "http://" + raw // authority-form, as net/http reads it
		}
		u, err := url.ParseRequestURI(raw)
		if err != nil {
			return nil, badHead("invalid request target")
		}
		switch {
		case authority:
			u.Scheme = ""
		case u.Scheme != "" && (u.Opaque != "" || u.Host == "" || u.User != nil ||
			!strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https")):
			// Absolute-form must name an http(s) host and a path, no
			// more: what else net/http takes ("a:b", user info) reads
			// differently from one parser to the next.
			return nil, badHead("invalid request target")
		}
		r.url = *u
	}
	r.URL = &r.url
	return r, nil
}

// plainPath is url.ParseRequestURI for the common target: an origin-form
// path and query of characters that need no unescaping and that
// EscapedPath writes back as they are, so Path alone keeps them.
func plainPath(target string) (url.URL, bool) {
	if target[0] != '/' || strings.HasPrefix(target, "//") {
		return url.URL{}, false
	}
	path, query, hasQuery := strings.Cut(target, "?")
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~/$&+,;=:@", c) >= 0:
		default:
			return url.URL{}, false
		}
	}
	for i := 0; i < len(query); i++ {
		if c := query[i]; c == '#' || c >= 0x80 {
			return url.URL{}, false
		}
	}
	return url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}, true
}

// addHeaderLine adds one "Name: value" line to h, the value in slot (a
// slice of length 1 the caller owns) when the name is new. obs-fold (a
// line that starts with white space, continuing the one before) and a
// name that is not a token (white space before the colon included) are
// refused.
func addHeaderLine(h http.Header, line string, slot []string) error {
	if line[0] == ' ' || line[0] == '\t' {
		return badHead("obsolete line folding")
	}
	name, value, ok := strings.Cut(line, ":")
	if !ok || !isToken(name) {
		if trimmed := strings.TrimRight(name, " \t"); ok && len(trimmed) < len(name) && isToken(trimmed) {
			// White space before the colon: net/http names this one.
			return &headError{status: http.StatusBadRequest, text: "invalid header name", say: true}
		}
		return badHead("invalid header name")
	}
	value = strings.Trim(value, " \t")
	if !httpguts.ValidHeaderFieldValue(value) {
		return badHead("invalid header value")
	}
	key := headerKey(name)
	if old, ok := h[key]; ok {
		h[key] = append(old, value)
		return nil
	}
	slot[0] = value
	h[key] = slot
	return nil
}

// commonKeys are the canonical forms of the header names most requests
// carry, by the spellings clients send: no allocation for those.
var commonKeys = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cache-Control", "Connection", "Content-Length", "Content-Type", "Cookie", "Dnt",
		"Expect", "Host", "If-Modified-Since", "If-None-Match", "Keep-Alive", "Origin",
		"Pragma", "Priority", "Referer", "Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform",
		"Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User", "Te",
		"Transfer-Encoding", "Upgrade", "Upgrade-Insecure-Requests", "User-Agent",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Requested-With",
	} {
		m[k] = k
		m[strings.ToLower(k)] = k
	}
	return m
}()

// headerKey is name's canonical form (http.CanonicalHeaderKey), without
// an allocation for common names and names already canonical.
func headerKey(name string) string {
	if k, ok := commonKeys[name]; ok {
		return k
	}
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return http.CanonicalHeaderKey(name)
		}
		upper = c == '-'
	}
	return name
}

// isToken reports whether s is a non-empty RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !httpguts.IsTokenRune(rune(s[i])) {
			return false
		}
	}
	return true
}

// check applies the rules on the head as a whole (Host, framing, Expect,
// Connection) and sets the request's Host, framing and flags.
func (r *h1Request) check() error {
	h := r.Header
	hosts := h["Host"]
	switch {
	case len(hosts) > 1:
		return badHead("too many Host headers")
	case len(hosts) == 0 && r.ProtoMinor >= 1 && r.Method != http.MethodConnect:
		return &headError{status: http.StatusBadRequest, text: "missing required Host header", say: true}
	case len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]):
		return &headError{status: http.StatusBadRequest, text: "malformed Host header", say: true}
	}
	// An absolute-form target names the host, and the Host header is
	// ignored (RFC 9112 3.2.2), as net/http does.
	r.Host = r.URL.Host
	if r.Host == "" && len(hosts) == 1 {
		r.Host = hosts[0]
	} else if r.Host != "" && !httpguts.ValidHostHeader(r.Host) {
		// net/http checks only the header; the edge writes this host
		// into one, so it is held to the same rule.
		return badHead("malformed host in the request target")
	}
	delete(h, "Host")

	te, hasTE := h["Transfer-Encoding"]
	cl, hasCL := h["Content-Length"]
	switch {
	case hasTE && hasCL:
		return badHead("both Transfer-Encoding and Content-Length")
	case hasTE:
		if r.ProtoMinor == 0 {
			return badHead("Transfer-Encoding in HTTP/1.0")
		}
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return errUnsupportedTE
		}
		r.chunked = true
		r.ContentLength = -1
		r.TransferEncoding = []string{"chunked"}
	case hasCL:
		n, err := contentLength(cl)
		if err != nil {
			return err
		}
		r.ContentLength = n
	}
	delete(h, "Transfer-Encoding")
	delete(h, "Content-Length")

	if ex, ok := h["Expect"]; ok {
		if len(ex) != 1 || !strings.EqualFold(ex[0], "100-continue") {
			return errExpectation
		}
		// HTTP/1.0 has no 100 Continue: its body just follows, as
		// net/http reads it. The header stays, as ReverseProxy keeps
		// it; the service's own 100 is not passed on (forward).
		r.expectContinue = r.ContentLength != 0 && r.ProtoMinor >= 1
	}
	conn := h["Connection"]
	closeAsked := httpguts.HeaderValuesContainsToken(conn, "close")
	r.keepAlive10 = r.ProtoMinor == 0 && !closeAsked && httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	r.close = closeAsked || r.ProtoMinor == 0 && !r.keepAlive10
	r.Close = r.close
	r.upgrade = httpguts.HeaderValuesContainsToken(conn, "upgrade") && len(h["Upgrade"]) > 0
	return nil
}

// contentLength reads the Content-Length fields: each a plain decimal
// number, all the same. Lists ("5, 5") are refused, as net/http does.
func contentLength(fields []string) (int64, error) {
	first := fields[0]
	for _, f := range fields[1:] {
		if f != first {
			return 0, badHead("differing Content-Lengths")
		}
	}
	if first == "" || len(first) > 18 {
		return 0, badHead("bad Content-Length")
	}
	var n int64
	for _, c := range []byte(first) {
		if c < '0' || c > '9' {
			return 0, badHead("bad Content-Length")
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

// hopHeaders are the hop-by-hop headers (RFC 9110 7.6.1), never passed on
// in either direction; ReverseProxy removes the same.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopHeaders removes the hop-by-hop headers from h, those the
// Connection header names first.
func removeHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = strings.TrimSpace(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// writeRequestHead writes r's head to w in the one form the edge sends to
// a service: origin-form target, HTTP/1.1, Host, the framing the edge
// chose (Content-Length, or Transfer-Encoding: chunked) and the headers in
// sorted order. Header values were checked when read, or set by the edge.
func writeRequestHead(w *bufio.Writer, r *h1Request, host string) error {
	w.WriteString(r.Method)
	w.WriteByte(' ')
	w.WriteString(r.URL.RequestURI())
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	switch {
	case r.chunked:
		w.WriteString("Transfer-Encoding: chunked\r\n")
	case r.ContentLength > 0 || sendsZeroLength(r.Method):
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.FormatInt(r.ContentLength, 10))
		w.WriteString("\r\n")
	}
	if err := r.Header.Write(w); err != nil {
		return err
	}
	_, err := w.WriteString("\r\n")
	return err
}

// sendsZeroLength: a request of this method states an empty body, as Go's
// client does, so the service does not wait for one.
func sendsZeroLength(method string) bool {
	return method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
}
