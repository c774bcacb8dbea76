package vhd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestV1Checksum(t *testing.T) {
	// The Windows dynamic sample's footer checksum (0xFFFFEE6F) over its
	// first 85 bytes; recomputed from the decoded fields.
	var ft v1Footer
	ft.Features = 2
	ft.FormatVersion = v1FormatVersion
	ft.DataOffset = 512
	ft.Timestamp = 0x260cf38f
	copy(ft.CreatorApp[:], "win ")
	ft.CreatorVersion = 0x000A0000
	copy(ft.CreatorHost[:], "Wi2k")
	ft.OriginalSize, ft.CurrentSize = 10*MiB, 10*MiB
	ft.Cylinders, ft.Heads, ft.SPT = v1Geometry(10 * MiB)
	ft.DiskType = 3
	id, _ := v1HexDecode("4b6a0d04f946d74e836fd3dc87e1816b")
	copy(ft.UniqueID[:], id)
	b := ft.encode()
	if got := binary.BigEndian.Uint32(b[64:]); got != 0xFFFFEE6F {
		t.Fatalf("checksum 0x%08X, want 0xFFFFEE6F", got)
	}
	if _, cok, sok := v1DecodeFooter(b); !cok || !sok {
		t.Fatal("decode of encoded footer failed")
	}
}

func v1HexDecode(s string) ([]byte, error) {
	b := make([]byte, len(s)/2)
	_, err := fmt.Sscanf(s, "%x", &b)
	return b, err
}

func TestV1Geometry(t *testing.T) {
	for _, c := range []struct {
		size      int64
		cyl       uint16
		heads, st uint8
	}{
		{10 * MiB, 301, 4, 17},      // verified on the Windows sample
		{127 * GiB, 65278, 16, 255}, // ≥ 65535*16*63 sectors → 255 spt
		{2040 * GiB, 65535, 16, 255},
		{1 * MiB, 30, 4, 17},
		{40 * MiB, 963, 5, 17},
		{100 * MiB, 1003, 12, 17}, // heads = ceil(cth/1024)
		{1 * GiB, 2080, 16, 63},
	} {
		cyl, h, s := v1Geometry(c.size)
		if cyl != c.cyl || h != c.heads || s != c.st {
			t.Errorf("geometry(%d) = %d/%d/%d, want %d/%d/%d", c.size, cyl, h, s, c.cyl, c.heads, c.st)
		}
		if int64(cyl)*int64(h)*int64(s)*512 > c.size {
			t.Errorf("geometry(%d) rounds up", c.size)
		}
	}
	// 127 GiB: exact value from the spec's algorithm.
	ts := int64(127*GiB) / 512
	if cyl, _, _ := v1Geometry(127 * GiB); int64(cyl) != ts/255/16 {
		t.Errorf("127 GiB cylinders %d, want %d", cyl, ts/255/16)
	}
}

// v1Writes is a write pattern applied to a disk of size bytes with block
// size bs: aligned blocks, single sectors, partial blocks across a
// boundary, the last sector.
func v1Writes(size, bs int64) []struct {
	off int64
	p   []byte
} {
	w := []struct {
		off int64
		p   []byte
	}{
		{0, v1Rand(1, int(bs))},                          // a whole aligned block
		{bs + 3*512, v1Rand(2, 512)},                     // one sector, mid group
		{bs + 9*512, v1Rand(3, 3*512)},                   // three sectors
		{3*bs - 5*512, v1Rand(4, 11*512)},                // across a block boundary
		{size - 512, v1Rand(5, 512)},                     // last sector
		{bs + 2*512, v1Rand(6, 2*512)},                   // update an allocated block
		{5*bs + bs/2, v1Rand(7, int(min(bs/4, 64*KiB)))}, // partial block
		{0, v1Rand(8, 512)},                              // overwrite
	}
	return w
}

