//go:build windows

package lock

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

func createFile(path string, share uint32) (*os.File, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return nil, err
	}
	h, err := windows.CreateFile(p, windows.GENERIC_READ, share, nil,
		windows.OPEN_EXISTING, windows.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(h), path), nil
}

// openForLock first probes with read sharing only: Hyper-V's worker process
// keeps a running VM's disks open for writing, so that open fails with a
// sharing violation while the VM runs. The handle kept for the lock then
// shares everything, so hvsnap's own opens of the file still work.
func openForLock(path string) (*os.File, error) {
	probe, err := createFile(path, windows.FILE_SHARE_READ)
	if err != nil {
		return nil, err
	}
	probe.Close()
	return createFile(path, windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE|windows.FILE_SHARE_DELETE)
}

// The lock covers one byte far past any real data: Windows byte-range locks
// are mandatory, and a lock inside the file would block hvsnap's own I/O.
func lockOverlapped() *windows.Overlapped {
	return &windows.Overlapped{Offset: 0xFFFFFFFE, OffsetHigh: 0x7FFFFFFF}
}

func lockFile(f *os.File) error {
	return windows.LockFileEx(windows.Handle(f.Fd()),
		windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, lockOverlapped())
}

func unlockFile(f *os.File) {
	windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, lockOverlapped())
}

func isBusy(err error) bool {
	return errors.Is(err, windows.ERROR_LOCK_VIOLATION) || errors.Is(err, windows.ERROR_SHARING_VIOLATION)
}

func isSharingViolation(err error) bool { return isBusy(err) }
