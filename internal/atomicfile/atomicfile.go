// Package atomicfile replaces a file so that a crash leaves either the old
// content or the new, never a mix. It exists because two packages write files
// that a half-written state would break: the tokens file (package token,
// "tunneld token add") and the dev certificates and keys that tunneld --dev
// and "tunneld certs" write. It is internal: the guarantee is ours to keep,
// not an API for others.
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data: it writes a temporary file in the
// same directory (so the rename cannot cross filesystems), sets perm
// explicitly (independent of the umask), fsyncs it, renames it over path and
// fsyncs the directory so the rename itself survives a crash.
func Write(path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		// Some filesystems cannot fsync a directory; the data is already
		// safe in the file, so an error here is not worth failing for.
		_ = d.Sync()
		d.Close()
	}
	return nil
}
