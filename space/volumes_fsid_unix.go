//go:build unix

package space

import (
	"os"
	"strconv"
	"syscall"
)

// fsID identifies the file system under a mount point (st_dev), so bind
// mounts of one file system can be told apart from separate volumes.
func fsID(mount string) string {
	fi, err := os.Stat(mount)
	if err != nil {
		return ""
	}
	return statFSID(fi)
}

// statFSID is the fsID of the file system holding the file fi describes.
func statFSID(fi os.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return strconv.FormatUint(uint64(st.Dev), 10)
	}
	return ""
}
