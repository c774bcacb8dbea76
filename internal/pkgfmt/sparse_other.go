//go:build !linux

package pkgfmt

import "os"

// DataSegments returns nil (the whole file is data): holes are only probed
// on Linux (SEEK_DATA/SEEK_HOLE).
func DataSegments(f *os.File, size int64) ([]Segment, error) { return nil, nil }

// Allocated returns the file's size (allocation is not probed here).
func Allocated(st os.FileInfo) int64 { return st.Size() }
