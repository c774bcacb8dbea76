package vhd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// v1FuzzSeeds are small valid images: dynamic with 1 KiB and 4 KiB blocks,
// a compact differencing disk with partial bitmaps, a fixed disk.
func v1FuzzSeeds(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	f, d := v1MemCreate(t, CreateSpec{Type: TypeDynamic, Size: 8 * KiB, BlockSize: 1024, DiskID: GUID{1}}, nil)
	for _, b := range []int64{0, 2, 7} {
		if err := d.writeAt(v1Pattern(byte(b+1), 1024), b*1024, nil); err != nil {
			t.Fatal(err)
		}
	}
	seeds["dynamic-1k"] = f.bytes()
	f, d = v1MemCreate(t, CreateSpec{Type: TypeDynamic, Size: 16 * KiB, BlockSize: 4096, DiskID: GUID{2}}, nil)
	if err := d.writeAt(v1Pattern(3, 1024), 4096+512, nil); err != nil {
		t.Fatal(err)
	}
	seeds["dynamic-4k"] = f.bytes()
	df, _ := v1CompactDiff(t, 8*KiB, 1024, []int64{1, 4})
	seeds["diff-compact"] = df.bytes()
	df, _ = v1CompactDiff(t, 16*KiB, 8192, []int64{0})
	seeds["diff-8k"] = df.bytes()
	f, _ = v1MemCreate(t, CreateSpec{Type: TypeFixed, Size: 4 * KiB, DiskID: GUID{3}}, nil)
	seeds["fixed"] = f.bytes()
	for k, v := range seeds {
		// Fixed timestamps keep the committed corpus reproducible.
		if len(v) >= 512 {
			for _, off := range []int{0, len(v) - 512} {
				if string(v[off:off+8]) == v1FooterCookie {
					copy(v[off+24:off+28], []byte{0x2A, 0, 0, 0})
				}
			}
			v1FixSums(v)
		}
		seeds[k] = v
	}
	return seeds
}

// TestV1WriteFuzzSeeds regenerates testdata/fuzz/FuzzVHDOpen when
// HVSNAP_WRITE_SEEDS=1.
func TestV1WriteFuzzSeeds(t *testing.T) {
	if os.Getenv("HVSNAP_WRITE_SEEDS") != "1" {
		t.Skip("set HVSNAP_WRITE_SEEDS=1 to regenerate the fuzz seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzVHDOpen")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range v1FuzzSeeds(t) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestV1FuzzSeedsValid(t *testing.T) {
	for name, b := range v1FuzzSeeds(t) {
		bk, err := openVHD(&v1MemFile{b: b}, name, false)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		fs, err := bk.check()
		if err != nil || len(fs) != 0 {
			t.Errorf("%s: %v %+v", name, err, fs)
		}
	}
}

// FuzzVHDOpen opens arbitrary bytes as a VHD, walks every run, checks it,
// and when it opens writable writes a sector at both ends and reopens.
func FuzzVHDOpen(f *testing.F) {
	for _, b := range v1FuzzSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(v1FuzzOne)
}

func v1FuzzOne(t *testing.T, data []byte) {
	{
		if len(data) > 4*MiB {
			return
		}
		mf := &v1MemFile{b: append([]byte(nil), data...), name: "fuzz.vhd"}
		bk, err := openVHD(mf, "fuzz.vhd", false)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code == "" || e.Msg == "" {
				t.Fatalf("untyped open error %#v", err)
			}
			return
		}
		inf := bk.info()
		if inf.VirtualSize < 0 || inf.VirtualSize > MaxVHDSize || inf.VirtualSize%512 != 0 {
			t.Fatalf("virtual size %d", inf.VirtualSize)
		}
		bk.parentLocator()
		v1LookupAll(t, bk, int64(len(data)))
		fs, err := bk.check()
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("untyped check error %#v", err)
			}
		}
		// Writes must round-trip on files check calls healthy; on damaged
		// ones they must only fail cleanly.
		healthy := err == nil
		for _, fd := range fs {
			if fd.Severity == SevError {
				healthy = false
			}
		}
		// Writes: only on small blocks, so the memory file stays small.
		if inf.BlockSize > 64*KiB || inf.VirtualSize == 0 {
			return
		}
		wf := &v1MemFile{b: append([]byte(nil), data...), name: "fuzz.vhd"}
		wb, err := openVHD(wf, "fuzz.vhd", true)
		if err != nil {
			t.Fatalf("opens read-only but not read-write: %v", err)
		}
		sec := v1Pattern(0xC3, 512)
		ok := true
		for _, off := range []int64{0, inf.VirtualSize - 512} {
			if err := wb.writeAt(sec, off, v1ZeroReader{}); err != nil {
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("untyped write error %#v", err)
				}
				ok = false
				break
			}
		}
		if !ok || !healthy {
			return
		}
		rb, err := openVHD(wf, "fuzz.vhd", false)
		if err != nil {
			t.Fatalf("reopen after writes: %v", err)
		}
		for _, off := range []int64{0, inf.VirtualSize - 512} {
			r, err := rb.lookup(off, 512)
			if err != nil {
				t.Fatalf("lookup after write: %v", err)
			}
			if r.State != StateData {
				t.Fatalf("written sector at %d not present: %+v", off, r)
			}
			got := make([]byte, 512)
			if err := readFull(wf, got, r.FileOff); err != nil || !bytes.Equal(got, sec) {
				t.Fatalf("written sector at %d reads back wrong", off)
			}
		}
	}
}

// v1ZeroReader reads zeros everywhere (a parent of any size).
type v1ZeroReader struct{}

func (v1ZeroReader) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}
