package merge

import (
	"os"
	"testing"

	"github.com/hvsnap/hvsnap/internal/journal"
	"github.com/hvsnap/hvsnap/internal/lock"
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
