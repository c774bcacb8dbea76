package space

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// testStore is a store with one VM per situation the analyzer detects.
type testStore struct {
	root string
	pm   vhd.PathMap
	vms  map[string]*storetest.BuiltVM
	// special files
	orphan, junk, template string
}

func buildTestStore(t *testing.T, root string) *testStore {
	t.Helper()
	s := &testStore{root: root, vms: map[string]*storetest.BuiltVM{}}
	build := func(spec storetest.VMSpec) *storetest.BuiltVM {
		t.Helper()
		bv, err := storetest.BuildVM(root, spec)
		if err != nil {
			t.Fatalf("build %s: %v", spec.Name, err)
		}
		s.vms[spec.Name] = bv
		s.pm = append(s.pm, bv.PathMap...)
		return bv
	}
	mb := int64(vhd.MiB)
	// linear: base ← A1 (its checkpoint deleted, not merged) ← A2 ← live.
	build(storetest.VMSpec{Name: "linear", Checkpoints: []storetest.CheckpointSpec{
		{Parent: -1, WriteBytes: mb}, {Parent: 0, WriteBytes: mb, Deleted: true}, {Parent: 1, WriteBytes: mb},
	}, CurrentAfter: storetest.LatestCheckpoint, LiveWriteBytes: mb})
	// branch: two checkpoint branches over the base; runs on the first; the
	// first branch's checkpoint disk is 60 days old.
	build(storetest.VMSpec{Name: "branch", Checkpoints: []storetest.CheckpointSpec{
		{Parent: -1, WriteBytes: mb}, {Parent: 0, WriteBytes: mb, Age: 60 * 24 * time.Hour}, {Parent: 0, WriteBytes: 2 * mb},
	}, CurrentAfter: 1, LiveWriteBytes: mb})
	// Two VMs made as differencing disks of one shared template.
	s.template = filepath.Join(root, "templates", "template.vhdx")
	os.MkdirAll(filepath.Dir(s.template), 0o755)
	im, err := vhd.Create(s.template, vhd.CreateSpec{Format: vhd.FormatVHDX, Size: 64 * mb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
	build(storetest.VMSpec{Name: "shared1", ParentDisk: s.template, SavedStateBytes: 8 * mb, SavedStateAllocated: true})
	build(storetest.VMSpec{Name: "shared2", ParentDisk: s.template, DiskMergePending: true})
	// broken: the middle checkpoint disk deleted by hand.
	br := build(storetest.VMSpec{Name: "broken", Checkpoints: []storetest.CheckpointSpec{
		{Parent: -1, WriteBytes: mb}, {Parent: 0, WriteBytes: mb},
	}, CurrentAfter: storetest.LatestCheckpoint, LiveWriteBytes: mb})
	if err := os.Remove(br.Chain[1]); err != nil {
		t.Fatal(err)
	}
	// missing: the disk the VM runs on is gone.
	ms := build(storetest.VMSpec{Name: "missing", Checkpoints: []storetest.CheckpointSpec{{Parent: -1, WriteBytes: mb}},
		CurrentAfter: storetest.LatestCheckpoint, LiveWriteBytes: mb})
	os.Remove(ms.Leaf)
	// expanded: a VHD chain whose base was grown from 63 to 64 MiB after
	// the checkpoint was taken.
	ex := build(storetest.VMSpec{Name: "expanded", Format: vhd.FormatVHD, Size: 63 * mb,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1, WriteBytes: mb}}, CurrentAfter: storetest.LatestCheckpoint})
	growVHD(t, ex.Base, 64*mb)
	// An orphaned checkpoint disk beside linear's base, and a junk disk file.
	s.orphan, err = storetest.OrphanDisk(filepath.Dir(s.vms["linear"].Base), s.vms["linear"].Base)
	if err != nil {
		t.Fatal(err)
	}
	s.junk = filepath.Join(root, "junk", "bad.avhdx")
	os.MkdirAll(filepath.Dir(s.junk), 0o755)
	os.WriteFile(s.junk, bytes.Repeat([]byte("not a disk "), 1000), 0o644)
	return s
}

