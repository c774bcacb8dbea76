//go:build windows

package fsutil

import "os"

// Allocated: NTFS allocation is not in os.FileInfo; Hyper-V disk files are
// not sparse there, so the size is what they occupy.
func Allocated(fi os.FileInfo) int64 { return fi.Size() }
