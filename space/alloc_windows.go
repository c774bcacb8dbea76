//go:build windows

package space

import "os"

// allocatedBytes: NTFS allocation is not in os.FileInfo; Hyper-V disk files
// are not sparse there, so the size is what they occupy.
func allocatedBytes(fi os.FileInfo) int64 { return fi.Size() }
