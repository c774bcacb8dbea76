package vhd

// VHD writes: in-place writes, crash-safe block allocation (FORMATS.md
// §1.10) and parent locator rewriting.

import (
	"encoding/binary"
	"io"
	"sort"
)

func (d *v1Disk) writeAt(p []byte, off int64, parent io.ReaderAt) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.rw {
		return newErr(d.path, ErrReadOnly, "read-only", "cannot write: opened read-only")
	}
	if off < 0 || off%512 != 0 || len(p)%512 != 0 || off+int64(len(p)) > d.size {
		return newErr(d.path, ErrOutOfRange, "out-of-range", "write of %d bytes at %d is not sector aligned or outside the virtual disk (%d bytes)", len(p), off, d.size)
	}
	if d.typ == v1TypeFixed {
		if err := writeFull(d.f, p, off); err != nil {
			return d.ioErr(err)
		}
		return nil
	}
	for len(p) > 0 {
		b := off / d.bs
		in := off - b*d.bs
		n := min(int64(len(p)), d.bs-in)
		boff, err := d.blockAt(b)
		if err != nil {
			return err
		}
		if boff < 0 {
			err = d.allocate(b, p[:n], in, parent)
		} else if err = d.overlapsMeta(b, boff); err == nil {
			err = d.update(b, boff, p[:n], in, parent)
		}
		if err != nil {
			return err
		}
		p = p[n:]
		off += n
	}
	return nil
}

// overlapsMeta refuses to write into block b at boff when the block lies
// over the file's own structures (writing would destroy them).
func (d *v1Disk) overlapsMeta(b, boff int64) error {
	end := boff + d.bm + min(d.bs, d.size-b*d.bs)
	type area struct {
		name string
		a, b int64
	}
	areas := []area{
		{"footer copy", 0, v1FooterSize},
		{"dynamic header", d.hdrOff, d.hdrOff + v1HeaderSize},
		{"BAT", d.bat.off, d.bat.off + int64(d.hdr.MaxTableEntries)*4},
	}
	for _, r := range d.locRefs {
		areas = append(areas, area{"parent locator", r.off, r.off + r.len})
	}
	for _, a := range areas {
		if boff < a.b && a.a < end {
			return corrupt(d.path, "vhd-block-overlaps-metadata", "block %d at 0x%X overlaps the %s; refusing to write into it", b, boff, a.name)
		}
	}
	return nil
}

// fill puts into buf what sectors of block b starting at in show before
// this file holds them: the parent's data for a differencing disk, zeros
// otherwise (and beyond the virtual size).
func (d *v1Disk) fill(buf []byte, b, in int64, parent io.ReaderAt) error {
	clear(buf)
	if d.typ != v1TypeDiff || parent == nil || len(buf) == 0 {
		return nil
	}
	voff := b*d.bs + in
	if voff >= d.size {
		return nil
	}
	want := buf[:min(int64(len(buf)), d.size-voff)]
	n, err := parent.ReadAt(want, voff)
	if n == len(want) {
		return nil
	}
	if err == nil || err == io.EOF {
		clear(want[n:]) // a shorter parent reads as zeros beyond its end
		return nil
	}
	return d.ioErr(err)
}

// groups extends sectors [s0, s1) of a block to whole bitmap bytes (8
// sectors), bounded by the block.
func (d *v1Disk) groups(s0, s1 int64) (g0, g1 int64) {
	spb := d.bs / 512
	return s0 &^ 7, min(v1AlignUp(s1, 8), spb)
}