// growVHD rewrites a VHD footer's current size (both copies), as an
// expansion tool does, keeping the checksum valid.
func growVHD(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	for _, off := range []int64{st.Size() - 512, 0} {
		ft := make([]byte, 512)
		f.ReadAt(ft, off)
		if string(ft[:8]) != "conectix" {
			t.Fatalf("no footer at %d", off)
		}
		binary.BigEndian.PutUint64(ft[48:], uint64(size))
		binary.BigEndian.PutUint32(ft[64:], 0)
		var sum uint32
		for _, b := range ft {
			sum += uint32(b)
		}
		binary.BigEndian.PutUint32(ft[64:], ^sum)
		if _, err := f.WriteAt(ft, off); err != nil {
			t.Fatal(err)
		}
	}
}

func analyze(t *testing.T, s *testStore, vols StaticVolumes, th Thresholds) *Report {
	t.Helper()
	r, err := Analyze(context.Background(), []string{s.root}, Options{PathMap: s.pm, Volumes: vols, Thresholds: th})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func findings(r *Report, code string) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Code == code {
			out = append(out, f)
		}
	}
	return out
}

func findingFor(r *Report, code, vm string) []Finding {
	var out []Finding
	for _, f := range findings(r, code) {
		if strings.Contains(f.VM, vm) {
			out = append(out, f)
		}
	}
	return out
}

func testThresholds() Thresholds {
	th := DefaultThresholds()
	th.DeepChain = 2
	th.SavedStateMin = 4 << 20
	return th
}

