package vhd

// VHD 1.0 backend: open, lookup, info, create. Writes are in vhd1_write.go,
// the structural check in vhd1_check.go.

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"
)

// v1Disk is one open VHD file.
type v1Disk struct {
	mu sync.Mutex
	// Batched allocation (SetWriteBatch): BAT entries of new blocks are
	// written together when the batch commits.
	batchMax  int64
	pend      []v1PendingEntry
	pendBytes int64
	f         File
	path      string
	rw        bool

	ft v1Footer // the footer in use (trailing, or the copy at 0)
	// footerOff is where the trailing footer sits; it is also where the next
	// block goes. When the trailing footer is lost it is the file size
	// rounded up to a sector.
	footerOff int64
	// dataEnd bounds every structure and block: footerOff when the trailing
	// footer is valid, else the file size.
	dataEnd int64
	// trailingErr is the problem with the trailing footer when the copy at 0
	// had to be used (nil otherwise).
	trailingErr *Error
	fileSize    int64
	size        int64 // virtual size
	typ         uint32

	// Dynamic and differencing disks.
	hdrOff  int64
	hdr     v1Header
	bs      int64 // block size
	bm      int64 // bitmap bytes per block
	nblocks int64 // BAT entries the virtual size needs
	bat     *v1BAT
	metaEnd int64 // end of header, BAT and locator data

	// Differencing disks.
	loc     *ParentLocator
	locRefs []v1LocRef // valid locator entries, in header order
	locBad  []Finding  // locator entries skipped at open

	// One cached bitmap (lookup is sequential in practice).
	bmBlock int64
	bmData  []byte
}

// v1LocRef is a validated locator entry with the bytes it occupies.
type v1LocRef struct {
	idx   int
	code  uint32
	off   int64
	len   int64
	space int64
}

// v1BAT holds the block allocation table, in memory when it is small,
// paged from the file otherwise (memory stays bounded for any file).
type v1BAT struct {
	f     File
	off   int64
	n     int64
	mem   []uint32
	pages map[int64][]uint32
}

const v1BATPage = 1024 // entries per page (4 KiB)

func v1LoadBAT(f File, off, n int64) (*v1BAT, error) {
	t := &v1BAT{f: f, off: off, n: n}
	if n*4 > v1BATMemLimit {
		t.pages = map[int64][]uint32{}
		return t, nil
	}
	buf := make([]byte, n*4)
	if err := readFull(f, buf, off); err != nil {
		return nil, err
	}
	t.mem = make([]uint32, n)
	for i := range t.mem {
		t.mem[i] = binary.BigEndian.Uint32(buf[4*i:])
	}
	return t, nil
}

func (t *v1BAT) get(i int64) (uint32, error) {
	if i < 0 || i >= t.n {
		return v1Unallocated, nil
	}
	if t.mem != nil {
		return t.mem[i], nil
	}
	pi := i / v1BATPage
	pg, ok := t.pages[pi]
	if !ok {
		cnt := min(int64(v1BATPage), t.n-pi*v1BATPage)
		buf := make([]byte, cnt*4)
		if err := readFull(t.f, buf, t.off+pi*v1BATPage*4); err != nil {
			return 0, err
		}
		pg = make([]uint32, cnt)
		for j := range pg {
			pg[j] = binary.BigEndian.Uint32(buf[4*j:])
		}
		if len(t.pages) >= 256 {
			clear(t.pages)
		}
		t.pages[pi] = pg
	}
	return pg[i-pi*v1BATPage], nil
}

func (t *v1BAT) set(i int64, v uint32) {
	if i < 0 || i >= t.n {
		return
	}
	if t.mem != nil {
		t.mem[i] = v
		return
	}
	if pg, ok := t.pages[i/v1BATPage]; ok {
		pg[i%v1BATPage] = v
	}
}

// v1ReadFooterAt reads a footer of n (511 or 512) bytes at off, zero padded.
func v1ReadFooterAt(f File, off int64, n int) (ft v1Footer, cookieOK, sumOK bool, err error) {
	buf := make([]byte, v1FooterSize)
	if err = readFull(f, buf[:n], off); err != nil {
		return ft, false, false, err
	}
	ft, cookieOK, sumOK = v1DecodeFooter(buf)
	return ft, cookieOK, sumOK, nil
}

