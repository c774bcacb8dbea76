package storetest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/xml"
	"fmt"
	"strings"
	"unicode/utf16"
)

// Device GUIDs of the manifest (FORMATS.md §5.1).
const (
	deviceIDE  = "83f8638b-8dca-4152-9eda-2ca8b33039b4"
	deviceSCSI = "d422512d-2bf2-4752-809d-7b82b5fcb1b4"
)

// node is one key of a Hyper-V configuration tree.
type node struct {
	name     string
	typ      string // "" (node), "string", "integer", "bool"
	val      string
	children []*node
}

func n(name string, ch ...*node) *node { return &node{name: name, children: ch} }
func s(name, v string) *node           { return &node{name: name, typ: "string", val: v} }
func i(name string, v int64) *node     { return &node{name: name, typ: "integer", val: fmt.Sprint(v)} }
func b(name string, v bool) *node {
	if v {
		return &node{name: name, typ: "bool", val: "True"}
	}
	return &node{name: name, typ: "bool", val: "False"}
}

// renderXML renders the tree as Hyper-V writes it: UTF-16LE with a BOM,
// CRLF line ends, two-space indent, typed leaves.
func renderXML(root *node) []byte {
	var sb strings.Builder
	sb.WriteString("<?xml version=\"1.0\" encoding=\"UTF-16\" standalone=\"yes\"?>\r\n")
	var rec func(k *node, indent string)
	rec = func(k *node, indent string) {
		if k.typ == "" {
			sb.WriteString(indent + "<" + k.name + ">\r\n")
			for _, c := range k.children {
				rec(c, indent+"  ")
			}
			sb.WriteString(indent + "</" + k.name + ">\r\n")
			return
		}
		var esc strings.Builder
		xml.EscapeText(&esc, []byte(k.val))
		fmt.Fprintf(&sb, "%s<%s type=\"%s\">%s</%s>\r\n", indent, k.name, k.typ, esc.String(), k.name)
	}
	rec(root, "")
	u := utf16.Encode([]rune(sb.String()))
	out := make([]byte, 2+2*len(u))
	out[0], out[1] = 0xFF, 0xFE
	for j, c := range u {
		binary.LittleEndian.PutUint16(out[2+2*j:], c)
	}
	return out
}

// GUID returns a deterministic GUID (uppercase, no braces, version 4 form)
// derived from the parts: the same parts always give the same GUID.
func GUID(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	h[6] = h[6]&0x0f | 0x40
	h[8] = h[8]&0x3f | 0x80
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16]))
}

// configXML is what a VM or checkpoint configuration says.
type configXML struct {
	name, globalID, vmID string
	generation           int
	scsi                 bool
	scsiInstance         string // lowercase GUID
	diskWinPath          string
	mergePending         bool
	snapshots            int
	memoryMiB            int64
}

func drive(idx int, typ, path string) *node {
	if typ == "VHD" {
		return n(fmt.Sprintf("drive%d", idx),
			i("iops_limit", 0),
			i("iops_reservation", 0),
			s("pathname", path),
			b("persistent_reservations_supported", false),
			s("type", typ),
			i("weight", 100))
	}
	return n(fmt.Sprintf("drive%d", idx), s("pathname", path), s("type", typ))
}

