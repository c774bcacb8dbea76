package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/vhd"
)

func TestCLIExportImport(t *testing.T) {
	src := t.TempDir()
	bv, err := storetest.BuildVM(src, storetest.VMSpec{Name: "cli", Size: 16 * vhd.MiB,
		Checkpoints: []storetest.CheckpointSpec{{Name: "one", Parent: -1, WriteBytes: 256 * vhd.KiB}}, CurrentAfter: -1})
	if err != nil {
		t.Fatal(err)
	}
	pm := storetest.WindowsRoot + "=" + src
	arch := filepath.Join(t.TempDir(), "cli.tar.lz4")
	out := mustHV(t, "export", "--path-map", pm, "--to", arch, bv.Dir)
	if !strings.Contains(out, "exported") || !strings.Contains(out, "compressed") {
		t.Fatalf("export said %q", out)
	}
	if out := mustHV(t, "import", "--verify-only", arch); !strings.Contains(out, "every SHA-256 matches") {
		t.Fatalf("verify said %q", out)
	}
	dest := t.TempDir()
	out = mustHV(t, "import", "--json", "--to", dest, arch)
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil || res["schema"].(float64) != 1 || res["path"] != filepath.Join(dest, "cli") {
		t.Fatalf("import --json: %v %s", err, out)
	}
	leaf := filepath.Join(dest, "cli", "Virtual Hard Disks", filepath.Base(bv.Leaf))
	if out := mustHV(t, "check", leaf); !strings.Contains(out, "healthy") {
		t.Fatalf("check: %s", out)
	}
	// A second import into the same place is refused; usage errors exit 2.
	if code, _, errs := hv(t, "import", "--to", dest, arch); code != 1 || !strings.Contains(errs, "already exists") {
		t.Errorf("second import: %d %s", code, errs)
	}
	if code, _, _ := hv(t, "export", "--resume", "--to", arch+"2.tar.lz4", bv.Dir); code != 2 {
		t.Errorf("--resume with an archive: exit %d", code)
	}
	for _, cmd := range []string{"export", "import"} {
		if out := mustHV(t, cmd, "--help"); !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help has no examples", cmd)
		}
	}
}