func TestAnalyzeFindings(t *testing.T) {
	root := t.TempDir()
	s := buildTestStore(t, root)
	big := StaticVolumes{{Mount: root, Device: "test", FSType: "test", Size: 1 << 40, Free: 1 << 39}}
	r := analyze(t, s, big, testThresholds())

	if r.Schema != Schema || len(r.VMs) != 7 {
		t.Fatalf("schema %d, %d VMs", r.Schema, len(r.VMs))
	}
	for _, w := range r.Warnings {
		t.Logf("warning: %s", w)
	}
	// Merge pending: linear (deleted checkpoint, chain evidence) and shared2
	// (config flag) — and nobody else: not the branch, not the template.
	mp := findings(r, FindMergePending)
	got := map[string]string{}
	for _, f := range mp {
		got[f.VM] = f.Evidence["source"].(string)
	}
	if len(mp) != 2 || got["linear"] != "chain" || got["shared2"] != "config" {
		t.Fatalf("merge-pending findings: %+v", mp)
	}
	lin := s.vms["linear"]
	if f := findingFor(r, FindMergePending, "linear")[0]; f.Paths[0] != lin.Chain[1] || f.Paths[1] != lin.Chain[2] {
		t.Errorf("linear merge pending names %v, want %s into %s", f.Paths, lin.Chain[1], lin.Chain[2])
	}
	// Orphans: exactly the disk made as one (not the branch's other leaf,
	// not the shared template, not the broken VM's leftovers).
	or := findings(r, FindOrphan)
	if len(or) != 1 || or[0].Paths[0] != s.orphan || or[0].Bytes <= 0 {
		t.Fatalf("orphans: %+v", or)
	}
	// Broken chain with the newest surviving disk.
	bf := findingFor(r, FindMissingParent, "broken")
	if len(bf) != 1 || bf[0].Paths[0] != s.vms["broken"].Leaf || bf[0].Evidence["newest_surviving"] == nil {
		t.Fatalf("broken chain: %+v", findings(r, FindMissingParent))
	}
	if md := findingFor(r, FindMissingDisk, "missing"); len(md) != 1 {
		t.Fatalf("missing disk: %+v", findings(r, FindMissingDisk))
	}
	ep := findings(r, FindExpandedParent)
	if len(ep) != 1 || ep[0].Evidence["restore_size"].(int64) != 63<<20 || ep[0].Paths[0] != s.vms["expanded"].Base {
		t.Fatalf("expanded parent: %+v", ep)
	}
	if ud := findings(r, FindUnreadableDisk); len(ud) != 1 || ud[0].Paths[0] != s.junk {
		t.Fatalf("unreadable: %+v", ud)
	}
	// Deep chain (threshold 2): only linear has 3 differencing layers.
	if dc := findings(r, FindDeepChain); len(dc) != 1 || dc[0].VM != "linear" {
		t.Fatalf("deep chain: %+v", dc)
	}
	if oc := findings(r, FindOldCheckpoint); len(oc) != 1 || oc[0].VM != "branch" || oc[0].Evidence["age_days"].(int) < 59 {
		t.Fatalf("old checkpoint: %+v", oc)
	}
	if ss := findings(r, FindSavedState); len(ss) != 1 || ss[0].VM != "shared1" || ss[0].Bytes < 4<<20 {
		t.Fatalf("saved state: %+v", ss)
	}
	// Plenty of space: every verdict ok, no volume findings.
	if len(r.Volumes) != 1 || r.Volumes[0].Verdict != VerdictOK {
		t.Fatalf("volumes: %+v", r.Volumes[0])
	}
	for _, c := range []string{FindLowSpace, FindMergeNoSpace, FindPausedRisk} {
		if len(findings(r, c)) != 0 {
			t.Errorf("unexpected %s", c)
		}
	}
	// The branch VM: one tree with two branches; the off-branch leaf is
	// reclaimable, the live one is marked live.
	var branch *VM
	for _, v := range r.VMs {
		if v.Name == "branch" {
			branch = v
		}
	}
	if branch == nil || len(branch.Chains) != 1 || len(branch.Chains[0].Children) != 2 || !branch.Chains[0].Live {
		t.Fatalf("branch tree: %+v", branch)
	}
	bv := s.vms["branch"]
	var off *Disk
	for _, d := range r.Disks {
		if d.Path == bv.OffBranch[0] {
			off = d
		}
	}
	if off == nil || off.OnLiveChain || branch.Reclaimable != off.Allocated || off.Allocated == 0 {
		t.Fatalf("off-branch %+v reclaimable %d", off, branch.Reclaimable)
	}
	// The shared template is on two VMs' live chains and has two children.
	for _, d := range r.Disks {
		if d.Path == s.template && (len(d.Children) != 2 || !d.OnLiveChain) {
			t.Fatalf("template %+v", d)
		}
	}
	// Unattached: the junk file (unreadable, no config).
	found := false
	for _, u := range r.Unattached {
		if u.Path == s.junk {
			found = true
		}
	}
	if !found {
		t.Errorf("junk not listed as unattached: %+v", r.Unattached)
	}
	// Merge growth is known for every resolved link and the VM merge need
	// is at least the largest link growth of its live chain.
	var lv *VM
	for _, v := range r.VMs {
		if v.Name == "linear" {
			lv = v
		}
	}
	var maxLink int64
	for _, d := range r.Disks {
		if d.Parent != "" && d.Error == "" && d.MergeGrowth < 0 {
			t.Errorf("merge growth unknown for %s", d.Path)
		}
		for _, p := range lin.Chain[:len(lin.Chain)-1] {
			if d.Path == p {
				maxLink = max(maxLink, d.MergeGrowth)
			}
		}
	}
	if lv.MergeNeed < maxLink || lv.MergeNeed == 0 {
		t.Errorf("linear merge need %d < largest link growth %d", lv.MergeNeed, maxLink)
	}
}

