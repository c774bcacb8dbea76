package merge

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// branchVM: a VM running on a new branch off its first checkpoint (the
// base); the abandoned branch's disk is an off-branch leaf, used by its
// checkpoint unless deleted.
func branchVM(t *testing.T, deleted bool) (*storetest.BuiltVM, string) {
	t.Helper()
	bv, err := storetest.BuildVM(t.TempDir(), storetest.VMSpec{Name: "web", LiveWriteBytes: 2 * MiB, CurrentAfter: 0,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1}, {Parent: 0, WriteBytes: 2 * MiB, Deleted: deleted}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(bv.OffBranch) != 1 {
		t.Fatalf("off-branch disks: %v", bv.OffBranch)
	}
	return bv, bv.OffBranch[0]
}

func fileDigest(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// --remove-leaf: an off-branch leaf that nothing uses is removed without a
// merge (the rule, Hyper-V's behaviour); its parent is neither
// written nor locked (the VM on the other branch holds it), the live chain
// reads the same. A plain merge of it is refused and names --remove-leaf.
func TestRemoveLeaf(t *testing.T) {
	bv, leaf := branchVM(t, true)
	want, err := bv.LiveSHA256()
	if err != nil {
		t.Fatal(err)
	}
	_, err = PlanMerge(leaf, &Options{PathMap: bv.PathMap, Volumes: bigVolumes})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "--remove-leaf") {
		t.Fatalf("plain merge of the off-branch leaf: %v", err)
	}
	o := &Options{PathMap: bv.PathMap, Volumes: bigVolumes, RemoveLeaf: true}
	p, err := PlanMerge(leaf, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Steps) != 1 || !p.Steps[0].Discard || p.Steps[0].CopyBytes != 0 || p.Steps[0].Growth != 0 || p.Steps[0].FreedBytes <= 0 || p.Into != bv.Base {
		t.Fatalf("plan: %+v", p)
	}
	for _, f := range p.files() {
		if f == bv.Base {
			t.Fatal("the parent is among the files the removal locks")
		}
	}
	baseSum, baseFi := fileDigest(t, bv.Base), mustStat(t, bv.Base)
	release := holdLock(t, bv.Base) // the VM runs on the other branch
	res, err := Run(p, o, nil)
	release()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Merged) != 0 || len(res.Removed) != 1 || res.Removed[0] != leaf || len(res.Growth) != 0 {
		t.Fatalf("result: %+v", res)
	}
	if _, err := os.Stat(leaf); !os.IsNotExist(err) {
		t.Fatalf("the leaf is still there: %v", err)
	}
	if fileDigest(t, bv.Base) != baseSum || !mustStat(t, bv.Base).ModTime().Equal(baseFi.ModTime()) {
		t.Fatal("the parent was written")
	}
	if got, err := bv.LiveSHA256(); err != nil || got != want {
		t.Fatalf("the live chain changed: %v", err)
	}
	if js, _ := FindJournals(filepath.Dir(bv.Base)); len(js) != 0 {
		t.Fatalf("journals left: %v", js)
	}
}

// Interrupted just before the removal, it is finished by Resume.
func TestRemoveLeafResume(t *testing.T) {
	bv, leaf := branchVM(t, true)
	o := &Options{PathMap: bv.PathMap, Volumes: bigVolumes, RemoveLeaf: true}
	p, err := PlanMerge(leaf, o)
	if err != nil {
		t.Fatal(err)
	}
	stopAt(t, p, o, "0/remove:start")
	js, err := FindJournals(filepath.Dir(bv.Base))
	if err != nil || len(js) != 1 {
		t.Fatalf("journals: %v %v", js, err)
	}
	if _, err := os.Stat(leaf); err != nil {
		t.Fatalf("stopped before the removal, yet: %v", err)
	}
	if _, err := Resume(js[0], &Options{PathMap: bv.PathMap, Volumes: bigVolumes}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leaf); !os.IsNotExist(err) {
		t.Fatalf("resume did not remove the leaf: %v", err)
	}
}

