package inspect

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/internal/httpserve"
)

//go:embed page
var pageFS embed.FS

// Serve serves Handler on ln until ctx ends, then shuts the server down;
// the page's event streams end with ctx. It returns once the server has.
func (in *Inspector) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           in.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	if err := httpserve.Serve(ctx, srv, ln, 2*time.Second, nil); err != nil {
		return fmt.Errorf("inspect: serve: %w", err)
	}
	return nil
}

// Handler serves the page at / and the JSON API under /api/ (see README,
// "The request inspector"). It answers only a Host that is localhost or an
// IP address, and, with Config.Token set, API requests only with the token.
func (in *Inspector) Handler() http.Handler {
	mx := http.NewServeMux()
	page, _ := fs.Sub(pageFS, "page")
	mx.Handle("GET /", http.FileServerFS(page))
	mx.HandleFunc("GET /api/exchanges", in.handleList)
	mx.HandleFunc("DELETE /api/exchanges", in.handleClear)
	mx.HandleFunc("GET /api/exchanges/{id}", in.handleGet)
	mx.HandleFunc("POST /api/exchanges/{id}/replay", in.handleReplay)
	mx.HandleFunc("GET /api/exchanges/{id}/har", in.handleHAROne)
	mx.HandleFunc("GET /api/har", in.handleHAR)
	mx.HandleFunc("GET /api/events", in.handleEvents)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !literalHost(r.Host) {
			http.Error(w, "the inspector answers only Host: localhost or an IP address", http.StatusForbidden)
			return
		}
		// The page itself (HTML, script, style) holds nothing recorded, and
		// a browser fetches its script and style without the token; every
		// recorded byte is behind /api/.
		if in.cfg.Token != "" && strings.HasPrefix(r.URL.Path, "/api/") && !in.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tunnel inspector"`)
			http.Error(w, "the inspector wants its token: Authorization: Bearer TOKEN, or ?token=TOKEN", http.StatusUnauthorized)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		mx.ServeHTTP(w, r)
	})
}

func (in *Inspector) authorized(r *http.Request) bool {
	got := r.URL.Query().Get("token")
	if auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got = auth
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(in.cfg.Token)) == 1
}

// literalHost reports whether host (with or without a port) is "localhost"
// or an IP address: a name a DNS rebinding attack cannot use.
func literalHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
	return strings.EqualFold(host, "localhost") || net.ParseIP(host) != nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// listJSON is GET /api/exchanges.
type listJSON struct {
	Exchanges   []Summary `json:"exchanges"`    // newest first
	Total       int       `json:"total"`        // stored, before filters
	MemoryBytes int64     `json:"memory_bytes"` // held by the recorded exchanges
}

