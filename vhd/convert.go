package vhd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hvsnap/hvsnap/internal/fsutil"
	"github.com/hvsnap/hvsnap/internal/progress"
)

// ConvertOptions controls Convert.
type ConvertOptions struct {
	// Format of the output: "raw", FormatVHD or FormatVHDX.
	Format Format
	// Type of the output disk (TypeFixed or TypeDynamic); ignored for raw.
	Type DiskType
	// BlockSize of the output (0 = default).
	BlockSize uint32
	// Wrap wraps files (tests).
	Wrap FileWrapper
}

// FormatRaw is the flat byte image output of Convert.
const FormatRaw Format = "raw"

// ConvertResult says what Convert wrote.
type ConvertResult struct {
	Path        string `json:"path"`
	Format      Format `json:"format"`
	Type        string `json:"type,omitempty"`
	VirtualSize int64  `json:"virtual_size"`
	DataBytes   int64  `json:"data_bytes"` // bytes that were not zero and were written
	FileSize    int64  `json:"file_size"`
}

const convertChunk = 1 * MiB

type chunk struct {
	off int64
	buf []byte
	// zero: the range reads as zeros by the map (no buffer).
	zero bool
	n    int
	// segs: the non-zero parts of buf, at zeroGrain granularity, as
	// [start, end) pairs relative to buf (computed by the reader so the
	// scan runs on the other core).
	segs [][2]int
}

// zeroGrain is the granularity of zero detection inside data: what qemu-img
// convert uses by default (-S 4k), so raw output is as sparse as its.
const zeroGrain = 4096

var zeroPage [zeroGrain]byte

// nonZeroSegments appends to segs the runs of p that are not all zeros, in
// zeroGrain units (the last unit may be shorter), merging neighbours.
func nonZeroSegments(p []byte, segs [][2]int) [][2]int {
	for i := 0; i < len(p); i += zeroGrain {
		e := min(i+zeroGrain, len(p))
		if bytes.Equal(p[i:e], zeroPage[:e-i]) {
			continue
		}
		if n := len(segs); n > 0 && segs[n-1][1] == i {
			segs[n-1][1] = e
		} else {
			segs = append(segs, [2]int{i, e})
		}
	}
	return segs
}

// streamChain reads the whole virtual disk of c in order and hands chunks to
// sink on a second goroutine (read and write overlap). Buffers are recycled:
// memory stays at a few MiB whatever the disk size.
//
// With scan, each data chunk carries its non-zero segments.
func streamChain(c *Chain, rep progress.Reporter, scan bool, sink func(ch *chunk) error) error {
	const nbuf = 6
	pool := make(chan []byte, nbuf)
	for i := 0; i < nbuf; i++ {
		pool <- make([]byte, convertChunk)
	}
	work := make(chan *chunk, nbuf)
	stop := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		defer close(work)
		err := c.Map(0, c.Size(), func(r MapRun) error {
			if r.Layer < 0 {
				select {
				case work <- &chunk{off: r.Off, n: int(min(r.Len, 1<<62)), zero: true}:
				case <-stop:
					return errStopped
				}
				return nil
			}
			f := c.Layers[r.Layer].f
			for done := int64(0); done < r.Len; {
				n := min(r.Len-done, convertChunk)
				var buf []byte
				select {
				case buf = <-pool:
				case <-stop:
					return errStopped
				}
				if err := readFull(f, buf[:n], r.FileOff+done); err != nil {
					return &Error{Path: c.Layers[r.Layer].path, Code: "io", Msg: "read: " + err.Error(), Err: err}
				}
				var segs [][2]int
				if scan {
					segs = nonZeroSegments(buf[:n], nil)
				}
				select {
				case work <- &chunk{off: r.Off + done, buf: buf, n: int(n), segs: segs}:
				case <-stop:
					return errStopped
				}
				done += n
			}
			return nil
		})
		readErr <- err
	}()
	var sinkErr error
	for ch := range work {
		if sinkErr == nil {
			sinkErr = sink(ch)
			if sinkErr != nil {
				close(stop)
			}
			rep.Add(int64(ch.n))
		}
		if ch.buf != nil {
			pool <- ch.buf
		}
	}
	rerr := <-readErr
	if sinkErr != nil {
		return sinkErr
	}
	if rerr != nil && rerr != errStopped {
		return rerr
	}
	return nil
}

var errStopped = errors.New("stopped")

