package vhd

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestVXCrashSafety stops a block-allocating write after every possible
// number of mutating operations and checks that the file reopens (replaying
// its log), checks clean, and shows either all old or all new data.
func TestVXCrashSafety(t *testing.T) {
	for _, kind := range []string{"dynamic", "differencing", "partial-bits"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			size := int64(6 * MiB)
			base, baseModel := vxMakeBase(t, dir, size, MiB, 512)
			target := base
			if kind != "dynamic" {
				pm, _ := ParsePathMapping(`C:\VMs=` + dir)
				target = filepath.Join(dir, "child.avhdx")
				im, err := Create(target, CreateSpec{Format: FormatVHDX, Parent: base, BlockSize: MiB}, &Options{PathMap: PathMap{pm}})
				if err != nil {
					t.Fatal(err)
				}
				im.Close()
			}
			if kind == "partial-bits" {
				vxMakePartial(t, target, 2)
			}
			pristine, err := os.ReadFile(target)
			if err != nil {
				t.Fatal(err)
			}
			off, n := int64(2*MiB+12288), 20480
			data := vxRand(77, n)
			oldModel := append([]byte(nil), baseModel...)
			if kind == "partial-bits" {
				// Sector 0 of block 2 is present (zeros) in the child.
				clear(oldModel[2*MiB : 2*MiB+512])
			}
			newModel := append([]byte(nil), oldModel...)
			copy(newModel[off:], data)
			run := func(limit int) int {
				if err := os.WriteFile(target, pristine, 0o644); err != nil {
					t.Fatal(err)
				}
				fb := &faultBudget{Limit: limit}
				c, err := OpenChain(target, &Options{Wrap: fb.wrap()})
				if err != nil {
					t.Fatal(err)
				}
				_, werr := c.WriteAt(data, off)
				if limit < 0 && werr != nil {
					t.Fatal(werr)
				}
				cerr := c.Close()
				if limit < 0 && cerr != nil {
					t.Fatal(cerr)
				}
				return fb.Count
			}
			total := run(-1)
			if total < 8 {
				t.Fatalf("only %d operations", total)
			}
			for limit := 0; limit <= total; limit++ {
				run(limit)
				c, err := OpenChain(target, nil)
				if err != nil {
					t.Fatalf("limit %d/%d: reopen: %v", limit, total, err)
				}
				fs, err := c.Check()
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range fs {
					if f.Severity == SevError {
						t.Errorf("limit %d/%d: finding %+v", limit, total, f)
					}
				}
				got := make([]byte, size)
				if _, err := c.ReadAt(got, 0); err != nil {
					t.Fatal(err)
				}
				c.Close()
				isOld, isNew := bytes.Equal(got, oldModel), bytes.Equal(got, newModel)
				if !isOld && !isNew {
					t.Fatalf("limit %d/%d: content is neither old nor new", limit, total)
				}
				if limit == total && !isNew {
					t.Fatalf("full run did not write")
				}
			}
			t.Logf("%s: %d crash points checked", kind, total+1)
		})
	}
}

// vxMakePartial turns payload block blk of a differencing file into a
// PARTIALLY_PRESENT block (sector 0 present, zero) with a new SB block, the
// way Windows lays them out.
func vxMakePartial(t *testing.T, p string, blk int64) {
	t.Helper()
	im, err := Open(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := vxBack(t, im)
	sz, _ := im.f.Size()
	sbOff := vxRoundUp(sz, MiB)
	pOff := sbOff + MiB
	if err := im.f.Truncate(pOff + b.geo.bs); err != nil {
		t.Fatal(err)
	}
	bit := (blk % b.geo.cr) * b.geo.spb
	var one [1]byte
	one[0] = 1 << (bit % 8)
	writeFull(im.f, one[:], sbOff+bit/8)
	var e [8]byte
	vxPut64(e[:], uint64(pOff)|vxPartial)
	writeFull(im.f, e[:], b.batOff+8*b.geo.batIndex(blk))
	vxPut64(e[:], uint64(sbOff)|vxSBPresent)
	writeFull(im.f, e[:], b.batOff+8*b.geo.sbIndex(blk/b.geo.cr))
	b.closed = true
	im.f.Close()
	im, err = Open(p, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := im.b.lookup(blk*b.geo.bs, b.geo.bs)
	im.Close()
	if err != nil || r.State != StateData || r.Len != 512 {
		t.Fatalf("crafted partial block: %+v %v", r, err)
	}
	_ = fmt.Sprint
}
