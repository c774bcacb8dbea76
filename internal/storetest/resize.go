package storetest

import (
	"encoding/binary"
	"fmt"
	"os"
)

// ResizeVHD changes the virtual size of the dynamic (or differencing) VHD
// at path to size in place, as Resize-VHD does when the block table has room
// for the new size: both footer copies (size fields, CHS geometry,
// checksum) and the dynamic header's table size. New table entries are
// unallocated; shrinking requires the blocks beyond size to be unallocated.
// The disk's identity (unique ID) is kept, so differencing disks made before
// still link to it: the lab uses it to make the "expanded parent" case, and
// tests to play the operator who restores the original size.
func ResizeVHD(path string, size int64) error {
	if size <= 0 || size%512 != 0 {
		return fmt.Errorf("storetest: size %d is not a positive multiple of 512", size)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	foot := make([]byte, 512)
	if _, err := f.ReadAt(foot, fi.Size()-512); err != nil {
		return err
	}
	if string(foot[:8]) != "conectix" {
		return fmt.Errorf("storetest: %s: no VHD footer", path)
	}
	if t := binary.BigEndian.Uint32(foot[60:]); t != 3 && t != 4 {
		return fmt.Errorf("storetest: %s: not a dynamic or differencing VHD", path)
	}
	hdrOff := int64(binary.BigEndian.Uint64(foot[16:]))
	hdr := make([]byte, 1024)
	if _, err := f.ReadAt(hdr, hdrOff); err != nil {
		return err
	}
	batOff := int64(binary.BigEndian.Uint64(hdr[16:]))
	entries := int64(binary.BigEndian.Uint32(hdr[28:]))
	block := int64(binary.BigEndian.Uint32(hdr[32:]))
	capacity := (entries*4 + 511) / 512 * 512 / 4
	want := (size + block - 1) / block
	if want > capacity {
		return fmt.Errorf("storetest: %s: the block table holds %d entries, %d needed", path, capacity, want)
	}
	bat := make([]byte, capacity*4)
	if _, err := f.ReadAt(bat, batOff); err != nil {
		return err
	}
	for i := want; i < capacity; i++ {
		if i < entries && binary.BigEndian.Uint32(bat[i*4:]) != 0xFFFFFFFF {
			return fmt.Errorf("storetest: %s: block %d beyond the new size is allocated", path, i)
		}
		binary.BigEndian.PutUint32(bat[i*4:], 0xFFFFFFFF)
	}
	binary.BigEndian.PutUint32(hdr[28:], uint32(want))
	binary.BigEndian.PutUint32(hdr[36:], 0)
	binary.BigEndian.PutUint32(hdr[36:], vhdSum(hdr, 36))
	binary.BigEndian.PutUint64(foot[40:], uint64(size))
	binary.BigEndian.PutUint64(foot[48:], uint64(size))
	c, h, s := chs(size)
	binary.BigEndian.PutUint16(foot[56:], c)
	foot[58], foot[59] = h, s
	binary.BigEndian.PutUint32(foot[64:], 0)
	binary.BigEndian.PutUint32(foot[64:], vhdSum(foot, 64))
	for _, w := range []struct {
		b   []byte
		off int64
	}{{bat, batOff}, {hdr, hdrOff}, {foot, 0}, {foot, fi.Size() - 512}} {
		if _, err := f.WriteAt(w.b, w.off); err != nil {
			return err
		}
	}
	return f.Sync()
}

func vhdSum(b []byte, skip int) uint32 {
	var s uint32
	for i, c := range b {
		if i >= skip && i < skip+4 {
			continue
		}
		s += uint32(c)
	}
	return ^s
}

// chs is the VHD specification's geometry for size bytes (rounded down).
func chs(size int64) (uint16, uint8, uint8) {
	ts := min(size/512, 65535*16*255)
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
