package vhd

// VHD structural check. Memory: the BAT is walked through v1BAT (in memory
// up to 16 MiB, paged beyond); allocated block offsets are collected for the
// overlap test, at most v1CheckMaxBlocks of them.

import (
	"bytes"
	"fmt"
	"slices"
)

// v1CheckMaxBlocks bounds the block offsets check collects (64 MiB).
const v1CheckMaxBlocks = 8 << 20

// v1FindingCap is how many findings of one code are reported individually.
const v1FindingCap = 10

// qemu's vpc driver trusts Current Size only for these creators (or a
// maximal CHS); others get CHS × 512.
var v1SizeTrustingCreators = []string{"win ", "qem2", "d2v ", "CTXS", "tap\x00"}

func (d *v1Disk) check() ([]Finding, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []Finding{}
	counts := map[string]int{}
	sevOf := map[string]Severity{}
	add := func(code string, sev Severity, format string, args ...any) {
		counts[code]++
		sevOf[code] = sev
		if counts[code] <= v1FindingCap {
			out = append(out, Finding{Code: code, Severity: sev, Path: d.path, Message: fmt.Sprintf(format, args...)})
		}
	}
	ft := &d.ft

	if e := d.trailingErr; e != nil {
		add(e.Code, SevError, "%s; the footer copy at offset 0 was used", e.Msg)
	}
	if ft.SavedState != 0 {
		add("vhd-saved-state", SevWarning, "the footer says a saved VM state depends on this disk")
	}
	if ft.Features&v1FeatureReserve == 0 {
		add("vhd-footer-features", SevWarning, "footer features 0x%08X lack the reserved bit 0x2", ft.Features)
	}
	if !slices.Contains(v1SizeTrustingCreators, string(ft.CreatorApp[:])) &&
		!(ft.Cylinders == 65535 && ft.Heads == 16 && ft.SPT == 255) &&
		int64(ft.Cylinders)*int64(ft.Heads)*int64(ft.SPT)*512 != d.size {
		add("vhd-chs-size", SevWarning, "creator %q with CHS %d/%d/%d (%d bytes) differing from the virtual size %d: qemu shows the shorter CHS size",
			v1FourCC(ft.CreatorApp[:]), ft.Cylinders, ft.Heads, ft.SPT, int64(ft.Cylinders)*int64(ft.Heads)*int64(ft.SPT)*512, d.size)
	}

	if d.typ == v1TypeFixed {
		if d.footerOff > d.size {
			add("vhd-fixed-size", SevWarning, "%d bytes between the end of the data and the footer", d.footerOff-d.size)
		}
		return d.finish(out, counts, sevOf), nil
	}

	// Footer copy at offset 0.
	if d.trailingErr == nil {
		cp := make([]byte, v1FooterSize)
		if err := readFull(d.f, cp, 0); err != nil {
			return nil, d.ioErr(err)
		}
		if !bytes.Equal(cp, d.ft.raw[:]) {
			_, cok, sok := v1DecodeFooter(cp)
			what := "differs from the trailing footer"
			if !cok {
				what = "is missing"
			} else if !sok {
				what = "has a wrong checksum"
			}
			add("vhd-footer-copy-mismatch", SevWarning, "the footer copy at offset 0 %s", what)
		}
	}

	// Metadata areas blocks must not touch.
	type area struct {
		name string
		a, b int64
	}
	batEnd := d.bat.off + int64(d.hdr.MaxTableEntries)*4
	areas := []area{
		{"footer copy", 0, v1FooterSize},
		{"dynamic header", d.hdrOff, d.hdrOff + v1HeaderSize},
		{"BAT", d.bat.off, batEnd},
	}
	if d.hdrOff < batEnd && d.bat.off < d.hdrOff+v1HeaderSize {
		add("vhd-bat-overlap", SevError, "the BAT [0x%X, 0x%X) overlaps the dynamic header at 0x%X", d.bat.off, batEnd, d.hdrOff)
	}

	// Parent locator.
	if d.typ == v1TypeDiff {
		for _, f := range d.locBad {
			add(f.Code, f.Severity, "%s", f.Message)
		}
		if d.loc != nil && d.loc.RelativePath == "" && d.loc.AbsolutePath == "" {
			add("vhd-locator-missing", SevWarning, "no parent path (W2ru, W2ku, Wi2r, Wi2k) is recorded; only the parent name %q can find the parent", d.loc.ParentName)
		}
		for i, r := range d.locRefs {
			name := fmt.Sprintf("parent locator %d (%s)", r.idx, v1CodeName(r.code))
			for _, a := range areas[:3] {
				if r.len > 0 && r.off < a.b && a.a < r.off+r.len {
					add("vhd-locator-overlap", SevError, "%s data at 0x%X overlaps the %s", name, r.off, a.name)
				}
			}
			for _, o := range d.locRefs[:i] {
				if r.len > 0 && o.len > 0 && r.off < o.off+o.len && o.off < r.off+r.len {
					add("vhd-locator-overlap", SevError, "%s data at 0x%X overlaps parent locator %d", name, r.off, o.idx)
				}
			}
			if r.len > 0 {
				areas = append(areas, area{name, r.off, r.off + r.len})
			}
		}
	}

	// Blocks.
	type blk struct{ off, end, idx int64 }
	var blocks []blk
	limited := false
	var partial int64
	for b := int64(0); b < d.nblocks; b++ {
		e, err := d.bat.get(b)
		if err != nil {
			return nil, d.ioErr(err)
		}
		if e == v1Unallocated {
			continue
		}
		off := int64(e) * 512
		used := min(d.bs, d.size-b*d.bs)
		if off < v1FooterSize || off+d.bm+used > d.dataEnd {
			add("vhd-bat-past-eof", SevError, "BAT entry %d points at 0x%X, outside the file's %d bytes of blocks", b, off, d.dataEnd)
			continue
		}
		end := off + d.bm + d.bs
		if b == d.nblocks-1 {
			end = off + d.bm + used
		}
		for _, a := range areas {
			if off < a.b && a.a < end {
				add("vhd-block-overlaps-metadata", SevError, "block %d at 0x%X overlaps the %s", b, off, a.name)
			}
		}
		if len(blocks) < v1CheckMaxBlocks {
			blocks = append(blocks, blk{off, end, b})
		} else {
			limited = true
		}
		if d.typ == v1TypeDiff {
			bmp, err := d.bitmap(b, off)
			if err != nil {
				return nil, err
			}
			for _, c := range bmp[:(used/512+7)/8] {
				if c != 0 && c != 0xFF {
					partial++
					break
				}
			}
		}
	}
	slices.SortFunc(blocks, func(x, y blk) int {
		switch {
		case x.off < y.off:
			return -1
		case x.off > y.off:
			return 1
		}
		return 0
	})
	for i := 1; i < len(blocks); i++ {
		p, c := blocks[i-1], blocks[i]
		if c.off < p.end {
			add("vhd-block-overlap", SevError, "blocks %d (at 0x%X) and %d (at 0x%X) overlap", p.idx, p.off, c.idx, c.off)
		}
	}
	if limited {
		add("vhd-check-limited", SevWarning, "more than %d allocated blocks: overlaps were checked among the first %d only", v1CheckMaxBlocks, v1CheckMaxBlocks)
	}
	if partial > 0 {
		add("vhd-bitmap-partial-byte", SevWarning, "%d blocks have bitmap bytes other than 0x00/0xFF, which libvhdi (vhdimount) misreads", partial)
	}
	return d.finish(out, counts, sevOf), nil
}

// finish appends a summary for codes reported more than v1FindingCap times.
func (d *v1Disk) finish(out []Finding, counts map[string]int, sevOf map[string]Severity) []Finding {
	codes := make([]string, 0, len(counts))
	for c := range counts {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	for _, c := range codes {
		if n := counts[c]; n > v1FindingCap {
			out = append(out, Finding{Code: c, Severity: sevOf[c], Path: d.path,
				Message: fmt.Sprintf("%d more findings of this kind not listed", n-v1FindingCap)})
		}
	}
	return out
}
