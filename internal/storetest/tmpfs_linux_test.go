//go:build linux

package storetest

import (
	"syscall"
	"testing"

	"github.com/hvsnap/hvsnap/vhd"
)

func TestMountTmpfs(t *testing.T) {
	dir := MountTmpfs(t, "8m")
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if got := int64(st.Blocks) * int64(st.Bsize); got != 8<<20 {
		t.Errorf("tmpfs size %d", got)
	}
	// A VM fits and builds on it.
	bv := build(t, dir, VMSpec{Name: "tiny", Size: 4 * vhd.MiB, BlockSize: vhd.MiB, BaseWriteBytes: 256 * vhd.KiB})
	checkChain(t, bv, bv.Leaf, bv.Chain)
}
