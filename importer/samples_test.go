package importer_test

import (
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvsnap/hvsnap/export"
	"github.com/hvsnap/hvsnap/importer"
	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// samplesDir is the folder of real Windows-made files ($HVSNAP_SAMPLES,
// else ../../shared/testdata/windows); the test skips without it. The
// samples are read in place or copied into temporary folders, never into
// the repository.
func samplesDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("HVSNAP_SAMPLES")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "testdata", "windows")
	}
	if _, err := os.Stat(filepath.Join(dir, "dynamic.vhdx.gz")); err != nil {
		t.Skipf("real Hyper-V samples not found in %s (set HVSNAP_SAMPLES)", dir)
	}
	return dir
}

func gunzipTo(t *testing.T, src, dst string) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(dst), 0o755)
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	out.Close()
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSampleChains: checkpoint disks made by hvsnap on the real Windows
// dynamic VHD and VHDX travel through an archive and read the same.
func TestSampleChains(t *testing.T) {
	dir := samplesDir(t)
	for _, s := range []struct {
		gz, ext string
		f       vhd.Format
	}{{"dynamic.vhdx.gz", "vhdx", vhd.FormatVHDX}, {"dynamic.vhd.gz", "vhd", vhd.FormatVHD}} {
		t.Run(s.ext, func(t *testing.T) {
			src := t.TempDir()
			base := filepath.Join(src, "Virtual Hard Disks", "win."+s.ext)
			gunzipTo(t, filepath.Join(dir, s.gz), base)
			child := filepath.Join(src, "Virtual Hard Disks", "win_1.a"+s.ext)
			im, err := vhd.Create(child, vhd.CreateSpec{Format: s.f, Type: vhd.TypeDifferencing, Parent: base}, nil)
			if err != nil {
				t.Fatal(err)
			}
			im.Close()
			c, err := vhd.OpenChain(child, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.WriteAt([]byte(strings.Repeat("checkpoint ", 4000)), 1<<20)
			c.Close()
			want, err := storetest.ChainSHA256(child, nil)
			if err != nil {
				t.Fatal(err)
			}
			er := mustExport(t, child, export.Options{To: filepath.Join(t.TempDir(), "w.tar.lz4")})
			ir := mustImport(t, er.Package, importer.Options{To: t.TempDir()})
			leaf := filepath.Join(ir.Path, "Virtual Hard Disks", "win_1.a"+s.ext)
			got, err := storetest.ChainSHA256(leaf, nil)
			if err != nil || got != want {
				t.Fatalf("imported chain reads %s (%v), want %s", got, err, want)
			}
			// The real base is carried byte for byte.
			b1, _ := os.ReadFile(base)
			b2, _ := os.ReadFile(filepath.Join(ir.Path, "Virtual Hard Disks", "win."+s.ext))
			if sha(b1) != sha(b2) {
				t.Error("the Windows base disk changed")
			}
		})
	}
}

// TestSampleVMs: the real 2012 R2 XML configuration and the real VMCX, each
// with the real Windows VHDX as its disk.
func TestSampleVMs(t *testing.T) {
	dir := samplesDir(t)
	t.Run("xml", func(t *testing.T) {
		src := t.TempDir()
		vmDir := filepath.Join(src, "Default Generation 1")
		copyFile(t, filepath.Join(dir, "B90AC31B-C6F8-479F-9B91-07B894A6A3F6.xml"), filepath.Join(vmDir, "Virtual Machines", "B90AC31B-C6F8-479F-9B91-07B894A6A3F6.xml"))
		disk := filepath.Join(vmDir, "Virtual Hard Disks", "Default Generation 1.vhdx")
		gunzipTo(t, filepath.Join(dir, "dynamic.vhdx.gz"), disk)
		want, _ := storetest.ChainSHA256(disk, nil)
		er := mustExport(t, vmDir, export.Options{To: t.TempDir()})
		if er.Manifest.VM == nil || er.Manifest.VM.ID != "B90AC31B-C6F8-479F-9B91-07B894A6A3F6" {
			t.Fatalf("manifest vm %+v", er.Manifest.VM)
		}
		ir := mustImport(t, er.Package, importer.Options{To: t.TempDir(), NewID: true})
		c, err := vm.ParseConfig(ir.Config, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.ID != ir.VMID || len(c.Disks) != 1 || !c.Disks[0].Exists || !strings.HasPrefix(c.Disks[0].LocalPath, ir.Path) {
			t.Fatalf("imported config %s %+v", c.ID, c.Disks)
		}
		got, _ := storetest.ChainSHA256(c.Disks[0].LocalPath, nil)
		if got != want {
			t.Error("disk content differs")
		}
		// Everything but the rewritten values is as Windows wrote it.
		orig, _ := os.ReadFile(filepath.Join(dir, "B90AC31B-C6F8-479F-9B91-07B894A6A3F6.xml"))
		now, _ := os.ReadFile(ir.Config)
		if orig[0] != now[0] || orig[1] != now[1] || len(now) < len(orig)-200 {
			t.Errorf("encoding or size changed: %d → %d bytes", len(orig), len(now))
		}
	})
	t.Run("vmcx", func(t *testing.T) {
		src := t.TempDir()
		vmDir := filepath.Join(src, "Other Location")
		cfg := filepath.Join(vmDir, "Virtual Machines", "282874FC-59D6-4F30-BC04-5FDD909C82E0.vmcx")
		copyFile(t, filepath.Join(dir, "test.vmcx"), cfg)
		gunzipTo(t, filepath.Join(dir, "dynamic.vhdx.gz"), filepath.Join(vmDir, "Virtual Hard Disks", "Other Location.vhdx"))
		er := mustExport(t, vmDir, export.Options{To: filepath.Join(t.TempDir(), "o.tar.lz4")})
		ir := mustImport(t, er.Package, importer.Options{To: t.TempDir()})
		a, _ := os.ReadFile(cfg)
		b, err := os.ReadFile(ir.Config)
		if err != nil || sha(a) != sha(b) {
			t.Fatalf("VMCX was changed or not imported (%v)", err)
		}
		if !strings.Contains(strings.Join(ir.Hints, "\n"), "Compare-VM") || len(ir.Rewritten) != 0 {
			t.Errorf("hints %q rewritten %v", ir.Hints, ir.Rewritten)
		}
	})
}
