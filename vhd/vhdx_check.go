package vhd

import "fmt"

// vxMaxFindingsPerCode bounds repeated findings of one code.
const vxMaxFindingsPerCode = 20

// check streams over the BAT and reports structural problems. Memory: one
// bit per MiB of file (8 MiB for a 64 TiB file) for overlap detection.
func (b *vxBackend) check() ([]Finding, error) {
	out := append([]Finding{}, b.openFind...)
	counts := map[string]int{}
	add := func(sev Severity, code, format string, args ...any) {
		counts[code]++
		if counts[code] <= vxMaxFindingsPerCode {
			out = append(out, Finding{Code: code, Severity: sev, Path: b.path, Message: fmt.Sprintf(format, args...)})
		}
	}
	g := &b.geo
	size := b.effSize
	units := (size + MiB - 1) / MiB
	if units > 1<<27 {
		units = 1 << 27
	}
	used := make([]byte, (units+7)/8)
	// mark claims [off, off+n) in 1 MiB units; it reports whether any unit
	// was already claimed.
	mark := func(off, n int64) bool {
		overlap := false
		for u := off / MiB; u < (off+n+MiB-1)/MiB && u < units; u++ {
			if used[u/8]&(1<<(u%8)) != 0 {
				overlap = true
			}
			used[u/8] |= 1 << (u % 8)
		}
		return overlap
	}
	mark(0, vxHeaderSection)
	if b.hdr.LogLength != 0 {
		mark(int64(b.hdr.LogOffset), int64(b.hdr.LogLength))
	}
	for _, r := range b.regions {
		mark(int64(r.Off), int64(r.Len))
	}
	buf := make([]byte, 64*KiB)
	var bufOff int64 = -1
	chunkPartial := false
	// Walk the differencing-sized table when the region holds it: sector
	// bitmap entries of non-differencing files are checked too.
	entries := max(g.entries, min(g.diffEntries(), b.batLen/8))
	for idx := int64(0); idx < entries; idx++ {
		eo := idx * 8
		if bufOff < 0 || eo >= bufOff+int64(len(buf)) {
			bufOff = eo &^ (int64(len(buf)) - 1)
			n := min(int64(len(buf)), b.batLen-bufOff)
			if err := b.readMeta(buf[:n], b.batOff+bufOff); err != nil {
				return out, err
			}
		}
		e := vxU64(buf[eo-bufOff:])
		st := e & 7
		fo := int64(e & vxOffMask)
		if e&vxReservedMask != 0 {
			add(SevWarning, "vhdx-bat-reserved", "BAT entry %d has reserved bits set (0x%x)", idx, e)
		}
		if (idx+1)%(g.cr+1) == 0 {
			k := idx / (g.cr + 1)
			switch st {
			case vxSBNotPresent:
				if fo != 0 {
					add(SevWarning, "vhdx-bat-offset-nonzero", "sector bitmap entry %d is not present but has file offset %d", k, fo)
				}
				if chunkPartial {
					add(SevError, "vhdx-sb-missing", "chunk %d has partially present blocks but no sector bitmap block", k)
				}
			case vxSBPresent:
				if !g.diff {
					add(SevError, "vhdx-sb-state", "sector bitmap block %d is present in a non-differencing file", k)
				}
				b.checkBlock(add, mark, "sector bitmap block", k, fo, vxSBBlockSize, size)
			default:
				add(SevError, "vhdx-sb-state", "sector bitmap entry %d has the invalid state %d", k, st)
			}
			chunkPartial = false
			continue
		}
		blk := idx - idx/(g.cr+1)
		if blk >= g.nb {
			continue
		}
		switch st {
		case vxFull, vxPartial:
			if st == vxPartial {
				if !g.diff {
					add(SevError, "vhdx-bat-state", "payload block %d is partially present in a non-differencing file", blk)
				}
				chunkPartial = true
			}
			b.checkBlock(add, mark, "payload block", blk, fo, b.blockBytes(blk), size)
		case vxNotPresent, vxZero:
			if fo != 0 {
				add(SevWarning, "vhdx-bat-offset-nonzero", "payload block %d (state %d) has file offset %d; Hyper-V may reject it", blk, st, fo)
			}
		case vxUnmapped95:
			add(SevWarning, "vhdx-bat-state", "payload block %d has the obsolete state 5 (read as unmapped)", blk)
		case 4:
			add(SevError, "vhdx-bat-state", "payload block %d has the reserved state 4", blk)
		}
		if g.diff && (st == vxUndefined || st == vxZero || st == vxUnmapped || st == vxUnmapped95) {
			add(SevWarning, "vhdx-diff-zero-state", "payload block %d of a differencing disk is in state %d; libvhdi reads such blocks from the parent", blk, st)
		}
	}
	for code, n := range counts {
		if n > vxMaxFindingsPerCode {
			sev := SevWarning
			for _, f := range out {
				if f.Code == code {
					sev = f.Severity
					break
				}
			}
			out = append(out, Finding{Code: code, Severity: sev, Path: b.path, Message: fmt.Sprintf("%d more findings of this kind not listed", n-vxMaxFindingsPerCode)})
		}
	}
	return out, nil
}

func (b *vxBackend) checkBlock(add func(Severity, string, string, ...any), mark func(int64, int64) bool, what string, n, fo, length, size int64) {
	switch {
	case fo < vxHeaderSection:
		add(SevError, "vhdx-bat-offset", "%s %d is at offset %d, inside the header section", what, n, fo)
	case fo+length > size:
		add(SevError, "vhdx-bat-past-eof", "%s %d at offset %d lies past the end of the file (%d bytes)", what, n, fo, size)
	default:
		if mark(fo, length) {
			add(SevError, "vhdx-bat-overlap", "%s %d at offset %d overlaps another block or structure", what, n, fo)
		}
	}
}
