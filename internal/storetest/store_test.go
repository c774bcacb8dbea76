package storetest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

var avhdxName = regexp.MustCompile(`^(.+)_([0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12})\.(avhdx|avhd)$`)

func build(t *testing.T, root string, spec VMSpec) *BuiltVM {
	t.Helper()
	bv, err := BuildVM(root, spec)
	if err != nil {
		t.Fatal(err)
	}
	return bv
}

// checkChain opens disk's chain with vhd and compares it with the model:
// layers, linkage, and content.
func checkChain(t *testing.T, bv *BuiltVM, disk string, want []string) {
	t.Helper()
	c, err := vhd.OpenChain(disk, &vhd.Options{ReadOnly: true, PathMap: bv.PathMap})
	if err != nil {
		t.Fatalf("open chain %s: %v", disk, err)
	}
	var got []string
	for _, l := range c.Layers {
		got = append(got, l.Path())
	}
	for _, l := range c.Links {
		if !l.LinkageOK || l.Via != "relative_path" {
			t.Errorf("%s → %s: linkage ok %v via %s", l.Child, l.Parent, l.LinkageOK, l.Via)
		}
	}
	for _, w := range c.Warnings {
		t.Errorf("chain warning: %v", w)
	}
	// The absolute locator holds the Windows path Hyper-V would write.
	for i, l := range c.Layers[:len(c.Layers)-1] {
		parent := c.Layers[i+1].Path()
		if wp, ok := bv.WindowsPath[parent]; ok && !strings.EqualFold(l.Parent().AbsolutePath, wp) {
			t.Errorf("%s: absolute locator %q, want %q", l.Path(), l.Parent().AbsolutePath, wp)
		}
	}
	c.Close()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("chain of %s:\n got %q\nwant %q", disk, got, want)
	}
	h1, err := ChainSHA256(disk, bv.PathMap)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := bv.ExpectedSHA256(disk)
	if err != nil {
		t.Fatal(err)
	}
	if h1 != h2 {
		t.Errorf("%s: content read through vhd %s, expected %s", filepath.Base(disk), h1, h2)
	}
}

func parse(t *testing.T, bv *BuiltVM, path string) *vm.Config {
	t.Helper()
	c, err := vm.ParseConfig(path, &vm.ParseOptions{PathMap: bv.PathMap})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range c.Warnings {
		t.Errorf("%s: warning %s", filepath.Base(path), w)
	}
	return c
}

