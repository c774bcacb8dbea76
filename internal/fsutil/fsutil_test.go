package fsutil

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestOpenRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("hello, disk"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := OpenRead(p)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if n, err := f.ReadAt(b, 7); n != 4 || string(b) != "disk" || (err != nil && err != io.EOF) {
		t.Errorf("ReadAt = %d %q %v", n, b, err)
	}
	if all, err := io.ReadAll(f); err != nil || string(all) != "hello, disk" {
		t.Errorf("ReadAll = %q %v", all, err)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != 11 {
		t.Errorf("Stat = %v %v", fi, err)
	}
	if _, err := f.WriteAt([]byte("x"), 0); err == nil {
		t.Error("a write through a read-only file succeeded")
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}
	// Errors are what os.Open gives.
	_, err = OpenRead(p + ".missing")
	var pe *fs.PathError
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) || pe.Op != "open" || pe.Path != p+".missing" {
		t.Errorf("missing file: %#v", err)
	}
}

func TestStartWriteback(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := StartWriteback(f); err != nil {
		t.Errorf("StartWriteback on a written file: %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := StartWriteback(f); err == nil && runtime.GOOS == "linux" {
		t.Error("StartWriteback on a closed file succeeded")
	}
}
