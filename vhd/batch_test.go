package vhd

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Batched allocation: the session reads its own uncommitted writes; Close
// commits them; a crash before the commit leaves the file as it was (opens,
// checks clean, old content).
func TestWriteBatch(t *testing.T) {
	for _, f := range []Format{FormatVHDX, FormatVHD} {
		t.Run(string(f), func(t *testing.T) { testWriteBatch(t, f) })
	}
}

func testWriteBatch(t *testing.T, f Format) {
	dir := t.TempDir()
	p := filepath.Join(dir, "b."+string(f))
	im, err := Create(p, CreateSpec{Format: f, Type: TypeDynamic, Size: 64 * MiB, BlockSize: 1 * MiB}, nil)
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
	c, err := OpenChain(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Leaf().SetWriteBatch(1 << 40); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0xA5}, 3*MiB)
	for _, off := range []int64{0, 10 * MiB, 40 * MiB} {
		if _, err := c.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	// A second write into a block allocated by the batch.
	if _, err := c.WriteAt([]byte{1, 2, 3, 4}, 10*MiB+512); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := c.ReadAt(got, 10*MiB+512); err != nil || !bytes.Equal(got, []byte{1, 2, 3, 4}) {
		t.Fatalf("read own batched write: %v %v", got, err)
	}
	// "Crash": copy the file as it is on disk now, before any commit.
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(dir, "crashed."+string(f))
	if err := os.WriteFile(crashed, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Committed by Close.
	c2, err := OpenChain(p, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3*MiB)
	c2.ReadAt(buf, 40*MiB)
	if !bytes.Equal(buf, data) {
		t.Fatal("batched write lost after Close")
	}
	c2.Close()
	if fs, err := Check(p, nil); err != nil || hasErrors(fs) {
		t.Fatalf("check after close: %v %v", fs, err)
	}
	// The crashed copy: consistent, none of the uncommitted blocks visible.
	c3, err := OpenChain(crashed, &Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("crashed copy does not open: %v", err)
	}
	c3.ReadAt(buf, 40*MiB)
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Fatal("uncommitted batch visible after a crash")
	}
	c3.Close()
	if fs, err := Check(crashed, nil); err != nil || hasErrors(fs) {
		t.Fatalf("check after crash: %v %v", fs, err)
	}
}

func hasErrors(fs []Finding) bool {
	for _, f := range fs {
		if f.Severity == SevError {
			return true
		}
	}
	return false
}