// tree builds the configuration in the 2012 R2 schema (version 1280): the
// device sections first (`_<guid>_`, lowercase), then global_settings,
// manifest, properties and settings, as in the real sample.
func (c configXML) tree() *node {
	root := n("configuration")
	vdevs := []*node{}
	addVdev := func(dev, inst, name string) {
		vdevs = append(vdevs, n(fmt.Sprintf("vdev%03d", len(vdevs)+1),
			s("device", dev), i("flags", 1), s("instance", strings.ToUpper(inst)), s("name", name)))
	}
	ideSection := func(withDisk bool) *node {
		d0 := drive(0, "NONE", "")
		if withDisk {
			d0 = drive(0, "VHD", c.diskWinPath)
		}
		return n("_"+deviceIDE+"_", i("VDEVVersion", 1280),
			n("controller0", d0, drive(1, "NONE", "")),
			n("controller1", drive(0, "ISO", ""), drive(1, "NONE", "")))
	}
	scsiSection := func() *node {
		return n("_"+c.scsiInstance+"_",
			s("ChannelInstanceGuid", "{"+strings.ToUpper(c.scsiInstance)+"}"),
			i("VDEVVersion", 256),
			n("controller0", drive(0, "VHD", c.diskWinPath)))
	}
	// Sections sorted by GUID, like Hyper-V writes them.
	type sec struct {
		guid string
		k    *node
	}
	var secs []sec
	if c.generation != 2 {
		secs = append(secs, sec{deviceIDE, ideSection(!c.scsi)})
		addVdev(deviceIDE, deviceIDE, "Microsoft Emulated IDE Controller")
	}
	if c.scsi || c.generation == 2 {
		secs = append(secs, sec{c.scsiInstance, scsiSection()})
		addVdev(deviceSCSI, c.scsiInstance, "Synthetic SCSI Controller")
	}
	if len(secs) == 2 && secs[1].guid < secs[0].guid {
		secs[0], secs[1] = secs[1], secs[0]
	}
	for _, x := range secs {
		root.children = append(root.children, x.k)
	}
	subtype := int64(0)
	if c.generation == 2 {
		subtype = 1
	}
	manifest := n("manifest", i("size", int64(len(vdevs))))
	manifest.children = append(manifest.children, vdevs...)
	manifest.children = append(manifest.children, i("version", 260))
	root.children = append(root.children,
		n("global_settings",
			b("disk_merge_pending", c.mergePending),
			n("snapshots", n("list", i("size", int64(c.snapshots))))),
		manifest,
		n("properties",
			s("global_id", c.globalID),
			b("highly_available", false),
			s("name", c.name),
			s("notes", ""),
			i("subtype", subtype),
			s("type_id", "Virtual Machines"),
			i("version", 1280)),
		n("settings",
			n("global", s("logical_id", c.vmID)),
			n("memory", n("bank", b("dynamic_memory_enabled", false), i("size", c.memoryMiB))),
			n("processors", i("count", 1))),
	)
	return root
}

// ConfigSpec describes one configuration file for WriteConfig.
type ConfigSpec struct {
	Name string
	ID   string // properties/global_id (the checkpoint ID for a checkpoint)
	// VMID is settings/global/logical_id ("" → ID); a checkpoint carries
	// its VM's ID here.
	VMID         string
	Generation   int  // 1 (default) or 2
	SCSI         bool // disk on SCSI 0:0 (always for generation 2)
	DiskPath     string
	MergePending bool  // global_settings/disk_merge_pending
	Snapshots    int   // global_settings/snapshots/list/size
	MemoryMiB    int64 // 0 → 512
}

// WriteConfig writes a VM or checkpoint configuration in the 2012 R2 XML
// schema (UTF-16LE with BOM) naming one hard disk (DiskPath, a Windows
// path), creating the folders. BuildVM writes the same files; use this for
// hand-made layouts (a config naming a missing disk, a bench store).
func WriteConfig(path string, c ConfigSpec) error {
	x := configXML{
		name: c.Name, globalID: strings.ToUpper(strings.Trim(c.ID, "{}")), vmID: strings.ToUpper(strings.Trim(c.VMID, "{}")),
		generation: c.Generation, scsi: c.SCSI, diskWinPath: c.DiskPath, mergePending: c.MergePending,
		snapshots: c.Snapshots, memoryMiB: c.MemoryMiB,
	}
	if x.vmID == "" {
		x.vmID = x.globalID
	}
	if x.generation == 0 {
		x.generation = 1
	}
	if x.memoryMiB == 0 {
		x.memoryMiB = 512
	}
	x.scsiInstance = strings.ToLower(GUID(x.vmID, "scsi"))
	return writeFile(path, renderXML(x.tree()))
}
