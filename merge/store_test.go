package merge

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// A VM whose checkpoint was deleted in Hyper-V (merge pending): hvsnap
// space predicts the base's growth, the merge grows it by exactly that,
// the VM's XML configuration then names the base, and the VM's disk reads
// the same.
func TestMergePendingVMAndSpacePrediction(t *testing.T) {
	for _, f := range []vhd.Format{vhd.FormatVHDX, vhd.FormatVHD} {
		t.Run(string(f), func(t *testing.T) {
			root := t.TempDir()
			bv, err := storetest.BuildVM(root, storetest.VMSpec{Name: "web", Format: f, Size: 96 * MiB, BlockSize: 1 * MiB,
				BaseWriteBytes: 8 * MiB, LiveWriteBytes: 12 * MiB, DiskMergePending: true,
				Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Deleted: true}}})
			if err != nil {
				t.Fatal(err)
			}
			if len(bv.Chain) != 2 {
				t.Fatalf("chain %v", bv.Chain)
			}
			want, err := bv.LiveSHA256()
			if err != nil {
				t.Fatal(err)
			}
			rep, err := space.Analyze(context.Background(), []string{root}, space.Options{PathMap: bv.PathMap, Volumes: bigVolumes})
			if err != nil {
				t.Fatal(err)
			}
			predicted := int64(-2)
			for _, d := range rep.Disks {
				if d.Path == bv.Leaf {
					predicted = d.MergeGrowth
				}
			}
			o := &Options{PathMap: bv.PathMap, Volumes: bigVolumes}
			p, err := PlanMerge(bv.Leaf, o)
			if err != nil {
				t.Fatal(err)
			}
			if p.Steps[0].Growth != predicted {
				t.Errorf("plan growth %d, space predicted %d", p.Steps[0].Growth, predicted)
			}
			if len(p.Configs) != 1 || p.Configs[0].Config != bv.ConfigPath {
				t.Fatalf("configs to update: %+v", p.Configs)
			}
			before := fileSize(bv.Base)
			if _, err := Run(p, o, nil); err != nil {
				t.Fatal(err)
			}
			grew := fileSize(bv.Base) - before
			if f == vhd.FormatVHDX && grew != predicted {
				t.Errorf("base grew %d, space predicted %d", grew, predicted)
			}
			if f == vhd.FormatVHD && (grew > predicted || predicted-grew > predicted/8+4096) {
				t.Errorf("base grew %d, space predicted %d (VHD: an upper bound within alignment padding)", grew, predicted)
			}
			got, err := storetest.ChainSHA256(bv.Base, bv.PathMap)
			if err != nil || got != want {
				t.Fatalf("base content after merge: %v %s want %s", err, got, want)
			}
			cfg, err := vm.ParseConfig(bv.ConfigPath, &vm.ParseOptions{PathMap: bv.PathMap})
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Disks) != 1 || cfg.Disks[0].LocalPath != bv.Base {
				t.Fatalf("config names %+v, want the base %s", cfg.Disks, bv.Base)
			}
			if !strings.EqualFold(cfg.Disks[0].WindowsPath, bv.WindowsPath[bv.Base]) {
				t.Errorf("config Windows path %q, want %q", cfg.Disks[0].WindowsPath, bv.WindowsPath[bv.Base])
			}
			if _, err := os.Stat(bv.Leaf); !os.IsNotExist(err) {
				t.Error("merged leaf still exists")
			}
		})
	}
}

