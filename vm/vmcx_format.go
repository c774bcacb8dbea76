package vm

// VMCX/VMRS container on-disk structures: file header, object table, replay
// log, key table and key entry, with their CRC-32 checksums (FORMATS.md §5.2;
// layout per fox-it/dissect.hypervisor, checksums verified on the real
// samples). Every integer is little-endian; structures are packed.

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

const (
	// File header: two copies, one 4 KiB page each; the valid one with the
	// higher sequence is active.
	vmcxHeader1Offset = 0x0000
	vmcxHeader2Offset = 0x1000
	vmcxHeaderLen     = 46 // bytes covered by the header checksum
	vmcxSignature     = 0x01282014
	vmcxVersion       = 0x400 // the only version seen (and read)

	// Object table: at a fixed offset; 18-byte entries.
	vmcxObjectTableOffset    = 0x2000
	vmcxObjectTableSignature = 0x01110001
	vmcxObjectTableHeaderLen = 8
	vmcxObjectEntryLen       = 18

	// Object types in the object table.
	vmcxObjUnused      = 0
	vmcxObjObjectTable = 1
	vmcxObjKeyTable    = 2
	vmcxObjFile        = 3
	vmcxObjFree        = 4
	vmcxObjReplayLog   = 6

	// Replay log header (34 bytes); entries follow (28 bytes each), room for
	// MaxEntries of them; the data the entries write follows, anywhere in the
	// log after that room (at 0x1000 in every real file).
	vmcxReplayLogSignature = 0x01110003
	vmcxReplayLogHeaderLen = 34
	vmcxReplayEntryLen     = 28

	// Key table header (10 bytes); key entries follow back to back.
	vmcxKeyTableSignature = 0x0002
	vmcxKeyTableHeaderLen = 10

	// Key entry header (21 bytes), then the NUL-terminated key, then the value.
	vmcxEntryHeaderLen      = 21
	vmcxEntryChecksumOffset = 12

	// Value types (low byte of the entry type).
	vmcxTypeFree    = 1
	vmcxTypeUnknown = 2
	vmcxTypeInt     = 3
	vmcxTypeUint    = 4
	vmcxTypeDouble  = 5
	vmcxTypeString  = 6
	vmcxTypeBlob    = 7
	vmcxTypeBool    = 8
	vmcxTypeNode    = 9

	// Entry flags (high byte of the entry type).
	vmcxFlagFileObject = 0x01 // value = u32 size + u64 offset of a file object

	vmcxFileObjectPtrLen = 12
	vmcxNodeValueLen     = 12 // 8 unknown bytes + u32 insertion sequence
)

// Limits that keep a hostile file from making us allocate or loop without
// bound. Real configurations are far below all of them.
const (
	vmcxMaxObjectEntries  = 1 << 16  // per object table (real: 227)
	vmcxMaxObjectTables   = 16       // object tables followed (real: 1)
	vmcxMaxKeyTables      = 4096     // key-table objects considered (real: ≤ 8)
	vmcxMaxKeyTableSize   = 1 << 20  // one key table (real: 4 KiB)
	vmcxMaxKeyTableBytes  = 64 << 20 // all active key tables together
	vmcxMaxValueSize      = 16 << 20 // one value held in a file object
	vmcxMaxProblems       = 64       // entry-level problems recorded verbatim
	vmcxMaxReplayLogCount = 1 << 20  // sanity bound on the replay log's count
	vmcxMaxReplayBytes    = 64 << 20 // all replayed writes together (real: ≤ 36 KiB)
)

var le = binary.LittleEndian

// crcZeroed returns the CRC-32/IEEE of b with the 4 bytes at off taken as
// zero (the checksum field), without copying b.
func crcZeroed(b []byte, off int) uint32 {
	var zero [4]byte
	c := crc32.Update(0, crc32.IEEETable, b[:off])
	c = crc32.Update(c, crc32.IEEETable, zero[:])
	return crc32.Update(c, crc32.IEEETable, b[off+4:])
}

// vmcxHeader is the file header.
type vmcxHeader struct {
	Signature       uint32
	Checksum        uint32
	Sequence        uint16
	Version         uint32
	Unknown         uint64
	Alignment       uint32
	ReplayLogOffset uint64
	ReplayLogSize   uint64
	HeaderSize      uint32
}

