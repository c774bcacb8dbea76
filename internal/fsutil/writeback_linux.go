//go:build linux

package fsutil

import (
	"os"

	"golang.org/x/sys/unix"
)

// StartWriteback asks the kernel to begin writing f's dirty pages to the
// device now (sync_file_range SYNC_FILE_RANGE_WRITE over the whole file),
// without waiting for them. It is only a hint that lets a long copy overlap
// its writes with the device: durability still comes from Sync.
func StartWriteback(f *os.File) error {
	return unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
