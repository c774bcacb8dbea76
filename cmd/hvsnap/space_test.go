package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/space"
)

func TestSpaceUsageErrors(t *testing.T) {
	root := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"space"}, "expected at least one ROOT"},
		{[]string{"space", "--fail-on", "major", root}, "--fail-on must be warning or critical"},
		{[]string{"space", "--fail-on", "ok", root}, "--fail-on must be warning or critical"},
		{[]string{"space", "--old-checkpoint", "soon", root}, "--old-checkpoint"},
		{[]string{"space", "--old-checkpoint", "-5d", root}, "--old-checkpoint"},
		{[]string{"space", "--old-checkpoint", "0h", root}, "--old-checkpoint"},
		{[]string{"space", "--critical-free", "lots", root}, "--critical-free"},
		{[]string{"space", "--warning-free", "100M", "--critical-free", "1G", root}, "--warning-free (100.0 MiB) is below --critical-free (1.0 GiB)"},
		{[]string{"space", "--deep-chain", "0", root}, "--deep-chain must be at least 1"},
		{[]string{"space", "--path-map", "nonsense", root}, ""},
		{[]string{"space", "--html", "", root}, "--html needs a file name"},
		{[]string{"space", "--bogus", root}, "see hvsnap space --help"},
	} {
		code, out, errs := hv(t, c.args...)
		if code != exitUsage || !strings.Contains(errs, c.want) || out != "" {
			t.Errorf("hvsnap %s: exit %d, stdout %q, stderr %q (want exit 2 and %q)", strings.Join(c.args, " "), code, out, errs, c.want)
		}
	}
	out := mustHV(t, "space", "--help")
	for _, s := range []string{"ROOT...", "Examples:", "--fail-on", "warning means warning or critical", "--prom", "--html", "--old-checkpoint", "(default: 5)", `(default: "200M")`, `(default: "2G")`} {
		if !strings.Contains(out, s) {
			t.Errorf("space --help lacks %q", s)
		}
	}
}

