package merge

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vhd"
)

const MiB = 1 << 20

// bigVolumes reports one roomy volume for every path (planning tests that
// are not about space).
var bigVolumes = space.StaticVolumes{{Mount: "/", Size: 1 << 50, Free: 1 << 49}}

// layerSpec is one disk of a test chain.
type layerSpec struct {
	name   string
	spec   vhd.CreateSpec
	writes int // random writes
	zero   bool
}

// model is the expected content of a chain, kept in memory.
type model struct{ data []byte }

func writeRandom(t *testing.T, path string, m *model, rng *rand.Rand, n int, ss int64) {
	t.Helper()
	c, err := vhd.OpenChain(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	size := c.Size()
	for i := 0; i < n; i++ {
		var off, ln int64
		switch rng.Intn(4) {
		case 0: // one sector
			off = rng.Int63n(size/ss) * ss
			ln = ss
		case 1: // unaligned few bytes
			off = rng.Int63n(size - 4096)
			ln = 1 + rng.Int63n(3000)
		case 2: // block-crossing
			off = (rng.Int63n(size/(2*MiB))+1)*2*MiB - int64(rng.Intn(64<<10)) - 1
			ln = int64(rng.Intn(256<<10)) + 1
		default: // a large piece
			off = rng.Int63n(size/ss) * ss
			ln = int64(rng.Intn(3*MiB)) + ss
		}
		if off+ln > size {
			ln = size - off
		}
		buf := make([]byte, ln)
		if rng.Intn(5) > 0 {
			rng.Read(buf)
		}
		if _, err := c.WriteAt(buf, off); err != nil {
			t.Fatalf("write %s at %d+%d: %v", path, off, ln, err)
		}
		copy(m.data[off:], buf)
	}
}

func chainBytes(t *testing.T, path string) []byte {
	t.Helper()
	c, err := vhd.OpenChain(path, &vhd.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open chain %s: %v", path, err)
	}
	defer c.Close()
	b := make([]byte, c.Size())
	if _, err := c.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return -1
}

// buildChain creates the layers (base first) in dir, writing random data
// into each, and returns their paths (base first) and the model of each
// layer's chain view.
func buildChain(t *testing.T, dir string, layers []layerSpec, seed int64) ([]string, []*model) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	var paths []string
	var models []*model
	for i, l := range layers {
		p := filepath.Join(dir, l.name)
		spec := l.spec
		if i > 0 && spec.Parent == "" {
			spec.Parent = paths[i-1]
		}
		spec = fillSpec(p, spec)
		im, err := vhd.Create(p, spec, nil)
		if err != nil {
			t.Fatalf("create %s: %v", p, err)
		}
		size := im.VirtualSize()
		ss := im.SectorSize()
		im.Close()
		m := &model{}
		if i == 0 {
			m.data = make([]byte, size)
		} else {
			m.data = append([]byte(nil), models[i-1].data...)
		}
		writeRandom(t, p, m, rng, l.writes, ss)
		paths = append(paths, p)
		models = append(models, m)
	}
	return paths, models
}

func checkClean(t *testing.T, path string) {
	t.Helper()
	fs, err := vhd.Check(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if f.Severity == vhd.SevError {
			t.Errorf("check %s: %v", path, f)
		}
	}
}