func (in *Inspector) handleList(w http.ResponseWriter, r *http.Request) {
	defer in.st.reading()() // its records' bodies are not reused meanwhile
	f, err := parseFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	all := in.st.all()
	out := listJSON{Exchanges: []Summary{}, Total: len(all)}
	out.MemoryBytes, _ = in.st.stats()
	for _, e := range slices.Backward(all) {
		if f.match(e) {
			out.Exchanges = append(out.Exchanges, e.summary())
			if f.limit > 0 && len(out.Exchanges) == f.limit {
				break
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (in *Inspector) handleClear(w http.ResponseWriter, r *http.Request) {
	in.st.clear()
	w.WriteHeader(http.StatusNoContent)
}

// exchange returns the exchange the path's {id} names, or answers 404.
func (in *Inspector) exchange(w http.ResponseWriter, r *http.Request) *Exchange {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	var e *Exchange
	if err == nil {
		e = in.st.get(id)
	}
	if e == nil {
		writeError(w, http.StatusNotFound, "no such exchange: it may have been forgotten to keep memory within its cap")
	}
	return e
}

// detailJSON is GET /api/exchanges/{id}.
type detailJSON struct {
	Summary
	Target   string       `json:"target"`
	Host     string       `json:"host"`
	Request  messageJSON  `json:"request"`
	Response *messageJSON `json:"response,omitempty"`
}

type messageJSON struct {
	Proto   string      `json:"proto"`
	Status  int         `json:"status,omitempty"`
	Headers [][2]string `json:"headers"` // name, value; sorted by name
	Body    bodyJSON    `json:"body"`
}

func headerList(h http.Header) [][2]string {
	out := [][2]string{}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	}) {
		for _, v := range h[k] {
			out = append(out, [2]string{k, v})
		}
	}
	return out
}

func detail(e *Exchange) detailJSON {
	d := detailJSON{
		Summary: e.Summary(), Target: e.Target, Host: e.Host,
		Request: messageJSON{Proto: e.Proto, Headers: headerList(e.ReqHeader), Body: makeBodyJSON(e.ReqHeader, e.ReqBody)},
	}
	if e.Status != 0 {
		d.Response = &messageJSON{Proto: e.RespProto, Status: e.Status, Headers: headerList(e.RespHeader), Body: makeBodyJSON(e.RespHeader, e.RespBody)}
	}
	return d
}

func (in *Inspector) handleGet(w http.ResponseWriter, r *http.Request) {
	defer in.st.reading()() // its records' bodies are not reused meanwhile
	if e := in.exchange(w, r); e != nil {
		writeJSON(w, http.StatusOK, detail(e))
	}
}

// Edit is POST /api/exchanges/{id}/replay's optional body: what to
// change before sending the request again. Absent fields keep the
// original's.
type Edit struct {
	Method  string      `json:"method"`
	URL     string      `json:"url"`     // path and query
	Headers [][2]string `json:"headers"` // replace all headers when not null
	Body    *string     `json:"body"`    // the body as text
	Body64  *string     `json:"body_base64"`
}

// maxEdit bounds an edited request sent to POST .../replay.
const maxEdit = 16 << 20

func (in *Inspector) handleReplay(w http.ResponseWriter, r *http.Request) {
	defer in.st.reading()() // its records' bodies are not reused meanwhile
	orig := in.exchange(w, r)
	if orig == nil {
		return
	}
	var edit Edit
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEdit))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "edit too large")
		return
	}
	if len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, &edit); err != nil {
			writeError(w, http.StatusBadRequest, "edit: "+err.Error())
			return
		}
	}
	e, err := in.Replay(r.Context(), orig, edit)
	var re *replayError
	switch {
	case errors.As(err, &re):
		writeError(w, re.status, re.Error())
	case err != nil:
		writeError(w, http.StatusBadGateway, err.Error())
	default:
		writeJSON(w, http.StatusOK, detail(e))
	}
}

type replayError struct {
	status int
	msg    string
}

func (e *replayError) Error() string { return e.msg }

// hopHeaders are not replayed: they describe the original connection.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length"}

