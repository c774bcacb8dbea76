package vhd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// v1FixSums recomputes both footer checksums (trailing and the copy at 0
// when it is a footer) and the dynamic header checksum at 512.
func v1FixSums(b []byte) {
	fix := func(p []byte, at int) {
		binary.BigEndian.PutUint32(p[at:], v1Checksum(p, at))
	}
	if len(b) >= 512 {
		fix(b[len(b)-512:], 64)
	}
	if len(b) >= 1536 && string(b[0:8]) == v1FooterCookie {
		fix(b[0:512], 64)
		if string(b[512:520]) == v1HeaderCookie {
			fix(b[512:1536], 36)
		}
	}
}

// v1CompactDiff builds a small differencing disk with a Windows-like
// compact layout: BAT at 1536, W2ru and W2ku locators in 512-byte slots
// right after it, 1 KiB blocks. Blocks listed in alloc get data written.
func v1CompactDiff(t testing.TB, size int64, bs uint32, alloc []int64) (*v1MemFile, []byte) {
	nb := (size + int64(bs) - 1) / int64(bs)
	batBytes := v1AlignUp(nb*4, 512)
	ft := v1Footer{Features: 2, FormatVersion: v1FormatVersion, DataOffset: 512, Timestamp: 0x2A000000,
		CreatorApp: [4]byte{'w', 'i', 'n', ' '}, CreatorVersion: 0x000A0000, CreatorHost: [4]byte{'W', 'i', '2', 'k'},
		OriginalSize: uint64(size), CurrentSize: uint64(size), DiskType: v1TypeDiff}
	ft.Cylinders, ft.Heads, ft.SPT = v1Geometry(size)
	copy(ft.UniqueID[:], "child-unique-id!")
	h := v1Header{DataOffset: v1NoDataOffset, TableOffset: 1536, HeaderVersion: v1HeaderVersion, MaxTableEntries: uint32(nb), BlockSize: bs}
	copy(h.ParentUniqueID[:], "parent-unique-id")
	h.ParentTimestamp = 0x29000000
	h.ParentName = v1EncodeParentName("parent.vhd")
	rel, abs := v1UTF16LE(`.\parent.vhd`), v1UTF16LE(`C:\VMs\parent.vhd`)
	locOff := 1536 + batBytes
	h.Locators[0] = v1Locator{Code: v1PlatW2ru, DataSpace: 512, DataLen: uint32(len(rel)), DataOff: uint64(locOff)}
	h.Locators[1] = v1Locator{Code: v1PlatW2ku, DataSpace: 1, DataLen: uint32(len(abs)), DataOff: uint64(locOff + 512)} // space in sectors (old style)
	img := make([]byte, locOff+1024+512)
	fb := ft.encode()
	copy(img, fb)
	copy(img[512:], h.encode())
	for i := int64(0); i < batBytes; i++ {
		img[1536+i] = 0xFF
	}
	copy(img[locOff:], rel)
	copy(img[locOff+512:], abs)
	copy(img[len(img)-512:], fb)
	f := &v1MemFile{b: img, name: "compact.avhd"}
	b, err := openVHD(f, "compact.avhd", true)
	if err != nil {
		t.Fatal(err)
	}
	parent := v1Pattern(0x5A, int(size))
	for i, blk := range alloc {
		// A partial write: groups of 8 sectors, or whole small blocks.
		n := min(int64(bs), 4096)
		if err := b.writeAt(v1Pattern(byte(i+1), int(n)), blk*int64(bs), bytes.NewReader(parent)); err != nil {
			t.Fatal(err)
		}
	}
	return f, parent
}

// v1BaseDynamic returns a small dynamic image (256 KiB, 64 KiB blocks,
// blocks 0 and 1 allocated) and a differencing one.
func v1BaseImages(t testing.TB) (dyn, diff, fixed []byte) {
	f, d := v1MemCreate(t, CreateSpec{Type: TypeDynamic, Size: 256 * KiB, BlockSize: 64 * KiB}, nil)
	d.writeAt(v1Pattern(1, 64*KiB), 0, nil)
	d.writeAt(v1Pattern(2, 4096), 64*KiB, nil)
	dyn = f.bytes()
	df, _ := v1CompactDiff(t, 16*KiB, 1024, []int64{0, 3})
	diff = df.bytes()
	ff, _ := v1MemCreate(t, CreateSpec{Type: TypeFixed, Size: 16 * KiB}, nil)
	fixed = ff.bytes()
	return
}

