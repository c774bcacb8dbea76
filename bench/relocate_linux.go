//go:build linux

package main

import "syscall"

func mountTmpfs(dir, size string) error {
	return syscall.Mount("hvsnap-bench", dir, "tmpfs", 0, "size="+size+",mode=0755")
}

func unmountTmpfs(dir string) { syscall.Unmount(dir, syscall.MNT_DETACH) }