func TestBuildVMLinear(t *testing.T) {
	root := t.TempDir()
	bv := build(t, root, VMSpec{
		Name: "Web 01", BlockSize: 2 * vhd.MiB, CurrentAfter: LatestCheckpoint, LiveWriteBytes: 512 * vhd.KiB,
		Checkpoints: []CheckpointSpec{
			{Parent: -1, WriteBytes: vhd.MiB},
			{Parent: 0, WriteBytes: 3 * vhd.MiB},
			{Parent: 1, Name: "before update", WriteBytes: 2 * vhd.MiB},
		},
	})
	if bv.Spec.ID != GUID("vm", "Web 01") || bv.ConfigPath != filepath.Join(root, "Web 01", "Virtual Machines", bv.Spec.ID+".xml") {
		t.Fatalf("id %s config %s", bv.Spec.ID, bv.ConfigPath)
	}
	if len(bv.Disks) != 4 || len(bv.Chain) != 4 || bv.Chain[0] != bv.Leaf || bv.Chain[3] != bv.Base || len(bv.OffBranch) != 0 {
		t.Fatalf("disks %q chain %q off %q", bv.Disks, bv.Chain, bv.OffBranch)
	}
	if filepath.Base(bv.Base) != "Web 01.vhdx" || filepath.Dir(bv.Base) != filepath.Join(root, "Web 01", "Virtual Hard Disks") {
		t.Errorf("base %s", bv.Base)
	}
	for _, d := range bv.Disks[1:] {
		m := avhdxName.FindStringSubmatch(filepath.Base(d))
		if m == nil || m[1] != "Web 01" || m[3] != "avhdx" {
			t.Errorf("checkpoint disk name %s is not <base>_<GUID>.avhdx", filepath.Base(d))
		}
	}
	// The VM config names the live leaf.
	c := parse(t, bv, bv.ConfigPath)
	if c.Name != "Web 01" || c.ID != bv.Spec.ID || c.VMID != bv.Spec.ID || c.Generation != 1 || c.Version != "5.0" ||
		c.IsCheckpoint || c.DiskMergePending || c.SnapshotCount != 3 {
		t.Errorf("config %+v", c)
	}
	if len(c.Disks) != 1 {
		t.Fatalf("disks %+v", c.Disks)
	}
	d := c.Disks[0]
	if d.Controller != vm.ControllerIDE || d.Location() != "ide0:0" || d.LocalPath != bv.Leaf || d.Resolved != vm.RuleMap || !d.Exists ||
		d.WindowsPath != `C:\VMs\Web 01\Virtual Hard Disks\`+filepath.Base(bv.Leaf) {
		t.Errorf("drive %+v", d)
	}
	// Each checkpoint config names the disk that was current when taken.
	want := []string{bv.Base, bv.Chain[2], bv.Chain[1]}
	for i, p := range bv.CheckpointConfigs {
		if bv.CheckpointDisks[i] != want[i] {
			t.Errorf("checkpoint %d disk %s, want %s", i, bv.CheckpointDisks[i], want[i])
		}
		cc := parse(t, bv, p)
		if !cc.IsCheckpoint || cc.CheckpointID != bv.Spec.Checkpoints[i].ID || cc.ID != cc.CheckpointID || cc.VMID != bv.Spec.ID ||
			cc.Name != bv.Spec.Checkpoints[i].Name || len(cc.Disks) != 1 || cc.Disks[0].LocalPath != want[i] {
			t.Errorf("checkpoint %d config %+v", i, cc)
		}
	}
	if bv.Spec.Checkpoints[2].Name != "before update" || bv.Spec.Checkpoints[0].Name != "Web 01 - (0)" {
		t.Errorf("names %+v", bv.Spec.Checkpoints)
	}
	checkChain(t, bv, bv.Leaf, bv.Chain)
	// Written extents are recorded per disk.
	var n int64
	for _, e := range bv.Written[bv.Chain[2]] {
		n += e.Len
	}
	if n != 3*vhd.MiB {
		t.Errorf("checkpoint 1 disk holds %d written bytes", n)
	}
	// The config file is UTF-16LE with a BOM.
	raw, _ := os.ReadFile(bv.ConfigPath)
	if len(raw) < 4 || raw[0] != 0xFF || raw[1] != 0xFE || raw[2] != '<' || raw[3] != 0 {
		t.Errorf("config starts % x", raw[:4])
	}
}

func TestBuildVMBranchesAndDeleted(t *testing.T) {
	root := t.TempDir()
	bv := build(t, root, VMSpec{
		Name: "db", BlockSize: vhd.MiB, Size: 32 * vhd.MiB, CurrentAfter: 2, DiskMergePending: true,
		Checkpoints: []CheckpointSpec{
			{Parent: -1, Writes: []Extent{{0, vhd.MiB}}},
			{Parent: 0, Writes: []Extent{{vhd.MiB, 2 * vhd.MiB}}},
			{Parent: 0, Writes: []Extent{{512 * vhd.KiB, 4096}}, Deleted: true, Age: 40 * 24 * time.Hour},
			{Parent: 1, WriteBytes: vhd.MiB},
		},
		LiveWrites: []Extent{{4 * vhd.MiB, 8192}},
	})
	d1, d2, d3 := bv.CheckpointDisks[1], bv.CheckpointDisks[2], bv.CheckpointDisks[3]
	if bv.CheckpointDisks[0] != bv.Base || bv.Parent[d1] != bv.Base || bv.Parent[d2] != bv.Base || bv.Parent[d3] != d1 || bv.Parent[bv.Leaf] != d2 {
		t.Fatalf("tree %q parents %q", bv.CheckpointDisks, bv.Parent)
	}
	if strings.Join(bv.Chain, "|") != strings.Join([]string{bv.Leaf, d2, bv.Base}, "|") {
		t.Errorf("chain %q", bv.Chain)
	}
	if strings.Join(bv.OffBranch, "|") != d1+"|"+d3 {
		t.Errorf("off-branch %q", bv.OffBranch)
	}
	if bv.CheckpointConfigs[2] != "" {
		t.Errorf("deleted checkpoint has config %s", bv.CheckpointConfigs[2])
	}
	ents, _ := os.ReadDir(filepath.Join(bv.Dir, "Snapshots"))
	if len(ents) != 3 {
		t.Errorf("%d checkpoint configs", len(ents))
	}
	if fi, _ := os.Stat(d2); time.Since(fi.ModTime()) < 39*24*time.Hour {
		t.Errorf("aged disk mtime %v", fi.ModTime())
	}
	if got := bv.Written[bv.Leaf]; len(got) != 1 || got[0] != (Extent{4 * vhd.MiB, 8192}) {
		t.Errorf("leaf writes %v", got)
	}
	c := parse(t, bv, bv.ConfigPath)
	if !c.DiskMergePending || c.SnapshotCount != 3 || c.Disks[0].LocalPath != bv.Leaf {
		t.Errorf("config %+v", c)
	}
	checkChain(t, bv, bv.Leaf, bv.Chain)
	checkChain(t, bv, d3, []string{d3, d1, bv.Base})
	checkChain(t, bv, d2, []string{d2, bv.Base})

	// A scan attaches the checkpoints by VM ID.
	st, err := vm.Scan([]string{root}, vm.ScanOptions{PathMap: bv.PathMap})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.VMs) != 1 || len(st.VMs[0].Checkpoints) != 3 || len(st.Disks) != 5 || len(st.OrphanCheckpoints) != 0 {
		t.Fatalf("scan: %d VMs, %d disks, warnings %v", len(st.VMs), len(st.Disks), st.Warnings)
	}
	for _, cp := range st.VMs[0].Checkpoints {
		if cp.AttachedBy != "vm-id" {
			t.Errorf("%s attached by %q", cp.Path, cp.AttachedBy)
		}
	}
}

func TestBuildVMGen2VHDDiskDirSavedState(t *testing.T) {
	root, other := t.TempDir(), t.TempDir()
	bv := build(t, root, VMSpec{
		Name: "app", ID: "{1b2c3d4e-0000-4000-8000-00000000abcd}", Format: vhd.FormatVHD, Size: 16 * vhd.MiB,
		Generation: 2, DiskDir: filepath.Join(other, "disks"), SavedStateBytes: 256 * vhd.MiB,
		Checkpoints:  []CheckpointSpec{{Parent: -1, WriteBytes: 256 * vhd.KiB}, {Parent: 0, WriteBytes: 256 * vhd.KiB}},
		CurrentAfter: LatestCheckpoint,
	})
	if bv.Spec.ID != "1B2C3D4E-0000-4000-8000-00000000ABCD" || !bv.Spec.SCSI {
		t.Fatalf("spec %+v", bv.Spec)
	}
	for _, d := range bv.Disks {
		if filepath.Dir(d) != filepath.Join(other, "disks") {
			t.Errorf("disk %s not in DiskDir", d)
		}
	}
	if filepath.Base(bv.Base) != "app.vhd" || !strings.HasSuffix(bv.Leaf, ".avhd") {
		t.Errorf("names %q", bv.Disks)
	}
	c := parse(t, bv, bv.ConfigPath)
	if c.Generation != 2 || len(c.Disks) != 1 || c.Disks[0].Controller != vm.ControllerSCSI || c.Disks[0].LocalPath != bv.Leaf ||
		!strings.HasPrefix(c.Disks[0].WindowsPath, `D:\Hyper-V\app\`) || c.MemoryMiB != 256 {
		t.Errorf("config %+v disks %+v", c, c.Disks)
	}
	if len(c.StateFiles) != 2 || len(bv.StateFiles) != 2 {
		t.Fatalf("state files %+v", c.StateFiles)
	}
	for _, sf := range c.StateFiles {
		if sf.OwnerID != bv.Spec.ID || (sf.Type == "bin") != (sf.Size == 256*vhd.MiB) || sf.Allocated > vhd.MiB {
			t.Errorf("state file %+v", sf)
		}
	}
	checkChain(t, bv, bv.Leaf, bv.Chain)
}

func TestBuildVMDeterministic(t *testing.T) {
	spec := VMSpec{Name: "same", Checkpoints: []CheckpointSpec{{Parent: -1, WriteBytes: vhd.MiB}, {Parent: 0, WriteBytes: vhd.MiB}}, LiveWriteBytes: vhd.MiB}
	a, b := build(t, t.TempDir(), spec), build(t, t.TempDir(), spec)
	ha, _ := ChainSHA256(a.Leaf, a.PathMap)
	hb, _ := ChainSHA256(b.Leaf, b.PathMap)
	la, _ := a.LiveSHA256()
	if ha != hb || ha != la || filepath.Base(a.Leaf) != filepath.Base(b.Leaf) {
		t.Errorf("two builds differ: %s %s %s", ha, hb, la)
	}
	spec.Name = "other"
	c := build(t, t.TempDir(), spec)
	if hc, _ := c.LiveSHA256(); hc == ha {
		t.Error("another VM has the same content")
	}
}

func TestSharedParentAndOrphan(t *testing.T) {
	root := t.TempDir()
	tmpl := filepath.Join(root, "Templates", "golden.vhdx")
	os.MkdirAll(filepath.Dir(tmpl), 0o755)
	im, err := vhd.Create(tmpl, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 16 * vhd.MiB, BlockSize: vhd.MiB}, nil)
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
	c, _ := vhd.OpenChain(tmpl, nil)
	c.WriteAt([]byte(strings.Repeat("golden", 1000)), 0)
	c.Close()
	var vms []*BuiltVM
	for _, name := range []string{"a", "b"} {
		vms = append(vms, build(t, root, VMSpec{Name: name, ParentDisk: tmpl,
			Checkpoints: []CheckpointSpec{{Parent: -1}}, CurrentAfter: 0, LiveWriteBytes: 64 * vhd.KiB}))
	}
	for _, bv := range vms {
		if bv.Parent[bv.Base] != tmpl {
			t.Errorf("base parent %q", bv.Parent[bv.Base])
		}
		checkChain(t, bv, bv.Leaf, append(append([]string{}, bv.Chain...), tmpl))
	}

	o, err := OrphanDisk(vms[0].DiskDir, vms[0].Leaf)
	if err != nil {
		t.Fatal(err)
	}
	m := avhdxName.FindStringSubmatch(filepath.Base(o))
	if m == nil || m[1] != "a" {
		t.Errorf("orphan name %s", o)
	}
	oc, err := vhd.OpenChain(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(oc.Layers) != 4 || oc.Layers[1].Path() != vms[0].Leaf || !oc.Links[0].LinkageOK {
		t.Errorf("orphan chain %d layers", len(oc.Layers))
	}
	oc.Close()
	o2, err := OrphanDisk(vms[0].DiskDir, vms[0].Leaf)
	if err != nil || o2 == o {
		t.Errorf("second orphan %s %v", o2, err)
	}
	o3, err := OrphanDisk(filepath.Join(root, "loose"), "")
	if err != nil || !strings.HasPrefix(filepath.Base(o3), "Orphan_") || filepath.Ext(o3) != ".vhdx" {
		t.Errorf("standalone orphan %s %v", o3, err)
	}
	if err := DeleteFile(o3); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(o3); !os.IsNotExist(err) {
		t.Errorf("DeleteFile left %s", o3)
	}
}

func TestBuildVMRejectsBadSpecs(t *testing.T) {
	for _, spec := range []VMSpec{
		{Name: ""},
		{Name: `a\b`},
		{Name: "x", Checkpoints: []CheckpointSpec{{Parent: 0}}},
		{Name: "x", Checkpoints: []CheckpointSpec{{Parent: -1}}, CurrentAfter: 3},
	} {
		if _, err := BuildVM(t.TempDir(), spec); err == nil {
			t.Errorf("%+v: no error", spec)
		}
	}
}

func TestWriteConfigMissingDisk(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "x", "Virtual Machines", GUID("x")+".xml")
	if err := WriteConfig(p, ConfigSpec{Name: "x", ID: GUID("x"), SCSI: true, DiskPath: WindowsRoot + `\x\Virtual Hard Disks\gone.vhdx`, MergePending: true, Snapshots: 2}); err != nil {
		t.Fatal(err)
	}
	pm := vhd.PathMap{{Windows: WindowsRoot, Local: root}}
	c, err := vm.ParseConfig(p, &vm.ParseOptions{PathMap: pm})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "x" || c.ID != GUID("x") || !c.DiskMergePending || c.SnapshotCount != 2 || len(c.Disks) != 1 || len(c.Warnings) != 0 {
		t.Fatalf("config %+v", c)
	}
	d := c.Disks[0]
	if d.Exists || d.Controller != vm.ControllerSCSI || d.LocalPath != filepath.Join(root, "x", "Virtual Hard Disks", "gone.vhdx") {
		t.Errorf("drive %+v", d)
	}
}
