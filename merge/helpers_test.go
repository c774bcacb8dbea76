package merge

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hvsnap/hvsnap/internal/journal"
	"github.com/hvsnap/hvsnap/internal/lock"
	"github.com/hvsnap/hvsnap/vhd"
)

// holdLock locks path as a running VM or another job would; the returned
// func releases it.
func holdLock(t *testing.T, path string) func() {
	t.Helper()
	l, err := lock.File(path)
	if err != nil {
		t.Fatal(err)
	}
	return func() { l.Release() }
}

// writeForeignJournal leaves an unfinished journal of another operation
// naming files.
func writeForeignJournal(t *testing.T, path string, files []string) {
	t.Helper()
	j, err := journal.Create(t.TempDir(), "export", files, nil)
	if err != nil {
		t.Fatal(err)
	}
	j.Start("copy", nil)
	j.Close()
	if err := renameFile(j.Path, path); err != nil {
		t.Fatal(err)
	}
}

func renameFile(a, b string) error { return os.Rename(a, b) }

// stopAt runs p and stops it at the hook point (as a kill there would:
// nothing after it runs; the journal stays), failing the test when the
// run never gets there.
func stopAt(t *testing.T, p *Plan, o *Options, point string) {
	t.Helper()
	type stop struct{}
	o.Hook = func(pt string) {
		if pt == point {
			panic(stop{})
		}
	}
	defer func() {
		o.Hook = nil
		if r := recover(); r == nil {
			t.Fatalf("the run did not reach %s", point)
		} else if _, ok := r.(stop); !ok {
			panic(r)
		}
	}()
	Run(p, o, nil)
}

// makeTemplate creates a 64 MiB dynamic VHDX at path (a template VMs are
// made from with storetest's ParentDisk).
func makeTemplate(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	im, err := vhd.Create(path, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 64 * MiB}, nil)
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
}

// makeChild creates a VHDX differencing disk at path whose parent is parent.
func makeChild(t *testing.T, path, parent string) {
	t.Helper()
	im, err := vhd.Create(path, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, Parent: parent}, nil)
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
}
