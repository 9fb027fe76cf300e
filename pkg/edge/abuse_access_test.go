package edge_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/limit"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// accessHostileRows attack a tunnel's basic auth with odd and oversized
// Authorization headers, from the attacker's address.
func accessHostileRows() []hostileRow {
	return []hostileRow{
		{"odd and huge authorization headers", nil, oddAuthorization},
		{"a password guessing run is cut off", nil, guessingRun},
	}
}

// lockedTunnel connects "locked", with basic auth for ann and a 72-byte
// password (bcrypt's most), and returns its backend's connection count.
func lockedTunnel(t *testing.T, a *abuse) (password string, conns func() int64) {
	t.Helper()
	password = strings.Repeat("p", 71) + "!"
	addr, n := countingBackend(t)
	access := &proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: bcryptHash(t, password)}}}
	if _, err := a.Connect(bobToken, mux.Tunnel{Name: "locked", Target: addr, Access: access}); err != nil {
		t.Fatal(err)
	}
	return password, n.Load
}

func basic(userpass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(userpass))
}

func oddAuthorization(t *testing.T, a *abuse) {
	password, conns := lockedTunnel(t, a)
	huge := strings.Repeat("A", 60<<10)
	tests := []struct {
		name    string
		headers string // raw header lines
		want    int    // 0: 401, or 429 once the attacker's free failures are spent
	}{
		{"empty", "Authorization: \r\n", 0},
		{"scheme alone", "Authorization: Basic\r\n", 0},
		{"not base64", "Authorization: Basic !!!!\r\n", 0},
		{"no colon", "Authorization: " + basic("ann") + "\r\n", 0},
		{"password past bcrypt's 72 bytes", "Authorization: " + basic("ann:"+password+"extra") + "\r\n", 0},
		{"NUL in the user", "Authorization: " + basic("ann\x00:"+password) + "\r\n", 0},
		{"not UTF-8", "Authorization: " + basic("\xff\xfe:\xc3\x28") + "\r\n", 0},
		{"right one and a wrong one", "Authorization: " + basic("ann:"+password) + "\r\nAuthorization: " + basic("ann:x") + "\r\n", 0},
		{"huge base64", "Authorization: Basic " + huge + "\r\n", 0},
		{"over the header limit", "Authorization: Basic " + huge + huge + "\r\n", http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tt := range tests {
		r := a.visitorRaw(t, "locked."+domain, "GET / HTTP/1.1\r\nHost: "+a.host("locked")+"\r\n"+tt.headers+"Connection: close\r\n\r\n")
		body := bodyOf(r)
		switch {
		case tt.want != 0 && r.StatusCode != tt.want:
			t.Errorf("%s: got %d %q, want %d", tt.name, r.StatusCode, body, tt.want)
		case tt.want == 0 && r.StatusCode != 401 && r.StatusCode != 429:
			t.Errorf("%s: got %d %q, want 401 (or 429 after %d failures)", tt.name, r.StatusCode, body, limit.VisitorAuthFreeFailures)
		}
	}
	if n := conns(); n != 0 {
		t.Fatalf("refused visitors made the client dial its service %d times, want 0", n)
	}
	// The attacker's failures do not lock out anyone else: the owner's
	// visitor, from 127.0.0.1, gets in with the right password.
	req, _ := http.NewRequest("GET", a.URL("locked", "/"), nil)
	req.SetBasicAuth("ann", password)
	resp, err := a.HTTPClient(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := bodyOf(resp); resp.StatusCode != 200 || body != "service ok; authorization: none" {
		t.Fatalf("the right password from another address: got %d %q, want 200", resp.StatusCode, body)
	}
	resp.Body.Close()
}

func guessingRun(t *testing.T, a *abuse) {
	password, conns := lockedTunnel(t, a)
	statuses := map[int]int{}
	for i := range 3 * limit.VisitorAuthFreeFailures {
		r := a.visitorRaw(t, "locked."+domain, "GET / HTTP/1.1\r\nHost: "+a.host("locked")+"\r\nAuthorization: "+
			basic(fmt.Sprintf("ann:guess%d", i))+"\r\nConnection: close\r\n\r\n")
		statuses[r.StatusCode]++
	}
	// Even the right password waits out the refusal.
	r := a.visitorRaw(t, "locked."+domain, "GET / HTTP/1.1\r\nHost: "+a.host("locked")+"\r\nAuthorization: "+
		basic("ann:"+password)+"\r\nConnection: close\r\n\r\n")
	statuses[r.StatusCode]++
	want := map[int]int{401: limit.VisitorAuthFreeFailures, 429: 2*limit.VisitorAuthFreeFailures + 1}
	if fmt.Sprint(statuses) != fmt.Sprint(want) {
		t.Fatalf("statuses of %d guesses and the right password: got %v, want %v", 3*limit.VisitorAuthFreeFailures, statuses, want)
	}
	if n := conns(); n != 0 {
		t.Fatalf("the guesses made the client dial its service %d times, want 0", n)
	}
}
