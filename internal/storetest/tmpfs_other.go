//go:build !linux

package storetest

import "testing"

// MountTmpfs needs Linux; elsewhere it skips the test.
func MountTmpfs(t testing.TB, size string) string {
	t.Helper()
	t.Skip("needs root for tmpfs volumes (Linux only)")
	return ""
}
