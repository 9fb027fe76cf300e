package atomicfile

import (
	"io/fs"
	"os"
)

// Create writes data to path as Write does, but fails if path already
// exists: it reserves the name with O_EXCL first, so of two processes
// creating the same file one gets an error instead of replacing the other's
// (pkg/devcert's CA, which must never be overwritten). On error it removes
// the file it created. A crash before the data is in place leaves an empty
// file, which a reader reports as damaged rather than missing.
func Create(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	f.Close()
	if err := Write(path, data, perm); err != nil {
		os.Remove(path) // the empty file made just above
		return err
	}
	return nil
}
