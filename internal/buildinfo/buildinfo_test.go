package buildinfo

import (
	"bytes"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	stamped := &debug.BuildInfo{
		Main: debug.Module{Path: "github.com/tunnelhq/tunnel", Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc123"},
			{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	for _, tt := range []struct {
		name                  string
		version, commit, date string
		bi                    *debug.BuildInfo
		want                  Info
	}{
		{"linker wins", "1.2.0", "def456", "2026-11-30T00:00:00Z", stamped,
			Info{Version: "1.2.0", Commit: "def456", Date: "2026-11-30T00:00:00Z"}},
		{"vcs stamp fills the rest", "", "", "", stamped,
			Info{Version: "dev", Commit: "abc123-dirty", Date: "2026-01-02T03:04:05Z"}},
		{"go install of a release", "", "", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.3.0"}},
			Info{Version: "1.3.0"}},
		{"nothing known", "", "", "", nil, Info{Version: "dev"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := resolve(tt.version, tt.commit, tt.date, tt.bi)
			tt.want.Go = runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestInfo_Write(t *testing.T) {
	var b bytes.Buffer
	if err := (Info{Version: "1.2.0", Commit: "abc", Go: "go1.26.8 linux/amd64"}).Write(&b, "tunnel"); err != nil {
		t.Fatal(err)
	}
	want := "tunnel version 1.2.0\ncommit: abc\nbuilt:  unknown\ngo:     go1.26.8 linux/amd64\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestGet_NamesThisBinary(t *testing.T) {
	info := Get()
	if info.Version == "" || !strings.HasPrefix(info.Go, runtime.Version()) {
		t.Errorf("got %+v, want a version and %s", info, runtime.Version())
	}
}
