package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBuild writes the SBOM of this test binary and checks its SPDX
// fields. Like sbom, the binary links only the standard library, so the
// SBOM names the binary and the Go release it contains.
func TestBuild(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "sbom.json")
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	if err := run("tunnel", "1.2.0", out, []string{exe}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var doc document
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if doc.SPDXVersion != "SPDX-2.3" || doc.CreationInfo.Created != time.Unix(1700000000, 0).UTC().Format(time.RFC3339) {
		t.Errorf("got version %q created %q, want SPDX-2.3 at SOURCE_DATE_EPOCH", doc.SPDXVersion, doc.CreationInfo.Created)
	}
	var bin, goPkg *pkg
	for i, p := range doc.Packages {
		switch {
		case strings.HasPrefix(p.SPDXID, "SPDXRef-binary-"):
			bin = &doc.Packages[i]
		case p.Name == "go":
			goPkg = &doc.Packages[i]
		}
	}
	if bin == nil || len(bin.Checksums) != 1 || len(bin.Checksums[0].ChecksumValue) != 64 {
		t.Fatalf("no binary with a SHA-256 in %s", b)
	}
	if goPkg == nil || !strings.HasPrefix(goPkg.VersionInfo, "go") {
		t.Fatalf("no Go release in %s", b)
	}
	contains := false
	for _, r := range doc.Relationships {
		if r.Element == bin.SPDXID && r.Type == "CONTAINS" && r.Related == goPkg.SPDXID {
			contains = true
		}
	}
	if !contains {
		t.Errorf("the binary does not CONTAIN the Go release in %s", b)
	}
}

func TestRun_WantsVersionAndBinaries(t *testing.T) {
	if err := run("tunnel", "", "", []string{"x"}); err == nil {
		t.Error("no -version: got no error")
	}
	if err := run("tunnel", "1.2.0", "", nil); err == nil {
		t.Error("no binary: got no error")
	}
}
