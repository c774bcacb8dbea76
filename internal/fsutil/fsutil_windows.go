//go:build windows

package fsutil

// syncDir is a no-op on Windows: NTFS journals directory entries and a
// directory handle cannot be flushed through os.File.
func syncDir(dir string) error { return nil }
