package vm

import (
	"fmt"
	"hash/crc32"
	"io"
	"sort"

	"github.com/hvsnap/hvsnap/internal/fsutil"
)

// ContainerOptions tunes [ReadContainer].
type ContainerOptions struct {
	// Strict turns entry-level damage (a bad key-entry or object-entry
	// checksum, a dangling or cyclic parent, a value outside the file) into
	// an error. By default such entries are dropped, with their subtrees, and
	// described in Container.Problems, so that a rescue can still read
	// whatever is intact.
	Strict bool
}

// Container is a VMCX/VMRS file read into a key tree.
type Container struct {
	Path     string
	Version  uint32 // container format version (0x400)
	Sequence uint16 // sequence of the active header
	// ActiveHeader is 1 (offset 0) or 2 (offset 0x1000): the valid header
	// with the higher sequence.
	ActiveHeader int
	// ReplayLogEntries is the replay log's outstanding entry count: writes
	// Hyper-V logged but may not have applied in place (it stopped before
	// it reset the count).
	ReplayLogEntries uint32
	// LogReplayed: the outstanding entries were applied in memory, in log
	// order, before anything else was read (the file itself is not
	// written; Hyper-V applies them when it next opens the file). See
	// [ReadContainer].
	LogReplayed bool
	// PossiblyInconsistent: the file has outstanding replay-log entries that
	// could not be replayed (an entry or its data fails its checksum or
	// points outside the log or the file, or the log uses fields whose
	// meaning is not known) or an unreadable replay log, so the key tables
	// may lack the last changes.
	PossiblyInconsistent bool
	// Roots are the top-level keys: `configuration` in VM files,
	// `Configurations` in the host's data.vmcx.
	Roots []*Key
	// Warnings describe recovered damage that loses nothing (e.g. one of the
	// two headers is bad, a stale key-table copy is bad).
	Warnings []string
	// Problems are entry-level damage that dropped data (nil in Strict mode,
	// where the first one is returned as the error). Each is an *Error
	// wrapping ErrCorrupt.
	Problems []error
}

// Root returns the top-level key named name, or nil.
func (c *Container) Root(name string) *Key {
	return (&Key{Children: c.Roots}).Child(name)
}

// OpenContainer reads the VMCX/VMRS file at path. See [ReadContainer].
func OpenContainer(path string, opts *ContainerOptions) (*Container, error) {
	f, err := fsutil.OpenRead(path)
	if err != nil {
		return nil, &Error{Path: path, Offset: -1, Msg: "cannot open", Err: err}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, &Error{Path: path, Offset: -1, Msg: "cannot stat", Err: err}
	}
	if !fi.Mode().IsRegular() {
		return nil, &Error{Path: path, Offset: -1, Msg: "not a regular file", Err: ErrNotConfig}
	}
	return ReadContainer(f, fi.Size(), path, opts)
}

// ReadContainer reads a VMCX/VMRS container of size bytes from r; path names
// it in errors. It reads only what the object table points to, validates
// every checksum, offset and length against size, and returns an *Error
// wrapping ErrCorrupt (or ErrUnsupported) when the file cannot be read. It
// never writes.
//
// Outstanding replay-log entries are replayed into an in-memory overlay
// first: each entry names a file offset, a size, and where in the log the
// bytes to write there are kept, with CRC-32 checksums of the entry and of
// those bytes (a redo log; worked out from the entries the real Hyper-V
// files leave in their logs, whose data equals what is in place, see
// FORMATS.md §5.2 and vmcx_format.go). Replay happens only when every
// outstanding entry checks out; otherwise nothing is replayed and
// PossiblyInconsistent is set with a warning that says why.
func ReadContainer(r io.ReaderAt, size int64, path string, opts *ContainerOptions) (*Container, error) {
	x := &vmcxReader{r: r, size: size, path: path, c: &Container{Path: path}}
	if opts != nil {
		x.strict = opts.Strict
	}
	if err := x.read(); err != nil {
		return nil, err
	}
	if x.dropped > 0 {
		x.c.Problems = append(x.c.Problems, corruptf(path, -1, "%d more problems not listed", x.dropped))
	}
	return x.c, nil
}

