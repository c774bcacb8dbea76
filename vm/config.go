package vm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hvsnap/hvsnap/internal/fsutil"
)

// Configuration kinds.
const (
	KindXML  = "xml"
	KindVMCX = "vmcx"
)

// Controller kinds in DriveRef.Controller.
const (
	ControllerIDE    = "ide"
	ControllerSCSI   = "scsi"
	ControllerFloppy = "floppy"
)

// Device GUIDs of the manifest (FORMATS.md §5.1).
const (
	deviceIDE        = "83f8638b-8dca-4152-9eda-2ca8b33039b4"
	deviceSCSI       = "d422512d-2bf2-4752-809d-7b82b5fcb1b4"
	deviceFloppy     = "8f0d2762-0b00-4e04-af4f-19010527cb93"
	deviceGuestState = "917bd8cb-3bb6-4124-9383-b7d21ac07f79"
)

// Config is one VM or checkpoint configuration, from XML or VMCX.
type Config struct {
	Path string // the configuration file
	Kind string // KindXML or KindVMCX
	Name string // properties/name
	// ID is properties/global_id (uppercase, no braces), or the GUID in the
	// file name when the key is missing.
	ID string
	// VMID is the VM this configuration belongs to: settings/global/logical_id
	// when present (for a checkpoint, expected to be its VM's ID — a
	// heuristic, unverified on real checkpoint files), else ID.
	VMID       string
	Generation int    // 1 or 2 (properties/subtype 0 or 1); 0 when unknown
	Version    string // configuration version, "5.0" for 1280
	VersionRaw int64  // properties/version as stored
	TypeID     string // properties/type_id ("Virtual Machines")
	// DiskMergePending: a deleted checkpoint's AVHD merge has not been done
	// (global_settings/disk_merge_pending).
	DiskMergePending bool
	MemoryMiB        int64 // settings/memory/bank/size
	Processors       int   // settings/processors/count
	SnapshotCount    int   // global_settings/snapshots/list/size
	Disks            []DriveRef
	Media            []DriveRef // ISO and floppy images with a path
	// GuestStatePath is the Windows path of the .vmgs file
	// (_917bd8cb-…_/StateFilePath), VMCX only.
	GuestStatePath string
	// StateFiles are the saved-state files found next to the configuration:
	// <dir>/<ID>/*.bin|*.vsv (XML) and <dir>/<ID>.vmrs|.vmgs (VMCX).
	StateFiles []StateFile
	// IsCheckpoint: the file sits in a `Snapshots` folder.
	IsCheckpoint bool
	CheckpointID string // for a checkpoint: the GUID in its file name, else ID
	// AttachedBy says how Scan attached this checkpoint to its VM:
	// "vm-id" (VMID matches) or "folder" (sole VM of the same VM root).
	AttachedBy string
	// PossiblyInconsistent: a VMCX with outstanding replay-log entries that
	// could not be replayed, or dropped damaged entries; values may be stale
	// or missing.
	PossiblyInconsistent bool
	// LogReplayed is the number of outstanding VMCX replay-log writes applied
	// in memory before the file was read (0: none were outstanding, or they
	// could not be replayed, see PossiblyInconsistent).
	LogReplayed int
	Warnings    []string
	// Tree is the whole key tree (root `configuration`), for keys this
	// model does not extract.
	Tree *Key `json:"-"`
}

// detach drops the key tree and copies the strings taken from it, so that
// neither the tree nor the document text it points into stays in memory.
func (c *Config) detach() {
	c.Tree = nil
	for _, s := range []*string{&c.Name, &c.ID, &c.VMID, &c.Version, &c.TypeID, &c.GuestStatePath, &c.CheckpointID} {
		*s = strings.Clone(*s)
	}
	for _, ds := range [][]DriveRef{c.Disks, c.Media} {
		for i := range ds {
			d := &ds[i]
			for _, s := range []*string{&d.Controller, &d.Section, &d.Type, &d.WindowsPath, &d.LocalPath} {
				*s = strings.Clone(*s)
			}
		}
	}
}

