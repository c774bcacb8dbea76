package importer_test

import (
	"bytes"
	"errors"
	"fmt"
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

// A VMCX whose replay log claims an outstanding entry that cannot be
// replayed (a damaged log) may name an old set of disks: export, and so
// relocate, refuse it with the reason instead of packaging what may be the
// wrong disks.
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

// merge refuses too: the changes it could not replay may add a checkpoint
// that uses the disks.
func TestMergeRefusesUnreplayedVMCX(t *testing.T) {
	vmDir := filepath.Join(t.TempDir(), "fuzz")
	seedVM(t, vmDir)
	_, child := baseAndChild(t, filepath.Join(vmDir, "Virtual Hard Disks"))
	_, err := merge.PlanMerge(child, &merge.Options{Roots: []string{vmDir}})
	if !errors.Is(err, merge.ErrRefused) || !strings.Contains(err.Error(), "replay-log") {
		t.Fatalf("err = %v", err)
	}
}

// cleanup --orphans does not remove a disk that such a VMCX may still use,
// even with the configuration accepted: a removal would lose the data.
func TestCleanupKeepsOrphanOfUnreplayedVMCX(t *testing.T) {
	vmDir := filepath.Join(t.TempDir(), "fuzz")
	cfg := seedVM(t, vmDir)
	_, orphan := baseAndChild(t, filepath.Join(vmDir, "Virtual Hard Disks"))
	for i, accept := range [][]string{nil, {cfg}, {cfg}} {
		dry := i == 2 // the dry run predicts the same
		res, err := merge.Cleanup([]string{vmDir}, merge.CleanupOptions{Orphans: true, DryRun: dry, AcceptStale: accept, Volumes: space.StaticVolumes{{Mount: "/", Free: 1 << 40}}}, nil)
		if _, serr := os.Stat(orphan); serr != nil {
			t.Fatalf("accept %v: the orphan was removed (%v, %+v)", accept, err, res)
		}
		found := false
		for _, a := range res.Actions {
			found = found || (a.Kind == "remove-orphan" && a.Status == "skipped" && strings.Contains(a.Reason, "replay-log") && !strings.Contains(a.Reason, "--accept-stale-config"))
		}
		if !found {
			t.Errorf("cleanup, accept %v: %v %+v", accept, err, res.Actions)
		}
	}
}

// seedVM writes the committed VMCX seed whose replay log cannot be replayed
// (storetest.VMCXSeed: VM "fuzz") as the configuration of a VM folder vmDir
// and returns its path.
func seedVM(t *testing.T, vmDir string) string {
	t.Helper()
	cfg, err := storetest.UnreplayedVM(vmDir)
	if err != nil {
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

// With the configuration accepted (--accept-stale-config), the merge goes
// on: the plan names the file and what to check on the host, the chain
// reads the same afterwards; a path that names no such configuration is
// reported, and accepting one file does not accept another.
func TestMergeAcceptsNamedStaleVMCX(t *testing.T) {
	vmDir := filepath.Join(t.TempDir(), "fuzz")
	cfg := seedVM(t, vmDir)
	base, child := baseAndChild(t, filepath.Join(vmDir, "Virtual Hard Disks"))
	c, err := vhd.OpenChain(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(bytes.Repeat([]byte{0x5a}, 3<<20), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	want, err := storetest.ChainSHA256(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	vols := space.StaticVolumes{{Mount: "/", Free: 1 << 40}}

	// Another file accepted: still refused, and the refusal says how to go on.
	other := filepath.Join(vmDir, "other.vmcx")
	_, err = merge.PlanMerge(child, &merge.Options{Roots: []string{vmDir}, AcceptStale: []string{other}, Volumes: vols})
	if !errors.Is(err, merge.ErrRefused) || !strings.Contains(err.Error(), "--accept-stale-config '"+cfg+"'") {
		t.Fatalf("other file accepted: err = %v", err)
	}

	o := &merge.Options{Roots: []string{vmDir}, AcceptStale: []string{cfg, other}, Volumes: vols}
	p, err := merge.PlanMerge(child, o)
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(p.Notes, "\n")
	for _, s := range []string{cfg, "outstanding", "Get-VMHardDiskDrive -VMName 'fuzz'", "--accept-stale-config " + other + ": no configuration"} {
		if !strings.Contains(notes, s) {
			t.Errorf("plan notes lack %q:\n%s", s, notes)
		}
	}
	if _, err := merge.Run(p, o, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(child); !os.IsNotExist(err) {
		t.Errorf("merged child still there: %v", err)
	}
	if got, err := storetest.ChainSHA256(base, nil); err != nil || got != want {
		t.Errorf("content after the merge: %v (changed: %v)", err, got != want)
	}
}

// A VMCX checkpoint (the real Windows sample, copied into a Snapshots
// folder) that names the disk a merge would remove: hvsnap cannot re-point
// it (no VMCX writes, no cmdlet for a checkpoint's disk), so the merge is
// refused, with --keep too (the VM would then write into the parent the
// kept file reads through).
func TestMergeRefusesDiskOfVMCXCheckpoint(t *testing.T) {
	samples := samplesDir(t)
	root := t.TempDir()
	vmDir := filepath.Join(root, "vm")
	disks := filepath.Join(root, "Disks")
	const id = "EC04F346-DB96-4700-AF5B-77B3C56C38BD"
	data, err := os.ReadFile(filepath.Join(samples, id+".vmcx"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"Virtual Machines", "Snapshots"} {
		if err := os.MkdirAll(filepath.Join(vmDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The sample names C:\Disks\Default Generation 1.vhdx: the same file is
	// the VM's configuration and, in Snapshots, one of its checkpoints.
	os.WriteFile(filepath.Join(vmDir, "Virtual Machines", id+".vmcx"), data, 0o644)
	cp := filepath.Join(vmDir, "Snapshots", id+".vmcx")
	os.WriteFile(cp, data, 0o644)
	base, mid, leaf := filepath.Join(disks, "base.vhdx"), filepath.Join(disks, "Default Generation 1.vhdx"), filepath.Join(disks, "leaf.avhdx")
	os.MkdirAll(disks, 0o755)
	for _, sp := range []struct {
		path string
		spec vhd.CreateSpec
	}{{base, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 8 * vhd.MiB}}, {mid, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, Parent: base}}, {leaf, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, Parent: mid}}} {
		im, err := vhd.Create(sp.path, sp.spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		im.Close()
	}
	m, _ := vhd.ParsePathMapping(`C:\Disks=` + disks)
	o := &merge.Options{Roots: []string{vmDir, disks}, PathMap: vhd.PathMap{m}, Volumes: space.StaticVolumes{{Mount: "/", Free: 1 << 40}}}
	for _, keep := range []bool{false, true} {
		o.Keep = keep
		_, err = merge.PlanMerge(mid, o)
		if !errors.Is(err, merge.ErrRefused) || !strings.Contains(err.Error(), cp) || !strings.Contains(err.Error(), "Delete the checkpoint") {
			t.Fatalf("keep %v: merge of a VMCX checkpoint's disk: %v", keep, err)
		}
	}
}

// A VMCX whose replay log holds a write Hyper-V had not applied yet (the
// VM's SCSI drive changed from e.vhdx to d.vhdx): read with the log
// replayed, export packages the disks the VM uses now (d.vhdx; e.vhdx does
// not exist), and a merge of the disk it names goes on, re-pointing it with
// the Set-VMHardDiskDrive command for the VM.
func TestReplayedVMCXExportAndMerge(t *testing.T) {
	root := t.TempDir()
	vmDir := filepath.Join(root, "fuzz")
	cdir := filepath.Join(root, "c")
	if _, err := storetest.ReplayPendingVM(vmDir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		t.Fatal(err)
	}
	a := filepath.Join(cdir, "a.vhd")
	im, err := vhd.Create(a, vhd.CreateSpec{Format: vhd.FormatVHD, Type: vhd.TypeDynamic, Size: 8 * vhd.MiB}, nil)
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
	base := filepath.Join(cdir, "base.vhdx")
	d := filepath.Join(cdir, "d.vhdx") // the VM's disk: a child of base
	for _, sp := range []struct {
		path string
		spec vhd.CreateSpec
	}{{base, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 8 * vhd.MiB}}, {d, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, Parent: base}}} {
		im, err := vhd.Create(sp.path, sp.spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		im.Close()
	}
	pm, _ := vhd.ParsePathMapping(`C:\=` + cdir)
	c, err := export.List(vmDir, export.Options{To: filepath.Join(root, "out"), PathMap: vhd.PathMap{pm}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range c.Files {
		if strings.HasSuffix(f.Source, "vhd") || strings.HasSuffix(f.Source, "vhdx") {
			got = append(got, filepath.Base(f.Source))
		}
	}
	if strings.Join(got, " ") != "a.vhd d.vhdx base.vhdx" && strings.Join(got, " ") != "a.vhd base.vhdx d.vhdx" {
		t.Errorf("export lists disks %q", got)
	}

	o := &merge.Options{Roots: []string{vmDir, cdir}, PathMap: vhd.PathMap{pm}, Volumes: space.StaticVolumes{{Mount: "/", Free: 1 << 40}}}
	p, err := merge.PlanMerge(d, o)
	if err != nil {
		t.Fatalf("merge of the replayed configuration's disk: %v", err)
	}
	res, err := merge.Run(p, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf("%+v", res)
	if !strings.Contains(text, "Set-VMHardDiskDrive") || !strings.Contains(text, "'fuzz'") {
		t.Errorf("merge result does not tell how to re-point VM fuzz: %s", text)
	}
	if _, err := os.Stat(d); !os.IsNotExist(err) {
		t.Errorf("merged disk still there: %v", err)
	}
}
