//go:build !linux

package fsutil

import "os"

// StartWriteback is a no-op here (see the Linux version).
func StartWriteback(f *os.File) error { return nil }
