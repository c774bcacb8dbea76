package vhd

// VHDX (MS-VHDX) on-disk structures: constants, little-endian encode/decode
// and CRC-32C. Nothing here does I/O. See FORMATS.md §2.

import (
	"encoding/binary"
	"hash/crc32"
	"strings"
	"unicode/utf16"
)

const (
	vxHeaderSection = 1 * MiB
	vxHeader1Off    = 64 * KiB
	vxHeader2Off    = 128 * KiB
	vxRegion1Off    = 192 * KiB
	vxRegion2Off    = 256 * KiB
	vxHeaderSize    = 4 * KiB
	vxRegionSize    = 64 * KiB
	vxMetaTableSize = 64 * KiB
	vxMaxEntries    = 2047
	vxMaxItemLen    = 1 * MiB
	vxSector        = 4 * KiB // log sector / metadata page unit
	vxSBBlockSize   = 1 * MiB
	vxCreatorLen    = 512

	// Payload BAT entry states.
	vxNotPresent = 0
	vxUndefined  = 1
	vxZero       = 2
	vxUnmapped   = 3
	vxUnmapped95 = 5
	vxFull       = 6
	vxPartial    = 7
	// Sector bitmap entry states.
	vxSBNotPresent = 0
	vxSBPresent    = 6

	vxOffMask      = 0xFFFFFFFFFFF00000
	vxReservedMask = 0x00000000000FFFF8

	// Metadata entry flags.
	vxFlagIsUser        = 1
	vxFlagIsVirtualDisk = 2
	vxFlagIsRequired    = 4

	// File parameter flags.
	vxLeaveBlockAllocated = 1
	vxHasParent           = 2

	// vxMaxLocatorWrite bounds the parent locator item we write (paths are short).
	vxMaxLocatorWrite = 64 * KiB
)

var (
	vxRegionBAT      = vxMustGUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
	vxRegionMetadata = vxMustGUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")

	vxItemFileParams  = vxMustGUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
	vxItemVirtualSize = vxMustGUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
	vxItemDiskID      = vxMustGUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
	vxItemLogical     = vxMustGUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
	vxItemPhysical    = vxMustGUID("CDA348C7-445D-4471-9CC9-E9885251C556")
	vxItemLocator     = vxMustGUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")

	vxLocatorTypeVHDX = vxMustGUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")

	vxCRCTable = crc32.MakeTable(crc32.Castagnoli)
)

func vxMustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// vxCRC computes CRC-32C of p with the 4 bytes at csOff taken as zero.
func vxCRC(p []byte, csOff int) uint32 {
	c := crc32.Update(0, vxCRCTable, p[:csOff])
	c = crc32.Update(c, vxCRCTable, []byte{0, 0, 0, 0})
	return crc32.Update(c, vxCRCTable, p[csOff+4:])
}

func vxU16(p []byte) uint16      { return binary.LittleEndian.Uint16(p) }
func vxU32(p []byte) uint32      { return binary.LittleEndian.Uint32(p) }
func vxU64(p []byte) uint64      { return binary.LittleEndian.Uint64(p) }
func vxPut16(p []byte, v uint16) { binary.LittleEndian.PutUint16(p, v) }
func vxPut32(p []byte, v uint32) { binary.LittleEndian.PutUint32(p, v) }
func vxPut64(p []byte, v uint64) { binary.LittleEndian.PutUint64(p, v) }

func vxGetGUID(p []byte) (g GUID) { copy(g[:], p[:16]); return }

// utf16le decodes UTF-16LE bytes (odd trailing byte ignored).
func vxUTF16(p []byte) string {
	u := make([]uint16, len(p)/2)
	for i := range u {
		u[i] = vxU16(p[2*i:])
	}
	return string(utf16.Decode(u))
}

// toUTF16LE encodes s as UTF-16LE.
func vxToUTF16(s string) []byte {
	u := utf16.Encode([]rune(s))
	p := make([]byte, 2*len(u))
	for i, c := range u {
		vxPut16(p[2*i:], c)
	}
	return p
}

