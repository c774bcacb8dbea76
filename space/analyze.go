package space

import (
	"context"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hvsnap/hvsnap/internal/journal"
	"github.com/hvsnap/hvsnap/internal/progress"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// Options control Analyze.
type Options struct {
	PathMap    vhd.PathMap
	Thresholds Thresholds // zero value: DefaultThresholds()
	// Now is the reference time for ages (zero: time.Now()).
	Now time.Time
	// Volumes lists mounted file systems (nil: the host's, through gopsutil).
	Volumes VolumeSource
	// Workers bounds parallel header reads (0: 2 × CPUs).
	Workers  int
	Progress progress.Reporter
}

// analysis is the working state of one Analyze call.
type analysis struct {
	o     Options
	th    Thresholds
	now   time.Time
	rep   *Report
	vols  []VolumeInfo
	vidx  *VolumeIndex
	disks map[string]*Disk // by clean absolute path
	// imgInfo keeps what the engine needs beyond the model.
	blockSize map[string]int64
	vmByDisk  map[string][]*VM // live leaf → VMs
	// files holds what was read of every disk file opened (model disks and
	// candidate parents), so that no file is opened twice.
	filesMu sync.Mutex
	files   map[string]*diskFile
	stats   map[string]statResult // os.Stat results by path
	// scanned has the scan's stat of the disk files it found.
	scanned map[string]vm.DiskFile
}

// Analyze scans roots and builds the model. It reads headers, BATs and
// locators only and writes nothing. Problems with single files become
// findings or warnings; an error means the scan itself could not run (no
// readable root).
func Analyze(ctx context.Context, roots []string, o Options) (*Report, error) {
	a := &analysis{o: o, th: o.Thresholds, now: o.Now, disks: map[string]*Disk{},
		blockSize: map[string]int64{}, vmByDisk: map[string][]*VM{}, files: map[string]*diskFile{},
		stats: map[string]statResult{}, scanned: map[string]vm.DiskFile{}}
	if a.th == (Thresholds{}) {
		a.th = DefaultThresholds()
	}
	if a.now.IsZero() {
		a.now = time.Now()
	}
	if a.o.Workers <= 0 {
		a.o.Workers = 2 * runtime.NumCPU()
	}
	rep := &Report{Schema: Schema, GeneratedAt: a.now.UTC(), Roots: roots, Thresholds: a.th,
		Volumes: []*Volume{}, VMs: []*VM{}, Unattached: []*Tree{}, Disks: []*Disk{},
		StateFiles: []*StateFile{}, Findings: []Finding{}, Warnings: []string{}}
	rep.Host, _ = os.Hostname()
	a.rep = rep
	rp := progress.OrNop(o.Progress)
	rp.Start("scan", 0)
	st, err := vm.ScanContext(ctx, roots, vm.ScanOptions{PathMap: o.PathMap, Workers: o.Workers})
	rp.Done()
	if err != nil {
		return nil, err
	}
	for _, w := range st.Warnings {
		rep.Warnings = append(rep.Warnings, w.String())
	}
	src := o.Volumes
	if src == nil {
		src = HostVolumes()
	}
	if a.vols, err = src.Volumes(); err != nil {
		rep.Warnings = append(rep.Warnings, "volumes: "+err.Error())
	}
	a.vidx = NewVolumeIndex(a.vols)

	// Disks: what the scan found, what configs name, and (below) parents.
	var todo []string
	for _, d := range st.Disks {
		todo = append(todo, d.Path)
		a.scanned[cleanAbs(d.Path)] = d
	}
	for _, v := range st.VMs {
		for _, c := range v.Configs() {
			for _, d := range c.Disks {
				if d.LocalPath != "" && d.Exists {
					todo = append(todo, d.LocalPath)
				}
			}
		}
	}
	// The state files' volumes (an lstat each) are looked up while the
	// disks are read.
	stateVols := make([]string, len(st.StateFiles))
	stateDone := make(chan struct{})
	go func() {
		defer close(stateDone)
		for i, s := range st.StateFiles {
			if ctx.Err() != nil {
				return
			}
			stateVols[i] = a.volumeOfFile(s.Path, s.FileInfo())
		}
	}()
	rp.Start("read disk headers", 0)
	err = a.readDisks(ctx, todo, rp)
	<-stateDone
	if err != nil {
		return nil, err
	}
	rp.Done()
	a.linkChildren()
	a.buildVMs(st)
	a.stateFiles(st, stateVols)
	if err := a.mergeGrowth(ctx); err != nil {
		return nil, err
	}
	a.chainFindings()
	a.journalFindings()
	if err := a.collapseNeeds(); err != nil {
		return nil, err
	}
	a.volumes()
	a.finish()
	return rep, nil
}

func cleanAbs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return filepath.Clean(a)
	}
	return filepath.Clean(p)
}

