//go:build unix

package vm

import (
	"os"
	"syscall"
)

// allocatedBytes returns the bytes the file occupies on the host file system
// (st_blocks × 512), which is less than the size for sparse files.
func allocatedBytes(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}