type vmcxReader struct {
	r       io.ReaderAt
	size    int64
	path    string
	strict  bool
	c       *Container
	dropped int // problems beyond vmcxMaxProblems

	files map[uint64]uint32 // allocated file objects: offset → size
}

// problem records entry-level damage; in strict mode it returns it as the
// error to stop with.
func (x *vmcxReader) problem(off int64, format string, args ...any) error {
	return x.addProblem(corruptf(x.path, off, format, args...))
}

// addProblem is problem for an error already built.
func (x *vmcxReader) addProblem(e error) error {
	if x.strict {
		return e
	}
	if len(x.c.Problems) < vmcxMaxProblems {
		x.c.Problems = append(x.c.Problems, e)
	} else {
		x.dropped++
	}
	return nil
}

func (x *vmcxReader) warn(format string, args ...any) {
	x.c.Warnings = append(x.c.Warnings, fmt.Sprintf(format, args...))
}

// readAt reads n bytes at off after checking that they lie inside the file,
// so no allocation exceeds what the file holds.
func (x *vmcxReader) readAt(off int64, n int64, what string) ([]byte, error) {
	if off < 0 || n < 0 || off > x.size || n > x.size-off {
		return nil, corruptf(x.path, off, "%s (%d bytes) lies beyond the end of the file (%d bytes)", what, n, x.size)
	}
	b := make([]byte, n)
	if m, err := x.r.ReadAt(b, off); m < len(b) {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, &Error{Path: x.path, Offset: off, Msg: "cannot read " + what, Err: err}
	}
	return b, nil
}

func (x *vmcxReader) read() error {
	h, err := x.readHeaders()
	if err != nil {
		return err
	}
	x.readReplayLog(h)
	keyTables, err := x.readObjectTables()
	if err != nil {
		return err
	}
	tables, err := x.pickKeyTables(keyTables)
	if err != nil {
		return err
	}
	return x.buildTree(tables)
}

// readHeaders validates both headers and returns the active one.
func (x *vmcxReader) readHeaders() (vmcxHeader, error) {
	var (
		hdrs   [2]vmcxHeader
		ok     [2]bool
		reason [2]string
	)
	for i, off := range [2]int64{vmcxHeader1Offset, vmcxHeader2Offset} {
		b, err := x.readAt(off, vmcxHeaderLen, "header")
		if err != nil {
			reason[i] = "missing (file too short)"
			continue
		}
		h := decodeVMCXHeader(b)
		hdrs[i] = h
		switch sum := vmcxHeaderChecksum(b); {
		case h.Signature != vmcxSignature:
			reason[i] = fmt.Sprintf("bad signature 0x%08x (want 0x%08x)", h.Signature, vmcxSignature)
		case h.Checksum != sum:
			reason[i] = fmt.Sprintf("checksum mismatch (stored 0x%08x, computed 0x%08x)", h.Checksum, sum)
		default:
			ok[i] = true
		}
	}
	var act int
	switch {
	case !ok[0] && !ok[1]:
		return vmcxHeader{}, corruptf(x.path, 0, "not a readable VMCX/VMRS file: header 1 at 0x0: %s; header 2 at 0x1000: %s", reason[0], reason[1])
	case ok[0] && ok[1]:
		if hdrs[1].Sequence > hdrs[0].Sequence {
			act = 1
		}
	case ok[1]:
		act = 1
		x.warn("header 1 at 0x0: %s; using header 2 (sequence %d)", reason[0], hdrs[1].Sequence)
	default:
		x.warn("header 2 at 0x1000: %s; using header 1 (sequence %d)", reason[1], hdrs[0].Sequence)
	}
	h := hdrs[act]
	x.c.ActiveHeader, x.c.Sequence, x.c.Version = act+1, h.Sequence, h.Version
	if h.Version != vmcxVersion {
		return h, &Error{Path: x.path, Offset: int64(act) * vmcxHeader2Offset,
			Msg: fmt.Sprintf("container version 0x%x is not supported (only 0x%x)", h.Version, vmcxVersion), Err: ErrUnsupported}
	}
	return h, nil
}