// openVHD opens a VHD file. Nothing is written, even when rw.
func openVHD(f File, path string, rw bool) (backend, error) {
	d := &v1Disk{f: f, path: path, rw: rw, bmBlock: -1}
	size, err := f.Size()
	if err != nil {
		return nil, &Error{Path: path, Code: "io", Msg: osMsg(err), Err: err}
	}
	d.fileSize = size
	ioErr := func(err error) error {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return corrupt(path, "vhd-truncated", "file ends inside a structure (%d bytes)", size)
		}
		return &Error{Path: path, Code: "io", Msg: osMsg(err), Err: err}
	}

	// 1. The trailing footer (512 bytes, or a 511-byte old one).
	var trailing *Error
	found := false
	for _, n := range []int{512, 511} {
		if size < int64(n) {
			continue
		}
		ft, cok, sok, err := v1ReadFooterAt(f, size-int64(n), n)
		if err != nil {
			return nil, ioErr(err)
		}
		if !cok {
			continue
		}
		if !sok {
			if trailing == nil {
				trailing = corrupt(path, "vhd-footer-checksum", "the footer checksum is wrong (stored 0x%08X, computed 0x%08X)", ft.Checksum, v1Checksum(ft.raw[:], 64)).(*Error)
			}
			continue
		}
		d.ft, d.footerOff, d.dataEnd, found = ft, size-int64(n), size-int64(n), true
		break
	}
	if !found {
		if trailing == nil {
			trailing = corrupt(path, "vhd-footer-missing", "no footer at the end of the file").(*Error)
		}
		// 2. The copy at offset 0 (dynamic and differencing disks only).
		ok := false
		if size >= v1FooterSize {
			ft, cok, sok, err := v1ReadFooterAt(f, 0, v1FooterSize)
			if err != nil {
				return nil, ioErr(err)
			}
			if cok && sok && (ft.DiskType == v1TypeDynamic || ft.DiskType == v1TypeDiff) {
				d.ft, ok = ft, true
				d.footerOff = v1AlignUp(size, 512)
				d.dataEnd = size
				d.trailingErr = trailing
			} else if cok && !sok && trailing.Code == "vhd-footer-missing" {
				trailing = corrupt(path, "vhd-footer-checksum", "the trailing footer is missing and its copy at offset 0 has a wrong checksum").(*Error)
			}
		}
		if !ok {
			return nil, trailing
		}
	}
	ft := &d.ft

	// 3. Footer fields.
	if ft.FormatVersion>>16 != 1 {
		return nil, newErr(path, ErrUnsupported, "vhd-version", "footer format version 0x%08X is not 1.x", ft.FormatVersion)
	}
	switch ft.DiskType {
	case v1TypeFixed, v1TypeDynamic, v1TypeDiff:
	case 0, 1, 5, 6:
		return nil, newErr(path, ErrUnsupported, "vhd-disk-type", "disk type %d is not fixed (2), dynamic (3) or differencing (4)", ft.DiskType)
	default:
		return nil, corrupt(path, "vhd-disk-type", "invalid disk type %d", ft.DiskType)
	}
	d.typ = ft.DiskType
	if ft.CurrentSize > MaxVHDSize {
		return nil, newErr(path, ErrUnsupported, "vhd-size", "virtual size %d exceeds the VHD limit of 2040 GiB", ft.CurrentSize)
	}
	if ft.CurrentSize%512 != 0 {
		return nil, newErr(path, ErrUnsupported, "vhd-size", "virtual size %d is not a multiple of 512", ft.CurrentSize)
	}
	d.size = int64(ft.CurrentSize)

	if d.typ == v1TypeFixed {
		if d.size > d.footerOff {
			return nil, corrupt(path, "vhd-truncated", "fixed disk of %d bytes but only %d bytes of data precede the footer", d.size, d.footerOff)
		}
		return d, nil
	}

	// 4. Dynamic header.
	if ft.DataOffset < v1FooterSize || ft.DataOffset > uint64(d.dataEnd) || ft.DataOffset+v1HeaderSize > uint64(d.dataEnd) {
		return nil, corrupt(path, "vhd-header-offset", "dynamic header offset 0x%X is outside the file (%d bytes)", ft.DataOffset, size)
	}
	d.hdrOff = int64(ft.DataOffset)
	hb := make([]byte, v1HeaderSize)
	if err := readFull(f, hb, d.hdrOff); err != nil {
		return nil, ioErr(err)
	}
	h, cok, sok := v1DecodeHeader(hb)
	if !cok {
		return nil, corrupt(path, "vhd-header-cookie", "no dynamic header (cxsparse) at offset 0x%X", d.hdrOff)
	}
	if !sok {
		return nil, corrupt(path, "vhd-header-checksum", "the dynamic header checksum is wrong (stored 0x%08X, computed 0x%08X)", h.Checksum, v1Checksum(h.raw[:], 36))
	}
	if h.HeaderVersion>>16 != 1 {
		return nil, newErr(path, ErrUnsupported, "vhd-header-version", "dynamic header version 0x%08X is not 1.x", h.HeaderVersion)
	}
	d.hdr = h
	bs := h.BlockSize
	if bs < v1MinBlockSize || bs&(bs-1) != 0 {
		return nil, corrupt(path, "vhd-block-size", "block size %d is not a power of two of at least 512 bytes", bs)
	}
	if bs > v1MaxBlockSize {
		return nil, newErr(path, ErrUnsupported, "vhd-block-size", "block size %d is larger than the 256 MiB supported", bs)
	}
	d.bs = int64(bs)
	d.bm = v1BitmapBytes(bs)
	d.nblocks = (d.size + d.bs - 1) / d.bs
	if int64(h.MaxTableEntries) < d.nblocks {
		return nil, corrupt(path, "vhd-max-table-entries", "the BAT has %d entries but the virtual size needs %d", h.MaxTableEntries, d.nblocks)
	}
	if h.TableOffset < v1FooterSize || h.TableOffset > uint64(d.dataEnd) {
		return nil, corrupt(path, "vhd-bat-range", "BAT offset 0x%X is outside the file (%d bytes)", h.TableOffset, size)
	}
	batOff := int64(h.TableOffset)
	if batOff+int64(h.MaxTableEntries)*4 > d.dataEnd {
		return nil, corrupt(path, "vhd-max-table-entries", "a BAT of %d entries at 0x%X does not fit in the file (%d bytes)", h.MaxTableEntries, batOff, size)
	}
	d.bat, err = v1LoadBAT(f, batOff, d.nblocks)
	if err != nil {
		return nil, ioErr(err)
	}
	d.metaEnd = max(d.hdrOff+v1HeaderSize, batOff+v1AlignUp(int64(h.MaxTableEntries)*4, 512))

	// 5. Parent locator (differencing only).
	if d.typ == v1TypeDiff {
		if err := d.parseLocators(); err != nil {
			return nil, ioErr(err)
		}
	}
	return d, nil
}