// readDisks opens every path (and, transitively, every parent they resolve
// to) read-only with a bounded worker pool.
func (a *analysis) readDisks(ctx context.Context, paths []string, rp progress.Reporter) error {
	var mu sync.Mutex
	queue := []string{}
	enqueue := func(p string) {
		p = cleanAbs(p)
		if _, ok := a.disks[p]; ok {
			return
		}
		a.disks[p] = nil // claimed
		queue = append(queue, p)
	}
	for _, p := range paths {
		enqueue(p)
	}
	for len(queue) > 0 {
		batch := queue
		queue = nil
		// The whole batch is queued before the workers start: they take
		// jobs without waiting for (or waking) a sender.
		jobs := make(chan string, len(batch))
		for _, p := range batch {
			jobs <- p
		}
		close(jobs)
		var wg sync.WaitGroup
		for i := 0; i < a.o.Workers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for p := range jobs {
					if ctx.Err() != nil {
						continue
					}
					d, bs := a.readDisk(p)
					mu.Lock()
					a.disks[p] = d
					a.blockSize[p] = bs
					if d.Parent != "" {
						enqueue(d.Parent)
					}
					mu.Unlock()
					rp.Add(1)
				}
			}()
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// diskFile is what one open of a disk file yields: its description, what
// Extents and the block table say, everything merge growth and collapse
// peaks are computed from later.
type diskFile struct {
	once sync.Once
	err  error // from vhd.Open
	info vhd.Info
	loc  *vhd.ParentLocator

	maxFileSize int64
	dataBytes   int64
	extErr      error
	blockSize   int64 // Image.BlockSize
	blocks      int64 // Image.Blocks
	allocUnit   int64 // Image.AllocUnit
	// touched: blocks (of blockSize) the file's own content overrides, as
	// TouchedBlocks(blockSize) gives them (valid when extErr is nil).
	touched []uint64
	// alloc: blocks with storage in the file, as BlockAllocated says
	// (valid when allocErr is nil).
	alloc    []uint64
	allocErr error
}

func bitSet(m []uint64, i int64) bool { return m[i/64]&(1<<(i%64)) != 0 }
func setBit(m []uint64, i int64)      { m[i/64] |= 1 << (i % 64) }

// file returns what was read of the disk file at p (a clean absolute
// path), opening and reading it on first use. It never resolves parents,
// so concurrent callers cannot wait on each other in a cycle.
func (a *analysis) file(p string) *diskFile {
	a.filesMu.Lock()
	f := a.files[p]
	if f == nil {
		f = &diskFile{}
		a.files[p] = f
	}
	a.filesMu.Unlock()
	f.once.Do(func() { f.read(p) })
	return f
}

func (f *diskFile) read(p string) {
	im, err := vhd.Open(p, &vhd.Options{ReadOnly: true})
	if err != nil {
		f.err = err
		return
	}
	defer im.Close()
	f.info = im.Info()
	f.loc = im.Parent()
	f.maxFileSize = im.MaxFileSize()
	f.blockSize, f.blocks, f.allocUnit = im.BlockSize(), im.Blocks(), im.AllocUnit()
	bs := f.blockSize
	f.touched = make([]uint64, (f.blocks+63)/64)
	last := int64(-1)
	f.extErr = im.Extents(func(r vhd.Run) error {
		if r.State == vhd.StateData {
			f.dataBytes += r.Len
		}
		if r.State != vhd.StateAbsent {
			// As TouchedBlocks(bs) counts them.
			first := max(r.Off/bs, last+1)
			end := (r.Off + r.Len - 1) / bs
			for b := first; b <= end; b++ {
				setBit(f.touched, b)
			}
			last = max(last, end)
		}
		return nil
	})
	if f.info.Type != vhd.TypeFixed {
		f.alloc = make([]uint64, (f.blocks+63)/64)
		f.allocErr = im.AllocatedBlocks(func(b int64) error {
			setBit(f.alloc, b)
			return nil
		})
	}
}

// readDisk describes one file from its headers, BAT and locator.
func (a *analysis) readDisk(p string) (*Disk, int64) {
	d := &Disk{Path: p, MergeGrowth: -1}
	var fi os.FileInfo
	if sf, ok := a.scanned[p]; ok {
		d.FileSize, d.ModTime, d.Allocated = sf.Size, sf.ModTime.UTC(), sf.Allocated
		fi = sf.FileInfo()
	} else if st, err := (describer{a}).Stat(p); err == nil {
		fi = st
		d.FileSize = fi.Size()
		d.ModTime = fi.ModTime().UTC()
		d.Allocated = allocatedBytes(fi)
	}
	d.Volume = a.volumeOfFile(p, fi)
	f := a.file(p)
	if f.err != nil {
		d.Error = f.err.Error()
		return d, 0
	}
	inf := f.info
	d.Format, d.Type, d.VirtualSize = string(inf.Format), string(inf.Type), inf.VirtualSize
	d.MaxFileSize = f.maxFileSize
	d.DataBytes = f.dataBytes
	if f.extErr != nil {
		d.Error = f.extErr.Error()
	}
	if inf.Type == vhd.TypeDifferencing {
		link, err := vhd.ResolveParentOf(p, inf, f.loc, &vhd.Options{ReadOnly: true, PathMap: a.o.PathMap}, describer{a})
		if err != nil {
			d.ParentError = err.Error()
		} else {
			d.Parent = cleanAbs(link.Path)
			d.LinkageOK = link.LinkageOK
		}
	} else {
		d.LinkageOK = true
	}
	return d, f.blockSize
}

// describer answers vhd.ResolveParentOf from the files read and stat'ed.
type describer struct{ a *analysis }

func (d describer) Describe(p string) (vhd.Info, error) {
	f := d.a.file(cleanAbs(p))
	return f.info, f.err
}

// Stat is os.Stat, once per path: the scan's stat for a disk it found.
func (d describer) Stat(p string) (os.FileInfo, error) {
	a := d.a
	if sf, ok := a.scanned[p]; ok && sf.FileInfo() != nil {
		return sf.FileInfo(), nil
	}
	a.filesMu.Lock()
	st, ok := a.stats[p]
	a.filesMu.Unlock()
	if !ok {
		st.fi, st.err = os.Stat(p)
		a.filesMu.Lock()
		a.stats[p] = st
		a.filesMu.Unlock()
	}
	return st.fi, st.err
}

type statResult struct {
	fi  os.FileInfo
	err error
}

// volumeOfFile is the mount point of the volume holding p, whose stat fi
// is known (or nil); "" when none.
func (a *analysis) volumeOfFile(p string, fi os.FileInfo) string {
	if v, ok := a.vidx.ForFile(p, fi); ok {
		return v.Mount
	}
	return ""
}

// linkChildren fills Children and Depth and the sorted disk list.
func (a *analysis) linkChildren() {
	for _, d := range a.disks {
		if d.Parent != "" {
			if p := a.disks[d.Parent]; p != nil {
				p.Children = append(p.Children, d.Path)
			}
		}
	}
	for _, d := range a.disks {
		sort.Strings(d.Children)
		a.rep.Disks = append(a.rep.Disks, d)
	}
	sort.Slice(a.rep.Disks, func(i, j int) bool { return a.rep.Disks[i].Path < a.rep.Disks[j].Path })
	for _, d := range a.rep.Disks {
		d.Depth = a.depth(d)
	}
}

// depth counts differencing layers above the base (cycle-safe).
func (a *analysis) depth(d *Disk) int {
	n := 0
	seen := map[string]bool{d.Path: true}
	for d.Parent != "" {
		p := a.disks[d.Parent]
		if p == nil || seen[p.Path] {
			break
		}
		seen[p.Path] = true
		n++
		d = p
	}
	if d.Type == string(vhd.TypeDifferencing) && d.Parent == "" {
		n++ // broken below: count the orphaned layer itself
	}
	return n
}

// chain returns d and its ancestors, leaf first (cycle-safe).
func (a *analysis) chain(d *Disk) []*Disk {
	out := []*Disk{d}
	seen := map[string]bool{d.Path: true}
	for d.Parent != "" {
		p := a.disks[d.Parent]
		if p == nil || seen[p.Path] {
			break
		}
		seen[p.Path] = true
		out = append(out, p)
		d = p
	}
	return out
}

func (a *analysis) root(d *Disk) *Disk {
	c := a.chain(d)
	return c[len(c)-1]
}

// buildVMs attaches configs to disks: UsedBy, live chains, drives, trees.
func (a *analysis) buildVMs(st *vm.Store) {
	used := map[string]bool{}
	for _, sv := range st.VMs {
		c := sv.Config
		v := &VM{ID: c.ID, Name: c.Name, ConfigPath: c.Path, ConfigKind: c.Kind, Generation: c.Generation,
			Version: c.Version, DiskMergePending: c.DiskMergePending, Drives: []Drive{}, Checkpoints: []Checkpoint{},
			Chains: []*Tree{}, Volumes: []string{}}
		if v.Name == "" {
			v.Name = c.ID
		}
		for _, cc := range sv.Configs() {
			if cc != nil && cc.LogReplayed > 0 {
				a.add(Finding{Code: FindVMCXLogReplayed, Severity: SevInfo, VM: v.Name, Paths: []string{cc.Path},
					Message:  fmt.Sprintf("VM %s: %s holds %d writes Hyper-V logged but had not applied (the host stopped in between); hvsnap read it with them replayed in memory, without writing the file; Hyper-V applies them when it next opens the VM", v.Name, cc.Path, cc.LogReplayed),
					Evidence: map[string]any{"vm_id": v.ID, "config": cc.Path, "replayed_writes": cc.LogReplayed}})
			}
		}
		roots := map[string]bool{}
		for _, dr := range c.Disks {
			drv := Drive{Location: dr.Location(), WindowsPath: dr.WindowsPath, Exists: dr.Exists}
			if dr.LocalPath != "" {
				drv.Path = cleanAbs(dr.LocalPath)
			}
			v.Drives = append(v.Drives, drv)
			if drv.Path == "" || !dr.Exists {
				a.add(Finding{Code: FindMissingDisk, Severity: SevError, VM: v.Name, Paths: nonEmpty(drv.Path, c.Path),
					Message:  fmt.Sprintf("VM %s: drive %s names %s, which is not there (deleted, or on a volume that is not mounted or mapped)", v.Name, drv.Location, dr.WindowsPath),
					Evidence: map[string]any{"vm_id": v.ID, "config": c.Path, "windows_path": dr.WindowsPath, "local_path": drv.Path}})
				continue
			}
			d := a.disks[drv.Path]
			if d == nil {
				continue
			}
			d.UsedBy = appendUniq(d.UsedBy, "vm:"+v.Name)
			a.vmByDisk[d.Path] = append(a.vmByDisk[d.Path], v)
			for _, x := range a.chain(d) {
				x.OnLiveChain = true
				used[x.Path] = true
			}
			roots[a.root(d).Path] = true
		}
		for _, cp := range sv.Checkpoints {
			ck := Checkpoint{ID: cp.CheckpointID, Name: cp.Name, ConfigPath: cp.Path, Disks: []string{}}
			for _, dr := range cp.Disks {
				if dr.LocalPath == "" || !dr.Exists {
					lp := ""
					if dr.LocalPath != "" {
						lp = cleanAbs(dr.LocalPath)
					}
					name := cp.Name
					if name == "" {
						name = cp.CheckpointID
					}
					a.add(Finding{Code: FindMissingCheckpointDisk, Severity: SevWarning, VM: v.Name, Paths: nonEmpty(lp, cp.Path),
						Message:  fmt.Sprintf("VM %s: checkpoint %q (%s) names %s on drive %s, which is not there (deleted, or on a volume that is not mounted or mapped): that checkpoint cannot be applied", v.Name, name, cp.Path, dr.WindowsPath, dr.Location()),
						Evidence: map[string]any{"vm_id": v.ID, "config": cp.Path, "checkpoint": name, "windows_path": dr.WindowsPath, "local_path": lp}})
					continue
				}
				p := cleanAbs(dr.LocalPath)
				ck.Disks = append(ck.Disks, p)
				if d := a.disks[p]; d != nil {
					name := cp.Name
					if name == "" {
						name = cp.CheckpointID
					}
					d.UsedBy = appendUniq(d.UsedBy, "checkpoint:"+name)
					for _, x := range a.chain(d) {
						used[x.Path] = true
					}
					roots[a.root(d).Path] = true
				}
			}
			v.Checkpoints = append(v.Checkpoints, ck)
		}
		for r := range roots {
			v.Chains = append(v.Chains, a.tree(r))
		}
		sort.Slice(v.Chains, func(i, j int) bool { return v.Chains[i].Path < v.Chains[j].Path })
		a.rep.VMs = append(a.rep.VMs, v)
	}
	// Orphans: differencing disks no config uses, not parents of used disks.
	// Judged only when the scan found VM configs at all; loose disks with
	// no configs around are listed as unattached chains instead.
	haveConfigs := len(st.VMs) > 0
	attached := map[string]bool{}
	for _, v := range a.rep.VMs {
		for _, t := range v.Chains {
			walkTree(t, func(t *Tree) { attached[t.Path] = true })
		}
	}
	for _, d := range a.rep.Disks {
		if d.Type == string(vhd.TypeDifferencing) && haveConfigs && !used[d.Path] {
			// Report the top-most unused disk of each unused branch once.
			if p := a.disks[d.Parent]; p != nil && !used[p.Path] && p.Type == string(vhd.TypeDifferencing) {
				continue
			}
			sub := a.subtree(d)
			var bytes int64
			for _, x := range sub {
				bytes += x.Allocated
			}
			a.add(Finding{Code: FindOrphan, Severity: SevWarning, Volume: d.Volume, Paths: paths(sub), Bytes: bytes,
				Message:  fmt.Sprintf("%s is a differencing disk that no VM or checkpoint uses and no used disk depends on; %s with the disks below it (do not delete before checking it is not a VM on another host or volume)", d.Path, human(bytes)),
				Evidence: map[string]any{"parent": d.Parent, "disks": len(sub)}})
		}
		if !attached[d.Path] && (d.Parent == "" || a.disks[d.Parent] == nil) {
			t := a.tree(d.Path)
			a.rep.Unattached = append(a.rep.Unattached, t)
		}
	}
}

// subtree returns d and every disk below it.
func (a *analysis) subtree(d *Disk) []*Disk {
	out := []*Disk{}
	seen := map[string]bool{}
	var walk func(*Disk)
	walk = func(x *Disk) {
		if x == nil || seen[x.Path] {
			return
		}
		seen[x.Path] = true
		out = append(out, x)
		for _, c := range x.Children {
			walk(a.disks[c])
		}
	}
	walk(d)
	return out
}

func (a *analysis) tree(p string) *Tree {
	seen := map[string]bool{}
	var build func(string) *Tree
	build = func(p string) *Tree {
		d := a.disks[p]
		t := &Tree{Path: p}
		if d == nil || seen[p] {
			return t
		}
		seen[p] = true
		t.Live = d.OnLiveChain
		for _, c := range d.Children {
			t.Children = append(t.Children, build(c))
		}
		return t
	}
	return build(p)
}

func walkTree(t *Tree, fn func(*Tree)) {
	fn(t)
	for _, c := range t.Children {
		walkTree(c, fn)
	}
}

// stateFiles adds the state files; vols[i] is the volume of st.StateFiles[i].
func (a *analysis) stateFiles(st *vm.Store, vols []string) {
	owner := map[string]string{}
	for _, v := range st.VMs {
		owner[strings.ToUpper(v.Config.ID)] = v.Config.Name
		for _, cp := range v.Checkpoints {
			owner[strings.ToUpper(cp.CheckpointID)] = v.Config.Name
		}
	}
	for i, s := range st.StateFiles {
		sf := &StateFile{Path: cleanAbs(s.Path), Volume: vols[i], Kind: s.Type,
			VM: owner[strings.ToUpper(s.OwnerID)], Size: s.Size, Allocated: s.Allocated, ModTime: s.ModTime.UTC()}
		a.rep.StateFiles = append(a.rep.StateFiles, sf)
		if sf.Allocated >= a.th.SavedStateMin && (sf.Kind == "vsv" || sf.Kind == "bin" || sf.Kind == "vmrs") {
			a.add(Finding{Code: FindSavedState, Severity: SevInfo, VM: sf.VM, Volume: sf.Volume, Paths: []string{sf.Path}, Bytes: sf.Allocated,
				Message: fmt.Sprintf("%s holds %s of saved VM memory (%s); it is freed when the VM (or the checkpoint it belongs to) no longer needs the saved state", sf.Path, human(sf.Allocated), sf.Kind)})
		}
	}
}

// mergeGrowth computes, for every resolved link, what the parent grows by
// when the child is merged into it now.
func (a *analysis) mergeGrowth(ctx context.Context) error {
	var links []*Disk
	for _, d := range a.rep.Disks {
		if d.Parent != "" && d.Error == "" && a.disks[d.Parent] != nil && a.disks[d.Parent].Error == "" {
			links = append(links, d)
		}
	}
	jobs := make(chan *Disk, len(links))
	for _, d := range links {
		jobs <- d
	}
	close(jobs)
	var wg sync.WaitGroup
	for i := 0; i < a.o.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range jobs {
				if ctx.Err() != nil {
					continue
				}
				g, err := a.linkGrowth(d)
				if err != nil {
					d.MergeGrowth = -1
					continue
				}
				d.MergeGrowth = g
			}
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// linkGrowth is vhd.MergeGrowth of d into its parent, computed from what was
// read of both files; when that cannot give the exact figure (a read error,
// a child with larger blocks than its parent) both are opened again.
func (a *analysis) linkGrowth(d *Disk) (int64, error) {
	c, p := a.file(d.Path), a.file(d.Parent)
	if c.err == nil && p.err == nil {
		if p.info.Type == vhd.TypeFixed {
			return 0, nil
		}
		if g, ok := growthFrom(c, p); ok {
			return g, nil
		}
	}
	return linkGrowth(d.Path, d.Parent)
}

// touchedIn calls fn, in increasing order and once each, with the blocks of
// size bs that f's content overrides, as f's TouchedBlocks(bs) would. ok is
// false when f's read does not tell (bs is not a multiple of f's block size,
// or reading its extents failed).
func (f *diskFile) touchedIn(bs int64, fn func(b int64)) (ok bool) {
	if f.extErr != nil || f.blockSize <= 0 || bs < f.blockSize || bs%f.blockSize != 0 {
		return false
	}
	r := bs / f.blockSize
	last := int64(-1)
	for w, word := range f.touched {
		for word != 0 {
			k := int64(w)*64 + int64(bits.TrailingZeros64(word))
			word &= word - 1
			if b := k / r; b != last {
				fn(b)
				last = b
			}
		}
	}
	return true
}

// growthFrom is vhd.MergeGrowth(child, parent) for a parent that is not
// fixed, from what was read of both.
func growthFrom(c, p *diskFile) (int64, bool) {
	if p.allocErr != nil {
		return 0, false
	}
	var grow int64
	ok := c.touchedIn(p.blockSize, func(b int64) {
		if b < p.blocks && !bitSet(p.alloc, b) {
			grow += p.allocUnit
		}
	})
	return grow, ok
}

func linkGrowth(child, parent string) (int64, error) {
	c, err := vhd.Open(child, &vhd.Options{ReadOnly: true})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	p, err := vhd.Open(parent, &vhd.Options{ReadOnly: true})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	return vhd.MergeGrowth(c, p)
}

// journalFindings: unfinished hvsnap operations (their journals sit next
// to the disks they change): until finished, their chains are mid-change
// (a VHDX child may match its parent only through parent_linkage2, which
// other readers ignore) and later operations on them are refused.
func (a *analysis) journalFindings() {
	dirs := map[string]bool{}
	for _, d := range a.rep.Disks {
		dir := filepath.Dir(d.Path)
		if dirs[dir] {
			continue
		}
		dirs[dir] = true
		js, err := journal.Find(dir)
		if err != nil {
			continue
		}
		for _, p := range js {
			j, err := journal.Read(p)
			if err != nil {
				a.add(Finding{Code: FindUnfinishedOp, Severity: SevWarning, Volume: d.Volume, Paths: []string{p},
					Message: fmt.Sprintf("%s: an hvsnap journal that cannot be read (%v): it blocks operations on the disks next to it; inspect it, and remove it only if no operation was running", p, err)})
				continue
			}
			if j.Ended() {
				continue
			}
			a.add(Finding{Code: FindUnfinishedOp, Severity: SevWarning, Volume: d.Volume, Paths: append([]string{p}, j.Header.Files...),
				Message: fmt.Sprintf("an unfinished hvsnap %s (started %s by pid %d on %s) involves disks here; finish it: hvsnap %s --resume %s",
					j.Header.Op, j.Header.Started.Format("2006-01-02 15:04:05Z"), j.Header.PID, j.Header.Host, j.Header.Op, p),
				Evidence: map[string]any{"journal": p, "op": j.Header.Op}})
		}
	}
}

// chainFindings: broken links, expanded parents, merge pending, deep
// chains, old checkpoints.
func (a *analysis) chainFindings() {
	for _, d := range a.rep.Disks {
		if d.Error != "" {
			a.add(Finding{Code: FindUnreadableDisk, Severity: SevError, Volume: d.Volume, Paths: []string{d.Path},
				Message: fmt.Sprintf("%s cannot be read: %s", d.Path, d.Error)})
			continue
		}
		if d.Type != string(vhd.TypeDifferencing) {
			continue
		}
		vms := a.vmsOf(d)
		switch {
		case d.ParentError != "":
			a.add(Finding{Code: FindMissingParent, Severity: SevError, VM: vms, Volume: d.Volume, Paths: []string{d.Path},
				Message:  fmt.Sprintf("broken chain: %s", d.ParentError),
				Evidence: map[string]any{"newest_surviving": a.newestBelow(d)}})
		case !d.LinkageOK:
			a.add(Finding{Code: FindLinkageMismatch, Severity: SevError, VM: vms, Volume: d.Volume, Paths: []string{d.Path, d.Parent},
				Message: fmt.Sprintf("broken chain: %s names %s as its parent, but that file's identity differs (it was modified, replaced or restored separately)", d.Path, d.Parent)})
		}
		if p := a.disks[d.Parent]; p != nil && p.Error == "" && p.VirtualSize != d.VirtualSize {
			a.add(Finding{Code: FindExpandedParent, Severity: SevError, VM: vms, Volume: p.Volume, Paths: []string{p.Path, d.Path},
				Message:  fmt.Sprintf("%s has virtual size %d bytes but its differencing disk %s was made when it was %d bytes: the parent was expanded (or shrunk) under its checkpoints; shrink it back to exactly %d bytes before using the chain", p.Path, p.VirtualSize, d.Path, d.VirtualSize, d.VirtualSize),
				Evidence: map[string]any{"parent_size": p.VirtualSize, "child_size": d.VirtualSize, "restore_size": d.VirtualSize}})
		}
	}
	for _, v := range a.rep.VMs {
		if v.DiskMergePending {
			a.add(Finding{Code: FindMergePending, Severity: SevWarning, VM: v.Name, Paths: []string{v.ConfigPath},
				Message:  fmt.Sprintf("VM %s: its configuration says a deleted checkpoint's disk merge has not run yet (disk_merge_pending); the space is not reclaimed until it does", v.Name),
				Evidence: map[string]any{"vm_id": v.ID, "source": "config"}})
		}
		named := map[string]bool{}
		for _, cp := range v.Checkpoints {
			for _, p := range cp.Disks {
				named[p] = true
			}
		}
		for _, drv := range v.Drives {
			d := a.disks[drv.Path]
			if d == nil {
				continue
			}
			ch := a.chain(d)
			// Every disk below the live leaf is the state of a checkpoint;
			// one no checkpoint config names is a deleted checkpoint whose
			// merge into it has not happened.
			for i := 1; i < len(ch); i++ {
				child := ch[i-1]
				// Only checkpoint disks (.avhd/.avhdx) over a parent with no
				// other child: a VM made as a differencing disk of a shared
				// template (or a branch point) is not a pending merge.
				if named[ch[i].Path] || !isCheckpointDisk(child.Path) || len(ch[i].Children) != 1 {
					continue
				}
				a.add(Finding{Code: FindMergePending, Severity: SevWarning, VM: v.Name, Volume: ch[i].Volume,
					Paths: []string{child.Path, ch[i].Path}, Bytes: child.Allocated,
					Message:  fmt.Sprintf("VM %s: %s is in the live chain but no checkpoint names it: a checkpoint was deleted and %s still has to be merged into it (frees about %s, needs %s on %s)", v.Name, ch[i].Path, child.Path, human(max(child.Allocated-max(child.MergeGrowth, 0), 0)), human(max(child.MergeGrowth, 0)), orDash(ch[i].Volume)),
					Evidence: map[string]any{"vm_id": v.ID, "source": "chain", "merge_need": child.MergeGrowth, "child": child.Path, "parent": ch[i].Path}})
			}
			diffs := len(ch) - 1
			if diffs > a.th.DeepChain {
				a.add(Finding{Code: FindDeepChain, Severity: SevWarning, VM: v.Name, Volume: d.Volume, Paths: []string{d.Path},
					Message:  fmt.Sprintf("VM %s: drive %s reads through %d differencing disks (threshold %d): every read walks the chain and merges take longer; delete checkpoints that are no longer needed", v.Name, drv.Location, diffs, a.th.DeepChain),
					Evidence: map[string]any{"depth": diffs}})
			}
			var oldest *Disk
			for _, x := range ch[1:] {
				if x.ModTime.IsZero() {
					continue
				}
				if oldest == nil || x.ModTime.Before(oldest.ModTime) {
					oldest = x
				}
			}
			if len(ch) > 1 && oldest != nil && a.now.Sub(oldest.ModTime) > time.Duration(a.th.OldCheckpointAge)*time.Second {
				days := int(a.now.Sub(oldest.ModTime).Hours() / 24)
				a.add(Finding{Code: FindOldCheckpoint, Severity: SevWarning, VM: v.Name, Volume: d.Volume, Paths: []string{oldest.Path},
					Message:  fmt.Sprintf("VM %s: its oldest checkpoint disk %s was last written %d days ago: checkpoints are not backups, and the chain above it keeps growing", v.Name, oldest.Path, days),
					Evidence: map[string]any{"age_days": days}})
			}
		}
	}
}

// newestBelow is the newest surviving disk of a broken chain: the leaf of d's
// subtree most recently written (what the VM saw last).
func (a *analysis) newestBelow(d *Disk) string {
	best := d
	for _, x := range a.subtree(d) {
		if x.ModTime.After(best.ModTime) {
			best = x
		}
	}
	return best.Path
}

func (a *analysis) vmsOf(d *Disk) string {
	var names []string
	for _, x := range a.subtree(d) {
		for _, v := range a.vmByDisk[x.Path] {
			names = appendUniq(names, v.Name)
		}
	}
	return strings.Join(names, ", ")
}

// collapseNeeds computes each VM's merge need: the largest of the single-link
// merge growths on its live chains and the peak extra space on the base
// disk's volume while collapsing a chain into its base one layer at a time
// (oldest checkpoint first; each merged file removed after its merge); and
// each VM's reclaimable and allocated bytes.
func (a *analysis) collapseNeeds() error {
	for _, v := range a.rep.VMs {
		vols := map[string]bool{}
		seenFile := map[string]bool{}
		for _, t := range v.Chains {
			walkTree(t, func(t *Tree) {
				d := a.disks[t.Path]
				if d == nil || seenFile[d.Path] {
					return
				}
				seenFile[d.Path] = true
				v.Allocated += d.Allocated
				if d.Volume != "" {
					vols[d.Volume] = true
				}
				// Off-branch leaves: deleting that checkpoint frees them.
				if !d.OnLiveChain && len(d.Children) == 0 && d.Type == string(vhd.TypeDifferencing) {
					v.Reclaimable += d.Allocated
				}
			})
		}
		for _, s := range a.rep.StateFiles {
			if s.VM == v.Name {
				v.Allocated += s.Allocated
			}
		}
		for _, drv := range v.Drives {
			d := a.disks[drv.Path]
			if d == nil {
				continue
			}
			ch := a.chain(d)
			if len(ch) < 2 {
				continue
			}
			// Any single checkpoint deletion merges one link; deleting them
			// all collapses the chain: the need is the worst of both.
			for _, x := range ch[:len(ch)-1] {
				v.MergeNeed = max(v.MergeNeed, x.MergeGrowth)
			}
			peak, err := a.collapsePeak(ch)
			if err != nil {
				a.rep.Warnings = append(a.rep.Warnings, fmt.Sprintf("%s: merge need not computed: %v", d.Path, err))
				continue
			}
			v.MergeNeed = max(v.MergeNeed, peak)
		}
		for m := range vols {
			v.Volumes = append(v.Volumes, m)
		}
		sort.Strings(v.Volumes)
	}
	return nil
}

// collapsePeak simulates merging ch (leaf first) into its base: the base
// gains every block a layer touches that it does not hold yet; a merged
// layer's file is removed after its merge (freeing space only when it is on
// the base's volume).
func (a *analysis) collapsePeak(ch []*Disk) (int64, error) {
	base := ch[len(ch)-1]
	if base.Error != "" || base.Type == string(vhd.TypeFixed) {
		return 0, nil
	}
	if peak, ok := a.collapsePeakRead(ch); ok {
		return peak, nil
	}
	return collapsePeakOpen(ch)
}

// collapsePeakRead is collapsePeak from what was read of the files; ok is
// false when that does not give the exact figure.
func (a *analysis) collapsePeakRead(ch []*Disk) (int64, bool) {
	base := ch[len(ch)-1]
	bf := a.file(base.Path)
	if bf.err != nil || bf.allocErr != nil {
		return 0, false
	}
	nb, bs, unit := bf.blocks, bf.blockSize, bf.allocUnit
	have := append([]uint64(nil), bf.alloc...)
	var grown, freed, peak int64
	for i := len(ch) - 2; i >= 0; i-- {
		layer := ch[i]
		lf := a.file(layer.Path)
		if lf.err != nil {
			return 0, false
		}
		ok := lf.touchedIn(bs, func(b int64) {
			if b < nb && !bitSet(have, b) {
				setBit(have, b)
				grown += unit
			}
		})
		if !ok {
			return 0, false
		}
		peak = max(peak, grown-freed)
		if layer.Volume == base.Volume {
			freed += layer.Allocated
		}
	}
	return peak, true
}

// collapsePeakOpen is collapsePeak by opening the files again.
func collapsePeakOpen(ch []*Disk) (int64, error) {
	base := ch[len(ch)-1]
	bim, err := vhd.Open(base.Path, &vhd.Options{ReadOnly: true})
	if err != nil {
		return 0, err
	}
	defer bim.Close()
	nb := bim.Blocks()
	bs := bim.BlockSize()
	unit := bim.AllocUnit()
	have := make([]uint64, (nb+63)/64)
	for b := int64(0); b < nb; b++ {
		ok, err := bim.BlockAllocated(b)
		if err != nil {
			return 0, err
		}
		if ok {
			have[b/64] |= 1 << (b % 64)
		}
	}
	var grown, freed, peak int64
	for i := len(ch) - 2; i >= 0; i-- {
		layer := ch[i]
		im, err := vhd.Open(layer.Path, &vhd.Options{ReadOnly: true})
		if err != nil {
			return 0, err
		}
		err = im.TouchedBlocks(bs, func(b int64) error {
			if b < nb && have[b/64]&(1<<(b%64)) == 0 {
				have[b/64] |= 1 << (b % 64)
				grown += unit
			}
			return nil
		})
		im.Close()
		if err != nil {
			return 0, err
		}
		peak = max(peak, grown-freed)
		if layer.Volume == base.Volume {
			freed += layer.Allocated
		}
	}
	return peak, nil
}

// volumes builds per-volume totals and verdicts.
func (a *analysis) volumes() {
	byMount := map[string]*Volume{}
	get := func(m string) *Volume {
		if m == "" {
			return nil
		}
		if v := byMount[m]; v != nil {
			return v
		}
		v := &Volume{Mount: m, Verdict: VerdictOK, Reasons: []string{}, RelocationTargets: []string{}}
		for _, vi := range a.vols {
			if vi.Mount == m {
				v.Device, v.FSType, v.Size, v.Free, v.Used = vi.Device, vi.FSType, vi.Size, vi.Free, vi.Used
			}
		}
		byMount[m] = v
		return v
	}
	for _, d := range a.rep.Disks {
		v := get(d.Volume)
		if v == nil {
			continue
		}
		v.DiskFiles++
		v.DiskBytes += d.Allocated
		// Growth still possible for the differencing disks VMs write to.
		if d.Type == string(vhd.TypeDifferencing) && len(a.vmByDisk[d.Path]) > 0 && d.MaxFileSize > d.FileSize {
			v.DiffGrowth += d.MaxFileSize - d.FileSize
		}
		if p := a.disks[d.Parent]; p != nil && d.MergeGrowth > 0 {
			if pv := get(p.Volume); pv != nil {
				pv.MergeNeed = max(pv.MergeNeed, d.MergeGrowth)
			}
		}
	}
	for _, s := range a.rep.StateFiles {
		get(s.Volume)
	}
	vmNeedOn := map[string][]*VM{}
	for _, v := range a.rep.VMs {
		for _, drv := range v.Drives {
			d := a.disks[drv.Path]
			if d == nil {
				continue
			}
			base := a.root(d)
			if bv := get(base.Volume); bv != nil {
				bv.MergeNeed = max(bv.MergeNeed, v.MergeNeed)
			}
		}
		for _, m := range v.Volumes {
			vmNeedOn[m] = append(vmNeedOn[m], v)
		}
	}
	for _, v := range byMount {
		a.rep.Volumes = append(a.rep.Volumes, v)
	}
	sort.Slice(a.rep.Volumes, func(i, j int) bool { return a.rep.Volumes[i].Mount < a.rep.Volumes[j].Mount })
	for _, v := range a.rep.Volumes {
		raise := func(to Verdict, reason string) {
			if to.Rank() > v.Verdict.Rank() {
				v.Verdict = to
			}
			v.Reasons = append(v.Reasons, reason)
		}
		if v.Size == 0 && v.Free == 0 {
			v.Reasons = append(v.Reasons, "size and free space unknown (volume not reported by the host)")
			continue
		}
		if v.MergeNeed > v.Free {
			raise(VerdictCritical, fmt.Sprintf("a merge here needs %s but only %s is free (0x80070070)", human(v.MergeNeed), human(v.Free)))
			a.add(Finding{Code: FindMergeNoSpace, Severity: SevError, Volume: v.Mount, Bytes: v.MergeNeed,
				Message:  fmt.Sprintf("not enough space on %s (0x80070070) to merge checkpoints: needs %s, %s free", v.Mount, human(v.MergeNeed), human(v.Free)),
				Evidence: map[string]any{"needed": v.MergeNeed, "free": v.Free}})
		}
		if v.DiffGrowth > v.Free {
			names := []string{}
			for _, x := range vmNeedOn[v.Mount] {
				names = append(names, x.Name)
			}
			sort.Strings(names)
			raise(VerdictCritical, fmt.Sprintf("differencing disks here can still grow by %s but only %s is free: running VMs pause (paused-critical) when it runs out", human(v.DiffGrowth), human(v.Free)))
			a.add(Finding{Code: FindPausedRisk, Severity: SevError, Volume: v.Mount, Bytes: v.DiffGrowth,
				VM:       strings.Join(names, ", "),
				Message:  fmt.Sprintf("paused-critical risk on %s: the differencing disks VMs write to here can still grow by %s, only %s is free", v.Mount, human(v.DiffGrowth), human(v.Free)),
				Evidence: map[string]any{"diff_growth": v.DiffGrowth, "free": v.Free, "vms": names}})
		}
		switch {
		case v.Free < a.th.CriticalFree:
			raise(VerdictCritical, fmt.Sprintf("only %s free, below %s (Hyper-V pauses VMs there)", human(v.Free), human(a.th.CriticalFree)))
			a.add(Finding{Code: FindLowSpace, Severity: SevError, Volume: v.Mount, Bytes: v.Free,
				Message: fmt.Sprintf("%s has only %s free (critical below %s)", v.Mount, human(v.Free), human(a.th.CriticalFree))})
		case v.Free < a.th.WarningFree:
			raise(VerdictWarning, fmt.Sprintf("only %s free, below %s", human(v.Free), human(a.th.WarningFree)))
			a.add(Finding{Code: FindLowSpace, Severity: SevWarning, Volume: v.Mount, Bytes: v.Free,
				Message: fmt.Sprintf("%s has only %s free (warning below %s)", v.Mount, human(v.Free), human(a.th.WarningFree))})
		}
		if v.Verdict == VerdictCritical {
			// Other volumes that could take this volume's VMs (their files
			// plus the merge need, with the critical margin to spare).
			var need int64
			for _, x := range vmNeedOn[v.Mount] {
				need = max(need, x.Allocated+x.MergeNeed)
			}
			var srcFS string
			for _, vi := range a.vols {
				if vi.Mount == v.Mount {
					srcFS = vi.FSID
				}
			}
			cands := []VolumeInfo{}
			for _, vi := range a.vols {
				sameFS := srcFS != "" && vi.FSID == srcFS // a bind mount of the same file system
				if vi.Mount != v.Mount && !sameFS && !vi.ReadOnly && !SystemMount(vi.Mount) && need > 0 && vi.Free >= need+a.th.CriticalFree {
					cands = append(cands, vi)
				}
			}
			sort.Slice(cands, func(i, j int) bool { return cands[i].Free > cands[j].Free })
			for _, c := range cands {
				v.RelocationTargets = append(v.RelocationTargets, c.Mount)
			}
		}
	}
}

func (a *analysis) finish() {
	s := &a.rep.Summary
	s.VMs = len(a.rep.VMs)
	s.Disks = len(a.rep.Disks)
	s.Worst = VerdictOK
	for _, d := range a.rep.Disks {
		s.DiskBytes += d.Allocated
		if d.Type == string(vhd.TypeDifferencing) {
			s.CheckpointBytes += d.Allocated
		}
	}
	// Each file once: an off-branch leaf of a VM's tree is often an
	// orphan too (no checkpoint names it), and a leaf below a parent two
	// VMs share is in both VMs' trees.
	reclaim := map[string]bool{}
	for _, v := range a.rep.VMs {
		for _, t := range v.Chains {
			walkTree(t, func(t *Tree) {
				if d := a.disks[t.Path]; d != nil && !d.OnLiveChain && len(d.Children) == 0 && d.Type == string(vhd.TypeDifferencing) {
					reclaim[d.Path] = true
				}
			})
		}
	}
	for _, f := range a.rep.Findings {
		if f.Code == FindOrphan {
			for _, p := range f.Paths {
				reclaim[p] = true
			}
		}
	}
	for p := range reclaim {
		if d := a.disks[p]; d != nil {
			s.ReclaimableBytes += d.Allocated
		}
	}
	for _, v := range a.rep.Volumes {
		if v.Verdict.Rank() > s.Worst.Rank() {
			s.Worst = v.Verdict
		}
	}
	sevRank := map[Severity]int{SevError: 0, SevWarning: 1, SevInfo: 2}
	sort.SliceStable(a.rep.Findings, func(i, j int) bool {
		fi, fj := a.rep.Findings[i], a.rep.Findings[j]
		if sevRank[fi.Severity] != sevRank[fj.Severity] {
			return sevRank[fi.Severity] < sevRank[fj.Severity]
		}
		return fi.Code < fj.Code
	})
	s.Findings = len(a.rep.Findings)
}

func (a *analysis) add(f Finding) { a.rep.Findings = append(a.rep.Findings, f) }

func appendUniq(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

func paths(ds []*Disk) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Path
	}
	return out
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// human renders bytes with binary units.
func human(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		f /= unit
		if f < unit && f > -unit {
			return fmt.Sprintf("%.1f %s", f, u)
		}
	}
	return fmt.Sprintf("%.1f EiB", f/unit)
}

// isCheckpointDisk: Hyper-V names checkpoint differencing disks .avhd/.avhdx.
func isCheckpointDisk(p string) bool {
	e := strings.ToLower(filepath.Ext(p))
	return e == ".avhd" || e == ".avhdx"
}

// SystemMount reports mount points that hold the host's own runtime state
// (/dev/shm, /run, /sys/fs/cgroup, /proc, /boot and below): never a place to
// relocate VMs to, whatever their free space says.
func SystemMount(m string) bool {
	m = filepath.ToSlash(m)
	for _, p := range []string{"/dev", "/run", "/sys", "/proc", "/boot"} {
		if m == p || strings.HasPrefix(m, p+"/") {
			return true
		}
	}
	return false
}