// readReplayLog reads the replay log and replays its outstanding entries
// (see [ReadContainer]); a log that cannot be read or replayed makes the
// result "possibly inconsistent".
func (x *vmcxReader) readReplayLog(h vmcxHeader) {
	if h.ReplayLogOffset > uint64(x.size) {
		x.c.PossiblyInconsistent = true
		x.warn("replay log offset 0x%x lies beyond the end of the file; contents possibly inconsistent", h.ReplayLogOffset)
		return
	}
	off := int64(h.ReplayLogOffset)
	b, err := x.readAt(off, vmcxReplayLogHeaderLen, "replay log header")
	if err != nil {
		x.c.PossiblyInconsistent = true
		x.warn("%v; contents possibly inconsistent", err)
		return
	}
	l := decodeVMCXReplayLog(b)
	switch sum := vmcxReplayLogChecksum(b); {
	case l.Signature != vmcxReplayLogSignature:
		x.c.PossiblyInconsistent = true
		x.warn("replay log at 0x%x: bad signature 0x%08x; contents possibly inconsistent", off, l.Signature)
	case l.Checksum != sum:
		x.c.PossiblyInconsistent = true
		x.warn("replay log at 0x%x: checksum mismatch (stored 0x%08x, computed 0x%08x); contents possibly inconsistent", off, l.Checksum, sum)
	case l.Count > 0:
		x.c.ReplayLogEntries = l.Count
		ov, err := x.replayEntries(h, l, b)
		if err != nil {
			x.c.PossiblyInconsistent = true
			x.warn("replay log at 0x%x has %d outstanding entries, not replayed: %s; contents possibly inconsistent", off, l.Count, err)
			return
		}
		x.r, x.size = ov, ov.size
		x.c.LogReplayed = true
	}
}

// replayEntries checks the log's outstanding entries and returns the
// overlay that applies them, or why they cannot be replayed. Nothing is
// replayed unless every entry checks out: an entry that fails is either
// damage or a use of the log not seen in real files, and applying the
// others alone could make a state Hyper-V never wrote.
func (x *vmcxReader) replayEntries(h vmcxHeader, l vmcxReplayLog, hdr []byte) (*replayOverlay, error) {
	logOff := int64(h.ReplayLogOffset)
	if f := l.unknownFields(hdr); f != "" {
		return nil, fmt.Errorf("the log header has %s, whose meaning is not known (zero in every real file)", f)
	}
	// The log's size may reach past the end of the file (two of the four
	// real files: their logs' unused tail was never written); each entry's
	// data must lie inside both.
	logSize := int64(min(h.ReplayLogSize, 1<<62))
	if l.MaxEntries > vmcxMaxReplayLogCount || l.Count > l.MaxEntries {
		return nil, fmt.Errorf("%d entries outstanding of at most %d", l.Count, l.MaxEntries)
	}
	dataStart := int64(vmcxReplayLogHeaderLen) + int64(l.MaxEntries)*vmcxReplayEntryLen
	if dataStart > logSize {
		return nil, fmt.Errorf("room for %d entries (0x%x bytes) does not fit in the log (0x%x bytes)", l.MaxEntries, dataStart, logSize)
	}
	raw, err := x.readAt(logOff+vmcxReplayLogHeaderLen, int64(l.Count)*vmcxReplayEntryLen, "replay log entries")
	if err != nil {
		return nil, err
	}
	ov := &replayOverlay{base: x.r, baseSize: x.size, size: x.size}
	var total int64
	for i := 0; i < int(l.Count); i++ {
		eb := raw[i*vmcxReplayEntryLen : (i+1)*vmcxReplayEntryLen]
		e := decodeVMCXReplayEntry(eb)
		at := logOff + vmcxReplayLogHeaderLen + int64(i)*vmcxReplayEntryLen
		bad := func(format string, args ...any) error {
			return fmt.Errorf("entry %d at 0x%x: %s", i, at, fmt.Sprintf(format, args...))
		}
		if sum := vmcxReplayEntryChecksum(eb); sum != e.Checksum {
			return nil, bad("checksum mismatch (stored 0x%08x, computed 0x%08x)", e.Checksum, sum)
		}
		if e.Unknown != 0 {
			return nil, bad("field at +16 is 0x%x, whose meaning is not known (zero in every real file)", e.Unknown)
		}
		if e.Size == 0 || int64(e.Size) > vmcxMaxReplayBytes-total {
			return nil, bad("writes %d bytes (all entries together at most %d)", e.Size, vmcxMaxReplayBytes)
		}
		total += int64(e.Size)
		if int64(e.DataOffset) < dataStart || int64(e.DataOffset)+int64(e.Size) > logSize {
			return nil, bad("its data (0x%x bytes at log offset 0x%x) lies outside the log's data area (0x%x..0x%x)", e.Size, e.DataOffset, dataStart, logSize)
		}
		// Target is bounded before Target+Size is formed: a Target near
		// 2^64 would otherwise wrap round to a small end and pass.
		end := e.Target + uint64(e.Size)
		switch {
		case e.Target < vmcxObjectTableOffset:
			return nil, bad("writes 0x%x bytes at 0x%x, into the file headers", e.Size, e.Target)
		case e.Target > uint64(x.size)+vmcxMaxReplayBytes || end > uint64(x.size)+vmcxMaxReplayBytes:
			return nil, bad("writes 0x%x bytes at 0x%x, far beyond the end of the file (%d bytes)", e.Size, e.Target, x.size)
		case int64(e.Target) < logOff+logSize && int64(end) > logOff:
			return nil, bad("writes 0x%x bytes at 0x%x, into the replay log itself", e.Size, e.Target)
		}
		data, err := x.readAt(logOff+int64(e.DataOffset), int64(e.Size), "replay log data")
		if err != nil {
			return nil, bad("%v", err)
		}
		if sum := crc32.ChecksumIEEE(data); sum != e.DataChecksum {
			return nil, bad("data checksum mismatch (stored 0x%08x, computed 0x%08x)", e.DataChecksum, sum)
		}
		ov.writes = append(ov.writes, replayWrite{off: int64(e.Target), data: data})
		ov.size = max(ov.size, int64(end))
	}
	return ov, nil
}

