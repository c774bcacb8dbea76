package importer_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hvsnap/hvsnap/export"
	"github.com/hvsnap/hvsnap/importer"
	"github.com/hvsnap/hvsnap/vhd"
)

// Options.Move: a folder package on the destination's file system is
// verified and moved (not copied), under another folder name; a damaged
// file is refused before anything of it moves.
func TestImportMove(t *testing.T) {
	root := t.TempDir()
	bv := build(t, filepath.Join(root, "src"), treeVM("web", vhd.FormatVHDX))
	dst := filepath.Join(root, "dst")
	os.MkdirAll(dst, 0o755)
	ex := mustExport(t, bv.Dir, export.Options{To: filepath.Join(dst, "pkg"), PathMap: bv.PathMap})
	res := mustImport(t, ex.Package, importer.Options{To: dst, Move: true, Name: "web-moved"})
	if res.Path != filepath.Join(dst, "web-moved") {
		t.Fatalf("imported into %s", res.Path)
	}
	checkImported(t, bv, res, false)
	for _, f := range ex.Manifest.Files {
		if _, err := os.Stat(filepath.Join(ex.Package, filepath.FromSlash(f.Path))); !os.IsNotExist(err) {
			t.Errorf("%s was not moved out of the package (%v)", f.Path, err)
		}
	}

	// One changed byte in a disk of the package: refused, the file stays.
	ex2 := mustExport(t, bv.Dir, export.Options{To: filepath.Join(dst, "pkg2"), PathMap: bv.PathMap})
	var disk string
	for _, f := range ex2.Manifest.Files {
		if f.Disk != nil {
			disk = filepath.Join(ex2.Package, filepath.FromSlash(f.Path))
		}
	}
	fh, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	fh.ReadAt(b, 70000)
	b[0] ^= 0x5A
	fh.WriteAt(b, 70000)
	fh.Close()
	_, err = importer.Import(ex2.Package, importer.Options{To: dst, Move: true, Name: "web2"}, nil)
	if !errors.Is(err, importer.ErrBadPackage) {
		t.Fatalf("damaged package: %v", err)
	}
	if _, err := os.Stat(disk); err != nil {
		t.Errorf("the damaged file was moved: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "web2")); !os.IsNotExist(err) {
		t.Error("a damaged package was committed")
	}
	if _, err := importer.Import(ex2.Package, importer.Options{To: dst, Move: true, Name: "../x"}, nil); err == nil {
		t.Error("a folder name with a separator was accepted")
	}
}

// A package whose files carry CRC-32C instead of SHA-256 (what hvsnap
// relocate makes on the destination volume) is accepted only by the local
// move that asks for it; a damaged file is still caught.
func TestImportCRC32CPackage(t *testing.T) {
	root := t.TempDir()
	bv := build(t, filepath.Join(root, "src"), treeVM("web", vhd.FormatVHDX))
	dst := filepath.Join(root, "dst")
	os.MkdirAll(dst, 0o755)
	if _, err := export.Export(bv.Dir, export.Options{To: filepath.Join(dst, "x.tar.lz4"), Digest: "crc32c"}, nil); !errors.Is(err, export.ErrUsage) {
		t.Errorf("CRC-32C archive: %v", err)
	}
	ex := mustExport(t, bv.Dir, export.Options{To: filepath.Join(dst, "pkg"), PathMap: bv.PathMap, Digest: "crc32c"})
	for _, f := range ex.Manifest.Files {
		if f.SHA256 != "" || len(f.CRC32C) != 8 {
			t.Fatalf("%s: sha256 %q crc32c %q", f.Path, f.SHA256, f.CRC32C)
		}
	}
	for name, o := range map[string]importer.Options{
		"copy":            {To: dst, Name: "a"},
		"copy+allow":      {To: dst, Name: "b", AllowCRC32C: true},
		"move, not asked": {To: dst, Name: "c", Move: true},
		"verify only":     {VerifyOnly: true},
	} {
		if _, err := importer.Import(ex.Package, o, nil); !errors.Is(err, importer.ErrBadPackage) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	// The refusals above moved nothing? ("move, not asked" verifies before
	// moving, and fails at the end: it must leave the package usable.)
	res, err := importer.Import(ex.Package, importer.Options{To: dst, Name: "ok", Move: true, AllowCRC32C: true, Resume: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkImported(t, bv, res, false)
}
