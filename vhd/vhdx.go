package vhd

// VHDX backend: open (header selection, log replay, region table,
// metadata), lookup through a paged BAT, writes with crash-safe allocation
// through the log, header updates (FORMATS.md §2).

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
)

type vxBackend struct {
	f    File
	path string
	rw   bool

	hdr     vxHeader
	hdrSlot int // slot (0: 64 KiB, 1: 128 KiB) holding the current header
	creator string

	regions []vxRegion
	batOff  int64
	batLen  int64
	metaOff int64
	metaLen int64
	meta    []vxMetaEntry
	locIdx  int // index in meta of the parent locator, -1 when none
	geo     vxGeometry
	diskID  GUID
	fpFlags uint32
	loc     *ParentLocator

	realSize int64 // size of the file as last known
	effSize  int64 // realSize, or larger when an in-memory replay extends it
	cache    *vxPageCache
	ov       *vxOverlay // in-memory log replay (read-only opens)
	// Read-ahead of getPage: the page a sequential walk misses next, and
	// how much the last miss read.
	raNext, raSize int64

	logReplayed bool
	openFind    []Finding

	// Session state for writes.
	fwDone  bool // FileWriteGuid renewed this session
	dwDone  bool // DataWriteGuid renewed this session
	logPos  int64
	logSeq  uint64
	failed  error
	closed  bool
	logFull bool // LogLength 0: no log to write through

	scanBudget int64 // bytes the log scan may still read

	// Batched allocation (SetWriteBatch): block allocations of several
	// writes share one log transaction, committed when batchMax bytes were
	// allocated, the transaction grows large, or on flush/close.
	batchMax  int64
	pend      *vxTxn
	pendBytes int64
	pendSync  bool
}

func (b *vxBackend) corrupt(code, format string, args ...any) error {
	return corrupt(b.path, code, format, args...)
}

func (b *vxBackend) unsupported(code, format string, args ...any) error {
	return newErr(b.path, ErrUnsupported, code, format, args...)
}

func (b *vxBackend) ioErr(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Path: b.path, Code: "io", Msg: osMsg(err), Err: err}
}

func (b *vxBackend) finding(sev Severity, code, format string, args ...any) {
	b.openFind = append(b.openFind, Finding{Code: code, Severity: sev, Path: b.path, Message: fmt.Sprintf(format, args...)})
}

// readRaw reads p at off; bytes past the end of the file read as zeros.
func (b *vxBackend) readRaw(p []byte, off int64) error {
	n, err := b.f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err != nil && err != io.EOF {
		return b.ioErr(err)
	}
	clear(p[n:])
	return nil
}

// readMeta reads metadata bytes (region table, metadata region, BAT, sector
// bitmaps) at off, through the in-memory log overlay when there is one.
func (b *vxBackend) readMeta(p []byte, off int64) error {
	if err := b.readRaw(p, off); err != nil {
		return err
	}
	if b.ov != nil {
		b.ov.apply(p, off)
	}
	return nil
}

// getPage returns the (read-only) 4 KiB page at off, which lies inside the
// structure [lo, hi). A miss reads that page; misses in a row on the pages
// that follow read ahead, doubling up to 64 KiB of that structure.
func (b *vxBackend) getPage(off, lo, hi int64) ([]byte, error) {
	if b.pend != nil {
		// A batched transaction not committed yet: this session sees it.
		if pg, ok := b.pend.pages[off]; ok {
			return pg, nil
		}
	}
	if pg := b.cache.get(off); pg != nil {
		return pg, nil
	}
	if off == b.raNext {
		b.raSize = min(2*b.raSize, 64*KiB)
	} else {
		b.raSize = vxSector
	}
	ws := max(lo, off)
	we := min(hi, ws+b.raSize)
	if we < off+vxSector {
		we = off + vxSector
	}
	b.raNext = we
	bp := vxBufPool.Get().(*[]byte)
	defer vxBufPool.Put(bp)
	buf := (*bp)[:we-ws]
	if err := b.readMeta(buf, ws); err != nil {
		return nil, err
	}
	var want []byte
	for o := ws; o+vxSector <= we; o += vxSector {
		pg := make([]byte, vxSector)
		copy(pg, buf[o-ws:])
		b.cache.put(o, pg)
		if o == off {
			want = pg
		}
	}
	return want, nil
}

// vxBufPool holds 64 KiB scratch buffers for metadata reads (region tables,
// the metadata table, page windows); nothing read into one is kept.
var vxBufPool = sync.Pool{New: func() any { b := make([]byte, 64*KiB); return &b }}

// batEntry returns BAT entry idx.
func (b *vxBackend) batEntry(idx int64) (uint64, error) {
	if idx < 0 || (idx+1)*8 > b.batLen {
		return 0, b.corrupt("vhdx-bat-too-small", "BAT entry %d lies outside the BAT region", idx)
	}
	off := b.batOff + idx*8
	// Page windows stop at the end of the entries the disk uses: the rest
	// of the region is never read.
	used := min(b.batLen, vxRoundUp(max(b.geo.entries, idx+1)*8, vxSector))
	pg, err := b.getPage(off&^(vxSector-1), b.batOff, b.batOff+used)
	if err != nil {
		return 0, err
	}
	return vxU64(pg[off&(vxSector-1):]), nil
}

