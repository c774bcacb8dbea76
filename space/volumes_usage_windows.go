//go:build windows

package space

import "golang.org/x/sys/windows"

// volumeUsage: GetDiskFreeSpaceEx; free is FreeBytesAvailableToCaller
// (quotas applied), which gopsutil's Usage does not report.
func volumeUsage(mount string) (usageStat, error) {
	p, err := windows.UTF16PtrFromString(mount)
	if err != nil {
		return usageStat{}, err
	}
	var avail, total, totalFree uint64
	if err := windows.GetDiskFreeSpaceEx(p, &avail, &total, &totalFree); err != nil {
		return usageStat{}, err
	}
	return usageStat{size: int64(total), free: int64(avail), used: int64(total - totalFree)}, nil
}
