package importer_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pierrec/lz4/v4"

	"github.com/hvsnap/hvsnap/export"
	"github.com/hvsnap/hvsnap/importer"
	"github.com/hvsnap/hvsnap/internal/pkgfmt"
	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/vhd"
)

// entry is one tar entry of a crafted archive.
type entry struct {
	hdr  tar.Header
	data []byte
}

// craft makes a well-formed package of files (in order) as entries, for
// a test to spoil before writing it with writeArchive.
func craft(t *testing.T, root string, files [][2]string) []entry {
	t.Helper()
	l := pkgfmt.Listing{Schema: pkgfmt.Schema, Root: root}
	m := &pkgfmt.Manifest{Schema: pkgfmt.Schema, Tool: "test", Kind: "disk", Root: root}
	for _, f := range files {
		l.Files = append(l.Files, pkgfmt.ListingFile{Path: f[0], Size: int64(len(f[1]))})
		l.Total += int64(len(f[1]))
		m.Files = append(m.Files, pkgfmt.FileInfo{Path: f[0], Role: pkgfmt.RoleState, Size: int64(len(f[1])), SHA256: sha([]byte(f[1]))})
	}
	lb, _ := json.Marshal(l)
	m.ListingSHA256 = pkgfmt.SumHex(lb)
	mb, err := pkgfmt.SealManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	reg := func(name string, b []byte) entry {
		return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Size: int64(len(b)), Mode: 0o644, ModTime: time.Unix(1700000000, 0)}, data: b}
	}
	es := []entry{reg(root+"/"+pkgfmt.ListingName, lb)}
	for _, f := range files {
		es = append(es, reg(root+"/"+f[0], []byte(f[1])))
	}
	return append(es, reg(root+"/"+pkgfmt.ManifestName, mb))
}

