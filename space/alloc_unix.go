//go:build !windows

package space

import (
	"os"
	"syscall"
)

// allocatedBytes is what the file occupies on the host file system.
func allocatedBytes(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}