func TestV1Corruption(t *testing.T) {
	dyn, diff, fixed := v1BaseImages(t)
	be32 := binary.BigEndian.PutUint32
	be64 := binary.BigEndian.PutUint64
	const hdr = 512
	const bat = 1536
	loc := func(i int) int { return hdr + 576 + 24*i }
	cases := []struct {
		name     string
		base     []byte
		mutate   func(b []byte) []byte
		fix      bool   // recompute checksums after mutating
		openCode string // expected open error code ("" = opens)
		sentinel error
		finding  string // expected finding code after a successful open
		sev      Severity
	}{
		{"trailing footer checksum", dyn, func(b []byte) []byte { b[len(b)-512+100] ^= 1; return b }, false, "", nil, "vhd-footer-checksum", SevError},
		{"both footer checksums", dyn, func(b []byte) []byte { b[len(b)-512+100] ^= 1; b[100] ^= 1; return b }, false, "vhd-footer-checksum", ErrCorrupt, "", ""},
		{"footer copy differs", dyn, func(b []byte) []byte { b[100] ^= 1; return b }, false, "", nil, "vhd-footer-copy-mismatch", SevWarning},
		{"fixed footer checksum", fixed, func(b []byte) []byte { b[len(b)-512+100] ^= 1; return b }, false, "vhd-footer-checksum", ErrCorrupt, "", ""},
		{"fixed never uses offset 0", fixed, func(b []byte) []byte {
			copy(b, b[len(b)-512:]) // guest data that looks like a footer
			b[len(b)-512+100] ^= 1
			return b
		}, false, "vhd-footer-checksum", ErrCorrupt, "", ""},
		{"header checksum", dyn, func(b []byte) []byte { b[hdr+100] ^= 1; return b }, false, "vhd-header-checksum", ErrCorrupt, "", ""},
		{"header cookie", dyn, func(b []byte) []byte { b[hdr] = 'x'; return b }, true, "vhd-header-cookie", ErrCorrupt, "", ""},
		{"header version", dyn, func(b []byte) []byte { be32(b[hdr+24:], 0x00020000); return b }, true, "vhd-header-version", ErrUnsupported, "", ""},
		{"footer version", dyn, func(b []byte) []byte { be32(b[12:], 0x00020000); be32(b[len(b)-512+12:], 0x00020000); return b }, true, "vhd-version", ErrUnsupported, "", ""},
		{"bat entry past eof", dyn, func(b []byte) []byte { be32(b[bat+8:], 0x00FFFFFF); return b }, false, "", nil, "vhd-bat-past-eof", SevError},
		{"overlapping blocks", dyn, func(b []byte) []byte { copy(b[bat+8:bat+12], b[bat:bat+4]); return b }, false, "", nil, "vhd-block-overlap", SevError},
		{"block over the BAT", dyn, func(b []byte) []byte { be32(b[bat+12:], 3); return b }, false, "", nil, "vhd-block-overlaps-metadata", SevError},
		{"block over footer copy", dyn, func(b []byte) []byte { be32(b[bat+12:], 0); return b }, false, "", nil, "vhd-bat-past-eof", SevError},
		{"max table entries huge", dyn, func(b []byte) []byte { be32(b[hdr+28:], 0xFFFFFFFF); return b }, true, "vhd-max-table-entries", ErrCorrupt, "", ""},
		{"max table entries too small", dyn, func(b []byte) []byte { be32(b[hdr+28:], 1); return b }, true, "vhd-max-table-entries", ErrCorrupt, "", ""},
		{"block size not power of two", dyn, func(b []byte) []byte { be32(b[hdr+32:], 3*64*KiB); return b }, true, "vhd-block-size", ErrCorrupt, "", ""},
		{"block size zero", dyn, func(b []byte) []byte { be32(b[hdr+32:], 0); return b }, true, "vhd-block-size", ErrCorrupt, "", ""},
		{"block size huge", dyn, func(b []byte) []byte { be32(b[hdr+32:], 1<<31); be32(b[hdr+28:], 1); return b }, true, "vhd-block-size", ErrUnsupported, "", ""},
		{"truncated in the blocks", dyn, func(b []byte) []byte { return b[:len(b)/2] }, false, "", nil, "vhd-footer-missing", SevError},
		{"truncated in the header", dyn, func(b []byte) []byte { return b[:1000] }, false, "vhd-header-offset", ErrCorrupt, "", ""},
		{"truncated to nothing", dyn, func(b []byte) []byte { return b[:100] }, false, "vhd-footer-missing", ErrCorrupt, "", ""},
		{"empty", dyn, func(b []byte) []byte { return nil }, false, "vhd-footer-missing", ErrCorrupt, "", ""},
		{"fixed truncated", fixed, func(b []byte) []byte { return append(b[:4096:4096], b[len(b)-512:]...) }, false, "vhd-truncated", ErrCorrupt, "", ""},
		{"disk type 7", dyn, func(b []byte) []byte { be32(b[60:], 7); be32(b[len(b)-512+60:], 7); return b }, true, "vhd-disk-type", ErrCorrupt, "", ""},
		{"disk type 1", dyn, func(b []byte) []byte { be32(b[60:], 1); be32(b[len(b)-512+60:], 1); return b }, true, "vhd-disk-type", ErrUnsupported, "", ""},
		{"size over 2040 GiB", dyn, func(b []byte) []byte { be64(b[48:], 4*TiB); be64(b[len(b)-512+48:], 4*TiB); return b }, true, "vhd-size", ErrUnsupported, "", ""},
		{"header offset huge", dyn, func(b []byte) []byte { be64(b[16:], 1<<63); be64(b[len(b)-512+16:], 1<<63); return b }, true, "vhd-header-offset", ErrCorrupt, "", ""},
		{"bat offset huge", dyn, func(b []byte) []byte { be64(b[hdr+16:], 1<<62); return b }, true, "vhd-bat-range", ErrCorrupt, "", ""},
		{"bat offset near the end", dyn, func(b []byte) []byte { be64(b[hdr+16:], uint64(len(b)-520)); return b }, true, "vhd-max-table-entries", ErrCorrupt, "", ""},
		{"locator offset hostile", diff, func(b []byte) []byte { be64(b[loc(0)+16:], 1<<62); return b }, true, "", nil, "vhd-locator-range", SevError},
		{"locator offset wraps", diff, func(b []byte) []byte { be64(b[loc(0)+16:], 0xFFFFFFFFFFFFFF00); return b }, true, "", nil, "vhd-locator-range", SevError},
		{"locator length hostile", diff, func(b []byte) []byte { be32(b[loc(1)+8:], 0xFFFFFFFF); return b }, true, "", nil, "vhd-locator-range", SevError},
		{"locator space invalid", diff, func(b []byte) []byte { be32(b[loc(0)+4:], 1000); return b }, true, "", nil, "vhd-locator-range", SevError},
		{"locator over the BAT", diff, func(b []byte) []byte { be64(b[loc(0)+16:], bat); return b }, true, "", nil, "vhd-locator-overlap", SevError},
		{"no parent path", diff, func(b []byte) []byte { be32(b[loc(0):], 0); be32(b[loc(1):], 0); return b }, true, "", nil, "vhd-locator-missing", SevWarning},
		{"bitmap partial byte", diff, func(b []byte) []byte {
			e := binary.BigEndian.Uint32(b[bat:])
			b[int64(e)*512] = 0x80
			return b
		}, false, "", nil, "vhd-bitmap-partial-byte", SevWarning},
		{"saved state", dyn, func(b []byte) []byte { b[84] = 1; b[len(b)-512+84] = 1; return b }, true, "", nil, "vhd-saved-state", SevWarning},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mutate(append([]byte(nil), c.base...))
			if c.fix {
				v1FixSums(b)
			}
			f := &v1MemFile{b: b}
			bk, err := openVHD(f, "bad.vhd", false)
			if c.openCode != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != c.openCode || !errors.Is(err, c.sentinel) || e.Path != "bad.vhd" || e.Msg == "" {
					t.Fatalf("open: %v (%#v), want code %s wrapping %v", err, err, c.openCode, c.sentinel)
				}
				return
			}
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			fs, err := bk.check()
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, fd := range fs {
				if fd.Code == c.finding && fd.Severity == c.sev {
					found = true
				}
				if fd.Path != "bad.vhd" || fd.Message == "" {
					t.Errorf("finding %+v", fd)
				}
			}
			if !found {
				t.Errorf("findings %+v, want %s (%s)", fs, c.finding, c.sev)
			}
			// Lookups over the whole disk never panic; errors are typed.
			v1LookupAll(t, bk, int64(len(b)))
		})
	}
}

