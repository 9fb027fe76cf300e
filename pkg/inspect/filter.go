package inspect

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// filter is the query of GET /api/exchanges and GET /api/har; every
// condition given must hold.
//
//	status=2xx,404     status classes or codes
//	method=GET,POST    methods
//	path=/hook         substring of the URL (path and query)
//	header=Name:value  a request or response header Name whose value contains value (value optional)
//	q=text             text in the URL or either body (decompressed), any case
//	min_ms, max_ms     duration bounds, milliseconds
//	min_size, max_size bounds on request plus response body bytes
//	tunnel=name        the tunnel
//	limit=N            at most N, newest first (list only)
type filter struct {
	status           []string
	methods          []string
	path             string
	headerName       string
	headerValue      string
	q                []byte
	minDur, maxDur   time.Duration
	minSize, maxSize int64
	tunnel           string
	limit            int
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseFilter(r *http.Request) (filter, error) {
	q := r.URL.Query()
	f := filter{
		status:  splitList(strings.ToLower(q.Get("status"))),
		methods: splitList(strings.ToUpper(q.Get("method"))),
		path:    q.Get("path"),
		tunnel:  q.Get("tunnel"),
		maxDur:  -1,
		maxSize: -1,
	}
	if h := q.Get("header"); h != "" {
		name, value, _ := strings.Cut(h, ":")
		f.headerName, f.headerValue = http.CanonicalHeaderKey(strings.TrimSpace(name)), strings.ToLower(strings.TrimSpace(value))
	}
	if s := q.Get("q"); s != "" {
		f.q = bytes.ToLower([]byte(s))
	}
	for _, n := range []struct {
		key string
		dst *int64
	}{{"min_size", &f.minSize}, {"max_size", &f.maxSize}} {
		if s := q.Get(n.key); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v < 0 {
				return f, fmt.Errorf("%s=%q: want bytes", n.key, s)
			}
			*n.dst = v
		}
	}
	for _, n := range []struct {
		key string
		dst *time.Duration
	}{{"min_ms", &f.minDur}, {"max_ms", &f.maxDur}} {
		if s := q.Get(n.key); s != "" {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || v < 0 {
				return f, fmt.Errorf("%s=%q: want milliseconds", n.key, s)
			}
			*n.dst = time.Duration(v * float64(time.Millisecond))
		}
	}
	if s := q.Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			return f, fmt.Errorf("limit=%q: want a number", s)
		}
		f.limit = v
	}
	for _, s := range f.status {
		if len(s) != 3 || (s[1:] != "xx" && strings.Trim(s, "0123456789") != "") {
			return f, fmt.Errorf("status=%q: want classes like 2xx or codes like 404", s)
		}
	}
	return f, nil
}

func (f filter) match(e *record) bool {
	if len(f.status) > 0 && !f.statusMatch(e.status) {
		return false
	}
	if len(f.methods) > 0 && !contains(f.methods, e.field(fMethod)) {
		return false
	}
	if f.path != "" && !strings.Contains(e.field(fURL), f.path) {
		return false
	}
	if f.tunnel != "" && e.field(fTunnel) != f.tunnel {
		return false
	}
	if e.duration < f.minDur || (f.maxDur >= 0 && e.duration > f.maxDur) {
		return false
	}
	size := e.reqBody.Size + e.respBody.Size
	if size < f.minSize || (f.maxSize >= 0 && size > f.maxSize) {
		return false
	}
	if f.headerName != "" && !headerHas(e.field(fReqHeader), f.headerName, f.headerValue) && !headerHas(e.field(fRespHeader), f.headerName, f.headerValue) {
		return false
	}
	if f.q != nil && !f.search(e) {
		return false
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (f filter) statusMatch(status int) bool {
	code := strconv.Itoa(status)
	for _, s := range f.status {
		if s == code || (s[1:] == "xx" && len(code) == 3 && code[0] == s[0]) {
			return true
		}
	}
	return false
}

// headerHas reports whether the encoded header enc has a header name
// (canonical) whose value contains value (lower case).
func headerHas(enc, name, value string) bool {
	for k, v := range headerPairs(enc) {
		if k == name && strings.Contains(strings.ToLower(v), value) {
			return true
		}
	}
	return false
}

// search looks for f.q in the URL and the bodies, decompressed.
func (f filter) search(e *record) bool {
	if bytes.Contains(bytes.ToLower([]byte(e.field(fURL))), f.q) {
		return true
	}
	for _, b := range []struct {
		h    string
		body Body
	}{{e.field(fReqHeader), e.reqBody}, {e.field(fRespHeader), e.respBody}} {
		data, _ := decoded(headerGet(b.h, "Content-Encoding"), b.body)
		if bytes.Contains(bytes.ToLower(data), f.q) {
			return true
		}
	}
	return false
}
