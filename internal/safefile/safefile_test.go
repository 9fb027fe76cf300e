package safefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	for _, data := range []string{"first\n", "second\n"} {
		if err := Replace(path, []byte(data), 0o600); err != nil {
			t.Fatalf("Replace(%q): got %v, want nil", data, err)
		}
		checkFile(t, path, data, 0o600)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("files in dir: got %d, want 1 (no temporary file left)", len(entries))
	}
}

func TestCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := Create(path, []byte("cert\n"), 0o644); err != nil {
		t.Fatalf("Create: got %v, want nil", err)
	}
	checkFile(t, path, "cert\n", 0o644)
	if err := Create(path, []byte("other\n"), 0o644); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create over an existing file: got %v, want fs.ErrExist", err)
	}
	checkFile(t, path, "cert\n", 0o644)
}

func checkFile(t *testing.T, path, want string, perm fs.FileMode) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || string(got) != want {
		t.Fatalf("read %s: got (%q, %v), want %q", path, got, err, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != perm {
		t.Fatalf("mode of %s: got %o, want %o", path, got, perm)
	}
}