// ---------------------------------------------------------------------------
// Open

func openVHDX(f File, path string, rw bool) (backend, error) {
	b := &vxBackend{f: f, path: path, rw: rw, locIdx: -1, cache: newVXPageCache(vxCachePages), logSeq: 1}
	if err := b.open(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *vxBackend) open() error {
	size, err := b.f.Size()
	if err != nil {
		return b.ioErr(err)
	}
	b.realSize, b.effSize = size, size
	if size < vxHeaderSection {
		return b.corrupt("vhdx-truncated", "file is %d bytes, smaller than the 1 MiB VHDX header section", size)
	}
	id := make([]byte, 8+vxCreatorLen)
	if err := b.readRaw(id, 0); err != nil {
		return err
	}
	if string(id[:8]) != "vhdxfile" {
		return newErr(b.path, ErrNotImage, "not-image", "no vhdxfile signature")
	}
	b.creator = vxCreator(id[8:])
	if err := b.readHeaders(); err != nil {
		return err
	}
	if err := b.openLog(); err != nil {
		return err
	}
	if err := b.readRegions(); err != nil {
		return err
	}
	if err := b.readMetadata(); err != nil {
		return err
	}
	return nil
}

func (b *vxBackend) readHeaders() error {
	var hs [2]vxHeader
	var ok [2]bool
	bp := vxBufPool.Get().(*[]byte)
	defer vxBufPool.Put(bp)
	raw := (*bp)[:2*vxHeaderSize]
	for i, off := range []int64{vxHeader1Off, vxHeader2Off} {
		if err := b.readRaw(raw[i*vxHeaderSize:(i+1)*vxHeaderSize], off); err != nil {
			return err
		}
		hs[i], ok[i] = decodeVXHeader(raw[i*vxHeaderSize : (i+1)*vxHeaderSize])
	}
	switch {
	case ok[0] && ok[1]:
		switch {
		case hs[0].Seq > hs[1].Seq:
			b.hdrSlot = 0
		case hs[1].Seq > hs[0].Seq:
			b.hdrSlot = 1
		default:
			a, c := hs[0], hs[1]
			if a != c {
				return b.corrupt("vhdx-header-ambiguous", "both headers have sequence number %d but different contents", a.Seq)
			}
			b.hdrSlot = 0
		}
	case ok[0]:
		b.hdrSlot = 0
		b.finding(SevWarning, "vhdx-header-crc", "header 2 (at 128 KiB) is invalid (signature or CRC-32C); header 1 is used")
	case ok[1]:
		b.hdrSlot = 1
		b.finding(SevWarning, "vhdx-header-crc", "header 1 (at 64 KiB) is invalid (signature or CRC-32C); header 2 is used")
	default:
		return b.corrupt("vhdx-header-crc", "neither header is valid (signature or CRC-32C)")
	}
	b.hdr = hs[b.hdrSlot]
	h := &b.hdr
	if h.Version != 1 {
		return b.unsupported("vhdx-header-version", "header version %d is not supported (want 1)", h.Version)
	}
	if h.LogVersion != 0 {
		return b.unsupported("vhdx-log-version", "log version %d is not supported (want 0)", h.LogVersion)
	}
	if h.LogLength == 0 {
		b.logFull = true
		return nil
	}
	lo, ll := h.LogOffset, uint64(h.LogLength)
	if lo%MiB != 0 || lo < MiB || ll%MiB != 0 || lo > uint64(b.realSize) || ll > uint64(b.realSize)-lo {
		if lo%MiB != 0 || lo < MiB || ll%MiB != 0 || !h.LogGUID.IsZero() {
			return b.corrupt("vhdx-log-region", "log at offset %d, length %d is misaligned or outside the file (%d bytes)", lo, ll, b.realSize)
		}
		// A clean log past the end of the file: readable, not writable.
		b.finding(SevError, "vhdx-log-region", "log at offset %d, length %d lies outside the file (%d bytes)", lo, ll, b.realSize)
		b.logFull = true
	}
	return nil
}

func (b *vxBackend) readRegions() error {
	bp := vxBufPool.Get().(*[]byte)
	defer vxBufPool.Put(bp)
	raw := (*bp)[:vxRegionSize]
	var rs []vxRegion
	valid := 0
	for i, off := range []int64{vxRegion1Off, vxRegion2Off} {
		if err := b.readMeta(raw, off); err != nil {
			return err
		}
		t, ok := decodeVXRegionTable(raw)
		if ok {
			valid++
			if rs == nil {
				rs = t
			}
		} else {
			b.finding(SevWarning, "vhdx-region-crc", "region table %d is invalid (signature, CRC-32C or entry count)", i+1)
		}
	}
	if valid == 0 {
		b.openFind = nil
		return b.corrupt("vhdx-region-crc", "neither region table is valid (signature, CRC-32C or entry count)")
	}
	b.regions = rs
	type span struct {
		off, end int64
		what     string
	}
	var spans []span
	if !b.logFull || b.hdr.LogLength != 0 {
		if b.hdr.LogLength != 0 && b.hdr.LogOffset+uint64(b.hdr.LogLength) <= uint64(b.effSize) {
			spans = append(spans, span{int64(b.hdr.LogOffset), int64(b.hdr.LogOffset) + int64(b.hdr.LogLength), "log"})
		}
	}
	var haveBAT, haveMeta bool
	for _, r := range rs {
		name := r.GUID.String()
		switch r.GUID {
		case vxRegionBAT:
			name = "BAT"
		case vxRegionMetadata:
			name = "metadata"
		}
		// Regions are laid out when the file is made: they lie inside the
		// real file even when an unreplayed log would extend it.
		if r.Off%MiB != 0 || r.Off < MiB || r.Len%MiB != 0 || r.Len == 0 || r.Off > uint64(b.realSize) || uint64(r.Len) > uint64(b.realSize)-r.Off {
			return b.corrupt("vhdx-region-bounds", "%s region at offset %d, length %d is misaligned or outside the file (%d bytes)", name, r.Off, r.Len, b.realSize)
		}
		switch r.GUID {
		case vxRegionBAT:
			if haveBAT {
				return b.corrupt("vhdx-region-duplicate", "the region table lists the BAT twice")
			}
			haveBAT = true
			b.batOff, b.batLen = int64(r.Off), int64(r.Len)
		case vxRegionMetadata:
			if haveMeta {
				return b.corrupt("vhdx-region-duplicate", "the region table lists the metadata region twice")
			}
			haveMeta = true
			b.metaOff, b.metaLen = int64(r.Off), int64(r.Len)
		default:
			if r.Required {
				return b.unsupported("vhdx-region-unknown", "unknown required region %s", r.GUID)
			}
		}
		spans = append(spans, span{int64(r.Off), int64(r.Off) + int64(r.Len), name + " region"})
	}
	if !haveBAT || !haveMeta {
		return b.corrupt("vhdx-region-missing", "the region table lacks the BAT or the metadata region")
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].off < spans[j].off })
	for i := 1; i < len(spans); i++ {
		if spans[i].off < spans[i-1].end {
			return b.corrupt("vhdx-region-overlap", "%s overlaps %s", spans[i].what, spans[i-1].what)
		}
	}
	return nil
}

