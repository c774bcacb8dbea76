//go:build !windows

package space

import "github.com/shirou/gopsutil/v4/disk"

// volumeUsage: statfs; free is f_bavail (what unprivileged writers get).
func volumeUsage(mount string) (usageStat, error) {
	u, err := disk.Usage(mount)
	if err != nil {
		return usageStat{}, err
	}
	return usageStat{size: int64(u.Total), free: int64(u.Free), used: int64(u.Used)}, nil
}
