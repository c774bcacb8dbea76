package importer_test

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/hvsnap/hvsnap/export"
	"github.com/hvsnap/hvsnap/importer"
	"github.com/hvsnap/hvsnap/vhd"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestRoundTrip(t *testing.T) {
	for _, f := range []vhd.Format{vhd.FormatVHDX, vhd.FormatVHD} {
		for _, kind := range []string{"folder", "archive"} {
			t.Run(string(f)+"/"+kind, func(t *testing.T) {
				src := t.TempDir()
				bv := build(t, src, treeVM("web01", f))
				before := fileSet(t, src)
				out := t.TempDir()
				to := out
				if kind == "archive" {
					to = filepath.Join(out, "web01.tar.lz4")
				}
				er := mustExport(t, bv.Dir, export.Options{To: to, PathMap: bv.PathMap})
				if after := fileSet(t, src); !reflect.DeepEqual(before, after) {
					t.Fatalf("export changed the source")
				}
				if er.Files != len(er.Manifest.Files) || er.Root != "web01" {
					t.Fatalf("result %+v", er)
				}
				dest := t.TempDir()
				ir := mustImport(t, er.Package, importer.Options{To: dest})
				if ir.Path != filepath.Join(dest, "web01") {
					t.Fatalf("imported to %s", ir.Path)
				}
				checkImported(t, bv, ir, false)
				if len(ir.Relinked) == 0 || len(ir.Hints) == 0 {
					t.Errorf("relinked %v hints %v", ir.Relinked, ir.Hints)
				}
			})
		}
	}
}