func (b *vxBackend) readMetadata() error {
	bp := vxBufPool.Get().(*[]byte)
	defer vxBufPool.Put(bp)
	raw := (*bp)[:vxMetaTableSize]
	// The table's entries follow its 32-byte header; read the first page
	// and the rest only when the entry count reaches past it.
	if err := b.readMeta(raw[:vxSector], b.metaOff); err != nil {
		return err
	}
	if n := int64(vxU16(raw[10:])); 32+32*n > vxSector && n <= vxMaxEntries {
		if err := b.readMeta(raw[vxSector:], b.metaOff+vxSector); err != nil {
			return err
		}
	}
	ents, ok := decodeVXMetaTable(raw)
	if !ok {
		return b.corrupt("vhdx-metadata-table", "metadata table has a bad signature or more than 2047 entries")
	}
	b.meta = ents
	found := map[GUID]int{}
	users := 0
	type span struct{ off, end int64 }
	var spans []span
	for i, e := range ents {
		if e.Len > vxMaxItemLen {
			return b.corrupt("vhdx-metadata-item", "metadata item %s is %d bytes, more than 1 MiB", e.ID, e.Len)
		}
		if (e.Len == 0) != (e.Off == 0) {
			return b.corrupt("vhdx-metadata-item", "metadata item %s has offset %d and length %d (one is zero, the other not)", e.ID, e.Off, e.Len)
		}
		if e.Len != 0 && (e.Off < vxMetaTableSize || int64(e.Off)+int64(e.Len) > b.metaLen) {
			return b.corrupt("vhdx-metadata-item", "metadata item %s (offset %d, length %d) lies outside the metadata region", e.ID, e.Off, e.Len)
		}
		if e.Len != 0 {
			spans = append(spans, span{int64(e.Off), int64(e.Off) + int64(e.Len)})
		}
		if e.isUser() {
			users++
			if e.isRequired() {
				return b.unsupported("vhdx-metadata-unknown", "unknown required user metadata item %s", e.ID)
			}
			continue
		}
		switch e.ID {
		case vxItemFileParams, vxItemVirtualSize, vxItemDiskID, vxItemLogical, vxItemPhysical, vxItemLocator:
			if _, dup := found[e.ID]; dup {
				return b.corrupt("vhdx-metadata-duplicate", "metadata item %s appears twice", e.ID)
			}
			found[e.ID] = i
		default:
			if e.isRequired() {
				return b.unsupported("vhdx-metadata-unknown", "unknown required metadata item %s", e.ID)
			}
		}
	}
	if users > 1024 {
		b.finding(SevError, "vhdx-metadata-table", "metadata table has %d user items (at most 1024 allowed)", users)
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].off < spans[j].off })
	for i := 1; i < len(spans); i++ {
		if spans[i].off < spans[i-1].end {
			b.finding(SevError, "vhdx-metadata-overlap", "metadata items overlap at offset %d of the metadata region", spans[i].off)
			break
		}
	}
	// The items are usually packed together: read the span of those used
	// below at once when it is small (the table buffer is free again).
	var items []byte
	var itemsOff int64
	{
		lo, hi := int64(-1), int64(-1)
		for _, id := range []GUID{vxItemFileParams, vxItemVirtualSize, vxItemLogical, vxItemPhysical, vxItemDiskID, vxItemLocator} {
			if i, ok := found[id]; ok && ents[i].Len != 0 {
				o, e := int64(ents[i].Off), int64(ents[i].Off)+int64(ents[i].Len)
				if lo < 0 || o < lo {
					lo = o
				}
				hi = max(hi, e)
			}
		}
		if lo >= 0 && hi-lo <= int64(len(*bp)) {
			items, itemsOff = (*bp)[:hi-lo], lo
			if err := b.readMeta(items, b.metaOff+lo); err != nil {
				return err
			}
		}
	}
	item := func(id GUID, min int, name string) ([]byte, error) {
		i, ok := found[id]
		if !ok {
			return nil, b.corrupt("vhdx-metadata-missing", "the %s metadata item is missing", name)
		}
		e := ents[i]
		if int(e.Len) < min {
			return nil, b.corrupt("vhdx-metadata-item", "the %s metadata item is %d bytes (want %d)", name, e.Len, min)
		}
		p := make([]byte, e.Len)
		if o := int64(e.Off) - itemsOff; items != nil && o >= 0 && o+int64(e.Len) <= int64(len(items)) {
			copy(p, items[o:])
			return p, nil
		}
		if err := b.readMeta(p, b.metaOff+int64(e.Off)); err != nil {
			return nil, err
		}
		return p, nil
	}
	fp, err := item(vxItemFileParams, 8, "file parameters")
	if err != nil {
		return err
	}
	bs, flags := vxU32(fp), vxU32(fp[4:])
	if bs < MiB || bs > 256*MiB || bs&(bs-1) != 0 {
		return b.corrupt("vhdx-metadata-block-size", "block size %d is not a power of two between 1 MiB and 256 MiB", bs)
	}
	if flags&^3 != 0 {
		b.finding(SevWarning, "vhdx-metadata-reserved", "file parameters have reserved flag bits set (0x%x)", flags)
	}
	b.fpFlags = flags & 3
	vs, err := item(vxItemVirtualSize, 8, "virtual disk size")
	if err != nil {
		return err
	}
	ls, err := item(vxItemLogical, 4, "logical sector size")
	if err != nil {
		return err
	}
	ps, err := item(vxItemPhysical, 4, "physical sector size")
	if err != nil {
		return err
	}
	did, err := item(vxItemDiskID, 16, "virtual disk ID")
	if err != nil {
		return err
	}
	b.diskID = vxGetGUID(did)
	lss, pss := vxU32(ls), vxU32(ps)
	if lss != 512 && lss != 4096 {
		return b.corrupt("vhdx-metadata-sector-size", "logical sector size %d is not 512 or 4096", lss)
	}
	if pss != 512 && pss != 4096 {
		return b.corrupt("vhdx-metadata-sector-size", "physical sector size %d is not 512 or 4096", pss)
	}
	vsize := vxU64(vs)
	if vsize == 0 || vsize > MaxVHDXSize || vsize%uint64(lss) != 0 {
		return b.corrupt("vhdx-metadata-size", "virtual size %d is zero, above 64 TiB or not a multiple of the logical sector size %d", vsize, lss)
	}
	b.geo = newVXGeometry(int64(vsize), bs, lss, pss, b.fpFlags)
	if b.geo.entries*8 > b.batLen {
		return b.corrupt("vhdx-bat-too-small", "BAT region (%d bytes) cannot hold the %d entries the disk needs", b.batLen, b.geo.entries)
	}
	if b.geo.diff {
		lp, err := item(vxItemLocator, 20, "parent locator")
		if err != nil {
			return err
		}
		b.locIdx = found[vxItemLocator]
		typ, kv, problem := decodeVXLocator(lp)
		if problem != "" {
			return b.corrupt("vhdx-locator", "%s", problem)
		}
		if typ != vxLocatorTypeVHDX {
			return b.unsupported("vhdx-locator-type", "parent locator type %s is not a VHDX parent", typ)
		}
		b.loc = vxLocatorFrom(kv)
		if b.loc.Linkage == "" {
			b.finding(SevError, "vhdx-locator-linkage", "parent locator has no parent_linkage")
		} else if _, err := ParseGUID(b.loc.Linkage); err != nil {
			b.finding(SevError, "vhdx-locator-linkage", "parent_linkage %q is not a GUID", b.loc.Linkage)
		}
	} else if i, ok := found[vxItemLocator]; ok {
		b.locIdx = i
	}
	return nil
}