func TestParseAge(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30d": 30 * 24 * time.Hour, "720h": 720 * time.Hour, "2w": 14 * 24 * time.Hour, "1.5d": 36 * time.Hour, " 90M ": 90 * time.Minute,
	} {
		if got, err := parseAge(in); err != nil || got != want {
			t.Errorf("parseAge(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "x", "-1d", "0", "1y", "99999999999999d"} {
		if _, err := parseAge(in); err == nil {
			t.Errorf("parseAge(%q) accepted", in)
		}
	}
}

// spaceStore builds a small store: a VM with a checkpoint branch and an
// old checkpoint, an orphaned differencing disk beside it, and a second VM
// whose name and folder hold characters HTML must escape (markup and double
// quotes are not valid in Windows file names; the renderer tests cover them).
func spaceStore(t *testing.T) (root string, pathMap string) {
	t.Helper()
	root = filepath.Join(t.TempDir(), "VMs")
	web, err := storetest.BuildVM(root, storetest.VMSpec{
		Name: "web01",
		Checkpoints: []storetest.CheckpointSpec{
			{Name: "Before update", Parent: -1, WriteBytes: 2 << 20, Age: 60 * 24 * time.Hour},
			{Name: "Patched", Parent: 0, WriteBytes: 3 << 20, Age: 40 * 24 * time.Hour},
			{Name: "Test branch", Parent: 0, WriteBytes: 1 << 20},
		},
		CurrentAfter:   1,
		LiveWriteBytes: 1 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := storetest.OrphanDisk(web.DiskDir, web.Base); err != nil {
		t.Fatal(err)
	}
	if _, err := storetest.BuildVM(root, storetest.VMSpec{Name: `Tom & Jerry's db (test)`}); err != nil {
		t.Fatal(err)
	}
	return root, storetest.WindowsRoot + "=" + root
}

// hvSpace runs hvsnap space.
func hvSpace(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return hv(t, append([]string{"space"}, args...)...)
}

func TestSpaceEndToEnd(t *testing.T) {
	root, pm := spaceStore(t)
	outDir := t.TempDir()
	htmlPath := filepath.Join(outDir, "report.html")
	promPath := filepath.Join(outDir, "hvsnap.prom")

	code, out, errs := hvSpace(t, "--json", "--html", htmlPath, "--prom", promPath, "--path-map", pm, root)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	// JSON: the whole model, versioned.
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, k := range []string{"schema", "generated_at", "host", "roots", "thresholds", "volumes", "vms", "unattached", "disks", "state_files", "findings", "warnings", "summary"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	var rep space.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Schema != space.Schema || len(rep.Volumes) == 0 || rep.Summary.VMs != 2 || rep.Summary.Disks != 6 {
		t.Fatalf("report: schema %d, %d volumes, summary %+v", rep.Schema, len(rep.Volumes), rep.Summary)
	}
	var web *space.VM
	for _, v := range rep.VMs {
		if v.Name == "web01" {
			web = v
		}
	}
	if web == nil || len(web.Checkpoints) != 3 || len(web.Chains) != 1 {
		t.Fatalf("web01: %+v", web)
	}
	// base → {Test branch's disk (off-branch), the orphan, Patched's disk →
	// live leaf}
	base := web.Chains[0]
	if len(base.Children) != 3 || !base.Live {
		t.Fatalf("chain tree: %+v", base)
	}
	live, off := 0, 0
	for _, c := range base.Children {
		if c.Live {
			live++
			if len(c.Children) != 1 || !c.Children[0].Live {
				t.Errorf("live branch: %+v", c)
			}
		} else {
			off++
		}
	}
	if live != 1 || off != 2 {
		t.Errorf("branches: %d live, %d off", live, off)
	}
	codes := map[string]bool{}
	for _, f := range rep.Findings {
		codes[f.Code] = true
	}
	for _, c := range []string{space.FindOrphan, space.FindOldCheckpoint} {
		if !codes[c] {
			t.Errorf("no %s finding: %+v", c, rep.Findings)
		}
	}

	// HTML: written, self-contained, escaped.
	page, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), "web01") || !strings.Contains(string(page), "Tom &amp; Jerry&#39;s db (test)") ||
		strings.Contains(string(page), "Tom & Jerry") || strings.Contains(string(page), "https://") {
		t.Error("HTML report content or escaping")
	}
	// Prometheus: every line a comment or a sample, and the VM's series.
	prom, err := os.ReadFile(promPath)
	if err != nil {
		t.Fatal(err)
	}
	sample := regexp.MustCompile(`^hvsnap_[a-z_]+(\{([a-z_]+="(\\.|[^"\\])*",?)*\})? -?[0-9.e+]+$`)
	for _, l := range strings.Split(strings.TrimSuffix(string(prom), "\n"), "\n") {
		if !strings.HasPrefix(l, "# HELP hvsnap_") && !strings.HasPrefix(l, "# TYPE hvsnap_") && !sample.MatchString(l) {
			t.Errorf("prom line %q", l)
		}
	}
	for _, s := range []string{`hvsnap_vm_allocated_bytes{vm="web01",`, `hvsnap_vm_checkpoint_depth{vm="web01",`, `hvsnap_findings{code="orphaned-disk",severity="warning",volume="`,
		`hvsnap_vm_merge_pending{vm="Tom & Jerry's db (test)",`, "hvsnap_space_last_run_timestamp_seconds "} {
		if !strings.Contains(string(prom), s) {
			t.Errorf("prom lacks %q", s)
		}
	}
	// Written atomically: nothing but the two files is left in the folder.
	ents, _ := os.ReadDir(outDir)
	if len(ents) != 2 {
		names := []string{}
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("output folder holds %v", names)
	}
	if fi, err := os.Stat(promPath); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("prom file mode: %v %v", fi.Mode(), err)
	}

	// Text report (stdout), and the files replaced on a second run.
	os.WriteFile(promPath, []byte("stale\n"), 0o644)
	code, out, errs = hvSpace(t, "--prom", promPath, "--path-map", pm, root)
	if code != 0 {
		t.Fatalf("text run: exit %d %s", code, errs)
	}
	for _, s := range []string{"VOLUMES (", "VM web01", "├─ ", "└─ ", "off-branch", "checkpoint:Test branch", "vm:web01", "orphaned-disk", "old-checkpoint", "VM Tom & Jerry's db (test)"} {
		if !strings.Contains(out, s) {
			t.Errorf("text report lacks %q:\n%s", s, out)
		}
	}
	if p, _ := os.ReadFile(promPath); strings.Contains(string(p), "stale") {
		t.Error("prom file not replaced")
	}

	// --fail-on: thresholds that force each verdict on every volume.
	huge := "1000000T"
	if code, _, errs := hvSpace(t, "--warning-free", huge, "--critical-free", "0", "--fail-on", "warning", "--path-map", pm, root); code != exitFindings ||
		!strings.Contains(errs, "is warning") || !strings.Contains(errs, "(--fail-on warning)") {
		t.Errorf("--fail-on warning on a warning volume: exit %d %s", code, errs)
	}
	alreadyCritical := false // e.g. a tiny TMPDIR: the live disk can outgrow it
	for _, v := range rep.Volumes {
		alreadyCritical = alreadyCritical || v.Verdict == space.VerdictCritical
	}
	if code, _, errs := hvSpace(t, "--warning-free", huge, "--critical-free", "0", "--fail-on", "critical", "--path-map", pm, root); code != 0 && !alreadyCritical {
		t.Errorf("--fail-on critical on a warning volume: exit %d %s", code, errs)
	}
	if code, _, errs := hvSpace(t, "--json", "--warning-free", huge, "--critical-free", huge, "--fail-on", "critical", "--path-map", pm, root); code != exitFindings ||
		!strings.Contains(errs, "is critical") {
		t.Errorf("--fail-on critical on a critical volume: exit %d %s", code, errs)
	}
	if code, _, _ := hvSpace(t, "--warning-free", huge, "--critical-free", huge, "--path-map", pm, root); code != 0 {
		t.Errorf("critical volume without --fail-on: exit %d", code)
	}

	// A file that cannot be written is an error (exit 1).
	if code, _, errs := hvSpace(t, "--prom", filepath.Join(outDir, "missing", "x.prom"), "--path-map", pm, root); code != exitError || !strings.Contains(errs, "--prom") {
		t.Errorf("unwritable --prom: exit %d %s", code, errs)
	}
}
