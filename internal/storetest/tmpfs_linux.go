//go:build linux

package storetest

import (
	"os"
	"syscall"
	"testing"
)

// MountTmpfs mounts a tmpfs of the given size ("64m", "1g": tmpfs's size=
// option) on a new t.TempDir() and unmounts it when the test ends, so tests
// get a real small volume with real free space (`mount -t tmpfs -o
// size=SIZE hvsnap-test DIR`). It skips the test unless running as root,
// or when the mount is refused (a container without CAP_SYS_ADMIN).
func MountTmpfs(t testing.TB, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for tmpfs volumes")
	}
	dir := t.TempDir()
	if err := syscall.Mount("hvsnap-test", dir, "tmpfs", 0, "size="+size+",mode=0755"); err != nil {
		t.Skipf("needs root for tmpfs volumes: mount -t tmpfs -o size=%s on %s: %v", size, dir, err)
	}
	// Registered after TempDir's removal, so it runs before it.
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			if err2 := syscall.Unmount(dir, syscall.MNT_DETACH); err2 != nil {
				t.Errorf("umount %s: %v (lazy: %v)", dir, err, err2)
			}
		}
	})
	return dir
}
