package pkgfmt

// A small POSIX (pax) tar writer. Go's archive/tar cannot write sparse
// entries (golang.org/issue/22735), and a package must carry files with
// holes without materializing them, so the few header kinds a package needs
// are written here: pax extended headers ('x') and regular files ('0'),
// with GNU sparse format 1.0 (the pax form GNU tar and bsdtar read, and
// Go's archive/tar reader expands) for files with holes.

import (
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"
)

const (
	blockSize  = 512
	recordSize = 20 * blockSize // GNU tar's default blocking factor
)

// Segment is a range of a file that holds data; everything else is a hole
// (reads as zeros).
type Segment struct {
	Off, Len int64
}

// TarHeader describes one regular file entry.
type TarHeader struct {
	Name    string // full slash path inside the archive
	Size    int64  // content size
	ModTime time.Time
	Mode    int64 // permission bits (0644)
	// Segments: the data ranges of a sparse file, sorted, non-overlapping.
	// nil means the whole file is data.
	Segments []Segment
}

// DataSize is the number of content bytes the entry carries in the archive
// (the sum of the segments, or Size).
func (h *TarHeader) DataSize() int64 {
	if h.Segments == nil {
		return h.Size
	}
	var n int64
	for _, s := range h.Segments {
		n += s.Len
	}
	return n
}

// TarWriter writes a tar stream. The caller writes exactly DataSize()
// content bytes after WriteHeader (through Write), then calls EndEntry.
type TarWriter struct {
	w       io.Writer
	n       int64 // bytes written
	pending int64 // content bytes still expected for the current entry
}

// NewTarWriter writes a tar stream to w.
func NewTarWriter(w io.Writer) *TarWriter { return &TarWriter{w: w} }

// Written is the number of bytes written so far.
func (t *TarWriter) Written() int64 { return t.n }

func (t *TarWriter) write(p []byte) error {
	n, err := t.w.Write(p)
	t.n += int64(n)
	return err
}

// Write writes content bytes of the current entry.
func (t *TarWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > t.pending {
		return 0, fmt.Errorf("tar: %d bytes more than the entry's size", int64(len(p))-t.pending)
	}
	n, err := t.w.Write(p)
	t.n += int64(n)
	t.pending -= int64(n)
	return n, err
}

// WriteHeader starts a regular file entry.
func (t *TarWriter) WriteHeader(h *TarHeader) error {
	if t.pending != 0 {
		return fmt.Errorf("tar: previous entry is %d bytes short", t.pending)
	}
	if err := t.pad(); err != nil {
		return err
	}
	name := h.Name
	recs := map[string]string{}
	var sparseMap []byte
	size := h.Size
	if h.Segments != nil {
		segs := append([]Segment(nil), h.Segments...)
		if len(segs) == 0 || segs[len(segs)-1].Off+segs[len(segs)-1].Len < h.Size {
			// GNU tar sets the extracted file's length from the last entry.
			segs = append(segs, Segment{Off: h.Size})
		}
		sparseMap = strconv.AppendInt(sparseMap, int64(len(segs)), 10)
		sparseMap = append(sparseMap, '\n')
		size = 0
		for _, s := range segs {
			sparseMap = strconv.AppendInt(sparseMap, s.Off, 10)
			sparseMap = append(sparseMap, '\n')
			sparseMap = strconv.AppendInt(sparseMap, s.Len, 10)
			sparseMap = append(sparseMap, '\n')
			size += s.Len
		}
		if r := len(sparseMap) % blockSize; r != 0 {
			sparseMap = append(sparseMap, make([]byte, blockSize-r)...)
		}
		size += int64(len(sparseMap))
		recs["GNU.sparse.major"] = "1"
		recs["GNU.sparse.minor"] = "0"
		recs["GNU.sparse.name"] = name
		recs["GNU.sparse.realsize"] = strconv.FormatInt(h.Size, 10)
		dir, file := path.Split(name)
		name = path.Join(dir, "GNUSparseFile.0", file)
	}
	ustarName := name
	if len(name) > 100 || !isASCII(name) {
		if h.Segments == nil {
			recs["path"] = name
		}
		ustarName = toASCII(name)
		if len(ustarName) > 100 {
			ustarName = ustarName[len(ustarName)-100:]
		}
	}
	if size >= 1<<33 {
		recs["size"] = strconv.FormatInt(size, 10)
	}
	mt := h.ModTime
	if mt.IsZero() {
		mt = time.Unix(0, 0)
	}
	if mt.Nanosecond() != 0 || mt.Unix() < 0 || mt.Unix() >= 1<<33 {
		recs["mtime"] = fmt.Sprintf("%d.%09d", mt.Unix(), mt.Nanosecond())
	}
	if len(recs) > 0 {
		var sb strings.Builder
		keys := make([]string, 0, len(recs))
		for k := range recs {
			keys = append(keys, k)
		}
		sortStrings(keys)
		for _, k := range keys {
			sb.WriteString(paxRecord(k, recs[k]))
		}
		dir, file := path.Split(toASCII(h.Name))
		pn := path.Join(dir, "PaxHeaders.0", file)
		if len(pn) > 100 {
			pn = pn[len(pn)-100:]
		}
		data := []byte(sb.String())
		if err := t.write(ustarHeader(pn, 0o644, int64(len(data)), mt, 'x')); err != nil {
			return err
		}
		if err := t.write(data); err != nil {
			return err
		}
		t.pending = 0
		if err := t.pad(); err != nil {
			return err
		}
	}
	mode := h.Mode
	if mode == 0 {
		mode = 0o644
	}
	if err := t.write(ustarHeader(ustarName, mode, size, mt, '0')); err != nil {
		return err
	}
	if len(sparseMap) > 0 {
		if err := t.write(sparseMap); err != nil {
			return err
		}
	}
	t.pending = h.DataSize()
	return nil
}