func vxLocatorFrom(kv []LocatorEntry) *ParentLocator {
	loc := &ParentLocator{Entries: kv}
	for _, e := range kv {
		switch e.Key {
		case "parent_linkage":
			loc.Linkage = e.Value
		case "parent_linkage2":
			loc.Linkage2 = e.Value
		case "relative_path":
			loc.RelativePath = e.Value
		case "absolute_win32_path":
			loc.AbsolutePath = e.Value
		case "volume_path":
			loc.VolumePath = e.Value
		}
	}
	return loc
}

// ---------------------------------------------------------------------------
// backend: info, locator, lookup

func (b *vxBackend) info() Info {
	t := TypeDynamic
	if b.geo.diff {
		t = TypeDifferencing
	} else if b.geo.leaveAll {
		t = TypeFixed
	}
	return Info{
		Format:              FormatVHDX,
		Type:                t,
		VirtualSize:         b.geo.vsize,
		BlockSize:           uint32(b.geo.bs),
		LogicalSectorSize:   uint32(b.geo.lss),
		PhysicalSectorSize:  uint32(b.geo.pss),
		DiskID:              b.diskID,
		DataWriteGUID:       b.hdr.DataWriteGUID,
		FileWriteGUID:       b.hdr.FileWriteGUID,
		LogGUID:             b.hdr.LogGUID,
		Creator:             b.creator,
		LeaveBlockAllocated: b.geo.leaveAll,
		LogReplayed:         b.logReplayed,
	}
}

