package vhd

import (
	"io"
	"os"

	"github.com/hvsnap/hvsnap/internal/fsutil"
)

// File is the I/O surface format code uses. Everything a backend reads or
// writes goes through it, so tests can inject faults (a write that never
// reaches the disk, a failing flush) at every step of an update.
type File interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Size() (int64, error)
	Close() error
	Name() string
}

type osFile struct{ *os.File }

func (f osFile) Size() (int64, error) {
	st, err := f.File.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// StartWriteback starts writing the file's dirty pages to the device
// without waiting (see fsutil.StartWriteback).
func (f osFile) StartWriteback() error { return fsutil.StartWriteback(f.File) }

// openFile opens path for reading, or reading and writing.
func openFile(path string, rw bool) (File, error) {
	var f *os.File
	var err error
	if rw {
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	} else {
		f, err = fsutil.OpenRead(path)
	}
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// createFile creates path; it fails if path exists.
func createFile(path string) (File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// FileWrapper, when set in Options, wraps every File this package opens.
// Tests use it for fault injection.
type FileWrapper func(File) File

// readFull reads exactly len(p) bytes at off; a short read is io.ErrUnexpectedEOF.
func readFull(f File, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writeFull writes all of p at off.
func writeFull(f File, p []byte, off int64) error {
	_, err := f.WriteAt(p, off)
	return err
}
