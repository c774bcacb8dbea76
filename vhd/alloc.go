package vhd

import "fmt"

// Block allocation queries: what a file holds per block and what one more
// block costs. Space analysis and merge planning compute exact growth from
// these (headers and BATs only, never payload).

// blockAllocator is implemented by both backends.
type blockAllocator interface {
	// allocUnit is the number of bytes the file grows by when one more
	// payload block is allocated (VHD: bitmap + block + alignment padding;
	// VHDX: the block size). 0 for fixed disks.
	allocUnit() int64
	// blockAllocated reports whether payload block idx has storage in the file.
	blockAllocated(idx int64) (bool, error)
	// maxFileSize is the size of the file with every block allocated.
	maxFileSize() int64
}

// BlockSize returns the allocation block size (the virtual size for a fixed
// VHD, which has no blocks).
func (im *Image) BlockSize() int64 {
	inf := im.b.info()
	if inf.BlockSize == 0 {
		return inf.VirtualSize
	}
	return int64(inf.BlockSize)
}

// Blocks is the number of payload blocks of the virtual disk.
func (im *Image) Blocks() int64 {
	bs := im.BlockSize()
	if bs <= 0 {
		return 0
	}
	return (im.VirtualSize() + bs - 1) / bs
}

// AllocUnit is what the file grows by when one more block is allocated
// (0 for a fixed disk).
func (im *Image) AllocUnit() int64 {
	if im.b.info().Type == TypeFixed {
		return 0
	}
	return im.b.(blockAllocator).allocUnit()
}

// BlockAllocated reports whether payload block idx has storage in the file.
// Every block of a fixed disk is allocated.
func (im *Image) BlockAllocated(idx int64) (bool, error) {
	if idx < 0 || idx >= im.Blocks() {
		return false, newErr(im.path, ErrOutOfRange, "out-of-range", "block %d is outside the disk (%d blocks)", idx, im.Blocks())
	}
	if im.b.info().Type == TypeFixed {
		return true, nil
	}
	return im.b.(blockAllocator).blockAllocated(idx)
}

// MaxFileSize is the size of the file with every block allocated: the most a
// dynamic or differencing disk can grow to.
func (im *Image) MaxFileSize() int64 {
	return im.b.(blockAllocator).maxFileSize()
}

// TouchedBlocks calls fn, in increasing order and once each, with the index
// (in units of blockSize bytes) of every block that the child's own content
// overrides: data it holds and, for VHDX, ranges it marks ZERO/UNMAPPED/
// UNDEFINED (those too must read as zeros after a merge).
func (im *Image) TouchedBlocks(blockSize int64, fn func(idx int64) error) error {
	if blockSize <= 0 {
		return fmt.Errorf("TouchedBlocks: block size %d", blockSize)
	}
	last := int64(-1)
	return im.Extents(func(r Run) error {
		if r.State == StateAbsent {
			return nil
		}
		first := max(r.Off/blockSize, last+1)
		end := (r.Off + r.Len - 1) / blockSize
		for b := first; b <= end; b++ {
			if err := fn(b); err != nil {
				return err
			}
		}
		last = max(last, end)
		return nil
	})
}

// MergeGrowth returns how many bytes parent's file grows if child is merged
// into it now: each parent block that child's content touches and that the
// parent does not yet hold costs one allocation unit. A fixed parent grows 0.
func MergeGrowth(child, parent *Image) (int64, error) {
	if parent.Info().Type == TypeFixed {
		return 0, nil
	}
	unit := parent.AllocUnit()
	bs := parent.BlockSize()
	var grow int64
	err := child.TouchedBlocks(bs, func(b int64) error {
		if b >= parent.Blocks() {
			return nil // beyond a smaller parent: a merge must grow it first
		}
		ok, err := parent.BlockAllocated(b)
		if err != nil {
			return err
		}
		if !ok {
			grow += unit
		}
		return nil
	})
	return grow, err
}

// --- VHD ---

func (d *v1Disk) allocUnit() int64 {
	if d.typ == v1TypeFixed {
		return 0
	}
	// Worst case of the 4 KiB data alignment Windows and hvsnap use.
	pad := int64(0)
	if d.bs >= v1DataAlign {
		pad = v1DataAlign - 512
	}
	return d.bm + d.bs + pad
}

func (d *v1Disk) blockAllocated(idx int64) (bool, error) {
	if d.typ == v1TypeFixed {
		return true, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	off, err := d.blockAt(idx)
	if err != nil {
		return false, err
	}
	return off >= 0, nil
}

func (d *v1Disk) maxFileSize() int64 {
	if d.typ == v1TypeFixed {
		return d.fileSize
	}
	return d.metaEnd + d.nblocks*d.allocUnit() + v1FooterSize
}

// --- VHDX ---

func (b *vxBackend) allocUnit() int64 {
	if b.geo.leaveAll {
		return 0
	}
	return b.geo.bs
}

func (b *vxBackend) blockAllocated(idx int64) (bool, error) {
	e, err := b.batEntry(b.geo.batIndex(idx))
	if err != nil {
		return false, err
	}
	st := e & 7
	return st == vxFull || st == vxPartial, nil
}

func (b *vxBackend) maxFileSize() int64 {
	// Header section, log, metadata and BAT regions end where the first
	// payload may go; add every payload block and, for differencing files,
	// every sector bitmap block.
	end := int64(vxHeaderSection)
	for _, r := range b.regions {
		end = max(end, int64(r.Off)+int64(r.Len))
	}
	end = max(end, int64(b.hdr.LogOffset)+int64(b.hdr.LogLength))
	n := b.geo.nb * b.geo.bs
	if b.geo.diff {
		n += b.geo.nsb * vxSBBlockSize
	}
	return end + n
}

// AllocatedBlocks calls fn, in increasing order, with the index of every
// payload block that has storage in the file (every block of a fixed disk):
// the blocks for which BlockAllocated reports true, with the same errors.
func (im *Image) AllocatedBlocks(fn func(idx int64) error) error {
	nb := im.Blocks()
	if im.b.info().Type == TypeFixed {
		for b := int64(0); b < nb; b++ {
			if err := fn(b); err != nil {
				return err
			}
		}
		return nil
	}
	ba := im.b.(blockAllocator)
	for b := int64(0); b < nb; b++ {
		ok, err := ba.blockAllocated(b)
		if err != nil {
			return err
		}
		if ok {
			if err := fn(b); err != nil {
				return err
			}
		}
	}
	return nil
}