func (b *vxBackend) parentLocator() *ParentLocator {
	if b.loc == nil {
		return nil
	}
	c := *b.loc
	c.Entries = append([]LocatorEntry(nil), b.loc.Entries...)
	return &c
}

func vxStateOf(st uint64) State {
	switch st {
	case vxNotPresent:
		return StateAbsent
	case vxUndefined:
		return StateUndefined
	case vxZero:
		return StateZero
	default: // vxUnmapped, vxUnmapped95
		return StateUnmapped
	}
}

// blockBytes is the number of bytes of payload block blk inside the disk.
func (b *vxBackend) blockBytes(blk int64) int64 {
	return min(b.geo.bs, b.geo.vsize-blk*b.geo.bs)
}

// dataOff validates the file offset of an allocated payload block.
func (b *vxBackend) dataOff(blk int64, e uint64) (int64, error) {
	fo := int64(e & vxOffMask)
	if fo < vxHeaderSection {
		return 0, b.corrupt("vhdx-bat-offset", "payload block %d is allocated at offset %d, inside the header section", blk, fo)
	}
	if fo+b.blockBytes(blk) > b.effSize || fo < 0 {
		return 0, b.corrupt("vhdx-bat-past-eof", "payload block %d at offset %d lies past the end of the file (%d bytes)", blk, fo, b.effSize)
	}
	return fo, nil
}

// sbOff returns the file offset of the sector bitmap block of chunk k.
func (b *vxBackend) sbOff(k int64) (int64, error) {
	e, err := b.batEntry(b.geo.sbIndex(k))
	if err != nil {
		return 0, err
	}
	if e&7 != vxSBPresent {
		return 0, b.corrupt("vhdx-sb-missing", "chunk %d has partially present blocks but no sector bitmap block", k)
	}
	fo := int64(e & vxOffMask)
	if fo < vxHeaderSection {
		return 0, b.corrupt("vhdx-bat-offset", "sector bitmap block %d is at offset %d, inside the header section", k, fo)
	}
	if fo+vxSBBlockSize > b.effSize || fo < 0 {
		return 0, b.corrupt("vhdx-bat-past-eof", "sector bitmap block %d at offset %d lies past the end of the file (%d bytes)", k, fo, b.effSize)
	}
	return fo, nil
}

func (b *vxBackend) lookup(off, maxLen int64) (Run, error) {
	g := &b.geo
	if off < 0 || maxLen <= 0 || off >= g.vsize {
		return Run{}, newErr(b.path, ErrOutOfRange, "out-of-range", "lookup at %d is outside the virtual disk", off)
	}
	maxLen = min(maxLen, g.vsize-off)
	blk := off / g.bs
	in := off % g.bs
	e, err := b.batEntry(g.batIndex(blk))
	if err != nil {
		return Run{}, err
	}
	st := e & 7
	n := min(maxLen, g.bs-in)
	switch st {
	case vxFull:
		fo, err := b.dataOff(blk, e)
		if err != nil {
			return Run{}, err
		}
		r := Run{Off: off, Len: n, State: StateData, FileOff: fo + in}
		for nb := blk + 1; r.Len < maxLen; nb++ {
			e2, err := b.batEntry(g.batIndex(nb))
			if err != nil || e2&7 != vxFull || int64(e2&vxOffMask) != r.FileOff+r.Len {
				break
			}
			if _, err := b.dataOff(nb, e2); err != nil {
				break
			}
			r.Len += min(maxLen-r.Len, g.bs)
		}
		return r, nil
	case vxPartial:
		fo, err := b.dataOff(blk, e)
		if err != nil {
			return Run{}, err
		}
		sb, err := b.sbOff(blk / g.cr)
		if err != nil {
			return Run{}, err
		}
		bit := (blk%g.cr)*g.spb + in/g.lss
		v, cnt, err := b.bitRun(sb, bit, n/g.lss)
		if err != nil {
			return Run{}, err
		}
		if v {
			return Run{Off: off, Len: cnt * g.lss, State: StateData, FileOff: fo + in}, nil
		}
		return Run{Off: off, Len: cnt * g.lss, State: StateAbsent}, nil
	case 4:
		return Run{}, b.corrupt("vhdx-bat-state", "payload block %d has the reserved state 4", blk)
	}
	s := vxStateOf(st)
	r := Run{Off: off, Len: n, State: s}
	for nb := blk + 1; r.Len < maxLen; nb++ {
		e2, err := b.batEntry(g.batIndex(nb))
		if err != nil {
			break
		}
		st2 := e2 & 7
		if st2 == vxFull || st2 == vxPartial || st2 == 4 || vxStateOf(st2) != s {
			break
		}
		r.Len += min(maxLen-r.Len, g.bs)
	}
	return r, nil
}