func writeArchive(t *testing.T, path string, es []entry) {
	t.Helper()
	var buf bytes.Buffer
	zw := lz4.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range es {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if len(e.data) > 0 {
			if _, err := tw.Write(e.data); err != nil && !errors.Is(err, tar.ErrWriteTooLong) {
				t.Fatal(err)
			}
		}
	}
	tw.Close()
	zw.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// listDir returns the names under dir (recursively, relative).
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func TestHostilePackages(t *testing.T) {
	files := [][2]string{{"Virtual Machines/a.txt", "alpha data"}, {"Virtual Hard Disks/b.bin", strings.Repeat("b", 3000)}}
	cases := []struct {
		name  string
		spoil func(es []entry) []entry
		want  string
		trunc bool
	}{
		{"absolute path", func(es []entry) []entry { es[1].hdr.Name = "/tmp/hvsnap-evil/a.txt"; return es }, "absolute path", false},
		{"dot-dot", func(es []entry) []entry { es[1].hdr.Name = "pkg/../../hvsnap-evil"; return es }, "leaves the package", false},
		{"symlink", func(es []entry) []entry {
			es[1] = entry{hdr: tar.Header{Name: "pkg/Virtual Machines/a.txt", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}}
			return es
		}, "symlink", false},
		{"hard link", func(es []entry) []entry {
			es[1] = entry{hdr: tar.Header{Name: "pkg/Virtual Machines/a.txt", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}}
			return es
		}, "hard link", false},
		{"device", func(es []entry) []entry {
			es[1] = entry{hdr: tar.Header{Name: "pkg/Virtual Machines/a.txt", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}
			return es
		}, "device", false},
		{"duplicate entry", func(es []entry) []entry { es[2] = es[1]; return es }, "duplicate entry", false},
		{"duplicate in listing", func(es []entry) []entry {
			var l pkgfmt.Listing
			json.Unmarshal(es[0].data, &l)
			l.Files[1].Path = "virtual machines/A.TXT"
			es[0].data, _ = json.Marshal(l)
			es[0].hdr.Size = int64(len(es[0].data))
			return es
		}, "duplicate name", false},
		{"dot-dot in listing", func(es []entry) []entry {
			var l pkgfmt.Listing
			json.Unmarshal(es[0].data, &l)
			l.Files[1].Path = "../hvsnap-evil"
			es[0].data, _ = json.Marshal(l)
			es[0].hdr.Size = int64(len(es[0].data))
			return es
		}, `".." is not allowed`, false},
		{"size differs from listing", func(es []entry) []entry {
			es[2].data = es[2].data[:100]
			es[2].hdr.Size = 100
			return es
		}, "the listing says 3000", false},
		{"decompression bomb", func(es []entry) []entry {
			es[2].data = make([]byte, 64<<20)
			es[2].hdr.Size = 64 << 20
			return es
		}, "decompression bomb", false},
		{"hash mismatch", func(es []entry) []entry { es[1].data = []byte("alpha dat4"); return es }, "SHA-256 mismatch", false},
		{"entry after manifest", func(es []entry) []entry { return append(es, es[1]) }, "follows the manifest", false},
		{"not a package", func(es []entry) []entry { return es[1:] }, "not an hvsnap package", false},
		{"truncated", func(es []entry) []entry { return es[:2] }, "ends before", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			dest := filepath.Join(dir, "dest")
			os.Mkdir(dest, 0o755)
			arch := filepath.Join(dir, "x.tar.lz4")
			writeArchive(t, arch, c.spoil(craft(t, "pkg", files)))
			_, err := importer.Import(arch, importer.Options{To: dest}, nil)
			if err == nil {
				t.Fatal("hostile package imported")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if c.trunc {
				if !errors.Is(err, importer.ErrTruncated) {
					t.Errorf("not ErrTruncated: %v", err)
				}
			} else if !errors.Is(err, importer.ErrBadPackage) {
				t.Errorf("not ErrBadPackage: %v", err)
			}
			got := listDir(t, dest)
			if c.trunc {
				// Kept for --resume, and only the staging folder.
				for _, g := range got {
					if !strings.HasPrefix(g, ".hvsnap-import-pkg") {
						t.Errorf("left outside staging: %s", g)
					}
				}
			} else if len(got) != 0 {
				t.Errorf("left in the destination: %v", got)
			}
			for _, p := range []string{filepath.Join(dir, "hvsnap-evil"), "/tmp/hvsnap-evil"} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("wrote %s", p)
				}
			}
			// --verify-only refuses it the same way.
			if _, err := importer.Import(arch, importer.Options{VerifyOnly: true}, nil); err == nil {
				t.Error("--verify-only accepted it")
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		dir := t.TempDir()
		arch := filepath.Join(dir, "x.tar.lz4")
		writeArchive(t, arch, craft(t, "pkg", files))
		res, err := importer.Import(arch, importer.Options{To: dir}, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(res.Path, "Virtual Machines", "a.txt"))
		if string(b) != "alpha data" {
			t.Fatalf("content %q", b)
		}
	})
}

// TestHostileFolder: folder packages with a symlink or a file that is not
// what the manifest says.
func TestHostileFolder(t *testing.T) {
	src := t.TempDir()
	bv := build(t, src, storetest.VMSpec{Name: "f1", Size: 16 * vhd.MiB})
	out := t.TempDir()
	er := mustExport(t, bv.Dir, export.Options{To: out, PathMap: bv.PathMap})
	target := filepath.Join(er.Package, er.Manifest.Files[0].Path)
	orig, _ := os.ReadFile(target)
	os.Remove(target)
	os.WriteFile(filepath.Join(out, "secret"), orig, 0o644)
	os.Symlink(filepath.Join(out, "secret"), target)
	dest := t.TempDir()
	_, err := importer.Import(er.Package, importer.Options{To: dest}, nil)
	if err == nil || !strings.Contains(err.Error(), "symlink") || !errors.Is(err, importer.ErrBadPackage) {
		t.Fatalf("symlinked file: %v", err)
	}
	if got := listDir(t, dest); len(got) != 0 {
		t.Errorf("left: %v", got)
	}
}

// TestCorruptOneByte flips one byte in every file of a folder package, and
// at spread positions of an archive: every import must refuse, and leave
// nothing.
func TestCorruptOneByte(t *testing.T) {
	src := t.TempDir()
	bv := build(t, src, storetest.VMSpec{Name: "c1", Size: 32 * vhd.MiB, BaseWriteBytes: vhd.MiB,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1, WriteBytes: 256 * vhd.KiB}}, CurrentAfter: -1, LiveWriteBytes: 128 * vhd.KiB,
		SavedStateBytes: 2 * vhd.MiB})
	out := t.TempDir()
	er := mustExport(t, bv.Dir, export.Options{To: out, PathMap: bv.PathMap})
	files := []string{pkgfmt.ListingName, pkgfmt.ManifestName}
	for _, f := range er.Manifest.Files {
		files = append(files, f.Path)
	}
	for _, f := range files {
		p := filepath.Join(er.Package, filepath.FromSlash(f))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, pos := range []int{0, len(b) / 2, len(b) - 1} {
			c := append([]byte(nil), b...)
			c[pos] ^= 0x01
			os.WriteFile(p, c, 0o644)
			dest := t.TempDir()
			_, err := importer.Import(er.Package, importer.Options{To: dest}, nil)
			if err == nil || !errors.Is(err, importer.ErrBadPackage) {
				t.Errorf("%s byte %d flipped: %v", f, pos, err)
			}
			if got := listDir(t, dest); len(got) != 0 {
				t.Errorf("%s byte %d flipped: left %v", f, pos, got)
			}
		}
		os.WriteFile(p, b, 0o644)
	}
	// The package is whole again.
	mustImport(t, er.Package, importer.Options{VerifyOnly: true})

	arch := filepath.Join(out, "c1.tar.lz4")
	mustExport(t, bv.Dir, export.Options{To: arch, PathMap: bv.PathMap})
	b, _ := os.ReadFile(arch)
	for i := 0; i < 24; i++ {
		pos := i * (len(b) - 1) / 23
		c := append([]byte(nil), b...)
		c[pos] ^= 0x01
		bad := filepath.Join(out, "bad.tar.lz4")
		os.WriteFile(bad, c, 0o644)
		dest := t.TempDir()
		_, err := importer.Import(bad, importer.Options{To: dest}, nil)
		if err == nil {
			t.Errorf("archive byte %d of %d flipped: imported", pos, len(b))
			continue
		}
		for _, g := range listDir(t, dest) {
			if !strings.HasPrefix(g, ".hvsnap-import-") {
				t.Errorf("archive byte %d flipped: left %s", pos, g)
			}
		}
	}
}
