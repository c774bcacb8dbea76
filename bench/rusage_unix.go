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

// selfMaxRSS is the bench's own peak resident set, in bytes. A child's
// ru_maxrss starts from it: exec records the high-water mark of the
// address space it replaces, and os/exec's child shares the bench's until
// then. So no run's max RSS reads below this value.
func selfMaxRSS() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Maxrss * 1024
}
