//go:build linux

package scenarios

import (
	"fmt"
	"os"
	"syscall"
)

// mountTmpfs mounts a tmpfs of size bytes on dir.
func mountTmpfs(dir string, size int64) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w (tmpfs mounts need root, or a private user and mount namespace: run hvsnap lab as a normal user and it re-runs itself inside one when the kernel allows it)", ErrNeedRoot)
	}
	if err := syscall.Mount("hvsnap-lab", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		return fmt.Errorf("mount -t tmpfs -o size=%d hvsnap-lab %s: %w", size, dir, err)
	}
	return nil
}

func unmount(dir string) error {
	if err := syscall.Unmount(dir, 0); err != nil {
		if err2 := syscall.Unmount(dir, syscall.MNT_DETACH); err2 != nil {
			return fmt.Errorf("umount %s: %v (lazy: %v)", dir, err, err2)
		}
	}
	return nil
}

// isMountPoint reports whether dir is a mount point (its device differs
// from its parent's).
func isMountPoint(dir string) bool {
	var a, b syscall.Stat_t
	if syscall.Stat(dir, &a) != nil || syscall.Stat(dir+"/..", &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

// freeBytes is what unprivileged writers can still use on dir's volume.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
