package vm

// Test helpers that write configurations in the real schemas: a key-tree
// description (tkey) rendered either as Hyper-V XML (UTF-16LE with BOM) or as
// a VMCX container with valid checksums.

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/xml"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"
)

type tkey struct {
	name     string
	typ      uint8 // vmcxType*
	i        int64
	s        string
	b        []byte
	external bool // VMCX: put the string/blob value in a file object
	children []*tkey
}

func tnode(name string, ch ...*tkey) *tkey { return &tkey{name: name, typ: vmcxTypeNode, children: ch} }
func tstr(name, v string) *tkey            { return &tkey{name: name, typ: vmcxTypeString, s: v} }
func tint(name string, v int64) *tkey      { return &tkey{name: name, typ: vmcxTypeInt, i: v} }
func tblob(name string, v []byte) *tkey    { return &tkey{name: name, typ: vmcxTypeBlob, b: v} }
func tbool(name string, v bool) *tkey {
	k := &tkey{name: name, typ: vmcxTypeBool}
	if v {
		k.i = 1
	}
	return k
}

// find returns the descendant at a slash path (for tests that tweak a tree).
func (k *tkey) find(path string) *tkey {
	cur := k
	for _, p := range strings.Split(path, "/") {
		var next *tkey
		for _, c := range cur.children {
			if c.name == p {
				next = c
				break
			}
		}
		if next == nil {
			return nil
		}
		cur = next
	}
	return cur
}

// ---- configuration trees in the real schema ----

type tdrive struct {
	typ, path string
}

type tconfig struct {
	name, id, logicalID string
	subtype, version    int64
	mergePending        bool
	memoryMiB, cpus     int64
	ide                 [2][2]tdrive // controllerN/driveM
	scsi                [][]tdrive   // one slice per SCSI controller
	scsiInstances       []string
}

func driveKey(n int, d tdrive) *tkey {
	typ := d.typ
	if typ == "" {
		typ = "NONE"
	}
	return tnode(fmt.Sprintf("drive%d", n),
		tint("iops_limit", 0),
		tstr("pathname", d.path),
		tstr("type", typ),
		tint("weight", 100),
	)
}

func (c tconfig) tree() *tkey {
	root := tnode("configuration")
	ide := tnode("_"+deviceIDE+"_", tint("VDEVVersion", 1280))
	for ci := range 2 {
		ctl := tnode(fmt.Sprintf("controller%d", ci))
		for di := range 2 {
			ctl.children = append(ctl.children, driveKey(di, c.ide[ci][di]))
		}
		ide.children = append(ide.children, ctl)
	}
	root.children = append(root.children, ide)
	manifest := tnode("manifest", tint("size", int64(1+len(c.scsi))),
		tnode("vdev001", tstr("device", deviceIDE), tint("flags", 1), tstr("instance", strings.ToUpper(deviceIDE)), tstr("name", "Microsoft Emulated IDE Controller")))
	for i, drives := range c.scsi {
		inst := c.scsiInstances[i]
		sec := tnode("_"+inst+"_", tstr("ChannelInstanceGuid", "{"+strings.ToUpper(inst)+"}"), tint("VDEVVersion", 256))
		ctl := tnode("controller0")
		for di, d := range drives {
			ctl.children = append(ctl.children, driveKey(di, d))
		}
		sec.children = append(sec.children, ctl)
		root.children = append(root.children, sec)
		manifest.children = append(manifest.children, tnode(fmt.Sprintf("vdev%03d", i+2),
			tstr("device", deviceSCSI), tint("flags", 1), tstr("instance", strings.ToUpper(inst)), tstr("name", "Synthetic SCSI Controller")))
	}
	root.children = append(root.children,
		tnode("global_settings",
			tbool("disk_merge_pending", c.mergePending),
			tnode("snapshots", tnode("list", tint("size", 1)))),
		manifest,
		tnode("properties",
			tstr("global_id", c.id),
			tstr("name", c.name),
			tint("subtype", c.subtype),
			tstr("type_id", "Virtual Machines"),
			tint("version", c.version)),
	)
	settings := tnode("settings",
		tnode("memory", tnode("bank", tbool("dynamic_memory_enabled", false), tint("size", c.memoryMiB))),
		tnode("processors", tint("count", c.cpus)))
	if c.logicalID != "" {
		settings.children = append([]*tkey{tnode("global", tstr("logical_id", c.logicalID))}, settings.children...)
	}
	root.children = append(root.children, settings)
	return root
}

