package vhd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// chainSpec is one kind of chain the model test builds.
type chainSpec struct {
	format Format
	lss    uint32
	base   DiskType
	bs     []uint32 // block size per layer (cycled)
}

// model is the expected content of the virtual disk at the leaf.
type model struct{ data []byte }

// randomWrite writes a random range into the chain's leaf and the model.
func randomWrite(t *testing.T, rng *rand.Rand, c *Chain, m *model) {
	t.Helper()
	size := int64(len(m.data))
	ss := c.SectorSize()
	var off, n int64
	switch rng.Intn(5) {
	case 0: // one sector, aligned
		off = rng.Int63n(size/ss) * ss
		n = ss
	case 1: // unaligned, small
		off = rng.Int63n(size - 1)
		n = 1 + rng.Int63n(min(3000, size-off))
	case 2: // partial block, aligned start
		off = rng.Int63n(size/ss) * ss
		n = min(ss*(1+rng.Int63n(300)), size-off)
	case 3: // crossing a block boundary (1 MiB multiples cover every block size used)
		b := (1 + rng.Int63n(size/MiB-1)) * MiB
		off = b - ss*(1+rng.Int63n(16)) - rng.Int63n(ss)
		n = min(ss*(2+rng.Int63n(64)), size-off)
	default: // large, unaligned
		off = rng.Int63n(size - 1)
		n = min(1+rng.Int63n(3*MiB), size-off)
	}
	p := make([]byte, n)
	rng.Read(p)
	if rng.Intn(6) == 0 {
		clear(p) // zero writes must still override the parent
	}
	if _, err := c.WriteAt(p, off); err != nil {
		t.Fatalf("write %d@%d into %s: %v", n, off, c.Leaf().Path(), err)
	}
	copy(m.data[off:], p)
}

// compareChain reads the whole chain (in odd-sized pieces) and compares with the model.
func compareChain(t *testing.T, r io.ReaderAt, m *model, what string) {
	t.Helper()
	got := make([]byte, len(m.data))
	step := 777*1024 + 512 + 3
	for off := 0; off < len(got); off += step {
		end := min(off+step, len(got))
		n, err := r.ReadAt(got[off:end], int64(off))
		if err != nil && !(err == io.EOF && end == len(got)) {
			t.Fatalf("%s: read at %d: %v", what, off, err)
		}
		if n != end-off {
			t.Fatalf("%s: short read at %d: %d", what, off, n)
		}
	}
	if !bytes.Equal(got, m.data) {
		for i := range got {
			if got[i] != m.data[i] {
				t.Fatalf("%s: content differs from the model first at byte %d (got %#x want %#x)", what, i, got[i], m.data[i])
			}
		}
	}
}

