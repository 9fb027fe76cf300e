// Package buildinfo says which build a binary is: its version, the commit
// it was built from and the build date, for --version and for bug reports.
//
// make build and make dist set the three with the linker
// (-X github.com/tunnelhq/tunnel/internal/buildinfo.version=... and .commit,
// .date), so that a release binary names its release. A plain "go build" or
// "go install" sets none of them; the commit and its time then come from
// what the go command stamped into the binary (runtime/debug.ReadBuildInfo),
// so even such a binary can say where it came from.
package buildinfo

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set by the linker; see the package doc. Empty means not set.
var (
	version string
	commit  string
	date    string
)

// Info is what a binary knows about its build. An empty field is unknown.
type Info struct {
	Version string // the release, "1.2.0", or "dev" for a build that is none
	Commit  string // the full commit hash, with "-dirty" if the tree had changes
	Date    string // the build date, RFC 3339 in UTC
	Go      string // the Go release and target, "go1.26.8 linux/arm GOARM=6"
}

// Get returns this binary's Info.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(version, commit, date, bi)
}

// resolve prefers what the linker set and falls back to bi (which may be
// nil) for each field it left empty.
func resolve(version, commit, date string, bi *debug.BuildInfo) Info {
	info := Info{Version: version, Commit: commit, Date: date, Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		bi = &debug.BuildInfo{}
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if info.Version == "" {
		// A module version, "v1.2.0", when installed with go install
		// MODULE@VERSION; "(devel)" from a checkout.
		info.Version = strings.TrimPrefix(bi.Main.Version, "v")
		if info.Version == "" || info.Version == "(devel)" {
			info.Version = "dev"
		}
	}
	if info.Commit == "" {
		info.Commit = settings["vcs.revision"]
		if info.Commit != "" && settings["vcs.modified"] == "true" {
			info.Commit += "-dirty"
		}
	}
	if info.Date == "" {
		info.Date = settings["vcs.time"]
	}
	if arm := settings["GOARM"]; arm != "" && runtime.GOARCH == "arm" {
		info.Go += " GOARM=" + arm
	}
	return info
}

// Write prints info as --version does, one field a line, the program's
// name first, "unknown" for what is not known:
//
//	tunnel version 1.2.0
//	commit: 64af2ac0d9...
//	built:  2026-11-30T18:12:20Z
//	go:     go1.26.8 linux/amd64
func (info Info) Write(w io.Writer, program string) error {
	orUnknown := func(s string) string {
		if s == "" {
			return "unknown"
		}
		return s
	}
	_, err := fmt.Fprintf(w, "%s version %s\ncommit: %s\nbuilt:  %s\ngo:     %s\n",
		program, orUnknown(info.Version), orUnknown(info.Commit), orUnknown(info.Date), info.Go)
	return err
}