// ---- XML rendering ----

func renderXML(root *tkey) []byte {
	var sb strings.Builder
	sb.WriteString("<?xml version=\"1.0\" encoding=\"UTF-16\" standalone=\"yes\"?>\r\n")
	var rec func(k *tkey, indent string)
	esc := func(s string) string {
		var b strings.Builder
		xml.EscapeText(&b, []byte(s))
		return b.String()
	}
	rec = func(k *tkey, indent string) {
		switch k.typ {
		case vmcxTypeNode:
			sb.WriteString(indent + "<" + k.name + ">\r\n")
			for _, c := range k.children {
				rec(c, indent+"  ")
			}
			sb.WriteString(indent + "</" + k.name + ">\r\n")
		case vmcxTypeString:
			fmt.Fprintf(&sb, "%s<%s type=\"string\">%s</%s>\r\n", indent, k.name, esc(k.s), k.name)
		case vmcxTypeInt:
			fmt.Fprintf(&sb, "%s<%s type=\"integer\">%d</%s>\r\n", indent, k.name, k.i, k.name)
		case vmcxTypeBool:
			v := "False"
			if k.i != 0 {
				v = "True"
			}
			fmt.Fprintf(&sb, "%s<%s type=\"bool\">%s</%s>\r\n", indent, k.name, v, k.name)
		case vmcxTypeBlob:
			fmt.Fprintf(&sb, "%s<%s type=\"bytes\">%s\n</%s>\r\n", indent, k.name, base64.StdEncoding.EncodeToString(k.b), k.name)
		}
	}
	rec(root, "")
	return utf16LEWithBOM(sb.String())
}

func utf16LEWithBOM(s string) []byte {
	u := utf16.Encode([]rune(s))
	out := make([]byte, 2+2*len(u))
	out[0], out[1] = 0xFF, 0xFE
	for i, c := range u {
		binary.LittleEndian.PutUint16(out[2+2*i:], c)
	}
	return out
}

// ---- VMCX rendering ----

type vmcxBuildOpts struct {
	seq1, seq2   uint16 // header sequences (0,0 → 2,1)
	version      uint32 // 0 → 0x400
	replayCount  uint32
	maxPerTable  int  // entries per key table (0 = as many as fit in 4 KiB)
	staleTable1  bool // add an older copy of table 1 (lower sequence, garbage entries)
	unallocTable bool // add an unallocated object entry pointing at garbage
	// compact packs everything after the object table without page
	// alignment and lists only the used object entries (small fuzz seeds).
	compact bool
}

type builtVMCX struct {
	data    []byte
	entries map[string]int64    // slash path → absolute offset of the entry
	refs    map[string]entryRef // slash path → (table index, offset in table)
	objects []int64             // absolute offsets of the object-table entries, in order
	tables  []int64             // absolute offsets of the key tables, by index-1
}

const (
	bPage        = 0x1000
	bObjectCount = 227 // as in every real file
)

type flatEntry struct {
	k      *tkey
	path   string
	parent *flatEntry
	table  int // 1-based index
	off    int // inside its table
	size   int
	fileAt int64 // file object offset for external values
}

func entryValue(k *tkey) []byte {
	switch k.typ {
	case vmcxTypeInt, vmcxTypeUint:
		return binary.LittleEndian.AppendUint64(nil, uint64(k.i))
	case vmcxTypeDouble:
		return binary.LittleEndian.AppendUint64(nil, math.Float64bits(float64(k.i)))
	case vmcxTypeBool:
		return binary.LittleEndian.AppendUint32(nil, uint32(k.i))
	case vmcxTypeNode:
		return make([]byte, 12)
	case vmcxTypeString:
		u := utf16.Encode([]rune(k.s))
		b := binary.LittleEndian.AppendUint32(nil, uint32(2*len(u)))
		for _, c := range u {
			b = binary.LittleEndian.AppendUint16(b, c)
		}
		return append(b, 0, 0) // terminator, not counted, not checksummed
	case vmcxTypeBlob:
		return append(binary.LittleEndian.AppendUint32(nil, uint32(len(k.b))), k.b...)
	}
	return nil
}

// rawValue is the external (file object) form of a string/blob value.
func rawValue(k *tkey) []byte {
	v := entryValue(k)
	l := binary.LittleEndian.Uint32(v)
	return v[4 : 4+l]
}

