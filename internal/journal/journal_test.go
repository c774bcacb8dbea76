package journal

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestJournalLifecycle(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "base.vhdx")
	other := filepath.Join(dir, "other.vhdx")
	j, err := Create(dir, "merge", []string{disk}, map[string]int{"steps": 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Start("0/copy", nil); err != nil {
		t.Fatal(err)
	}
	if err := j.Done("0/copy", map[string]string{"sha256": "ab"}); err != nil {
		t.Fatal(err)
	}
	j.Start("0/verify", nil)
	j.Close()

	// A torn last record (crash during the append) is dropped.
	f, _ := os.OpenFile(j.Path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte(`0badc0de {"kind":"done","st`))
	f.Close()
	js, err := Involving(disk)
	if err != nil || len(js) != 1 {
		t.Fatalf("Involving(disk) = %v, %v", js, err)
	}
	if js, _ := Involving(other); len(js) != 0 {
		t.Fatalf("Involving(other) = %v", js)
	}
	r, err := Open(j.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Torn {
		t.Error("torn record not noticed")
	}
	if ok, data := r.IsDone("0/copy"); !ok || string(data) != `{"sha256":"ab"}` {
		t.Errorf("copy done = %v %s", ok, data)
	}
	if ok, _ := r.IsDone("0/verify"); ok {
		t.Error("verify should not be done")
	}
	if ok, _ := r.Started("0/verify"); !ok {
		t.Error("verify should be started")
	}
	if err := r.Done("0/verify", nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.Path); !os.IsNotExist(err) {
		t.Fatal("journal not removed")
	}

	// Damage before the last record is an error, not silently ignored.
	j2, _ := Create(dir, "merge", []string{disk}, nil)
	j2.Start("a", nil)
	j2.Start("b", nil)
	j2.Close()
	b, _ := os.ReadFile(j2.Path)
	b[len(b)/2] ^= 0x20
	os.WriteFile(j2.Path, b, 0o644)
	if _, err := Read(j2.Path); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged journal: %v", err)
	}
	if _, err := Involving(disk); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Involving with a damaged journal: %v", err)
	}
}
