package vhd

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package that concerns a file
// is an *Error wrapping one of these, so callers test with errors.Is.
var (
	ErrCorrupt            = errors.New("corrupt image")
	ErrUnsupported        = errors.New("unsupported image feature")
	ErrNotImage           = errors.New("not a VHD or VHDX file")
	ErrParentNotFound     = errors.New("parent disk not found")
	ErrParentMismatch     = errors.New("parent linkage mismatch")
	ErrChainCycle         = errors.New("parent chain has a cycle")
	ErrChainTooDeep       = errors.New("parent chain too deep")
	ErrSectorSizeMismatch = errors.New("logical sector size differs from the parent's")
	ErrReadOnly           = errors.New("image opened read-only")
	ErrOutOfRange         = errors.New("access beyond the end of the virtual disk")
	ErrInvalidSpec        = errors.New("invalid disk specification")
	ErrFormatMismatch     = errors.New("parent and child formats differ")
)

// Error is a failure concerning one file: what is wrong, where.
type Error struct {
	Path string // the file concerned
	Code string // stable machine-readable code, e.g. "vhdx-header-crc" (see findings)
	Msg  string // one sentence, no file name
	Err  error  // sentinel (ErrCorrupt, ...) or underlying OS error
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// corrupt builds an ErrCorrupt error for path with a finding code.
func corrupt(path, code, format string, args ...any) error {
	return &Error{Path: path, Code: code, Msg: fmt.Sprintf(format, args...), Err: ErrCorrupt}
}

// newErr builds an error wrapping sentinel with a code and message.
func newErr(path string, sentinel error, code, format string, args ...any) error {
	return &Error{Path: path, Code: code, Msg: fmt.Sprintf(format, args...), Err: sentinel}
}

// Severity of a finding.
type Severity string

const (
	SevError   Severity = "error"   // the image or chain is damaged or unusable
	SevWarning Severity = "warning" // suspicious but readable (e.g. parent timestamp differs)
)

// Finding is one result of Check: a problem in one file.
type Finding struct {
	Code     string   `json:"code"`     // stable, kebab-case, e.g. "bat-past-eof"
	Severity Severity `json:"severity"` // error | warning
	Path     string   `json:"path"`
	Message  string   `json:"message"` // one sentence
}

// findingFromError turns an open/parse error into a finding.
func findingFromError(path string, err error) Finding {
	var e *Error
	if errors.As(err, &e) {
		code := e.Code
		if code == "" {
			code = "corrupt"
		}
		p := e.Path
		if p == "" {
			p = path
		}
		return Finding{Code: code, Severity: SevError, Path: p, Message: e.Msg}
	}
	return Finding{Code: "error", Severity: SevError, Path: path, Message: err.Error()}
}