func TestAnalyzeVerdicts(t *testing.T) {
	root := t.TempDir()
	s := buildTestStore(t, root)
	th := testThresholds()
	base := analyze(t, s, StaticVolumes{{Mount: root, Size: 1 << 40, Free: 1 << 39}}, th)
	v0 := base.Volumes[0]
	if v0.DiffGrowth <= 0 || v0.MergeNeed <= 0 {
		t.Fatalf("diff growth %d, merge need %d", v0.DiffGrowth, v0.MergeNeed)
	}
	other := VolumeInfo{Mount: "/elsewhere", Size: 1 << 40, Free: 1 << 39}
	ro := VolumeInfo{Mount: "/readonly", Size: 1 << 41, Free: 1 << 40, ReadOnly: true}
	tiny := VolumeInfo{Mount: "/tiny", Size: 1 << 20, Free: 1 << 20}
	cases := []struct {
		name    string
		free    int64
		verdict Verdict
		codes   []string
	}{
		{"warning below 2 GiB", 1 << 30, VerdictWarning, []string{FindLowSpace}},
		{"paused risk", v0.DiffGrowth - 1, VerdictCritical, []string{FindPausedRisk}},
		{"merge cannot fit", v0.MergeNeed - 1, VerdictCritical, []string{FindMergeNoSpace}},
		{"below 200 MiB", 100 << 20, VerdictCritical, []string{FindLowSpace}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := analyze(t, s, StaticVolumes{{Mount: root, Size: 1 << 40, Free: c.free}, other, ro, tiny}, th)
			var v *Volume
			for _, x := range r.Volumes {
				if x.Mount == root {
					v = x
				}
			}
			if v.Verdict != c.verdict || len(v.Reasons) == 0 {
				t.Fatalf("verdict %s (%v), want %s", v.Verdict, v.Reasons, c.verdict)
			}
			for _, code := range c.codes {
				if len(findings(r, code)) == 0 {
					t.Errorf("no %s finding", code)
				}
			}
			if c.verdict == VerdictCritical {
				if len(v.RelocationTargets) != 1 || v.RelocationTargets[0] != "/elsewhere" {
					t.Errorf("relocation targets %v (want only /elsewhere: not read-only, not tiny)", v.RelocationTargets)
				}
			} else if len(v.RelocationTargets) != 0 {
				t.Errorf("targets for a non-critical volume: %v", v.RelocationTargets)
			}
			if r.Summary.Worst != c.verdict {
				t.Errorf("summary worst %s", r.Summary.Worst)
			}
		})
	}
}