// parseLocators decodes the parent fields of the header and the locator
// entries that are sane; others are recorded in locBad and skipped.
func (d *v1Disk) parseLocators() error {
	h := &d.hdr
	loc := &ParentLocator{
		ParentUniqueID: GUID(h.ParentUniqueID),
		ParentName:     v1DecodeUTF16(h.ParentName[:], true),
	}
	if h.ParentTimestamp != 0 {
		loc.ParentTimestamp = v1Time(h.ParentTimestamp)
	}
	d.locRefs = nil
	d.locBad = nil
	bad := func(i int, l v1Locator, format string, args ...any) {
		d.locBad = append(d.locBad, Finding{Code: "vhd-locator-range", Severity: SevError, Path: d.path,
			Message: fmt.Sprintf("parent locator %d (%s): ", i, v1CodeName(l.Code)) + fmt.Sprintf(format, args...)})
	}
	for i, l := range h.Locators {
		if l.Code == v1PlatNone {
			continue
		}
		space, ok := l.space()
		switch {
		case !ok:
			bad(i, l, "data space %d is neither a sector count nor a multiple of 512", l.DataSpace)
			continue
		case int64(l.DataLen) > v1MaxLocatorLen:
			bad(i, l, "data length %d exceeds %d bytes", l.DataLen, v1MaxLocatorLen)
			continue
		case int64(l.DataLen) > space:
			bad(i, l, "data length %d exceeds its space of %d bytes", l.DataLen, space)
			continue
		case l.DataOff < v1FooterSize || l.DataOff > uint64(d.dataEnd) || int64(l.DataOff)+int64(l.DataLen) > d.dataEnd:
			bad(i, l, "data at 0x%X (+%d) is outside the file (%d bytes)", l.DataOff, l.DataLen, d.fileSize)
			continue
		}
		off := int64(l.DataOff)
		buf := make([]byte, l.DataLen)
		if err := readFull(d.f, buf, off); err != nil {
			return err
		}
		name := v1CodeName(l.Code)
		val := v1DecodeLocatorData(l.Code, buf)
		loc.Entries = append(loc.Entries, LocatorEntry{Key: name, Value: val})
		switch l.Code {
		case v1PlatW2ru, v1PlatWi2r:
			if loc.RelativePath == "" || (l.Code == v1PlatW2ru && !d.hasCode(v1PlatW2ru)) {
				loc.RelativePath = val
			}
		case v1PlatW2ku, v1PlatWi2k:
			if loc.AbsolutePath == "" || (l.Code == v1PlatW2ku && !d.hasCode(v1PlatW2ku)) {
				loc.AbsolutePath = val
			}
		}
		d.locRefs = append(d.locRefs, v1LocRef{idx: i, code: l.Code, off: off, len: int64(l.DataLen), space: space})
		// Locator data lies in front of the blocks; the space may be a
		// generous reservation, bounded by the file.
		d.metaEnd = max(d.metaEnd, min(off+space, d.dataEnd))
	}
	d.loc = loc
	return nil
}

