package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/relocate"
)

func TestRelocateCLIUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"relocate"},
		{"relocate", dir},
		{"relocate", dir, "--to", t.TempDir(), "--back", "--keep-source"},
		{"relocate", dir, "other", "--to", t.TempDir()},
	} {
		if code, out, errs := hv(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want 2\n%s%s", args, code, out, errs)
		}
	}
	out := mustHV(t, "relocate", "--help")
	for _, w := range []string{"--merge", "--back", "--keep-source", "--dry-run", "--resume", "0x80070070", "Examples:"} {
		if !strings.Contains(out, w) {
			t.Errorf("help lacks %q", w)
		}
	}
}

// The CLI on real small volumes: the plan as JSON changes nothing, a target
// too small is refused with exit 3 and the numbers, and a relocation with
// merge and move back ends with the VM in its folder, merged, reading the same.
func TestRelocateCLI(t *testing.T) {
	src := storetest.MountTmpfs(t, "128m")
	dst := storetest.MountTmpfs(t, "256m")
	small := storetest.MountTmpfs(t, "8m")
	bv, err := storetest.BuildVM(filepath.Join(src, "VMs"), storetest.VMSpec{Name: "web", Size: 32 << 20,
		BaseWriteBytes: 4 << 20, LiveWriteBytes: 4 << 20, DiskMergePending: true,
		CurrentAfter: storetest.LatestCheckpoint, Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Name: "gone", WriteBytes: 1 << 20, Deleted: true}}})
	if err != nil {
		t.Fatal(err)
	}
	want, err := bv.LiveSHA256()
	if err != nil {
		t.Fatal(err)
	}
	pm := []string{"--path-map", bv.PathMap[0].String(), "--path-map", `E:\=` + dst}
	to := filepath.Join(dst, "VMs")

	out := mustHV(t, append([]string{"relocate", bv.Dir, "--to", to, "--merge", "--back", "--dry-run", "--json"}, pm...)...)
	var dr struct {
		Schema int  `json:"schema"`
		DryRun bool `json:"dry_run"`
		Plan   struct {
			Files   []struct{ Source string } `json:"files"`
			Merges  []struct{ Child string }  `json:"merges"`
			Volumes []struct {
				Mount string
				Phase string
				OK    bool
			} `json:"volumes"`
		} `json:"plan"`
	}
	if err := json.Unmarshal([]byte(out), &dr); err != nil || !dr.DryRun || dr.Schema != jsonSchema {
		t.Fatalf("dry run JSON: %v\n%s", err, out)
	}
	if len(dr.Plan.Files) != 3 || len(dr.Plan.Merges) != 1 || len(dr.Plan.Volumes) != 2 || dr.Plan.Volumes[0].Mount != dst || !dr.Plan.Volumes[1].OK {
		t.Errorf("plan: %+v", dr.Plan)
	}
	if _, err := os.Stat(to); !os.IsNotExist(err) {
		t.Fatal("--dry-run created the target")
	}

	code, out, errs := hv(t, append([]string{"relocate", bv.Dir, "--to", filepath.Join(small, "VMs"), "--yes"}, pm...)...)
	if code != exitFindings || !strings.Contains(errs, "0x80070070") || !strings.Contains(errs, "needs") || !strings.Contains(errs, small) {
		t.Fatalf("too small: exit %d\n%s%s", code, out, errs)
	}
	if ents, _ := os.ReadDir(small); len(ents) != 0 {
		t.Errorf("refused relocation wrote %v", ents)
	}

	out = mustHV(t, append([]string{"relocate", bv.Dir, "--to", to, "--merge", "--back", "--yes"}, pm...)...)
	for _, w := range []string{"relocate: copying", "relocate: merging", "relocate: removing the source", "is back in " + bv.Dir} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	got, err := storetest.ChainSHA256(filepath.Join(bv.Dir, "Virtual Hard Disks", "web.vhdx"), nil)
	if err != nil || got != want {
		t.Fatalf("after relocate --merge --back the merged base reads %s (%v), want %s", got, err, want)
	}
	if code, out, errs := hv(t, append(append([]string{"check"}, pm...), filepath.Join(bv.Dir, "Virtual Hard Disks", "web.vhdx"))...); code != 0 {
		t.Errorf("check: exit %d %s%s", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(to, "web")); !os.IsNotExist(err) {
		t.Error("the copy on the target is still there")
	}
	// --resume with nothing to resume says so.
	if out := mustHV(t, "relocate", filepath.Join(src, "VMs", "gone"), "--to", to, "--resume"); !strings.Contains(out, "nothing to resume") {
		t.Errorf("resume with nothing: %s", out)
	}
}

// An interrupted relocation is finished by the same command with --resume
// (what the runbooks print).
func TestRelocateCLIResume(t *testing.T) {
	src := storetest.MountTmpfs(t, "128m")
	dst := storetest.MountTmpfs(t, "256m")
	bv, err := storetest.BuildVM(filepath.Join(src, "VMs"), storetest.VMSpec{Name: "web", Size: 32 << 20,
		BaseWriteBytes: 4 << 20, LiveWriteBytes: 4 << 20, DiskMergePending: true,
		CurrentAfter: storetest.LatestCheckpoint, Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Name: "gone", WriteBytes: 1 << 20, Deleted: true}}})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := bv.LiveSHA256()
	to := filepath.Join(dst, "VMs")
	pm := bv.PathMap
	o := &relocate.Options{To: to, Merge: true, Back: true, PathMap: pm, Hook: func(pt string) {
		if pt == "start remove-source" {
			panic("interrupted")
		}
	}}
	p, err := relocate.PlanRelocation(bv.Dir, o)
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { recover() }()
		relocate.Run(p, o, nil)
		t.Fatal("the hook did not interrupt the relocation")
	}()
	args := []string{"relocate", bv.Dir, "--to", to, "--merge", "--back", "--yes", "--path-map", pm[0].String()}
	// Without --resume the unfinished relocation is in the way.
	if code, _, errs := hv(t, args...); code == 0 || !strings.Contains(errs, "--resume") {
		t.Errorf("second relocation without --resume: exit %d %s", code, errs)
	}
	// The source's disks are guarded: merging one is refused with the way
	// to finish the relocation.
	leaf := bv.Leaf
	code, out, errs := hv(t, "merge", "--yes", "--path-map", pm[0].String(), leaf)
	if code == 0 || !strings.Contains(errs, "relocate --resume") {
		t.Fatalf("merge of a disk under relocation: exit %d\n%s%s", code, out, errs)
	}
	guards, _ := filepath.Glob(filepath.Join(filepath.Dir(leaf), ".hvsnap-relocate-*.journal"))
	if len(guards) != 1 || !strings.Contains(errs, guards[0]) {
		t.Fatalf("guards %v; merge said %s", guards, errs)
	}
	// Either journal finishes it: here the guard the refusal named.
	out = mustHV(t, "relocate", "--resume", guards[0])
	if !strings.Contains(out, "finishing the interrupted relocation") || !strings.Contains(out, "is back in") {
		t.Errorf("resume output:\n%s", out)
	}
	if g, _ := filepath.Glob(filepath.Join(filepath.Dir(leaf), ".hvsnap-relocate-*.journal")); len(g) != 0 {
		t.Errorf("guards left after the relocation: %v", g)
	}
	got, err := storetest.ChainSHA256(filepath.Join(bv.Dir, "Virtual Hard Disks", "web.vhdx"), nil)
	if err != nil || got != want {
		t.Fatalf("after resume the VM reads %s (%v), want %s", got, err, want)
	}
}
