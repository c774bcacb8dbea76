package vhd

// VHDX log: finding the active sequence, replay (onto the file, or into an
// in-memory overlay for read-only opens), and the writer every metadata
// change goes through (FORMATS.md §2.7).

const (
	// vxMaxLogEntry bounds one log entry we are willing to read (memory).
	vxMaxLogEntry = 16 * MiB
	// vxMaxOverlay bounds the data an in-memory replay may hold.
	vxMaxOverlay = 64 * MiB
	// vxMaxFileOff bounds file offsets named by log descriptors.
	vxMaxFileOff = int64(1) << 47
	// vxMaxGrowth bounds how far a log may extend the file (LastFileOffset).
	vxMaxGrowth = 16 * GiB
	// vxMaxScan bounds the bytes read while looking for the active sequence.
	vxMaxScan = 512 * MiB
)

// vxOverlay is the result of replaying a log in memory: 4 KiB sectors of
// new content and zeroed ranges, in replay order.
type vxOverlay struct {
	data  map[int64]vxOvData
	zeros []vxOvZero
	ops   int
	bytes int64
}

type vxOvData struct {
	idx int
	p   []byte
}

type vxOvZero struct {
	off, end int64
	idx      int
}

// apply lays the overlay over p, which holds the file bytes at off.
func (o *vxOverlay) apply(p []byte, off int64) {
	end := off + int64(len(p))
	for s := off &^ (vxSector - 1); s < end; s += vxSector {
		best := -1
		var src []byte // nil: zeros
		if d, ok := o.data[s]; ok {
			best, src = d.idx, d.p
		}
		for _, z := range o.zeros {
			if z.idx > best && z.off <= s && s < z.end {
				best, src = z.idx, nil
			}
		}
		if best < 0 {
			continue
		}
		lo, hi := max(s, off), min(s+vxSector, end)
		if src == nil {
			clear(p[lo-off : hi-off])
		} else {
			copy(p[lo-off:hi-off], src[lo-s:hi-s])
		}
	}
}

// vxLogEntry is a validated log entry.
type vxLogEntry struct {
	pos int64 // offset inside the log
	h   vxLogEntryHeader
}

// logRead reads p from the log ring at pos, wrapping at its end.
func (b *vxBackend) logRead(p []byte, pos int64) error {
	L := int64(b.hdr.LogLength)
	base := int64(b.hdr.LogOffset)
	for len(p) > 0 {
		pos %= L
		n := min(int64(len(p)), L-pos)
		if err := b.readRaw(p[:n], base+pos); err != nil {
			return err
		}
		p = p[n:]
		pos += n
	}
	return nil
}

// parseEntry validates the entry at pos fully; it returns nil when the entry
// is not valid, else the entry and its bytes.
func (b *vxBackend) parseEntry(pos int64) (*vxLogEntry, []byte, []vxDesc, error) {
	L := int64(b.hdr.LogLength)
	first := make([]byte, vxSector)
	if err := b.logRead(first, pos); err != nil {
		return nil, nil, nil, err
	}
	h, ok := decodeVXLogEntryHeader(first)
	if !ok || h.Length == 0 || h.Length%vxSector != 0 || int64(h.Length) > L || h.Length > vxMaxLogEntry ||
		h.Tail%vxSector != 0 || int64(h.Tail) >= L || h.Seq == 0 || h.LogGUID != b.hdr.LogGUID || vxU32(first[28:]) != 0 {
		return nil, nil, nil, nil
	}
	ds := vxDescSectors(uint64(h.DescCount))
	if ds*vxSector > uint64(h.Length) {
		return nil, nil, nil, nil
	}
	// Descriptors first (cheap), the whole entry and its CRC last.
	if b.scanBudget -= int64(ds) * vxSector; b.scanBudget < 0 {
		return nil, nil, nil, b.unsupported("vhdx-log-too-large", "the log is too large or too damaged to scan")
	}
	dbuf := make([]byte, ds*vxSector)
	copy(dbuf, first)
	if err := b.logRead(dbuf[vxSector:], pos+vxSector); err != nil {
		return nil, nil, nil, err
	}
	descs := make([]vxDesc, h.DescCount)
	var nd uint64
	logLo, logHi := int64(b.hdr.LogOffset), int64(b.hdr.LogOffset)+L
	for i := range descs {
		d, ok := decodeVXDesc(dbuf[32*(i+2):])
		if !ok || d.seq != h.Seq || d.fileOff%vxSector != 0 {
			return nil, nil, nil, nil
		}
		ln := uint64(vxSector)
		if d.zero {
			if d.zeroLen%vxSector != 0 {
				return nil, nil, nil, nil
			}
			ln = d.zeroLen
		} else {
			nd++
		}
		// Targets stay clear of the file identifier, the headers and the
		// log itself, and within a sane file size.
		if d.fileOff > uint64(vxMaxFileOff) || ln > uint64(vxMaxFileOff)-d.fileOff {
			return nil, nil, nil, nil
		}
		lo, hi := int64(d.fileOff), int64(d.fileOff+ln)
		if ln > 0 && (lo < vxRegion1Off || (lo < logHi && hi > logLo)) {
			return nil, nil, nil, nil
		}
		descs[i] = d
	}
	if ds+nd != uint64(h.Length)/vxSector {
		return nil, nil, nil, nil
	}
	if b.scanBudget -= int64(h.Length); b.scanBudget < 0 {
		return nil, nil, nil, b.unsupported("vhdx-log-too-large", "the log is too large or too damaged to scan")
	}
	buf := make([]byte, h.Length)
	copy(buf, dbuf)
	if err := b.logRead(buf[len(dbuf):], pos+int64(len(dbuf))); err != nil {
		return nil, nil, nil, err
	}
	for j := uint64(0); j < nd; j++ {
		s := buf[(ds+j)*vxSector:]
		if string(s[:4]) != "data" || uint64(vxU32(s[4:]))<<32|uint64(vxU32(s[4092:])) != h.Seq {
			return nil, nil, nil, nil
		}
	}
	if vxCRC(buf, 4) != h.Checksum {
		return nil, nil, nil, nil
	}
	return &vxLogEntry{pos: pos, h: h}, buf, descs, nil
}

