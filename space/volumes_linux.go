//go:build linux

package space

import (
	"context"
	"os"

	"github.com/shirou/gopsutil/v4/common"
)

// partitionsCtx: read this process's mount table (/proc/self/mountinfo), not
// PID 1's (gopsutil's default), so mounts made in this mount namespace are
// seen — the paths this process stats are resolved there. HOST_PROC and
// HOST_PROC_MOUNTINFO in the environment still win.
func partitionsCtx() context.Context {
	if os.Getenv("HOST_PROC_MOUNTINFO") != "" || os.Getenv("HOST_PROC") != "" {
		return context.Background()
	}
	return context.WithValue(context.Background(), common.EnvKey,
		common.EnvMap{common.HostProcMountinfo: "/proc/self/mountinfo"})
}
