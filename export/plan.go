package export

import (
	"fmt"
	jnl "github.com/hvsnap/hvsnap/internal/journal"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hvsnap/hvsnap/internal/pkgfmt"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// item is one file of the package being made.
type item struct {
	pkgPath string // relative to the package root, slash-separated
	src     string // the file to copy ("" until a flattened disk is made)
	role    string
	disk    *pkgfmt.DiskInfo
	config  *pkgfmt.Config
	// flatten: make this disk by flattening the chain whose leaf is here.
	flatten string
	format  vhd.Format
}

// plan is what a package will hold.
type plan struct {
	kind  string // "vm" or "disk"
	root  string
	vm    *pkgfmt.VMInfo
	items []*item
}

// makePlan decides the package's files for src (a VM folder or a disk).
func makePlan(src string, o *Options) (*plan, error) {
	if abs, err := filepath.Abs(src); err == nil {
		src = abs
	}
	st, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("export: %s: %w", src, err)
	}
	if !st.IsDir() {
		if _, ok := vhd.FormatFromExt(src); !ok {
			return nil, fmt.Errorf("export: %s: not a VM folder or a disk (.vhd .vhdx .avhd .avhdx)", src)
		}
		if o.Checkpoint != "" {
			return nil, fmt.Errorf("export: --checkpoint needs a VM folder, %s is a disk", src)
		}
		return planDisk(src, o)
	}
	return planVM(src, o)
}

// BusyError: an unfinished merge (its journal next to the disks) involves
// disks the package would hold. Its chain is half-merged (a VHDX child
// matches its parent only through parent_linkage2, which other readers
// ignore), so it is not packaged: finish the merge first.
type BusyError struct {
	Journals []string // the merge journals
	Disk     string   // one disk involved
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("export: %s is part of an unfinished merge (journal %s): its chain is half-merged and would be packaged so; finish it first (hvsnap merge --resume %s), or export with --flatten, which reads the chain's content as it is", e.Disk, e.Journals[0], e.Journals[0])
}

// checkUnfinished refuses a plan whose disks an unfinished merge involves.
func checkUnfinished(p *plan, err error) (*plan, error) {
	if err != nil {
		return nil, err
	}
	var files []string
	for _, it := range p.items {
		// A flattened disk is read through the chain, which reads the same
		// at every step of a merge: only files copied as they are count.
		if it.disk != nil && it.flatten == "" && it.src != "" {
			files = append(files, it.src)
		}
	}
	js, err := jnl.Involving(files...)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	be := &BusyError{}
	for _, j := range js {
		if j.Header.Op != "merge" {
			continue // e.g. the relocation running this export
		}
		be.Journals = append(be.Journals, j.Path)
		if be.Disk == "" {
			named := map[string]bool{}
			for _, f := range j.Header.Files {
				named[f] = true
			}
			for _, f := range files {
				if a, err := filepath.Abs(f); err == nil && named[a] {
					be.Disk = f
					break
				}
			}
		}
	}
	if len(be.Journals) == 0 {
		return p, nil
	}
	if be.Disk == "" {
		be.Disk = files[0]
	}
	return nil, be
}

// disks collects disk files, names them inside the package and records
// their chain relations.
type disks struct {
	o      *Options
	byPath map[string]*item // absolute source path → item
	names  map[string]bool  // folded package paths in use
	items  []*item
}

func newDisks(o *Options) *disks {
	return &disks{o: o, byPath: map[string]*item{}, names: map[string]bool{}}
}

// uniqueName returns "Virtual Hard Disks/<name>", made unique.
func (d *disks) uniqueName(name string) string {
	base := pkgfmt.SafeName(name)
	if base == "" {
		base = "disk.vhdx"
	}
	ext := filepath.Ext(base)
	stem := strings.TrimSuffix(base, ext)
	for i := 1; ; i++ {
		n := base
		if i > 1 {
			n = fmt.Sprintf("%s_%d%s", stem, i, ext)
		}
		p := path.Join(pkgfmt.DirDisks, n)
		if !d.names[pkgfmt.FoldKey(p)] {
			d.names[pkgfmt.FoldKey(p)] = true
			return p
		}
	}
}

// addChain adds the disk at leaf and every parent it depends on; it returns
// the leaf's item.
func (d *disks) addChain(leaf string) (*item, error) {
	c, err := vhd.OpenChain(leaf, &vhd.Options{ReadOnly: true, PathMap: d.o.PathMap})
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	defer c.Close()
	var parentItem *item
	var leafItem *item
	// Base first, so parents exist when a child records them.
	for i := len(c.Layers) - 1; i >= 0; i-- {
		im := c.Layers[i]
		abs, err := filepath.Abs(im.Path())
		if err != nil {
			return nil, err
		}
		it := d.byPath[abs]
		if it == nil {
			inf := im.Info()
			di := &pkgfmt.DiskInfo{
				Format:      string(inf.Format),
				Type:        string(inf.Type),
				VirtualSize: inf.VirtualSize,
				DiskID:      inf.DiskID.String(),
				Identity:    inf.Identity().String(),
			}
			if loc := im.Parent(); loc != nil {
				if inf.Format == vhd.FormatVHDX {
					di.ParentLinkage = strings.ToUpper(strings.Trim(loc.Linkage, "{}"))
				} else {
					di.ParentLinkage = loc.ParentUniqueID.String()
				}
			}
			it = &item{pkgPath: d.uniqueName(filepath.Base(abs)), src: abs, role: pkgfmt.RoleDisk, disk: di}
			d.byPath[abs] = it
			d.items = append(d.items, it)
		}
		if parentItem != nil && it.disk.Parent == "" {
			it.disk.Parent = parentItem.pkgPath
		}
		parentItem = it
		leafItem = it
	}
	return leafItem, nil
}