// DriveRef is one drive attached to a controller.
type DriveRef struct {
	Controller      string // ControllerIDE, ControllerSCSI, ControllerFloppy or ""
	ControllerIndex int    // IDE: N of controllerN; SCSI: the controller's order in the manifest
	Drive           int    // M of driveM
	// Section is the device instance GUID of the controller's section
	// (`_<guid>_`), lowercase.
	Section     string
	Type        string // VHD (hard disk, VHD or VHDX), ISO, VFD, …
	WindowsPath string // pathname as stored
	LocalPath   string // the mapped or found local file ("" when none)
	Resolved    string // rule that gave LocalPath: RuleMap, RuleNative, RuleVMRoot, RuleConfigDir
	Exists      bool   // LocalPath exists
}

// Location is "ide0:1" / "scsi0:3"-style text for messages.
func (d DriveRef) Location() string {
	c := d.Controller
	if c == "" {
		c = "controller"
	}
	return fmt.Sprintf("%s%d:%d", c, d.ControllerIndex, d.Drive)
}

// StateFile is a saved-state or runtime-state file (.bin .vsv .vmrs .vmgs).
type StateFile struct {
	Path      string
	Type      string // "bin", "vsv", "vmrs" or "vmgs"
	OwnerID   string // the VM or checkpoint GUID from the file or folder name
	Size      int64
	Allocated int64 // bytes allocated on the host file system
	ModTime   time.Time

	fi os.FileInfo // what the stat of the file returned
}

// FileInfo is what the stat that found the file returned (following a
// link), or nil when unknown.
func (s StateFile) FileInfo() os.FileInfo { return s.fi }

// ParseOptions tunes [ParseConfig].
type ParseOptions struct {
	PathMap PathMapper // maps Windows paths; nil = fallback rules only
	// NoResolve skips resolving drive paths and listing state files (no
	// file-system access besides the configuration).
	NoResolve bool
	// view answers file-system questions from what a scan read (nil: the
	// file system).
	view *fsView
}

// ParseConfig reads the VM or checkpoint configuration at path: VMCX when the
// file starts with the container signature, XML otherwise. Drive paths are
// resolved with [ResolvePath] and saved-state files next to the configuration
// are listed. Errors are *Error values.
func ParseConfig(path string, opts *ParseOptions) (*Config, error) {
	if opts == nil {
		opts = &ParseOptions{}
	}
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
	if size := fi.Size(); size <= maxXMLSize {
		// The whole file in one read (a scan parses thousands of these);
		// a file that grew since the Stat is read as a stream below.
		raw := make([]byte, size+1)
		n, err := f.ReadAt(raw, 0)
		if err != nil && err != io.EOF {
			return nil, &Error{Path: path, Offset: -1, Msg: "cannot read", Err: err}
		}
		if int64(n) <= size {
			raw = raw[:n]
			if n >= 4 && le.Uint32(raw) == vmcxSignature {
				return ParseVMCXConfig(bytes.NewReader(raw), int64(n), path, opts)
			}
			root, err := xmlTreeOf(raw, path)
			if err != nil {
				return nil, err
			}
			return xmlConfigOf(root, path, opts)
		}
	}
	var sig [4]byte
	n, _ := f.ReadAt(sig[:], 0)
	if n == 4 && le.Uint32(sig[:]) == vmcxSignature {
		return ParseVMCXConfig(f, fi.Size(), path, opts)
	}
	return ParseXMLConfig(f, path, opts)
}

// ParseXMLConfig reads an XML configuration from r; path names it (and
// locates its folder for path resolution).
func ParseXMLConfig(r io.Reader, path string, opts *ParseOptions) (*Config, error) {
	root, err := ReadXMLTree(r, path)
	if err != nil {
		return nil, err
	}
	return xmlConfigOf(root, path, opts)
}

func xmlConfigOf(root *Key, path string, opts *ParseOptions) (*Config, error) {
	c, err := configFromTree(root, path, KindXML)
	if err != nil {
		return nil, err
	}
	c.finish(opts)
	return c, nil
}