func TestChainModel(t *testing.T) {
	specs := []chainSpec{
		{FormatVHD, 512, TypeDynamic, []uint32{2 * MiB, 512 * KiB, 4 * MiB}},
		{FormatVHD, 512, TypeFixed, []uint32{2 * MiB}},
		{FormatVHDX, 512, TypeDynamic, []uint32{32 * MiB, 1 * MiB, 2 * MiB}},
		{FormatVHDX, 4096, TypeDynamic, []uint32{2 * MiB, 1 * MiB}},
		{FormatVHDX, 512, TypeFixed, []uint32{2 * MiB, 8 * MiB}},
	}
	for si, sp := range specs {
		sp := sp
		t.Run(fmt.Sprintf("%s-%d-%s", sp.format, sp.lss, sp.base), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewSource(int64(42 + si)))
			depth := 1 + rng.Intn(6)
			if si == 0 || si == 2 {
				depth = 6
			}
			dir := t.TempDir()
			size := int64(40*MiB + 8*int64(sp.lss))
			m := &model{data: make([]byte, size)}
			ext := map[Format]string{FormatVHD: ".vhd", FormatVHDX: ".vhdx"}[sp.format]
			aext := map[Format]string{FormatVHD: ".avhd", FormatVHDX: ".avhdx"}[sp.format]
			prev := filepath.Join(dir, "base"+ext)
			im, err := Create(prev, CreateSpec{Format: sp.format, Type: sp.base, Size: size, BlockSize: sp.bs[0], LogicalSectorSize: sp.lss}, nil)
			if err != nil {
				t.Fatal(err)
			}
			im.Close()
			for layer := 0; layer < depth; layer++ {
				path := prev
				if layer > 0 {
					path = filepath.Join(dir, fmt.Sprintf("base_%d%s", layer, aext))
					im, err := Create(path, CreateSpec{Format: sp.format, Parent: prev, BlockSize: sp.bs[layer%len(sp.bs)]}, nil)
					if err != nil {
						t.Fatalf("layer %d: %v", layer, err)
					}
					if im.Info().Type != TypeDifferencing {
						t.Fatalf("layer %d: type %s", layer, im.Info().Type)
					}
					im.Close()
				}
				c, err := OpenChain(path, nil)
				if err != nil {
					t.Fatalf("open chain at layer %d: %v", layer, err)
				}
				if len(c.Layers) != layer+1 {
					t.Fatalf("chain has %d layers, want %d", len(c.Layers), layer+1)
				}
				for w := 0; w < 12; w++ {
					randomWrite(t, rng, c, m)
				}
				compareChain(t, c, m, fmt.Sprintf("layer %d before close", layer))
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				prev = path
			}
			// Reopen read-only: the same content; the structure checks clean.
			c, err := OpenChain(prev, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			compareChain(t, c, m, "reopened chain")
			fs, err := c.Check()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fs {
				if f.Severity == SevError {
					t.Errorf("check: %+v", f)
				}
			}
			// Flatten to each output kind and compare again.
			outs := []ConvertOptions{{Format: FormatRaw}, {Format: sp.format, Type: TypeDynamic}}
			if sp.format == FormatVHDX {
				outs = append(outs, ConvertOptions{Format: FormatVHDX, Type: TypeFixed})
			} else {
				outs = append(outs, ConvertOptions{Format: FormatVHD, Type: TypeFixed})
			}
			for i, o := range outs {
				dst := filepath.Join(dir, fmt.Sprintf("flat%d.%s", i, o.Format))
				res, err := Convert(c, dst, o, nil)
				if err != nil {
					t.Fatalf("convert %+v: %v", o, err)
				}
				if res.VirtualSize != size {
					t.Fatalf("convert: virtual size %d", res.VirtualSize)
				}
				if o.Format == FormatRaw {
					raw, err := os.ReadFile(dst)
					if err != nil {
						t.Fatal(err)
					}
					compareChain(t, bytes.NewReader(raw), m, "raw output")
					continue
				}
				fc, err := OpenChain(dst, &Options{ReadOnly: true})
				if err != nil {
					t.Fatalf("open converted %s: %v", dst, err)
				}
				if len(fc.Layers) != 1 || fc.Leaf().Info().Type != o.Type {
					t.Fatalf("converted: %d layers, type %s", len(fc.Layers), fc.Leaf().Info().Type)
				}
				compareChain(t, fc, m, "converted "+dst)
				fc.Close()
			}
			// libvhdi reads the same chain (its own parent resolution, by file
			// name in the child's folder).
			if mounted := vhdimountIfAvailable(t, prev); mounted != "" {
				f, err := os.Open(mounted)
				if err != nil {
					t.Fatal(err)
				}
				compareChain(t, f, m, "vhdimount view of "+prev)
				f.Close()
			}
			// WriteRaw streams the same bytes.
			var buf bytes.Buffer
			if err := WriteRaw(c, &buf, nil); err != nil {
				t.Fatal(err)
			}
			compareChain(t, bytes.NewReader(buf.Bytes()), m, "WriteRaw")
		})
	}
}

