package scenarios

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vm"
)

func diagnoseDir(t *testing.T, root string, free int64) *Diagnosis {
	t.Helper()
	dg, err := Diagnose(context.Background(), []string{root}, Options{
		PathMap: mapFor(root),
		Volumes: space.StaticVolumes{{Mount: "/", Device: "test", FSType: "test", Size: 1 << 40, Free: free}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return dg
}

// No false positives without tmpfs: a checkpoint branch (off-branch leaf a
// checkpoint names) and VMs made from one shared template disk.
func TestDiagnoseHealthyShapes(t *testing.T) {
	root := filepath.Join(t.TempDir(), "VMs")
	if _, err := storetest.BuildVM(root, storetest.VMSpec{Name: "branchy", LiveWriteBytes: 1 << 20, CurrentAfter: 0,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1, WriteBytes: 1 << 20}, {Parent: 0, WriteBytes: 1 << 20}}}); err != nil {
		t.Fatal(err)
	}
	tpl, err := storetest.BuildVM(root, storetest.VMSpec{Name: "template"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if _, err := storetest.BuildVM(root, storetest.VMSpec{Name: n, ParentDisk: tpl.Base, LiveWriteBytes: 1 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	dg := diagnoseDir(t, root, 1<<39)
	if len(dg.Detections) != 0 {
		for _, x := range dg.Detections {
			t.Errorf("false positive: %s: %s", x.Scenario, x.Summary)
		}
	}
	if dg.Worst != "ok" {
		t.Errorf("worst %s", dg.Worst)
	}
}

// A pending merge: detected with the bytes it frees and needs and a merge
// step naming the disk; with no room it becomes merge-cannot-fit.
func TestDiagnoseMergePendingAndCannotFit(t *testing.T) {
	root := filepath.Join(t.TempDir(), "VMs")
	bv, err := storetest.BuildVM(root, storetest.VMSpec{Name: "web", BlockSize: 2 << 20, DiskMergePending: true,
		BaseWrites: []storetest.Extent{{Off: 0, Len: 1 << 20}}, LiveWrites: []storetest.Extent{{Off: 32 << 20, Len: 4 << 20}},
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Writes: []storetest.Extent{{Off: 0, Len: 4096}}, Deleted: true}}})
	if err != nil {
		t.Fatal(err)
	}
	dg := diagnoseDir(t, root, 1<<39)
	sel := dg.Select(MergePending, "web")
	if len(dg.Detections) != 1 || len(sel) != 1 {
		t.Fatalf("detections %+v", dg.Detections)
	}
	x := sel[0]
	var merges, flags int
	for _, s := range x.Plan {
		if s.Kind == StepRun && s.Args[0] == "merge" && s.Args[len(s.Args)-1] == bv.Leaf {
			merges++
		}
		if s.Action == "clear-merge-pending" && s.Config == bv.ConfigPath {
			flags++
		}
	}
	if merges != 1 || flags != 1 || !strings.Contains(x.Summary, "free") {
		t.Fatalf("plan %+v", x.Plan)
	}
	small := diagnoseDir(t, root, 1<<20)
	if got := small.Select(MergeCannotFit, "web"); len(got) != 1 || got[0].Severity != SeverityCrit {
		for _, d := range small.Detections {
			t.Logf("%s %s %v", d.Scenario, d.Severity, d.VMs)
		}
		t.Fatal("1 MiB free: want merge-cannot-fit")
	}
	// The flag action is idempotent and keeps the config readable.
	for i := 0; i < 2; i++ {
		if _, err := x.Plan[len(x.Plan)-2].Do(); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := vm.ParseConfig(bv.ConfigPath, nil)
	if err != nil || cfg.DiskMergePending {
		t.Fatalf("flag after clear: %v %+v", err, cfg)
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{"a/b.vhdx": "a/b.vhdx", "Virtual Hard Disks": "'Virtual Hard Disks'", `C:\VMs=/x`: `'C:\VMs=/x'`, "it's": `'it'\''s'`, "": "''"} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %q, want %q", in, got, want)
		}
	}
}