// EndEntry pads the current entry to the block size.
func (t *TarWriter) EndEntry() error {
	if t.pending != 0 {
		return fmt.Errorf("tar: entry is %d bytes short", t.pending)
	}
	return t.pad()
}

func (t *TarWriter) pad() error {
	if r := t.n % blockSize; r != 0 {
		return t.write(make([]byte, blockSize-r))
	}
	return nil
}

// Close ends the archive: two zero blocks, padded to a 10 KiB record like
// GNU tar. It does not close the underlying writer.
func (t *TarWriter) Close() error {
	if err := t.EndEntry(); err != nil {
		return err
	}
	end := t.n + 2*blockSize
	if r := end % recordSize; r != 0 {
		end += recordSize - r
	}
	return t.write(make([]byte, end-t.n))
}

func paxRecord(k, v string) string {
	const padding = 3 // ' ' + '=' + '\n'
	size := len(k) + len(v) + padding
	size += len(strconv.Itoa(size))
	rec := strconv.Itoa(size) + " " + k + "=" + v + "\n"
	if len(rec) != size {
		size = len(rec)
		rec = strconv.Itoa(size) + " " + k + "=" + v + "\n"
	}
	return rec
}

func ustarHeader(name string, mode, size int64, mt time.Time, flag byte) []byte {
	b := make([]byte, blockSize)
	copy(b[0:100], name)
	octal(b[100:108], mode)
	octal(b[108:116], 0)
	octal(b[116:124], 0)
	octal(b[124:136], size)
	sec := mt.Unix()
	if sec < 0 || sec >= 1<<33 {
		sec = 0
	}
	octal(b[136:148], sec)
	b[156] = flag
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	octal(b[329:337], 0)
	octal(b[337:345], 0)
	for i := 148; i < 156; i++ {
		b[i] = ' '
	}
	var sum int64
	for _, c := range b {
		sum += int64(c)
	}
	s := fmt.Sprintf("%06o", sum)
	copy(b[148:154], s)
	b[154] = 0
	b[155] = ' '
	return b
}

// octal writes v as zero-padded octal digits with a NUL terminator.
func octal(b []byte, v int64) {
	s := strconv.FormatInt(v, 8)
	for len(s) < len(b)-1 {
		s = "0" + s
	}
	copy(b, s)
	b[len(b)-1] = 0
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || s[i] == 0 {
			return false
		}
	}
	return true
}

func toASCII(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 && r != 0 {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