// TestMergeGrowthExact checks merge needs against hand-counted blocks.
func TestMergeGrowthExact(t *testing.T) {
	mb := int64(vhd.MiB)
	cases := []struct {
		name         string
		format       vhd.Format
		ptype        vhd.DiskType
		pbs, cbs     uint32
		parentWrites [][2]int64 // off, len
		childWrites  [][2]int64
		want         int64
	}{
		// Parent holds blocks 0-3 (2 MiB blocks). The child touches block 2
		// (held), 5, and 9+10 (a write across the boundary): 3 new blocks.
		{"vhdx dynamic", vhd.FormatVHDX, vhd.TypeDynamic, 2 << 20, 2 << 20,
			[][2]int64{{0, 8 * mb}}, [][2]int64{{4*mb + 100, 50}, {10 * mb, 4096}, {20*mb - 512, 1024}}, 3 * 2 * mb},
		// 32 MiB parent blocks: block 0 held; the child's writes at 1 MiB
		// and 40 MiB touch blocks 0 and 1: one new 32 MiB block.
		{"vhdx bigger parent blocks", vhd.FormatVHDX, vhd.TypeDynamic, 32 << 20, 2 << 20,
			[][2]int64{{0, 4096}}, [][2]int64{{1 * mb, 4096}, {40 * mb, 4096}}, 32 * mb},
		// A child with larger blocks (8 MiB) than its parent (1 MiB; the
		// figure then comes from opening both again). Each write fills a
		// whole 8 MiB child block (0-8 and 40-48 MiB): 16 parent blocks,
		// of which the parent holds block 0.
		{"vhdx smaller parent blocks", vhd.FormatVHDX, vhd.TypeDynamic, 1 << 20, 8 << 20,
			[][2]int64{{0, 4096}}, [][2]int64{{1 * mb, 4096}, {40 * mb, 4096}}, 15 * mb},
		// VHD: each new block costs bitmap (512) + block + worst-case 4 KiB alignment.
		{"vhd dynamic", vhd.FormatVHD, vhd.TypeDynamic, 2 << 20, 2 << 20,
			[][2]int64{{0, 2 * mb}}, [][2]int64{{100, 10}, {6 * mb, 10}, {30 * mb, 10}}, 2 * (512 + 2*mb + 3584)},
		// A fixed parent never grows.
		{"vhdx fixed", vhd.FormatVHDX, vhd.TypeFixed, 2 << 20, 2 << 20,
			nil, [][2]int64{{6 * mb, 10}, {30 * mb, 10}}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ext := map[vhd.Format]string{vhd.FormatVHD: "vhd", vhd.FormatVHDX: "vhdx"}[c.format]
			pp := filepath.Join(dir, "p."+ext)
			cp := filepath.Join(dir, "c.a"+ext)
			write := func(path string, ws [][2]int64) {
				ch, err := vhd.OpenChain(path, nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, w := range ws {
					if _, err := ch.WriteAt(bytes.Repeat([]byte{0x5A}, int(w[1])), w[0]); err != nil {
						t.Fatal(err)
					}
				}
				ch.Close()
			}
			im, err := vhd.Create(pp, vhd.CreateSpec{Format: c.format, Type: c.ptype, Size: 64 * mb, BlockSize: c.pbs}, nil)
			if err != nil {
				t.Fatal(err)
			}
			im.Close()
			write(pp, c.parentWrites)
			im, err = vhd.Create(cp, vhd.CreateSpec{Format: c.format, Parent: pp, BlockSize: c.cbs}, nil)
			if err != nil {
				t.Fatal(err)
			}
			im.Close()
			write(cp, c.childWrites)
			r, err := Analyze(context.Background(), []string{dir}, Options{Volumes: StaticVolumes{{Mount: dir, Size: 1 << 40, Free: 1 << 39}}})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range r.Disks {
				if d.Path == cp && d.MergeGrowth != c.want {
					t.Fatalf("merge growth %d, want %d", d.MergeGrowth, c.want)
				}
			}
		})
	}
}