func TestV1CreateWriteReadback(t *testing.T) {
	dir := t.TempDir()
	for _, typ := range []DiskType{TypeFixed, TypeDynamic} {
		for _, bs := range []uint32{512 * KiB, 2 * MiB, 4 * MiB} {
			if typ == TypeFixed && bs != 2*MiB {
				continue
			}
			name := fmt.Sprintf("%s-%d", typ, bs/KiB)
			t.Run(name, func(t *testing.T) {
				size := int64(8*bs) + 3*512 // a partial last block
				p := filepath.Join(dir, name+".vhd")
				im, err := Create(p, CreateSpec{Format: FormatVHD, Type: typ, Size: size, BlockSize: bs}, nil)
				if err != nil {
					t.Fatal(err)
				}
				want := make([]byte, size)
				for _, w := range v1Writes(size, int64(bs)) {
					if err := im.b.writeAt(w.p, w.off, nil); err != nil {
						t.Fatalf("write at %d: %v", w.off, err)
					}
					copy(want[w.off:], w.p)
				}
				if err := im.Close(); err != nil {
					t.Fatal(err)
				}
				im, err = Open(p, &Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				defer im.Close()
				inf := im.Info()
				if inf.Format != FormatVHD || inf.Type != typ || inf.VirtualSize != size || inf.Creator != "win  10.0 Wi2k" {
					t.Errorf("info %+v", inf)
				}
				if typ != TypeFixed && inf.BlockSize != bs {
					t.Errorf("block size %d, want %d", inf.BlockSize, bs)
				}
				v1Equal(t, "readback", v1ReadAll(t, im.b, im.f, nil), want)
				fs, err := im.Check()
				if err != nil {
					t.Fatal(err)
				}
				if len(fs) != 0 {
					t.Errorf("findings: %+v", fs)
				}
				if typ == TypeDynamic {
					// Data is 4 KiB aligned and the footer copy equals the end.
					raw := v1ReadFile(t, p)
					if !bytes.Equal(raw[:512], raw[len(raw)-512:]) {
						t.Error("footer copy differs")
					}
					d := im.b.(*v1Disk)
					for b := int64(0); b < d.nblocks; b++ {
						if e, _ := d.bat.get(b); e != v1Unallocated && (int64(e)*512+d.bm)%4096 != 0 {
							t.Errorf("block %d data not 4 KiB aligned", b)
						}
					}
				}
				// Oracles.
				out := qemuImg(t, "info", "-f", "vpc", p)
				if !strings.Contains(out, fmt.Sprintf("(%d bytes)", size)) {
					t.Errorf("qemu-img info: %s", out)
				}
				v1QemuCheck(t, p)
				raw := filepath.Join(t.TempDir(), "out.raw")
				qemuImg(t, "convert", "-f", "vpc", "-O", "raw", p, raw)
				v1Equal(t, "qemu-img convert", v1ReadFile(t, raw), want)
				if typ == TypeDynamic {
					m := vhdiinfo(t, p)
					if m["Disk type"] != "Dynamic" || !strings.Contains(m["Media size"], fmt.Sprintf("(%d bytes)", size)) || m["Identifier"] != v1RawID(inf.UniqueID) {
						t.Errorf("vhdiinfo %v (id %s)", m, v1RawID(inf.UniqueID))
					}
					v1Equal(t, "vhdimount", v1ReadFile(t, vhdimount(t, p)), want)
				}
			})
		}
	}
}

// v1MakeChain builds a dynamic parent with data and a differencing child
// created through Create; it returns both paths and the parent's content.
func v1MakeChain(t *testing.T, dir string, size int64, bs uint32) (parent, child string, pdata []byte) {
	t.Helper()
	parent = filepath.Join(dir, "base.vhd")
	child = filepath.Join(dir, "child.avhd")
	im, err := Create(parent, CreateSpec{Format: FormatVHD, Type: TypeDynamic, Size: size, BlockSize: bs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pdata = make([]byte, size)
	// Parent data in blocks 0, 1 and 3 (block 2 absent: zeros).
	for _, b := range []int64{0, 1, 3} {
		p := v1Rand(100+b, int(bs))
		if err := im.b.writeAt(p, b*int64(bs), nil); err != nil {
			t.Fatal(err)
		}
		copy(pdata[b*int64(bs):], p)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	cim, err := Create(child, CreateSpec{Format: FormatVHD, Parent: parent, BlockSize: bs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cim.Close(); err != nil {
		t.Fatal(err)
	}
	return parent, child, pdata
}

func TestV1Differencing(t *testing.T) {
	for _, bs := range []uint32{512 * KiB, 2 * MiB, 4 * MiB} {
		t.Run(fmt.Sprint(bs/KiB), func(t *testing.T) {
			dir := t.TempDir()
			size := int64(8 * bs)
			parent, child, pdata := v1MakeChain(t, dir, size, bs)
			pim, err := Open(parent, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			pinf := pim.Info()
			pim.Close()

			cim, err := Open(child, nil)
			if err != nil {
				t.Fatal(err)
			}
			loc := cim.Parent()
			if loc == nil || loc.ParentUniqueID != pinf.UniqueID || loc.ParentName != "base.vhd" || loc.RelativePath != `.\base.vhd` {
				t.Fatalf("locator %+v", loc)
			}
			// W2ru always; W2ku when Create found an absolute path.
			wantEntries := []LocatorEntry{{Key: "W2ru", Value: `.\base.vhd`}}
			if loc.AbsolutePath != "" {
				if !strings.HasSuffix(loc.AbsolutePath, `\base.vhd`) {
					t.Errorf("absolute path %q", loc.AbsolutePath)
				}
				wantEntries = append(wantEntries, LocatorEntry{Key: "W2ku", Value: loc.AbsolutePath})
			}
			if fmt.Sprint(loc.Entries) != fmt.Sprint(wantEntries) {
				t.Errorf("entries %+v, want %+v", loc.Entries, wantEntries)
			}
			if st, _ := os.Stat(parent); vhdTimestamp(loc.ParentTimestamp) != vhdTimestamp(st.ModTime()) {
				t.Errorf("parent timestamp %v, want %v", loc.ParentTimestamp, st.ModTime())
			}
			want := append([]byte(nil), pdata...)
			pr := bytes.NewReader(pdata)
			for _, w := range v1Writes(size, int64(bs)) {
				if err := cim.b.writeAt(w.p, w.off, pr); err != nil {
					t.Fatalf("write at %d: %v", w.off, err)
				}
				copy(want[w.off:], w.p)
			}
			if err := cim.Close(); err != nil {
				t.Fatal(err)
			}
			cim, err = Open(child, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer cim.Close()
			v1Equal(t, "readback", v1ReadAll(t, cim.b, cim.f, pdata), want)
			fs, err := cim.Check()
			if err != nil || len(fs) != 0 {
				t.Errorf("check: %v %+v", err, fs)
			}
			// Sector precision: the single-sector write made an 8-sector run.
			var runs []Run
			cim.Runs(int64(bs), int64(bs), func(r Run) error { runs = append(runs, r); return nil })
			if len(runs) < 2 || runs[len(runs)-1].State != StateAbsent {
				t.Errorf("runs of block 1: %+v", runs)
			}
			for _, r := range runs {
				if r.State == StateData && (r.Off%4096 != 0 || r.Len%4096 != 0) {
					t.Errorf("run %+v is not made of whole 8-sector groups", r)
				}
			}
			// Through the chain layer.
			c, err := OpenChain(child, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, size)
			if _, err := c.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			c.Close()
			v1Equal(t, "chain", got, want)
			// libvhdi.
			m := vhdiinfo(t, child)
			if m["Disk type"] != "Differential" || m["Parent identifier"] != v1RawID(pinf.UniqueID) || m["Identifier"] != v1RawID(cim.Info().UniqueID) {
				t.Errorf("vhdiinfo %v", m)
			}
			v1Equal(t, "vhdimount", v1ReadFile(t, vhdimount(t, child)), want)
		})
	}
}

func TestV1ChainWriteUnaligned(t *testing.T) {
	dir := t.TempDir()
	size := int64(4 * MiB)
	_, child, pdata := v1MakeChain(t, dir, size, 512*KiB)
	c, err := OpenChain(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), pdata...)
	for i, w := range []struct{ off, n int64 }{{100, 10}, {512*KiB - 7, 20}, {3*MiB + 4097, 9000}, {size - 1, 1}} {
		p := v1Rand(int64(50+i), int(w.n))
		if _, err := c.WriteAt(p, w.off); err != nil {
			t.Fatal(err)
		}
		copy(want[w.off:], p)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	v1Equal(t, "vhdimount", v1ReadFile(t, vhdimount(t, child)), want)
	fs, err := Check(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	v1NoErrors(t, fs)
}

func TestV1SetParent(t *testing.T) {
	dir := t.TempDir()
	size := int64(2 * MiB)
	parent, child, pdata := v1MakeChain(t, dir, size, 512*KiB)
	// Move the parent into a sub folder and re-point the child.
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(dir, "sub", "renamed-base.vhd")
	if err := os.Rename(parent, moved); err != nil {
		t.Fatal(err)
	}
	res, err := Reparent(child, moved, ReparentOptions{PathMap: PathMap{{Windows: `D:\VMs`, Local: dir}}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.LinkageOK {
		t.Error("linkage not ok")
	}
	im, err := Open(child, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	loc := im.Parent()
	im.Close()
	if loc.RelativePath != `.\sub\renamed-base.vhd` || loc.AbsolutePath != `D:\VMs\sub\renamed-base.vhd` || loc.ParentName != "renamed-base.vhd" {
		t.Errorf("locator %+v", loc)
	}
	if len(loc.Entries) != 2 || loc.Entries[0].Key != "W2ru" || loc.Entries[1].Key != "W2ku" {
		t.Errorf("entries %+v", loc.Entries)
	}
	fs, err := Check(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	v1NoErrors(t, fs)
	c, err := OpenChain(child, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	c.ReadAt(got, 0)
	c.Close()
	v1Equal(t, "chain after reparent", got, pdata)
	// libvhdi finds the parent by its unicode name in the child's folder.
	if err := os.Rename(moved, filepath.Join(dir, "renamed-base.vhd")); err != nil {
		t.Fatal(err)
	}
	m := vhdiinfo(t, child)
	if !strings.Contains(m["Parent filename"], "renamed-base.vhd") {
		t.Errorf("vhdiinfo parent filename: %v", m)
	}
	// Repeated rewrites reuse the locator area without growing anything.
	st0, _ := os.Stat(child)
	cim, err := Open(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		np := &NewParent{UniqueID: loc.ParentUniqueID, Name: "x.vhd", RelativePath: `.\` + strings.Repeat("d", 100*i) + `\x.vhd`, AbsolutePath: `C:\` + strings.Repeat("e", 50*i)}
		if err := cim.SetParent(np); err != nil {
			t.Fatal(err)
		}
		if l := cim.Parent(); l.RelativePath != np.RelativePath || l.AbsolutePath != np.AbsolutePath {
			t.Fatalf("rewrite %d: %+v", i, l)
		}
	}
	// A path that does not fit is refused.
	err = cim.SetParent(&NewParent{RelativePath: strings.Repeat("x", 40000)})
	var e *Error
	if !errors.As(err, &e) || (e.Code != "vhd-locator-no-space" && e.Code != "vhd-locator-too-long") {
		t.Errorf("oversized path: %v", err)
	}
	cim.Close()
	if st1, _ := os.Stat(child); st1.Size() != st0.Size() {
		t.Errorf("file grew from %d to %d", st0.Size(), st1.Size())
	}
	fs, _ = (func() ([]Finding, error) {
		im, _ := Open(child, &Options{ReadOnly: true})
		defer im.Close()
		return im.Check()
	})()
	v1NoErrors(t, fs)
}

func TestV1QemuImages(t *testing.T) {
	needTool(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	for _, sub := range []string{"dynamic", "fixed"} {
		t.Run(sub, func(t *testing.T) {
			rawIn := filepath.Join(dir, sub+".in.raw")
			size := int64(12 * MiB)
			data := make([]byte, size)
			copy(data[1*MiB:], v1Rand(11, 64*KiB))
			copy(data[5*MiB-512:], v1Rand(12, 3*MiB))
			if err := os.WriteFile(rawIn, data, 0o644); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, sub+".vhd")
			qemuImg(t, "convert", "-f", "raw", "-O", "vpc", "-o", "subformat="+sub, rawIn, p)
			// qemu may round the size up to a CHS multiple.
			out := filepath.Join(dir, sub+".out.raw")
			qemuImg(t, "convert", "-f", "vpc", "-O", "raw", p, out)
			want := v1ReadFile(t, out)
			im, err := Open(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			if im.VirtualSize() != int64(len(want)) {
				t.Fatalf("size %d, qemu %d", im.VirtualSize(), len(want))
			}
			v1Equal(t, "qemu-made image", v1ReadAll(t, im.b, im.f, nil), want)
			fs, err := im.Check()
			if err != nil {
				t.Fatal(err)
			}
			v1NoErrors(t, fs)
			// Write into it with our backend; qemu must agree.
			for i, w := range []int64{0, 3 * MiB, 8*MiB + 512} {
				p := v1Rand(int64(20+i), 96*KiB)
				if err := im.b.writeAt(p, w, nil); err != nil {
					t.Fatal(err)
				}
				copy(want[w:], p)
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			v1QemuCheck(t, p)
			qemuImg(t, "convert", "-f", "vpc", "-O", "raw", p, out)
			v1Equal(t, "qemu after our writes", v1ReadFile(t, out), want)
		})
	}
	if _, err := os.Stat("/usr/bin/qemu-io"); err == nil {
		t.Run("qemu-io", func(t *testing.T) {
			p := filepath.Join(dir, "io.vhd")
			qemuImg(t, "create", "-f", "vpc", "-o", "subformat=dynamic", p, "16M")
			runTool(t, "qemu-io", "-f", "vpc", "-c", "write -P 0xab 1M 64k", "-c", "write -P 0xcd 7M 4k", p)
			out := filepath.Join(dir, "io.raw")
			qemuImg(t, "convert", "-f", "vpc", "-O", "raw", p, out)
			im, err := Open(p, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			v1Equal(t, "qemu-io image", v1ReadAll(t, im.b, im.f, nil), v1ReadFile(t, out))
		})
	}
}

func TestV1WindowsSamples(t *testing.T) {
	for _, name := range []string{"dynamic.vhd", "fixed.vhd"} {
		t.Run(name, func(t *testing.T) {
			p := sample(t, name)
			im, err := Open(p, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			inf := im.Info()
			if inf.Creator != "win  10.0 Wi2k" || inf.VirtualSize != 10*MiB || inf.LogicalSectorSize != 512 || inf.UniqueID.IsZero() || inf.DiskID != inf.UniqueID {
				t.Errorf("info %+v", inf)
			}
			if inf.Created.Year() < 2019 || inf.Created.Year() > 2030 {
				t.Errorf("created %v", inf.Created)
			}
			wantType, wantBS := TypeFixed, uint32(0)
			if name == "dynamic.vhd" {
				wantType, wantBS = TypeDynamic, 2*MiB
				if v1RawID(inf.UniqueID) != "4b6a0d04-f946-d74e-836f-d3dc87e1816b" {
					t.Errorf("unique id %s", v1RawID(inf.UniqueID))
				}
			}
			if inf.Type != wantType || inf.BlockSize != wantBS {
				t.Errorf("type %s block %d", inf.Type, inf.BlockSize)
			}
			fs, err := im.Check()
			if err != nil {
				t.Fatal(err)
			}
			v1NoErrors(t, fs)
			got := v1ReadAll(t, im.b, im.f, nil)
			if name == "dynamic.vhd" {
				v1Equal(t, "vhdimount", got, v1ReadFile(t, vhdimount(t, p)))
				m := vhdiinfo(t, p)
				if m["Identifier"] != v1RawID(inf.UniqueID) {
					t.Errorf("vhdiinfo id %q", m["Identifier"])
				}
			} else {
				raw := v1ReadFile(t, p)
				v1Equal(t, "fixed data", got, raw[:10*MiB])
			}
			out := filepath.Join(t.TempDir(), "o.raw")
			qemuImg(t, "convert", "-f", "vpc", "-O", "raw", p, out)
			v1Equal(t, "qemu-img", got, v1ReadFile(t, out))
		})
	}
}

func TestV1WriteWindowsSample(t *testing.T) {
	p := sample(t, "dynamic.vhd")
	os.Chmod(p, 0o644)
	before := v1ReadFile(t, p)
	im, err := Open(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := v1ReadAll(t, im.b, im.f, nil)
	if !bytes.Equal(v1ReadFile(t, p), before) {
		t.Fatal("opening read-write modified the file")
	}
	for i, off := range []int64{0, 9 * MiB, 6*MiB + 4096} {
		w := v1Rand(int64(70+i), 8*KiB)
		if err := im.b.writeAt(w, off, nil); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], w)
	}
	im.Close()
	v1Equal(t, "vhdimount", v1ReadFile(t, vhdimount(t, p)), want)
	v1QemuCheck(t, p)
	fs, _ := Check(p, nil)
	v1NoErrors(t, fs)
}

func TestV1ReadOnlyRefusesWrites(t *testing.T) {
	f, d := v1MemCreate(t, CreateSpec{Type: TypeDynamic, Size: MiB, BlockSize: 512 * KiB}, nil)
	ro, err := openVHD(f, "mem.vhd", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := ro.writeAt(make([]byte, 512), 0, nil); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write on read-only: %v", err)
	}
	_ = d
}

func TestV1OldFooter511(t *testing.T) {
	f, d := v1MemCreate(t, CreateSpec{Type: TypeFixed, Size: 64 * KiB}, nil)
	_ = d
	b := f.bytes()
	b = b[:len(b)-1] // a 511-byte footer (last reserved byte missing)
	d2, err := openVHD(&v1MemFile{b: b}, "old.vhd", false)
	if err != nil {
		t.Fatal(err)
	}
	if d2.info().VirtualSize != 64*KiB {
		t.Error("size")
	}
}

func TestV1Timestamps(t *testing.T) {
	now := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	if got := v1Time(v1Stamp(now)); !got.Equal(now) {
		t.Errorf("round trip %v", got)
	}
	if v1Stamp(time.Time{}) != 0 {
		t.Error("zero time")
	}
}

// v1QemuCheck runs qemu-img check -f vpc; qemu 7.2's vpc driver has no
// check, which is then logged, not a failure.
func v1QemuCheck(t *testing.T, p string) {
	t.Helper()
	needTool(t, "qemu-img", "qemu-utils")
	out, err := exec.Command("qemu-img", "check", "-f", "vpc", p).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "does not support checks") {
			t.Logf("qemu-img check: %s", strings.TrimSpace(string(out)))
			return
		}
		t.Fatalf("qemu-img check %s: %v\n%s", p, err, out)
	}
}