// What --remove-leaf refuses, changing nothing.
func TestRemoveLeafRefusals(t *testing.T) {
	used, usedLeaf := branchVM(t, false) // its checkpoint still uses the leaf
	chained, err := storetest.BuildVM(t.TempDir(), storetest.VMSpec{Name: "db", LiveWriteBytes: MiB, CurrentAfter: 1,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1}, {Parent: 0, WriteBytes: MiB, Deleted: true}}})
	if err != nil {
		t.Fatal(err)
	}
	bare := t.TempDir()
	bareBase, bareLeaf := filepath.Join(bare, "base.vhdx"), filepath.Join(bare, "leaf.avhdx")
	for _, cs := range []vhd.CreateSpec{{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 8 * MiB}, {Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, Parent: bareBase}} {
		path := bareBase
		if cs.Parent != "" {
			path = bareLeaf
		}
		im, err := vhd.Create(path, cs, nil)
		if err != nil {
			t.Fatal(err)
		}
		im.Close()
	}
	stale, staleLeaf := branchVM(t, true)
	cfg, err := storetest.UnreplayedVM(filepath.Join(stale.Root, "other"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, disk string
		o          Options
		want       string
	}{
		{"used by its checkpoint", usedLeaf, Options{PathMap: used.PathMap}, `--remove-leaf: checkpoint "web - (1)"`},
		{"the VM's own disk", used.Leaf, Options{PathMap: used.PathMap}, `--remove-leaf: VM "web"`},
		{"a disk others depend on", chained.Chain[1], Options{PathMap: chained.PathMap}, "depends on this disk (removing it would break that disk); it is not a leaf"},
		{"no configuration to tell", bareLeaf, Options{}, "no VM configuration found"},
		{"with --into", staleLeaf, Options{PathMap: stale.PathMap, Into: stale.Base}, "does not take --into"},
		{"with --keep", staleLeaf, Options{PathMap: stale.PathMap, Keep: true}, "contradict"},
		{"a configuration that may lack its last changes, even accepted", staleLeaf, Options{PathMap: stale.PathMap, Roots: []string{stale.Root}, AcceptStale: []string{cfg}}, "may lack its last changes"},
	} {
		tc.o.Volumes, tc.o.RemoveLeaf = bigVolumes, true
		before := fileDigest(t, tc.disk)
		_, err := PlanMerge(tc.disk, &tc.o)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want a refusal saying %q", tc.name, err, tc.want)
		}
		if fileDigest(t, tc.disk) != before {
			t.Errorf("%s: the disk changed", tc.name)
		}
	}
}