// scanLog finds the active sequence (tail first), or nil when there is none.
func (b *vxBackend) scanLog() ([]vxLogEntry, error) {
	L := int64(b.hdr.LogLength)
	var best []vxLogEntry
	memo := map[int64]*vxLogEntry{} // position → valid entry (nil: invalid)
	parse := func(pos int64) (*vxLogEntry, error) {
		if e, ok := memo[pos]; ok {
			return e, nil
		}
		e, _, _, err := b.parseEntry(pos)
		if err == nil {
			memo[pos] = e
		}
		return e, err
	}
	for t := int64(0); t < L; {
		var run []vxLogEntry
		pos, total := t, int64(0)
		for total < L {
			e, err := parse(pos % L)
			if err != nil {
				return nil, err
			}
			if e == nil || (len(run) > 0 && e.h.Seq != run[len(run)-1].h.Seq+1) {
				break
			}
			if total+int64(e.h.Length) > L {
				break
			}
			run = append(run, *e)
			total += int64(e.h.Length)
			pos += int64(e.h.Length)
		}
		valid := false
		if len(run) > 0 {
			head := run[len(run)-1]
			for j := range run {
				if run[j].pos%L == int64(head.h.Tail) {
					valid = true
					if best == nil || head.h.Seq > best[len(best)-1].h.Seq {
						best = append([]vxLogEntry(nil), run[j:]...)
					}
					break
				}
			}
		}
		if valid {
			t += total
		} else {
			t += vxSector
		}
	}
	return best, nil
}