// buildPair makes base+child of format f in dir with data in both.
func buildPair(t *testing.T, dir string, f Format) (base, child string) {
	t.Helper()
	ext := map[Format]string{FormatVHD: ".vhd", FormatVHDX: ".vhdx"}[f]
	base = filepath.Join(dir, "base"+ext)
	child = filepath.Join(dir, "child.a"+ext[1:])
	im, err := Create(base, CreateSpec{Format: f, Size: 8 * MiB}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &Chain{Layers: []*Image{im}}
	if _, err := c.WriteAt(bytes.Repeat([]byte{0xB1}, 1*MiB), 0); err != nil {
		t.Fatal(err)
	}
	im.Close()
	ci, err := Create(child, CreateSpec{Format: f, Parent: base}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ci.Close()
	ch, err := OpenChain(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.WriteAt(bytes.Repeat([]byte{0xC2}, 4096), 512*KiB); err != nil {
		t.Fatal(err)
	}
	ch.Close()
	return base, child
}

func expectCode(t *testing.T, err error, sentinel error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected %v, got no error", sentinel)
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("expected %v, got %v", sentinel, err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("expected code %q, got %v (%#v)", code, err, e)
	}
}

func TestParentResolution(t *testing.T) {
	for _, f := range []Format{FormatVHD, FormatVHDX} {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			base, child := buildPair(t, dir, f)
			readAt := func(c *Chain, off int64) byte {
				b := make([]byte, 1)
				if _, err := c.ReadAt(b, off); err != nil {
					t.Fatal(err)
				}
				return b[0]
			}
			// Relative path.
			c, err := OpenChain(child, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if c.Links[0].Via != "relative_path" || !c.Links[0].LinkageOK {
				t.Fatalf("link %+v", c.Links[0])
			}
			if readAt(c, 0) != 0xB1 || readAt(c, 512*KiB) != 0xC2 || readAt(c, 2*MiB) != 0 {
				t.Fatal("chain content wrong")
			}
			c.Close()

			// Both moved to another folder: relative path still works.
			d2 := filepath.Join(dir, "moved")
			os.Mkdir(d2, 0o755)
			nb, nc := filepath.Join(d2, filepath.Base(base)), filepath.Join(d2, filepath.Base(child))
			os.Rename(base, nb)
			os.Rename(child, nc)
			c, err = OpenChain(nc, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			c.Close()

			// Parent moved elsewhere: not found, naming what was tried.
			d3 := filepath.Join(dir, "elsewhere")
			os.Mkdir(d3, 0o755)
			fb := filepath.Join(d3, filepath.Base(base))
			os.Rename(nb, fb)
			_, err = OpenChain(nc, &Options{ReadOnly: true})
			expectCode(t, err, ErrParentNotFound, "parent-missing")

			// Reparent to the new place; the chain opens again with the same content.
			res, err := Reparent(nc, fb, ReparentOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !res.LinkageOK {
				t.Fatal("linkage should match")
			}
			c, err = OpenChain(nc, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if readAt(c, 0) != 0xB1 || readAt(c, 512*KiB) != 0xC2 {
				t.Fatal("content after reparent")
			}
			c.Close()

			// An impostor parent with the same name: linkage mismatch.
			imp := filepath.Join(dir, "imp")
			os.Mkdir(imp, 0o755)
			impBase := filepath.Join(imp, filepath.Base(base))
			im, err := Create(impBase, CreateSpec{Format: f, Size: 8 * MiB}, nil)
			if err != nil {
				t.Fatal(err)
			}
			im.Close()
			_, err = Reparent(nc, impBase, ReparentOptions{})
			expectCode(t, err, ErrParentMismatch, "linkage-mismatch")
			os.Rename(fb, fb+".away")
			os.Rename(impBase, fb)
			_, err = OpenChain(nc, &Options{ReadOnly: true})
			expectCode(t, err, ErrParentMismatch, "linkage-mismatch")
			// IgnoreLinkage opens it, reporting the mismatch.
			c, err = OpenChain(nc, &Options{ReadOnly: true, IgnoreLinkage: true})
			if err != nil {
				t.Fatal(err)
			}
			if c.Links[0].LinkageOK || len(c.Warnings) == 0 {
				t.Fatalf("mismatch not reported: %+v %+v", c.Links, c.Warnings)
			}
			c.Close()
			fs, err := Check(nc, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !hasFinding(fs, "linkage-mismatch") {
				t.Fatalf("check findings %+v", fs)
			}
			os.Rename(fb, impBase)
			os.Rename(fb+".away", fb)

			// Path map: the absolute Windows path resolves through the map.
			pm := PathMap{{Windows: `E:\Hyper-V\Disks`, Local: d3}}
			d4 := filepath.Join(dir, "children")
			os.Mkdir(d4, 0o755)
			c4 := filepath.Join(d4, "c4.a"+string(f))
			ci, err := Create(c4, CreateSpec{Format: f, Parent: fb}, &Options{PathMap: pm})
			if err != nil {
				t.Fatal(err)
			}
			loc := ci.Parent()
			ci.Close()
			if loc.AbsolutePath != `E:\Hyper-V\Disks\`+filepath.Base(base) {
				t.Fatalf("absolute path %q", loc.AbsolutePath)
			}
			// Move the child away so the relative path breaks; the map finds the parent.
			d5 := filepath.Join(dir, "deep", "er")
			os.MkdirAll(d5, 0o755)
			c5 := filepath.Join(d5, filepath.Base(c4))
			os.Rename(c4, c5)
			c, err = OpenChain(c5, &Options{ReadOnly: true, PathMap: pm})
			if err != nil {
				t.Fatal(err)
			}
			if c.Links[0].Via != "absolute_path" {
				t.Fatalf("via %s", c.Links[0].Via)
			}
			c.Close()
			if _, err := OpenChain(c5, &Options{ReadOnly: true}); !errors.Is(err, ErrParentNotFound) {
				t.Fatalf("without map: %v", err)
			}
			// File name in the child's folder (what vhdimount does).
			cp := filepath.Join(d3, "copy-of-child.a"+string(f))
			data, _ := os.ReadFile(c5)
			os.WriteFile(cp, data, 0o644)
			c, err = OpenChain(cp, &Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if c.Links[0].Via != "relative_path" && c.Links[0].Via != "file_name" {
				t.Fatalf("via %s", c.Links[0].Via)
			}
			c.Close()

			// Format mismatch is refused at creation.
			other := map[Format]Format{FormatVHD: FormatVHDX, FormatVHDX: FormatVHD}[f]
			_, err = Create(filepath.Join(dir, "x.bad"), CreateSpec{Format: other, Parent: fb}, nil)
			if !errors.Is(err, ErrFormatMismatch) {
				t.Fatalf("format mismatch: %v", err)
			}
		})
	}
}

func hasFinding(fs []Finding, code string) bool {
	for _, f := range fs {
		if f.Code == code {
			return true
		}
	}
	return false
}

func TestChainCycleAndDepth(t *testing.T) {
	for _, f := range []Format{FormatVHD, FormatVHDX} {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			base, x := buildPair(t, dir, f)
			y := filepath.Join(dir, "y.a"+string(f))
			im, err := Create(y, CreateSpec{Format: f, Parent: x}, nil)
			if err != nil {
				t.Fatal(err)
			}
			im.Close()
			// Depth guard.
			_, err = OpenChain(y, &Options{ReadOnly: true, MaxDepth: 2})
			expectCode(t, err, ErrChainTooDeep, "chain-too-deep")
			// Point x at y: x → y → x.
			if _, err := Reparent(x, y, ReparentOptions{IgnoreIDMismatch: true}); err != nil {
				t.Fatal(err)
			}
			_, err = OpenChain(y, &Options{ReadOnly: true})
			expectCode(t, err, ErrChainCycle, "chain-cycle")
			fs, err := Check(y, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !hasFinding(fs, "chain-cycle") {
				t.Fatalf("findings %+v", fs)
			}
			// A missing parent is a finding, not an error.
			os.Remove(base)
			os.Remove(x)
			fs, err = Check(y, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !hasFinding(fs, "parent-missing") {
				t.Fatalf("findings %+v", fs)
			}
		})
	}
}

func TestFindChildrenAndCheckMissingFile(t *testing.T) {
	dir := t.TempDir()
	base, child := buildPair(t, dir, FormatVHDX)
	kids, err := FindChildren(base, []string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(kids) != 1 || kids[0] != child {
		t.Fatalf("children %v", kids)
	}
	if kids, _ := FindChildren(child, []string{dir}, nil); len(kids) != 0 {
		t.Fatalf("child has children %v", kids)
	}
	if _, err := Check(filepath.Join(dir, "nope.vhdx"), nil); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	// Not an image at all.
	junk := filepath.Join(dir, "junk.vhdx")
	os.WriteFile(junk, bytes.Repeat([]byte("x"), 4096), 0o644)
	_, err = Open(junk, &Options{ReadOnly: true})
	expectCode(t, err, ErrNotImage, "not-image")
}

func TestPathMap(t *testing.T) {
	m1, err := ParsePathMapping(`C:\VMs\=/mnt/c/VMs`)
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := ParsePathMapping(`C:\VMs\Big=/mnt/big`)
	pm := PathMap{m1, m2}
	for in, want := range map[string]string{
		`C:\VMs\a\b.vhdx`:    "/mnt/c/VMs/a/b.vhdx",
		`c:\vms\A.vhdx`:      "/mnt/c/VMs/A.vhdx",
		`\\?\C:\VMs\x.vhdx`:  "/mnt/c/VMs/x.vhdx",
		`C:\VMs\Big\d.vhdx`:  "/mnt/big/d.vhdx",
		`C:\VMsOther\d.vhdx`: "",
		`D:\VMs\d.vhdx`:      "",
	} {
		got, ok := pm.ToLocal(in)
		if (want == "") == ok || got != want {
			t.Errorf("ToLocal(%q) = %q,%v want %q", in, got, ok, want)
		}
	}
	if w, ok := pm.ToWindows("/mnt/big/x/y.vhdx"); !ok || w != `C:\VMs\Big\x\y.vhdx` {
		t.Errorf("ToWindows = %q %v", w, ok)
	}
	// A drive-root mapping (`E:=/mnt/e`, normalized to "E:") maps back.
	if runtime.GOOS != "windows" {
		me, err := ParsePathMapping(`E:\=/mnt/e`)
		if err != nil {
			t.Fatal(err)
		}
		for in, want := range map[string]string{"/mnt/e/VMs/a.vhdx": `E:\VMs\a.vhdx`, "/mnt/e": `E:\`} {
			if w, ok := (PathMap{me}).ToWindows(in); !ok || w != want {
				t.Errorf("ToWindows(%q) = %q %v, want %q", in, w, ok, want)
			}
		}
	}
	if _, err := ParsePathMapping("nothing"); err == nil {
		t.Error("bad mapping accepted")
	}
	if r, _ := winRelative("/a/b/c.avhdx", "/a/d/p.vhdx"); r != `..\d\p.vhdx` {
		t.Errorf("relative %q", r)
	}
	if r, _ := winRelative("/a/b/c.avhdx", "/a/b/p.vhdx"); r != `.\p.vhdx` {
		t.Errorf("relative %q", r)
	}
}

func TestGUID(t *testing.T) {
	g, err := ParseGUID("{49C4BAF3-4B25-4406-8C4B-D39E65C32385}")
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0xF3, 0xBA, 0xC4, 0x49, 0x25, 0x4B, 0x06, 0x44, 0x8C, 0x4B, 0xD3, 0x9E, 0x65, 0xC3, 0x23, 0x85}
	if !bytes.Equal(g[:], want) {
		t.Fatalf("layout % x", g[:])
	}
	if g.String() != "49C4BAF3-4B25-4406-8C4B-D39E65C32385" || g.Linkage() != "{49c4baf3-4b25-4406-8c4b-d39e65c32385}" {
		t.Fatal(g.String(), g.Linkage())
	}
	if _, err := ParseGUID("49C4BAF3-4B25"); err == nil {
		t.Fatal("short GUID accepted")
	}
	n := NewGUID()
	if n.IsZero() || n[7]>>4 != 4 {
		t.Fatalf("NewGUID % x", n[:])
	}
}

// vhdimountIfAvailable mounts path with vhdimount when the oracle is usable
// and returns the chain view, or "" (logging why) when it is not.
func vhdimountIfAvailable(t *testing.T, path string) string {
	t.Helper()
	if _, err := exec.LookPath("vhdimount"); err != nil {
		t.Log("vhdimount not installed (libvhdi-utils): libvhdi cross-check skipped")
		return ""
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Log("FUSE not available: libvhdi cross-check skipped")
		return ""
	}
	return vhdimount(t, path)
}