func entryLen(k *tkey) int {
	n := vmcxEntryHeaderLen + len(k.name) + 1
	if k.external {
		n += vmcxFileObjectPtrLen
	} else {
		n += len(entryValue(k))
	}
	return (n + 3) &^ 3 // slack, as Hyper-V leaves
}

func align(n, a int) int { return (n + a - 1) / a * a }

func buildVMCX(t testing.TB, root *tkey, o vmcxBuildOpts) *builtVMCX {
	if t != nil {
		t.Helper()
	}
	if o.seq1 == 0 && o.seq2 == 0 {
		o.seq1, o.seq2 = 2, 1
	}
	if o.version == 0 {
		o.version = vmcxVersion
	}
	// Flatten depth first (parents first) and assign tables.
	var flat []*flatEntry
	var walk func(k *tkey, parent *flatEntry, path string)
	walk = func(k *tkey, parent *flatEntry, path string) {
		p := k.name
		if path != "" {
			p = path + "/" + k.name
		}
		e := &flatEntry{k: k, path: p, parent: parent, size: entryLen(k)}
		flat = append(flat, e)
		for _, c := range k.children {
			walk(c, e, p)
		}
	}
	walk(root, nil, "")
	table, off, count := 1, vmcxKeyTableHeaderLen, 0
	used := []int{0}
	for _, e := range flat {
		if off+e.size+vmcxEntryHeaderLen > bPage || (o.maxPerTable > 0 && count >= o.maxPerTable) {
			table, off, count = table+1, vmcxKeyTableHeaderLen, 0
			used = append(used, 0)
		}
		e.table, e.off = table, off
		off += e.size
		used[table-1] = off
		count++
	}
	ntables := table
	nfiles := 0
	for _, e := range flat {
		if e.k.external {
			nfiles++
		}
	}
	nobj := ntables + nfiles
	if o.staleTable1 {
		nobj++
	}
	if o.unallocTable {
		nobj++
	}

	// Layout.
	objCount, replayAt, pos := bObjectCount, 0x3000, 0x4000
	if o.compact {
		objCount = nobj
		replayAt = align(vmcxObjectTableOffset+vmcxObjectTableHeaderLen+nobj*vmcxObjectEntryLen, 16)
		pos = align(replayAt+vmcxReplayLogHeaderLen, 16)
	}
	tableSize := func(ti int) int {
		if o.compact {
			return align(used[ti-1]+vmcxEntryHeaderLen, 16)
		}
		return bPage
	}
	tableAt := make([]int, ntables+2)
	for ti := 1; ti <= ntables; ti++ {
		tableAt[ti] = pos
		pos += tableSize(ti)
	}
	staleAt := pos
	if o.staleTable1 {
		pos += tableSize(1)
	}
	type fobj struct {
		off  int64
		size int
	}
	var files []fobj
	for _, e := range flat {
		if e.k.external {
			e.fileAt = int64(pos)
			sz := len(rawValue(e.k))
			if !o.compact {
				sz = align(sz, bPage)
			}
			files = append(files, fobj{e.fileAt, sz})
			pos += sz
		}
	}
	data := make([]byte, pos)
	b := &builtVMCX{data: data, entries: map[string]int64{}, refs: map[string]entryRef{}}

	// Headers.
	for i, seq := range []uint16{o.seq1, o.seq2} {
		h := data[i*bPage:]
		le.PutUint32(h[0:], vmcxSignature)
		le.PutUint16(h[8:], seq)
		le.PutUint32(h[10:], o.version)
		le.PutUint32(h[22:], 0x1000)
		le.PutUint64(h[26:], uint64(replayAt))
		le.PutUint64(h[34:], bPage)
		le.PutUint32(h[42:], 0x1000)
		le.PutUint32(h[4:], crc32.ChecksumIEEE(h[:vmcxHeaderLen]))
	}
	// Replay log.
	r := data[replayAt:]
	le.PutUint32(r[0:], vmcxReplayLogSignature)
	le.PutUint32(r[8:], o.replayCount)
	le.PutUint32(r[13:], 145)
	le.PutUint32(r[4:], crc32.ChecksumIEEE(r[:vmcxReplayLogHeaderLen]))

	// Key tables.
	for ti := 1; ti <= ntables; ti++ {
		b.tables = append(b.tables, int64(tableAt[ti]))
		writeKeyTableHeader(data[tableAt[ti]:], uint16(ti), 5)
	}
	for _, e := range flat {
		base := tableAt[e.table] + e.off
		b.entries[e.path] = int64(base)
		b.refs[e.path] = entryRef{uint16(e.table), uint32(e.off)}
		eb := data[base : base+e.size]
		typ := uint16(e.k.typ)
		var val []byte
		if e.k.external {
			typ |= vmcxFlagFileObject << 8
			raw := rawValue(e.k)
			val = binary.LittleEndian.AppendUint32(nil, uint32(len(raw)))
			val = binary.LittleEndian.AppendUint64(val, uint64(e.fileAt))
			copy(data[e.fileAt:], raw)
		} else {
			val = entryValue(e.k)
		}
		le.PutUint16(eb[0:], typ)
		le.PutUint32(eb[2:], uint32(e.size))
		if e.parent != nil {
			le.PutUint16(eb[6:], uint16(e.parent.table))
			le.PutUint32(eb[8:], uint32(e.parent.off))
		}
		le.PutUint32(eb[16:], 1)
		eb[20] = byte(len(e.k.name) + 1)
		copy(eb[vmcxEntryHeaderLen:], e.k.name)
		copy(eb[vmcxEntryHeaderLen+len(e.k.name)+1:], val)
		resumEntry(data, int64(base))
	}
	if o.staleTable1 {
		writeKeyTableHeader(data[staleAt:], 1, 4) // older sequence
		// A root-level entry that must not show up.
		eb := data[staleAt+vmcxKeyTableHeaderLen:]
		v := entryValue(tstr("stale", "stale"))
		n := vmcxEntryHeaderLen + 6 + len(v)
		le.PutUint16(eb[0:], vmcxTypeString)
		le.PutUint32(eb[2:], uint32(n))
		eb[20] = 6
		copy(eb[vmcxEntryHeaderLen:], "stale")
		copy(eb[vmcxEntryHeaderLen+6:], v)
		resumEntry(data, int64(staleAt+vmcxKeyTableHeaderLen))
	}

	// Object table.
	ot := data[vmcxObjectTableOffset:]
	le.PutUint32(ot[0:], vmcxObjectTableSignature)
	le.PutUint32(ot[4:], uint32(objCount))
	n := 0
	addObj := func(typ uint8, off int64, size int, alloc uint8) {
		at := vmcxObjectTableOffset + vmcxObjectTableHeaderLen + n*vmcxObjectEntryLen
		e := data[at : at+vmcxObjectEntryLen]
		e[0] = typ
		le.PutUint64(e[5:], uint64(off))
		le.PutUint32(e[13:], uint32(size))
		e[17] = alloc
		le.PutUint32(e[1:], vmcxObjectEntryChecksum(e))
		b.objects = append(b.objects, int64(at))
		n++
	}
	for ti := 1; ti <= ntables; ti++ {
		addObj(vmcxObjKeyTable, int64(tableAt[ti]), tableSize(ti), 1)
	}
	if o.staleTable1 {
		addObj(vmcxObjKeyTable, int64(staleAt), tableSize(1), 1)
	}
	for _, f := range files {
		addObj(vmcxObjFile, f.off, f.size, 1)
	}
	if o.unallocTable {
		addObj(vmcxObjKeyTable, 0x7fffffff, 0x7fffffff, 0)
	}
	return b
}

