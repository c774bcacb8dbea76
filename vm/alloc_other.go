//go:build !unix

package vm

import "os"

// allocatedBytes returns the file size: allocation is not queried on this
// OS (on Windows a sparse VHDX would need GetCompressedFileSize).
func allocatedBytes(fi os.FileInfo) int64 { return fi.Size() }