// Convert flattens the chain into a standalone disk at dst (which must not
// exist): raw (sparse where the disk reads zeros), or a fixed/dynamic VHD or
// VHDX. The output is written under a temporary name in dst's folder, flushed,
// then renamed; on failure nothing is left at dst.
func Convert(c *Chain, dst string, o ConvertOptions, rep progress.Reporter) (*ConvertResult, error) {
	rep = progress.OrNop(rep)
	if _, err := os.Lstat(dst); err == nil {
		return nil, &Error{Path: dst, Code: "exists", Msg: "destination already exists; remove it or choose another name", Err: os.ErrExist}
	}
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".hvsnap-tmp")
	os.Remove(tmp)
	res := &ConvertResult{Path: dst, Format: o.Format, VirtualSize: c.Size()}
	rep.Start("convert", c.Size())
	defer rep.Done()
	var err error
	switch o.Format {
	case FormatRaw, "":
		res.Format = FormatRaw
		err = convertRaw(c, tmp, res, rep)
	case FormatVHD, FormatVHDX:
		err = convertImage(c, tmp, o, res, rep)
	default:
		err = &Error{Path: dst, Code: "invalid-spec", Msg: fmt.Sprintf("unknown output format %q (raw, vhd, vhdx)", o.Format), Err: ErrInvalidSpec}
	}
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if err := fsutil.AtomicRename(tmp, dst); err != nil {
		os.Remove(tmp)
		return nil, &Error{Path: dst, Code: "io", Msg: osMsg(err), Err: err}
	}
	if st, err := os.Stat(dst); err == nil {
		res.FileSize = st.Size()
	}
	return res, nil
}

func convertRaw(c *Chain, tmp string, res *ConvertResult, rep progress.Reporter) error {
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return &Error{Path: tmp, Code: "io", Msg: osMsg(err), Err: err}
	}
	defer f.Close()
	if err := f.Truncate(c.Size()); err != nil {
		return &Error{Path: tmp, Code: "io", Msg: osMsg(err), Err: err}
	}
	err = streamChain(c, rep, true, func(ch *chunk) error {
		for _, sg := range ch.segs {
			res.DataBytes += int64(sg[1] - sg[0])
			if _, err := f.WriteAt(ch.buf[sg[0]:sg[1]], ch.off+int64(sg[0])); err != nil {
				return &Error{Path: tmp, Code: "io", Msg: osMsg(err), Err: err}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return &Error{Path: tmp, Code: "io", Msg: osMsg(err), Err: err}
	}
	return nil
}

func convertImage(c *Chain, tmp string, o ConvertOptions, res *ConvertResult, rep progress.Reporter) error {
	typ := o.Type
	if typ == "" {
		typ = TypeDynamic
	}
	if typ != TypeFixed && typ != TypeDynamic {
		return &Error{Path: tmp, Code: "invalid-spec", Msg: fmt.Sprintf("convert makes fixed or dynamic disks, not %q", typ), Err: ErrInvalidSpec}
	}
	res.Type = string(typ)
	spec := CreateSpec{Format: o.Format, Type: typ, Size: c.Size(), BlockSize: o.BlockSize,
		LogicalSectorSize: uint32(c.SectorSize())}
	if o.Format == FormatVHDX {
		spec.PhysicalSectorSize = c.Leaf().Info().PhysicalSectorSize
	} else if spec.LogicalSectorSize != 512 {
		return &Error{Path: tmp, Code: "invalid-spec", Msg: fmt.Sprintf("the source has %d-byte sectors; VHD holds 512-byte sectors only (use vhdx)", spec.LogicalSectorSize), Err: ErrInvalidSpec}
	}
	if o.Format == FormatVHD && spec.Size%512 != 0 {
		return &Error{Path: tmp, Code: "invalid-spec", Msg: "virtual size is not a multiple of 512", Err: ErrInvalidSpec}
	}
	out, err := Create(tmp, spec, &Options{Wrap: o.Wrap})
	if err != nil {
		return err
	}
	oc := &Chain{Layers: []*Image{out}}
	err = streamChain(c, rep, true, func(ch *chunk) error {
		// A new disk reads zeros everywhere: write the non-zero parts only.
		for _, sg := range ch.segs {
			res.DataBytes += int64(sg[1] - sg[0])
			if _, err := oc.WriteAt(ch.buf[sg[0]:sg[1]], ch.off+int64(sg[0])); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = out.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteRaw streams the chain's virtual disk to w (zeros included), e.g. to
// stdout.
func WriteRaw(c *Chain, w io.Writer, rep progress.Reporter) error {
	rep = progress.OrNop(rep)
	rep.Start("convert", c.Size())
	defer rep.Done()
	zero := make([]byte, convertChunk)
	return streamChain(c, rep, false, func(ch *chunk) error {
		if ch.zero {
			for left := int64(ch.n); left > 0; {
				n := min(left, int64(len(zero)))
				if _, err := w.Write(zero[:n]); err != nil {
					return err
				}
				left -= n
			}
			return nil
		}
		_, err := w.Write(ch.buf[:ch.n])
		return err
	})
}