// hasCode reports whether a valid locator entry with code was seen so far.
func (d *v1Disk) hasCode(code uint32) bool {
	for _, r := range d.locRefs {
		if r.code == code {
			return true
		}
	}
	return false
}

func (d *v1Disk) info() Info {
	ft := &d.ft
	inf := Info{
		Format:             FormatVHD,
		VirtualSize:        d.size,
		FileSize:           d.fileSize,
		LogicalSectorSize:  512,
		PhysicalSectorSize: 512,
		DiskID:             GUID(ft.UniqueID),
		UniqueID:           GUID(ft.UniqueID),
		Creator:            fmt.Sprintf("%s %d.%d %s", v1FourCC(ft.CreatorApp[:]), ft.CreatorVersion>>16, ft.CreatorVersion&0xFFFF, v1FourCC(ft.CreatorHost[:])),
		Created:            v1Time(ft.Timestamp),
	}
	switch d.typ {
	case v1TypeFixed:
		inf.Type = TypeFixed
	case v1TypeDynamic:
		inf.Type = TypeDynamic
		inf.BlockSize = uint32(d.bs)
	case v1TypeDiff:
		inf.Type = TypeDifferencing
		inf.BlockSize = uint32(d.bs)
	}
	return inf
}

func (d *v1Disk) parentLocator() *ParentLocator {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.typ != v1TypeDiff || d.loc == nil {
		return nil
	}
	c := *d.loc
	c.Entries = append([]LocatorEntry(nil), d.loc.Entries...)
	return &c
}

// bitmap returns the sector bitmap of block b stored at blockOff.
func (d *v1Disk) bitmap(b, blockOff int64) ([]byte, error) {
	if d.bmBlock == b && d.bmData != nil {
		return d.bmData, nil
	}
	buf := make([]byte, d.bm)
	if err := readFull(d.f, buf, blockOff); err != nil {
		return nil, d.ioErr(err)
	}
	d.bmBlock, d.bmData = b, buf
	return buf, nil
}

func (d *v1Disk) ioErr(err error) error {
	if _, ok := err.(*Error); ok {
		return err
	}
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return corrupt(d.path, "vhd-truncated", "the file ends inside a structure")
	}
	return &Error{Path: d.path, Code: "io", Msg: osMsg(err), Err: err}
}

