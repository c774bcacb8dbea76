package vhd

// VHD 1.0 on-disk structures: footer, dynamic header, parent locators,
// checksum and CHS geometry. Every integer is big-endian (FORMATS.md §1).

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

const (
	v1SectorSize     = 512
	v1FooterSize     = 512
	v1HeaderSize     = 1024
	v1FooterCookie   = "conectix"
	v1HeaderCookie   = "cxsparse"
	v1Unallocated    = 0xFFFFFFFF
	v1NoDataOffset   = 0xFFFFFFFFFFFFFFFF
	v1FormatVersion  = 0x00010000
	v1HeaderVersion  = 0x00010000
	v1FeatureReserve = 0x00000002
	v1Epoch          = 946684800 // 2000-01-01 00:00:00 UTC as Unix time

	v1TypeFixed   = 2
	v1TypeDynamic = 3
	v1TypeDiff    = 4

	// v1MinBlockSize / v1MaxBlockSize bound the block sizes we open. The
	// upper bound keeps a block's bitmap ≤ 64 KiB.
	v1MinBlockSize = 512
	v1MaxBlockSize = 256 * MiB

	// v1MaxLocatorLen bounds one parent locator's data (a Windows path of
	// 32767 UTF-16 units fits).
	v1MaxLocatorLen = 64 * KiB
	v1NumLocators   = 8

	// v1BATMemLimit: a BAT (of the entries the virtual size needs) up to this
	// many bytes is held in memory; a larger one is paged from the file.
	v1BATMemLimit = 16 * MiB

	// Creation layout of a differencing disk: two locator slots (W2ru,
	// W2ku) of v1LocatorSlot bytes each after the BAT.
	v1LocatorSlot = 32 * KiB

	// v1DataAlign: block data starts on this boundary (like Windows).
	v1DataAlign = 4096
)

// Platform codes of parent locator entries.
const (
	v1PlatNone = 0
	v1PlatW2ru = 0x57327275 // relative Windows path, UTF-16LE
	v1PlatW2ku = 0x57326B75 // absolute Windows path, UTF-16LE
	v1PlatWi2r = 0x57693272 // relative path, ANSI (deprecated)
	v1PlatWi2k = 0x5769326B // absolute path, ANSI (deprecated)
	v1PlatMac  = 0x4D616320 // Mac alias blob
	v1PlatMacX = 0x4D616358 // file URL, UTF-8
)

// v1Footer is the decoded 512-byte footer. raw keeps the bytes as read so a
// footer can be moved or copied without re-encoding.
type v1Footer struct {
	Features       uint32
	FormatVersion  uint32
	DataOffset     uint64
	Timestamp      uint32
	CreatorApp     [4]byte
	CreatorVersion uint32
	CreatorHost    [4]byte
	OriginalSize   uint64
	CurrentSize    uint64
	Cylinders      uint16
	Heads          uint8
	SPT            uint8
	DiskType       uint32
	Checksum       uint32
	UniqueID       [16]byte
	SavedState     uint8
	raw            [v1FooterSize]byte
}

// v1Checksum is the one's complement of the byte sum of b, with the 4
// bytes at skip treated as zero (§1.3).
func v1Checksum(b []byte, skip int) uint32 {
	var s uint32
	for i, c := range b {
		if i >= skip && i < skip+4 {
			continue
		}
		s += uint32(c)
	}
	return ^s
}

// v1DecodeFooter parses b (512 bytes). ok reports a valid cookie; sumOK a
// valid checksum.
func v1DecodeFooter(b []byte) (ft v1Footer, cookieOK, sumOK bool) {
	copy(ft.raw[:], b)
	r := ft.raw[:]
	cookieOK = string(r[0:8]) == v1FooterCookie
	ft.Features = binary.BigEndian.Uint32(r[8:])
	ft.FormatVersion = binary.BigEndian.Uint32(r[12:])
	ft.DataOffset = binary.BigEndian.Uint64(r[16:])
	ft.Timestamp = binary.BigEndian.Uint32(r[24:])
	copy(ft.CreatorApp[:], r[28:32])
	ft.CreatorVersion = binary.BigEndian.Uint32(r[32:])
	copy(ft.CreatorHost[:], r[36:40])
	ft.OriginalSize = binary.BigEndian.Uint64(r[40:])
	ft.CurrentSize = binary.BigEndian.Uint64(r[48:])
	ft.Cylinders = binary.BigEndian.Uint16(r[56:])
	ft.Heads = r[58]
	ft.SPT = r[59]
	ft.DiskType = binary.BigEndian.Uint32(r[60:])
	ft.Checksum = binary.BigEndian.Uint32(r[64:])
	copy(ft.UniqueID[:], r[68:84])
	ft.SavedState = r[84]
	sumOK = v1Checksum(r, 64) == ft.Checksum
	return ft, cookieOK, sumOK
}

