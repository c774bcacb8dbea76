//go:build windows

package fsutil

import "os"

// syncDir is a no-op on Windows: NTFS journals directory entries and a
// directory handle cannot be flushed through os.File.
func syncDir(dir string) error { return nil }

// OpenRead is os.Open (see the Unix version for why it exists).
func OpenRead(path string) (*os.File, error) { return os.Open(path) }