// TestCollapsePeakRead: the collapse peak computed from what was read of the
// files equals the one computed by opening them again, for chains whose
// layers have smaller, equal and larger blocks than the base.
func TestCollapsePeakRead(t *testing.T) {
	mb := int64(vhd.MiB)
	for _, bss := range [][]uint32{{2 << 20, 2 << 20, 2 << 20}, {32 << 20, 2 << 20, 1 << 20}, {1 << 20, 8 << 20, 1 << 20}} {
		dir := t.TempDir()
		var ch []*Disk // leaf first
		parent := ""
		for i, bs := range bss {
			p := filepath.Join(dir, fmt.Sprintf("d%d.avhdx", i))
			spec := vhd.CreateSpec{Format: vhd.FormatVHDX, Parent: parent, BlockSize: bs}
			if parent == "" {
				p = filepath.Join(dir, "base.vhdx")
				spec = vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 64 * mb, BlockSize: bs}
			}
			im, err := vhd.Create(p, spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			im.Close()
			c, err := vhd.OpenChain(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			offs := []int64{0}
			if i > 0 {
				offs = []int64{int64(i)*9*mb + 512, 33*mb + int64(i)*5*mb, 64*mb - 4096*int64(i)}
			}
			for _, off := range offs {
				if _, err := c.WriteAt(bytes.Repeat([]byte{1}, 4096), off); err != nil {
					t.Fatal(err)
				}
			}
			c.Close()
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			ch = append([]*Disk{{Path: p, Volume: dir, Type: string(vhd.TypeDifferencing), Allocated: allocatedBytes(fi)}}, ch...)
			parent = p
		}
		ch[len(ch)-1].Type = string(vhd.TypeDynamic)
		a := &analysis{files: map[string]*diskFile{}}
		want, err := collapsePeakOpen(ch)
		if err != nil {
			t.Fatal(err)
		}
		got, err := a.collapsePeak(ch)
		if err != nil || got != want || want == 0 {
			t.Fatalf("block sizes %v: collapse peak %d (%v), by opening again %d", bss, got, err, want)
		}
	}
}

// TestAnalyzeTmpfs runs on a real small volume: free space, verdicts and
// file-to-volume mapping come from the kernel. Includes a disk qemu-img made.
func TestAnalyzeTmpfs(t *testing.T) {
	mnt := storetest.MountTmpfs(t, "64m")
	bv, err := storetest.BuildVM(mnt, storetest.VMSpec{Name: "tight", Checkpoints: []storetest.CheckpointSpec{
		{Parent: -1, WriteBytes: 1 << 20}, {Parent: 0, WriteBytes: 1 << 20},
	}, CurrentAfter: storetest.LatestCheckpoint, Size: 256 << 20, BlockSize: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var qemuDisk string
	if _, err := exec.LookPath("qemu-img"); err == nil {
		qemuDisk = filepath.Join(mnt, "loose", "qemu.vhdx")
		os.MkdirAll(filepath.Dir(qemuDisk), 0o755)
		if out, err := exec.Command("qemu-img", "create", "-f", "vhdx", qemuDisk, "32M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v %s", err, out)
		}
	}
	r, err := Analyze(context.Background(), []string{mnt}, Options{PathMap: bv.PathMap})
	if err != nil {
		t.Fatal(err)
	}
	var v *Volume
	for _, x := range r.Volumes {
		if x.Mount == mnt {
			v = x
		}
	}
	if v == nil || v.FSType != "tmpfs" || v.Size != 64<<20 || v.Free <= 0 || v.Free >= v.Size {
		t.Fatalf("tmpfs volume %+v (volumes %+v)", v, r.Volumes)
	}
	// 256 MiB virtual disks on a 64 MiB volume: the live checkpoint disk
	// can outgrow the free space — paused-critical risk from real numbers.
	if v.Verdict != VerdictCritical || len(findings(r, FindPausedRisk)) == 0 {
		t.Fatalf("verdict %s %v", v.Verdict, v.Reasons)
	}
	for _, d := range r.Disks {
		if d.Volume != mnt {
			t.Errorf("%s mapped to volume %q", d.Path, d.Volume)
		}
		if d.Path == qemuDisk && (d.Format != "vhdx" || d.Type != "dynamic" || d.Error != "") {
			t.Errorf("qemu-img disk %+v", d)
		}
	}
	if qemuDisk != "" {
		found := false
		for _, u := range r.Unattached {
			found = found || u.Path == qemuDisk
		}
		if !found {
			t.Errorf("qemu-img disk not in unattached chains")
		}
	}
}

// An abandoned branch's leaf whose checkpoint was deleted is both a VM's
// off-branch leaf and an orphan: the store's reclaimable bytes count it
// once.
func TestReclaimableCountsEachFileOnce(t *testing.T) {
	root := t.TempDir()
	bv, err := storetest.BuildVM(root, storetest.VMSpec{Name: "web", LiveWriteBytes: 1 << 20, CurrentAfter: 0,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1}, {Parent: 0, WriteBytes: 2 << 20, Deleted: true}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Analyze(context.Background(), []string{root}, Options{PathMap: bv.PathMap, Volumes: StaticVolumes{{Mount: root, Size: 1 << 40, Free: 1 << 39}}})
	if err != nil {
		t.Fatal(err)
	}
	var leaf *Disk
	orphan := false
	for _, d := range r.Disks {
		if d.Path == bv.OffBranch[0] {
			leaf = d
		}
	}
	for _, f := range r.Findings {
		orphan = orphan || (f.Code == FindOrphan && len(f.Paths) == 1 && f.Paths[0] == bv.OffBranch[0])
	}
	if leaf == nil || leaf.Allocated <= 0 || !orphan || len(r.VMs) != 1 || r.VMs[0].Reclaimable != leaf.Allocated {
		t.Fatalf("setup: leaf %+v, orphan finding %v, VMs %d", leaf, orphan, len(r.VMs))
	}
	if r.Summary.ReclaimableBytes != leaf.Allocated {
		t.Fatalf("reclaimable %d, want the leaf's %d once", r.Summary.ReclaimableBytes, leaf.Allocated)
	}
}

// A checkpoint configuration naming a disk that is not there is a
// finding (the checkpoint cannot be applied); it used to pass unnoticed.
func TestMissingCheckpointDisk(t *testing.T) {
	root := t.TempDir()
	bv, err := storetest.BuildVM(root, storetest.VMSpec{Name: "web", LiveWriteBytes: 1 << 20,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := bv.CheckpointConfigs[0]
	if n, err := vm.RewriteXMLDiskPath(cfg, bv.WindowsPath[bv.Base], `E:\unmounted\gone.vhdx`); err != nil || n != 1 {
		t.Fatalf("rewrite: %d %v", n, err)
	}
	r, err := Analyze(context.Background(), []string{root}, Options{PathMap: bv.PathMap, Volumes: StaticVolumes{{Mount: root, Size: 1 << 40, Free: 1 << 39}}})
	if err != nil {
		t.Fatal(err)
	}
	var got []Finding
	for _, f := range r.Findings {
		if f.Code == FindMissingCheckpointDisk {
			got = append(got, f)
		}
	}
	if len(got) != 1 || got[0].VM != "web" || got[0].Severity != SevWarning || !strings.Contains(got[0].Message, `E:\unmounted\gone.vhdx`) || got[0].Evidence["config"] != cfg {
		t.Fatalf("findings: %+v", got)
	}
}

// A VMCX configuration with a write Hyper-V logged but had not applied (its
// SCSI drive changed from e.vhdx to d.vhdx): the analysis reads it with the
// write replayed — the drive is d.vhdx, no missing-disk finding for e.vhdx —
// and says so in an info finding naming the file.
func TestAnalyzeReplayedVMCX(t *testing.T) {
	root := t.TempDir()
	vmDir, cdir := filepath.Join(root, "fuzz"), filepath.Join(root, "c")
	cfg, err := storetest.ReplayPendingVM(vmDir)
	if err != nil {
		t.Fatal(err)
	}
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
	r, err := Analyze(context.Background(), []string{root}, Options{PathMap: vhd.PathMap{pm}, Volumes: StaticVolumes{{Mount: root, Size: 1 << 40, Free: 1 << 39}}})
	if err != nil {
		t.Fatal(err)
	}
	var info []Finding
	for _, f := range r.Findings {
		switch f.Code {
		case FindVMCXLogReplayed:
			info = append(info, f)
		case FindMissingDisk:
			t.Errorf("missing-disk finding: %s", f.Message)
		}
	}
	if len(info) != 1 || info[0].Severity != SevInfo || info[0].VM != "fuzz" || info[0].Evidence["config"] != cfg || info[0].Evidence["replayed_writes"] != 1 {
		t.Fatalf("findings: %+v", info)
	}
	if len(r.VMs) != 1 || len(r.VMs[0].Drives) != 2 || r.VMs[0].Drives[1].Path != filepath.Join(cdir, "d.vhdx") || !r.VMs[0].Drives[1].Exists {
		t.Fatalf("drives: %+v", r.VMs)
	}
	for _, w := range r.Warnings {
		if strings.Contains(w, "inconsistent") {
			t.Errorf("scan warning: %s", w)
		}
	}
}
