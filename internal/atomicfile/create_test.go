package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestCreate_WritesOnceAndNeverReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ca.pem")
	if err := Create(path, []byte("cert"), 0o644); err != nil {
		t.Fatalf("Create: got %v, want nil", err)
	}
	if err := Create(path, []byte("other"), 0o644); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create over an existing file: got %v, want fs.ErrExist", err)
	}
	data, err := os.ReadFile(path)
	if err != nil || string(data) != "cert" {
		t.Fatalf("content: got %q, %v; want %q", data, err, "cert")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o644 {
		t.Fatalf("mode: got %o, want 644", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("files in the directory: got %d, want 1 (no temporary file left)", len(entries))
	}
}
