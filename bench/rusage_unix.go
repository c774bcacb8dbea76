//go:build linux

package main

import (
	"os"
	"syscall"
)

// maxRSS is the peak resident set of a finished process, in bytes.
func maxRSS(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss * 1024 // KiB on Linux
	}
	return 0
}