// encode writes the fields into raw (reserved bytes kept) with a fresh
// checksum and returns the 512 bytes.
func (ft *v1Footer) encode() []byte {
	r := ft.raw[:]
	copy(r[0:8], v1FooterCookie)
	binary.BigEndian.PutUint32(r[8:], ft.Features)
	binary.BigEndian.PutUint32(r[12:], ft.FormatVersion)
	binary.BigEndian.PutUint64(r[16:], ft.DataOffset)
	binary.BigEndian.PutUint32(r[24:], ft.Timestamp)
	copy(r[28:32], ft.CreatorApp[:])
	binary.BigEndian.PutUint32(r[32:], ft.CreatorVersion)
	copy(r[36:40], ft.CreatorHost[:])
	binary.BigEndian.PutUint64(r[40:], ft.OriginalSize)
	binary.BigEndian.PutUint64(r[48:], ft.CurrentSize)
	binary.BigEndian.PutUint16(r[56:], ft.Cylinders)
	r[58] = ft.Heads
	r[59] = ft.SPT
	binary.BigEndian.PutUint32(r[60:], ft.DiskType)
	copy(r[68:84], ft.UniqueID[:])
	r[84] = ft.SavedState
	ft.Checksum = v1Checksum(r, 64)
	binary.BigEndian.PutUint32(r[64:], ft.Checksum)
	out := make([]byte, v1FooterSize)
	copy(out, r)
	return out
}

// v1Locator is one parent locator entry (24 bytes at header+576).
type v1Locator struct {
	Code      uint32
	DataSpace uint32
	DataLen   uint32
	Reserved  uint32
	DataOff   uint64
}

// space returns the data space in bytes (Xen's rule, §1.9): < 512 means
// sectors, a multiple of 512 means bytes, anything else is invalid.
func (l v1Locator) space() (int64, bool) {
	switch {
	case l.DataSpace < 512:
		return int64(l.DataSpace) * 512, true
	case l.DataSpace%512 == 0:
		return int64(l.DataSpace), true
	}
	return 0, false
}

// v1Header is the decoded 1024-byte dynamic disk header.
type v1Header struct {
	DataOffset      uint64
	TableOffset     uint64
	HeaderVersion   uint32
	MaxTableEntries uint32
	BlockSize       uint32
	Checksum        uint32
	ParentUniqueID  [16]byte
	ParentTimestamp uint32
	ParentName      [512]byte
	Locators        [v1NumLocators]v1Locator
	raw             [v1HeaderSize]byte
}

func v1DecodeHeader(b []byte) (h v1Header, cookieOK, sumOK bool) {
	copy(h.raw[:], b)
	r := h.raw[:]
	cookieOK = string(r[0:8]) == v1HeaderCookie
	h.DataOffset = binary.BigEndian.Uint64(r[8:])
	h.TableOffset = binary.BigEndian.Uint64(r[16:])
	h.HeaderVersion = binary.BigEndian.Uint32(r[24:])
	h.MaxTableEntries = binary.BigEndian.Uint32(r[28:])
	h.BlockSize = binary.BigEndian.Uint32(r[32:])
	h.Checksum = binary.BigEndian.Uint32(r[36:])
	copy(h.ParentUniqueID[:], r[40:56])
	h.ParentTimestamp = binary.BigEndian.Uint32(r[56:])
	copy(h.ParentName[:], r[64:576])
	for i := range h.Locators {
		e := r[576+24*i:]
		h.Locators[i] = v1Locator{
			Code:      binary.BigEndian.Uint32(e[0:]),
			DataSpace: binary.BigEndian.Uint32(e[4:]),
			DataLen:   binary.BigEndian.Uint32(e[8:]),
			Reserved:  binary.BigEndian.Uint32(e[12:]),
			DataOff:   binary.BigEndian.Uint64(e[16:]),
		}
	}
	sumOK = v1Checksum(r, 36) == h.Checksum
	return h, cookieOK, sumOK
}