// vxCreator decodes the creator field of the file type identifier.
func vxCreator(p []byte) string {
	s := vxUTF16(p)
	if i := strings.IndexRune(s, 0); i >= 0 {
		s = s[:i]
	}
	return strings.TrimRight(s, " ")
}

// vxHeader is one of the two headers.
type vxHeader struct {
	Seq           uint64
	FileWriteGUID GUID
	DataWriteGUID GUID
	LogGUID       GUID
	LogVersion    uint16
	Version       uint16
	LogLength     uint32
	LogOffset     uint64
}

func (h *vxHeader) encode() []byte {
	p := make([]byte, vxHeaderSize)
	copy(p, "head")
	vxPut64(p[8:], h.Seq)
	copy(p[16:], h.FileWriteGUID[:])
	copy(p[32:], h.DataWriteGUID[:])
	copy(p[48:], h.LogGUID[:])
	vxPut16(p[64:], h.LogVersion)
	vxPut16(p[66:], h.Version)
	vxPut32(p[68:], h.LogLength)
	vxPut64(p[72:], h.LogOffset)
	vxPut32(p[4:], vxCRC(p, 4))
	return p
}

// decodeHeader returns the header and whether signature and CRC are valid.
func decodeVXHeader(p []byte) (vxHeader, bool) {
	var h vxHeader
	if len(p) < vxHeaderSize || string(p[:4]) != "head" || vxU32(p[4:]) != vxCRC(p[:vxHeaderSize], 4) {
		return h, false
	}
	h.Seq = vxU64(p[8:])
	h.FileWriteGUID = vxGetGUID(p[16:])
	h.DataWriteGUID = vxGetGUID(p[32:])
	h.LogGUID = vxGetGUID(p[48:])
	h.LogVersion = vxU16(p[64:])
	h.Version = vxU16(p[66:])
	h.LogLength = vxU32(p[68:])
	h.LogOffset = vxU64(p[72:])
	return h, true
}

// vxRegion is a region table entry.
type vxRegion struct {
	GUID     GUID
	Off      uint64
	Len      uint32
	Required bool
}

// decodeVXRegionTable decodes a 64 KiB region table; ok is false on a bad
// signature, CRC or entry count.
func decodeVXRegionTable(p []byte) ([]vxRegion, bool) {
	if len(p) < vxRegionSize || string(p[:4]) != "regi" || vxU32(p[4:]) != vxCRC(p[:vxRegionSize], 4) {
		return nil, false
	}
	n := vxU32(p[8:])
	if n > vxMaxEntries {
		return nil, false
	}
	out := make([]vxRegion, n)
	for i := range out {
		e := p[16+32*i:]
		out[i] = vxRegion{GUID: vxGetGUID(e), Off: vxU64(e[16:]), Len: vxU32(e[24:]), Required: vxU32(e[28:])&1 != 0}
	}
	return out, true
}

func encodeVXRegionTable(rs []vxRegion) []byte {
	p := make([]byte, vxRegionSize)
	copy(p, "regi")
	vxPut32(p[8:], uint32(len(rs)))
	for i, r := range rs {
		e := p[16+32*i:]
		copy(e, r.GUID[:])
		vxPut64(e[16:], r.Off)
		vxPut32(e[24:], r.Len)
		if r.Required {
			vxPut32(e[28:], 1)
		}
	}
	vxPut32(p[4:], vxCRC(p, 4))
	return p
}

// vxMetaEntry is a metadata table entry.
type vxMetaEntry struct {
	ID    GUID
	Off   uint32
	Len   uint32
	Flags uint32
	Res2  uint32
}

func (e vxMetaEntry) isUser() bool     { return e.Flags&vxFlagIsUser != 0 }
func (e vxMetaEntry) isRequired() bool { return e.Flags&vxFlagIsRequired != 0 }

