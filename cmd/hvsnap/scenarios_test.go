package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/scenarios"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// buildLab runs `hvsnap lab SCENARIO --root DIR` (root: tmpfs volumes) and
// tears it down when the test ends.
func buildLab(t *testing.T, scenario string) *scenarios.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the lab mounts tmpfs volumes: needs root")
	}
	root := filepath.Join(t.TempDir(), "lab")
	code, out, errs := hv(t, "lab", scenario, "--root", root)
	if code != 0 {
		t.Fatalf("hvsnap lab %s: exit %d\n%s%s", scenario, code, out, errs)
	}
	t.Cleanup(func() {
		if err := scenarios.TeardownLab(root); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	l, err := scenarios.ReadLab(root)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// diagnosed returns the scenarios diagnose finds on the lab (sorted).
func diagnosed(t *testing.T, l *scenarios.Lab) []string {
	t.Helper()
	out := mustHV(t, "diagnose", "--json", l.Root)
	var dg struct {
		Schema     int `json:"schema"`
		Detections []struct {
			Scenario string `json:"scenario"`
			Plan     []struct {
				Command string `json:"command"`
			} `json:"plan"`
		} `json:"detections"`
	}
	if err := json.Unmarshal([]byte(out), &dg); err != nil || dg.Schema != 1 {
		t.Fatalf("diagnose --json: %v\n%s", err, out)
	}
	got := []string{}
	for _, x := range dg.Detections {
		got = append(got, x.Scenario)
	}
	sort.Strings(got)
	return got
}

// vmHashes reads every VM's first drive through its chain as the store is
// now (configs re-read, so merged, relocated or re-pointed disks count).
func vmHashes(t *testing.T, l *scenarios.Lab) map[string]string {
	t.Helper()
	pm, err := l.PathMapParsed()
	if err != nil {
		t.Fatal(err)
	}
	st, err := vm.Scan(l.Roots, vm.ScanOptions{PathMap: pm})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, v := range st.VMs {
		if len(v.Config.Disks) == 0 || !v.Config.Disks[0].Exists {
			t.Fatalf("VM %s: drive %+v", v.Config.Name, v.Config.Disks)
		}
		h, err := storetest.ChainSHA256(v.Config.Disks[0].LocalPath, pm)
		if err != nil {
			t.Fatalf("VM %s: %v", v.Config.Name, err)
		}
		if _, dup := out[v.Config.Name]; dup {
			t.Fatalf("VM %s found twice (a copy left behind?)", v.Config.Name)
		}
		out[v.Config.Name] = h
	}
	return out
}

func labVM(l *scenarios.Lab, name string) scenarios.LabVM {
	for _, v := range l.VMs {
		if v.Name == name {
			return v
		}
	}
	return scenarios.LabVM{}
}

func relocateRegistered() bool {
	return newApp(io.Discard, io.Discard).Command("relocate") != nil
}

// TestScenarioLabs: for every scenario, lab → diagnose finds exactly that
// scenario → runbook --execute (playing the Hyper-V host for manual steps)
// → diagnose is clean → every VM's disk reads as the lab recorded.
func TestScenarioLabs(t *testing.T) {
	type hook func(t *testing.T, l *scenarios.Lab)
	cases := []struct {
		scenario string
		needs    string // command the runbook needs
		// manual: what the test does in the Hyper-V host's place each time
		// the runbook stops at a manual step.
		manual []hook
		after  func(t *testing.T, l *scenarios.Lab)
	}{
		{scenario: scenarios.MergePending},
		{scenario: scenarios.OrphanedDisks},
		{scenario: scenarios.BrokenChain, after: func(t *testing.T, l *scenarios.Lab) {
			kept, _ := filepath.Glob(filepath.Join(labVM(l, "web").Dir, "hvsnap-kept", "*.hvsnap-kept"))
			if len(kept) != 2 { // the orphaned live disk and the broken checkpoint's config
				t.Errorf("kept aside: %v", kept)
			}
		}},
		{scenario: scenarios.ExpandedParent, manual: []hook{func(t *testing.T, l *scenarios.Lab) {
			// Resize-VHD -SizeBytes 67108864 on the host.
			base := filepath.Join(labVM(l, "web").Dir, "Virtual Hard Disks", "web.vhd")
			if err := storetest.ResizeVHD(base, 64<<20); err != nil {
				t.Fatal(err)
			}
		}}},
		{scenario: scenarios.OldCheckpoints, manual: []hook{removeCheckpoints("backup before migration")},
			after: func(t *testing.T, l *scenarios.Lab) {
				// The backup the runbook exported reads as the checkpoint did.
				var disks []string
				filepath.Walk(l.BackupDir, func(p string, fi os.FileInfo, err error) error {
					if _, ok := vhd.FormatFromExt(p); ok && err == nil && !fi.IsDir() {
						disks = append(disks, p)
					}
					return nil
				})
				if len(disks) != 1 {
					t.Fatalf("backup disks: %v", disks)
				}
				h, err := storetest.ChainSHA256(disks[0], nil)
				if err != nil || h != labVM(l, "web").Checkpoints[0].SHA256 {
					t.Errorf("backup %s reads %s (%v), the checkpoint was %s", disks[0], h, err, labVM(l, "web").Checkpoints[0].SHA256)
				}
			}},
		{scenario: scenarios.DeepChain, manual: []hook{removeCheckpoints("nightly 1", "nightly 2")}},
		{scenario: scenarios.SavedState, manual: []hook{func(t *testing.T, l *scenarios.Lab) {
			// Start-VM: the VM resumes and Hyper-V removes its saved state.
			files, _ := filepath.Glob(filepath.Join(labVM(l, "web").Dir, "Virtual Machines", "*", "*.[bv][is][nv]"))
			if len(files) != 2 {
				t.Fatalf("saved state files: %v", files)
			}
			for _, f := range files {
				os.Remove(f)
			}
		}}},
		{scenario: scenarios.PausedCritical, needs: "relocate"},
		{scenario: scenarios.MergeCannotFit, needs: "relocate"},
	}
	for _, c := range cases {
		t.Run(c.scenario, func(t *testing.T) {
			l := buildLab(t, c.scenario)
			if got := diagnosed(t, l); strings.Join(got, ",") != c.scenario {
				t.Fatalf("diagnose found %v, want exactly [%s]", got, c.scenario)
			}
			want := map[string]string{}
			for _, v := range l.VMs {
				want[v.Name] = v.LiveSHA256
				if v.AfterSHA256 != "" {
					want[v.Name] = v.AfterSHA256
				}
			}
			// The plan prints without running anything.
			out := mustHV(t, "runbook", c.scenario, l.Root)
			if !strings.Contains(out, "1.") || !strings.Contains(out, "--execute --yes") {
				t.Fatalf("runbook output:\n%s", out)
			}
			if c.needs == "relocate" && !relocateRegistered() {
				t.Skip("relocate not in this build: the runbook's relocation step cannot run (this test runs once hvsnap relocate is registered)")
			}
			for i := 0; ; i++ {
				code, out, errs := hv(t, "runbook", c.scenario, "--execute", "--yes", l.Root)
				if code == 0 {
					break
				}
				if code != exitManual || i >= len(c.manual) {
					t.Fatalf("runbook --execute: exit %d\n%s%s", code, out, errs)
				}
				if !strings.Contains(errs, "runbook "+c.scenario+" --execute --yes") {
					t.Errorf("manual stop without the resume command: %s", errs)
				}
				c.manual[i](t, l)
			}
			if got := diagnosed(t, l); len(got) != 0 {
				t.Fatalf("after the runbook, diagnose still finds %v", got)
			}
			got := vmHashes(t, l)
			for name, h := range want {
				if got[name] != h {
					t.Errorf("VM %s reads %s, want %s", name, got[name], h)
				}
			}
			if out := mustHV(t, "lab", "verify", "--root", l.Root); strings.Contains(out, "DIFFERENT") {
				t.Errorf("lab verify:\n%s", out)
			}
			if c.after != nil {
				c.after(t, l)
			}
		})
	}
}

// removeCheckpoints plays Remove-VMCheckpoint: the checkpoints' configs go,
// their disks stay for the merge.
func removeCheckpoints(names ...string) func(t *testing.T, l *scenarios.Lab) {
	return func(t *testing.T, l *scenarios.Lab) {
		for _, n := range names {
			found := false
			for _, cp := range labVM(l, "web").Checkpoints {
				if cp.Name == n {
					p := filepath.Join(labVM(l, "web").Dir, "Snapshots", cp.ID+".xml")
					if err := os.Remove(p); err != nil {
						t.Fatal(err)
					}
					found = true
				}
			}
			if !found {
				t.Fatalf("no checkpoint %q", n)
			}
		}
	}
}

// The healthy lab: nothing found, runbooks have nothing to do, --fail-on
// passes.
func TestScenarioHealthyLab(t *testing.T) {
	l := buildLab(t, scenarios.Healthy)
	if got := diagnosed(t, l); len(got) != 0 {
		t.Fatalf("healthy store: diagnose found %v", got)
	}
	mustHV(t, "diagnose", "--fail-on", "warning", l.Root)
	out := mustHV(t, "runbook", scenarios.MergePending, "--execute", "--yes", l.Root)
	if !strings.Contains(out, "nothing to do") {
		t.Fatalf("runbook on a healthy store: %s", out)
	}
	got := vmHashes(t, l)
	for _, v := range l.VMs {
		if got[v.Name] != v.LiveSHA256 {
			t.Errorf("VM %s reads %s, want %s", v.Name, got[v.Name], v.LiveSHA256)
		}
	}
}

func TestScenarioCLIUsage(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"diagnose"}, "expected at least one ROOT"},
		{[]string{"diagnose", "--fail-on", "major", dir}, "--fail-on must be warning or critical"},
		{[]string{"runbook", "merge-pending"}, "expected SCENARIO and at least one ROOT"},
		{[]string{"runbook", "nonsense", dir}, "unknown scenario"},
		{[]string{"runbook", "merge-pending", "--bogus", dir}, "unknown flag"},
		{[]string{"runbook", "merge-pending", "--execute", dir}, "--execute needs --yes"},
		{[]string{"lab"}, "expected a SCENARIO"},
		{[]string{"lab", "nonsense", "--root", dir}, "unknown scenario"},
		{[]string{"lab", "merge-pending"}, "--root DIR is required"},
	} {
		code, _, errs := hv(t, c.args...)
		if code != exitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("hvsnap %s: exit %d %q (want 2 and %q)", strings.Join(c.args, " "), code, errs, c.want)
		}
	}
	out := mustHV(t, "lab", "list")
	for _, s := range scenarios.LabScenarios() {
		if !strings.Contains(out, s.ID) {
			t.Errorf("lab list lacks %s", s.ID)
		}
	}
	if code, _, errs := hv(t, "lab", "teardown", "--root", dir); code != exitError || !strings.Contains(errs, "not a lab") {
		t.Errorf("teardown of a non-lab: %d %s", code, errs)
	}
}