// A checkpoint that still exists names the base: merging the live disk
// into it would destroy the checkpoint's state, so the merge is refused.
func TestMergeRefusesLiveCheckpoint(t *testing.T) {
	root := t.TempDir()
	bv, err := storetest.BuildVM(root, storetest.VMSpec{Name: "db", LiveWriteBytes: 2 * MiB,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = PlanMerge(bv.Leaf, &Options{PathMap: bv.PathMap, Volumes: bigVolumes})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "checkpoint") {
		t.Fatalf("got %v", err)
	}
}

// ClearPendingFlags after single merges: disk_merge_pending stays while a
// deleted checkpoint's disk is still in the VM's chain and goes with the
// last merge.
func TestClearPendingFlagsAfterLastMerge(t *testing.T) {
	bv, err := storetest.BuildVM(t.TempDir(), storetest.VMSpec{Name: "web", LiveWriteBytes: MiB, CurrentAfter: 2, DiskMergePending: true,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Deleted: true}, {Parent: 0, WriteBytes: MiB, Deleted: true}, {Parent: 1, WriteBytes: MiB, Deleted: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(bv.Chain) != 4 {
		t.Fatalf("chain: %v", bv.Chain)
	}
	flag := func() bool {
		cfg, err := vm.ParseConfig(bv.ConfigPath, &vm.ParseOptions{PathMap: bv.PathMap})
		if err != nil {
			t.Fatal(err)
		}
		return cfg.DiskMergePending
	}
	// Checkpoint 2's disk into 1's, 1's into the base, then the live leaf
	// into the base (every checkpoint was deleted).
	for i, disk := range []string{bv.Chain[1], bv.Chain[2], bv.Chain[0]} {
		o := &Options{PathMap: bv.PathMap, Volumes: bigVolumes}
		p, err := PlanMerge(disk, o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Run(p, o, nil); err != nil {
			t.Fatal(err)
		}
		changed, err := ClearPendingFlags(p, o)
		if err != nil {
			t.Fatal(err)
		}
		last := i == 2
		if flag() == last || (len(changed) == 1) != last {
			t.Fatalf("after merge %d: flag %v, changed %v", i+1, flag(), changed)
		}
	}
}

// The flag stays while a deleted checkpoint's disk where two branches
// start is still on the live chain (space's merge-pending finding counts
// only single-child parents), and a merge for one VM made from a template
// does not touch another's flag. A finding naming several VMs counts for
// each.
func TestClearPendingFlagsBranchPointAndTemplate(t *testing.T) {
	bv, err := storetest.BuildVM(t.TempDir(), storetest.VMSpec{Name: "web", LiveWriteBytes: MiB, CurrentAfter: 3, DiskMergePending: true,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1}, {Parent: 0, WriteBytes: MiB, Deleted: true}, {Parent: 1, WriteBytes: MiB, Deleted: true}, {Parent: 1, WriteBytes: MiB, Deleted: true}}})
	if err != nil {
		t.Fatal(err)
	}
	o := &Options{PathMap: bv.PathMap, Volumes: bigVolumes}
	p, err := PlanMerge(bv.Leaf, o) // the live leaf into checkpoint 3's disk
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(p, o, nil); err != nil {
		t.Fatal(err)
	}
	if changed, err := ClearPendingFlags(p, o); err != nil || len(changed) != 0 {
		t.Fatalf("flag cleared with checkpoint 1's disk still on the live chain: %v %v", changed, err)
	}

	top := t.TempDir()
	tmpl := filepath.Join(top, "templates", "base.vhdx")
	makeTemplate(t, tmpl)
	root := filepath.Join(top, "VMs")
	web, err := storetest.BuildVM(root, storetest.VMSpec{Name: "web", ParentDisk: tmpl, LiveWriteBytes: MiB, DiskMergePending: true,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Deleted: true}}})
	if err != nil {
		t.Fatal(err)
	}
	db, err := storetest.BuildVM(root, storetest.VMSpec{Name: "db", ParentDisk: tmpl, DiskMergePending: true})
	if err != nil {
		t.Fatal(err)
	}
	dbBefore := fileDigest(t, db.ConfigPath)
	o = &Options{PathMap: web.PathMap, Volumes: bigVolumes, Roots: []string{root, filepath.Dir(tmpl)}}
	if p, err = PlanMerge(web.Leaf, o); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(p, o, nil); err != nil {
		t.Fatal(err)
	}
	changed, err := ClearPendingFlags(p, o)
	if err != nil || len(changed) != 1 || changed[0] != web.ConfigPath {
		t.Fatalf("changed %v, %v; want only %s", changed, err, web.ConfigPath)
	}
	if fileDigest(t, db.ConfigPath) != dbBefore {
		t.Fatal("the other VM's configuration was rewritten")
	}

	_, doubt := flagState(&space.Report{Findings: []space.Finding{{Code: space.FindMissingParent, VM: "db, web"}}})
	if !doubt["web"] || !doubt["db"] {
		t.Fatalf("a finding naming two VMs: %v", doubt)
	}
}

// A VM made from a template that is itself a differencing disk (.vhdx, not
// a checkpoint disk) gets its flag cleared after its last merge.
func TestClearPendingFlagsDifferencingTemplate(t *testing.T) {
	top := t.TempDir()
	t1, t2 := filepath.Join(top, "templates", "os.vhdx"), filepath.Join(top, "templates", "os-updated.vhdx")
	makeTemplate(t, t1)
	makeChild(t, t2, t1)
	root := filepath.Join(top, "VMs")
	web, err := storetest.BuildVM(root, storetest.VMSpec{Name: "web", ParentDisk: t2, LiveWriteBytes: MiB, DiskMergePending: true,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Deleted: true}}})
	if err != nil {
		t.Fatal(err)
	}
	o := &Options{PathMap: web.PathMap, Volumes: bigVolumes, Roots: []string{root, filepath.Dir(t1)}}
	p, err := PlanMerge(web.Leaf, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(p, o, nil); err != nil {
		t.Fatal(err)
	}
	if changed, err := ClearPendingFlags(p, o); err != nil || len(changed) != 1 {
		t.Fatalf("changed %v, %v", changed, err)
	}
}
