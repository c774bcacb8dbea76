//go:build !windows

package importer

import "golang.org/x/sys/unix"

// freeSpace is what unprivileged writers can still use on dir's volume.
func freeSpace(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
