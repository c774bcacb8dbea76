package lock

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestExclusive(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.vhdx")
	b := filepath.Join(dir, "b.vhdx")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := File(a)
	if err != nil {
		t.Fatal(err)
	}
	// A second lock on the same file (another descriptor) is refused.
	if _, err := File(a); !errors.Is(err, ErrInUse) {
		t.Fatalf("second lock: got %v, want ErrInUse", err)
	}
	// A set including the held file fails and leaves b unlocked.
	if _, err := Files(b, a); !errors.Is(err, ErrInUse) {
		t.Fatalf("set: got %v, want ErrInUse", err)
	}
	lb, err := File(b)
	if err != nil {
		t.Fatalf("b should have been released: %v", err)
	}
	lb.Release()
	l.Release()
	s, err := Files(a, b, a)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	s.Drop(a)
	if l, err := File(a); err != nil {
		t.Fatalf("dropped file still locked: %v", err)
	} else {
		l.Release()
	}
	s.Release()
	if _, err := File(filepath.Join(dir, "missing")); err == nil || errors.Is(err, ErrInUse) {
		t.Fatalf("missing file: got %v", err)
	}
}
