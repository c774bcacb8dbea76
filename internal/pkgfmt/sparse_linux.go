//go:build linux

package pkgfmt

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// DataSegments returns the ranges of f (size bytes) that hold data, found
// with SEEK_DATA/SEEK_HOLE, or nil when the file has no holes (or the file
// system cannot tell). Only files whose allocation is smaller than their
// size are probed, as GNU tar does.
func DataSegments(f *os.File, size int64) ([]Segment, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || sys.Blocks*512 >= size || size == 0 {
		return nil, nil
	}
	fd := int(f.Fd())
	var segs []Segment
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) {
				break // only a hole remains
			}
			if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP) {
				return nil, nil
			}
			return nil, err
		}
		if d >= size {
			break
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		h = min(h, size)
		segs = append(segs, Segment{Off: d, Len: h - d})
		off = h
	}
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return nil, err
	}
	if segs == nil {
		segs = []Segment{}
	}
	return segs, nil
}

// Allocated returns the bytes the file occupies on its volume.
func Allocated(st os.FileInfo) int64 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return min(sys.Blocks*512, st.Size())
	}
	return st.Size()
}