// encode writes the fields into raw (reserved bytes kept), recomputes the
// checksum and returns the 1024 bytes.
func (h *v1Header) encode() []byte {
	r := h.raw[:]
	copy(r[0:8], v1HeaderCookie)
	binary.BigEndian.PutUint64(r[8:], h.DataOffset)
	binary.BigEndian.PutUint64(r[16:], h.TableOffset)
	binary.BigEndian.PutUint32(r[24:], h.HeaderVersion)
	binary.BigEndian.PutUint32(r[28:], h.MaxTableEntries)
	binary.BigEndian.PutUint32(r[32:], h.BlockSize)
	copy(r[40:56], h.ParentUniqueID[:])
	binary.BigEndian.PutUint32(r[56:], h.ParentTimestamp)
	copy(r[64:576], h.ParentName[:])
	for i, l := range h.Locators {
		e := r[576+24*i:]
		binary.BigEndian.PutUint32(e[0:], l.Code)
		binary.BigEndian.PutUint32(e[4:], l.DataSpace)
		binary.BigEndian.PutUint32(e[8:], l.DataLen)
		binary.BigEndian.PutUint32(e[12:], l.Reserved)
		binary.BigEndian.PutUint64(e[16:], l.DataOff)
	}
	h.Checksum = v1Checksum(r, 36)
	binary.BigEndian.PutUint32(r[36:], h.Checksum)
	out := make([]byte, v1HeaderSize)
	copy(out, r)
	return out
}

// v1Geometry computes CHS for a disk of size bytes (§1.4, spec appendix);
// the CHS capacity is rounded down.
func v1Geometry(size int64) (cyl uint16, heads, spt uint8) {
	ts := size / 512
	if ts > 65535*16*255 {
		ts = 65535 * 16 * 255
	}
	var h, s, cth int64
	if ts >= 65535*16*63 {
		s, h = 255, 16
		cth = ts / s
	} else {
		s = 17
		cth = ts / s
		h = max((cth+1023)/1024, 4)
		if cth >= h*1024 || h > 16 {
			s, h = 31, 16
			cth = ts / s
		}
		if cth >= h*1024 {
			s, h = 63, 16
			cth = ts / s
		}
	}
	return uint16(cth / h), uint8(h), uint8(s)
}

// v1BitmapBytes is the size of a block's sector bitmap: one bit per sector,
// padded to a 512-byte multiple.
func v1BitmapBytes(blockSize uint32) int64 {
	bits := int64(blockSize) / 512
	return ((bits+7)/8 + 511) / 512 * 512
}

// v1Time converts a VHD timestamp to time (UTC).
func v1Time(ts uint32) time.Time { return time.Unix(v1Epoch+int64(ts), 0).UTC() }

// v1Stamp converts t to a VHD timestamp (0 for the zero time or before 2000).
func v1Stamp(t time.Time) uint32 {
	if t.IsZero() {
		return 0
	}
	s := vhdTimestamp(t)
	if s < 0 {
		return 0
	}
	if s > 0xFFFFFFFF {
		return 0xFFFFFFFF
	}
	return uint32(s)
}

// v1FourCC renders a 4-byte code, dropping unprintable bytes.
func v1FourCC(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// v1CodeName names a locator platform code ("W2ru", or hex when not text).
func v1CodeName(code uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], code)
	for _, c := range b {
		if c < 0x20 || c >= 0x7f {
			return fmt.Sprintf("0x%08X", code)
		}
	}
	return string(b[:])
}

// v1UTF16LE encodes s as UTF-16LE without a terminator.
func v1UTF16LE(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// v1DecodeUTF16 decodes UTF-16 (LE or BE) up to the first NUL unit.
func v1DecodeUTF16(b []byte, bigEndian bool) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		var c uint16
		if bigEndian {
			c = binary.BigEndian.Uint16(b[i:])
		} else {
			c = binary.LittleEndian.Uint16(b[i:])
		}
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// v1DecodeANSI decodes an ANSI (Wi2r/Wi2k) path: UTF-8 when valid, else
// Latin-1; stops at the first NUL.
func v1DecodeANSI(b []byte) string {
	for i, c := range b {
		if c == 0 {
			b = b[:i]
			break
		}
	}
	if utf8.Valid(b) {
		return string(b)
	}
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

// v1EncodeParentName encodes the parent unicode name field: UTF-16BE,
// NUL-padded, truncated to 256 units.
func v1EncodeParentName(name string) [512]byte {
	var out [512]byte
	u := utf16.Encode([]rune(name))
	if len(u) > 256 {
		u = u[:256]
	}
	for i, c := range u {
		binary.BigEndian.PutUint16(out[2*i:], c)
	}
	return out
}

// v1DecodeLocatorData decodes one locator's data by platform code.
func v1DecodeLocatorData(code uint32, b []byte) string {
	switch code {
	case v1PlatW2ru, v1PlatW2ku:
		return v1DecodeUTF16(b, false)
	case v1PlatWi2r, v1PlatWi2k:
		return v1DecodeANSI(b)
	case v1PlatMacX:
		return v1DecodeANSI(b)
	}
	return ""
}

func v1AlignUp(v, a int64) int64 { return (v + a - 1) / a * a }
