package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/mux"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"1MiB", 1 << 20, false}, {"64mib", 64 << 20, false}, {"512k", 512 << 10, false}, {"2G", 2 << 30, false},
		{"100", 100, false}, {"100B", 100, false}, {" 3 MiB ", 3 << 20, false}, {"0", 0, false},
		{"", 0, true}, {"-1MiB", 0, true}, {"1.5MiB", 0, true}, {"lots", 0, true}, {"99999999999G", 0, true},
	} {
		got, err := parseSize(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestInspectOff(t *testing.T) {
	for in, want := range map[string]bool{"false": true, "off": true, "": true, "FALSE": true, "127.0.0.1:4040": false, ":4040": false} {
		if got := inspectOff(in); got != want {
			t.Errorf("inspectOff(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestListenInspector_NextFreePort: the default address moves on to a
// free port when its own is taken; an address the user gave does not.
func TestListenInspector_NextFreePort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	if ln, err := listenInspector(addr, false); err == nil {
		ln.Close()
		t.Fatalf("listened on %s, taken, without next", addr)
	}
	ln, err := listenInspector(addr, true)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Addr().String() == addr {
		t.Errorf("listened on the taken %s", addr)
	}
}

// TestStartInspector_TokenOffLoopback: bound off loopback without
// --inspect-token, the inspector makes up a token, puts it in the URL
// printed, and wants it; on loopback it wants none.
func TestStartInspector_TokenOffLoopback(t *testing.T) {
	base := options{inspectMaxBody: "1MiB", inspectMaxMemory: "64MiB"}
	for _, tc := range []struct {
		addr      string
		wantToken bool
	}{{"127.0.0.1:0", false}, {"0.0.0.0:0", true}} {
		o := base
		o.inspect = tc.addr
		var cfg mux.ClientConfig
		ins, err := startInspector(o, &cfg, zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		ins.ln.Close()
		if cfg.Copier == nil {
			t.Errorf("%s: the copier is not hooked into the client", tc.addr)
		}
		_, token, hasToken := strings.Cut(ins.url, "?token=")
		if hasToken != tc.wantToken {
			t.Fatalf("%s: url %s; want a token: %v", tc.addr, ins.url, tc.wantToken)
		}
		if strings.Contains(ins.publicURL(), "token") {
			t.Errorf("publicURL %s has the token", ins.publicURL())
		}
		h := ins.in.Handler()
		req := httptest.NewRequest("GET", "http://127.0.0.1/api/exchanges", nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if want := map[bool]int{false: http.StatusOK, true: http.StatusUnauthorized}[tc.wantToken]; w.Code != want {
			t.Errorf("%s: without the token: %d, want %d", tc.addr, w.Code, want)
		}
		if tc.wantToken {
			req.Header.Set("Authorization", "Bearer "+token)
			w = httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				t.Errorf("with the token: %d, want 200", w.Code)
			}
		}
	}
	o := base
	o.inspect = "false"
	var cfg mux.ClientConfig
	if ins, err := startInspector(o, &cfg, zerolog.Nop(), nil); ins != nil || err != nil || cfg.Copier != nil {
		t.Errorf("--inspect=false: %v, %v, copier set %v; want nothing", ins, err, cfg.Copier != nil)
	}
}

// With the inspector on, the runtime's soft memory limit is the
// recordings' cap plus the headroom, so that the cap bounds the client's
// memory; a GOMEMLIMIT the user set wins.
func TestLimitMemory_CapPlusHeadroomUnlessGOMEMLIMIT(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	t.Setenv("GOMEMLIMIT", "")
	limitMemory(64 << 20)
	if got, want := debug.SetMemoryLimit(-1), int64(64<<20+inspectHeadroom); got != want {
		t.Fatalf("limit: got %d, want %d", got, want)
	}
	debug.SetMemoryLimit(before)
	t.Setenv("GOMEMLIMIT", "1GiB")
	limitMemory(64 << 20)
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("with GOMEMLIMIT set: limit %d, want it left at %d", got, before)
	}
}
