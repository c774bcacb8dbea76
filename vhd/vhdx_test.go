package vhd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// vxWriteOps lists writes (offset, length) that exercise aligned, sector
// sized, partial-block and block-crossing writes.
func vxWriteOps(size, bs, lss int64) [][2]int64 {
	ops := [][2]int64{
		{0, lss},                     // first sector
		{bs / 2, lss},                // one sector mid-block
		{bs + 3*lss, 7 * lss},        // partial block
		{bs - 2*lss, 5 * lss},        // crossing a block boundary
		{size - lss, lss},            // last sector
		{2*bs - 64*KiB, 192 * KiB},   // crossing again, larger
		{bs / 4, 64 * KiB},           // overwrite inside an allocated block
		{size - 3*lss - 8*KiB, 8192}, // near the end
	}
	var out [][2]int64
	for _, o := range ops {
		o[0] = o[0] / lss * lss
		if o[1]%lss != 0 {
			o[1] = (o[1] + lss - 1) / lss * lss
		}
		if o[0] >= 0 && o[0]+o[1] <= size {
			out = append(out, o)
		}
	}
	return out
}

func vxQemuCompare(t *testing.T, path string, want []byte) {
	t.Helper()
	out := qemuImg(t, "check", "-f", "vhdx", path)
	if !strings.Contains(out, "No errors") {
		t.Errorf("qemu-img check %s: %s", path, out)
	}
	raw := filepath.Join(t.TempDir(), "out.raw")
	qemuImg(t, "convert", "-f", "vhdx", "-O", "raw", path, raw)
	got, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	vxEqual(t, "qemu-img convert of "+filepath.Base(path), got, want)
}

func TestVXCreateWriteRead(t *testing.T) {
	dir := t.TempDir()
	for _, typ := range []DiskType{TypeDynamic, TypeFixed} {
		for _, bs := range []uint32{1 * MiB, 2 * MiB, 32 * MiB} {
			for _, lss := range []uint32{512, 4096} {
				name := fmt.Sprintf("%s-%dM-%d", typ, bs/MiB, lss)
				t.Run(name, func(t *testing.T) {
					size := int64(2*bs+bs/2) + 3*int64(lss)
					p := filepath.Join(dir, name+".vhdx")
					im, err := Create(p, CreateSpec{Format: FormatVHDX, Type: typ, Size: size, BlockSize: bs, LogicalSectorSize: lss}, nil)
					if err != nil {
						t.Fatal(err)
					}
					b := vxBack(t, im)
					model := make([]byte, size)
					for i, op := range vxWriteOps(size, int64(bs), int64(lss)) {
						data := vxRand(int64(i+1), int(op[1]))
						if err := b.writeAt(data, op[0], nil); err != nil {
							t.Fatalf("write %v: %v", op, err)
						}
						copy(model[op[0]:], data)
					}
					vxEqual(t, "read back", vxReadAll(t, b, im.f, nil), model)
					if err := im.Close(); err != nil {
						t.Fatal(err)
					}
					im, err = Open(p, &Options{ReadOnly: true})
					if err != nil {
						t.Fatal(err)
					}
					defer im.Close()
					inf := im.Info()
					if inf.Type != typ || inf.VirtualSize != size || inf.BlockSize != bs || inf.LogicalSectorSize != lss || inf.PhysicalSectorSize != 4096 || inf.Creator != "hvsnap" || !inf.LogGUID.IsZero() {
						t.Errorf("info %+v", inf)
					}
					vxEqual(t, "reopened", vxReadAll(t, im.b, im.f, nil), model)
					fs, err := im.Check()
					if err != nil {
						t.Fatal(err)
					}
					vxNoErrors(t, fs)
					if len(fs) != 0 {
						t.Errorf("findings on a clean file: %+v", fs)
					}
					if lss == 512 { // qemu supports 512-byte logical sectors only
						vxQemuCompare(t, p, model)
					}
				})
			}
		}
	}
}