// decodeVXMetaTable decodes the 64 KiB metadata table.
func decodeVXMetaTable(p []byte) ([]vxMetaEntry, bool) {
	if len(p) < vxMetaTableSize || string(p[:8]) != "metadata" {
		return nil, false
	}
	n := int(vxU16(p[10:]))
	if n > vxMaxEntries {
		return nil, false
	}
	out := make([]vxMetaEntry, n)
	for i := range out {
		e := p[32+32*i:]
		out[i] = vxMetaEntry{ID: vxGetGUID(e), Off: vxU32(e[16:]), Len: vxU32(e[20:]), Flags: vxU32(e[24:]), Res2: vxU32(e[28:])}
	}
	return out, true
}

func encodeVXMetaEntry(p []byte, e vxMetaEntry) {
	copy(p, e.ID[:])
	vxPut32(p[16:], e.Off)
	vxPut32(p[20:], e.Len)
	vxPut32(p[24:], e.Flags)
	vxPut32(p[28:], e.Res2)
}

// encodeVXLocator builds a parent locator item from key/value pairs, packed
// the way Windows does: header, entry table, then key,value,key,value.
func encodeVXLocator(kv []LocatorEntry) []byte {
	n := len(kv)
	size := 20 + 12*n
	type enc struct{ k, v []byte }
	es := make([]enc, n)
	for i, e := range kv {
		es[i] = enc{vxToUTF16(e.Key), vxToUTF16(e.Value)}
		size += len(es[i].k) + len(es[i].v)
	}
	p := make([]byte, size)
	copy(p, vxLocatorTypeVHDX[:])
	vxPut16(p[18:], uint16(n))
	pos := 20 + 12*n
	for i, e := range es {
		t := p[20+12*i:]
		vxPut32(t[0:], uint32(pos))
		copy(p[pos:], e.k)
		pos += len(e.k)
		vxPut32(t[4:], uint32(pos))
		copy(p[pos:], e.v)
		pos += len(e.v)
		vxPut16(t[8:], uint16(len(e.k)))
		vxPut16(t[10:], uint16(len(e.v)))
	}
	return p
}

// decodeVXLocator parses a parent locator item. It returns a message
// describing the first problem, or "" when the item is sound.
func decodeVXLocator(p []byte) (typ GUID, kv []LocatorEntry, problem string) {
	if len(p) < 20 {
		return typ, nil, "parent locator shorter than its 20-byte header"
	}
	typ = vxGetGUID(p)
	n := int(vxU16(p[18:]))
	if 20+12*n > len(p) {
		return typ, nil, "parent locator entry table runs past the item"
	}
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		t := p[20+12*i:]
		ko, vo := int64(vxU32(t[0:])), int64(vxU32(t[4:]))
		kl, vl := int64(vxU16(t[8:])), int64(vxU16(t[10:]))
		if ko+kl > int64(len(p)) || vo+vl > int64(len(p)) {
			return typ, kv, "parent locator key or value runs past the item"
		}
		if kl == 0 || kl%2 != 0 || vl%2 != 0 {
			return typ, kv, "parent locator key or value has an invalid length"
		}
		k := vxUTF16(p[ko : ko+kl])
		if seen[k] {
			return typ, kv, "parent locator key " + k + " appears twice"
		}
		seen[k] = true
		kv = append(kv, LocatorEntry{Key: k, Value: vxUTF16(p[vo : vo+vl])})
	}
	return typ, kv, ""
}

// Log structures.

type vxLogEntryHeader struct {
	Checksum  uint32
	Length    uint32
	Tail      uint32
	Seq       uint64
	DescCount uint32
	LogGUID   GUID
	Flushed   uint64
	Last      uint64
}

