package vhd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// vxDirtyFile makes a dynamic VHDX on disk whose last write's log entry is
// durable but never applied (the crash hits just before the BAT write).
// writes are applied in order; the last one is left in the log. It returns
// the path, the model before the last write and after it.
func vxDirtyFile(t *testing.T, writes [][2]int64) (string, []byte, []byte) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "d.vhdx")
	size := int64(8 * MiB)
	im, err := Create(p, CreateSpec{Format: FormatVHDX, Type: TypeDynamic, Size: size, BlockSize: MiB}, nil)
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
	pristine, _ := os.ReadFile(p)
	run := func(limit int) (int, []byte, []byte) {
		if err := os.WriteFile(p, pristine, 0o644); err != nil {
			t.Fatal(err)
		}
		fb := &faultBudget{Limit: limit}
		im, err := Open(p, &Options{Wrap: fb.wrap()})
		if err != nil {
			t.Fatal(err)
		}
		model := make([]byte, size)
		var before []byte
		var wcount int
		for i, w := range writes {
			before = append([]byte(nil), model...)
			d := vxRand(int64(50+i), int(w[1]))
			if i == len(writes)-1 {
				wcount = fb.Count
			}
			if err := vxBack(t, im).writeAt(d, w[0], nil); err != nil && limit < 0 {
				t.Fatal(err)
			}
			copy(model[w[0]:], d)
		}
		_ = wcount
		n := fb.Count
		im.Close()
		return n, before, model
	}
	// Count the operations of the whole run (without close), then stop two
	// short: the BAT page write and the final flush never happen.
	n, _, _ := run(-1)
	_, before, after := run(n - 2)
	return p, before, after
}

func vxReadPath(t *testing.T, p string, ro bool) (Info, []byte) {
	t.Helper()
	im, err := Open(p, &Options{ReadOnly: ro})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	return im.Info(), vxReadAll(t, im.b, im.f, nil)
}

func TestVXLogReplay(t *testing.T) {
	p, before, after := vxDirtyFile(t, [][2]int64{{3*MiB + 4096, 8192}})
	_ = before
	h0 := vxHashFile(t, p)
	// The file is dirty: the header names a log, the BAT lacks the block.
	raw, _ := os.ReadFile(p)
	b0, err := openVHDX(&vxMemFile{b: raw}, "x", false)
	if err != nil {
		t.Fatal(err)
	}
	if b0.info().LogGUID.IsZero() {
		t.Fatal("the crafted file has no live log")
	}
	// Without the overlay, the block is absent.
	b0.(*vxBackend).ov = nil
	b0.(*vxBackend).cache.reset()
	if r, _ := b0.lookup(3*MiB, MiB); r.State != StateAbsent {
		t.Fatalf("BAT already updated on disk: %+v", r)
	}
	// Read-only: replayed in memory, the file is untouched.
	inf, got := vxReadPath(t, p, true)
	if !inf.LogReplayed {
		t.Error("LogReplayed not set (read-only)")
	}
	vxEqual(t, "read-only replay", got, after)
	im, _ := Open(p, &Options{ReadOnly: true})
	fs, _ := im.Check()
	im.Close()
	if !vxHasCode(fs, "vhdx-log-dirty") {
		t.Errorf("no vhdx-log-dirty finding: %+v", fs)
	}
	vxNoErrors(t, fs)
	if vxHashFile(t, p) != h0 {
		t.Fatal("read-only open changed the file")
	}
	// Read-write: replayed onto the file, log emptied.
	inf, got = vxReadPath(t, p, false)
	if !inf.LogReplayed || !inf.LogGUID.IsZero() {
		t.Errorf("read-write replay info %+v", inf)
	}
	vxEqual(t, "read-write replay", got, after)
	inf, got = vxReadPath(t, p, true)
	if inf.LogReplayed || !inf.LogGUID.IsZero() {
		t.Errorf("after replay %+v", inf)
	}
	vxEqual(t, "after replay", got, after)
	vxQemuCompare(t, p, after)
}

func TestVXLogCorruptEntry(t *testing.T) {
	// Two transactions: the first applied, the second only logged. A bad
	// CRC in the second leaves the first as the active sequence.
	p, before, _ := vxDirtyFile(t, [][2]int64{{1 * MiB, 4096}, {5 * MiB, 4096}})
	raw, _ := os.ReadFile(p)
	b0, err := openVHDX(&vxMemFile{b: append([]byte(nil), raw...)}, "x", false)
	if err != nil {
		t.Fatal(err)
	}
	bk := b0.(*vxBackend)
	seq, err := bk.scanLog()
	if err != nil || len(seq) != 1 || seq[0].h.Seq != 2 {
		t.Fatalf("active sequence %+v %v", seq, err)
	}
	second := int64(bk.hdr.LogOffset) + seq[0].pos
	bad := append([]byte(nil), raw...)
	bad[second+4096+100] ^= 0xff // inside the data sector
	if err := os.WriteFile(p, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	inf, got := vxReadPath(t, p, false)
	if !inf.LogReplayed {
		t.Error("first entry not replayed")
	}
	vxEqual(t, "after replaying the older entry", got, before)
	// No valid entry at all: corrupt.
	bad2 := append([]byte(nil), raw...)
	for _, e := range seq {
		_ = e
	}
	lo := int64(bk.hdr.LogOffset)
	for i := lo; i < lo+int64(bk.hdr.LogLength); i += 4096 {
		if string(bad2[i:i+4]) == "loge" {
			bad2[i+20] ^= 0x55 // sequence number: breaks the CRC
		}
	}
	_, err = openVHDX(&vxMemFile{b: bad2}, "x", false)
	var e *Error
	if !errors.Is(err, ErrCorrupt) || !errors.As(err, &e) || e.Code != "vhdx-log-no-sequence" {
		t.Fatalf("no valid sequence: %v", err)
	}
	// Truncated below FlushedFileOffset.
	short := append([]byte(nil), raw[:5*MiB]...)
	_, err = openVHDX(&vxMemFile{b: short}, "x", false)
	if !errors.As(err, &e) || e.Code != "vhdx-log-truncated" {
		t.Fatalf("truncated: %v", err)
	}
}

// TestVXLogFormat checks our entries against the layout qemu writes: one
// data sector per BAT page, Tail pointing at the entry itself.
func TestVXLogFormat(t *testing.T) {
	m, b := vxMemCreate(t, CreateSpec{Type: TypeDynamic, Size: 4 * MiB, BlockSize: MiB}, nil)
	if err := b.writeAt(bytes.Repeat([]byte{7}, 512), 0, nil); err != nil {
		t.Fatal(err)
	}
	lo := int64(b.hdr.LogOffset)
	h, ok := decodeVXLogEntryHeader(m.b[lo:])
	if !ok || h.Length != 8192 || h.Tail != 0 || h.Seq != 1 || h.DescCount != 1 || h.LogGUID != b.hdr.LogGUID || h.Flushed%MiB != 0 || h.Last != 5*MiB {
		t.Fatalf("entry header %+v", h)
	}
	if vxCRC(m.b[lo:lo+8192], 4) != h.Checksum {
		t.Fatal("entry CRC")
	}
	b.close()
	// Clean close: LogGuid back to zero.
	b2, err := openVHDX(m, "x", false)
	if err != nil || !b2.info().LogGUID.IsZero() {
		t.Fatalf("after close: %v %+v", err, b2.info())
	}
}
