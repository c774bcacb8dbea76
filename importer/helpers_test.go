package importer_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvsnap/hvsnap/export"
	"github.com/hvsnap/hvsnap/importer"
	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// treeVM is a VM with a checkpoint tree: two roots of a branch, a deleted
// (unmerged) checkpoint, saved state, and a live leaf.
func treeVM(name string, f vhd.Format) storetest.VMSpec {
	return storetest.VMSpec{
		Name: name, Format: f, Size: 64 * vhd.MiB, BaseWriteBytes: 3 * vhd.MiB,
		Checkpoints: []storetest.CheckpointSpec{
			{Name: "Before update", Parent: -1, WriteBytes: 2 * vhd.MiB},
			{Name: "Branch A", Parent: 0, WriteBytes: 1 * vhd.MiB},
			{Name: "Branch B", Parent: 0, WriteBytes: 1 * vhd.MiB},
			{Name: "After B", Parent: 2, WriteBytes: 512 * vhd.KiB},
		},
		CurrentAfter:    3,
		LiveWriteBytes:  768 * vhd.KiB,
		SavedStateBytes: 4 * vhd.MiB,
	}
}

func build(t *testing.T, root string, spec storetest.VMSpec) *storetest.BuiltVM {
	t.Helper()
	bv, err := storetest.BuildVM(root, spec)
	if err != nil {
		t.Fatal(err)
	}
	return bv
}

func mustExport(t *testing.T, src string, o export.Options) *export.Result {
	t.Helper()
	res, err := export.Export(src, o, nil)
	if err != nil {
		t.Fatalf("export %s: %v", src, err)
	}
	return res
}

func mustImport(t *testing.T, src string, o importer.Options) *importer.Result {
	t.Helper()
	res, err := importer.Import(src, o, nil)
	if err != nil {
		t.Fatalf("import %s: %v", src, err)
	}
	return res
}

// snapshotTree returns every file under dir (relative path → content hash
// through the bytes), to compare sources before and after an export.
func fileSet(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			out[rel] = sha(b) + " " + info.ModTime().String()
		}
		return nil
	})
	return out
}

// checkImported verifies an imported VM: every disk a config names opens
// through its chain with relative locators and linkage intact, reads
// exactly what the source read (guest content), and checks clean; the
// configurations name the imported disks.
func checkImported(t *testing.T, bv *storetest.BuiltVM, res *importer.Result, flattened bool) {
	t.Helper()
	if res.Config == "" {
		t.Fatal("no VM configuration in the result")
	}
	cfg, err := vm.ParseConfig(res.Config, &vm.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Disks) != 1 || !cfg.Disks[0].Exists {
		t.Fatalf("imported config drives %+v", cfg.Disks)
	}
	leaf := cfg.Disks[0].LocalPath
	if !strings.HasPrefix(leaf, res.Path+string(filepath.Separator)) {
		t.Fatalf("config names %s, outside %s", leaf, res.Path)
	}
	// The config names the disk by its new path.
	if got := strings.ReplaceAll(cfg.Disks[0].WindowsPath, `\`, "/"); got != leaf {
		t.Errorf("config pathname %q, want %q", cfg.Disks[0].WindowsPath, leaf)
	}
	c, err := vhd.OpenChain(leaf, &vhd.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("imported chain: %v", err)
	}
	for _, l := range c.Links {
		if !l.LinkageOK || l.Via != "relative_path" || !l.TimestampOK {
			t.Errorf("%s → %s: linkage %v via %s timestamp %v", l.Child, l.Parent, l.LinkageOK, l.Via, l.TimestampOK)
		}
		if !strings.HasPrefix(l.Parent, res.Path) {
			t.Errorf("%s resolves its parent outside the import: %s", l.Child, l.Parent)
		}
	}
	layers := len(c.Layers)
	c.Close()
	if flattened && layers != 1 {
		t.Errorf("flattened import has %d layers", layers)
	}
	if !flattened && layers != len(bv.Chain) {
		t.Errorf("imported chain has %d layers, source %d", layers, len(bv.Chain))
	}
	got, err := storetest.ChainSHA256(leaf, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := bv.LiveSHA256()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("imported live disk reads %s, source %s", got, want)
	}
	f, err := vhd.Check(leaf, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range f {
		t.Errorf("check %s: %v", leaf, x)
	}
	// Checkpoint configurations name disks that read as they did.
	if !flattened {
		for i, cp := range bv.CheckpointConfigs {
			if cp == "" {
				continue
			}
			p := filepath.Join(res.Path, "Snapshots", filepath.Base(cp))
			cc, err := vm.ParseConfig(p, &vm.ParseOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(cc.Disks) != 1 || !cc.Disks[0].Exists || !strings.HasPrefix(cc.Disks[0].LocalPath, res.Path) {
				t.Fatalf("checkpoint %d drives %+v", i, cc.Disks)
			}
			got, err := storetest.ChainSHA256(cc.Disks[0].LocalPath, nil)
			if err != nil {
				t.Fatal(err)
			}
			want, err := bv.ExpectedSHA256(bv.CheckpointDisks[i])
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("checkpoint %d disk reads %s, want %s", i, got, want)
			}
		}
	}
}

func haveTool(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}