// addFlat adds a standalone disk that Export makes by flattening leaf's
// chain, named after the chain's base disk.
func (d *disks) addFlat(leaf string) (*item, error) {
	abs, err := filepath.Abs(leaf)
	if err != nil {
		return nil, err
	}
	if it := d.byPath["flat:"+abs]; it != nil {
		return it, nil
	}
	c, err := vhd.OpenChain(leaf, &vhd.Options{ReadOnly: true, PathMap: d.o.PathMap})
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	defer c.Close()
	base := c.Base()
	inf := base.Info()
	name := filepath.Base(base.Path())
	ext := ".vhdx"
	if inf.Format == vhd.FormatVHD {
		ext = ".vhd"
	}
	name = strings.TrimSuffix(name, filepath.Ext(name)) + ext
	var from []string
	for _, l := range c.Layers {
		from = append(from, l.Path())
	}
	it := &item{
		pkgPath: d.uniqueName(name),
		role:    pkgfmt.RoleDisk,
		flatten: abs,
		format:  inf.Format,
		disk: &pkgfmt.DiskInfo{
			Format:        string(inf.Format),
			Type:          string(vhd.TypeDynamic),
			VirtualSize:   c.Size(),
			FlattenedFrom: from,
		},
	}
	d.byPath["flat:"+abs] = it
	d.items = append(d.items, it)
	return it, nil
}

func planDisk(src string, o *Options) (*plan, error) {
	d := newDisks(o)
	name := filepath.Base(src)
	root := pkgfmt.SafeName(strings.TrimSuffix(name, filepath.Ext(name)))
	if root == "" {
		root = "disk"
	}
	var err error
	if o.Flatten {
		_, err = d.addFlat(src)
	} else {
		_, err = d.addChain(src)
	}
	if err != nil {
		return nil, err
	}
	return &plan{kind: "disk", root: root, items: d.items}, nil
}

