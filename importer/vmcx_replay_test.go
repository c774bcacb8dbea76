package importer_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvsnap/hvsnap/export"
	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/merge"
	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vhd"
)

// A VMCX with an outstanding replay-log entry (hvsnap does not replay VMCX
// logs) may name an old set of disks: export, and so relocate, refuse it
// with the reason instead of packaging what may be the wrong disks.
func TestExportRefusesUnreplayedVMCX(t *testing.T) {
	root := t.TempDir()
	vmDir := filepath.Join(root, "fuzz")
	cdir := filepath.Join(root, "c")
	cfg := seedVM(t, vmDir)
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		t.Fatal(err)
	}
	for d, f := range map[string]vhd.Format{"a.vhd": vhd.FormatVHD, "d.vhdx": vhd.FormatVHDX} {
		im, err := vhd.Create(filepath.Join(cdir, d), vhd.CreateSpec{Format: f, Type: vhd.TypeDynamic, Size: 8 * vhd.MiB}, nil)
		if err != nil {
			t.Fatal(err)
		}
		im.Close()
	}
	pm, _ := vhd.ParsePathMapping(`C:\=` + cdir)
	o := export.Options{To: filepath.Join(root, "out"), PathMap: vhd.PathMap{pm}}
	for name, fn := range map[string]func() error{
		"export": func() error { _, err := export.Export(vmDir, o, nil); return err },
		"list":   func() error { _, err := export.List(vmDir, o); return err },
	} {
		err := fn()
		if err == nil || !strings.Contains(err.Error(), "replay-log") || !strings.Contains(err.Error(), cfg) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if _, err := os.Stat(o.To); !os.IsNotExist(err) {
		t.Error("the refused export wrote its destination")
	}
}

// merge refuses too: the unreplayed changes may add a checkpoint that uses
// the disks.
func TestMergeRefusesUnreplayedVMCX(t *testing.T) {
	vmDir := filepath.Join(t.TempDir(), "fuzz")
	seedVM(t, vmDir)
	_, child := baseAndChild(t, filepath.Join(vmDir, "Virtual Hard Disks"))
	_, err := merge.PlanMerge(child, &merge.Options{Roots: []string{vmDir}})
	if !errors.Is(err, merge.ErrRefused) || !strings.Contains(err.Error(), "replay-log") {
		t.Fatalf("err = %v", err)
	}
}

// cleanup --orphans does not remove a disk that such a VMCX may still use.
func TestCleanupKeepsOrphanOfUnreplayedVMCX(t *testing.T) {
	vmDir := filepath.Join(t.TempDir(), "fuzz")
	seedVM(t, vmDir)
	_, orphan := baseAndChild(t, filepath.Join(vmDir, "Virtual Hard Disks"))
	res, err := merge.Cleanup([]string{vmDir}, merge.CleanupOptions{Orphans: true, Volumes: space.StaticVolumes{{Mount: "/", Free: 1 << 40}}}, nil)
	if _, serr := os.Stat(orphan); serr != nil {
		t.Fatalf("the orphan was removed (%v, %+v)", err, res)
	}
	found := false
	for _, a := range res.Actions {
		found = found || (a.Kind == "remove-orphan" && a.Status == "skipped" && strings.Contains(a.Reason, "replay-log"))
	}
	if !found {
		t.Errorf("cleanup: %v %+v", err, res.Actions)
	}
}

// seedVM writes the committed VMCX seed with an outstanding replay-log
// entry (storetest.VMCXSeed: VM "fuzz") as the configuration of a VM folder
// vmDir and returns its path.
func seedVM(t *testing.T, vmDir string) string {
	t.Helper()
	data, err := storetest.VMCXSeed(filepath.Join("..", "vm", "testdata", "fuzz", "FuzzVMCX", "seed-5"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(vmDir, "Virtual Machines", "6F2B7A31-0C43-4E59-9B1D-2A7C5E8F9013.vmcx")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// baseAndChild creates dir/x.vhdx and its differencing child dir/x_1.avhdx
// (no drive of the seed's configuration names them).
func baseAndChild(t *testing.T, dir string) (base, child string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	base, child = filepath.Join(dir, "x.vhdx"), filepath.Join(dir, "x_1.avhdx")
	for _, sp := range []struct {
		path string
		spec vhd.CreateSpec
	}{{base, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 8 * vhd.MiB}}, {child, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, Parent: base}}} {
		im, err := vhd.Create(sp.path, sp.spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		im.Close()
	}
	return base, child
}