// v1LookupAll walks the whole disk, checking run invariants; lookup errors
// must be *Error.
func v1LookupAll(t testing.TB, bk backend, fileSize int64) {
	size := bk.info().VirtualSize
	for off, i := int64(0), 0; off < size && i < 100000; i++ {
		r, err := bk.lookup(off, size-off)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code == "" {
				t.Fatalf("lookup(%d): untyped error %v", off, err)
			}
			off = (off/512 + 1) * 512
			if inf := bk.info(); inf.BlockSize > 0 {
				off = (off + int64(inf.BlockSize) - 1) / int64(inf.BlockSize) * int64(inf.BlockSize)
			}
			continue
		}
		if r.Off != off || r.Len <= 0 || r.Len > size-off || r.Len%512 != 0 {
			t.Fatalf("lookup(%d): bad run %+v", off, r)
		}
		if r.State == StateData && (r.FileOff < 0 || r.FileOff+r.Len > fileSize) {
			t.Fatalf("lookup(%d): run %+v outside the file (%d bytes)", off, r, fileSize)
		}
		off += r.Len
	}
}

func TestV1CorruptLookupTyped(t *testing.T) {
	dyn, _, _ := v1BaseImages(t)
	b := append([]byte(nil), dyn...)
	binary.BigEndian.PutUint32(b[1536+8:], 0x00FFFFFF)
	bk, err := openVHD(&v1MemFile{b: b}, "bad.vhd", false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = bk.lookup(128*KiB, 512)
	var e *Error
	if !errors.As(err, &e) || e.Code != "vhd-bat-past-eof" || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("lookup: %v", err)
	}
}

