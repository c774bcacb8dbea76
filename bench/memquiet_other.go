//go:build !linux

package main

// quietMemory: free page reporting is a Linux guest's knob (see
// memquiet_linux.go); elsewhere there is nothing to quiet.
func quietMemory() (restore func(), note string) {
	return func() {}, "memory: not a Linux host (nothing to quiet)"
}

func touchOnce(n int64) error { return nil }
