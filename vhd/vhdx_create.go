package vhd

// Creating VHDX files with the layout Windows uses: header section, log
// (1 MiB at 1 MiB), metadata region (1 MiB at 2 MiB), BAT at 3 MiB sized for
// a differencing disk, payload after the BAT.

const (
	vxCreateLogOff  = 1 * MiB
	vxCreateLogLen  = 1 * MiB
	vxCreateMetaOff = 2 * MiB
	vxCreateMetaLen = 1 * MiB
	vxCreateBATOff  = 3 * MiB
	vxCreatorName   = "hvsnap"
)

func createVHDX(f File, path string, spec CreateSpec, np *NewParent) (backend, error) {
	var flags uint32
	switch spec.Type {
	case TypeFixed:
		flags = vxLeaveBlockAllocated
	case TypeDifferencing:
		flags = vxHasParent
		if np == nil {
			return nil, newErr(path, ErrInvalidSpec, "invalid-spec", "a differencing disk needs a parent")
		}
	}
	g := newVXGeometry(spec.Size, spec.BlockSize, spec.LogicalSectorSize, spec.PhysicalSectorSize, flags)
	batLen := vxRoundUp(g.diffEntries()*8, MiB)
	payload := int64(vxCreateBATOff) + batLen
	total := payload
	if spec.Type == TypeFixed {
		total += g.nb * g.bs
	}
	if spec.Type == TypeDifferencing {
		// One zero-filled sector-bitmap block per chunk, right after the
		// BAT. libvhdi (vhdimount) reads a chunk's sector bitmap even for
		// NOT_PRESENT blocks of a differencing file; with no bitmap block it
		// reads file offset 0 as the bitmap and serves header bytes instead
		// of the parent's data. Cost: 1 MiB per chunk (4 GiB of virtual disk
		// at 512-byte sectors, 32 GiB at 4096).
		total += g.nsb * MiB
	}
	ioe := func(err error) error { return &Error{Path: path, Code: "io", Msg: osMsg(err), Err: err} }
	// Extend first: everything not written below reads as zeros.
	if err := f.Truncate(total); err != nil {
		return nil, ioe(err)
	}
	// File type identifier.
	id := make([]byte, 8+vxCreatorLen)
	copy(id, "vhdxfile")
	copy(id[8:], vxToUTF16(vxCreatorName))
	if err := writeFull(f, id, 0); err != nil {
		return nil, ioe(err)
	}
	// Region tables.
	rt := encodeVXRegionTable([]vxRegion{
		{GUID: vxRegionBAT, Off: vxCreateBATOff, Len: uint32(batLen), Required: true},
		{GUID: vxRegionMetadata, Off: vxCreateMetaOff, Len: vxCreateMetaLen, Required: true},
	})
	for _, off := range []int64{vxRegion1Off, vxRegion2Off} {
		if err := writeFull(f, rt, off); err != nil {
			return nil, ioe(err)
		}
	}
	// Metadata: table, then the items packed at 64 KiB in Windows' order.
	type item struct {
		id    GUID
		flags uint32
		val   []byte
	}
	fp := make([]byte, 8)
	vxPut32(fp, uint32(g.bs))
	vxPut32(fp[4:], flags)
	vs := make([]byte, 8)
	vxPut64(vs, uint64(spec.Size))
	ls := make([]byte, 4)
	vxPut32(ls, uint32(g.lss))
	ps := make([]byte, 4)
	vxPut32(ps, uint32(g.pss))
	items := []item{
		{vxItemFileParams, vxFlagIsRequired, fp},
		{vxItemVirtualSize, vxFlagIsRequired | vxFlagIsVirtualDisk, vs},
		{vxItemLogical, vxFlagIsRequired | vxFlagIsVirtualDisk, ls},
		{vxItemPhysical, vxFlagIsRequired | vxFlagIsVirtualDisk, ps},
		{vxItemDiskID, vxFlagIsRequired | vxFlagIsVirtualDisk, append([]byte(nil), spec.DiskID[:]...)},
	}
	if np != nil && spec.Type == TypeDifferencing {
		loc := encodeVXLocator(vxLocatorEntries(np))
		if len(loc) > vxMaxLocatorWrite {
			return nil, newErr(path, ErrInvalidSpec, "locator-too-long", "parent locator would be %d bytes (limit %d)", len(loc), vxMaxLocatorWrite)
		}
		items = append(items, item{vxItemLocator, vxFlagIsRequired, loc})
	}
	meta := make([]byte, vxMetaTableSize, vxMetaTableSize+vxMaxLocatorWrite+64)
	copy(meta, "metadata")
	vxPut16(meta[10:], uint16(len(items)))
	pos := uint32(vxMetaTableSize)
	for i, it := range items {
		encodeVXMetaEntry(meta[32+32*i:], vxMetaEntry{ID: it.id, Off: pos, Len: uint32(len(it.val)), Flags: it.flags})
		meta = append(meta, it.val...)
		pos += uint32(len(it.val))
	}
	if err := writeFull(f, meta, vxCreateMetaOff); err != nil {
		return nil, ioe(err)
	}
	// BAT: fixed disks get every block FULLY_PRESENT, contiguous.
	if spec.Type == TypeFixed {
		chunk := make([]byte, 0, MiB)
		off := int64(vxCreateBATOff)
		for idx := int64(0); idx < g.entries; idx++ {
			var e uint64
			if (idx+1)%(g.cr+1) != 0 {
				blk := idx - idx/(g.cr+1)
				e = uint64(payload+blk*g.bs) | vxFull
			}
			chunk = vxAppend64(chunk, e)
			if len(chunk) == cap(chunk) {
				if err := writeFull(f, chunk, off); err != nil {
					return nil, ioe(err)
				}
				off += int64(len(chunk))
				chunk = chunk[:0]
			}
		}
		if len(chunk) > 0 {
			if err := writeFull(f, chunk, off); err != nil {
				return nil, ioe(err)
			}
		}
	}
	if spec.Type == TypeDifferencing {
		var e [8]byte
		for k := int64(0); k < g.nsb; k++ {
			vxPut64(e[:], uint64(payload+k*MiB)|vxSBPresent)
			if err := writeFull(f, e[:], int64(vxCreateBATOff)+(k*(g.cr+1)+g.cr)*8); err != nil {
				return nil, ioe(err)
			}
		}
	}
	// Headers last: both valid, the second current.
	h := vxHeader{
		FileWriteGUID: NewGUID(),
		DataWriteGUID: NewGUID(),
		Version:       1,
		LogLength:     vxCreateLogLen,
		LogOffset:     vxCreateLogOff,
	}
	if err := writeFull(f, h.encode(), vxHeader1Off); err != nil {
		return nil, ioe(err)
	}
	h.Seq = 1
	if err := writeFull(f, h.encode(), vxHeader2Off); err != nil {
		return nil, ioe(err)
	}
	if err := f.Sync(); err != nil {
		return nil, ioe(err)
	}
	b := &vxBackend{f: f, path: path, rw: true, locIdx: -1, cache: newVXPageCache(vxCachePages), logSeq: 1}
	if err := b.open(); err != nil {
		return nil, err
	}
	// The GUIDs are fresh: this session needs no further header update.
	b.fwDone, b.dwDone = true, true
	return b, nil
}

func vxAppend64(p []byte, v uint64) []byte {
	var b [8]byte
	vxPut64(b[:], v)
	return append(p, b[:]...)
}