// decodeVMCXHeader decodes b (at least vmcxHeaderLen bytes).
func decodeVMCXHeader(b []byte) vmcxHeader {
	return vmcxHeader{
		Signature:       le.Uint32(b[0:]),
		Checksum:        le.Uint32(b[4:]),
		Sequence:        le.Uint16(b[8:]),
		Version:         le.Uint32(b[10:]),
		Unknown:         le.Uint64(b[14:]),
		Alignment:       le.Uint32(b[22:]),
		ReplayLogOffset: le.Uint64(b[26:]),
		ReplayLogSize:   le.Uint64(b[34:]),
		HeaderSize:      le.Uint32(b[42:]),
	}
}

// vmcxHeaderChecksum computes the header checksum of b[:vmcxHeaderLen].
func vmcxHeaderChecksum(b []byte) uint32 { return crcZeroed(b[:vmcxHeaderLen], 4) }

// vmcxObjectEntry is one object-table entry.
type vmcxObjectEntry struct {
	Type      uint8
	Checksum  uint32
	Offset    uint64
	Size      uint32
	Allocated uint8
}

func decodeVMCXObjectEntry(b []byte) vmcxObjectEntry {
	return vmcxObjectEntry{
		Type:      b[0],
		Checksum:  le.Uint32(b[1:]),
		Offset:    le.Uint64(b[5:]),
		Size:      le.Uint32(b[13:]),
		Allocated: b[17],
	}
}

func vmcxObjectEntryChecksum(b []byte) uint32 { return crcZeroed(b[:vmcxObjectEntryLen], 1) }

// vmcxReplayLog is the replay-log header.
type vmcxReplayLog struct {
	Signature  uint32
	Checksum   uint32
	Count      uint32
	MaxEntries uint32
}

func decodeVMCXReplayLog(b []byte) vmcxReplayLog {
	return vmcxReplayLog{
		Signature:  le.Uint32(b[0:]),
		Checksum:   le.Uint32(b[4:]),
		Count:      le.Uint32(b[8:]),
		MaxEntries: le.Uint32(b[13:]),
	}
}

func vmcxReplayLogChecksum(b []byte) uint32 { return crcZeroed(b[:vmcxReplayLogHeaderLen], 4) }

// unknownFields names the replay-log header fields whose meaning is not
// known and that are not zero (the u8 at +12, the four u32 at +17..+32 and
// the u8 at +33 are zero in every real file), or "".
func (vmcxReplayLog) unknownFields(b []byte) string {
	var f []string
	if b[12] != 0 {
		f = append(f, fmt.Sprintf("+12 = 0x%x", b[12]))
	}
	for o := 17; o < 33; o += 4 {
		if v := le.Uint32(b[o:]); v != 0 {
			f = append(f, fmt.Sprintf("+%d = 0x%x", o, v))
		}
	}
	if b[33] != 0 {
		f = append(f, fmt.Sprintf("+33 = 0x%x", b[33]))
	}
	if len(f) == 0 {
		return ""
	}
	return "fields " + strings.Join(f, ", ")
}

// vmcxReplayEntry is one replay-log entry: write Size bytes, kept in the log
// at DataOffset (from the start of the log), at file offset Target. Worked
// out on the real samples (FORMATS.md §5.2 gives the layout only): in all
// four, the entries left from earlier writes (count 0) have valid
// checksums, DataChecksum is the CRC-32 of the Size bytes at log offset
// DataOffset (from 0x1000 on, most packed one after the other), and the
// data of the first entries equals the file's bytes at Target (key tables,
// and object-table entries at 0x2000 + 18·n): what was written there.
type vmcxReplayEntry struct {
	Target       uint64
	Size         uint32
	DataOffset   uint32
	Unknown      uint32 // zero in every real file
	Checksum     uint32 // CRC-32 of the entry with this field zero
	DataChecksum uint32 // CRC-32 of the data
}

func decodeVMCXReplayEntry(b []byte) vmcxReplayEntry {
	return vmcxReplayEntry{
		Target:       le.Uint64(b[0:]),
		Size:         le.Uint32(b[8:]),
		DataOffset:   le.Uint32(b[12:]),
		Unknown:      le.Uint32(b[16:]),
		Checksum:     le.Uint32(b[20:]),
		DataChecksum: le.Uint32(b[24:]),
	}
}

func vmcxReplayEntryChecksum(b []byte) uint32 { return crcZeroed(b[:vmcxReplayEntryLen], 20) }

