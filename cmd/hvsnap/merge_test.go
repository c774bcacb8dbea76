package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvsnap/hvsnap/export"
	"github.com/hvsnap/hvsnap/internal/lock"
	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/merge"
	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// mergeStore: a VM whose checkpoint was deleted (merge pending), a VM with a
// live checkpoint (nothing may be merged), and an orphaned disk.
func mergeStore(t *testing.T) (root, pm string, pending, live *storetest.BuiltVM, orphan string) {
	t.Helper()
	root = filepath.Join(t.TempDir(), "VMs")
	var err error
	pending, err = storetest.BuildVM(root, storetest.VMSpec{Name: "web", LiveWriteBytes: 3 << 20, DiskMergePending: true,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1, WriteBytes: 1 << 20, Deleted: true, Age: 50 * 24 * time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	live, err = storetest.BuildVM(root, storetest.VMSpec{Name: "db", LiveWriteBytes: 1 << 20,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1, WriteBytes: 1 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	orphan, err = storetest.OrphanDisk(live.DiskDir, live.Base)
	if err != nil {
		t.Fatal(err)
	}
	return root, storetest.WindowsRoot + "=" + root, pending, live, orphan
}

func TestCLIMerge(t *testing.T) {
	root, pm, web, db, _ := mergeStore(t)
	want, _ := web.LiveSHA256()

	// Dry run: the plan as JSON, nothing changed.
	out := mustHV(t, "merge", "--dry-run", "--json", "--path-map", pm, web.Leaf)
	var dr struct {
		DryRun bool `json:"dry_run"`
		Plans  []struct {
			Schema  int    `json:"schema"`
			Into    string `json:"into"`
			Steps   []struct{ Child, Parent string }
			Volumes []struct {
				Mount string `json:"mount"`
				Peak  int64  `json:"peak"`
				OK    bool   `json:"ok"`
			} `json:"volumes"`
			Configs []struct {
				Config  string `json:"config"`
				NewPath string `json:"new_path"`
			} `json:"configs"`
		} `json:"plans"`
	}
	if err := json.Unmarshal([]byte(out), &dr); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !dr.DryRun || len(dr.Plans) != 1 || dr.Plans[0].Schema != 1 || dr.Plans[0].Into != web.Base ||
		len(dr.Plans[0].Steps) != 1 || len(dr.Plans[0].Volumes) == 0 || !dr.Plans[0].Volumes[0].OK ||
		len(dr.Plans[0].Configs) != 1 || dr.Plans[0].Configs[0].Config != web.ConfigPath {
		t.Fatalf("dry run plan: %s", out)
	}
	if _, err := os.Stat(web.Leaf); err != nil {
		t.Fatal("dry run removed the leaf")
	}

	// A live checkpoint uses db's base: refused (exit 1), nothing changed.
	code, _, errs := hv(t, "merge", "--yes", "--path-map", pm, db.Leaf)
	if code != exitError || !strings.Contains(errs, "checkpoint") {
		t.Fatalf("live checkpoint: exit %d %s", code, errs)
	}
	// In use: refused.
	l, err := lock.File(web.Base)
	if err != nil {
		t.Fatal(err)
	}
	code, _, errs = hv(t, "merge", "--yes", "--path-map", pm, web.Leaf)
	l.Release()
	if code != exitError || !strings.Contains(errs, "in use") {
		t.Fatalf("in use: exit %d %s", code, errs)
	}

	// The merge.
	out = mustHV(t, "merge", "--yes", "--path-map", pm, web.Leaf)
	// No merge is left pending on web's chain: its disk_merge_pending
	// flag goes too (as Hyper-V does).
	if !strings.Contains(out, "removed "+web.Leaf) || !strings.Contains(out, "updated "+web.ConfigPath) || !strings.Contains(out, "disk_merge_pending set to False in "+web.ConfigPath) {
		t.Fatalf("merge output:\n%s", out)
	}
	if got, err := storetest.ChainSHA256(web.Base, web.PathMap); err != nil || got != want {
		t.Fatalf("merged content: %v", err)
	}
	cfg, err := vm.ParseConfig(web.ConfigPath, &vm.ParseOptions{PathMap: web.PathMap})
	if err != nil || cfg.Disks[0].LocalPath != web.Base {
		t.Fatalf("config after merge: %v %+v", err, cfg)
	}
	mustHV(t, "check", web.Base)
	if out := mustHV(t, "merge", "--resume", root); !strings.Contains(out, "no interrupted merge") {
		t.Fatalf("resume with nothing to do: %s", out)
	}
	if cfg.DiskMergePending {
		t.Fatal("disk_merge_pending is still set")
	}
	// The flag is cleared: cleanup finds nothing to do.
	if code, out, _ := hv(t, "cleanup", "--path-map", pm, root); code != exitNothing {
		t.Fatalf("cleanup after the merge: exit %d\n%s", code, out)
	}
	// Usage errors.
	if code, _, _ := hv(t, "merge"); code != exitUsage {
		t.Fatalf("merge without DISK: exit %d", code)
	}
	if code, _, _ := hv(t, "merge", "--all", root, web.Base); code != exitUsage {
		t.Fatalf("--all with DISK: exit %d", code)
	}
}

func TestCLICleanup(t *testing.T) {
	root, pm, web, db, orphan := mergeStore(t)
	want, _ := web.LiveSHA256()
	dbWant, _ := db.LiveSHA256()
	dbLeafBefore, _ := os.ReadFile(db.Leaf)

	// Dry run: one merge planned (web), the live checkpoint of db untouched.
	code, out, errs := hv(t, "cleanup", "--dry-run", "--json", "--path-map", pm, root)
	if code != exitOK {
		t.Fatalf("dry run: exit %d %s %s", code, out, errs)
	}
	var res struct {
		DryRun  bool `json:"dry_run"`
		Done    int  `json:"done"`
		Actions []struct {
			Kind, Child, Parent, Status string
		} `json:"actions"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if !res.DryRun || res.Done != 1 || len(res.Actions) != 1 || res.Actions[0].Child != web.Leaf || res.Actions[0].Status != "planned" {
		t.Fatalf("dry run: %s", out)
	}
	// Too young for --older-than: nothing to do (exit 4).
	if code, _, _ := hv(t, "cleanup", "--older-than", "2400h", "--path-map", pm, root); code != exitNothing {
		t.Fatalf("older-than: exit %d", code)
	}
	// Another cleanup running: exit 1.
	lp := filepath.Join(root, ".hvsnap-cleanup.lock")
	os.WriteFile(lp, nil, 0o644)
	l, err := lock.File(lp)
	if err != nil {
		t.Fatal(err)
	}
	overlapLog := filepath.Join(t.TempDir(), "overlap.jsonl")
	code, _, errs = hv(t, "cleanup", "--log", overlapLog, "--path-map", pm, root)
	code2, out2, _ := hv(t, "cleanup", "--json", "--path-map", pm, root)
	l.Release()
	if code != exitError || !strings.Contains(errs, "another hvsnap cleanup") {
		t.Fatalf("overlap: exit %d %s", code, errs)
	}
	// ... and a scheduled job's log and JSON say so too.
	if lg, _ := os.ReadFile(overlapLog); !strings.Contains(string(lg), `"kind":"error"`) || !strings.Contains(string(lg), "another hvsnap cleanup") {
		t.Fatalf("overlap log: %s", lg)
	}
	if code2 != exitError || !strings.Contains(out2, `"error": "`) || !strings.Contains(out2, "another hvsnap cleanup") {
		t.Fatalf("overlap --json: exit %d %s", code2, out2)
	}
	// The real run, with a log.
	logf := filepath.Join(t.TempDir(), "cleanup.jsonl")
	out = mustHV(t, "cleanup", "--older-than", "720h", "--log", logf, "--path-map", pm, root)
	if !strings.Contains(out, "done") || !strings.Contains(out, web.Leaf) {
		t.Fatalf("cleanup output:\n%s", out)
	}
	if got, err := storetest.ChainSHA256(web.Base, web.PathMap); err != nil || got != want {
		t.Fatalf("web content after cleanup: %v", err)
	}
	lg, _ := os.ReadFile(logf)
	if !strings.Contains(string(lg), `"parent_size_before"`) || !strings.Contains(string(lg), `"status":"done"`) {
		t.Fatalf("log: %s", lg)
	}
	// The merge the flag announced is done: the flag is cleared (as Hyper-V
	// does), and said.
	if cfg, err := vm.ParseConfig(web.ConfigPath, &vm.ParseOptions{PathMap: web.PathMap}); err != nil || cfg.DiskMergePending {
		t.Fatalf("web's disk_merge_pending after cleanup: %v %+v", err, cfg)
	}
	if !strings.Contains(out, "disk_merge_pending set to False in "+web.ConfigPath) {
		t.Fatalf("cleanup output:\n%s", out)
	}
	// Nothing left to merge; the orphan only goes with --orphans.
	if code, _, _ := hv(t, "cleanup", "--path-map", pm, root); code != exitNothing {
		t.Fatalf("second run: exit %d", code)
	}
	if _, err := os.Stat(orphan); err != nil {
		t.Fatal("orphan removed without --orphans")
	}
	out = mustHV(t, "cleanup", "--orphans", "--path-map", pm, root)
	if !strings.Contains(out, "remove orphan "+orphan) {
		t.Fatalf("orphans: %s", out)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatal("orphan still there")
	}
	// db (live checkpoint) never touched.
	if got, _ := storetest.ChainSHA256(db.Leaf, db.PathMap); got != dbWant {
		t.Fatal("db content changed")
	}
	if b, _ := os.ReadFile(db.Leaf); string(b) != string(dbLeafBefore) {
		t.Fatal("db's disk file changed")
	}
}

// On a real small volume with too little free space, merge exits 3 with
// the 0x80070070 message and changes nothing.
func TestCLIMergeNoSpace(t *testing.T) {
	vol := storetest.MountTmpfs(t, "64m")
	web, err := storetest.BuildVM(vol, storetest.VMSpec{Name: "web", Size: 48 << 20, BlockSize: 1 << 20, LiveWriteBytes: 20 << 20,
		DiskMergePending: true, Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Deleted: true}}})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := web.LiveSHA256()
	// Leave 4 MiB free.
	f, err := os.Create(filepath.Join(vol, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for {
		fi, _ := f.Stat()
		if fi.Size() > 64<<20 {
			break
		}
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	os.Truncate(filepath.Join(vol, "filler"), mustSize(t, filepath.Join(vol, "filler"))-(4<<20))
	code, out, errs := hv(t, "merge", "--yes", "--margin", "0", "--path-map", storetest.WindowsRoot+"="+vol, web.Leaf)
	if code != exitFindings || !strings.Contains(errs, "0x80070070") || !strings.Contains(errs, vol) {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	// The VM's folder (its configuration names the disk) is what relocate
	// moves, with the same path mapping.
	if strings.Contains(errs, "volumes with room") && (!strings.Contains(errs, "hvsnap relocate "+web.Dir+" --to ") || !strings.Contains(errs, "--path-map")) {
		t.Fatalf("relocation advice: %s", errs)
	}
	if got, err := storetest.ChainSHA256(web.Leaf, web.PathMap); err != nil || got != want {
		t.Fatal("refused merge changed the chain")
	}
	code, out, _ = hv(t, "merge", "--dry-run", "--path-map", storetest.WindowsRoot+"="+vol, web.Leaf)
	if code != exitFindings || !strings.Contains(out, "NOT ENOUGH SPACE") {
		t.Fatalf("dry run: exit %d\n%s", code, out)
	}
}

func mustSize(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// --all: every drive chain of the VM into its base (two deleted
// checkpoints: a 3-deep chain), the config then names the base.
func TestCLIMergeAll(t *testing.T) {
	root := filepath.Join(t.TempDir(), "VMs")
	web, err := storetest.BuildVM(root, storetest.VMSpec{Name: "web", LiveWriteBytes: 2 << 20, DiskMergePending: true,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1, WriteBytes: 1 << 20, Deleted: true}, {Parent: 0, WriteBytes: 1 << 20, Deleted: true}}, CurrentAfter: storetest.LatestCheckpoint})
	if err != nil {
		t.Fatal(err)
	}
	if len(web.Chain) != 3 {
		t.Fatalf("chain %v", web.Chain)
	}
	want, _ := web.LiveSHA256()
	pm := storetest.WindowsRoot + "=" + root
	out := mustHV(t, "merge", "--all", web.Dir, "--yes", "--json", "--path-map", pm)
	var res struct {
		Results []struct {
			Merged  []string `json:"merged"`
			Removed []string `json:"removed"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Results) != 1 || len(res.Results[0].Removed) != 2 {
		t.Fatalf("%v: %s", err, out)
	}
	if got, err := storetest.ChainSHA256(web.Base, web.PathMap); err != nil || got != want {
		t.Fatalf("base content: %v", err)
	}
	cfg, err := vm.ParseConfig(web.ConfigPath, &vm.ParseOptions{PathMap: web.PathMap})
	if err != nil || cfg.Disks[0].LocalPath != web.Base {
		t.Fatalf("config: %v %+v", err, cfg.Disks)
	}
	// Every chain merged: the flag the deleted checkpoints left is cleared.
	if cfg.DiskMergePending || !strings.Contains(out, `"merge_pending_cleared": [`) || !strings.Contains(out, web.ConfigPath) {
		t.Fatalf("disk_merge_pending %v after --all: %s", cfg.DiskMergePending, out)
	}
	// Nothing left: exit 0 with "nothing to merge".
	if out := mustHV(t, "merge", "--all", web.Dir, "--yes", "--path-map", pm); !strings.Contains(out, "nothing to merge") {
		t.Fatalf("second --all: %s", out)
	}
}

type failAfter struct {
	vhd.File
	n *int
}

func (f failAfter) WriteAt(p []byte, off int64) (int, error) {
	if *f.n--; *f.n < 0 {
		return 0, errors.New("injected failure")
	}
	return f.File.WriteAt(p, off)
}

// A command that writes a disk finishes an interrupted merge of its chain
// first.
func TestCLIWriteFinishesInterruptedMerge(t *testing.T) {
	dir := t.TempDir()
	base, c, gc := filepath.Join(dir, "base.vhdx"), filepath.Join(dir, "c.avhdx"), filepath.Join(dir, "gc.avhdx")
	mustHV(t, "create", "--size", "32M", base)
	mustHV(t, "write", "--offset", "1M", "--fill", "0x11", "--length", "3M", base)
	mustHV(t, "create", "--parent", base, c)
	mustHV(t, "write", "--offset", "2M", "--fill", "0x22", "--length", "6M", c)
	mustHV(t, "create", "--parent", c, gc)
	left := 3
	o := &merge.Options{Volumes: space.StaticVolumes{{Mount: "/", Free: 1 << 40}}, Wrap: func(f vhd.File) vhd.File { return failAfter{f, &left} }}
	p, err := merge.PlanMerge(c, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := merge.Run(p, o, nil); err == nil {
		t.Fatal("the injected failure did not stop the merge")
	}
	if js, _ := merge.FindJournals(dir); len(js) != 1 {
		t.Fatalf("journals: %v", js)
	}
	code, _, errs := hv(t, "write", "--offset", "0", "--fill", "0x33", "--length", "4096", gc)
	if code != 0 || !strings.Contains(errs, "finishing the interrupted merge") {
		t.Fatalf("write: exit %d %s", code, errs)
	}
	if _, err := os.Stat(c); !os.IsNotExist(err) {
		t.Fatal("the interrupted merge was not finished")
	}
	mustHV(t, "check", gc)
}

// A VMCX configuration that may lack its last changes (an outstanding
// replay-log entry) in the store: merge refuses, naming the file and
// --accept-stale-config; with the file named, merge and cleanup go on and
// say what to check on the host; cleanup never removes an orphan for it.
func TestCLIStaleVMCX(t *testing.T) {
	root, pm, web, _, _ := mergeStore(t)
	cfg, err := storetest.UnreplayedVM(filepath.Join(root, "fuzz"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := web.LiveSHA256()
	code, _, errs := hv(t, "merge", "--yes", "--root", root, "--path-map", pm, web.Leaf)
	if code != exitError || !strings.Contains(errs, cfg) || !strings.Contains(errs, "replay-log") || !strings.Contains(errs, "--accept-stale-config") {
		t.Fatalf("stale VMCX: exit %d %s", code, errs)
	}
	if _, err := os.Stat(web.Leaf); err != nil {
		t.Fatal("the refused merge removed the leaf")
	}
	out := mustHV(t, "merge", "--yes", "--json", "--accept-stale-config", cfg, "--root", root, "--path-map", pm, web.Leaf)
	var res struct {
		Results []struct {
			Plan struct {
				Notes []string `json:"notes"`
			} `json:"plan"`
			Merged []string `json:"merged"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(res.Results) != 1 || len(res.Results[0].Merged) != 1 || !strings.Contains(strings.Join(res.Results[0].Plan.Notes, "\n"), cfg+" may lack its last changes") {
		t.Fatalf("accepted merge: %s", out)
	}
	if got, err := storetest.ChainSHA256(web.Base, web.PathMap); err != nil || got != want {
		t.Fatalf("merged content: %v", err)
	}

	// cleanup, on a fresh store: the merge is skipped with the reason, then
	// done once the file is accepted; the orphan stays either way.
	root, pm, web, _, orphan := mergeStore(t)
	cfg, err = storetest.UnreplayedVM(filepath.Join(root, "fuzz"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ = web.LiveSHA256()
	code, out, errs = hv(t, "cleanup", "--orphans", "--path-map", pm, root)
	if code != exitNothing || strings.Count(out, "skipped") != 2 || !strings.Contains(out, "--accept-stale-config '"+cfg+"'") {
		t.Fatalf("cleanup with a stale VMCX: exit %d\n%s%s", code, out, errs)
	}
	out = mustHV(t, "cleanup", "--orphans", "--accept-stale-config", cfg, "--path-map", pm, root)
	if !strings.Contains(out, "done        merge "+web.Leaf) || !strings.Contains(out, "note: "+cfg) || !strings.Contains(out, "skipped     remove orphan "+orphan) {
		t.Fatalf("cleanup, file accepted:\n%s", out)
	}
	if _, err := os.Stat(orphan); err != nil {
		t.Fatal("cleanup removed the orphan of a store with a stale VMCX")
	}
	if got, err := storetest.ChainSHA256(web.Base, web.PathMap); err != nil || got != want {
		t.Fatalf("cleanup's merged content: %v", err)
	}
}

// merge --keep: the merged file stays as a valid child (check clean, reads
// the same), the configuration names the parent.
func TestCLIMergeKeep(t *testing.T) {
	_, pm, web, _, _ := mergeStore(t)
	want, _ := web.LiveSHA256()
	out := mustHV(t, "merge", "--yes", "--keep", "--path-map", pm, web.Leaf)
	if strings.Contains(out, "removed ") || !strings.Contains(out, "updated "+web.ConfigPath) {
		t.Fatalf("merge --keep output:\n%s", out)
	}
	for _, p := range []string{web.Base, web.Leaf} {
		if got, err := storetest.ChainSHA256(p, web.PathMap); err != nil || got != want {
			t.Fatalf("%s after merge --keep: %v (content changed: %v)", p, err, got != want)
		}
		mustHV(t, "check", "--path-map", pm, p)
	}
}

// cleanup finishes a merge an earlier run left unfinished (its journal)
// before anything else, instead of skipping its disks; the dry run says it
// would.
func TestCLICleanupFinishesInterruptedMerge(t *testing.T) {
	root, pm, web, _, _ := mergeStore(t)
	want, _ := web.LiveSHA256()
	interruptMerge(t, pm, web.Leaf)
	js, _ := merge.FindJournals(filepath.Dir(web.Base))
	if len(js) != 1 {
		t.Fatalf("journals: %v", js)
	}
	// check and space name it, with the command that finishes it.
	code, out, _ := hv(t, "check", "--strict", "--path-map", pm, web.Leaf)
	if code != exitFindings || !strings.Contains(out, "unfinished-operation") || !strings.Contains(out, "hvsnap merge --resume "+js[0]) {
		t.Fatalf("check: exit %d\n%s", code, out)
	}
	if out := mustHV(t, "space", "--path-map", pm, root); !strings.Contains(out, "unfinished-operation") || !strings.Contains(out, "hvsnap merge --resume "+js[0]) {
		t.Fatalf("space:\n%s", out)
	}
	if out := mustHV(t, "diagnose", "--path-map", pm, root); !strings.Contains(out, "unfinished hvsnap operations") || !strings.Contains(out, "hvsnap merge --resume "+js[0]) {
		t.Fatalf("diagnose:\n%s", out)
	}
	out = mustHV(t, "cleanup", "--dry-run", "--path-map", pm, root)
	if !strings.Contains(out, "planned     finish the interrupted merge of "+web.Leaf) || strings.Contains(out, "skipped") {
		t.Fatalf("dry run:\n%s", out)
	}
	out = mustHV(t, "cleanup", "--path-map", pm, root)
	if !strings.Contains(out, "done        finish the interrupted merge of "+web.Leaf) || !strings.Contains(out, js[0]) {
		t.Fatalf("cleanup:\n%s", out)
	}
	if _, err := os.Stat(js[0]); !os.IsNotExist(err) {
		t.Errorf("journal left: %v", err)
	}
	if _, err := os.Stat(web.Leaf); !os.IsNotExist(err) {
		t.Errorf("merged leaf left: %v", err)
	}
	if got, err := storetest.ChainSHA256(web.Base, web.PathMap); err != nil || got != want {
		t.Fatalf("content after cleanup finished the merge: %v", err)
	}
	mustHV(t, "check", "--path-map", pm, web.Base)
}

// A disk in use (a running VM) is skipped, in the dry run too, not a
// failure: a nightly job must not fail every night for a running VM.
func TestCLICleanupSkipsDiskInUse(t *testing.T) {
	root, pm, web, _, _ := mergeStore(t)
	holdLock(t, web.Leaf)
	for _, dry := range []bool{true, false} {
		args := []string{"cleanup", "--path-map", pm, root}
		if dry {
			args = append([]string{"cleanup", "--dry-run"}, args[1:]...)
		}
		code, out, errs := hv(t, args...)
		if code != exitNothing || !strings.Contains(out, "skipped     merge "+web.Leaf) || !strings.Contains(out, "in use") {
			t.Fatalf("dry run %v: exit %d\n%s%s", dry, code, out, errs)
		}
	}
	if _, err := os.Stat(web.Leaf); err != nil {
		t.Fatal("the disk in use was merged")
	}
}

// --orphans removes an orphaned chain leaf first, then its parent, and the
// dry run lists both.
func TestCLICleanupOrphanChain(t *testing.T) {
	root, pm, _, db, orphan := mergeStore(t)
	top, err := storetest.OrphanDisk(db.DiskDir, orphan)
	if err != nil {
		t.Fatal(err)
	}
	out := mustHV(t, "cleanup", "--dry-run", "--orphans", "--path-map", pm, root)
	if i, j := strings.Index(out, "planned     remove orphan "+top), strings.Index(out, "planned     remove orphan "+orphan); i < 0 || j < i {
		t.Fatalf("dry run:\n%s", out)
	}
	mustHV(t, "cleanup", "--orphans", "--path-map", pm, root)
	for _, p := range []string{top, orphan} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("orphan %s left: %v", p, err)
		}
	}
	if _, err := os.Stat(db.Base); err != nil {
		t.Fatal("cleanup removed db's base")
	}
}

// merge DISK after an interrupted merge of DISK: the interrupted one is
// finished and that is success (exit 0), whether it stopped mid-copy or
// after DISK was already removed; a dry run only names it.
func TestCLIMergeAfterInterruptedMerge(t *testing.T) {
	for _, when := range []string{"copy", "finish"} {
		t.Run(when, func(t *testing.T) {
			_, pm, web, _, _ := mergeStore(t)
			want, _ := web.LiveSHA256()
			pmap, _ := vhd.ParsePathMapping(pm)
			left := 3
			o := &merge.Options{PathMap: vhd.PathMap{pmap}, Volumes: space.StaticVolumes{{Mount: "/", Free: 1 << 40}}}
			if when == "copy" {
				o.Wrap = func(f vhd.File) vhd.File { return failAfter{f, &left} }
			} else {
				o.Hook = func(pt string) {
					if pt == "finish" {
						panic("stop")
					}
				}
			}
			p, err := merge.PlanMerge(web.Leaf, o)
			if err != nil {
				t.Fatal(err)
			}
			func() {
				defer func() { recover() }()
				if _, err := merge.Run(p, o, nil); err == nil {
					t.Fatal("the injected stop did not stop the merge")
				}
			}()
			js, _ := merge.FindJournals(filepath.Dir(web.Base))
			if len(js) != 1 {
				t.Fatalf("journals: %v", js)
			}
			if _, err := os.Stat(web.Leaf); (when == "finish") != os.IsNotExist(err) {
				t.Fatalf("leaf after the stop at %s: %v", when, err)
			}
			if when == "copy" {
				// The dry run says the real run finishes it first, and
				// changes nothing; with --json it lists the journal.
				code, out, errs := hv(t, "merge", "--dry-run", "--path-map", pm, web.Leaf)
				if code != exitOK || !strings.Contains(out, js[0]+" would be finished first") {
					t.Fatalf("dry run: exit %d %s%s", code, out, errs)
				}
				out = mustHV(t, "merge", "--dry-run", "--json", "--path-map", pm, web.Leaf)
				var doc struct {
					Pending []string `json:"pending_journals"`
				}
				if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Pending) != 1 || doc.Pending[0] != js[0] {
					t.Fatalf("dry run --json: %v %s", err, out)
				}
				if _, err := os.Stat(js[0]); err != nil {
					t.Fatalf("the dry run finished the merge: %v", err)
				}
			}
			code, out, errs := hv(t, "merge", "--yes", "--path-map", pm, web.Leaf)
			if code != exitOK || !strings.Contains(errs, "finished the interrupted merge recorded in "+js[0]) || !strings.Contains(out, "nothing left to do") {
				t.Fatalf("merge: exit %d\n%s%s", code, out, errs)
			}
			if _, err := os.Stat(js[0]); !os.IsNotExist(err) {
				t.Errorf("journal left: %v", err)
			}
			if got, err := storetest.ChainSHA256(web.Base, web.PathMap); err != nil || got != want {
				t.Fatalf("content: %v", err)
			}
		})
	}
}

// export of a VM whose merge was interrupted: the package layer refuses
// the half-merged chain (except flattened), the CLI finishes the merge
// first and then exports.
func TestCLIExportAfterInterruptedMerge(t *testing.T) {
	_, pm, web, _, _ := mergeStore(t)
	want, _ := web.LiveSHA256()
	interruptMerge(t, pm, web.Leaf)
	out := t.TempDir()
	_, err := export.Export(web.Dir, export.Options{To: filepath.Join(out, "a"), PathMap: web.PathMap}, nil)
	var be *export.BusyError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "merge --resume") {
		t.Fatalf("package layer: %v", err)
	}
	if _, err := export.Export(web.Dir, export.Options{To: filepath.Join(out, "flat"), PathMap: web.PathMap, Flatten: true}, nil); err != nil {
		t.Fatalf("flattened export of the half-merged chain: %v", err)
	}
	code, so, errs := hv(t, "export", "--to", filepath.Join(out, "b"), "--path-map", pm, web.Dir)
	if code != exitOK || !strings.Contains(errs, "finished the interrupted merge") {
		t.Fatalf("export: exit %d\n%s%s", code, so, errs)
	}
	if _, err := os.Stat(web.Leaf); !os.IsNotExist(err) {
		t.Errorf("the interrupted merge was not finished: %v", err)
	}
	if got, err := storetest.ChainSHA256(web.Base, web.PathMap); err != nil || got != want {
		t.Fatalf("content: %v", err)
	}
	mustHV(t, "import", "--verify-only", filepath.Join(out, "b"))
}

// An interrupted merge whose disks another process holds: merge and export
// say that the merge recorded in the journal is still running (or a VM holds
// its disks) and change nothing.
func TestCLIInterruptedMergeHeldElsewhere(t *testing.T) {
	_, pm, web, _, _ := mergeStore(t)
	want, _ := web.LiveSHA256()
	interruptMerge(t, pm, web.Leaf)
	holdLock(t, web.Base)
	for _, args := range [][]string{
		{"merge", "--yes", "--path-map", pm, web.Leaf},
		{"export", "--to", filepath.Join(t.TempDir(), "b"), "--path-map", pm, web.Dir},
	} {
		code, out, errs := hv(t, args...)
		if code != exitError || !strings.Contains(errs, "is not finished and its disks are in use") || !strings.Contains(errs, ".journal is not finished") {
			t.Fatalf("%s: exit %d\n%s%s", args[0], code, out, errs)
		}
	}
	if _, err := os.Stat(web.Leaf); err != nil {
		t.Fatalf("the child is gone: %v", err)
	}
	if got, err := storetest.ChainSHA256(web.Leaf, web.PathMap); err != nil || got != want {
		t.Fatalf("content changed: %v", err)
	}
}

// What a merge would be refused for is said the same way with --json (a
// "refused" field, the same exit code), in a dry run too, and a dry run
// probes the locks (a disk in use: exit 1).
func TestCLIMergeRefusalsJSON(t *testing.T) {
	dir := t.TempDir()
	base, c := filepath.Join(dir, "base.vhdx"), filepath.Join(dir, "c.avhdx")
	mustHV(t, "create", "--size", "32M", base)
	mustHV(t, "create", "--parent", base, c)
	mustHV(t, "write", "--offset", "2M", "--fill", "0x22", "--length", "6M", c)
	for _, dry := range []bool{true, false} {
		args := []string{"merge", "--yes", "--json", "--margin", "100T"}
		if dry {
			args = append(args, "--dry-run")
		}
		args = append(args, c)
		code, out, errs := hv(t, args...)
		var doc struct {
			Refused string `json:"refused"`
			Plans   []any  `json:"plans"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil || code != exitFindings || !strings.Contains(doc.Refused, "0x80070070") || len(doc.Plans) != 1 {
			t.Fatalf("dry run %v: exit %d, %v\n%s%s", dry, code, err, out, errs)
		}
	}
	l, err := lock.File(base)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := hv(t, "merge", "--dry-run", c)
	// The real run refused for a disk in use: a JSON document too.
	code2, out2, _ := hv(t, "merge", "--yes", "--json", c)
	l.Release()
	var doc struct {
		Refused string `json:"refused"`
	}
	if err := json.Unmarshal([]byte(out2), &doc); err != nil || code2 != exitError || !strings.Contains(doc.Refused, "in use") {
		t.Fatalf("--json, disk in use: exit %d, %v %s", code2, err, out2)
	}
	if code != exitError || !strings.Contains(out, "would be refused now") || !strings.Contains(errs, "in use") {
		t.Fatalf("dry run, disk in use: exit %d\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(c); err != nil {
		t.Fatal("a refused merge removed the child")
	}
}

// interruptMerge starts merging disk and stops it part-way through the copy
// (a write fails), leaving its journal, as a kill or a full disk would.
func interruptMerge(t *testing.T, pm, disk string) {
	t.Helper()
	pmap, _ := vhd.ParsePathMapping(pm)
	left := 3
	o := &merge.Options{PathMap: vhd.PathMap{pmap}, Volumes: space.StaticVolumes{{Mount: "/", Free: 1 << 40}}, Wrap: func(f vhd.File) vhd.File { return failAfter{f, &left} }}
	p, err := merge.PlanMerge(disk, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := merge.Run(p, o, nil); err == nil {
		t.Fatal("the injected failure did not stop the merge")
	}
}

// An interrupted merge whose disks are in use (the VM runs, or the merge
// is still running elsewhere) is skipped once, in the dry run too; cleanup
// ends (it used to try again forever).
func TestCLICleanupInterruptedMergeInUse(t *testing.T) {
	root, pm, web, _, _ := mergeStore(t)
	interruptMerge(t, pm, web.Leaf)
	holdLock(t, web.Base)
	for _, dry := range []bool{true, false} {
		args := []string{"cleanup", "--path-map", pm, root}
		if dry {
			args = []string{"cleanup", "--dry-run", "--path-map", pm, root}
		}
		type ran struct {
			code      int
			out, errs string
		}
		done := make(chan ran, 1)
		go func() {
			code, out, errs := hv(t, args...)
			done <- ran{code, out, errs}
		}()
		select {
		case r := <-done:
			if r.code != exitNothing || strings.Count(r.out, "skipped     finish the interrupted merge of "+web.Leaf) != 1 || !strings.Contains(r.out, "in use") {
				t.Fatalf("dry run %v: exit %d\n%s%s", dry, r.code, r.out, r.errs)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("dry run %v: cleanup did not end", dry)
		}
	}
}

// A store copied with an unfinished journal: the copy's journal names the
// original files, so it is refused where it was copied to (it once
// finished the merge on the original files, outside the root given).
func TestCLICopiedJournalIsNotResumed(t *testing.T) {
	root, pm, web, _, _ := mergeStore(t)
	interruptMerge(t, pm, web.Leaf)
	js, _ := merge.FindJournals(filepath.Dir(web.Base))
	if len(js) != 1 {
		t.Fatalf("journals %v", js)
	}
	cp := filepath.Join(t.TempDir(), "VMs")
	if out, err := exec.Command("cp", "-a", root, cp).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	want, _ := web.LiveSHA256()
	// cleanup of the copy: the journal is skipped with the reason, and the
	// copy's chain (as the interrupted merge left it, reading the same) is
	// merged anew.
	code, out, errs := hv(t, "cleanup", "--path-map", storetest.WindowsRoot+"="+cp, cp)
	copyBase := filepath.Join(cp, "web", "Virtual Hard Disks", filepath.Base(web.Base))
	if code != exitOK || !strings.Contains(out, "copied or moved") || !strings.Contains(out, "done        merge "+filepath.Join(cp, "web", "Virtual Hard Disks", filepath.Base(web.Leaf))) {
		t.Fatalf("cleanup of the copy: exit %d\n%s%s", code, out, errs)
	}
	if got, err := storetest.ChainSHA256(copyBase, nil); err != nil || got != want {
		t.Fatalf("the copy's merged content: %v", err)
	}
	if code, _, errs := hv(t, "merge", "--resume", filepath.Join(cp, "web", "Virtual Hard Disks")); code != exitError || !strings.Contains(errs, "copied or moved") {
		t.Fatalf("merge --resume in the copy: exit %d %s", code, errs)
	}
	if _, err := os.Stat(web.Leaf); err != nil {
		t.Fatalf("the original's leaf was merged from the copy: %v", err)
	}
	if _, err := os.Stat(js[0]); err != nil {
		t.Fatalf("the original's journal: %v", err)
	}
	// --resume of the store's root finds it in the VM's disk folder below.
	mustHV(t, "merge", "--resume", root)
	if _, err := os.Stat(web.Leaf); !os.IsNotExist(err) {
		t.Fatal("the original's merge was not finished in place")
	}
}

// abandonedBranch: a VM running on a new branch off its base; the old
// branch's leaf (its checkpoint deleted) is what --remove-leaf removes.
func abandonedBranch(t *testing.T) (bv *storetest.BuiltVM, pm, leaf string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "VMs")
	bv, err := storetest.BuildVM(root, storetest.VMSpec{Name: "web", LiveWriteBytes: 1 << 20, CurrentAfter: 0,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1}, {Parent: 0, WriteBytes: 1 << 20, Deleted: true}}})
	if err != nil {
		t.Fatal(err)
	}
	return bv, storetest.WindowsRoot + "=" + root, bv.OffBranch[0]
}

// merge --remove-leaf from the CLI: the plain merge of an abandoned
// branch's leaf is refused with the way out, the dry run says the data is
// discarded (JSON discard: true) and changes nothing, the run removes the
// leaf alone and the VM's chain reads the same.
func TestCLIMergeRemoveLeaf(t *testing.T) {
	bv, pm, leaf := abandonedBranch(t)
	want, _ := bv.LiveSHA256()
	code, out, errs := hv(t, "merge", "--yes", "--path-map", pm, leaf)
	if code != exitError || !strings.Contains(errs, "hvsnap merge --remove-leaf --path-map ") {
		t.Fatalf("plain merge: exit %d\n%s%s", code, out, errs)
	}
	for _, extra := range [][]string{{"--into", bv.Base}, {"--keep"}, {"--resume"}} {
		if code, _, errs := hv(t, append(append([]string{"merge", "--remove-leaf"}, extra...), leaf)...); code != exitUsage {
			t.Fatalf("--remove-leaf %v: exit %d %s", extra, code, errs)
		}
	}
	out = mustHV(t, "merge", "--dry-run", "--remove-leaf", "--path-map", pm, leaf)
	if !strings.Contains(out, "removal plan (--remove-leaf)") || !strings.Contains(out, "WITHOUT MERGING (its data is discarded") {
		t.Fatalf("dry run:\n%s", out)
	}
	var doc struct {
		Plans []struct {
			Steps []struct {
				Discard   bool  `json:"discard"`
				CopyBytes int64 `json:"copy_bytes"`
			} `json:"steps"`
		} `json:"plans"`
	}
	if err := json.Unmarshal([]byte(mustHV(t, "merge", "--dry-run", "--json", "--remove-leaf", "--path-map", pm, leaf)), &doc); err != nil ||
		len(doc.Plans) != 1 || len(doc.Plans[0].Steps) != 1 || !doc.Plans[0].Steps[0].Discard || doc.Plans[0].Steps[0].CopyBytes != 0 {
		t.Fatalf("dry run JSON: %v %+v", err, doc)
	}
	if _, err := os.Stat(leaf); err != nil {
		t.Fatalf("the dry run removed the leaf: %v", err)
	}
	if code, _, _ := hv(t, "merge", "--all", bv.Dir, "--remove-leaf"); code != exitUsage {
		t.Fatalf("--all --remove-leaf: exit %d", code)
	}
	out = mustHV(t, "merge", "--yes", "--remove-leaf", "--path-map", pm, leaf)
	if !strings.Contains(out, "removed "+leaf) || strings.Contains(out, "\nmerged ") {
		t.Fatalf("run:\n%s", out)
	}
	if _, err := os.Stat(leaf); !os.IsNotExist(err) {
		t.Fatalf("the leaf is still there: %v", err)
	}
	if got, err := bv.LiveSHA256(); err != nil || got != want {
		t.Fatalf("the VM's chain changed: %v", err)
	}
	mustHV(t, "check", bv.Leaf)
}

// An interrupted --remove-leaf is finished by a later merge or cleanup,
// which say that the disk was removed without merging (not "merged").
func TestCLIInterruptedRemoveLeaf(t *testing.T) {
	for _, by := range []string{"merge", "cleanup"} {
		bv, pm, leaf := abandonedBranch(t)
		root := bv.Root
		o := &merge.Options{PathMap: bv.PathMap, RemoveLeaf: true, Volumes: space.StaticVolumes{{Mount: "/", Free: 1 << 40}}}
		p, err := merge.PlanMerge(leaf, o)
		if err != nil {
			t.Fatal(err)
		}
		type stop struct{}
		o.Hook = func(pt string) {
			if pt == "0/remove:start" {
				panic(stop{})
			}
		}
		func() {
			defer func() { recover() }()
			merge.Run(p, o, nil)
		}()
		if _, err := os.Stat(leaf); err != nil {
			t.Fatal(err)
		}
		if by == "merge" {
			code, out, errs := hv(t, "merge", "--yes", "--path-map", pm, leaf)
			if code != exitOK || !strings.Contains(errs, "finished the interrupted removal without merge (--remove-leaf)") || !strings.Contains(out, "removed WITHOUT MERGING") || strings.Contains(out, "merged by") {
				t.Fatalf("merge: exit %d\n%s%s", code, out, errs)
			}
		} else {
			out := mustHV(t, "cleanup", "--dry-run", "--path-map", pm, root)
			if !strings.Contains(out, "finish the interrupted removal WITHOUT MERGING (merge --remove-leaf) of "+leaf) {
				t.Fatalf("cleanup --dry-run:\n%s", out)
			}
			mustHV(t, "cleanup", "--path-map", pm, root)
		}
		if _, err := os.Stat(leaf); !os.IsNotExist(err) {
			t.Fatalf("%s: the leaf is still there: %v", by, err)
		}
	}
}

// holdLock locks path for the rest of the test, as a running VM or another
// job would.
func holdLock(t *testing.T, path string) {
	t.Helper()
	l, err := lock.File(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Release() })
}