func TestMergeMatrix(t *testing.T) {
	vhdx := func(typ vhd.DiskType, bs uint32, ss uint32) vhd.CreateSpec {
		return vhd.CreateSpec{Format: vhd.FormatVHDX, Type: typ, Size: 48 * MiB, BlockSize: bs, LogicalSectorSize: ss}
	}
	v1 := func(typ vhd.DiskType, bs uint32) vhd.CreateSpec {
		return vhd.CreateSpec{Format: vhd.FormatVHD, Type: typ, Size: 48 * MiB, BlockSize: bs}
	}
	diffX := func(bs uint32) vhd.CreateSpec {
		return vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, BlockSize: bs}
	}
	diffV := func(bs uint32) vhd.CreateSpec {
		return vhd.CreateSpec{Format: vhd.FormatVHD, Type: vhd.TypeDifferencing, BlockSize: bs}
	}
	cases := []struct {
		name   string
		layers []layerSpec
		into   int // index of the ancestor (base first); -1 = parent of the leaf
	}{
		{"vhdx-dynamic-parent", []layerSpec{{"base.vhdx", vhdx(vhd.TypeDynamic, 1*MiB, 512), 20, false}, {"c.avhdx", diffX(2 * MiB), 30, false}}, -1},
		{"vhdx-dynamic-parent-4k", []layerSpec{{"base.vhdx", vhdx(vhd.TypeDynamic, 8*MiB, 4096), 20, false}, {"c.avhdx", diffX(1 * MiB), 30, false}}, -1},
		{"vhdx-fixed-parent", []layerSpec{{"base.vhdx", vhdx(vhd.TypeFixed, 0, 512), 10, false}, {"c.avhdx", diffX(2 * MiB), 30, false}}, -1},
		{"vhdx-diff-parent", []layerSpec{{"base.vhdx", vhdx(vhd.TypeDynamic, 2*MiB, 512), 20, false}, {"p.avhdx", diffX(4 * MiB), 20, false}, {"c.avhdx", diffX(1 * MiB), 30, false}}, -1},
		{"vhdx-empty-child", []layerSpec{{"base.vhdx", vhdx(vhd.TypeDynamic, 2*MiB, 512), 20, false}, {"c.avhdx", diffX(2 * MiB), 0, false}}, -1},
		{"vhdx-chain-into-base", []layerSpec{{"base.vhdx", vhdx(vhd.TypeDynamic, 2*MiB, 512), 10, false}, {"a.avhdx", diffX(2 * MiB), 10, false}, {"b.avhdx", diffX(1 * MiB), 10, false}, {"c.avhdx", diffX(4 * MiB), 10, false}}, 0},
		{"vhd-dynamic-parent", []layerSpec{{"base.vhd", v1(vhd.TypeDynamic, 2*MiB), 20, false}, {"c.avhd", diffV(512 << 10), 30, false}}, -1},
		{"vhd-fixed-parent", []layerSpec{{"base.vhd", v1(vhd.TypeFixed, 0), 10, false}, {"c.avhd", diffV(2 * MiB), 30, false}}, -1},
		{"vhd-diff-parent", []layerSpec{{"base.vhd", v1(vhd.TypeDynamic, 1*MiB), 20, false}, {"p.avhd", diffV(2 * MiB), 20, false}, {"c.avhd", diffV(512 << 10), 30, false}}, -1},
		{"vhd-chain-into-base", []layerSpec{{"base.vhd", v1(vhd.TypeDynamic, 2*MiB), 10, false}, {"a.avhd", diffV(2 * MiB), 10, false}, {"c.avhd", diffV(1 * MiB), 10, false}}, 0},
	}
	for ci, tc := range cases {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			paths, models := buildChain(t, dir, tc.layers, int64(ci+1))
			leaf := paths[len(paths)-1]
			want := models[len(models)-1].data
			if got := chainBytes(t, leaf); !bytes.Equal(got, want) {
				t.Fatalf("model mismatch before the merge at %d", firstDiff(got, want))
			}
			// A grandchild on top of the leaf keeps its view through a
			// single-step merge (it gets re-pointed).
			var gc string
			if tc.into < 0 {
				gc = filepath.Join(dir, "gc"+filepath.Ext(leaf))
				im, err := vhd.Create(gc, fillSpec(gc, vhd.CreateSpec{Parent: leaf}), nil)
				if err != nil {
					t.Fatal(err)
				}
				im.Close()
			}
			o := &Options{Volumes: bigVolumes, Roots: []string{dir}}
			target := paths[len(paths)-2]
			if tc.into >= 0 {
				o.Into = paths[tc.into]
				target = paths[tc.into]
			}
			parentBefore := fileSize(target)
			p, err := PlanMerge(leaf, o)
			if err != nil {
				t.Fatalf("plan: %v", err)
			}
			wantSteps := len(paths) - 1 - max(tc.into, len(paths)-2)
			if tc.into >= 0 {
				wantSteps = len(paths) - 1 - tc.into
			}
			if len(p.Steps) != wantSteps {
				t.Fatalf("plan has %d steps, want %d", len(p.Steps), wantSteps)
			}
			var growth int64
			for _, s := range p.Steps {
				growth += s.Growth
			}
			res, err := Run(p, o, nil)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			for _, s := range p.Steps {
				if _, err := os.Stat(s.Child); !os.IsNotExist(err) {
					t.Errorf("merged file %s still exists", s.Child)
				}
			}
			if got := chainBytes(t, target); !bytes.Equal(got, want) {
				t.Fatalf("merged %s differs from the chain before the merge at byte %d", target, firstDiff(got, want))
			}
			if gc != "" {
				if got := chainBytes(t, gc); !bytes.Equal(got, want) {
					t.Fatalf("grandchild view changed at %d", firstDiff(got, want))
				}
				checkClean(t, gc)
			}
			checkClean(t, target)
			// The predicted growth is the real growth (block allocation).
			real := fileSize(target) - parentBefore
			if real != res.Growth[target] {
				t.Errorf("result growth %d, file grew %d", res.Growth[target], real)
			}
			if !predictionMatches(growth, real, p) {
				t.Errorf("plan predicted growth %d, the file grew %d", growth, real)
			}
			if j, _ := filepath.Glob(filepath.Join(dir, ".hvsnap-*")); len(j) > 0 {
				t.Errorf("journal left behind: %v", j)
			}
			// libvhdi reads the merged result the same.
			if top := gc; top != "" {
				oracleCompare(t, top, want)
			} else {
				oracleCompare(t, target, want)
			}
		})
	}
}