// vmcxKeyTable is a key-table header.
type vmcxKeyTable struct {
	Signature uint16
	Index     uint16
	Sequence  uint16
	Checksum  uint32
}

func decodeVMCXKeyTable(b []byte) vmcxKeyTable {
	return vmcxKeyTable{
		Signature: le.Uint16(b[0:]),
		Index:     le.Uint16(b[2:]),
		Sequence:  le.Uint16(b[4:]),
		Checksum:  le.Uint32(b[6:]),
	}
}

func vmcxKeyTableChecksum(b []byte) uint32 { return crcZeroed(b[:vmcxKeyTableHeaderLen], 6) }

// vmcxEntry is a key-entry header.
type vmcxEntry struct {
	Type        uint16 // low byte value type, high byte flags
	Size        uint32 // whole entry, slack included
	ParentTable uint16 // 0 = a root key
	ParentOff   uint32 // offset of the parent entry inside its table
	Checksum    uint32
	InsertSeq   uint32
	DataOffset  uint8 // key length including its NUL
}

func decodeVMCXEntry(b []byte) vmcxEntry {
	return vmcxEntry{
		Type:        le.Uint16(b[0:]),
		Size:        le.Uint32(b[2:]),
		ParentTable: le.Uint16(b[6:]),
		ParentOff:   le.Uint32(b[8:]),
		Checksum:    le.Uint32(b[12:]),
		InsertSeq:   le.Uint32(b[16:]),
		DataOffset:  b[20],
	}
}

func (e vmcxEntry) valueType() uint8 { return uint8(e.Type) }
func (e vmcxEntry) flags() uint8     { return uint8(e.Type >> 8) }

// vmcxValueLen returns how many value bytes (after the key) the entry's
// checksum covers, given the value bytes v available inside the entry. ok is
// false when the type is not understood or v is too short.
func vmcxValueLen(e vmcxEntry, v []byte) (n int, ok bool) {
	if e.flags()&vmcxFlagFileObject != 0 {
		return vmcxFileObjectPtrLen, len(v) >= vmcxFileObjectPtrLen
	}
	switch e.valueType() {
	case vmcxTypeInt, vmcxTypeUint, vmcxTypeDouble:
		n = 8
	case vmcxTypeBool:
		n = 4
	case vmcxTypeNode:
		n = vmcxNodeValueLen
	case vmcxTypeString, vmcxTypeBlob:
		if len(v) < 4 {
			return 0, false
		}
		l := uint64(le.Uint32(v))
		if l > uint64(len(v)-4) {
			return 0, false
		}
		n = 4 + int(l)
	default:
		return 0, false
	}
	return n, len(v) >= n
}

// vmcxEntryChecksum computes the checksum of entry b given the number of
// value bytes it covers.
func vmcxEntryChecksum(b []byte, dataOffset, valueLen int) uint32 {
	return crcZeroed(b[:vmcxEntryHeaderLen+dataOffset+valueLen], vmcxEntryChecksumOffset)
}

// vmcxKeyName decodes an entry's key (NUL-terminated, UTF-8).
func vmcxKeyName(b []byte) string {
	if i := indexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	s := string(b)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return s
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// decodeUTF16LE decodes UTF-16LE bytes, dropping a trailing odd byte and
// everything from the first NUL unit on.
func decodeUTF16LE(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := le.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// setScalarValue fills k from a fixed-size VMCX value (int, uint, double,
// bool). v has at least the bytes vmcxValueLen reported.
func setScalarValue(k *Key, typ uint8, v []byte) {
	switch typ {
	case vmcxTypeInt:
		k.Kind, k.Int = KindInt, int64(le.Uint64(v))
	case vmcxTypeUint:
		k.Kind, k.Uint = KindUint, le.Uint64(v)
	case vmcxTypeDouble:
		k.Kind, k.Float = KindFloat, math.Float64frombits(le.Uint64(v))
	case vmcxTypeBool:
		k.Kind = KindBool
		if le.Uint32(v) != 0 {
			k.Int = 1
		}
	}
}

// setVarValue fills k from a string or blob value's bytes.
func setVarValue(k *Key, typ uint8, data []byte) {
	k.Size = int64(len(data))
	if typ == vmcxTypeString {
		k.Kind, k.Text = KindString, decodeUTF16LE(data)
		return
	}
	k.Kind, k.Bytes = KindBytes, append([]byte(nil), data...)
}