// replayWrite is one replayed entry: data for file offset off.
type replayWrite struct {
	off  int64
	data []byte
}

// replayOverlay reads the file as it is once the replay log's writes are
// applied, in log order (a later write to the same bytes wins). A write past
// the end of the file extends it; the gap reads as zeros.
type replayOverlay struct {
	base     io.ReaderAt
	baseSize int64
	size     int64
	writes   []replayWrite
}

func (o *replayOverlay) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= o.size {
		return 0, io.EOF
	}
	want, n := len(p), len(p)
	if int64(n) > o.size-off {
		n = int(o.size - off)
	}
	p = p[:n]
	in := 0 // bytes that come from the file itself
	if off < o.baseSize {
		in = int(min(int64(n), o.baseSize-off))
		if m, err := o.base.ReadAt(p[:in], off); m < in {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return m, err
		}
	}
	clear(p[in:])
	for _, w := range o.writes {
		lo, hi := max(off, w.off), min(off+int64(n), w.off+int64(len(w.data)))
		if lo < hi {
			copy(p[lo-off:hi-off], w.data[lo-w.off:hi-w.off])
		}
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

type objRef struct {
	off  uint64
	size uint32
	at   int64 // where the object-table entry is, for messages
}

// readObjectTables walks the object table at 0x2000 (and any further object
// tables it lists) and returns the allocated key-table objects. File objects
// are kept in x.files.
func (x *vmcxReader) readObjectTables() ([]objRef, error) {
	x.files = map[uint64]uint32{}
	var keyTables []objRef
	queue := []uint64{vmcxObjectTableOffset}
	seen := map[uint64]bool{vmcxObjectTableOffset: true}
	for n := 0; len(queue) > 0; n++ {
		toff := queue[0]
		queue = queue[1:]
		if n >= vmcxMaxObjectTables {
			if err := x.problem(-1, "more than %d object tables; the rest are ignored", vmcxMaxObjectTables); err != nil {
				return nil, err
			}
			break
		}
		first := n == 0
		fail := func(err error) error {
			if first {
				return err // without the first object table nothing can be read
			}
			return x.addProblem(err)
		}
		if toff > uint64(x.size) {
			if err := fail(corruptf(x.path, -1, "object table at 0x%x lies beyond the end of the file", toff)); err != nil {
				return nil, err
			}
			continue
		}
		b, err := x.readAt(int64(toff), vmcxObjectTableHeaderLen, "object table header")
		if err != nil {
			if err := fail(err); err != nil {
				return nil, err
			}
			continue
		}
		sig, count := le.Uint32(b), le.Uint32(b[4:])
		if sig != vmcxObjectTableSignature {
			if err := fail(corruptf(x.path, int64(toff), "object table: bad signature 0x%08x (want 0x%08x)", sig, vmcxObjectTableSignature)); err != nil {
				return nil, err
			}
			continue
		}
		if count > vmcxMaxObjectEntries {
			if err := fail(corruptf(x.path, int64(toff), "object table claims %d entries (limit %d)", count, vmcxMaxObjectEntries)); err != nil {
				return nil, err
			}
			continue
		}
		eoff := int64(toff) + vmcxObjectTableHeaderLen
		tb, err := x.readAt(eoff, int64(count)*vmcxObjectEntryLen, fmt.Sprintf("object table of %d entries", count))
		if err != nil {
			if err := fail(err); err != nil {
				return nil, err
			}
			continue
		}
		for i := 0; i < int(count); i++ {
			raw := tb[i*vmcxObjectEntryLen : (i+1)*vmcxObjectEntryLen]
			e := decodeVMCXObjectEntry(raw)
			if e.Allocated == 0 || e.Type == vmcxObjUnused {
				continue
			}
			at := eoff + int64(i)*vmcxObjectEntryLen
			if sum := vmcxObjectEntryChecksum(raw); sum != e.Checksum {
				if err := x.problem(at, "object-table entry %d: checksum mismatch (stored 0x%08x, computed 0x%08x); entry ignored", i, e.Checksum, sum); err != nil {
					return nil, err
				}
				continue
			}
			if e.Offset > uint64(x.size) || uint64(e.Size) > uint64(x.size)-e.Offset {
				if e.Type == vmcxObjFree {
					continue // free space past EOF does no harm
				}
				if err := x.problem(at, "object-table entry %d (type %d): object 0x%x+0x%x lies beyond the end of the file (%d bytes)", i, e.Type, e.Offset, e.Size, x.size); err != nil {
					return nil, err
				}
				continue
			}
			switch e.Type {
			case vmcxObjObjectTable:
				if !seen[e.Offset] {
					seen[e.Offset] = true
					queue = append(queue, e.Offset)
				}
			case vmcxObjKeyTable:
				keyTables = append(keyTables, objRef{off: e.Offset, size: e.Size, at: at})
			case vmcxObjFile:
				x.files[e.Offset] = e.Size
			}
		}
	}
	return keyTables, nil
}

type keyTable struct {
	index uint16
	seq   uint16
	off   int64
	size  int64
	data  []byte
}

// pickKeyTables reads every key-table header, keeps the copy with the
// highest sequence for each index, and loads those tables.
func (x *vmcxReader) pickKeyTables(refs []objRef) ([]*keyTable, error) {
	if len(refs) > vmcxMaxKeyTables {
		if err := x.problem(-1, "%d key tables listed (limit %d); the rest are ignored", len(refs), vmcxMaxKeyTables); err != nil {
			return nil, err
		}
		refs = refs[:vmcxMaxKeyTables]
	}
	best := map[uint16]*keyTable{}
	for _, ref := range refs {
		off := int64(ref.off)
		if ref.size < vmcxKeyTableHeaderLen || ref.size > vmcxMaxKeyTableSize {
			if err := x.problem(ref.at, "key table at 0x%x: size %d out of range (%d..%d)", ref.off, ref.size, vmcxKeyTableHeaderLen, vmcxMaxKeyTableSize); err != nil {
				return nil, err
			}
			continue
		}
		b, err := x.readAt(off, vmcxKeyTableHeaderLen, "key table header")
		if err != nil {
			if err := x.problem(off, "%v", err); err != nil {
				return nil, err
			}
			continue
		}
		kt := decodeVMCXKeyTable(b)
		sum := vmcxKeyTableChecksum(b)
		if kt.Signature != vmcxKeyTableSignature || kt.Checksum != sum || kt.Index == 0 {
			// Stale copies in free space are expected; a damaged listed
			// table is not, but another copy of its index may still exist.
			x.warn("key table at 0x%x ignored: signature 0x%04x, index %d, checksum stored 0x%08x computed 0x%08x", off, kt.Signature, kt.Index, kt.Checksum, sum)
			continue
		}
		if cur, ok := best[kt.Index]; !ok || kt.Sequence > cur.seq {
			best[kt.Index] = &keyTable{index: kt.Index, seq: kt.Sequence, off: off, size: int64(ref.size)}
		}
	}
	tables := make([]*keyTable, 0, len(best))
	for _, t := range best {
		tables = append(tables, t)
	}
	sort.Slice(tables, func(i, j int) bool { return tables[i].index < tables[j].index })
	var total int64
	for _, t := range tables {
		total += t.size
		if total > vmcxMaxKeyTableBytes {
			return nil, corruptf(x.path, t.off, "key tables exceed %d bytes in total", vmcxMaxKeyTableBytes)
		}
		d, err := x.readAt(t.off, t.size, "key table")
		if err != nil {
			return nil, err
		}
		t.data = d
	}
	if len(tables) == 0 {
		return nil, corruptf(x.path, vmcxObjectTableOffset, "no readable key table")
	}
	return tables, nil
}

type entryRef struct {
	table uint16
	off   uint32
}

type rawEntry struct {
	ref      entryRef
	parent   entryRef // table 0 = root
	isNode   bool
	key      *Key
	children []*rawEntry
	reached  bool
}

// buildTree decodes the entries of the active key tables and links them by
// (parent table, parent offset) into x.c.Roots.
func (x *vmcxReader) buildTree(tables []*keyTable) error {
	byRef := map[entryRef]*rawEntry{}
	var order []*rawEntry
	for _, t := range tables {
		es, err := x.decodeEntries(t)
		if err != nil {
			return err
		}
		for _, e := range es {
			byRef[e.ref] = e
			order = append(order, e)
		}
	}
	var roots []*rawEntry
	for _, e := range order {
		if e.parent.table == 0 {
			roots = append(roots, e)
			continue
		}
		p := byRef[e.parent]
		switch {
		case p == nil:
			if err := x.problem(-1, "key %q (table %d, offset 0x%x): parent (table %d, offset 0x%x) does not exist; key dropped",
				e.key.Name, e.ref.table, e.ref.off, e.parent.table, e.parent.off); err != nil {
				return err
			}
		case !p.isNode:
			if err := x.problem(-1, "key %q (table %d, offset 0x%x): parent %q is a value, not a node; key dropped",
				e.key.Name, e.ref.table, e.ref.off, p.key.Name); err != nil {
				return err
			}
		default:
			p.children = append(p.children, e)
		}
	}
	// Every entry has one parent, so walking down from the roots visits each
	// entry at most once; what is not reached hangs off a cycle (or off a
	// dropped key). Iterative, with a depth bound.
	type item struct {
		e     *rawEntry
		depth int
	}
	stack := make([]item, 0, len(roots))
	for i := len(roots) - 1; i >= 0; i-- {
		stack = append(stack, item{roots[i], 0})
	}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		it.e.reached = true
		if it.depth >= maxTreeDepth {
			if err := x.problem(-1, "key %q: tree deeper than %d levels; children dropped", it.e.key.Name, maxTreeDepth); err != nil {
				return err
			}
			continue
		}
		for _, c := range it.e.children {
			if c.reached {
				continue
			}
			it.e.key.Children = append(it.e.key.Children, c.key)
			stack = append(stack, item{c, it.depth + 1})
		}
	}
	unreached := 0
	var example *rawEntry
	for _, e := range order {
		if !e.reached && (e.parent.table == 0 || byRef[e.parent] != nil) {
			unreached++
			if example == nil {
				example = e
			}
		}
	}
	if unreached > 0 {
		if err := x.problem(-1, "%d keys are not reachable from a root (on a cyclic parent chain or below a dropped key), e.g. %q at table %d offset 0x%x; dropped",
			unreached, example.key.Name, example.ref.table, example.ref.off); err != nil {
			return err
		}
	}
	for _, r := range roots {
		x.c.Roots = append(x.c.Roots, r.key)
	}
	return nil
}