// blockAt returns the file offset of block b's bitmap, or -1 when b is not
// allocated. It validates that the block lies inside the file.
func (d *v1Disk) blockAt(b int64) (int64, error) {
	e, err := d.bat.get(b)
	if err != nil {
		return 0, d.ioErr(err)
	}
	if e == v1Unallocated {
		return -1, nil
	}
	off := int64(e) * 512
	used := min(d.bs, d.size-b*d.bs) // bytes of the block inside the virtual disk
	if off < v1FooterSize || off+d.bm+used > d.dataEnd {
		return 0, corrupt(d.path, "vhd-bat-past-eof", "block %d at 0x%X lies outside the file (%d bytes)", b, off, d.fileSize)
	}
	return off, nil
}

func (d *v1Disk) lookup(off, maxLen int64) (Run, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lookupLocked(off, maxLen)
}

func (d *v1Disk) lookupLocked(off, maxLen int64) (Run, error) {
	if off < 0 || off >= d.size || maxLen <= 0 {
		return Run{}, newErr(d.path, ErrOutOfRange, "out-of-range", "lookup at %d (+%d) is outside the virtual disk (%d bytes)", off, maxLen, d.size)
	}
	maxLen = min(maxLen, d.size-off)
	if d.typ == v1TypeFixed {
		return Run{Off: off, Len: maxLen, State: StateData, FileOff: off}, nil
	}
	b := off / d.bs
	in := off - b*d.bs
	n := min(maxLen, d.bs-in)
	boff, err := d.blockAt(b)
	if err != nil {
		return Run{}, err
	}
	if boff < 0 {
		// Extend over following unallocated blocks (cheap in memory).
		for n < maxLen && d.bat.mem != nil {
			nb := b + 1 + (n-(d.bs-in))/d.bs
			if nb >= d.nblocks || d.bat.mem[nb] != v1Unallocated {
				break
			}
			n = min(maxLen, n+d.bs)
		}
		return Run{Off: off, Len: n, State: StateAbsent}, nil
	}
	bmp, err := d.bitmap(b, boff)
	if err != nil {
		return Run{}, err
	}
	s0 := in / 512
	sEnd := (in + n + 511) / 512
	want := bmp[s0/8]&(0x80>>(s0%8)) != 0
	s := s0 + 1
	for s < sEnd {
		if s%8 == 0 && sEnd-s >= 8 {
			c := bmp[s/8]
			if (want && c == 0xFF) || (!want && c == 0) {
				s += 8
				continue
			}
		}
		if (bmp[s/8]&(0x80>>(s%8)) != 0) != want {
			break
		}
		s++
	}
	l := min(s*512-in, n)
	if want {
		return Run{Off: off, Len: l, State: StateData, FileOff: boff + d.bm + in}, nil
	}
	return Run{Off: off, Len: l, State: StateAbsent}, nil
}

func (d *v1Disk) flush() error {
	if !d.rw {
		return nil
	}
	if len(d.pend) > 0 {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.commitPending()
	}
	if err := d.f.Sync(); err != nil {
		return d.ioErr(err)
	}
	return nil
}

func (d *v1Disk) close() error {
	var first error
	if d.rw {
		first = d.flush()
	}
	if err := d.f.Close(); err != nil && first == nil {
		first = d.ioErr(err)
	}
	return first
}

// v1NextBlock returns where a block placed at or after pos starts so that
// its data is 4 KiB aligned (blocks of at least 4 KiB; smaller blocks are
// packed).
func v1NextBlock(pos, bm, bs int64) int64 {
	pos = v1AlignUp(pos, 512)
	if bs < v1DataAlign {
		return pos
	}
	return v1AlignUp(pos+bm, v1DataAlign) - bm
}

