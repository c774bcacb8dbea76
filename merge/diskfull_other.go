//go:build !windows

package merge

func isDiskFull(error) bool { return false }
