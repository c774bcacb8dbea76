package vhd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Format is the container format of a file.
type Format string

const (
	FormatVHD  Format = "vhd"
	FormatVHDX Format = "vhdx"
)

// DiskType is the kind of disk a file holds.
type DiskType string

const (
	TypeFixed        DiskType = "fixed"
	TypeDynamic      DiskType = "dynamic"
	TypeDifferencing DiskType = "differencing"
)

// State says what one file holds for a range of the virtual disk.
type State uint8

const (
	// StateAbsent: the file holds nothing for the range. A differencing disk
	// reads it from its parent; any other disk reads zeros.
	StateAbsent State = iota
	// StateData: the file holds the bytes, at Run.FileOff.
	StateData
	// StateZero: the file says the range reads as zeros (VHDX ZERO); the
	// parent is not consulted.
	StateZero
	// StateUnmapped: VHDX UNMAPPED (or the 0.95 draft's state 5); reads as
	// zeros here, the parent is not consulted.
	StateUnmapped
	// StateUndefined: VHDX UNDEFINED; reads as zeros here, the parent is not
	// consulted.
	StateUndefined
)

func (s State) String() string {
	switch s {
	case StateAbsent:
		return "absent"
	case StateData:
		return "data"
	case StateZero:
		return "zero"
	case StateUnmapped:
		return "unmapped"
	case StateUndefined:
		return "undefined"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Run is a range of the virtual disk with one state in one file.
type Run struct {
	Off     int64 // virtual byte offset
	Len     int64 // bytes, > 0
	State   State
	FileOff int64 // StateData only: offset in the file of the byte at Off
}

// Info describes one file, like Get-VHD.
type Info struct {
	Path               string
	Format             Format
	Type               DiskType
	VirtualSize        int64
	FileSize           int64
	BlockSize          uint32
	LogicalSectorSize  uint32
	PhysicalSectorSize uint32
	// DiskID: VHDX virtual disk ID; VHD: the footer unique ID.
	DiskID GUID
	// UniqueID: VHD footer unique ID (what a VHD child links to). Zero for VHDX.
	UniqueID GUID
	// DataWriteGUID, FileWriteGUID, LogGUID: VHDX current header. Zero for VHD.
	DataWriteGUID GUID
	FileWriteGUID GUID
	LogGUID       GUID
	// Creator: VHD "app version host" (e.g. "win  10.0 Wi2k"); VHDX creator string.
	Creator string
	// Created: VHD footer timestamp. Zero for VHDX.
	Created time.Time
	// LeaveBlockAllocated: VHDX file parameter (set on fixed VHDX).
	LeaveBlockAllocated bool
	// LogReplayed: a dirty VHDX log was replayed when opening (in memory
	// when read-only).
	LogReplayed bool
}

// LocatorEntry is one parent locator entry as stored: VHDX key/value, or
// VHD platform code ("W2ru", "W2ku", ...) with its decoded path.
type LocatorEntry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// ParentLocator is what a differencing disk says about its parent.
type ParentLocator struct {
	// VHDX: parent_linkage and parent_linkage2 as stored ("" when absent).
	Linkage  string
	Linkage2 string
	// VHD: the parent's footer unique ID, timestamp and unicode name.
	ParentUniqueID  GUID
	ParentTimestamp time.Time
	ParentName      string
	// Entries in file order.
	Entries []LocatorEntry
	// Path candidates in Windows form as stored ("" when absent).
	RelativePath string
	AbsolutePath string
	VolumePath   string
}

// NewParent is what a differencing disk is told about its parent when it is
// created or re-pointed. Paths are in Windows form.
type NewParent struct {
	// VHDX: parent_linkage (the parent's current DataWriteGUID) and the
	// optional parent_linkage2 (zero: written as the zero GUID, like Hyper-V).
	Linkage  GUID
	Linkage2 GUID
	// VHD: the parent's footer unique ID and file modification time.
	UniqueID  GUID
	Timestamp time.Time
	// Name: the parent's file name (VHD parent unicode name).
	Name         string
	RelativePath string // e.g. `.\base.vhdx`; always written
	AbsolutePath string // e.g. `C:\VMs\base.vhdx`; omitted when ""
	VolumePath   string // e.g. `\\?\Volume{...}\VMs\base.vhdx`; omitted when ""
	// Geometry inherited by a new child.
	VirtualSize        int64
	LogicalSectorSize  uint32
	PhysicalSectorSize uint32
}

// CreateSpec describes a disk to create.
type CreateSpec struct {
	Format Format
	Type   DiskType
	// Size is the virtual size in bytes. For a differencing disk 0 means the
	// parent's size (the only size Hyper-V accepts).
	Size int64
	// BlockSize 0 picks the default: VHD 2 MiB; VHDX 32 MiB dynamic,
	// 2 MiB differencing and fixed (what New-VHD does).
	BlockSize uint32
	// LogicalSectorSize: VHDX 512 or 4096 (default 512; differencing: the
	// parent's). VHD: 512 only.
	LogicalSectorSize uint32
	// PhysicalSectorSize: VHDX 512 or 4096 (default 4096). VHD: ignored.
	PhysicalSectorSize uint32
	// Parent is the parent's path for a differencing disk.
	Parent string
	// DiskID: zero picks a random one.
	DiskID GUID
}

// backend is one format's implementation over one open file.
//
// Offsets and lengths passed to lookup and writeAt are multiples of the
// logical sector size and lie inside the virtual disk; the format-neutral
// layer guarantees it.
type backend interface {
	// info returns the file's description (FileSize may be left 0).
	info() Info
	// parentLocator returns the locator of a differencing disk, nil otherwise.
	parentLocator() *ParentLocator
	// lookup describes the run of virtual bytes starting at off with one
	// state, at most max bytes long. It must be cheap (no payload reads) and
	// sector precise for differencing disks.
	lookup(off, max int64) (Run, error)
	// writeAt writes p at off (both sector aligned). parent shows the data of
	// the chain below this file (nil when it has no parent); backends read
	// it to fill the rest of a newly allocated block.
	writeAt(p []byte, off int64, parent io.ReaderAt) error
	// setParent rewrites the parent locator of a differencing disk durably.
	setParent(np *NewParent) error
	// check validates the file's structure and returns what is wrong.
	check() ([]Finding, error)
	// flush makes completed writes durable.
	flush() error
	// close flushes (when writable) and releases the file.
	close() error
}

// Options control how files are opened.
type Options struct {
	// ReadOnly opens without write access; nothing is ever written, a dirty
	// VHDX log is replayed in memory.
	ReadOnly bool
	// PathMap maps Windows paths in parent locators to local paths.
	PathMap PathMap
	// MaxDepth bounds parent chains (default 128).
	MaxDepth int
	// IgnoreLinkage accepts a parent whose identity does not match (for
	// recovery); the mismatch is still reported in Chain.Warnings.
	IgnoreLinkage bool
	// Wrap, when set, wraps every File opened (fault injection in tests).
	Wrap FileWrapper
}

func (o *Options) maxDepth() int {
	if o == nil || o.MaxDepth <= 0 {
		return 128
	}
	return o.MaxDepth
}

// Image is one open VHD or VHDX file.
type Image struct {
	path string
	f    File
	b    backend
	rw   bool
}

// Path returns the path the image was opened with.
func (im *Image) Path() string { return im.path }

// Writable reports whether the image was opened for writing.
func (im *Image) Writable() bool { return im.rw }

// Info describes the image.
func (im *Image) Info() Info {
	inf := im.b.info()
	inf.Path = im.path
	if sz, err := im.f.Size(); err == nil {
		inf.FileSize = sz
	}
	return inf
}

// Parent returns the parent locator of a differencing disk, nil otherwise.
func (im *Image) Parent() *ParentLocator { return im.b.parentLocator() }

// VirtualSize is the size of the virtual disk in bytes.
func (im *Image) VirtualSize() int64 { return im.b.info().VirtualSize }

// SectorSize is the logical sector size.
func (im *Image) SectorSize() int64 { return int64(im.b.info().LogicalSectorSize) }

// Runs calls fn for each run of the range [off, off+length), in order,
// merging neighbours with the same state (and contiguous file offsets for
// data). off and length are rounded out to sectors.
func (im *Image) Runs(off, length int64, fn func(Run) error) error {
	vs := im.VirtualSize()
	ss := im.SectorSize()
	end := off + length
	if off < 0 || end > vs || length < 0 {
		return newErr(im.path, ErrOutOfRange, "out-of-range", "range %d+%d is outside the virtual disk (%d bytes)", off, length, vs)
	}
	off = off / ss * ss
	end = (end + ss - 1) / ss * ss
	if end > vs {
		end = vs
	}
	var pend Run
	have := false
	for off < end {
		r, err := im.b.lookup(off, end-off)
		if err != nil {
			return err
		}
		if r.Len <= 0 || r.Off != off || r.Len > end-off {
			return newErr(im.path, ErrCorrupt, "internal", "internal error: bad run %+v at %d", r, off)
		}
		if have && pend.State == r.State && pend.Off+pend.Len == r.Off &&
			(r.State != StateData || pend.FileOff+pend.Len == r.FileOff) {
			pend.Len += r.Len
		} else {
			if have {
				if err := fn(pend); err != nil {
					return err
				}
			}
			pend, have = r, true
		}
		off += r.Len
	}
	if have {
		return fn(pend)
	}
	return nil
}

// Extents calls fn for every run of the whole virtual disk.
func (im *Image) Extents(fn func(Run) error) error {
	return im.Runs(0, im.VirtualSize(), fn)
}

// Check validates the file's own structure.
func (im *Image) Check() ([]Finding, error) { return im.b.check() }

// Flush makes completed writes durable.
func (im *Image) Flush() error {
	if !im.rw {
		return nil
	}
	return im.b.flush()
}

// StartWriteback asks the operating system to start writing the data
// written so far to the device, without waiting: a long copy calls it as it
// goes so that the final Flush has little left to wait for. It is only a
// hint (a no-op where unsupported, and for files that are wrapped or read
// only); durability still comes from Flush.
func (im *Image) StartWriteback() error {
	if !im.rw {
		return nil
	}
	if wb, ok := im.f.(interface{ StartWriteback() error }); ok {
		return wb.StartWriteback()
	}
	return nil
}

// Close releases the file.
func (im *Image) Close() error { return im.b.close() }

// SetParent rewrites the parent locator of a differencing disk.
func (im *Image) SetParent(np *NewParent) error {
	if !im.rw {
		return newErr(im.path, ErrReadOnly, "read-only", "cannot rewrite the parent locator: opened read-only")
	}
	if im.b.parentLocator() == nil {
		return newErr(im.path, ErrInvalidSpec, "not-differencing", "not a differencing disk")
	}
	return im.b.setParent(np)
}

// DetectFormat tells VHD from VHDX by content.
func DetectFormat(f File, path string) (Format, error) {
	var sig [8]byte
	if err := readFull(f, sig[:], 0); err == nil && string(sig[:]) == "vhdxfile" {
		return FormatVHDX, nil
	}
	sz, err := f.Size()
	if err != nil {
		return "", &Error{Path: path, Code: "io", Msg: err.Error(), Err: err}
	}
	if sz >= 512 {
		if err := readFull(f, sig[:], sz-512); err == nil && string(sig[:]) == "conectix" {
			return FormatVHD, nil
		}
		// Very old Virtual PC footers are 511 bytes.
		if err := readFull(f, sig[:], sz-511); err == nil && string(sig[:]) == "conectix" {
			return FormatVHD, nil
		}
	}
	if err := readFull(f, sig[:], 0); err == nil && string(sig[:]) == "conectix" {
		// Trailing footer lost: dynamic/differencing disks keep a copy at 0.
		return FormatVHD, nil
	}
	if sz < 512 {
		return "", newErr(path, ErrNotImage, "not-image", "not a VHD or VHDX file (%d bytes, too small)", sz)
	}
	return "", newErr(path, ErrNotImage, "not-image", "not a VHD or VHDX file (no vhdxfile signature, no conectix footer)")
}

// Open opens one file without resolving its parent.
func Open(path string, opts *Options) (*Image, error) {
	if opts == nil {
		opts = &Options{}
	}
	rw := !opts.ReadOnly
	f, err := openFile(path, rw)
	if err != nil {
		return nil, &Error{Path: path, Code: "io", Msg: osMsg(err), Err: err}
	}
	if opts.Wrap != nil {
		f = opts.Wrap(f)
	}
	format, err := DetectFormat(f, path)
	if err != nil {
		f.Close()
		if fi, serr := os.Stat(path); serr == nil && fi.IsDir() {
			return nil, &Error{Path: path, Code: "io", Msg: "is a directory, not a disk file"}
		}
		return nil, err
	}
	var b backend
	switch format {
	case FormatVHD:
		b, err = openVHD(f, path, rw)
	case FormatVHDX:
		b, err = openVHDX(f, path, rw)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Image{path: path, f: f, b: b, rw: rw}, nil
}

// osMsg shortens an OS error to its cause (the path is reported separately).
func osMsg(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// FormatFromExt guesses the format from a file name: .vhd/.avhd → VHD,
// .vhdx/.avhdx → VHDX.
func FormatFromExt(path string) (Format, bool) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".vhd", ".avhd":
		return FormatVHD, true
	case ".vhdx", ".avhdx":
		return FormatVHDX, true
	}
	return "", false
}

func isZero(p []byte) bool {
	for len(p) >= 8 {
		if p[0]|p[1]|p[2]|p[3]|p[4]|p[5]|p[6]|p[7] != 0 {
			return false
		}
		p = p[8:]
	}
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

var _ = bytes.Equal