// createVHD writes a new VHD described by spec (already normalized) into the
// empty file f and opens it.
func createVHD(f File, path string, spec CreateSpec, np *NewParent) (backend, error) {
	ft := v1Footer{
		Features:       v1FeatureReserve,
		FormatVersion:  v1FormatVersion,
		Timestamp:      v1Stamp(time.Now()),
		CreatorApp:     [4]byte{'w', 'i', 'n', ' '},
		CreatorVersion: 0x000A0000,
		CreatorHost:    [4]byte{'W', 'i', '2', 'k'},
		OriginalSize:   uint64(spec.Size),
		CurrentSize:    uint64(spec.Size),
		UniqueID:       spec.DiskID,
	}
	ft.Cylinders, ft.Heads, ft.SPT = v1Geometry(spec.Size)
	wrap := func(err error) error {
		if _, ok := err.(*Error); ok {
			return err
		}
		return &Error{Path: path, Code: "io", Msg: osMsg(err), Err: err}
	}
	switch spec.Type {
	case TypeFixed:
		ft.DiskType = v1TypeFixed
		ft.DataOffset = v1NoDataOffset
		if err := f.Truncate(spec.Size); err != nil {
			return nil, wrap(err)
		}
		if err := writeFull(f, ft.encode(), spec.Size); err != nil {
			return nil, wrap(err)
		}
		return openVHD(f, path, true)
	case TypeDynamic:
		ft.DiskType = v1TypeDynamic
	case TypeDifferencing:
		ft.DiskType = v1TypeDiff
		if np == nil {
			return nil, newErr(path, ErrInvalidSpec, "invalid-spec", "a differencing disk needs its parent's description")
		}
	default:
		return nil, newErr(path, ErrInvalidSpec, "invalid-spec", "unknown disk type %q", spec.Type)
	}
	ft.DataOffset = 512
	bs := int64(spec.BlockSize)
	if bs < v1MinBlockSize || bs > v1MaxBlockSize || bs&(bs-1) != 0 {
		return nil, newErr(path, ErrInvalidSpec, "invalid-spec", "VHD block size %d must be a power of two between 512 bytes and 256 MiB", bs)
	}
	nb := (spec.Size + bs - 1) / bs
	h := v1Header{
		DataOffset:      v1NoDataOffset,
		TableOffset:     1536,
		HeaderVersion:   v1HeaderVersion,
		MaxTableEntries: uint32(nb),
		BlockSize:       uint32(bs),
	}
	batBytes := v1AlignUp(nb*4, 512)
	metaEnd := 1536 + batBytes
	var locData [][]byte
	if ft.DiskType == v1TypeDiff {
		h.ParentUniqueID = np.UniqueID
		h.ParentTimestamp = v1Stamp(np.Timestamp)
		h.ParentName = v1EncodeParentName(np.Name)
		paths := []struct {
			code uint32
			p    string
		}{{v1PlatW2ru, np.RelativePath}, {v1PlatW2ku, np.AbsolutePath}}
		for i, pp := range paths {
			slot := metaEnd + int64(i)*v1LocatorSlot
			if pp.p == "" {
				continue
			}
			data := v1UTF16LE(pp.p)
			if int64(len(data)) > v1LocatorSlot {
				return nil, newErr(path, ErrInvalidSpec, "vhd-locator-too-long", "parent path of %d bytes does not fit the %d-byte locator slot", len(data), v1LocatorSlot)
			}
			h.Locators[len(locData)] = v1Locator{Code: pp.code, DataSpace: v1LocatorSlot, DataLen: uint32(len(data)), DataOff: uint64(slot)}
			locData = append(locData, data)
		}
		metaEnd += 2 * v1LocatorSlot
	}
	footerOff := v1NextBlock(metaEnd, v1BitmapBytes(uint32(bs)), bs)
	if footerOff/512 > 0xFFFFFFFE {
		return nil, newErr(path, ErrInvalidSpec, "invalid-spec", "the BAT for %d blocks is too large", nb)
	}

	// BAT: all unallocated, in chunks.
	chunk := make([]byte, min(batBytes, 1*MiB))
	for i := range chunk {
		chunk[i] = 0xFF
	}
	for o := int64(0); o < batBytes; o += int64(len(chunk)) {
		n := min(int64(len(chunk)), batBytes-o)
		if err := writeFull(f, chunk[:n], 1536+o); err != nil {
			return nil, wrap(err)
		}
	}
	for i, data := range locData {
		if err := writeFull(f, data, int64(h.Locators[i].DataOff)); err != nil {
			return nil, wrap(err)
		}
	}
	if err := writeFull(f, h.encode(), 512); err != nil {
		return nil, wrap(err)
	}
	fb := ft.encode()
	if err := writeFull(f, fb, footerOff); err != nil {
		return nil, wrap(err)
	}
	if err := writeFull(f, fb, 0); err != nil {
		return nil, wrap(err)
	}
	return openVHD(f, path, true)
}