// decodeEntries decodes the key entries of one key table.
func (x *vmcxReader) decodeEntries(t *keyTable) ([]*rawEntry, error) {
	var out []*rawEntry
	d := t.data
	p := vmcxKeyTableHeaderLen
	for p+vmcxEntryHeaderLen <= len(d) {
		h := decodeVMCXEntry(d[p:])
		at := t.off + int64(p)
		if h.Size == 0 {
			break
		}
		if h.Size < vmcxEntryHeaderLen || uint64(h.Size) > uint64(len(d)-p) {
			err := x.problem(at, "key table %d: entry size %d at offset 0x%x does not fit the table (%d bytes); rest of the table ignored", t.index, h.Size, p, len(d))
			return out, err
		}
		body := d[p : p+int(h.Size)]
		off := uint32(p)
		p += int(h.Size)
		if h.valueType() == vmcxTypeFree {
			continue
		}
		do := int(h.DataOffset)
		if vmcxEntryHeaderLen+do > len(body) {
			if err := x.problem(at, "key table %d, entry at 0x%x: key length %d runs past the entry (%d bytes); entry dropped", t.index, off, do, len(body)); err != nil {
				return out, err
			}
			continue
		}
		name := vmcxKeyName(body[vmcxEntryHeaderLen : vmcxEntryHeaderLen+do])
		v := body[vmcxEntryHeaderLen+do:]
		n, ok := vmcxValueLen(h, v)
		if !ok {
			if err := x.problem(at, "key table %d, key %q at 0x%x: value type %d (flags 0x%02x) unknown or longer than the entry; entry dropped", t.index, name, off, h.valueType(), h.flags()); err != nil {
				return out, err
			}
			continue
		}
		if sum := vmcxEntryChecksum(body, do, n); sum != h.Checksum {
			if err := x.problem(at, "key table %d, key %q at 0x%x: checksum mismatch (stored 0x%08x, computed 0x%08x); entry dropped", t.index, name, off, h.Checksum, sum); err != nil {
				return out, err
			}
			continue
		}
		k := &Key{Name: name}
		if err := x.setValue(k, h, v, at); err != nil {
			if err := x.problem(at, "key table %d, key %q: %v; entry dropped", t.index, name, err); err != nil {
				return out, err
			}
			continue
		}
		out = append(out, &rawEntry{
			ref:    entryRef{t.index, off},
			parent: entryRef{h.ParentTable, h.ParentOff},
			isNode: h.valueType() == vmcxTypeNode && h.flags()&vmcxFlagFileObject == 0,
			key:    k,
		})
	}
	return out, nil
}

