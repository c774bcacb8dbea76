package vhd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Link says how a layer of a chain found its parent.
type Link struct {
	Child  string `json:"child"`
	Parent string `json:"parent"`
	// Via is the locator entry that led to the parent: "relative_path",
	// "absolute_path", "volume_path", "file_name".
	Via string `json:"via"`
	// LinkageOK: the parent's identity matches what the child recorded.
	LinkageOK bool `json:"linkage_ok"`
	// TimestampOK: VHD parent timestamp equals the parent's mtime (always
	// true for VHDX).
	TimestampOK bool `json:"timestamp_ok"`
}

// Chain is a differencing chain, leaf first, as one virtual disk. Only the
// leaf may be open for writing; parents are always read-only.
type Chain struct {
	Layers   []*Image
	Links    []Link    // Links[i]: Layers[i] → Layers[i+1]
	Warnings []Finding // parent timestamp mismatches, virtual size mismatches, ignored linkage
	opts     Options
}

// Leaf is the file the chain was opened by.
func (c *Chain) Leaf() *Image { return c.Layers[0] }

// Base is the root parent.
func (c *Chain) Base() *Image { return c.Layers[len(c.Layers)-1] }

// Size is the virtual size (the leaf's).
func (c *Chain) Size() int64 { return c.Layers[0].VirtualSize() }

// SectorSize is the logical sector size.
func (c *Chain) SectorSize() int64 { return c.Layers[0].SectorSize() }