func writeKeyTableHeader(b []byte, index, seq uint16) {
	le.PutUint16(b[0:], vmcxKeyTableSignature)
	le.PutUint16(b[2:], index)
	le.PutUint16(b[4:], seq)
	le.PutUint32(b[6:], 0)
	le.PutUint32(b[6:], crc32.ChecksumIEEE(b[:vmcxKeyTableHeaderLen]))
}

// resumEntry recomputes the checksum of the key entry at off.
func resumEntry(data []byte, off int64) {
	h := decodeVMCXEntry(data[off:])
	body := data[off : off+int64(h.Size)]
	do := int(h.DataOffset)
	n, ok := vmcxValueLen(h, body[vmcxEntryHeaderLen+do:])
	if !ok {
		panic("resumEntry: value does not fit")
	}
	le.PutUint32(body[vmcxEntryChecksumOffset:], vmcxEntryChecksum(body, do, n))
}

// resumObject recomputes the checksum of the object-table entry at off.
func resumObject(data []byte, off int64) {
	e := data[off : off+vmcxObjectEntryLen]
	le.PutUint32(e[1:], vmcxObjectEntryChecksum(e))
}

// resumHeader recomputes the checksum of the header at off.
func resumHeader(data []byte, off int64) {
	h := data[off : off+vmcxHeaderLen]
	le.PutUint32(h[4:], vmcxHeaderChecksum(h))
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