// setValue decodes an entry's value (checked by vmcxValueLen) into k.
func (x *vmcxReader) setValue(k *Key, h vmcxEntry, v []byte, at int64) error {
	typ := h.valueType()
	if h.flags()&vmcxFlagFileObject != 0 {
		size, off := le.Uint32(v), le.Uint64(v[4:])
		if typ != vmcxTypeString && typ != vmcxTypeBlob {
			return fmt.Errorf("file-object pointer on a value of type %d", typ)
		}
		osize, ok := x.files[off]
		if !ok {
			return fmt.Errorf("value points at 0x%x, which is not a file object", off)
		}
		if size > osize {
			return fmt.Errorf("value of %d bytes is larger than its file object (%d bytes)", size, osize)
		}
		if size > vmcxMaxValueSize {
			k.Kind, k.Omitted, k.Size = KindBytes, true, int64(size)
			if typ == vmcxTypeString {
				k.Kind = KindString
			}
			return nil
		}
		data, err := x.readAt(int64(off), int64(size), "file object")
		if err != nil {
			return err
		}
		setVarValue(k, typ, data)
		return nil
	}
	switch typ {
	case vmcxTypeNode:
		k.Kind = KindNode
	case vmcxTypeString, vmcxTypeBlob:
		l := le.Uint32(v)
		setVarValue(k, typ, v[4:4+int(l)])
	default:
		setScalarValue(k, typ, v)
	}
	return nil
}