func decodeVXLogEntryHeader(p []byte) (vxLogEntryHeader, bool) {
	var h vxLogEntryHeader
	if string(p[:4]) != "loge" {
		return h, false
	}
	h.Checksum = vxU32(p[4:])
	h.Length = vxU32(p[8:])
	h.Tail = vxU32(p[12:])
	h.Seq = vxU64(p[16:])
	h.DescCount = vxU32(p[24:])
	h.LogGUID = vxGetGUID(p[32:])
	h.Flushed = vxU64(p[48:])
	h.Last = vxU64(p[56:])
	return h, true
}

func (h *vxLogEntryHeader) encode(p []byte) {
	copy(p, "loge")
	vxPut32(p[8:], h.Length)
	vxPut32(p[12:], h.Tail)
	vxPut64(p[16:], h.Seq)
	vxPut32(p[24:], h.DescCount)
	copy(p[32:], h.LogGUID[:])
	vxPut64(p[48:], h.Flushed)
	vxPut64(p[56:], h.Last)
}

// vxDesc is a log descriptor: a data descriptor (zero == false) with its
// leading/trailing bytes, or a zero descriptor.
type vxDesc struct {
	zero     bool
	zeroLen  uint64
	trailing uint32
	leading  uint64
	fileOff  uint64
	seq      uint64
}

func decodeVXDesc(p []byte) (vxDesc, bool) {
	var d vxDesc
	switch string(p[:4]) {
	case "zero":
		d.zero = true
		if vxU32(p[4:]) != 0 {
			return d, false
		}
		d.zeroLen = vxU64(p[8:])
	case "desc":
		d.trailing = vxU32(p[4:])
		d.leading = vxU64(p[8:])
	default:
		return d, false
	}
	d.fileOff = vxU64(p[16:])
	d.seq = vxU64(p[24:])
	return d, true
}

func (d *vxDesc) encode(p []byte) {
	if d.zero {
		copy(p, "zero")
		vxPut64(p[8:], d.zeroLen)
	} else {
		copy(p, "desc")
		vxPut32(p[4:], d.trailing)
		vxPut64(p[8:], d.leading)
	}
	vxPut64(p[16:], d.fileOff)
	vxPut64(p[24:], d.seq)
}

// vxDescSectors is the number of descriptor sectors for n descriptors.
func vxDescSectors(n uint64) uint64 { return (n + 2 + 127) / 128 }

// vxGeometry holds the values derived from the metadata.
type vxGeometry struct {
	vsize    int64
	bs       int64 // block size
	lss      int64
	pss      int64
	cr       int64 // chunk ratio
	spb      int64 // sectors per block
	nb       int64 // payload blocks
	nsb      int64 // sector bitmap blocks
	entries  int64 // BAT entries required
	diff     bool
	leaveAll bool
}

func newVXGeometry(vsize int64, bs, lss, pss uint32, flags uint32) vxGeometry {
	g := vxGeometry{vsize: vsize, bs: int64(bs), lss: int64(lss), pss: int64(pss)}
	g.diff = flags&vxHasParent != 0
	g.leaveAll = flags&vxLeaveBlockAllocated != 0
	g.cr = (int64(1) << 23) * g.lss / g.bs
	g.spb = g.bs / g.lss
	g.nb = (vsize + g.bs - 1) / g.bs
	g.nsb = (g.nb + g.cr - 1) / g.cr
	if g.diff {
		g.entries = g.nsb * (g.cr + 1)
	} else {
		g.entries = g.nb + (g.nb-1)/g.cr
	}
	return g
}

// batIndex is the BAT index of payload block b.
func (g *vxGeometry) batIndex(b int64) int64 { return b + b/g.cr }

// sbIndex is the BAT index of the sector bitmap block of chunk k.
func (g *vxGeometry) sbIndex(k int64) int64 { return k*(g.cr+1) + g.cr }

// diffEntries is the BAT entry count of a differencing disk of this geometry.
func (g *vxGeometry) diffEntries() int64 { return g.nsb * (g.cr + 1) }

func vxRoundUp(v, a int64) int64 { return (v + a - 1) / a * a }