// ParseVMCXConfig reads a VMCX (or VMRS) configuration of size bytes from r.
// Damaged entries are dropped and reported in Warnings (with
// PossiblyInconsistent set); a file without a readable header, object table
// or `configuration` root is an error.
func ParseVMCXConfig(r io.ReaderAt, size int64, path string, opts *ParseOptions) (*Config, error) {
	ct, err := ReadContainer(r, size, path, nil)
	if err != nil {
		return nil, err
	}
	root := ct.Root("configuration")
	if root == nil {
		msg := "no `configuration` root key"
		if ct.Root("Configurations") != nil {
			msg += " (this is a host registry, data.vmcx)"
		}
		if len(ct.Problems) > 0 {
			return nil, corruptf(path, -1, "%s; %d damaged entries, first: %v", msg, len(ct.Problems), ct.Problems[0])
		}
		return nil, &Error{Path: path, Offset: -1, Msg: msg, Err: ErrNotConfig}
	}
	c, err := configFromTree(root, path, KindVMCX)
	if err != nil {
		return nil, err
	}
	c.PossiblyInconsistent = ct.PossiblyInconsistent || len(ct.Problems) > 0
	if ct.LogReplayed {
		c.LogReplayed = int(ct.ReplayLogEntries)
	}
	c.Warnings = append(append([]string(nil), ct.Warnings...), c.Warnings...)
	for _, p := range ct.Problems {
		c.Warnings = append(c.Warnings, p.Error())
	}
	c.finish(opts)
	return c, nil
}

// configFromTree extracts the model from a `configuration` key tree.
func configFromTree(root *Key, path, kind string) (*Config, error) {
	if root == nil || !strings.EqualFold(root.Name, "configuration") {
		name := ""
		if root != nil {
			name = root.Name
		}
		return nil, &Error{Path: path, Offset: -1, Msg: fmt.Sprintf("root key is %q, not `configuration`", name), Err: ErrNotConfig}
	}
	c := &Config{Path: path, Kind: kind, Tree: root}
	warn := func(format string, args ...any) { c.Warnings = append(c.Warnings, fmt.Sprintf(format, args...)) }

	props := root.Child("properties")
	if props == nil {
		warn("no properties section")
	}
	c.Name = props.Child("name").String()
	c.TypeID = props.Child("type_id").String()
	stem := guidOf(strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)))
	c.ID = guidOf(props.Child("global_id").String())
	if c.ID == "" {
		if c.ID = stem; c.ID != "" {
			warn("no properties/global_id; ID taken from the file name")
		} else {
			warn("no properties/global_id and no GUID in the file name")
		}
	}
	c.IsCheckpoint = strings.EqualFold(filepath.Base(filepath.Dir(path)), "Snapshots")
	if c.IsCheckpoint {
		c.CheckpointID = stem
		if c.CheckpointID == "" {
			c.CheckpointID = c.ID
		}
	} else if stem != "" && c.ID != "" && stem != c.ID {
		warn("file name GUID %s differs from properties/global_id %s", stem, c.ID)
	}
	c.VMID = guidOf(root.Lookup("settings/global/logical_id").String())
	if c.VMID == "" {
		c.VMID = c.ID
	}

	switch st, ok := props.Child("subtype").IntValue(); {
	case !ok:
		c.Generation = 1
		warn("no properties/subtype; assuming generation 1")
	case st == 0:
		c.Generation = 1
	case st == 1:
		c.Generation = 2
	default:
		warn("unknown properties/subtype %d", st)
	}
	if v, ok := props.Child("version").IntValue(); ok {
		c.VersionRaw = v
		c.Version = fmt.Sprintf("%d.%d", v>>8, v&0xff)
	} else {
		warn("no properties/version")
	}
	if b, ok := root.Lookup("global_settings/disk_merge_pending").BoolValue(); ok {
		c.DiskMergePending = b
	}
	if v, ok := root.Lookup("settings/memory/bank/size").IntValue(); ok {
		c.MemoryMiB = v
	}
	if v, ok := root.Lookup("settings/processors/count").IntValue(); ok && v >= 0 && v <= 1<<20 {
		c.Processors = int(v)
	}
	if v, ok := root.Lookup("global_settings/snapshots/list/size").IntValue(); ok && v >= 0 && v <= 1<<20 {
		c.SnapshotCount = int(v)
	}
	c.GuestStatePath = root.Lookup("_" + deviceGuestState + "_/StateFilePath").String()
	c.extractDrives(root)
	return c, nil
}

