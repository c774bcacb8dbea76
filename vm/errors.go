package vm

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors about a file are *Error values wrapping one of
// these, so callers test them with errors.Is.
var (
	// ErrCorrupt: the file's structure is damaged (bad signature, checksum,
	// offset or length, or an unreadable XML document).
	ErrCorrupt = errors.New("corrupt")
	// ErrUnsupported: the file is intact as far as we can tell but uses a
	// format variant this package does not read (e.g. a VMCX version other
	// than 0x400, or a 2008 R2 .exp export).
	ErrUnsupported = errors.New("unsupported")
	// ErrNotConfig: the file parsed but is not a VM configuration (e.g. no
	// `configuration` root key).
	ErrNotConfig = errors.New("not a VM configuration")
)

// Error describes a problem with one file: which file, where in it (when
// known) and what is wrong.
type Error struct {
	Path   string // file the problem is in
	Offset int64  // byte offset of the damaged structure, or -1 when not applicable
	Msg    string // what is wrong, in words
	Err    error  // ErrCorrupt, ErrUnsupported, ErrNotConfig or an I/O error
}

func (e *Error) Error() string {
	s := "vm: " + e.Path + ": "
	if e.Offset >= 0 {
		s += fmt.Sprintf("at 0x%x: ", e.Offset)
	}
	s += e.Msg
	if e.Err != nil && e.Err != ErrCorrupt && e.Err != ErrUnsupported && e.Err != ErrNotConfig {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// corruptf returns an *Error wrapping ErrCorrupt.
func corruptf(path string, off int64, format string, args ...any) *Error {
	return &Error{Path: path, Offset: off, Msg: fmt.Sprintf(format, args...), Err: ErrCorrupt}
}
