package importer_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvsnap/hvsnap/export"
	"github.com/hvsnap/hvsnap/importer"
	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

func TestFlatten(t *testing.T) {
	for _, f := range []vhd.Format{vhd.FormatVHDX, vhd.FormatVHD} {
		t.Run(string(f), func(t *testing.T) {
			src := t.TempDir()
			bv := build(t, src, treeVM("flat", f))
			out := t.TempDir()
			er := mustExport(t, bv.Dir, export.Options{To: filepath.Join(out, "flat.tar.lz4"), Flatten: true, PathMap: bv.PathMap})
			var disks, cps int
			for _, fi := range er.Manifest.Files {
				if fi.Disk != nil {
					disks++
					if fi.Disk.Parent != "" || fi.Disk.Type == "differencing" {
						t.Errorf("flattened disk %s has a parent", fi.Path)
					}
				}
				if fi.Role == "checkpoint-config" {
					cps++
				}
			}
			if disks != 1 || cps != 0 || !er.Manifest.VM.Flattened {
				t.Fatalf("flattened package: %d disks, %d checkpoints", disks, cps)
			}
			ir := mustImport(t, er.Package, importer.Options{To: t.TempDir()})
			checkImported(t, bv, ir, true)
			im, err := vhd.Open(ir.Disks[0], &vhd.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if im.Parent() != nil || im.Info().Type != vhd.TypeDynamic || im.Info().Format != f {
				t.Errorf("flattened disk %+v", im.Info())
			}
			im.Close()
		})
	}
}

func TestCheckpointExport(t *testing.T) {
	src := t.TempDir()
	bv := build(t, src, treeVM("cpx", vhd.FormatVHDX))
	out := t.TempDir()
	if _, err := export.Export(bv.Dir, export.Options{To: out, Checkpoint: "no such"}, nil); err == nil || !strings.Contains(err.Error(), "Branch A") {
		t.Fatalf("unknown checkpoint: %v", err)
	}
	er := mustExport(t, bv.Dir, export.Options{To: out, Checkpoint: "Branch A", PathMap: bv.PathMap})
	ir := mustImport(t, er.Package, importer.Options{To: t.TempDir()})
	cfg, err := vm.ParseConfig(ir.Config, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := storetest.ChainSHA256(cfg.Disks[0].LocalPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := bv.ExpectedSHA256(bv.CheckpointDisks[1])
	if got != want || cfg.Name != "Branch A" {
		t.Fatalf("checkpoint export reads %s (%s), want %s", got, cfg.Name, want)
	}
}

// TestSingleDiskAndNewID: a disk chain alone, and --new-id on a VM.
func TestSingleDiskAndNewID(t *testing.T) {
	src := t.TempDir()
	bv := build(t, src, treeVM("nid", vhd.FormatVHD))
	out := t.TempDir()
	er := mustExport(t, bv.Leaf, export.Options{To: filepath.Join(out, "d.tar.lz4")})
	if er.Manifest.Kind != "disk" || len(er.Manifest.Files) != len(bv.Chain) {
		t.Fatalf("disk package: %s, %d files, chain %d", er.Manifest.Kind, len(er.Manifest.Files), len(bv.Chain))
	}
	ir := mustImport(t, er.Package, importer.Options{To: t.TempDir()})
	leaf := filepath.Join(ir.Path, "Virtual Hard Disks", filepath.Base(bv.Leaf))
	got, err := storetest.ChainSHA256(leaf, nil)
	want, _ := bv.LiveSHA256()
	if err != nil || got != want {
		t.Fatalf("disk import reads %s (%v), want %s", got, err, want)
	}

	er = mustExport(t, bv.Dir, export.Options{To: out, PathMap: bv.PathMap})
	ir = mustImport(t, er.Package, importer.Options{To: t.TempDir(), NewID: true})
	if ir.VMID == ir.OldVMID || ir.OldVMID != bv.Spec.ID {
		t.Fatalf("new id %s old %s", ir.VMID, ir.OldVMID)
	}
	if filepath.Base(ir.Config) != ir.VMID+".xml" {
		t.Errorf("config %s", ir.Config)
	}
	cfg, err := vm.ParseConfig(ir.Config, nil)
	if err != nil || cfg.ID != ir.VMID || cfg.VMID != ir.VMID {
		t.Fatalf("config ids %v %v: %v", cfg.ID, cfg.VMID, err)
	}
	if len(cfg.StateFiles) == 0 {
		t.Errorf("saved state not found under the new ID")
	}
	checkImported(t, bv, ir, false)
}

// TestStandardTools: the archive unpacks with lz4 and GNU tar into the
// folder form, which imports.
func TestStandardTools(t *testing.T) {
	if !haveTool("lz4") || !haveTool("tar") {
		t.Skip("lz4 or tar not installed (apt-get install lz4)")
	}
	src := t.TempDir()
	bv := build(t, src, treeVM("tools", vhd.FormatVHDX))
	out := t.TempDir()
	arch := filepath.Join(out, "tools.tar.lz4")
	er := mustExport(t, bv.Dir, export.Options{To: arch, PathMap: bv.PathMap})
	un := t.TempDir()
	cmd := exec.Command("sh", "-c", fmt.Sprintf("lz4 -dc %q | tar -x -C %q", arch, un))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("lz4 -dc | tar -x: %v\n%s", err, b)
	}
	for _, f := range er.Manifest.Files {
		b, err := os.ReadFile(filepath.Join(un, "tools", filepath.FromSlash(f.Path)))
		if err != nil {
			t.Fatal(err)
		}
		if sha(b) != f.SHA256 {
			t.Errorf("%s unpacked by tar differs", f.Path)
		}
	}
	ir := mustImport(t, filepath.Join(un, "tools"), importer.Options{To: t.TempDir()})
	checkImported(t, bv, ir, false)
}

// TestStream: export to a writer, import from a reader (the --to - | import -
// pipe).
func TestStream(t *testing.T) {
	src := t.TempDir()
	bv := build(t, src, treeVM("pipe", vhd.FormatVHDX))
	var buf bytes.Buffer
	mustExport(t, bv.Dir, export.Options{To: "-", Stdout: &buf, PathMap: bv.PathMap})
	ir := mustImport(t, "-", importer.Options{To: t.TempDir(), Stdin: &buf})
	checkImported(t, bv, ir, false)
}

// TestLibvhdiResolvesImported: libvhdi (vhdimount) reads the relinked
// chain as the source reads.
func TestLibvhdiResolvesImported(t *testing.T) {
	for _, f := range []vhd.Format{vhd.FormatVHDX, vhd.FormatVHD} {
		t.Run(string(f), func(t *testing.T) {
			src := t.TempDir()
			bv := build(t, src, treeVM("lib", f))
			er := mustExport(t, bv.Dir, export.Options{To: filepath.Join(t.TempDir(), "lib.tar.lz4"), PathMap: bv.PathMap})
			dest := t.TempDir()
			ir := mustImport(t, er.Package, importer.Options{To: dest})
			// Move the source away so only the imported parents exist.
			os.RemoveAll(src)
			leaf := filepath.Join(ir.Path, "Virtual Hard Disks", filepath.Base(bv.Leaf))
			view := vhdimount(t, leaf)
			b, err := os.ReadFile(view)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := bv.LiveSHA256()
			if sha(b) != want {
				t.Errorf("libvhdi reads %s, want %s", sha(b), want)
			}
		})
	}
}

// vhdimount mounts path with libvhdi (FUSE) and returns the file showing
// the whole chain; it skips when vhdimount or FUSE is unavailable.
func vhdimount(t *testing.T, path string) string {
	t.Helper()
	if !haveTool("vhdimount") {
		t.Skip("vhdimount not installed (apt-get install libvhdi-utils)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("FUSE not available (/dev/fuse missing)")
	}
	fm := "fusermount"
	if !haveTool(fm) {
		fm = "fusermount3"
		if !haveTool(fm) {
			t.Skip("fusermount not installed")
		}
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	out, err := exec.Command("vhdimount", path, mnt).CombinedOutput()
	if err != nil {
		if strings.Contains(strings.ToLower(string(out)), "fuse") {
			t.Skipf("FUSE mount refused here: %s", out)
		}
		t.Fatalf("vhdimount %s: %v\n%s", path, err, out)
	}
	t.Cleanup(func() {
		for i := 0; i < 20; i++ {
			if exec.Command(fm, "-u", mnt).Run() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		exec.Command(fm, "-u", "-z", mnt).Run()
	})
	best, bestN := "", 0
	for i := 0; i < 50 && best == ""; i++ {
		ents, _ := os.ReadDir(mnt)
		for _, e := range ents {
			var n int
			if _, err := fmt.Sscanf(e.Name(), "vhdi%d", &n); err == nil && n > bestN {
				best, bestN = filepath.Join(mnt, e.Name()), n
			}
		}
		if best == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if best == "" {
		t.Fatal("vhdimount: no vhdiN file")
	}
	return best
}

// TestNoSpace: a destination volume too small is refused before anything
// is written; when the free-space check is fooled, ENOSPC fails cleanly.
func TestNoSpace(t *testing.T) {
	src := t.TempDir()
	bv := build(t, src, storetest.VMSpec{Name: "big", Size: 64 * vhd.MiB, BaseWriteBytes: 24 * vhd.MiB,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1, WriteBytes: 4 * vhd.MiB}}, CurrentAfter: -1})
	arch := filepath.Join(t.TempDir(), "big.tar.lz4")
	mustExport(t, bv.Dir, export.Options{To: arch, PathMap: bv.PathMap})
	dest := storetest.MountTmpfs(t, "8m")
	_, err := importer.Import(arch, importer.Options{To: dest}, nil)
	if err == nil || !errors.Is(err, importer.ErrNoSpace) || !strings.Contains(err.Error(), "not enough space") ||
		!strings.Contains(err.Error(), "needs") || !strings.Contains(err.Error(), "free") {
		t.Fatalf("small volume: %v", err)
	}
	if got := listDir(t, dest); len(got) != 0 {
		t.Fatalf("refusal left %v", got)
	}
	// Fool the preflight: the write itself hits ENOSPC.
	_, err = importer.Import(arch, importer.Options{To: dest, FreeSpace: func(string) (int64, error) { return 1 << 40, nil }}, nil)
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("ENOSPC: %v", err)
	}
	if got := listDir(t, dest); len(got) != 0 {
		t.Fatalf("ENOSPC left %v", got)
	}
}
