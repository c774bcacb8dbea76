package vhd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Fuzz input encoding: a VHDX is ≥ 4 MiB and mostly zeros, so the input
// describes it compactly:
//
//	u16 LE: file size in 64 KiB units (clamped to 16..256, i.e. 1..16 MiB)
//	then chunks: u24 LE offset, u16 LE length, length bytes
//
// laid over a zero-filled file of that size (parts past the end dropped).
const vxFuzzMaxSize = 16 * MiB

func vxFuzzDecode(data []byte) *vxMemFile {
	if len(data) < 2 {
		return nil
	}
	units := int(vxU16(data))
	units = min(max(units, 16), 256)
	size := units * 64 * KiB
	img := make([]byte, size)
	data = data[2:]
	for len(data) >= 5 {
		off := int(data[0]) | int(data[1])<<8 | int(data[2])<<16
		n := int(vxU16(data[3:]))
		data = data[5:]
		n = min(n, len(data))
		if off < size {
			copy(img[off:], data[:n])
		}
		data = data[n:]
	}
	return &vxMemFile{b: img}
}

// vxFuzzEncode encodes an image (≤ 16 MiB) by its non-zero stretches.
func vxFuzzEncode(img []byte) []byte {
	if len(img) > vxFuzzMaxSize {
		img = img[:vxFuzzMaxSize]
	}
	units := (len(img) + 64*KiB - 1) / (64 * KiB)
	out := []byte{byte(units), byte(units >> 8)}
	i := 0
	for i < len(img) {
		if img[i] == 0 {
			i++
			continue
		}
		j, zeros := i, 0
		for j < len(img) && j-i < 65535 && zeros < 32 {
			if img[j] == 0 {
				zeros++
			} else {
				zeros = 0
			}
			j++
		}
		end := j - zeros
		out = append(out, byte(i), byte(i>>8), byte(i>>16), byte(end-i), byte((end-i)>>8))
		out = append(out, img[i:end]...)
		i = j
	}
	return out
}

// vxFuzzSeeds builds seeds from small real images: dynamic, differencing,
// fixed, 4096-byte sectors, and one with a dirty log.
func vxFuzzSeeds(t testing.TB) map[string][]byte {
	dyn, diff := vxBaseImages(t)
	seeds := map[string][]byte{"dynamic": vxFuzzEncode(dyn), "differencing": vxFuzzEncode(diff)}
	m, b := vxMemCreate(t, CreateSpec{Type: TypeFixed, Size: 2 * MiB, BlockSize: MiB, LogicalSectorSize: 4096}, nil)
	b.writeAt(vxRand(5, 4096), 4096, nil)
	b.close()
	seeds["fixed-4k"] = vxFuzzEncode(m.b)
	// Dirty log: a block allocation whose BAT update is only in the log.
	m, b = vxMemCreate(t, CreateSpec{Type: TypeDynamic, Size: 3 * MiB, BlockSize: MiB}, nil)
	b.close()
	pristine := m.clone()
	count := func(limit int) (*vxMemFile, int) {
		c := pristine.clone()
		fb := &faultBudget{Limit: limit}
		bk, err := openVHDX(fb.wrap()(c), "x", true)
		if err != nil {
			t.Fatal(err)
		}
		bk.writeAt(vxRand(6, 1024), MiB+512, nil)
		return c, fb.Count
	}
	_, n := count(-1)
	dirty, _ := count(n - 2)
	seeds["dirty-log"] = vxFuzzEncode(dirty.b)
	return seeds
}

// vxFuzzExercise opens the file read-only, walks every run, checks it, and
// writes into a copy: nothing may panic, every error is an *Error.
func vxFuzzExercise(t *testing.T, m *vxMemFile) {
	typed := func(what string, err error) {
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("%s: untyped error %v", what, err)
		}
	}
	bk, err := openVHDX(m, "fuzz.vhdx", false) // read-only: m is not written
	typed("open", err)
	if err != nil {
		return
	}
	inf := bk.info()
	vs := inf.VirtualSize
	for off, i := int64(0), 0; off < vs && i < 4096; i++ {
		r, err := bk.lookup(off, vs-off)
		typed("lookup", err)
		if err != nil {
			off += int64(inf.BlockSize) - off%int64(inf.BlockSize)
			continue
		}
		if r.Off != off || r.Len <= 0 || r.Len > vs-off || r.Len%int64(inf.LogicalSectorSize) != 0 {
			t.Fatalf("bad run %+v at %d", r, off)
		}
		off += r.Len
	}
	_, err = bk.check()
	typed("check", err)
	_ = bk.parentLocator()
	bk.close()
	if inf.BlockSize > 8*MiB {
		return
	}
	w, err := openVHDX(m.clone(), "fuzz.vhdx", true)
	typed("open rw", err)
	if err != nil {
		return
	}
	lss := int64(inf.LogicalSectorSize)
	typed("write", w.writeAt(make([]byte, lss), 0, zeroReader{}))
	typed("write", w.writeAt(make([]byte, lss), vs-lss, zeroReader{}))
	typed("close", w.close())
}

func FuzzVHDXOpen(f *testing.F) {
	seeds := vxFuzzSeeds(f)
	for _, name := range []string{"dynamic", "differencing", "fixed-4k", "dirty-log"} {
		f.Add(seeds[name])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := vxFuzzDecode(data)
		if m == nil {
			return
		}
		vxFuzzExercise(t, m)
	})
}

// TestVXFuzzSeeds checks the seeds open and read as valid images, and with
// VX_WRITE_SEEDS=1 writes them to testdata/fuzz/FuzzVHDXOpen.
func TestVXFuzzSeeds(t *testing.T) {
	seeds := vxFuzzSeeds(t)
	for name, s := range seeds {
		if len(s) > 100*KiB {
			t.Errorf("seed %s is %d bytes", name, len(s))
		}
		m := vxFuzzDecode(s)
		bk, err := openVHDX(m, name, false)
		if err != nil {
			t.Fatalf("seed %s: %v", name, err)
		}
		fs, _ := bk.check()
		vxNoErrors(t, fs)
		if name == "dirty-log" && !bk.info().LogReplayed {
			t.Error("dirty-log seed is clean")
		}
		vxFuzzExercise(t, m)
		if os.Getenv("VX_WRITE_SEEDS") == "1" {
			dir := filepath.Join("testdata", "fuzz", "FuzzVHDXOpen")
			os.MkdirAll(dir, 0o755)
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