// openLog replays a non-empty log: onto the file when writable (after the
// session's first header update), else into an in-memory overlay.
func (b *vxBackend) openLog() error {
	if b.hdr.LogGUID.IsZero() || b.hdr.LogLength == 0 || b.logFull {
		return nil
	}
	b.scanBudget = vxMaxScan
	seq, err := b.scanLog()
	if err != nil {
		return err
	}
	b.scanBudget = vxMaxScan * 4 // replay re-reads the sequence
	if len(seq) == 0 {
		return b.corrupt("vhdx-log-no-sequence", "the log is marked in use (LogGuid %s) but holds no valid sequence of entries", b.hdr.LogGUID)
	}
	head := seq[len(seq)-1].h
	if int64(head.Flushed) > b.realSize {
		return b.corrupt("vhdx-log-truncated", "the file (%d bytes) is shorter than the log's flushed size %d: it was truncated", b.realSize, head.Flushed)
	}
	if head.Last > uint64(b.realSize)+vxMaxGrowth {
		return b.corrupt("vhdx-log-last-offset", "the log's last file offset %d is far beyond the file size %d", head.Last, b.realSize)
	}
	last := int64(head.Last)
	if !b.rw {
		ov := &vxOverlay{data: map[int64]vxOvData{}}
		maxEnd := last
		for _, e := range seq {
			_, buf, descs, err := b.parseEntry(e.pos)
			if err != nil {
				return err
			}
			if buf == nil {
				return b.corrupt("vhdx-log-changed", "log entry at %d changed while reading it", e.pos)
			}
			ds := vxDescSectors(uint64(e.h.DescCount))
			j := uint64(0)
			for _, d := range descs {
				ov.ops++
				if d.zero {
					if d.zeroLen == 0 {
						continue
					}
					// Small zero ranges become per-sector entries; large
					// ones stay ranges (bounded in number).
					if d.zeroLen <= 64*vxSector {
						for o := uint64(0); o < d.zeroLen; o += vxSector {
							if _, ok := ov.data[int64(d.fileOff+o)]; !ok {
								ov.bytes += vxSector
							}
							ov.data[int64(d.fileOff+o)] = vxOvData{ov.ops, nil}
						}
					} else {
						ov.zeros = append(ov.zeros, vxOvZero{int64(d.fileOff), int64(d.fileOff + d.zeroLen), ov.ops})
					}
					if ov.bytes > vxMaxOverlay || len(ov.zeros) > 256 {
						return b.unsupported("vhdx-log-too-large", "the dirty log holds too many changes to replay in memory; open read-write to replay it")
					}
					maxEnd = max(maxEnd, int64(d.fileOff+d.zeroLen))
					continue
				}
				img := vxDataImage(buf[(ds+j)*vxSector:], d)
				j++
				if _, ok := ov.data[int64(d.fileOff)]; !ok {
					ov.bytes += vxSector
				}
				if ov.bytes > vxMaxOverlay {
					return b.unsupported("vhdx-log-too-large", "the dirty log holds more than %d bytes; open read-write to replay it", vxMaxOverlay)
				}
				ov.data[int64(d.fileOff)] = vxOvData{ov.ops, img}
				maxEnd = max(maxEnd, int64(d.fileOff)+vxSector)
			}
		}
		b.ov = ov
		b.effSize = max(b.realSize, maxEnd)
		b.logReplayed = true
		b.finding(SevWarning, "vhdx-log-dirty", "the log holds %d unapplied entries (sequence %d..%d); they were replayed in memory only (open read-write to apply them)", len(seq), seq[0].h.Seq, head.Seq)
		return nil
	}
	// Read-write: new FileWriteGuid first, then replay, then mark the log empty.
	if err := b.beginWrite(false); err != nil {
		return err
	}
	var zero []byte
	for _, e := range seq {
		_, buf, descs, err := b.parseEntry(e.pos)
		if err != nil {
			return err
		}
		if buf == nil {
			return b.corrupt("vhdx-log-changed", "log entry at %d changed while replaying it", e.pos)
		}
		ds := vxDescSectors(uint64(e.h.DescCount))
		j := uint64(0)
		for _, d := range descs {
			if d.zero {
				if zero == nil {
					zero = make([]byte, MiB)
				}
				for o := uint64(0); o < d.zeroLen; o += MiB {
					n := min(uint64(MiB), d.zeroLen-o)
					if err := writeFull(b.f, zero[:n], int64(d.fileOff+o)); err != nil {
						return b.ioErr(err)
					}
				}
				continue
			}
			img := vxDataImage(buf[(ds+j)*vxSector:], d)
			j++
			if err := writeFull(b.f, img, int64(d.fileOff)); err != nil {
				return b.ioErr(err)
			}
		}
	}
	if err := b.f.Sync(); err != nil {
		return b.ioErr(err)
	}
	size, err := b.f.Size()
	if err != nil {
		return b.ioErr(err)
	}
	if size < last {
		if err := b.f.Truncate(last); err != nil {
			return b.ioErr(err)
		}
		size = last
	}
	if err := b.f.Sync(); err != nil {
		return b.ioErr(err)
	}
	b.realSize, b.effSize = size, size
	if err := b.updateHeader(func(h *vxHeader) { h.LogGUID = GUID{} }); err != nil {
		return err
	}
	b.logSeq = head.Seq + 1
	tail := seq[len(seq)-1]
	b.logPos = (tail.pos + int64(tail.h.Length)) % int64(b.hdr.LogLength)
	b.logReplayed = true
	return nil
}

// vxDataImage rebuilds the 4 KiB update of a data descriptor.
func vxDataImage(sector []byte, d vxDesc) []byte {
	img := make([]byte, vxSector)
	copy(img[8:4092], sector[8:4092])
	vxPut64(img, d.leading)
	vxPut32(img[4092:], d.trailing)
	return img
}

// ---------------------------------------------------------------------------
// Writer

// vxTxn collects new contents of 4 KiB metadata pages for one log entry.
type vxTxn struct {
	pages map[int64][]byte
	order []int64
}

func (b *vxBackend) newTxn() *vxTxn { return &vxTxn{pages: map[int64][]byte{}} }

// txnPage returns the transaction's writable copy of the page at off (a
// page of the structure [lo, hi)).
func (b *vxBackend) txnPage(t *vxTxn, off, lo, hi int64) ([]byte, error) {
	if p, ok := t.pages[off]; ok {
		return p, nil
	}
	src, err := b.getPage(off, lo, hi)
	if err != nil {
		return nil, err
	}
	p := append([]byte(nil), src...)
	t.pages[off] = p
	t.order = append(t.order, off)
	return p, nil
}