// bitRun reads the sector bitmap block at sb from bit index bit: the value
// of that bit and how many bits (at most n) in a row share it.
func (b *vxBackend) bitRun(sb, bit, n int64) (bool, int64, error) {
	var v bool
	var cnt int64
	for cnt < n {
		byteOff := (bit + cnt) / 8
		pg, err := b.getPage(sb+byteOff&^(vxSector-1), sb, sb+vxSBBlockSize)
		if err != nil {
			return false, 0, err
		}
		for j := byteOff & (vxSector - 1); j < vxSector && cnt < n; {
			c := pg[j]
			k := (bit + cnt) % 8
			if k == 0 && cnt > 0 && n-cnt >= 8 && (c == 0 && !v || c == 0xff && v) {
				cnt += 8
				j++
				continue
			}
			x := c>>k&1 == 1
			if cnt == 0 {
				v = x
			} else if x != v {
				return v, cnt, nil
			}
			cnt++
			if (bit+cnt)%8 == 0 {
				j++
			}
		}
	}
	return v, cnt, nil
}

// ---------------------------------------------------------------------------
// Header updates and session

func vxHeaderOff(slot int) int64 {
	if slot == 0 {
		return vxHeader1Off
	}
	return vxHeader2Off
}

// updateHeader writes a header built from the current one with mod applied,
// to the non-current slot first, then to the other, flushing after each.
func (b *vxBackend) updateHeader(mod func(h *vxHeader)) error {
	h := b.hdr
	mod(&h)
	other := 1 - b.hdrSlot
	h.Seq = b.hdr.Seq + 1
	if err := writeFull(b.f, h.encode(), vxHeaderOff(other)); err != nil {
		return b.ioErr(err)
	}
	if err := b.f.Sync(); err != nil {
		return b.ioErr(err)
	}
	b.hdr, b.hdrSlot = h, other
	h.Seq++
	if err := writeFull(b.f, h.encode(), vxHeaderOff(1-other)); err != nil {
		return b.ioErr(err)
	}
	if err := b.f.Sync(); err != nil {
		return b.ioErr(err)
	}
	b.hdr, b.hdrSlot = h, 1-other
	return nil
}

// beginWrite performs the session's header update before the first change:
// a new FileWriteGuid, and a new DataWriteGuid when the change is visible.
func (b *vxBackend) beginWrite(visible bool) error {
	if b.failed != nil {
		return b.failed
	}
	if b.fwDone && (b.dwDone || !visible) {
		return nil
	}
	err := b.updateHeader(func(h *vxHeader) {
		if !b.fwDone {
			h.FileWriteGUID = NewGUID()
		}
		if visible && !b.dwDone {
			h.DataWriteGUID = NewGUID()
		}
	})
	if err != nil {
		b.failed = err
		return err
	}
	b.fwDone = true
	if visible {
		b.dwDone = true
	}
	return nil
}

// ---------------------------------------------------------------------------
// Writes

// vxWriteWindow bounds how much of a write goes into one log transaction.
const vxWriteWindow = 8 * MiB

func (b *vxBackend) writeAt(p []byte, off int64, parent io.ReaderAt) error {
	if !b.rw {
		return newErr(b.path, ErrReadOnly, "read-only", "opened read-only")
	}
	if b.closed {
		return newErr(b.path, ErrReadOnly, "closed", "image is closed")
	}
	if off < 0 || off%b.geo.lss != 0 || int64(len(p))%b.geo.lss != 0 || off+int64(len(p)) > b.geo.vsize {
		return newErr(b.path, ErrOutOfRange, "out-of-range", "write of %d bytes at %d is misaligned or outside the virtual disk", len(p), off)
	}
	if b.logFull {
		return b.unsupported("vhdx-log-region", "the file has no usable log; it cannot be written safely")
	}
	if err := b.beginWrite(true); err != nil {
		return err
	}
	for len(p) > 0 {
		n := min(int64(len(p)), vxWriteWindow)
		if err := b.writeWindow(p[:n], off, parent); err != nil {
			if b.failed == nil {
				b.failed = err
			}
			b.pend = nil // its blocks were never linked: the file is as before them
			b.cache.reset()
			if sz, e2 := b.f.Size(); e2 == nil {
				b.realSize = max(sz, b.realSize)
				b.effSize = max(b.effSize, b.realSize)
			}
			return err
		}
		p = p[n:]
		off += n
	}
	return nil
}

// readParent fills p from parent at off (zeros past its end).
func vxReadParent(parent io.ReaderAt, p []byte, off int64) error {
	n, err := parent.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == io.EOF || err == nil {
		clear(p[n:])
		return nil
	}
	return err
}

