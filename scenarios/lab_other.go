//go:build !linux

package scenarios

import "fmt"

func mountTmpfs(dir string, size int64) error {
	return fmt.Errorf("%w: the lab mounts tmpfs volumes, which needs Linux", ErrNeedRoot)
}

func unmount(dir string) error { return nil }

func isMountPoint(dir string) bool { return false }

func freeBytes(dir string) (int64, error) { return 0, fmt.Errorf("not supported") }