// Close closes every layer.
func (c *Chain) Close() error {
	var first error
	for _, im := range c.Layers {
		if err := im.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// candidate is one place a parent may be.
type candidate struct {
	via  string
	path string
}

// parentCandidates lists where the parent of the image at childPath may be,
// in the order they are tried: relative path, absolute path (through the
// path map), volume path (through the path map), then the file name in the
// child's folder.
func parentCandidates(childPath string, loc *ParentLocator, pm PathMap) []candidate {
	var out []candidate
	seen := map[string]bool{}
	add := func(via, p string) {
		if p == "" {
			return
		}
		c := filepath.Clean(p)
		if seen[c] {
			return
		}
		seen[c] = true
		out = append(out, candidate{via, c})
	}
	if loc.RelativePath != "" {
		add("relative_path", winToLocalRelative(childPath, loc.RelativePath))
	}
	for _, w := range []struct{ via, p string }{{"absolute_path", loc.AbsolutePath}, {"volume_path", loc.VolumePath}} {
		if w.p == "" {
			continue
		}
		if l, ok := pm.ToLocal(w.p); ok {
			add(w.via, l)
		} else if !isWinAbs(w.p) && filepath.Separator == '/' && (strings.HasPrefix(w.p, `\`) || strings.HasPrefix(w.p, "/")) {
			// A local POSIX path recorded by hvsnap on a non-Windows host
			// (see newParentFor), or written with slashes by another tool.
			add(w.via, strings.ReplaceAll(w.p, `\`, "/"))
		}
	}
	dir := filepath.Dir(childPath)
	for _, n := range []string{loc.ParentName, winBase(loc.RelativePath), winBase(loc.AbsolutePath), winBase(loc.VolumePath)} {
		if n != "" && n != "." && n != ".." && !strings.ContainsAny(n, `/\`) {
			add("file_name", filepath.Join(dir, n))
		}
	}
	return out
}

// linkageMatches reports whether parent is the disk child's locator names.
func linkageMatches(child Info, loc *ParentLocator, parent Info) bool {
	if child.Format != parent.Format {
		return false
	}
	switch child.Format {
	case FormatVHDX:
		for _, s := range []string{loc.Linkage, loc.Linkage2} {
			if s == "" {
				continue
			}
			g, err := ParseGUID(s)
			if err != nil || g.IsZero() {
				continue
			}
			if g == parent.DataWriteGUID {
				return true
			}
		}
		return false
	case FormatVHD:
		return loc.ParentUniqueID == parent.UniqueID
	}
	return false
}

// vhdTimestamp is the VHD epoch second count of t.
func vhdTimestamp(t time.Time) int64 { return t.Unix() - 946684800 }

// OpenChain opens path and every parent it depends on. With opts.ReadOnly
// false only the leaf is writable.
func OpenChain(path string, opts *Options) (*Chain, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	leaf, err := Open(path, &o)
	if err != nil {
		return nil, err
	}
	c := &Chain{Layers: []*Image{leaf}, opts: o}
	seen := []os.FileInfo{}
	if st, err := os.Stat(path); err == nil {
		seen = append(seen, st)
	}
	for {
		cur := c.Layers[len(c.Layers)-1]
		loc := cur.Parent()
		if loc == nil {
			return c, nil
		}
		if len(c.Layers) >= o.maxDepth() {
			c.Close()
			return nil, newErr(path, ErrChainTooDeep, "chain-too-deep", "parent chain deeper than %d layers", o.maxDepth())
		}
		parent, link, warn, err := resolveParent(cur, loc, &o, seen)
		if err != nil {
			c.Close()
			return nil, err
		}
		if st, err := os.Stat(parent.Path()); err == nil {
			seen = append(seen, st)
		}
		c.Layers = append(c.Layers, parent)
		c.Links = append(c.Links, link)
		c.Warnings = append(c.Warnings, warn...)
	}
}

// resolveParent finds, opens (read-only) and validates the parent of cur.
func resolveParent(cur *Image, loc *ParentLocator, o *Options, seen []os.FileInfo) (*Image, Link, []Finding, error) {
	open := func(path string) (parentDisk, error) {
		p, err := Open(path, &Options{ReadOnly: true, Wrap: o.Wrap})
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	p, link, warn, err := resolveParentWith(cur.Path(), cur.Info(), loc, o, seen, open, os.Stat)
	if err != nil {
		return nil, link, warn, err
	}
	return p.(*Image), link, warn, nil
}

// parentDisk is a candidate parent: an open *Image, or a description of one
// (ResolveParentOf).
type parentDisk interface {
	Path() string
	Info() Info
	Close() error
}

// resolveParentWith is the resolution of resolveParent over candidates that
// open returns (the error Open would give when one cannot be opened).
// stat is os.Stat (or what a caller knows it returns).
func resolveParentWith(curPath string, cinf Info, loc *ParentLocator, o *Options, seen []os.FileInfo, open func(path string) (parentDisk, error), stat func(string) (os.FileInfo, error)) (parentDisk, Link, []Finding, error) {
	cands := parentCandidates(curPath, loc, o.PathMap)
	var tried []string
	var mismatch parentDisk
	var mismatchVia string
	var openErr error
	for _, cand := range cands {
		st, err := stat(cand.path)
		if err != nil {
			tried = append(tried, cand.path)
			continue
		}
		for _, s := range seen {
			if os.SameFile(s, st) {
				if mismatch != nil {
					mismatch.Close()
				}
				return nil, Link{}, nil, newErr(curPath, ErrChainCycle, "chain-cycle", "parent %s is already in the chain (cycle)", cand.path)
			}
		}
		p, err := open(cand.path)
		if err != nil {
			tried = append(tried, cand.path)
			if openErr == nil {
				openErr = err
			}
			continue
		}
		pinf := p.Info()
		if linkageMatches(cinf, loc, pinf) {
			if mismatch != nil {
				mismatch.Close()
			}
			return finishLink(curPath, cinf, p, cand.via, true, loc, stat)
		}
		if mismatch == nil {
			mismatch, mismatchVia = p, cand.via
		} else {
			p.Close()
		}
	}
	if mismatch != nil {
		if o.IgnoreLinkage {
			return finishLink(curPath, cinf, mismatch, mismatchVia, false, loc, stat)
		}
		pinf := mismatch.Info()
		mismatch.Close()
		return nil, Link{}, nil, newErr(curPath, ErrParentMismatch, "linkage-mismatch",
			"parent %s does not match: %s", pinf.Path, describeMismatch(cinf, loc, pinf))
	}
	if openErr != nil {
		var e *Error
		msg := openErr.Error()
		if errors.As(openErr, &e) {
			msg = e.Error()
		}
		return nil, Link{}, nil, &Error{Path: curPath, Code: "parent-unreadable", Msg: "parent cannot be opened: " + msg, Err: openErr}
	}
	return nil, Link{}, nil, newErr(curPath, ErrParentNotFound, "parent-missing",
		"parent disk not found (locator %s; tried %s)", describeLocator(loc), strings.Join(tried, ", "))
}

func describeLocator(loc *ParentLocator) string {
	var parts []string
	for _, e := range loc.Entries {
		if strings.Contains(strings.ToLower(e.Key), "linkage") {
			continue
		}
		parts = append(parts, e.Key+"="+e.Value)
	}
	if loc.ParentName != "" {
		parts = append(parts, "name="+loc.ParentName)
	}
	if len(parts) == 0 {
		return "empty"
	}
	return strings.Join(parts, " ")
}

func describeMismatch(c Info, loc *ParentLocator, p Info) string {
	if c.Format != p.Format {
		return fmt.Sprintf("it is a %s file, the child is %s", p.Format, c.Format)
	}
	if c.Format == FormatVHDX {
		l := loc.Linkage
		if loc.Linkage2 != "" {
			if g, err := ParseGUID(loc.Linkage2); err == nil && !g.IsZero() {
				l += " or " + loc.Linkage2
			}
		}
		return fmt.Sprintf("child expects DataWriteGuid %s, parent has %s", l, p.DataWriteGUID.Linkage())
	}
	return fmt.Sprintf("child expects unique ID %s, parent has %s", loc.ParentUniqueID, p.UniqueID)
}

func finishLink(curPath string, cinf Info, p parentDisk, via string, ok bool, loc *ParentLocator, stat func(string) (os.FileInfo, error)) (parentDisk, Link, []Finding, error) {
	pinf := p.Info()
	link := Link{Child: curPath, Parent: p.Path(), Via: via, LinkageOK: ok, TimestampOK: true}
	var warn []Finding
	if !ok {
		warn = append(warn, Finding{Code: "linkage-mismatch", Severity: SevError, Path: curPath,
			Message: "parent " + p.Path() + " used although it does not match: " + describeMismatch(cinf, loc, pinf)})
	}
	if cinf.LogicalSectorSize != pinf.LogicalSectorSize {
		p.Close()
		return nil, Link{}, nil, newErr(curPath, ErrSectorSizeMismatch, "sector-size-mismatch",
			"logical sector size %d differs from parent %s (%d)", cinf.LogicalSectorSize, p.Path(), pinf.LogicalSectorSize)
	}
	if cinf.VirtualSize != pinf.VirtualSize {
		warn = append(warn, Finding{Code: "virtual-size-mismatch", Severity: SevError, Path: curPath,
			Message: fmt.Sprintf("virtual size %d differs from parent %s (%d bytes): the parent was expanded or shrunk after this differencing disk was made", cinf.VirtualSize, p.Path(), pinf.VirtualSize)})
	}
	if cinf.Format == FormatVHD && !loc.ParentTimestamp.IsZero() {
		if st, err := stat(p.Path()); err == nil && vhdTimestamp(st.ModTime()) != vhdTimestamp(loc.ParentTimestamp) {
			link.TimestampOK = false
			warn = append(warn, Finding{Code: "parent-timestamp", Severity: SevWarning, Path: curPath,
				Message: fmt.Sprintf("parent timestamp %s differs from %s's modification time %s", loc.ParentTimestamp.UTC().Format(time.RFC3339), p.Path(), st.ModTime().UTC().Format(time.RFC3339))})
		}
	}
	return p, link, warn, nil
}

// MapRun is a range of the chain's virtual disk and the layer that supplies it.
type MapRun struct {
	Off, Len int64
	// Layer is the index in Chain.Layers holding the data, or -1 when the
	// range reads as zeros.
	Layer   int
	FileOff int64 // Layer >= 0: offset in that layer's file
	State   State // state in the supplying layer (StateData), or why it is zero
}

// Map calls fn for the runs of [off, off+length) resolved through the
// chain, in order. off and length must be multiples of the sector size.
func (c *Chain) Map(off, length int64, fn func(MapRun) error) error {
	return c.mapLayer(0, off, length, fn)
}

func (c *Chain) mapLayer(i int, off, length int64, fn func(MapRun) error) error {
	im := c.Layers[i]
	vs := im.VirtualSize()
	end := off + length
	if off >= vs {
		return fn(MapRun{Off: off, Len: length, Layer: -1, State: StateAbsent})
	}
	if end > vs {
		// Beyond this layer's end (a smaller parent): zeros.
		if err := c.mapLayer(i, off, vs-off, fn); err != nil {
			return err
		}
		return fn(MapRun{Off: vs, Len: end - vs, Layer: -1, State: StateAbsent})
	}
	for off < end {
		r, err := im.b.lookup(off, end-off)
		if err != nil {
			return err
		}
		if r.Len <= 0 || r.Off != off || r.Len > end-off {
			return newErr(im.path, ErrCorrupt, "internal", "internal error: bad run %+v at %d", r, off)
		}
		switch {
		case r.State == StateData:
			err = fn(MapRun{Off: off, Len: r.Len, Layer: i, FileOff: r.FileOff, State: StateData})
		case r.State == StateAbsent && i+1 < len(c.Layers):
			err = c.mapLayer(i+1, off, r.Len, fn)
		default:
			err = fn(MapRun{Off: off, Len: r.Len, Layer: -1, State: r.State})
		}
		if err != nil {
			return err
		}
		off += r.Len
	}
	return nil
}

// ReadAt reads the virtual disk as the chain shows it.
func (c *Chain) ReadAt(p []byte, off int64) (int, error) {
	return c.readFrom(0, p, off)
}

// readFrom reads through layers i.. (the view of Layers[i]).
func (c *Chain) readFrom(i int, p []byte, off int64) (int, error) {
	size := c.Layers[i].VirtualSize()
	if off < 0 {
		return 0, newErr(c.Layers[i].path, ErrOutOfRange, "out-of-range", "negative offset %d", off)
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := len(p)
	var eof error
	if int64(n) > size-off {
		n = int(size - off)
		eof = io.EOF
	}
	ss := c.SectorSize()
	a0 := off / ss * ss
	a1 := (off + int64(n) + ss - 1) / ss * ss
	if a1 > size {
		a1 = size
	}
	end := off + int64(n)
	err := c.mapLayer(i, a0, a1-a0, func(r MapRun) error {
		s, e := max(r.Off, off), min(r.Off+r.Len, end)
		if s >= e {
			return nil
		}
		dst := p[s-off : e-off]
		if r.Layer < 0 {
			clear(dst)
			return nil
		}
		return readFull(c.Layers[r.Layer].f, dst, r.FileOff+(s-r.Off))
	})
	if err != nil {
		return 0, err
	}
	return n, eof
}

// layerView is the chain seen from layer i down (what layer i-1 sees as
// its parent).
type layerView struct {
	c *Chain
	i int
}

func (v layerView) ReadAt(p []byte, off int64) (int, error) { return v.c.readFrom(v.i, p, off) }

// ParentView returns the view of the chain below the leaf (nil when the
// leaf has no parent).
func (c *Chain) ParentView() io.ReaderAt {
	if len(c.Layers) < 2 {
		return nil
	}
	return layerView{c, 1}
}

// maxWriteChunk bounds the buffer a single backend write gets.
const maxWriteChunk = 4 * MiB

// WriteAt writes p into the leaf at virtual offset off. Unaligned heads and
// tails are completed from the chain (read-modify-write of whole sectors).
func (c *Chain) WriteAt(p []byte, off int64) (int, error) {
	leaf := c.Leaf()
	if !leaf.rw {
		return 0, newErr(leaf.path, ErrReadOnly, "read-only", "opened read-only")
	}
	size := c.Size()
	if off < 0 || off+int64(len(p)) > size {
		return 0, newErr(leaf.path, ErrOutOfRange, "out-of-range", "write of %d bytes at %d is outside the virtual disk (%d bytes)", len(p), off, size)
	}
	ss := c.SectorSize()
	parent := c.ParentView()
	done := 0
	for done < len(p) {
		cur := off + int64(done)
		a0 := cur / ss * ss
		// Chunk: up to maxWriteChunk of aligned bytes.
		want := int64(len(p) - done)
		a1 := (cur + want + ss - 1) / ss * ss
		if a1-a0 > maxWriteChunk {
			a1 = a0 + maxWriteChunk
		}
		take := a1 - cur
		if take > want {
			take = want
		}
		var buf []byte
		if a0 == cur && take == a1-a0 {
			buf = p[done : done+int(take)]
		} else {
			buf = make([]byte, a1-a0)
			// Fill the partial head/tail sectors from the current view.
			if _, err := c.readFrom(0, buf[:ss], a0); err != nil && err != io.EOF {
				return done, err
			}
			if a1-ss > a0 {
				if _, err := c.readFrom(0, buf[len(buf)-int(ss):], a1-ss); err != nil && err != io.EOF {
					return done, err
				}
			}
			copy(buf[cur-a0:], p[done:done+int(take)])
		}
		if err := leaf.b.writeAt(buf, a0, parent); err != nil {
			return done, err
		}
		done += int(take)
	}
	return done, nil
}

// Flush makes the leaf's writes durable.
func (c *Chain) Flush() error { return c.Leaf().Flush() }

// Check validates every layer and the links between them.
func (c *Chain) Check() ([]Finding, error) {
	var out []Finding
	for _, im := range c.Layers {
		f, err := im.Check()
		if err != nil {
			return out, err
		}
		out = append(out, f...)
	}
	out = append(out, c.Warnings...)
	return out, nil
}

// Check opens path and its chain read-only and returns what is wrong. An error
// is returned only when checking was impossible (missing file, permission);
// damage, including a broken chain, is reported as findings.
func Check(path string, opts *Options) ([]Finding, error) {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	o.ReadOnly = true
	im, err := Open(path, &o)
	if err != nil {
		if isFileProblem(err) {
			return nil, err
		}
		return []Finding{findingFromError(path, err)}, nil
	}
	im.Close()
	c, err := OpenChain(path, &o)
	if err != nil {
		if isFileProblem(err) && !errors.Is(err, ErrParentNotFound) {
			var e *Error
			if errors.As(err, &e) && e.Path != path {
				return []Finding{findingFromError(path, err)}, nil
			}
			return nil, err
		}
		// Check the leaf alone, then report the broken link.
		im, err2 := Open(path, &o)
		var out []Finding
		if err2 == nil {
			f, _ := im.Check()
			out = append(out, f...)
			im.Close()
		}
		return append(out, findingFromError(path, err)), nil
	}
	defer c.Close()
	f, err := c.Check()
	if f == nil {
		f = []Finding{}
	}
	return f, err
}

// isFileProblem reports errors that are about reaching the file rather than
// its content.
func isFileProblem(err error) bool {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return true
	}
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission)
}

// Identity returns the value children link to: VHDX DataWriteGUID, VHD
// unique ID.
func (inf Info) Identity() GUID {
	if inf.Format == FormatVHDX {
		return inf.DataWriteGUID
	}
	return inf.UniqueID
}

// ReparentOptions controls Reparent.
type ReparentOptions struct {
	PathMap PathMap
	// IgnoreIDMismatch links to the new parent even when its identity differs
	// from what the child recorded (like Set-VHD -IgnoreIdMismatch); the child
	// then records the new parent's identity.
	IgnoreIDMismatch bool
	Wrap             FileWrapper
}

// ReparentResult says what Reparent did.
type ReparentResult struct {
	Child, Parent string
	LinkageOK     bool // the new parent's identity matched
	OldLocator    *ParentLocator
	NewLocator    *ParentLocator
	Note          string // what changed besides paths, when anything did
}

// Reparent points the differencing disk child at parent: rewrites locator
// paths, and with IgnoreIDMismatch also the recorded identity.
func Reparent(child, parent string, o ReparentOptions) (*ReparentResult, error) {
	pim, err := Open(parent, &Options{ReadOnly: true, Wrap: o.Wrap})
	if err != nil {
		return nil, err
	}
	defer pim.Close()
	cim, err := Open(child, &Options{Wrap: o.Wrap})
	if err != nil {
		return nil, err
	}
	defer cim.Close()
	loc := cim.Parent()
	if loc == nil {
		return nil, newErr(child, ErrInvalidSpec, "not-differencing", "not a differencing disk; nothing to re-point")
	}
	cinf, pinf := cim.Info(), pim.Info()
	if cinf.Format != pinf.Format {
		return nil, newErr(child, ErrFormatMismatch, "format-mismatch", "child is %s, new parent %s is %s", cinf.Format, parent, pinf.Format)
	}
	if cinf.LogicalSectorSize != pinf.LogicalSectorSize {
		return nil, newErr(child, ErrSectorSizeMismatch, "sector-size-mismatch", "logical sector size %d differs from %s (%d)", cinf.LogicalSectorSize, parent, pinf.LogicalSectorSize)
	}
	ok := linkageMatches(cinf, loc, pinf)
	res := &ReparentResult{Child: child, Parent: parent, LinkageOK: ok, OldLocator: loc}
	if !ok && !o.IgnoreIDMismatch {
		return nil, newErr(child, ErrParentMismatch, "linkage-mismatch",
			"%s is not this disk's parent: %s (use --ignore-id-mismatch to link anyway)", parent, describeMismatch(cinf, loc, pinf))
	}
	np, err := newParentFor(child, pim, o.PathMap)
	if err != nil {
		return nil, err
	}
	if ok && cinf.Format == FormatVHDX {
		// Keep what matched; a linkage2 in progress stays valid.
		if g, err := ParseGUID(loc.Linkage); err == nil && g == pinf.DataWriteGUID {
			np.Linkage = g
		}
	}
	if !ok {
		res.Note = fmt.Sprintf("identity did not match (%s); the child now records the new parent's identity %s", describeMismatch(cinf, loc, pinf), pinf.Identity())
	}
	if err := cim.SetParent(np); err != nil {
		return nil, err
	}
	if err := cim.Flush(); err != nil {
		return nil, err
	}
	res.NewLocator = cim.Parent()
	return res, nil
}

// FindChildren returns the differencing disks in dirs whose parent resolves
// to (and links to) the disk at path.
func FindChildren(path string, dirs []string, pm PathMap) ([]string, error) {
	target, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	pim, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	pinf := pim.Info()
	pim.Close()
	var out []string
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if e.IsDir() {
				continue
			}
			if _, ok := FormatFromExt(e.Name()); !ok {
				continue
			}
			p := filepath.Join(d, e.Name())
			if st, err := os.Stat(p); err != nil || os.SameFile(st, target) {
				continue
			}
			im, err := Open(p, &Options{ReadOnly: true})
			if err != nil {
				continue
			}
			loc := im.Parent()
			cinf := im.Info()
			im.Close()
			if loc == nil || !linkageMatches(cinf, loc, pinf) {
				continue
			}
			for _, cand := range parentCandidates(p, loc, pm) {
				if st, err := os.Stat(cand.path); err == nil && os.SameFile(st, target) {
					out = append(out, p)
					break
				}
			}
		}
	}
	return out, nil
}

// newParentFor builds the locator a differencing disk at childPath gets for
// parent: identity, relative path, and the Windows absolute path when the
// path map (or the OS) gives one.
func newParentFor(childPath string, parent *Image, pm PathMap) (*NewParent, error) {
	inf := parent.Info()
	rel, err := winRelative(childPath, parent.Path())
	if err != nil {
		return nil, &Error{Path: childPath, Code: "io", Msg: err.Error(), Err: err}
	}
	np := &NewParent{
		Name:               filepath.Base(parent.Path()),
		RelativePath:       rel,
		VirtualSize:        inf.VirtualSize,
		LogicalSectorSize:  inf.LogicalSectorSize,
		PhysicalSectorSize: inf.PhysicalSectorSize,
	}
	if abs, err := filepath.Abs(parent.Path()); err == nil {
		if w, ok := pm.ToWindows(abs); ok {
			np.AbsolutePath = w
		} else {
			// No Windows path is known: record the local absolute path in
			// Windows separators. libvhdi (vhdimount) takes the parent's file
			// name only from absolute_win32_path, and Hyper-V tries
			// relative_path first, so this form is harmless there.
			np.AbsolutePath = strings.ReplaceAll(abs, string(filepath.Separator), `\`)
		}
	}
	switch inf.Format {
	case FormatVHDX:
		np.Linkage = inf.DataWriteGUID
	case FormatVHD:
		np.UniqueID = inf.UniqueID
		if st, err := os.Stat(parent.Path()); err == nil {
			np.Timestamp = st.ModTime()
		}
	}
	return np, nil
}

// ParentLink is how one differencing disk resolves its parent.
type ParentLink struct {
	Path      string    // the parent's path
	Via       string    // locator entry that found it
	LinkageOK bool      // the parent's identity matches
	Info      Info      // the parent's description
	Warnings  []Finding // linkage mismatch, size mismatch, timestamp
}

// ResolveParent finds im's parent without opening the rest of the chain. A
// candidate whose identity does not match is still returned, with LinkageOK
// false and a warning. Errors: ErrParentNotFound, ErrSectorSizeMismatch, an
// unreadable parent, or a parent that is im itself (ErrChainCycle). Returns
// nil, nil when im is not a differencing disk.
func (im *Image) ResolveParent(opts *Options) (*ParentLink, error) {
	loc := im.Parent()
	if loc == nil {
		return nil, nil
	}
	o := Options{}
	if opts != nil {
		o = *opts
	}
	o.IgnoreLinkage = true
	var seen []os.FileInfo
	if st, err := os.Stat(im.path); err == nil {
		seen = append(seen, st)
	}
	p, link, warn, err := resolveParent(im, loc, &o, seen)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return &ParentLink{Path: p.Path(), Via: link.Via, LinkageOK: link.LinkageOK, Info: p.Info(), Warnings: warn}, nil
}

// SetDataWriteGUID fixes the DataWriteGuid a VHDX opened for writing carries
// for the rest of this session: written to the header now (and flushed)
// unless the header already holds it, and not renewed by later writes. A
// merge uses it to announce the parent's future identity to the child first
// (parent_linkage2, FORMATS.md §4.3) and to keep it when resumed. VHD has no
// such identity: a no-op.
func (im *Image) SetDataWriteGUID(g GUID) error {
	if s, ok := im.b.(interface{ setDataWriteGUID(GUID) error }); ok {
		return s.setDataWriteGUID(g)
	}
	if !im.rw {
		return newErr(im.path, ErrReadOnly, "read-only", "opened read-only")
	}
	return nil
}

// ParentFor builds the locator the differencing disk at childPath gets to
// link to parent as it is now: its identity (VHDX DataWriteGuid; VHD unique
// ID and modification time), relative path, and the Windows absolute path
// (through pm, else the local path in Windows separators).
func ParentFor(childPath string, parent *Image, pm PathMap) (*NewParent, error) {
	return newParentFor(childPath, parent, pm)
}

// SetWriteBatch lets block allocations of several writes share one
// metadata update (VHDX: one log transaction) until max bytes were
// allocated, or until Flush or Close; max <= 0 turns batching off and
// commits what is pending. A crash loses the batched writes not yet
// committed (never anything older: the file stays consistent), so callers
// that can repeat their writes — a merge — use it to avoid a flush per
// block. VHD: no effect.
func (im *Image) SetWriteBatch(max int64) error {
	if !im.rw {
		return newErr(im.path, ErrReadOnly, "read-only", "opened read-only")
	}
	if s, ok := im.b.(interface{ setWriteBatch(int64) error }); ok {
		return s.setWriteBatch(max)
	}
	return nil
}

// Describer describes disk files to ResolveParentOf, typically from what a
// caller that reads every file once already knows.
type Describer interface {
	// Describe returns what Open followed by Image.Info would for the disk
	// file at path, or the error Open returns for it.
	Describe(path string) (Info, error)
	// Stat is os.Stat.
	Stat(path string) (os.FileInfo, error)
}

// describedDisk is a candidate parent known only by its description.
type describedDisk struct{ inf Info }

func (d describedDisk) Path() string { return d.inf.Path }
func (d describedDisk) Info() Info   { return d.inf }
func (d describedDisk) Close() error { return nil }

// ResolveParentOf is [Image.ResolveParent] for the differencing disk at path
// described by inf and loc (what Info and Parent returned for it), with the
// files asked about through ds instead of opened and stat'ed. It returns
// what ResolveParent returns for the same files, except that Info is what
// ds described. Returns nil, nil when loc is nil.
func ResolveParentOf(path string, inf Info, loc *ParentLocator, opts *Options, ds Describer) (*ParentLink, error) {
	if loc == nil {
		return nil, nil
	}
	o := Options{}
	if opts != nil {
		o = *opts
	}
	o.IgnoreLinkage = true
	var seen []os.FileInfo
	if st, err := ds.Stat(path); err == nil {
		seen = append(seen, st)
	}
	open := func(p string) (parentDisk, error) {
		pinf, err := ds.Describe(p)
		if err != nil {
			return nil, err
		}
		pinf.Path = p
		return describedDisk{pinf}, nil
	}
	p, link, warn, err := resolveParentWith(path, inf, loc, &o, seen, open, ds.Stat)
	if err != nil {
		return nil, err
	}
	return &ParentLink{Path: p.Path(), Via: link.Via, LinkageOK: link.LinkageOK, Info: p.Info(), Warnings: warn}, nil
}