// allocate appends block b holding p at in (§1.10): new footer first, then
// bitmap and data, then the BAT entry (commit point), flushing in between.
func (d *v1Disk) allocate(b int64, p []byte, in int64, parent io.ReaderAt) error {
	B := v1NextBlock(d.footerOff, d.bm, d.bs)
	newFooter := v1NextBlock(B+d.bm+d.bs, d.bm, d.bs)
	if B/512 >= v1Unallocated {
		return newErr(d.path, ErrUnsupported, "vhd-file-too-large", "no room for another block: the file would exceed the 2 TiB a VHD BAT can address")
	}
	oldEOF := d.fileSize

	// 1. The new trailing footer, beyond the new block.
	if err := writeFull(d.f, d.ft.raw[:], newFooter); err != nil {
		return d.ioErr(err)
	}
	d.footerOff, d.dataEnd, d.fileSize, d.trailingErr = newFooter, newFooter, newFooter+v1FooterSize, nil
	if err := d.f.Sync(); err != nil {
		return d.ioErr(err)
	}

	// 2. Bitmap and data.
	s0, s1 := in/512, (in+int64(len(p)))/512
	bmp := make([]byte, d.bm)
	dataOff := B + d.bm
	var data []byte
	var dataAt int64
	if d.typ == v1TypeDiff {
		g0, g1 := d.groups(s0, s1)
		for i := g0 / 8; i <= (g1-1)/8; i++ {
			bmp[i] = 0xFF
		}
		data = make([]byte, (g1-g0)*512)
		if err := d.fill(data[:(s0-g0)*512], b, g0*512, parent); err != nil {
			return err
		}
		copy(data[(s0-g0)*512:], p)
		if err := d.fill(data[(s1-g0)*512:], b, s1*512, parent); err != nil {
			return err
		}
		dataAt = dataOff + g0*512
	} else {
		for i := range bmp {
			bmp[i] = 0xFF
		}
		data, dataAt = p, dataOff+in
	}
	if err := writeFull(d.f, bmp, B); err != nil {
		return d.ioErr(err)
	}
	// Bytes the old file held inside the new block's data (the old footer
	// when the block does not start exactly on it) must read as zeros; the
	// rest is past the old end of file and reads as zeros already.
	if z0, z1 := dataOff, min(oldEOF, dataOff+d.bs); z1 > z0 {
		if err := writeFull(d.f, make([]byte, z1-z0), z0); err != nil {
			return d.ioErr(err)
		}
	}
	if err := writeFull(d.f, data, dataAt); err != nil {
		return d.ioErr(err)
	}
	if d.batchMax > 0 {
		// Batched: the block is visible to this session now; its BAT
		// entry is written (after one flush of all batched data) when the
		// batch commits.
		d.bat.set(b, uint32(B/512))
		d.pend = append(d.pend, v1PendingEntry{b, uint32(B / 512)})
		d.pendBytes += d.bm + d.bs
		d.bmBlock, d.bmData = b, bmp
		if d.pendBytes >= d.batchMax || len(d.pend) >= v1BatchEntries {
			return d.commitPending()
		}
		return nil
	}
	if err := d.f.Sync(); err != nil {
		return d.ioErr(err)
	}

	// 3. The BAT sector holding entry b (commit point).
	if err := d.writeBATEntry(b, uint32(B/512)); err != nil {
		return err
	}
	if err := d.f.Sync(); err != nil {
		return d.ioErr(err)
	}
	d.bmBlock, d.bmData = b, bmp
	return nil
}

// v1PendingEntry is a BAT entry of a batched allocation not yet written.
type v1PendingEntry struct {
	b int64
	v uint32
}

// v1BatchEntries bounds the BAT entries one batch holds.
const v1BatchEntries = 4096

// commitPending makes the batched blocks durable, then writes their BAT
// entries (the commit point) and flushes again: the order of an unbatched
// allocation, once per batch.
func (d *v1Disk) commitPending() error {
	if len(d.pend) == 0 {
		return nil
	}
	if err := d.f.Sync(); err != nil {
		return d.ioErr(err)
	}
	for _, e := range d.pend {
		if err := d.writeBATEntry(e.b, e.v); err != nil {
			return err
		}
	}
	if err := d.f.Sync(); err != nil {
		return d.ioErr(err)
	}
	d.pend, d.pendBytes = d.pend[:0], 0
	return nil
}