// vxMakeBase creates a dynamic base with data at a few places.
func vxMakeBase(t *testing.T, dir string, size int64, bs, lss uint32) (string, []byte) {
	t.Helper()
	p := filepath.Join(dir, "base.vhdx")
	im, err := Create(p, CreateSpec{Format: FormatVHDX, Type: TypeDynamic, Size: size, BlockSize: bs, LogicalSectorSize: lss}, nil)
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	for i, off := range []int64{0, int64(bs) - 8192, size / 2, size - 8192} {
		off = off / int64(lss) * int64(lss)
		d := vxRand(int64(100+i), 8192)
		if err := vxBack(t, im).writeAt(d, off, nil); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], d)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	return p, model
}

func TestVXDifferencing(t *testing.T) {
	for _, lss := range []uint32{512, 4096} {
		t.Run(fmt.Sprint(lss), func(t *testing.T) {
			dir := t.TempDir()
			size := int64(9*MiB + 3*4096)
			base, model := vxMakeBase(t, dir, size, 2*MiB, lss)
			child := filepath.Join(dir, "child.avhdx")
			// A path map gives the locator an absolute_win32_path: libvhdi
			// 20210425 finds the parent only through it (not relative_path).
			pm, err := ParsePathMapping(`C:\VMs=` + dir)
			if err != nil {
				t.Fatal(err)
			}
			im, err := Create(child, CreateSpec{Format: FormatVHDX, Parent: base}, &Options{PathMap: PathMap{pm}})
			if err != nil {
				t.Fatal(err)
			}
			inf := im.Info()
			loc := im.Parent()
			if inf.Type != TypeDifferencing || inf.LogicalSectorSize != lss || loc == nil || loc.RelativePath != `.\base.vhdx` {
				t.Fatalf("child info %+v loc %+v", inf, loc)
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			bim, _ := Open(base, &Options{ReadOnly: true})
			binf := bim.Info()
			bim.Close()
			if loc.Linkage != binf.DataWriteGUID.Linkage() || loc.Linkage2 != (GUID{}).Linkage() {
				t.Fatalf("linkage %q / %q, parent DataWriteGuid %s", loc.Linkage, loc.Linkage2, binf.DataWriteGUID.Linkage())
			}
			keys := []string{}
			for _, e := range loc.Entries {
				keys = append(keys, e.Key)
			}
			if strings.Join(keys, ",") != "parent_linkage,absolute_win32_path,relative_path,parent_linkage2" || loc.AbsolutePath != `C:\VMs\base.vhdx` {
				t.Errorf("locator keys %v", keys)
			}
			c, err := OpenChain(child, nil)
			if err != nil {
				t.Fatal(err)
			}
			ops := vxWriteOps(size, 2*MiB, int64(lss))
			ops = append(ops, [2]int64{size / 2, 4096}, [2]int64{5 * MiB, 3 * MiB})
			for i, op := range ops {
				d := vxRand(int64(200+i), int(op[1]))
				// Unaligned through the chain as well.
				if i == 2 {
					if _, err := c.WriteAt(d[:100], op[0]+7); err != nil {
						t.Fatal(err)
					}
					copy(model[op[0]+7:], d[:100])
					continue
				}
				if _, err := c.WriteAt(d, op[0]); err != nil {
					t.Fatal(err)
				}
				copy(model[op[0]:], d)
			}
			got := make([]byte, size)
			if _, err := c.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			vxEqual(t, "chain read", got, model)
			fs, err := c.Check()
			if err != nil {
				t.Fatal(err)
			}
			vxNoErrors(t, fs)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			// The base's identity is unchanged; the chain still opens.
			c, err = OpenChain(child, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if !c.Links[0].LinkageOK {
				t.Error("linkage not OK after writes")
			}
			c.Close()
			// libvhdi.
			info := vhdiinfo(t, child)
			t.Logf("vhdiinfo: %v", info)
			if !strings.Contains(strings.ToLower(info["Disk type"]), "differential") {
				t.Errorf("vhdiinfo disk type %q", info["Disk type"])
			}
			if !strings.HasPrefix(info["Media size"], fmt.Sprint(size)) && !strings.Contains(info["Media size"], fmt.Sprintf("(%d bytes)", size)) {
				t.Errorf("vhdiinfo media size %q", info["Media size"])
			}
			if info["Bytes per sector"] != fmt.Sprintf("%d bytes", lss) {
				t.Errorf("vhdiinfo bytes per sector %q", info["Bytes per sector"])
			}
			if !strings.EqualFold(info["Parent identifier"], binf.DataWriteGUID.String()) {
				t.Errorf("vhdiinfo parent identifier %q, want %s", info["Parent identifier"], binf.DataWriteGUID)
			}
			mnt := vhdimount(t, child)
			vd, err := os.ReadFile(mnt)
			if err != nil {
				t.Fatal(err)
			}
			vxEqual(t, "vhdimount", vd, model)
		})
	}
}

func TestVXVhdiinfoBase(t *testing.T) {
	dir := t.TempDir()
	for _, typ := range []DiskType{TypeDynamic, TypeFixed} {
		p := filepath.Join(dir, string(typ)+".vhdx")
		id := NewGUID()
		im, err := Create(p, CreateSpec{Format: FormatVHDX, Type: typ, Size: 12 * MiB, BlockSize: 4 * MiB, LogicalSectorSize: 4096, DiskID: id}, nil)
		if err != nil {
			t.Fatal(err)
		}
		d := vxRand(7, 12288)
		if err := vxBack(t, im).writeAt(d, 5*MiB, nil); err != nil {
			t.Fatal(err)
		}
		im.Close()
		info := vhdiinfo(t, p)
		want := map[DiskType]string{TypeDynamic: "dynamic", TypeFixed: "fixed"}[typ]
		if !strings.Contains(strings.ToLower(info["Disk type"]), want) {
			t.Errorf("%s: vhdiinfo disk type %q", typ, info["Disk type"])
		}
		// libvhdi's "Identifier" is the DataWriteGuid (it prints no disk ID
		// and no block size for VHDX).
		bim, err := Open(p, &Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		inf := bim.Info()
		bim.Close()
		if inf.DiskID != id {
			t.Errorf("disk ID %s want %s", inf.DiskID, id)
		}
		if !strings.EqualFold(info["Identifier"], inf.DataWriteGUID.String()) {
			t.Errorf("%s: identifier %q want %s", typ, info["Identifier"], inf.DataWriteGUID)
		}
		if info["Bytes per sector"] != "4096 bytes" || !strings.Contains(info["Media size"], "(12582912 bytes)") {
			t.Errorf("%s: vhdiinfo %v", typ, info)
		}
		model := make([]byte, 12*MiB)
		copy(model[5*MiB:], d)
		vd, err := os.ReadFile(vhdimount(t, p))
		if err != nil {
			t.Fatal(err)
		}
		vxEqual(t, "vhdimount "+string(typ), vd, model)
	}
}

// vxScatterRaw writes a raw file with data at scattered offsets.
func vxScatterRaw(t *testing.T, p string, size int64) []byte {
	t.Helper()
	model := make([]byte, size)
	for i, off := range []int64{0, 512, 1*MiB - 4096, 3*MiB + 12345, 9 * MiB, 17*MiB - 1000, size - 4096} {
		d := vxRand(int64(300+i), 4096)
		copy(model[off:], d)
	}
	if err := os.WriteFile(p, model, 0o644); err != nil {
		t.Fatal(err)
	}
	return model
}

func TestVXQemuImages(t *testing.T) {
	needTool(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	size := int64(20 * MiB)
	raw := filepath.Join(dir, "src.raw")
	model := vxScatterRaw(t, raw, size)
	cases := []struct {
		name string
		args []string
		want []byte
	}{
		{"empty", []string{"create", "-f", "vhdx"}, make([]byte, size)},
		{"convert", []string{"convert", "-f", "raw", "-O", "vhdx", raw}, model},
		{"convert-1M", []string{"convert", "-f", "raw", "-O", "vhdx", "-o", "block_size=1M", raw}, model},
		{"convert-fixed", []string{"convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=fixed", raw}, model},
		{"convert-nozero", []string{"convert", "-f", "raw", "-O", "vhdx", "-o", "block_state_zero=off", raw}, model},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".vhdx")
			args := append(append([]string(nil), tc.args...), p)
			if tc.name == "empty" {
				args = append(args, fmt.Sprint(size))
			}
			qemuImg(t, args...)
			im, err := Open(p, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			vxEqual(t, "read", vxReadAll(t, im.b, im.f, nil), tc.want)
			fs, err := im.Check()
			if err != nil {
				t.Fatal(err)
			}
			vxNoErrors(t, fs)
			im.Close()
			// Write into the qemu file and let qemu read it back.
			im, err = Open(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := append([]byte(nil), tc.want...)
			for i, off := range []int64{4096, 11 * MiB, size - 512} {
				d := vxRand(int64(400+i), 512)
				if err := vxBack(t, im).writeAt(d, off, nil); err != nil {
					t.Fatal(err)
				}
				copy(want[off:], d)
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			vxQemuCompare(t, p, want)
		})
	}
}

func TestVXWindowsSamples(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  DiskType
		bs   uint32
	}{{"dynamic.vhdx", TypeDynamic, 32 * MiB}, {"fixed.vhdx", TypeFixed, 2 * MiB}} {
		t.Run(tc.name, func(t *testing.T) {
			p := sample(t, tc.name)
			h0 := vxHashFile(t, p)
			im, err := Open(p, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			inf := im.Info()
			if inf.Type != tc.typ || inf.VirtualSize != 10*MiB || inf.BlockSize != tc.bs || inf.LogicalSectorSize != 512 || inf.PhysicalSectorSize != 4096 ||
				!strings.HasPrefix(inf.Creator, "Microsoft Windows 10.0.18363") || inf.LeaveBlockAllocated != (tc.typ == TypeFixed) || inf.LogReplayed {
				t.Errorf("info %+v", inf)
			}
			fs, err := im.Check()
			if err != nil {
				t.Fatal(err)
			}
			vxNoErrors(t, fs)
			got := vxReadAll(t, im.b, im.f, nil)
			im.Close()
			raw := filepath.Join(t.TempDir(), "x.raw")
			qemuImg(t, "convert", "-f", "vhdx", "-O", "raw", p, raw)
			want, _ := os.ReadFile(raw)
			vxEqual(t, "vs qemu-img", got, want)
			vd, err := os.ReadFile(vhdimount(t, p))
			if err != nil {
				t.Fatal(err)
			}
			vxEqual(t, "vs vhdimount", got, vd)
			// Read-write open and close without writing: byte-identical.
			im, err = Open(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			im.Close()
			if vxHashFile(t, p) != h0 {
				t.Error("read-write open + close changed the file")
			}
			// Write into the Windows file; qemu reads it.
			im, err = Open(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			d := vxRand(9, 64*KiB)
			if err := vxBack(t, im).writeAt(d, 9*MiB, nil); err != nil {
				t.Fatal(err)
			}
			copy(got[9*MiB:], d)
			oldDW := inf.DataWriteGUID
			if ni := im.Info(); ni.DataWriteGUID == oldDW || ni.FileWriteGUID == inf.FileWriteGUID {
				t.Error("GUIDs not renewed by a write")
			}
			im.Close()
			vxQemuCompare(t, p, got)
		})
	}
}

func TestVXReadOnlyRefusesWrites(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.vhdx")
	im, err := Create(p, CreateSpec{Format: FormatVHDX, Size: 4 * MiB}, nil)
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
	im, err = Open(p, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	err = im.b.writeAt(make([]byte, 512), 0, nil)
	if !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write on read-only: %v", err)
	}
}

func TestVXSetParent(t *testing.T) {
	dir := t.TempDir()
	size := int64(6 * MiB)
	base, model := vxMakeBase(t, dir, size, 2*MiB, 512)
	child := filepath.Join(dir, "child.avhdx")
	im, err := Create(child, CreateSpec{Format: FormatVHDX, Parent: base}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := vxRand(1, 4096)
	im.Close()
	ch, err := OpenChain(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.WriteAt(d, 4096); err != nil {
		t.Fatal(err)
	}
	copy(model[4096:], d)
	before := ch.Leaf().Info()
	ch.Close()
	// Rename the base and re-point with long paths (the item must move).
	nbase := filepath.Join(dir, "renamed.vhdx")
	if err := os.Rename(base, nbase); err != nil {
		t.Fatal(err)
	}
	cim, err := Open(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	bim, _ := Open(nbase, &Options{ReadOnly: true})
	np := &NewParent{Linkage: bim.Info().DataWriteGUID, RelativePath: `.\renamed.vhdx`,
		AbsolutePath: `C:\` + strings.Repeat(`very long folder name\`, 40) + `renamed.vhdx`, VolumePath: `\\?\Volume{12345678-1234-1234-1234-123456789abc}\x\base.vhdx`}
	bim.Close()
	if err := cim.SetParent(np); err != nil {
		t.Fatal(err)
	}
	after := cim.Info()
	if after.DataWriteGUID != before.DataWriteGUID || after.FileWriteGUID == before.FileWriteGUID {
		t.Errorf("setParent GUIDs: before %+v after %+v", before, after)
	}
	cim.Close()
	cim, err = Open(child, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	loc := cim.Parent()
	keys := []string{}
	for _, e := range loc.Entries {
		keys = append(keys, e.Key)
	}
	if strings.Join(keys, ",") != "parent_linkage,absolute_win32_path,relative_path,volume_path,parent_linkage2" ||
		loc.RelativePath != np.RelativePath || loc.AbsolutePath != np.AbsolutePath || loc.VolumePath != np.VolumePath {
		t.Errorf("locator %+v", loc)
	}
	fs, _ := cim.Check()
	vxNoErrors(t, fs)
	cim.Close()
	ch, err = OpenChain(child, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	ch.ReadAt(got, 0)
	ch.Close()
	vxEqual(t, "after setParent", got, model)
	vd, err := os.ReadFile(vhdimount(t, child))
	if err != nil {
		t.Fatal(err)
	}
	vxEqual(t, "vhdimount after setParent", vd, model)
}

func TestVXLookupRunsPartial(t *testing.T) {
	// A crafted PARTIALLY_PRESENT block: bits 1 and 3..5 set.
	np := &NewParent{Linkage: NewGUID(), RelativePath: `.\p.vhdx`, VirtualSize: 4 * MiB, LogicalSectorSize: 512, PhysicalSectorSize: 512}
	m, b := vxMemCreate(t, CreateSpec{Type: TypeDifferencing, Size: 4 * MiB, BlockSize: 1 * MiB}, np)
	// Payload block 1 at 5 MiB... put SB block at end, payload after it.
	sz, _ := m.Size()
	sbOff := sz
	pOff := sz + MiB
	m.Truncate(pOff + MiB)
	copy(m.b[pOff:], bytes.Repeat([]byte{0xAB}, MiB))
	bits := make([]byte, 4096)
	// block 1 of chunk 0: bit index 1*2048 + i
	base := int64(2048)
	for _, i := range []int64{1, 3, 4, 5} {
		bi := base + i
		bits[bi/8] |= 1 << (bi % 8)
	}
	copy(m.b[sbOff:], bits)
	vxPut64(m.b[b.batOff+8*b.geo.batIndex(1):], uint64(pOff)|vxPartial)
	vxPut64(m.b[b.batOff+8*b.geo.sbIndex(0):], uint64(sbOff)|vxSBPresent)
	b2, err := openVHDX(m, "mem", false)
	if err != nil {
		t.Fatal(err)
	}
	var runs []Run
	for off := int64(MiB); off < 2*MiB; {
		r, err := b2.lookup(off, 2*MiB-off)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, r)
		off += r.Len
	}
	want := []Run{{MiB, 512, StateAbsent, 0}, {MiB + 512, 512, StateData, pOff + 512}, {MiB + 1024, 512, StateAbsent, 0},
		{MiB + 1536, 1536, StateData, pOff + 1536}, {MiB + 3072, MiB - 3072, StateAbsent, 0}}
	if fmt.Sprint(runs) != fmt.Sprint(want) {
		t.Errorf("runs %v\nwant %v", runs, want)
	}
	fs, _ := b2.check()
	vxNoErrors(t, fs)
	// Write into the partial block: data lands, bits get set.
	b3, err := openVHDX(m, "mem", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := b3.writeAt(bytes.Repeat([]byte{1}, 1024), MiB+1024, nil); err != nil {
		t.Fatal(err)
	}
	r, _ := b3.lookup(MiB+512, MiB)
	if r.State != StateData || r.Len != 2560 {
		t.Errorf("after write: %+v", r)
	}
	b3.close()
}