func (b *vxBackend) writeWindow(p []byte, off int64, parent io.ReaderAt) error {
	g := &b.geo
	t := b.pend
	if t == nil {
		t = b.newTxn()
	}
	needSync := false
	var allocated int64
	var chunkBuf []byte
	end := off + int64(len(p))
	for cur := off; cur < end; {
		blk := cur / g.bs
		in := cur % g.bs
		n := min(end-cur, g.bs-in)
		seg := p[cur-off : cur-off+n]
		idx := g.batIndex(blk)
		e, err := b.batEntry(idx)
		if err != nil {
			return err
		}
		switch st := e & 7; st {
		case vxFull:
			fo, err := b.dataOff(blk, e)
			if err != nil {
				return err
			}
			if err := writeFull(b.f, seg, fo+in); err != nil {
				return b.ioErr(err)
			}
		case vxPartial:
			if !g.diff {
				return b.corrupt("vhdx-bat-state", "payload block %d is partially present in a non-differencing file", blk)
			}
			fo, err := b.dataOff(blk, e)
			if err != nil {
				return err
			}
			sb, err := b.sbOff(blk / g.cr)
			if err != nil {
				return err
			}
			if err := writeFull(b.f, seg, fo+in); err != nil {
				return b.ioErr(err)
			}
			needSync = true
			if err := b.txnSetBits(t, sb, (blk%g.cr)*g.spb+in/g.lss, n/g.lss); err != nil {
				return err
			}
		case 4:
			return b.corrupt("vhdx-bat-state", "payload block %d has the reserved state 4", blk)
		default:
			// Allocate a FULLY_PRESENT block at the end of the file. In a
			// differencing file a NOT_PRESENT block takes the rest of its
			// content from the parent; every other state reads as zeros.
			fromParent := g.diff && st == vxNotPresent
			if fromParent && parent == nil {
				return newErr(b.path, ErrParentNotFound, "vhdx-parent-needed", "writing into an empty block of a differencing disk needs its parent's data")
			}
			newOff := vxRoundUp(b.realSize, MiB)
			vbase := blk * g.bs
			// The new block lies past the end of the file as it is: a MiB
			// that would only hold zeros is left unwritten and reads as
			// zeros (a hole), unless the parent's data has to go there.
			for c := int64(0); c < g.bs; c += MiB {
				if !fromParent && (c+MiB <= in || in+n <= c) {
					continue
				}
				if in <= c && c+MiB <= in+n {
					// The new data covers this MiB: write it as it is.
					if err := writeFull(b.f, seg[c-in:c-in+MiB], newOff+c); err != nil {
						return b.ioErr(err)
					}
					continue
				}
				if chunkBuf == nil {
					chunkBuf = make([]byte, MiB)
				}
				buf := chunkBuf
				clear(buf)
				if fromParent && vbase+c < g.vsize {
					lim := min(int64(MiB), g.vsize-(vbase+c))
					if err := vxReadParent(parent, buf[:lim], vbase+c); err != nil {
						return b.ioErr(err)
					}
				}
				// Overlay the new data.
				s, e := max(c, in), min(c+MiB, in+n)
				if s < e {
					copy(buf[s-c:e-c], seg[s-in:e-in])
				}
				if err := writeFull(b.f, buf, newOff+c); err != nil {
					return b.ioErr(err)
				}
			}
			if !fromParent && in+n <= g.bs-MiB {
				// The last MiB was left unwritten: the file reaches the
				// block's end (zeros) before the block table names it.
				if err := b.f.Truncate(newOff + g.bs); err != nil {
					return b.ioErr(err)
				}
			}
			b.realSize = newOff + g.bs
			b.effSize = max(b.effSize, b.realSize)
			allocated += g.bs
			needSync = true
			if err := b.txnSetBAT(t, idx, uint64(newOff)|vxFull); err != nil {
				return err
			}
		}
		cur += n
	}
	if b.batchMax > 0 {
		b.pend = t
		b.pendSync = b.pendSync || needSync
		b.pendBytes += allocated
		if b.pendBytes >= b.batchMax || len(t.order) >= vxBatchPages {
			return b.commitPending()
		}
		return nil
	}
	if needSync {
		if err := b.f.Sync(); err != nil {
			return b.ioErr(err)
		}
	}
	return b.commit(t)
}

// vxBatchPages bounds a batched transaction (a 1 MiB log takes entries of
// up to 256 KiB: 4 KiB descriptor sectors plus one sector per page).
const vxBatchPages = 48

// commitPending flushes the data of a batched transaction, then commits it
// through the log (the same order as an unbatched write).
func (b *vxBackend) commitPending() error {
	t := b.pend
	if t == nil {
		return nil
	}
	if b.pendSync {
		if err := b.f.Sync(); err != nil {
			b.pend = nil
			if b.failed == nil {
				b.failed = b.ioErr(err)
			}
			return b.ioErr(err)
		}
	}
	b.pend, b.pendBytes, b.pendSync = nil, 0, false
	return b.commit(t)
}

// setWriteBatch turns batched allocation on (max > 0) or off (committing
// what is pending).
func (b *vxBackend) setWriteBatch(max int64) error {
	if max <= 0 {
		err := b.commitPending()
		b.batchMax = 0
		return err
	}
	b.batchMax = max
	return nil
}

// ---------------------------------------------------------------------------
// setParent