// extractDrives lists the drives of every controller section.
func (c *Config) extractDrives(root *Key) {
	// Manifest: device instance → device type, in vdev order.
	devOf := map[string]string{}
	var scsiOrder []string
	if m := root.Child("manifest"); m != nil {
		vdevs := make([]*Key, 0, len(m.Children))
		for _, v := range m.Children {
			if strings.HasPrefix(strings.ToLower(v.Name), "vdev") {
				vdevs = append(vdevs, v)
			}
		}
		sort.SliceStable(vdevs, func(i, j int) bool { return suffixNum(vdevs[i].Name, "vdev") < suffixNum(vdevs[j].Name, "vdev") })
		for _, v := range vdevs {
			inst := strings.ToLower(strings.Trim(v.Child("instance").String(), "{}"))
			dev := strings.ToLower(strings.Trim(v.Child("device").String(), "{}"))
			if inst == "" {
				continue
			}
			devOf[inst] = dev
			if dev == deviceSCSI {
				scsiOrder = append(scsiOrder, inst)
			}
		}
	}
	scsiIndex := func(inst string) int {
		for i, s := range scsiOrder {
			if s == inst {
				return i
			}
		}
		scsiOrder = append(scsiOrder, inst) // a SCSI section missing from the manifest
		return len(scsiOrder) - 1
	}
	for _, sec := range root.Children {
		inst, ok := sectionGUID(sec.Name)
		if !ok {
			continue
		}
		var ctrls []*Key
		for _, ch := range sec.Children {
			if suffixNum(ch.Name, "controller") >= 0 {
				ctrls = append(ctrls, ch)
			}
		}
		if len(ctrls) == 0 {
			continue
		}
		kind := ""
		switch dev, known := devOf[inst]; {
		case known && dev == deviceIDE, !known && inst == deviceIDE:
			kind = ControllerIDE
		case known && dev == deviceSCSI, !known && sec.Child("ChannelInstanceGuid") != nil:
			kind = ControllerSCSI
		case known && dev == deviceFloppy, !known && inst == deviceFloppy:
			kind = ControllerFloppy
		}
		for _, ctl := range ctrls {
			cn := suffixNum(ctl.Name, "controller")
			for _, drv := range ctl.Children {
				dn := suffixNum(drv.Name, "drive")
				if dn < 0 {
					continue
				}
				d := DriveRef{
					Controller:  kind,
					Drive:       dn,
					Section:     inst,
					Type:        strings.ToUpper(strings.TrimSpace(drv.Child("type").String())),
					WindowsPath: drv.Child("pathname").String(),
				}
				switch kind {
				case ControllerSCSI:
					d.ControllerIndex = scsiIndex(inst) + cn
				default:
					d.ControllerIndex = cn
				}
				switch d.Type {
				case "VHD":
					if strings.TrimSpace(d.WindowsPath) == "" {
						c.Warnings = append(c.Warnings, fmt.Sprintf("hard disk drive %s has no path", d.Location()))
					}
					c.Disks = append(c.Disks, d)
				case "ISO", "VFD":
					if strings.TrimSpace(d.WindowsPath) != "" {
						c.Media = append(c.Media, d)
					}
				case "NONE", "":
				default:
					if strings.TrimSpace(d.WindowsPath) != "" {
						c.Warnings = append(c.Warnings, fmt.Sprintf("drive %s has unknown type %q; listed as a disk", d.Location(), d.Type))
						c.Disks = append(c.Disks, d)
					}
				}
			}
		}
	}
	sortDrives(c.Disks)
	sortDrives(c.Media)
}

func sortDrives(ds []DriveRef) {
	rank := func(k string) int {
		switch k {
		case ControllerIDE:
			return 0
		case ControllerSCSI:
			return 1
		case ControllerFloppy:
			return 2
		}
		return 3
	}
	sort.SliceStable(ds, func(i, j int) bool {
		a, b := ds[i], ds[j]
		if rank(a.Controller) != rank(b.Controller) {
			return rank(a.Controller) < rank(b.Controller)
		}
		if a.ControllerIndex != b.ControllerIndex {
			return a.ControllerIndex < b.ControllerIndex
		}
		return a.Drive < b.Drive
	})
}