// setWriteBatch turns batched allocation on (max > 0) or off (committing
// what is pending).
func (d *v1Disk) setWriteBatch(max int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if max <= 0 {
		err := d.commitPending()
		d.batchMax = 0
		return err
	}
	d.batchMax = max
	return nil
}

// writeBATEntry rewrites the 512-byte BAT sector holding entry b.
func (d *v1Disk) writeBATEntry(b int64, v uint32) error {
	eoff := d.bat.off + 4*b
	sec := eoff &^ 511
	if sec < d.bat.off {
		sec = d.bat.off // a BAT that does not start on a sector boundary
	}
	end := min(sec+512, d.bat.off+v1AlignUp(int64(d.hdr.MaxTableEntries)*4, 512), d.dataEnd)
	buf := make([]byte, end-sec)
	if err := readFull(d.f, buf, sec); err != nil {
		return d.ioErr(err)
	}
	binary.BigEndian.PutUint32(buf[eoff-sec:], v)
	if err := writeFull(d.f, buf, sec); err != nil {
		return d.ioErr(err)
	}
	d.bat.set(b, v)
	return nil
}

// update writes p at in into the allocated block b at boff. Sectors become
// visible (bits set) only after their data is durable; bitmap bytes are
// kept 0x00 or 0xFF by completing 8-sector groups.
func (d *v1Disk) update(b, boff int64, p []byte, in int64, parent io.ReaderAt) error {
	cur, err := d.bitmap(b, boff)
	if err != nil {
		return err
	}
	s0, s1 := in/512, (in+int64(len(p)))/512
	g0, g1 := d.groups(s0, s1)
	b0, b1 := g0/8, (g1-1)/8
	full := true
	for i := b0; i <= b1; i++ {
		if cur[i] != 0xFF {
			full = false
			break
		}
	}
	dataOff := boff + d.bm
	if full {
		if err := writeFull(d.f, p, dataOff+in); err != nil {
			return d.ioErr(err)
		}
		return nil
	}
	// Compose the groups: new data, existing sectors, and what clear
	// sectors showed (parent data or zeros).
	buf := make([]byte, (g1-g0)*512)
	copy(buf[(s0-g0)*512:], p)
	for s := g0; s < g1; {
		if s >= s0 && s < s1 {
			s = s1
			continue
		}
		set := cur[s/8]&(0x80>>(s%8)) != 0
		e := s + 1
		for e < g1 && !(e >= s0 && e < s1) && (cur[e/8]&(0x80>>(e%8)) != 0) == set {
			e++
		}
		dst := buf[(s-g0)*512 : (e-g0)*512]
		if set {
			if err := readFull(d.f, dst, dataOff+s*512); err != nil {
				return d.ioErr(err)
			}
		} else if err := d.fill(dst, b, s*512, parent); err != nil {
			return err
		}
		s = e
	}
	if err := writeFull(d.f, buf, dataOff+g0*512); err != nil {
		return d.ioErr(err)
	}
	if err := d.f.Sync(); err != nil {
		return d.ioErr(err)
	}
	nb := append([]byte(nil), cur...)
	for i := b0; i <= b1; i++ {
		nb[i] = 0xFF
	}
	sec0, sec1 := b0&^511, (b1&^511)+512
	if err := writeFull(d.f, nb[sec0:sec1], boff+sec0); err != nil {
		return d.ioErr(err)
	}
	d.bmBlock, d.bmData = b, nb
	return nil
}