// predictionMatches: a VHD appends blocks at a 4 KiB-aligned offset, so its
// per-block growth is an upper bound (bitmap + block + up to 3.5 KiB
// padding); VHDX growth is exact.
func predictionMatches(pred, real int64, p *Plan) bool {
	if p.Steps[0].Format == "vhdx" {
		return pred == real
	}
	return real <= pred && pred-real <= pred/8+4096
}

// oracleCompare reads path's chain with libvhdi (vhdimount) when available
// and compares it with want.
func oracleCompare(t *testing.T, path string, want []byte) {
	t.Helper()
	if _, err := exec.LookPath("vhdimount"); err != nil {
		t.Log("vhdimount not installed: libvhdi oracle skipped (apt-get install libvhdi-utils)")
		return
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Log("FUSE not available: libvhdi oracle skipped")
		return
	}
	mnt := t.TempDir()
	out, err := exec.Command("vhdimount", path, mnt).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "ermission") || strings.Contains(string(out), "not permitted") {
			t.Logf("FUSE mount not permitted: libvhdi oracle skipped: %s", out)
			return
		}
		t.Fatalf("vhdimount %s: %v\n%s", path, err, out)
	}
	defer exec.Command("fusermount", "-u", mnt).Run()
	ents, _ := os.ReadDir(mnt)
	best := ""
	bestN := 0
	for _, e := range ents {
		var n int
		if _, err := fmt.Sscanf(e.Name(), "vhdi%d", &n); err == nil && n > bestN {
			best, bestN = filepath.Join(mnt, e.Name()), n
		}
	}
	if best == "" {
		t.Fatalf("vhdimount %s: nothing mounted", path)
	}
	got, err := os.ReadFile(best)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("libvhdi reads %s differently at byte %d", path, firstDiff(got, want))
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestMergeRefusals(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, []layerSpec{
		{"base.vhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 16 * MiB, BlockSize: 1 * MiB}, 5, false},
		{"a.avhdx", vhd.CreateSpec{}, 5, false},
	}, 7)
	base, a := paths[0], paths[1]
	// A second child of base (another branch).
	b := filepath.Join(dir, "b.avhdx")
	if im, err := vhd.Create(b, fillSpec(b, vhd.CreateSpec{Parent: base}), nil); err != nil {
		t.Fatal(err)
	} else {
		im.Close()
	}
	o := &Options{Volumes: bigVolumes, Roots: []string{dir}}
	_, err := PlanMerge(a, o)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "b.avhdx") {
		t.Fatalf("shared parent: got %v", err)
	}
	os.Remove(b)

	// Not a differencing disk.
	if _, err := PlanMerge(base, o); !errors.Is(err, ErrRefused) {
		t.Fatalf("base: got %v", err)
	}
	// In use: a lock held elsewhere.
	p, err := PlanMerge(a, o)
	if err != nil {
		t.Fatal(err)
	}
	held := holdLock(t, base)
	if _, err := Run(p, o, nil); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("in use: got %v", err)
	}
	held()
	// Not enough space: nothing changes.
	before := sha(chainBytes(t, a))
	small := &Options{Volumes: space.StaticVolumes{{Mount: "/", Size: 100 * MiB, Free: 1 * MiB}, {Mount: "/big", Size: 1 << 40, Free: 1 << 39}}, Roots: []string{dir}}
	p, err = PlanMerge(a, small)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(p, small, nil)
	var ns *NoSpaceError
	if !errors.As(err, &ns) || !errors.Is(err, ErrNoSpace) {
		t.Fatalf("no space: got %v", err)
	}
	for _, want := range []string{"0x80070070", "not enough space", "/big", "hvsnap relocate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no-space error lacks %q: %v", want, err)
		}
	}
	if got := sha(chainBytes(t, a)); got != before {
		t.Fatal("refused merge changed the chain")
	}
	if _, err := os.Stat(a); err != nil {
		t.Fatal(err)
	}
	// Broken linkage: a replaced parent.
	os.Rename(base, base+".orig")
	if im, err := vhd.Create(base, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 16 * MiB}, nil); err != nil {
		t.Fatal(err)
	} else {
		im.Close()
	}
	if _, err := PlanMerge(a, o); !errors.Is(err, vhd.ErrParentMismatch) {
		t.Fatalf("broken linkage: got %v", err)
	}
	os.Rename(base+".orig", base)
	// An unfinished journal of another operation on the same files.
	jf := filepath.Join(dir, ".hvsnap-export-0123.journal")
	writeForeignJournal(t, jf, []string{base})
	if _, err := PlanMerge(a, o); !errors.Is(err, ErrBusy) {
		t.Fatalf("foreign journal: got %v", err)
	}
	os.Remove(jf)
	if _, err := PlanMerge(a, o); err != nil {
		t.Fatalf("after the journal is gone: %v", err)
	}
}