// finish resolves drive paths and lists state files.
func (c *Config) finish(opts *ParseOptions) {
	if opts == nil {
		opts = &ParseOptions{}
	}
	if opts.NoResolve {
		return
	}
	for _, ds := range [][]DriveRef{c.Disks, c.Media} {
		for i := range ds {
			d := &ds[i]
			d.LocalPath, d.Resolved, d.Exists = resolvePath(opts.view, d.WindowsPath, c.Path, opts.PathMap)
		}
	}
	c.StateFiles = stateFilesNear(opts.view, c)
}

// stateFilesNear lists <dir>/<id>/*.bin|*.vsv and <dir>/<id>.vmrs|.vmgs for
// the configuration's ID (and checkpoint ID).
func stateFilesNear(v *fsView, c *Config) []StateFile {
	dir := filepath.Dir(c.Path)
	ids := []string{c.ID}
	if c.CheckpointID != "" && c.CheckpointID != c.ID {
		ids = append(ids, c.CheckpointID)
	}
	var out []StateFile
	seen := map[string]bool{}
	add := func(p string) {
		if seen[p] {
			return
		}
		if sf, ok := v.statStateFile(p); ok {
			seen[p] = true
			out = append(out, sf)
		}
	}
	for _, id := range ids {
		if id == "" {
			continue
		}
		if sub, ok := v.dirFold(dir, id); ok {
			if ents, err := v.readDir(sub); err == nil {
				for _, e := range ents {
					if t := stateType(e.Name()); t == "bin" || t == "vsv" {
						add(filepath.Join(sub, e.Name()))
					}
				}
			}
		}
		for _, ext := range []string{".vmrs", ".vmgs", ".bin", ".vsv"} {
			if p, ok := v.findFold(dir, id+ext); ok {
				add(p)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// dirFold finds the sub-folder of dir named name, case-insensitively.
func (v *fsView) dirFold(dir, name string) (string, bool) {
	if v.noFoldMatch(dir, name) {
		return "", false
	}
	p := filepath.Join(dir, name)
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return p, true
	}
	ents, err := v.readDir(dir)
	if err != nil {
		return "", false
	}
	for _, e := range ents {
		if e.IsDir() && strings.EqualFold(e.Name(), name) {
			return filepath.Join(dir, e.Name()), true
		}
	}
	return "", false
}

// statStateFile describes the state file at p.
func (v *fsView) statStateFile(p string) (StateFile, bool) {
	fi, err := v.stat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return StateFile{}, false
	}
	return stateFileOf(p, fi), true
}

// stateFileOf describes the state file at p from its stat.
func stateFileOf(p string, fi os.FileInfo) StateFile {
	owner := guidOf(strings.TrimSuffix(filepath.Base(p), filepath.Ext(p)))
	if owner == "" {
		owner = guidOf(filepath.Base(filepath.Dir(p)))
	}
	return StateFile{
		Path: p, Type: stateType(p), OwnerID: owner,
		Size: fi.Size(), Allocated: allocatedBytes(fi), ModTime: fi.ModTime(), fi: fi,
	}
}

// stateType returns "bin", "vsv", "vmrs", "vmgs" for a state file name, or "".
func stateType(name string) string {
	switch e := strings.ToLower(filepath.Ext(name)); e {
	case ".bin", ".vsv", ".vmrs", ".vmgs":
		return e[1:]
	}
	return ""
}

// guidOf returns s as an uppercase GUID without braces, or "" when s is not
// a GUID.
func guidOf(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(strings.TrimSuffix(s, "}"), "{")
	if len(s) != 36 {
		return ""
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return ""
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
				return ""
			}
		}
	}
	return strings.ToUpper(s)
}

// sectionGUID returns the lowercase GUID of a device section name
// `_<guid>_`.
func sectionGUID(name string) (string, bool) {
	if len(name) != 38 || name[0] != '_' || name[37] != '_' {
		return "", false
	}
	g := guidOf(name[1:37])
	return strings.ToLower(g), g != ""
}

// suffixNum returns N for name = prefix+N (case-insensitive prefix), else -1.
func suffixNum(name, prefix string) int {
	if len(name) <= len(prefix) || !strings.EqualFold(name[:len(prefix)], prefix) {
		return -1
	}
	n, err := strconv.Atoi(name[len(prefix):])
	if err != nil || n < 0 || n > 1<<20 {
		return -1
	}
	return n
}
