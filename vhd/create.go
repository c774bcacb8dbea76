package vhd

import (
	"fmt"
	"os"
)

const (
	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30
	TiB = 1 << 40

	// MaxVHDSize is the largest VHD Windows and qemu accept (2040 GiB).
	MaxVHDSize = 0xFF000000 * 512
	// MaxVHDXSize is MS-VHDX's limit (64 TiB).
	MaxVHDXSize = 64 * TiB
)

// normalize fills defaults into spec and validates it. parent is the parent's
// info for a differencing disk.
func (spec *CreateSpec) normalize(parent *Info) error {
	bad := func(format string, args ...any) error {
		return &Error{Code: "invalid-spec", Msg: fmt.Sprintf(format, args...), Err: ErrInvalidSpec}
	}
	if spec.Format != FormatVHD && spec.Format != FormatVHDX {
		return bad("format must be vhd or vhdx, not %q", spec.Format)
	}
	if spec.Parent != "" && spec.Type == "" {
		spec.Type = TypeDifferencing
	}
	if spec.Type == "" {
		spec.Type = TypeDynamic
	}
	switch spec.Type {
	case TypeFixed, TypeDynamic:
		if spec.Parent != "" {
			return bad("a %s disk has no parent", spec.Type)
		}
	case TypeDifferencing:
		if parent == nil {
			return bad("a differencing disk needs a parent")
		}
		if parent.Format != spec.Format {
			return &Error{Code: "format-mismatch", Msg: fmt.Sprintf("the parent is %s; a %s child cannot link to it", parent.Format, spec.Format), Err: ErrFormatMismatch}
		}
		if spec.Size == 0 {
			spec.Size = parent.VirtualSize
		}
		if spec.Size != parent.VirtualSize {
			return bad("a differencing disk has its parent's size (%d bytes), not %d", parent.VirtualSize, spec.Size)
		}
		if spec.LogicalSectorSize == 0 {
			spec.LogicalSectorSize = parent.LogicalSectorSize
		}
		if spec.LogicalSectorSize != parent.LogicalSectorSize {
			return &Error{Code: "sector-size-mismatch", Msg: fmt.Sprintf("logical sector size %d differs from the parent's %d", spec.LogicalSectorSize, parent.LogicalSectorSize), Err: ErrSectorSizeMismatch}
		}
		if spec.PhysicalSectorSize == 0 {
			spec.PhysicalSectorSize = parent.PhysicalSectorSize
		}
	default:
		return bad("type must be fixed, dynamic or differencing, not %q", spec.Type)
	}
	if spec.Size <= 0 {
		return bad("size must be given and positive")
	}
	switch spec.Format {
	case FormatVHD:
		if spec.LogicalSectorSize == 0 {
			spec.LogicalSectorSize = 512
		}
		if spec.LogicalSectorSize != 512 {
			return bad("VHD has 512-byte sectors only")
		}
		spec.PhysicalSectorSize = 512
		if spec.Size%512 != 0 {
			return bad("size %d is not a multiple of 512", spec.Size)
		}
		if spec.Size > MaxVHDSize {
			return bad("size %d exceeds the VHD limit of 2040 GiB", spec.Size)
		}
		if spec.BlockSize == 0 {
			spec.BlockSize = 2 * MiB
		}
		if spec.Type != TypeFixed {
			bs := spec.BlockSize
			if bs < 512 || bs&(bs-1) != 0 || bs > 256*MiB {
				return bad("VHD block size %d must be a power of two between 512 bytes and 256 MiB", bs)
			}
		}
	case FormatVHDX:
		if spec.LogicalSectorSize == 0 {
			spec.LogicalSectorSize = 512
		}
		if spec.LogicalSectorSize != 512 && spec.LogicalSectorSize != 4096 {
			return bad("logical sector size must be 512 or 4096, not %d", spec.LogicalSectorSize)
		}
		if spec.PhysicalSectorSize == 0 {
			spec.PhysicalSectorSize = 4096
		}
		if spec.PhysicalSectorSize != 512 && spec.PhysicalSectorSize != 4096 {
			return bad("physical sector size must be 512 or 4096, not %d", spec.PhysicalSectorSize)
		}
		if spec.Size%int64(spec.LogicalSectorSize) != 0 {
			return bad("size %d is not a multiple of the logical sector size %d", spec.Size, spec.LogicalSectorSize)
		}
		if spec.Size > MaxVHDXSize {
			return bad("size %d exceeds the VHDX limit of 64 TiB", spec.Size)
		}
		if spec.BlockSize == 0 {
			if spec.Type == TypeDynamic {
				spec.BlockSize = 32 * MiB
			} else {
				spec.BlockSize = 2 * MiB
			}
		}
		bs := spec.BlockSize
		if bs < MiB || bs > 256*MiB || bs&(bs-1) != 0 {
			return bad("VHDX block size %d must be a power of two between 1 MiB and 256 MiB", bs)
		}
	}
	if spec.DiskID.IsZero() {
		spec.DiskID = NewGUID()
	}
	return nil
}

// Create makes a new disk at path (which must not exist) and returns it open
// for writing. A differencing disk links to spec.Parent, with locator paths
// relative to path and, when opts.PathMap maps it, the parent's Windows path.
func Create(path string, spec CreateSpec, opts *Options) (*Image, error) {
	if opts == nil {
		opts = &Options{}
	}
	var np *NewParent
	var pinfo *Info
	if spec.Parent != "" {
		pim, err := Open(spec.Parent, &Options{ReadOnly: true, Wrap: opts.Wrap})
		if err != nil {
			return nil, err
		}
		inf := pim.Info()
		pinfo = &inf
		np, err = newParentFor(path, pim, opts.PathMap)
		pim.Close()
		if err != nil {
			return nil, err
		}
	}
	if err := spec.normalize(pinfo); err != nil {
		if e, ok := err.(*Error); ok && e.Path == "" {
			e.Path = path
		}
		return nil, err
	}
	f, err := createFile(path)
	if err != nil {
		return nil, &Error{Path: path, Code: "io", Msg: osMsg(err), Err: err}
	}
	if opts.Wrap != nil {
		f = opts.Wrap(f)
	}
	var b backend
	switch spec.Format {
	case FormatVHD:
		b, err = createVHD(f, path, spec, np)
	case FormatVHDX:
		b, err = createVHDX(f, path, spec, np)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		if _, ok := err.(*Error); !ok {
			err = &Error{Path: path, Code: "io", Msg: osMsg(err), Err: err}
		}
		return nil, err
	}
	if err := syncDir(path); err != nil {
		b.close()
		return nil, &Error{Path: path, Code: "io", Msg: osMsg(err), Err: err}
	}
	return &Image{path: path, f: f, b: b, rw: true}, nil
}
