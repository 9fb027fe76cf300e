package inspect_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/inspect"
)

// send makes one visitor request through the rig and waits until it is
// recorded.
func (r *rig) send(t *testing.T, c *http.Client, method, path, body string, header ...string) inspect.Summary {
	t.Helper()
	req, err := http.NewRequest(method, "http://wiki.example"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return r.wait(t)
}

func apiDo(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type detail struct {
	inspect.Summary
	Request struct {
		Headers [][2]string `json:"headers"`
		Body    struct {
			Text string `json:"text"`
		} `json:"body"`
	} `json:"request"`
	Response *struct {
		Status  int         `json:"status"`
		Headers [][2]string `json:"headers"`
		Body    struct {
			Text string `json:"text"`
		} `json:"body"`
	} `json:"response"`
}

func TestAPI_ListFilters(t *testing.T) {
	var hits atomic.Int64
	r := newRig(t, inspect.DefaultConfig(), echoService(&hits))
	c := r.client(t)
	r.send(t, c, "POST", "/hook/github", `{"action":"opened"}`, "X-Github-Event", "pull_request")
	r.send(t, c, "GET", "/missing/page", "")
	r.send(t, c, "DELETE", "/hook/stripe", "")
	for _, tc := range []struct {
		query string
		want  []string // URLs, newest first
	}{
		{"", []string{"/hook/stripe", "/missing/page", "/hook/github"}},
		{"status=4xx", []string{"/missing/page"}},
		{"status=200,404", []string{"/hook/stripe", "/missing/page", "/hook/github"}},
		{"method=post,delete", []string{"/hook/stripe", "/hook/github"}},
		{"path=/hook/", []string{"/hook/stripe", "/hook/github"}},
		{"header=X-GitHub-Event:pull", []string{"/hook/github"}},
		{"header=x-github-event", []string{"/hook/github"}},
		{"q=OPENED", []string{"/hook/github"}},
		{"min_size=1000000", nil},
		{"max_ms=600000&min_ms=0", []string{"/hook/stripe", "/missing/page", "/hook/github"}},
		{"limit=1", []string{"/hook/stripe"}},
		{"tunnel=other", nil},
	} {
		var l list
		if code := getJSON(t, http.DefaultClient, r.api.URL+"/api/exchanges?"+tc.query, &l); code != http.StatusOK {
			t.Errorf("%s: status %d", tc.query, code)
			continue
		}
		var got []string
		for _, s := range l.Exchanges {
			got = append(got, s.URL)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("?%s: got %v, want %v", tc.query, got, tc.want)
		}
	}
	if code, _ := apiDo(t, "GET", r.api.URL+"/api/exchanges?status=abc", ""); code != http.StatusBadRequest {
		t.Errorf("bad status filter: %d, want 400", code)
	}
}

func TestAPI_GetOneAndNotFound(t *testing.T) {
	var hits atomic.Int64
	r := newRig(t, inspect.DefaultConfig(), echoService(&hits))
	s := r.send(t, r.client(t), "POST", "/hook", `{"a":1}`, "Authorization", "Bearer sk_live", "Content-Type", "application/json")
	var d detail
	getJSON(t, http.DefaultClient, fmt.Sprintf("%s/api/exchanges/%d", r.api.URL, s.ID), &d)
	if d.Request.Body.Text != `{"a":1}` || d.Response == nil || d.Response.Status != 200 {
		t.Fatalf("detail %+v: want the request body and a 200", d)
	}
	if !strings.Contains(d.Response.Body.Text, `"method":"POST"`) {
		t.Errorf("response body %q, want the service's echo", d.Response.Body.Text)
	}
	// The API gives header values as they were: masking is the page's.
	found := false
	for _, kv := range d.Request.Headers {
		found = found || (kv[0] == "Authorization" && kv[1] == "Bearer sk_live")
	}
	if !found {
		t.Errorf("request headers %v lack Authorization as sent", d.Request.Headers)
	}
	if code, _ := apiDo(t, "GET", r.api.URL+"/api/exchanges/999", ""); code != http.StatusNotFound {
		t.Errorf("unknown id: %d, want 404", code)
	}
}

// TestAPI_ReplayReachesTheServiceAgain: a replay is a new request to the
// local service (it counts it), recorded as a new exchange that names the
// original; an edited replay sends the edited body and method.
func TestAPI_ReplayReachesTheServiceAgain(t *testing.T) {
	var hits atomic.Int64
	r := newRig(t, inspect.DefaultConfig(), echoService(&hits))
	orig := r.send(t, r.client(t), "POST", "/hook?id=7", `{"n":1}`, "Content-Type", "application/json")

	code, b := apiDo(t, "POST", fmt.Sprintf("%s/api/exchanges/%d/replay", r.api.URL, orig.ID), "")
	if code != http.StatusOK {
		t.Fatalf("replay: %d %s", code, b)
	}
	var d detail
	json.Unmarshal(b, &d)
	if hits.Load() != 2 {
		t.Errorf("the service saw %d requests, want 2", hits.Load())
	}
	if d.ReplayOf != orig.ID || d.Response == nil || !strings.Contains(d.Response.Body.Text, `"body":"{\"n\":1}"`) || !strings.Contains(d.Response.Body.Text, `"path":"/hook?id=7"`) {
		t.Errorf("replay %+v: want replay_of %d and the same request echoed", d, orig.ID)
	}
	if s := r.wait(t); s.ID != d.ID {
		t.Errorf("recorded %d, want the replay %d", s.ID, d.ID)
	}

	code, b = apiDo(t, "POST", fmt.Sprintf("%s/api/exchanges/%d/replay", r.api.URL, orig.ID), `{"method":"PUT","url":"/hook?id=8","body":"{\"n\":2}"}`)
	if code != http.StatusOK {
		t.Fatalf("edited replay: %d %s", code, b)
	}
	json.Unmarshal(b, &d)
	if !strings.Contains(d.Response.Body.Text, `"body":"{\"n\":2}"`) || !strings.Contains(d.Response.Body.Text, `"method":"PUT"`) || !strings.Contains(d.Response.Body.Text, "id=8") {
		t.Errorf("edited replay answered %s, want the edit echoed", d.Response.Body.Text)
	}
	r.wait(t)
	if code, _ := apiDo(t, "POST", r.api.URL+"/api/exchanges/999/replay", ""); code != http.StatusNotFound {
		t.Errorf("replay of an unknown id: %d, want 404", code)
	}
	if code, _ := apiDo(t, "POST", fmt.Sprintf("%s/api/exchanges/%d/replay", r.api.URL, orig.ID), `{"url":"http://elsewhere/"}`); code != http.StatusBadRequest {
		t.Errorf("replay to a URL that is not a path: %d, want 400", code)
	}
}

func TestAPI_ClearForgetsAll(t *testing.T) {
	var hits atomic.Int64
	r := newRig(t, inspect.DefaultConfig(), echoService(&hits))
	r.send(t, r.client(t), "GET", "/a", "")
	if code, _ := apiDo(t, "DELETE", r.api.URL+"/api/exchanges", ""); code != http.StatusNoContent {
		t.Fatalf("clear: %d", code)
	}
	var l list
	getJSON(t, http.DefaultClient, r.api.URL+"/api/exchanges", &l)
	if l.Total != 0 || l.Memory != 0 {
		t.Errorf("after clear: %d exchanges, %d bytes; want none", l.Total, l.Memory)
	}
}

// TestAPI_HARIsHAR12: the export has what HAR 1.2 requires of a log and
// its entries.
func TestAPI_HARIsHAR12(t *testing.T) {
	var hits atomic.Int64
	r := newRig(t, inspect.DefaultConfig(), echoService(&hits))
	c := r.client(t)
	s1 := r.send(t, c, "POST", "/hook?x=1", `{"a":1}`, "Content-Type", "application/json")
	r.send(t, c, "GET", "/missing", "")
	for _, tc := range []struct {
		path    string
		entries int
	}{{"/api/har", 2}, {"/api/har?status=4xx", 1}, {fmt.Sprintf("/api/exchanges/%d/har", s1.ID), 1}} {
		code, b := apiDo(t, "GET", r.api.URL+tc.path, "")
		if code != http.StatusOK {
			t.Fatalf("%s: %d", tc.path, code)
		}
		checkHAR(t, b, tc.entries)
	}
}

// checkHAR checks the fields HAR 1.2 marks required.
func checkHAR(t *testing.T, b []byte, entries int) {
	t.Helper()
	var har struct {
		Log *struct {
			Version string `json:"version"`
			Creator *struct {
				Name    string `json:"name"`
				Version string `json:"version"`
			} `json:"creator"`
			Entries []map[string]json.RawMessage `json:"entries"`
		} `json:"log"`
	}
	if err := json.Unmarshal(b, &har); err != nil {
		t.Fatalf("HAR is not JSON: %v", err)
	}
	if har.Log == nil || har.Log.Version != "1.2" || har.Log.Creator == nil || har.Log.Creator.Name == "" {
		t.Fatalf("HAR log header wrong: %s", b)
	}
	if len(har.Log.Entries) != entries {
		t.Fatalf("%d entries, want %d", len(har.Log.Entries), entries)
	}
	for _, e := range har.Log.Entries {
		for _, k := range []string{"startedDateTime", "time", "request", "response", "cache", "timings"} {
			if _, ok := e[k]; !ok {
				t.Errorf("entry lacks %s", k)
			}
		}
		var started string
		json.Unmarshal(e["startedDateTime"], &started)
		if _, err := time.Parse(time.RFC3339Nano, started); err != nil {
			t.Errorf("startedDateTime %q: %v", started, err)
		}
		var req, resp map[string]json.RawMessage
		json.Unmarshal(e["request"], &req)
		json.Unmarshal(e["response"], &resp)
		for _, k := range []string{"method", "url", "httpVersion", "cookies", "headers", "queryString", "headersSize", "bodySize"} {
			if _, ok := req[k]; !ok {
				t.Errorf("request lacks %s", k)
			}
		}
		for _, k := range []string{"status", "statusText", "httpVersion", "cookies", "headers", "content", "redirectURL", "headersSize", "bodySize"} {
			if _, ok := resp[k]; !ok {
				t.Errorf("response lacks %s", k)
			}
		}
		var u string
		json.Unmarshal(req["url"], &u)
		if !strings.HasPrefix(u, "http://wiki.example/") {
			t.Errorf("request url %q is not absolute", u)
		}
	}
}

// TestAPI_EventsPushEachExchange: the event stream tells of each exchange
// as it is recorded, and of a clear.
func TestAPI_EventsPushEachExchange(t *testing.T) {
	var hits atomic.Int64
	r := newRig(t, inspect.DefaultConfig(), echoService(&hits))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", r.api.URL+"/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func(prefix string) string {
		for {
			l, ok := <-lines
			if !ok {
				t.Fatalf("event stream ended, waiting for %q", prefix)
			}
			if rest, found := strings.CutPrefix(l, prefix); found {
				return rest
			}
		}
	}
	next(": connected")
	r.send(t, r.client(t), "GET", "/pushed", "")
	if ev := next("event: "); ev != "exchange" {
		t.Fatalf("event %q, want exchange", ev)
	}
	var s inspect.Summary
	json.Unmarshal([]byte(next("data: ")), &s)
	if s.URL != "/pushed" {
		t.Errorf("pushed %+v, want /pushed", s)
	}
	apiDo(t, "DELETE", r.api.URL+"/api/exchanges", "")
	if ev := next("event: "); ev != "clear" {
		t.Errorf("event %q, want clear", ev)
	}
	cancel()
	for range lines {
	}
}

// TestAPI_HostAndToken: only a literal Host is answered (DNS rebinding),
// and with a token only requests that carry it.
func TestAPI_HostAndToken(t *testing.T) {
	cfg := inspect.DefaultConfig()
	cfg.Token = "s3cret"
	in, err := inspect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(in.Handler())
	defer srv.Close()
	for _, tc := range []struct {
		host, auth, query string
		want              int
	}{
		{"evil.example:4040", "Bearer s3cret", "", http.StatusForbidden},
		{"localhost:4040", "", "", http.StatusUnauthorized},
		{"localhost:4040", "Bearer wrong", "", http.StatusUnauthorized},
		{"localhost:4040", "Bearer s3cret", "", http.StatusOK},
		{"127.0.0.1:4040", "", "token=s3cret", http.StatusOK},
		{"[::1]:4040", "Bearer s3cret", "", http.StatusOK},
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/api/exchanges?"+tc.query, nil)
		req.Host = tc.host
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("Host %s, auth %q, query %q: %d, want %d", tc.host, tc.auth, tc.query, resp.StatusCode, tc.want)
		}
	}
	// The page and its script load without the token (a browser sends
	// none for them); the API behind them wants it.
	for path, want := range map[string]int{"/": http.StatusOK, "/app.js": http.StatusOK, "/api/events": http.StatusUnauthorized, "/api/har": http.StatusUnauthorized} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s without the token: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func TestInspector_Serve(t *testing.T) {
	in, err := inspect.New(inspect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := newListener(t)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Serve(ctx, ln) }()
	// An open event stream must not hold the shutdown.
	resp, err := http.Get("http://" + ln.Addr().String() + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	code, body := apiDo(t, "GET", "http://"+ln.Addr().String()+"/", "")
	if code != http.StatusOK || !strings.Contains(string(body), "<html") {
		t.Errorf("page: %d %.60q", code, body)
	}
	cancel()
	if err := testwait.Recv(t, done, 5*time.Second); err != nil {
		t.Errorf("Serve: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
}