func TestV1CompactLayout(t *testing.T) {
	f, parent := v1CompactDiff(t, 16*KiB, 1024, []int64{0, 3})
	bk, err := openVHD(f, "compact.avhd", true)
	if err != nil {
		t.Fatal(err)
	}
	loc := bk.parentLocator()
	if loc.RelativePath != `.\parent.vhd` || loc.AbsolutePath != `C:\VMs\parent.vhd` || loc.ParentName != "parent.vhd" {
		t.Errorf("locator %+v", loc)
	}
	want := append([]byte(nil), parent...)
	copy(want[0:], v1Pattern(1, 1024))
	copy(want[3*1024:], v1Pattern(2, 1024))
	v1Equal(t, "compact", v1ReadAll(t, bk, f, parent), want)
	fs, err := bk.check()
	if err != nil || len(fs) != 0 {
		t.Errorf("check %v %+v", err, fs)
	}
	// Paths that fit the 512-byte slots are rewritten (in place, since
	// there is no free room); longer ones are refused.
	if err := bk.setParent(&NewParent{Name: "p2.vhd", RelativePath: `.\p2.vhd`, AbsolutePath: `C:\p2.vhd`}); err != nil {
		t.Fatal(err)
	}
	if l := bk.parentLocator(); l.RelativePath != `.\p2.vhd` || l.AbsolutePath != `C:\p2.vhd` || l.ParentName != "p2.vhd" {
		t.Errorf("after setParent: %+v", l)
	}
	err = bk.setParent(&NewParent{RelativePath: `.\` + string(bytes.Repeat([]byte("a"), 600))})
	var e *Error
	if !errors.As(err, &e) || e.Code != "vhd-locator-no-space" || !errors.Is(err, ErrUnsupported) {
		t.Errorf("long path: %v", err)
	}
	bk2, err := openVHD(f, "compact.avhd", false)
	if err != nil {
		t.Fatal(err)
	}
	if l := bk2.parentLocator(); l.RelativePath != `.\p2.vhd` {
		t.Errorf("reopened: %+v", l)
	}
	v1Equal(t, "compact after setParent", v1ReadAll(t, bk2, f, parent), want)
}

// TestV1CrashSafety interrupts block allocations (and a bitmap update) at
// every mutating operation; the file must always reopen cleanly and show
// either the old or the new data.
func TestV1CrashSafety(t *testing.T) {
	type scenario struct {
		name string
		diff bool
		off  int64
		n    int
	}
	bs := int64(512 * KiB)
	for _, sc := range []scenario{
		{"dynamic new block", false, 2*bs + 5*512, 3 * 512},
		{"dynamic new block whole", false, 3 * bs, int(bs)},
		{"dynamic two new blocks", false, 4*bs - 4096, 8192},
		{"differencing new block partial", true, 2*bs + 5*512, 3 * 512},
		{"differencing bitmap update", true, 0*bs + 37*512, 2 * 512},
		{"differencing in place", true, 0, 4096},
	} {
		t.Run(sc.name, func(t *testing.T) {
			dir := t.TempDir()
			size := int64(8 * bs)
			var path string
			var pdata []byte
			if sc.diff {
				_, path, pdata = v1MakeChain(t, dir, size, uint32(bs))
				// Block 0 of the child holds its first 8 sectors.
				im, err := Open(path, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := im.b.writeAt(v1Pattern(9, 4096), 0, bytes.NewReader(pdata)); err != nil {
					t.Fatal(err)
				}
				im.Close()
			} else {
				path = filepath.Join(dir, "d.vhd")
				im, err := Create(path, CreateSpec{Format: FormatVHD, Size: size, BlockSize: uint32(bs)}, nil)
				if err != nil {
					t.Fatal(err)
				}
				im.b.writeAt(v1Pattern(9, 4096), 0, nil)
				im.Close()
			}
			baseline := v1ReadFile(t, path)
			var pr *bytes.Reader
			if pdata != nil {
				pr = bytes.NewReader(pdata)
			}
			view := func() []byte {
				im, err := Open(path, &Options{ReadOnly: true})
				if err != nil {
					t.Fatalf("reopen: %v", err)
				}
				defer im.Close()
				fs, err := im.Check()
				if err != nil {
					t.Fatal(err)
				}
				v1NoErrors(t, fs)
				return v1ReadAll(t, im.b, im.f, pdata)
			}
			if err := os.WriteFile(path, baseline, 0o644); err != nil {
				t.Fatal(err)
			}
			old := view()
			data := v1Rand(77, sc.n)
			newView := append([]byte(nil), old...)
			copy(newView[sc.off:], data)
			for n := 0; ; n++ {
				if n > 200 {
					t.Fatal("no end")
				}
				if err := os.WriteFile(path, baseline, 0o644); err != nil {
					t.Fatal(err)
				}
				raw, err := openFile(path, true)
				if err != nil {
					t.Fatal(err)
				}
				budget := &faultBudget{Limit: n}
				bk, err := openVHD(budget.wrap()(raw), path, true)
				if err != nil {
					t.Fatal(err)
				}
				var parent io.ReaderAt
				if pr != nil {
					parent = pr
				}
				werr := bk.writeAt(data, sc.off, parent)
				if werr == nil {
					werr = bk.flush()
				}
				raw.Close()
				if werr != nil && !errors.Is(werr, errInjected) {
					t.Fatalf("budget %d: %v", n, werr)
				}
				got := view()
				isNew := bytes.Equal(got, newView)
				// Each block the write touches is entirely old or entirely
				// new (a write over two blocks is two allocations).
				for b0 := sc.off / bs * bs; b0 < sc.off+int64(sc.n); b0 += bs {
					s, e := max(b0, sc.off), min(b0+bs, sc.off+int64(sc.n))
					if !bytes.Equal(got[s:e], old[s:e]) && !bytes.Equal(got[s:e], newView[s:e]) {
						t.Fatalf("budget %d: block at %d shows neither the old nor the new data", n, b0)
					}
				}
				if !bytes.Equal(got[:sc.off], old[:sc.off]) || !bytes.Equal(got[sc.off+int64(sc.n):], old[sc.off+int64(sc.n):]) {
					t.Fatalf("budget %d: data outside the written range changed", n)
				}
				if werr == nil {
					if !isNew {
						t.Fatalf("budget %d: write succeeded but the new data is not visible", n)
					}
					t.Logf("%d mutating operations", budget.Count)
					break
				}
			}
		})
	}
}

// A folder given as a disk is named as one, not as a file without a
// signature.
func TestOpenDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "x.vhdx")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{true, false} {
		_, err := Open(dir, &Options{ReadOnly: ro})
		if err == nil || !strings.Contains(err.Error(), dir+": is a directory") {
			t.Errorf("read-only %v: %v", ro, err)
		}
	}
}