// setParent rewrites the parent locator: path data into free space of the
// locator area first (flushed), then the header (flushed).
func (d *v1Disk) setParent(np *NewParent) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.rw {
		return newErr(d.path, ErrReadOnly, "read-only", "cannot rewrite the parent locator: opened read-only")
	}
	if d.typ != v1TypeDiff {
		return newErr(d.path, ErrInvalidSpec, "not-differencing", "not a differencing disk")
	}
	type ent struct {
		code uint32
		data []byte
		off  int64
		sz   int64
	}
	var ents []ent
	if np.RelativePath != "" {
		ents = append(ents, ent{code: v1PlatW2ru, data: v1UTF16LE(np.RelativePath)})
	}
	if np.AbsolutePath != "" {
		ents = append(ents, ent{code: v1PlatW2ku, data: v1UTF16LE(np.AbsolutePath)})
	}
	for i := range ents {
		if len(ents[i].data) > v1MaxLocatorLen {
			return newErr(d.path, ErrInvalidSpec, "vhd-locator-too-long", "parent path of %d bytes exceeds the %d-byte locator limit", len(ents[i].data), v1MaxLocatorLen)
		}
		ents[i].sz = v1AlignUp(max(int64(len(ents[i].data)), 1), 512)
	}

	// The locator area: between the header/BAT and the first block.
	regStart := v1AlignUp(max(d.hdrOff+v1HeaderSize, d.bat.off+v1AlignUp(int64(d.hdr.MaxTableEntries)*4, 512)), 512)
	regEnd := d.footerOff
	if d.trailingErr != nil {
		regEnd = d.dataEnd &^ 511
	}
	for b := int64(0); b < d.nblocks; b++ {
		e, err := d.bat.get(b)
		if err != nil {
			return d.ioErr(err)
		}
		if e == v1Unallocated {
			continue
		}
		if o := int64(e) * 512; o >= regStart && o < regEnd {
			regEnd = o
		}
	}
	type span struct{ a, b int64 }
	var busy []span // current locator data: kept intact until the header flips
	for _, r := range d.locRefs {
		busy = append(busy, span{r.off, r.off + v1AlignUp(max(r.len, 1), 512)})
	}
	place := func(sz int64, avoid []span) int64 {
		cands := []int64{regStart}
		for _, s := range avoid {
			cands = append(cands, v1AlignUp(s.b, 512))
		}
		sort.Slice(cands, func(i, j int) bool { return cands[i] < cands[j] })
		for _, c := range cands {
			if c < regStart || c+sz > regEnd {
				continue
			}
			ok := true
			for _, s := range avoid {
				if c < s.b && s.a < c+sz {
					ok = false
					break
				}
			}
			if ok {
				return c
			}
		}
		return -1
	}
	// First try to keep the current data intact (crash-safe); else rewrite
	// in place.
	layout := func(keep bool) bool {
		var placed []span
		if keep {
			placed = append(placed, busy...)
		}
		for i := range ents {
			o := place(ents[i].sz, placed)
			if o < 0 {
				return false
			}
			ents[i].off = o
			placed = append(placed, span{o, o + ents[i].sz})
		}
		return true
	}
	if !layout(true) && !layout(false) {
		need := int64(0)
		for _, e := range ents {
			need += e.sz
		}
		return newErr(d.path, ErrUnsupported, "vhd-locator-no-space", "the new parent paths need %d bytes but the locator area holds %d bytes", need, max(regEnd-regStart, 0))
	}
	for _, e := range ents {
		buf := make([]byte, e.sz)
		copy(buf, e.data)
		if err := writeFull(d.f, buf, e.off); err != nil {
			return d.ioErr(err)
		}
	}
	if err := d.f.Sync(); err != nil {
		return d.ioErr(err)
	}
	h := d.hdr
	h.ParentUniqueID = np.UniqueID
	h.ParentTimestamp = v1Stamp(np.Timestamp)
	h.ParentName = v1EncodeParentName(np.Name)
	h.Locators = [v1NumLocators]v1Locator{}
	for i, e := range ents {
		h.Locators[i] = v1Locator{Code: e.code, DataSpace: uint32(e.sz), DataLen: uint32(len(e.data)), DataOff: uint64(e.off)}
	}
	if err := writeFull(d.f, h.encode(), d.hdrOff); err != nil {
		return d.ioErr(err)
	}
	if err := d.f.Sync(); err != nil {
		return d.ioErr(err)
	}
	d.hdr = h
	if err := d.parseLocators(); err != nil {
		return d.ioErr(err)
	}
	return nil
}