func (b *vxBackend) setParent(np *NewParent) error {
	if !b.rw {
		return newErr(b.path, ErrReadOnly, "read-only", "opened read-only")
	}
	if b.loc == nil || b.locIdx < 0 {
		return newErr(b.path, ErrInvalidSpec, "not-differencing", "not a differencing disk")
	}
	if b.logFull {
		return b.unsupported("vhdx-log-region", "the file has no usable log; it cannot be written safely")
	}
	kv := vxLocatorEntries(np)
	item := encodeVXLocator(kv)
	if len(item) > vxMaxLocatorWrite {
		return newErr(b.path, ErrInvalidSpec, "locator-too-long", "parent locator would be %d bytes (limit %d)", len(item), vxMaxLocatorWrite)
	}
	// Where the item goes: in place when it fits, else the first gap.
	old := b.meta[b.locIdx]
	newOff := int64(-1)
	if int64(len(item)) <= int64(old.Len) && old.Off != 0 {
		newOff = int64(old.Off)
	} else {
		type span struct{ off, end int64 }
		var spans []span
		for i, e := range b.meta {
			if i != b.locIdx && e.Len != 0 {
				spans = append(spans, span{int64(e.Off), int64(e.Off) + int64(e.Len)})
			}
		}
		sort.Slice(spans, func(i, j int) bool { return spans[i].off < spans[j].off })
		pos := int64(vxMetaTableSize)
		for _, s := range spans {
			if s.off-pos >= int64(len(item)) {
				break
			}
			pos = max(pos, s.end)
		}
		if pos+int64(len(item)) <= b.metaLen {
			newOff = pos
		}
	}
	if newOff < 0 {
		return newErr(b.path, ErrUnsupported, "vhdx-metadata-full", "no room in the metadata region for a %d-byte parent locator", len(item))
	}
	if err := b.beginWrite(false); err != nil {
		return err
	}
	t := b.newTxn()
	ent := old
	ent.Off, ent.Len = uint32(newOff), uint32(len(item))
	mlo, mhi := b.metaOff, b.metaOff+b.metaLen
	eoff := b.metaOff + 32 + 32*int64(b.locIdx)
	var eb [32]byte
	encodeVXMetaEntry(eb[:], ent)
	if err := b.txnWrite(t, eoff, eb[:], mlo, mhi); err != nil {
		return err
	}
	if err := b.txnWrite(t, b.metaOff+newOff, item, mlo, mhi); err != nil {
		return err
	}
	if err := b.commit(t); err != nil {
		b.failed = err
		return err
	}
	b.meta[b.locIdx] = ent
	b.loc = vxLocatorFrom(kv)
	return nil
}

// vxLocatorEntries lists the locator keys in Hyper-V's order.
func vxLocatorEntries(np *NewParent) []LocatorEntry {
	kv := []LocatorEntry{{Key: "parent_linkage", Value: np.Linkage.Linkage()}}
	if np.AbsolutePath != "" {
		kv = append(kv, LocatorEntry{Key: "absolute_win32_path", Value: np.AbsolutePath})
	}
	kv = append(kv, LocatorEntry{Key: "relative_path", Value: np.RelativePath})
	if np.VolumePath != "" {
		kv = append(kv, LocatorEntry{Key: "volume_path", Value: np.VolumePath})
	}
	kv = append(kv, LocatorEntry{Key: "parent_linkage2", Value: np.Linkage2.Linkage()})
	return kv
}

// ---------------------------------------------------------------------------
// flush / close

func (b *vxBackend) flush() error {
	if !b.rw || b.closed {
		return nil
	}
	if b.pend != nil {
		return b.commitPending()
	}
	return b.ioErr(b.f.Sync())
}

func (b *vxBackend) close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	var first error
	if b.rw && b.failed == nil && b.pend != nil {
		first = b.commitPending()
	}
	if b.rw && b.failed == nil && (b.fwDone || !b.hdr.LogGUID.IsZero()) {
		if err := b.f.Sync(); err != nil {
			first = b.ioErr(err)
		} else if !b.hdr.LogGUID.IsZero() {
			// Everything logged is applied: mark the log empty so readers
			// (and qemu, which refuses dirty files read-only) see a clean file.
			if err := b.updateHeader(func(h *vxHeader) { h.LogGUID = GUID{} }); err != nil {
				first = err
			}
		}
	}
	if err := b.f.Close(); err != nil && first == nil {
		first = b.ioErr(err)
	}
	return first
}

// setDataWriteGUID makes g the DataWriteGuid of this write session: the
// header gets it now (with a new FileWriteGuid) unless it already holds it,
// and later writes of the session keep it.
func (b *vxBackend) setDataWriteGUID(g GUID) error {
	if !b.rw {
		return newErr(b.path, ErrReadOnly, "read-only", "opened read-only")
	}
	if b.failed != nil {
		return b.failed
	}
	if g.IsZero() {
		return newErr(b.path, ErrInvalidSpec, "zero-guid", "DataWriteGuid must not be zero")
	}
	if b.hdr.DataWriteGUID == g {
		b.dwDone = true
		return nil
	}
	err := b.updateHeader(func(h *vxHeader) {
		if !b.fwDone {
			h.FileWriteGUID = NewGUID()
		}
		h.DataWriteGUID = g
	})
	if err != nil {
		b.failed = err
		return err
	}
	b.fwDone, b.dwDone = true, true
	return nil
}
