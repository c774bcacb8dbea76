//go:build windows

package merge

import (
	"errors"
	"syscall"
)

// isDiskFull: ERROR_DISK_FULL (112, the 0x70 of 0x80070070) and
// ERROR_HANDLE_DISK_FULL (39).
func isDiskFull(err error) bool {
	var e syscall.Errno
	return errors.As(err, &e) && (e == 112 || e == 39)
}