// fillSpec completes a spec like the CLI does: format from the extension,
// differencing when a parent is named.
func fillSpec(path string, s vhd.CreateSpec) vhd.CreateSpec {
	if s.Format == "" {
		s.Format, _ = vhd.FormatFromExt(path)
	}
	if s.Parent != "" {
		s.Type = vhd.TypeDifferencing
	}
	return s
}

// A parent made by qemu-img: its unwritten blocks are in the ZERO state
// (block_state_zero), and child data lands on them. Also a child with
// partially present VHD blocks over it is covered by the matrix above.
func TestMergeIntoQemuZeroBlocks(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed (apt-get install qemu-utils): ZERO-state parent test skipped")
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "seed.raw")
	rng := rand.New(rand.NewSource(42))
	content := make([]byte, 40*MiB)
	for i := 0; i < 6; i++ {
		off := rng.Intn(38) * MiB
		rng.Read(content[off : off+MiB+rng.Intn(MiB)])
	}
	if err := os.WriteFile(raw, content, 0o644); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base.vhdx")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic,block_size=1M", raw, base).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	im, err := vhd.Open(base, &vhd.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	im.Extents(func(r vhd.Run) error {
		if r.State == vhd.StateZero {
			zero += r.Len
		}
		return nil
	})
	im.Close()
	if zero == 0 {
		t.Fatal("qemu-img made no ZERO blocks: the test would not test them")
	}
	child := filepath.Join(dir, "c.avhdx")
	ci, err := vhd.Create(child, fillSpec(child, vhd.CreateSpec{Parent: base, BlockSize: 2 * MiB}), nil)
	if err != nil {
		t.Fatal(err)
	}
	ci.Close()
	m := &model{data: content}
	writeRandom(t, child, m, rng, 40, 512)
	if got := chainBytes(t, child); !bytes.Equal(got, m.data) {
		t.Fatal("model mismatch before merge")
	}
	o := &Options{Volumes: bigVolumes, Roots: []string{dir}}
	p, err := PlanMerge(child, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(p, o, nil); err != nil {
		t.Fatal(err)
	}
	if got := chainBytes(t, base); !bytes.Equal(got, m.data) {
		t.Fatalf("merged base differs at %d", firstDiff(got, m.data))
	}
	checkClean(t, base)
	// qemu-img reads the merged (hvsnap-written) base the same.
	out := filepath.Join(dir, "out.raw")
	if b, err := exec.Command("qemu-img", "convert", "-f", "vhdx", "-O", "raw", base, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v %s", err, b)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, m.data) {
		t.Fatalf("qemu-img reads the merged base differently at %d", firstDiff(got, m.data))
	}
	oracleCompare(t, base, m.data)
}

// failingFile fails every write from the n-th on (a crash in the middle of
// a VHDX log transaction leaves a dirty log).
type failingFile struct {
	vhd.File
	n *int
}

func (f failingFile) WriteAt(p []byte, off int64) (int, error) {
	*f.n--
	if *f.n < 0 {
		return 0, errors.New("injected crash")
	}
	return f.File.WriteAt(p, off)
}

// A child with a dirty log: the merge replays it first, and the result
// reads what the chain showed (log replayed).
func TestMergeDirtyLog(t *testing.T) {
	for n := 1; n < 40; n++ {
		dir := t.TempDir()
		paths, _ := buildChain(t, dir, []layerSpec{
			{"base.vhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 16 * MiB, BlockSize: 1 * MiB}, 4, false},
			{"c.avhdx", vhd.CreateSpec{BlockSize: 1 * MiB}, 4, false},
		}, 9)
		leaf := paths[1]
		left := n
		c, err := vhd.OpenChain(leaf, &vhd.Options{Wrap: func(f vhd.File) vhd.File { return failingFile{f, &left} }})
		if err != nil {
			t.Fatal(err)
		}
		c.WriteAt(bytes.Repeat([]byte{0xEE}, 3*MiB), 5*MiB) // fails part-way
		c.Close()
		im, err := vhd.Open(leaf, &vhd.Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		dirty := im.Info().LogReplayed
		im.Close()
		if !dirty {
			continue
		}
		want := chainBytes(t, leaf) // what readers see: the log replayed in memory
		o := &Options{Volumes: bigVolumes, Roots: []string{dir}}
		p, err := PlanMerge(leaf, o)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(strings.Join(p.Notes, " "), "dirty VHDX log") {
			t.Errorf("plan does not mention the dirty log: %v", p.Notes)
		}
		if _, err := Run(p, o, nil); err != nil {
			t.Fatal(err)
		}
		if got := chainBytes(t, paths[0]); !bytes.Equal(got, want) {
			t.Fatalf("merged base differs at %d", firstDiff(got, want))
		}
		checkClean(t, paths[0])
		return
	}
	t.Fatal("no write count left a dirty log: the test would not test it")
}

// A parent that does not read back what was merged (a data write to it
// damaged on the way, as a bad device or driver would) fails the
// verification: the child is kept and the chain reads as before.
func TestMergeVerifyCatchesBadParent(t *testing.T) {
	for _, nth := range []int{1, 3} { // the damaged write: pieces alternate between the verification workers
		t.Run(fmt.Sprintf("write-%d", nth), func(t *testing.T) {
			dir := t.TempDir()
			paths, models := buildChain(t, dir, []layerSpec{
				{"base.vhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 48 * MiB, BlockSize: 1 * MiB}, 20, false},
				{"c.avhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, BlockSize: 2 * MiB}, 30, false},
			}, 7)
			parent, leaf := paths[0], paths[1]
			want := models[1].data
			var n atomic.Int64
			o := &Options{Volumes: bigVolumes, Roots: []string{dir}, Wrap: func(f vhd.File) vhd.File {
				if canon(f.Name()) != canon(parent) {
					return f
				}
				return damagingFile{File: f, n: &n, nth: int64(nth)}
			}}
			p, err := PlanMerge(leaf, o)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Run(p, o, nil)
			if n.Load() < int64(nth) {
				t.Fatalf("only %d data writes to the parent; the test needs %d", n.Load(), nth)
			}
			if !errors.Is(err, ErrVerify) {
				t.Fatalf("merge with a damaged write: %v, want ErrVerify", err)
			}
			if _, err := os.Stat(leaf); err != nil {
				t.Fatalf("the child is gone after a failed verification: %v", err)
			}
			if got := chainBytes(t, leaf); !bytes.Equal(got, want) {
				t.Fatalf("chain through the kept child changed at byte %d", firstDiff(got, want))
			}
		})
	}
}

// damagingFile flips a byte in the nth data write (64 KiB or more).
type damagingFile struct {
	vhd.File
	n   *atomic.Int64
	nth int64
}

func (f damagingFile) WriteAt(p []byte, off int64) (int, error) {
	if len(p) >= 64<<10 && f.n.Add(1) == f.nth {
		q := append([]byte(nil), p...)
		q[len(q)/2] ^= 0xFF
		return f.File.WriteAt(q, off)
	}
	return f.File.WriteAt(p, off)
}

// --keep: the merged file stays, still a valid child of the merged parent
// (its linkage names the parent's new identity, not only linkage2, since
// libvhdi and older readers use parent_linkage alone), reading the same as
// before; the parent alone reads the same too.
func TestMergeKeep(t *testing.T) {
	for _, tc := range []struct {
		name   string
		layers []layerSpec
	}{
		{"vhdx", []layerSpec{{"base.vhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 32 * MiB, BlockSize: 2 * MiB}, 15, false}, {"c.avhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, BlockSize: 1 * MiB}, 20, false}}},
		{"vhd", []layerSpec{{"base.vhd", vhd.CreateSpec{Format: vhd.FormatVHD, Type: vhd.TypeDynamic, Size: 32 * MiB}, 15, false}, {"c.avhd", vhd.CreateSpec{Format: vhd.FormatVHD, Type: vhd.TypeDifferencing}, 20, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			paths, models := buildChain(t, dir, tc.layers, 7)
			base, child := paths[0], paths[1]
			want := models[1].data
			o := &Options{Volumes: bigVolumes, Roots: []string{dir}, Keep: true}
			p, err := PlanMerge(child, o)
			if err != nil {
				t.Fatal(err)
			}
			if !p.Keep || p.Steps[0].FreedBytes != 0 {
				t.Errorf("plan with Keep: keep %v, frees %d", p.Keep, p.Steps[0].FreedBytes)
			}
			res, err := Run(p, o, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Removed) != 0 {
				t.Errorf("removed %v with Keep", res.Removed)
			}
			if got := chainBytes(t, base); !bytes.Equal(got, want) {
				t.Fatalf("merged parent differs at %d", firstDiff(got, want))
			}
			if got := chainBytes(t, child); !bytes.Equal(got, want) {
				t.Fatalf("kept child's view differs at %d", firstDiff(got, want))
			}
			checkClean(t, child)
			checkClean(t, base)
			im, err := vhd.Open(child, &vhd.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			loc := im.Parent()
			link, err := im.ResolveParent(&vhd.Options{ReadOnly: true})
			im.Close()
			if err != nil || !link.LinkageOK {
				t.Fatalf("kept child's parent: %v %+v", err, link)
			}
			if tc.name == "vhdx" {
				pim, err := vhd.Open(base, &vhd.Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				g := pim.Info().DataWriteGUID
				pim.Close()
				if l, err := vhd.ParseGUID(loc.Linkage); err != nil || l != g {
					t.Errorf("kept child's parent_linkage %q, parent's DataWriteGuid %s", loc.Linkage, g)
				}
			}
			oracleCompare(t, child, want)
		})
	}
}

// Not enough space: the volumes offered for a relocation leave out the
// system's memory file systems (/dev/shm, /run, ...) whatever their free
// space, and the suggested command carries the plan's path mappings.
func TestNoSpaceRoomAndRelocCommand(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, []layerSpec{
		{"base.vhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 32 * MiB, BlockSize: 1 * MiB}, 2, false},
		{"c.avhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, BlockSize: 1 * MiB}, 20, false},
	}, 3)
	m, _ := vhd.ParsePathMapping(`C:\VMs=` + dir)
	o := &Options{Roots: []string{dir}, PathMap: vhd.PathMap{m}, Volumes: space.StaticVolumes{
		{Mount: "/", Free: 1 << 20, FSID: "1"}, {Mount: "/dev/shm", Free: 1 << 40, FSID: "2"},
		{Mount: "/run/user/0", Free: 1 << 40, FSID: "3"}, {Mount: "/srv", Free: 1 << 40, FSID: "4"}}}
	p, err := PlanMerge(paths[1], o)
	if err != nil {
		t.Fatal(err)
	}
	var ns *NoSpaceError
	if err := p.CheckSpace(o); !errors.As(err, &ns) {
		t.Fatalf("CheckSpace: %v", err)
	}
	if len(ns.Room) != 1 || ns.Room[0].Mount != "/srv" {
		t.Errorf("room: %+v", ns.Room)
	}
	// No VM configuration names the disk: the chain is moved alone.
	if !strings.Contains(ns.Reloc, "hvsnap export --path-map '"+m.String()+"' --to /srv/hvsnap-relocated/c.tar.lz4 "+paths[1]) || !strings.Contains(ns.Reloc, "hvsnap import --to /srv/hvsnap-relocated/c ") {
		t.Errorf("relocation command: %s", ns.Reloc)
	}
}

// A damaged child (a block table entry overlapping another block: an error
// for hvsnap check) is refused before anything is written, not merged as
// it reads and removed.
func TestMergeRefusesDamagedChild(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, []layerSpec{
		{"base.vhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 32 * MiB, BlockSize: 1 * MiB}, 4, false},
		{"c.avhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, BlockSize: 1 * MiB}, 20, false},
	}, 5)
	child := paths[1]
	damageBAT(t, child)
	before := map[string]string{}
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		before[p] = sha(b)
	}
	_, err := PlanMerge(child, &Options{Volumes: bigVolumes, Roots: []string{dir}})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), child) {
		t.Fatalf("merge of a damaged child: %v", err)
	}
	for _, p := range paths {
		if b, _ := os.ReadFile(p); sha(b) != before[p] {
			t.Errorf("%s changed", p)
		}
	}
}

// Merging a middle VHD re-points its child, whose own child records the
// re-pointed disk's modification time: that time is kept, so the
// grandchild's link stays exact (no parent-timestamp warning), also when
// the merge is stopped mid-re-point and resumed.
func TestMergeMiddleVHDKeepsTimestamps(t *testing.T) {
	dir := t.TempDir()
	v := func(typ vhd.DiskType) vhd.CreateSpec {
		return vhd.CreateSpec{Format: vhd.FormatVHD, Type: typ, Size: 16 * MiB}
	}
	paths, models := buildChain(t, dir, []layerSpec{{"base.vhd", v(vhd.TypeDynamic), 4, false}, {"d1.avhd", v(vhd.TypeDifferencing), 4, false},
		{"d2.avhd", v(vhd.TypeDifferencing), 4, false}, {"d3.avhd", v(vhd.TypeDifferencing), 4, false}}, 9)
	timestampWarnings := func() []vhd.Finding {
		fs, err := vhd.Check(paths[3], nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []vhd.Finding
		for _, f := range fs {
			if f.Code == "parent-timestamp" {
				out = append(out, f)
			}
		}
		return out
	}
	if w := timestampWarnings(); len(w) > 0 {
		t.Fatalf("before the merge: %v", w)
	}
	time.Sleep(1100 * time.Millisecond) // VHD timestamps are in seconds
	// Stopped right after d2 was rewritten, before its time was restored,
	// then resumed: the resume restores the time recorded in the plan.
	stop := true
	o := &Options{Volumes: bigVolumes, Roots: []string{dir}, Hook: func(pt string) {
		if stop && pt == "repointed:d2.avhd" {
			stop = false
			panic("stop")
		}
	}}
	p, err := PlanMerge(paths[1], o)
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { recover() }()
		Run(p, o, nil)
		t.Fatal("the hook did not stop the merge")
	}()
	time.Sleep(1100 * time.Millisecond)
	js, _ := FindJournals(dir)
	if len(js) != 1 {
		t.Fatalf("journals: %v", js)
	}
	if _, err := Resume(js[0], o, nil); err != nil {
		t.Fatal(err)
	}
	if w := timestampWarnings(); len(w) > 0 {
		t.Errorf("after merging d1: %v", w)
	}
	if got := chainBytes(t, paths[3]); !bytes.Equal(got, models[3].data) {
		t.Fatalf("d3's view changed at %d", firstDiff(got, models[3].data))
	}
}

// damageBAT copies the first fully present BAT entry of a small VHDX
// hvsnap wrote (its BAT is at 3 MiB) over the next entry: two blocks at one
// offset, an error for hvsnap check.
func damageBAT(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	bat := make([]byte, 8*32)
	if _, err := f.ReadAt(bat, 3*MiB); err != nil {
		t.Fatal(err)
	}
	var e []byte
	for i := 0; i+1 < 32; i++ {
		if bat[8*i]&7 == 6 {
			e = bat[8*i : 8*i+8]
			if _, err := f.WriteAt(e, 3*MiB+int64(8*(i+1))); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()
	damaged := false
	fs, _ := vhd.Check(path, nil)
	for _, f := range fs {
		damaged = damaged || (f.Severity == vhd.SevError && f.Path == path)
	}
	if !damaged {
		t.Fatalf("the damage was not made (entry %x, check %v)", e, fs)
	}
}

// A damaged child of the merged disk (re-pointed by the merge) is refused
// too: its parent link would be rewritten.
func TestMergeRefusesDamagedGrandchild(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, []layerSpec{
		{"base.vhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 32 * MiB, BlockSize: 1 * MiB}, 4, false},
		{"c.avhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, BlockSize: 1 * MiB}, 8, false},
		{"gc.avhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, BlockSize: 1 * MiB}, 20, false},
	}, 6)
	damageBAT(t, paths[2])
	_, err := PlanMerge(paths[1], &Options{Volumes: bigVolumes, Roots: []string{dir}})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), paths[2]) {
		t.Fatalf("merge with a damaged grandchild: %v", err)
	}
}
