// Package safefile writes the files tunneld keeps on disk (the tokens file,
// the development CA and certificates) so that a crash or a second process
// never leaves a half-written key or replaces one it should not.
//
// It exists because two packages write such files, pkg/token and
// pkg/devcert, and neither should import the other. Both functions set the
// file mode explicitly, whatever the umask, and fsync before returning.
package safefile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Replace replaces path with data: it writes a temporary file in the same
// directory (so the rename cannot cross filesystems), sets perm explicitly
// (independent of the umask), fsyncs it, renames it over path and fsyncs
// the directory so the rename itself survives a crash.
func Replace(path string, data []byte, perm fs.FileMode) (err error) {
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
	if err := fill(tmp, data, perm); err != nil {
		return err
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

// Create creates path with perm (independent of the umask) and writes data
// to it, failing if path already exists. On error it removes the file it
// created.
func Create(path string, data []byte, perm fs.FileMode) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	return fill(f, data, perm)
}

// fill sets f's mode to perm, writes data, fsyncs and closes f.
func fill(f *os.File, data []byte, perm fs.FileMode) error {
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.Name(), err)
	}
	return nil
}