func planVM(dir string, o *Options) (*plan, error) {
	store, err := vm.Scan([]string{dir}, vm.ScanOptions{PathMap: o.PathMap})
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	switch len(store.VMs) {
	case 0:
		msg := fmt.Sprintf("export: no VM configuration found in %s (give a VM folder holding \"Virtual Machines\", or a disk)", dir)
		if len(store.Warnings) > 0 {
			msg += "; " + store.Warnings[0].String()
		}
		return nil, fmt.Errorf("%s", msg)
	case 1:
	default:
		var names []string
		for _, v := range store.VMs {
			names = append(names, fmt.Sprintf("%s (%s)", v.Config.Name, v.Config.Path))
		}
		return nil, fmt.Errorf("export: %s holds %d VMs: %s; give one VM's folder", dir, len(store.VMs), strings.Join(names, ", "))
	}
	v := store.VMs[0]
	cfg := v.Config
	// A VMCX whose replay log holds changes that could not be replayed (a
	// damaged or not understood log) or with damaged entries may name an old set of disks: a package
	// made from it could miss the disk the VM uses now, and a relocation
	// would then leave that disk behind.
	if c := v.Inconsistent(); c != nil {
		return nil, fmt.Errorf("export: %s is a VMCX configuration that may lack its last changes (outstanding replay-log entries that could not be replayed, or damaged entries): the disks it names may not be the ones the VM uses; let Hyper-V open it once on the host (Get-VM), or move the VM with Export-VM there", c.Path)
	}
	p := &plan{kind: "vm", vm: &pkgfmt.VMInfo{Name: cfg.Name, ID: cfg.ID, ConfigKind: cfg.Kind}}
	p.root = pkgfmt.SafeName(cfg.Name)
	if p.root == "" {
		p.root = pkgfmt.SafeName(cfg.ID)
	}
	if p.root == "" {
		p.root = "vm"
	}
	d := newDisks(o)
	var configs []*vm.Config
	flat := o.Flatten
	switch {
	case o.Checkpoint != "":
		cp := findCheckpoint(v, o.Checkpoint)
		if cp == nil {
			var names []string
			for _, c := range v.Checkpoints {
				names = append(names, fmt.Sprintf("%q (%s)", c.Name, c.CheckpointID))
			}
			if len(names) == 0 {
				names = []string{"none"}
			}
			return nil, fmt.Errorf("export: VM %q has no checkpoint %q; its checkpoints: %s", cfg.Name, o.Checkpoint, strings.Join(names, ", "))
		}
		configs = []*vm.Config{cp}
		flat = true
		p.vm.Checkpoint, p.vm.CheckpointID = cp.Name, cp.CheckpointID
	case flat:
		configs = []*vm.Config{cfg}
	default:
		configs = v.Configs()
	}
	p.vm.Flattened = flat
	var cfgItems []*item
	for i, c := range configs {
		role := pkgfmt.RoleCheckpointConfig
		dirName := pkgfmt.DirSnapshots
		if i == 0 {
			role, dirName = pkgfmt.RoleVMConfig, pkgfmt.DirVMs
		}
		pc := &pkgfmt.Config{Kind: c.Kind, ID: c.ID, VMID: c.VMID, Name: c.Name}
		for _, dr := range c.Disks {
			if !strings.EqualFold(dr.Type, "VHD") || dr.WindowsPath == "" {
				continue
			}
			if !dr.Exists {
				return nil, fmt.Errorf("export: %s names disk %s, which is not found (try --path-map)", c.Path, dr.WindowsPath)
			}
			var it *item
			if flat {
				it, err = d.addFlat(dr.LocalPath)
			} else {
				it, err = d.addChain(dr.LocalPath)
			}
			if err != nil {
				return nil, err
			}
			pc.Drives = append(pc.Drives, pkgfmt.Drive{Location: dr.Location(), WindowsPath: dr.WindowsPath, Disk: it.pkgPath})
		}
		cdir := filepath.Dir(c.Path)
		ci := &item{pkgPath: path.Join(dirName, pkgfmt.SafeName(filepath.Base(c.Path))), src: c.Path, role: role, config: pc}
		cfgItems = append(cfgItems, ci)
		for _, sf := range c.StateFiles {
			rel, err := filepath.Rel(cdir, sf.Path)
			if err != nil || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
				rel = filepath.Base(sf.Path)
			}
			var parts []string
			for _, s := range strings.Split(filepath.ToSlash(rel), "/") {
				parts = append(parts, pkgfmt.SafeName(s))
			}
			cfgItems = append(cfgItems, &item{pkgPath: path.Join(append([]string{dirName}, parts...)...), src: sf.Path, role: pkgfmt.RoleState})
		}
	}
	// Configurations first (small), then the disks, base disks first.
	p.items = append(cfgItems, d.items...)
	seen := map[string]bool{}
	for _, it := range p.items {
		k := pkgfmt.FoldKey(it.pkgPath)
		if seen[k] {
			return nil, fmt.Errorf("export: two files would be %q in the package", it.pkgPath)
		}
		seen[k] = true
		if err := pkgfmt.ValidPath(it.pkgPath); err != nil {
			return nil, fmt.Errorf("export: %v", err)
		}
	}
	return p, nil
}

func findCheckpoint(v *vm.VM, want string) *vm.Config {
	w := strings.Trim(strings.TrimSpace(want), "{}")
	cps := append([]*vm.Config(nil), v.Checkpoints...)
	sort.SliceStable(cps, func(i, j int) bool { return cps[i].Path < cps[j].Path })
	for _, c := range cps {
		if strings.EqualFold(c.CheckpointID, w) || strings.EqualFold(c.ID, w) {
			return c
		}
	}
	for _, c := range cps {
		if c.Name == want {
			return c
		}
	}
	for _, c := range cps {
		if strings.EqualFold(c.Name, want) {
			return c
		}
	}
	return nil
}

// PlannedFile is one file a package of src would hold.
type PlannedFile struct {
	PkgPath string `json:"pkg_path"` // inside the package root, slash-separated
	Source  string `json:"source"`   // the file copied
	Role    string `json:"role"`
	Size    int64  `json:"size"`
	Alloc   int64  `json:"alloc"` // bytes allocated on the host file system
}

// Contents is what Export(src) would write, found without writing
// anything (hvsnap relocate plans with it).
type Contents struct {
	Kind  string         `json:"kind"` // "vm" or "disk"
	Root  string         `json:"root"` // the package's folder name
	VM    *pkgfmt.VMInfo `json:"vm,omitempty"`
	Files []PlannedFile  `json:"files"`
	Size  int64          `json:"size"`
	Alloc int64          `json:"alloc"`
}

// List returns the files a package of src would hold (Flatten and
// Checkpoint are not supported here: their disks do not exist yet).
func List(src string, o Options) (*Contents, error) {
	if o.Flatten || o.Checkpoint != "" {
		return nil, fmt.Errorf("export: listing a flattened package is not supported: %w", ErrUsage)
	}
	p, err := makePlan(src, &o)
	if err != nil {
		return nil, err
	}
	c := &Contents{Kind: p.kind, Root: p.root, VM: p.vm}
	for _, it := range p.items {
		st, err := os.Stat(it.src)
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("export: %s is not a regular file", it.src)
		}
		f := PlannedFile{PkgPath: it.pkgPath, Source: it.src, Role: it.role, Size: st.Size(), Alloc: pkgfmt.Allocated(st)}
		c.Files = append(c.Files, f)
		c.Size += f.Size
		c.Alloc += f.Alloc
	}
	return c, nil
}