func (b *vxBackend) txnSetBAT(t *vxTxn, idx int64, v uint64) error {
	off := b.batOff + idx*8
	pg, err := b.txnPage(t, off&^(vxSector-1), b.batOff, b.batOff+b.batLen)
	if err != nil {
		return err
	}
	vxPut64(pg[off&(vxSector-1):], v)
	return nil
}

// txnSetBits sets n bits from bit in the sector bitmap block at sb.
func (b *vxBackend) txnSetBits(t *vxTxn, sb, bit, n int64) error {
	for i := bit; i < bit+n; {
		byteOff := i / 8
		pg, err := b.txnPage(t, sb+byteOff&^(vxSector-1), sb, sb+vxSBBlockSize)
		if err != nil {
			return err
		}
		j := byteOff & (vxSector - 1)
		if i%8 == 0 && bit+n-i >= 8 {
			pg[j] = 0xff
			i += 8
			continue
		}
		pg[j] |= 1 << (i % 8)
		i++
	}
	return nil
}

// txnWrite writes data at file offset off (inside the structure [lo, hi)).
func (b *vxBackend) txnWrite(t *vxTxn, off int64, data []byte, lo, hi int64) error {
	for len(data) > 0 {
		po := off &^ (vxSector - 1)
		pg, err := b.txnPage(t, po, lo, hi)
		if err != nil {
			return err
		}
		n := copy(pg[off-po:], data)
		data = data[n:]
		off += int64(n)
	}
	return nil
}

// commit writes t as one log entry, flushes, makes the log live (LogGuid)
// if needed, applies the pages to their places and flushes again.
func (b *vxBackend) commit(t *vxTxn) error {
	if len(t.order) == 0 {
		return nil
	}
	if b.logFull {
		return b.unsupported("vhdx-log-region", "the file has no usable log")
	}
	err := b.commitLog(t)
	if err != nil && b.failed == nil {
		b.failed = err
	}
	return err
}

func (b *vxBackend) commitLog(t *vxTxn) error {
	L := int64(b.hdr.LogLength)
	guid := b.hdr.LogGUID
	newGUID := guid.IsZero()
	if newGUID {
		guid = NewGUID()
	}
	n := uint64(len(t.order))
	var nd uint64
	zeroPage := make([]bool, n)
	for i, off := range t.order {
		if isZero(t.pages[off]) {
			zeroPage[i] = true
		} else {
			nd++
		}
	}
	ds := vxDescSectors(n)
	entryLen := int64(ds+nd) * vxSector
	if entryLen > L/4 {
		return b.unsupported("vhdx-log-entry-too-large", "a %d-byte log entry does not fit the %d-byte log", entryLen, L)
	}
	if b.logPos+entryLen > L {
		b.logPos = 0
	}
	seq := b.logSeq
	buf := make([]byte, entryLen)
	h := vxLogEntryHeader{
		Length:    uint32(entryLen),
		Tail:      uint32(b.logPos),
		Seq:       seq,
		DescCount: uint32(n),
		LogGUID:   guid,
		Flushed:   uint64(b.realSize &^ (MiB - 1)),
		Last:      uint64(vxRoundUp(b.realSize, MiB)),
	}
	h.encode(buf)
	j := uint64(0)
	for i, off := range t.order {
		d := vxDesc{fileOff: uint64(off), seq: seq}
		if zeroPage[i] {
			d.zero, d.zeroLen = true, vxSector
		} else {
			pg := t.pages[off]
			d.leading, d.trailing = vxU64(pg), vxU32(pg[4092:])
			s := buf[(ds+j)*vxSector:]
			copy(s, "data")
			vxPut32(s[4:], uint32(seq>>32))
			copy(s[8:4092], pg[8:4092])
			vxPut32(s[4092:], uint32(seq))
			j++
		}
		d.encode(buf[32*(i+2):])
	}
	vxPut32(buf[4:], vxCRC(buf, 4))
	if err := writeFull(b.f, buf, int64(b.hdr.LogOffset)+b.logPos); err != nil {
		return b.ioErr(err)
	}
	if err := b.f.Sync(); err != nil {
		return b.ioErr(err)
	}
	if newGUID {
		// The entry is durable before the headers name its LogGuid, so a
		// crash never leaves a live log without a valid sequence.
		if err := b.updateHeader(func(h *vxHeader) { h.LogGUID = guid }); err != nil {
			return err
		}
	}
	b.logPos += entryLen
	b.logSeq++
	for _, off := range t.order {
		if err := writeFull(b.f, t.pages[off], off); err != nil {
			b.cache.reset()
			return b.ioErr(err)
		}
		b.cache.put(off, t.pages[off])
	}
	if err := b.f.Sync(); err != nil {
		return b.ioErr(err)
	}
	return nil
}
