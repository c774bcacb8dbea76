// Package fsutil holds the file-system primitives hvsnap's writers rely on:
// durable directory updates, atomic replacement and per-OS details.
package fsutil

import (
	"io"
	"os"
	"path/filepath"
)

// SyncDir makes a directory entry change (create, rename, remove) of path
// durable by syncing the directory that holds it.
func SyncDir(path string) error {
	return syncDir(filepath.Dir(path))
}

// SyncFile fsyncs the file at path.
func SyncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// AtomicRename renames tmp to dst and makes the change durable.
func AtomicRename(tmp, dst string) error {
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	return SyncDir(dst)
}

// CountingWriter passes writes to W and counts the bytes written in N.
type CountingWriter struct {
	W io.Writer
	N int64
}

func (c *CountingWriter) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	c.N += int64(n)
	return n, err
}
