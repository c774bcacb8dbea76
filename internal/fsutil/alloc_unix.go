//go:build !windows

package fsutil

import (
	"os"
	"syscall"
)

// Allocated is what the file occupies on the host file system (st_blocks;
// the apparent size when unknown).
func Allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}