// Replay sends orig's request, changed by edit, to orig's local service
// again, records the new exchange (ReplayOf orig.ID) and returns it. The
// caller holds a reading window (store.reading) over orig and the result.
func (in *Inspector) Replay(ctx context.Context, orig *Exchange, edit Edit) (*Exchange, error) {
	if orig.Upgrade {
		return nil, &replayError{http.StatusConflict, "an upgrade (WebSocket) cannot be replayed"}
	}
	method, target := orig.Method, orig.URL
	if edit.Method != "" {
		method = edit.Method
	}
	if edit.URL != "" {
		target = edit.URL
	}
	if !strings.HasPrefix(target, "/") {
		return nil, &replayError{http.StatusBadRequest, "url: want a path, /..."}
	}
	header := orig.ReqHeader.Clone()
	if header == nil {
		header = http.Header{}
	}
	if edit.Headers != nil {
		header = http.Header{}
		for _, kv := range edit.Headers {
			header.Add(kv[0], kv[1])
		}
	}
	host := orig.Host
	if h := header.Get("Host"); h != "" {
		host = h
	}
	for _, k := range append(hopHeaders, "Host") {
		header.Del(k)
	}
	body := orig.ReqBody.Data
	switch {
	case edit.Body64 != nil:
		b, err := base64.StdEncoding.DecodeString(*edit.Body64)
		if err != nil {
			return nil, &replayError{http.StatusBadRequest, "body_base64: " + err.Error()}
		}
		body = b
	case edit.Body != nil:
		body = []byte(*edit.Body)
	case orig.ReqBody.Truncated():
		return nil, &replayError{http.StatusConflict, "the request body was larger than the inspector keeps (--inspect-max-body): it cannot be replayed as it was"}
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+orig.Target+target, bytes.NewReader(body))
	if err != nil {
		return nil, &replayError{http.StatusBadRequest, err.Error()}
	}
	req.Host = host
	req.Header = header
	if len(body) == 0 && (method == http.MethodGet || method == http.MethodHead) {
		req.Body, req.ContentLength = http.NoBody, 0
	}

	reqBody := newCapture(in.st, in.cfg.MaxBody)
	reqBody.Write(body)
	ex := &Exchange{
		ReplayOf: orig.ID, Tunnel: orig.Tunnel, Target: orig.Target, Visitor: "replay",
		Start: time.Now(), Method: method, URL: target, Host: host, Proto: "HTTP/1.1",
		ReqHeader: header.Clone(),
	}
	resp, err := replayClient.Do(req)
	if err != nil {
		ex.Duration = time.Since(ex.Start)
		ex.ReqBody = reqBody.body()
		ex.Err = "replay: " + err.Error()
		in.st.addExchange(ex, reqBody.cost())
		return ex, nil
	}
	defer resp.Body.Close()
	respBody := newCapture(in.st, in.cfg.MaxBody)
	_, err = io.Copy(respBody, resp.Body)
	ex.Duration = time.Since(ex.Start)
	ex.Status, ex.RespProto, ex.RespHeader = resp.StatusCode, resp.Proto, resp.Header
	ex.ReqBody, ex.RespBody = reqBody.body(), respBody.body()
	if err != nil {
		ex.Err = "replay: reading the response: " + err.Error()
	}
	in.st.addExchange(ex, reqBody.cost()+respBody.cost())
	return ex, nil
}

// replayClient sends replays: one connection each (a replay is rare, and a
// pooled connection would outlive the inspector), the response as the
// service sent it (no transparent gzip), redirects not followed.
var replayClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true, ResponseHeaderTimeout: time.Minute},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
	Timeout: 2 * time.Minute,
}

func (in *Inspector) handleHAR(w http.ResponseWriter, r *http.Request) {
	defer in.st.reading()() // its records' bodies are not reused meanwhile
	f, err := parseFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var exs []*Exchange
	for _, e := range in.st.all() {
		if f.match(e) {
			exs = append(exs, e.exchange())
		}
	}
	w.Header().Set("Content-Disposition", `attachment; filename="tunnel.har"`)
	writeJSON(w, http.StatusOK, harOf(exs, in.cfg.Version))
}

func (in *Inspector) handleHAROne(w http.ResponseWriter, r *http.Request) {
	defer in.st.reading()() // its records' bodies are not reused meanwhile
	if e := in.exchange(w, r); e != nil {
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="tunnel-%d.har"`, e.ID))
		writeJSON(w, http.StatusOK, harOf([]*Exchange{e}, in.cfg.Version))
	}
}

// handleEvents streams server-sent events: "exchange" with a Summary as
// each exchange is recorded, "clear" when the list is cleared. A page that
// falls behind is disconnected; its EventSource reconnects and lists again.
func (in *Inspector) handleEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	ch, cancel := in.st.subscribe()
	defer cancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, ": connected\n\n")
	fl.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if ev.cleared {
				io.WriteString(w, "event: clear\ndata: {}\n\n")
			} else {
				b, _ := json.Marshal(ev.sum)
				fmt.Fprintf(w, "event: exchange\ndata: %s\n\n", b)
			}
			fl.Flush()
		}
	}
}