func mustStat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// The audit's cases: --remove-leaf must not remove a disk that something
// it cannot see, or cannot read, may still need.
func TestRemoveLeafRefusesWhatItCannotTell(t *testing.T) {
	// 1. A VM whose configuration lives elsewhere keeps its disks in a
	// shared folder that also holds an unrelated VM: its live disk is no
	// off-branch leaf of any VM found.
	top := t.TempDir()
	shared := filepath.Join(top, "hv")
	web, err := storetest.BuildVM(filepath.Join(top, "cfgs"), storetest.VMSpec{Name: "web", LiveWriteBytes: MiB,
		DiskDir: filepath.Join(shared, "Virtual Hard Disks"), Checkpoints: []storetest.CheckpointSpec{{Parent: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := storetest.BuildVM(shared, storetest.VMSpec{Name: "imp"}); err != nil {
		t.Fatal(err)
	}
	// 2. A store one of whose configurations cannot be read.
	corrupt, corruptLeaf := branchVM(t, true)
	if _, err := storetest.BuildVM(corrupt.Root, storetest.VMSpec{Name: "db"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(corrupt.ConfigPath, []byte("<?xml version=\"1.0\"?><configuration><broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	// 3. Another VM names the leaf by a Windows path that does not resolve
	// here (no --path-map).
	named, namedLeaf := branchVM(t, true)
	db, err := storetest.BuildVM(named.Root, storetest.VMSpec{Name: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := vm.RewriteXMLDiskPath(db.ConfigPath, db.WindowsPath[db.Leaf], `Z:\elsewhere\`+filepath.Base(namedLeaf)); err != nil || n != 1 {
		t.Fatalf("rewrite db's drive: %d %v", n, err)
	}
	// 4. A child whose linkage no longer matches the leaf (repairable with
	// hvsnap reparent) still depends on it.
	broken, brokenLeaf := branchVM(t, true)
	child := filepath.Join(filepath.Dir(brokenLeaf), "child.avhdx")
	makeChild(t, child, brokenLeaf)
	lim, err := vhd.Open(brokenLeaf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := lim.SetDataWriteGUID(vhd.NewGUID()); err != nil {
		t.Fatal(err)
	}
	lim.Close()
	// 5. A hand-made differencing disk (.vhdx), nothing using it.
	hand, _ := branchVM(t, true)
	handDisk := filepath.Join(filepath.Dir(hand.Base), "scratch.vhdx")
	makeChild(t, handDisk, hand.Base)

	for _, tc := range []struct {
		name, disk string
		o          Options
		want       string
	}{
		{"a VM configured elsewhere", web.Leaf, Options{PathMap: web.PathMap}, "is named by no VM or checkpoint configuration found"},
		{"an unreadable configuration", corruptLeaf, Options{PathMap: corrupt.PathMap, Roots: []string{corrupt.Root}}, "the scan of the roots reported a problem"},
		{"an unresolved drive of its name", namedLeaf, Options{Roots: []string{named.Root}}, `Z:\elsewhere\`},
		{"a child whose linkage no longer matches", brokenLeaf, Options{PathMap: broken.PathMap}, "child.avhdx depends on this disk"},
		{"not a checkpoint disk", handDisk, Options{PathMap: hand.PathMap}, "not a checkpoint disk"},
	} {
		tc.o.Volumes, tc.o.RemoveLeaf = bigVolumes, true
		before := fileDigest(t, tc.disk)
		_, err := PlanMerge(tc.disk, &tc.o)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want a refusal saying %q", tc.name, err, tc.want)
		}
		// The plain merge's refusal does not offer --remove-leaf either.
		tc.o.RemoveLeaf = false
		if _, err := PlanMerge(tc.disk, &tc.o); err != nil && strings.Contains(err.Error(), "--remove-leaf") {
			t.Errorf("%s: a plain merge offers --remove-leaf: %v", tc.name, err)
		}
		if fileDigest(t, tc.disk) != before {
			t.Errorf("%s: the disk changed", tc.name)
		}
	}
}

// A removal interrupted and resumed later is checked again: a disk made
// from the leaf in between keeps it.
func TestRemoveLeafResumeChecksAgain(t *testing.T) {
	bv, leaf := branchVM(t, true)
	o := &Options{PathMap: bv.PathMap, Volumes: bigVolumes, RemoveLeaf: true}
	p, err := PlanMerge(leaf, o)
	if err != nil {
		t.Fatal(err)
	}
	stopAt(t, p, o, "journal")
	js, err := FindJournals(filepath.Dir(leaf))
	if err != nil || len(js) != 1 || filepath.Dir(js[0]) != filepath.Dir(leaf) {
		t.Fatalf("journals next to the leaf: %v %v", js, err)
	}
	makeChild(t, filepath.Join(filepath.Dir(leaf), "later.avhdx"), leaf)
	_, err = Resume(js[0], &Options{PathMap: bv.PathMap, Volumes: bigVolumes}, nil)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "later.avhdx depends on this disk") {
		t.Fatalf("resume: %v", err)
	}
	if _, err := os.Stat(leaf); err != nil {
		t.Fatalf("the leaf was removed: %v", err)
	}
}

// The second audit's cases: a damaged child, a child whose locator does not
// resolve, a template-shared parent, Windows spellings of the name, a root
// gone before the resume; and a resume refused by the re-check abandons the
// removal instead of leaving it stuck.
func TestRemoveLeafSecondAudit(t *testing.T) {
	mk := func(path, parent string) { makeChild(t, path, parent) }
	// A damaged child: both headers zeroed.
	dam, damLeaf := branchVM(t, true)
	damChild := filepath.Join(filepath.Dir(damLeaf), "damaged.avhdx")
	mk(damChild, damLeaf)
	f, err := os.OpenFile(damChild, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 128<<10), 64<<10)
	f.Close()
	// A child whose locator does not resolve here (another host's paths)
	// but whose linkage names the leaf.
	mv, mvLeaf := branchVM(t, true)
	unres := filepath.Join(filepath.Dir(mvLeaf), "moved", "c.avhdx")
	os.MkdirAll(filepath.Dir(unres), 0o755)
	mk(unres, mvLeaf)
	lim, err := vhd.Open(mvLeaf, &vhd.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	linkage := lim.Info().DataWriteGUID
	lim.Close()
	cim, err := vhd.Open(unres, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cim.SetParent(&vhd.NewParent{Linkage: linkage, Name: filepath.Base(mvLeaf), RelativePath: `.\gone\` + filepath.Base(mvLeaf), AbsolutePath: `E:\Hyper-V\web\` + filepath.Base(mvLeaf)}); err != nil {
		t.Fatal(err)
	}
	cim.Close()
	// A template two VMs were made from; the second VM's disk sits with the
	// first's configuration under the roots, its configuration elsewhere.
	top := t.TempDir()
	tmpl := filepath.Join(top, "templates", "base.vhdx")
	makeTemplate(t, tmpl)
	tw, err := storetest.BuildVM(filepath.Join(top, "VMs"), storetest.VMSpec{Name: "web", ParentDisk: tmpl})
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(filepath.Dir(tw.Base), "db_5A1C.avhdx")
	mk(other, tmpl)
	// Another VM names the leaf with a trailing dot (Windows ignores it).
	sp, spLeaf := branchVM(t, true)
	db, err := storetest.BuildVM(sp.Root, storetest.VMSpec{Name: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if w, ok := sp.PathMap.ToWindows(spLeaf); !ok {
		t.Fatal("no Windows path for the leaf")
	} else if _, err := vm.RewriteXMLDiskPath(db.ConfigPath, db.WindowsPath[db.Leaf], w+"."); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, disk string
		o          Options
		want       string
	}{
		{"a damaged child", damLeaf, Options{PathMap: dam.PathMap}, "damaged.avhdx under the roots cannot be read"},
		{"a template-shared parent", other, Options{PathMap: tw.PathMap, Roots: []string{filepath.Join(top, "VMs"), filepath.Join(top, "templates")}}, "is named by no VM or checkpoint configuration"},
		{"a trailing dot", spLeaf, Options{PathMap: sp.PathMap, Roots: []string{sp.Root}}, "did not resolve to a local file"},
		{"a child whose locator does not resolve", mvLeaf, Options{PathMap: mv.PathMap}, "c.avhdx names this disk as its parent"},
	} {
		tc.o.Volumes, tc.o.RemoveLeaf = bigVolumes, true
		if _, err := PlanMerge(tc.disk, &tc.o); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want a refusal saying %q", tc.name, err, tc.want)
		}
	}

	// A root gone before the resume; then a resume refused by the re-check
	// abandons the removal.
	bv, leaf := branchVM(t, true)
	extra := t.TempDir()
	o := &Options{PathMap: bv.PathMap, Volumes: bigVolumes, RemoveLeaf: true, Roots: []string{bv.Root, extra}}
	p, err := PlanMerge(leaf, o)
	if err != nil {
		t.Fatal(err)
	}
	stopAt(t, p, o, "journal")
	os.Remove(extra)
	js, _ := FindJournals(filepath.Dir(leaf))
	if len(js) != 1 {
		t.Fatalf("journals: %v", js)
	}
	_, err = Resume(js[0], &Options{Volumes: bigVolumes}, nil)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "cannot be read now") || !strings.Contains(err.Error(), "the removal is abandoned") {
		t.Fatalf("resume with a root gone: %v", err)
	}
	if _, err := os.Stat(leaf); err != nil {
		t.Fatalf("the leaf was removed: %v", err)
	}
	if js, _ := FindJournals(filepath.Dir(leaf)); len(js) != 0 {
		t.Fatalf("the abandoned removal left its journal: %v", js)
	}
	// Nothing stuck: planned again (the extra root given no more), it runs.
	p, err = PlanMerge(leaf, &Options{PathMap: bv.PathMap, Volumes: bigVolumes, RemoveLeaf: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(p, &Options{PathMap: bv.PathMap, Volumes: bigVolumes}, nil); err != nil {
		t.Fatal(err)
	}
}
