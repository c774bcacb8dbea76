package vm

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// ScanOptions tunes [Scan].
type ScanOptions struct {
	// PathMap maps Windows paths in configurations to local paths; nil =
	// fallback rules only (file name in the VM's folder tree).
	PathMap PathMapper
	// Workers bounds the goroutines that read directories and parse
	// configurations; 0 = GOMAXPROCS, at least 2 and at most 16.
	Workers int
	// MaxDepth bounds the directory depth below each root; 0 = 64.
	MaxDepth int
	// KeepTrees keeps each configuration's whole key tree (Config.Tree).
	// By default a scan drops it once the model is extracted, with the
	// document text the model's strings point into: a store of 2,000
	// configurations then holds ~40 MB less.
	KeepTrees bool
}

// Store is what a scan found.
type Store struct {
	Roots []string
	// VMs are the VM configurations found, each with its checkpoint
	// configurations, sorted by name then path.
	VMs []*VM
	// OrphanCheckpoints are checkpoint configurations no VM could be matched
	// to.
	OrphanCheckpoints []*Config
	// Disks are all disk image files (.vhd .vhdx .avhd .avhdx), not opened.
	Disks []DiskFile
	// StateFiles are all saved/runtime state files (.bin .vsv .vmrs .vmgs).
	StateFiles []StateFile
	// Hosts are the host registries (data.vmcx) found.
	Hosts []*HostRegistry
	// Warnings: unreadable folders, corrupt or unsupported configurations,
	// registered VMs not found, and the like. A warning never aborts a scan.
	Warnings []Warning
}

// VM is one VM configuration and the checkpoint configurations attached to it.
type VM struct {
	Config      *Config
	Checkpoints []*Config // sorted by path
}

// Configs returns the VM's configuration followed by its checkpoints'.
func (v *VM) Configs() []*Config {
	return append([]*Config{v.Config}, v.Checkpoints...)
}

// Inconsistent returns the first of the VM's configurations that may lack
// its last changes (a VMCX with outstanding replay-log entries that could
// not be replayed, or with damaged entries), or nil.
func (v *VM) Inconsistent() *Config {
	for _, c := range v.Configs() {
		if c != nil && c.PossiblyInconsistent {
			return c
		}
	}
	return nil
}

// DiskFile is one disk image file found by the scan.
type DiskFile struct {
	Path      string
	Ext       string // lowercase without the dot: vhd, vhdx, avhd, avhdx
	Size      int64
	Allocated int64 // bytes allocated on the host file system (size on Windows)
	ModTime   time.Time

	fi os.FileInfo // what the scan's stat returned
}

// FileInfo is what the scan's stat of the file returned (following a link),
// or nil when the file was not stat'ed by the scan.
func (d DiskFile) FileInfo() os.FileInfo { return d.fi }

// Warning is a problem found during a scan, with the file it concerns.
type Warning struct {
	Path    string
	Message string
}

func (w Warning) String() string { return w.Path + ": " + w.Message }

// VM returns the VM with the given ID (case-insensitive), or nil.
func (s *Store) VM(id string) *VM {
	id = guidOf(id)
	for _, v := range s.VMs {
		if v.Config.ID == id {
			return v
		}
	}
	return nil
}

// Scan walks roots (folders or single files) and returns the VMs, checkpoint
// configurations, disk files, state files and host registries found. Only a
// root that cannot be read is an error; everything else becomes a warning.
func Scan(roots []string, opts ScanOptions) (*Store, error) {
	return ScanContext(context.Background(), roots, opts)
}

// ScanContext is [Scan] with cancellation.
func ScanContext(ctx context.Context, roots []string, opts ScanOptions) (*Store, error) {
	if opts.Workers <= 0 {
		opts.Workers = min(max(runtime.GOMAXPROCS(0), 2), 16)
	}
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = 64
	}
	w := &walker{ctx: ctx, opts: opts, sem: make(chan struct{}, opts.Workers), view: newFSView()}
	for _, r := range roots {
		fi, err := os.Stat(r)
		if err != nil {
			return nil, fmt.Errorf("vm: cannot scan %s: %w", r, err)
		}
		if !fi.IsDir() {
			w.rootFile(r, fi)
			continue
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.dir(r, 0)
		}()
	}
	w.wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &Store{Roots: append([]string(nil), roots...), Disks: w.disks, StateFiles: w.states, Warnings: w.warnings}
	configs := w.parseConfigs()
	for _, h := range w.hosts {
		reg, err := ParseHostRegistry(h, opts.PathMap)
		if err != nil {
			s.warn(h, err.Error())
			continue
		}
		for _, m := range reg.Warnings {
			s.warn(h, m)
		}
		s.Hosts = append(s.Hosts, reg)
	}
	for _, pc := range configs {
		if pc.err != nil {
			s.warn(pc.path, pc.err.Error())
			continue
		}
		for _, m := range pc.cfg.Warnings {
			s.warn(pc.path, m)
		}
	}
	s.group(dedupe(configs))
	s.checkRegistries()
	s.sort()
	return s, nil
}

func (s *Store) warn(path, msg string) { s.Warnings = append(s.Warnings, Warning{path, msg}) }

// walker walks directories with at most cap(sem) extra goroutines: a
// sub-folder gets its own goroutine when a slot is free and is walked inline
// otherwise (gdu style).
type walker struct {
	ctx  context.Context
	opts ScanOptions
	sem  chan struct{}
	wg   sync.WaitGroup

	// view keeps the folders listed and files stat'ed for config parsing.
	view *fsView

	mu       sync.Mutex
	configs  []configCand
	disks    []DiskFile
	states   []StateFile
	hosts    []string
	warnings []Warning
}

type configCand struct {
	path       string
	checkpoint bool
	viaLink    bool
}

func (w *walker) warn(path, format string, args ...any) {
	w.mu.Lock()
	w.warnings = append(w.warnings, Warning{path, fmt.Sprintf(format, args...)})
	w.mu.Unlock()
}

func (w *walker) dir(dir string, depth int) {
	if w.ctx.Err() != nil {
		return
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		w.warn(dir, "cannot read folder: %v", err)
		// ReadDir returns what it could read before the error.
	}
	w.view.putDir(dir, ents, err)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		link := e.Type()&fs.ModeSymlink != 0
		if e.IsDir() {
			if depth+1 > w.opts.MaxDepth {
				w.warn(p, "deeper than %d folders; not scanned", w.opts.MaxDepth)
				continue
			}
			select {
			case w.sem <- struct{}{}:
				w.wg.Add(1)
				go func() {
					defer func() { <-w.sem; w.wg.Done() }()
					w.dir(p, depth+1)
				}()
			default:
				w.dir(p, depth+1)
			}
			continue
		}
		if !link && !e.Type().IsRegular() {
			continue
		}
		if classify(p) == catNone {
			continue
		}
		fi, err := os.Stat(p) // follows links: registration links point at configs
		if err != nil {
			if link {
				w.warn(p, "link target unreadable: %v", err)
			} else {
				w.warn(p, "cannot stat: %v", err)
			}
			continue
		}
		if !fi.Mode().IsRegular() {
			continue // links to folders are not followed (no loops)
		}
		w.view.putStat(p, fi)
		w.file(p, fi, link)
	}
}

type category int

const (
	catNone category = iota
	catDisk
	catState
	catConfig
	catCheckpoint
	catHost
	catExport
)

// classify decides from its name and folder what the file at p is.
func classify(p string) category {
	name := filepath.Base(p)
	ext := strings.ToLower(filepath.Ext(name))
	stem := strings.TrimSuffix(name, filepath.Ext(name))
	parent := strings.ToLower(filepath.Base(filepath.Dir(p)))
	switch ext {
	case ".vhd", ".vhdx", ".avhd", ".avhdx":
		return catDisk
	case ".vmrs", ".vmgs":
		return catState
	case ".bin", ".vsv":
		if guidOf(stem) != "" || guidOf(parent) != "" {
			return catState
		}
	case ".xml":
		if guidOf(stem) == "" {
			return catNone
		}
		switch parent {
		case "virtual machines":
			return catConfig
		case "snapshots":
			return catCheckpoint
		}
	case ".vmcx":
		if strings.EqualFold(name, "data.vmcx") {
			return catHost
		}
		if guidOf(stem) == "" {
			return catNone
		}
		switch parent {
		case "snapshots":
			return catCheckpoint
		case "virtual machines cache", "snapshots cache", "resource types":
			return catNone
		}
		return catConfig
	case ".exp":
		if guidOf(stem) != "" && parent == "virtual machines" {
			return catExport
		}
	}
	return catNone
}

func (w *walker) file(p string, fi os.FileInfo, link bool) {
	cat := classify(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	switch cat {
	case catDisk:
		w.disks = append(w.disks, DiskFile{
			Path: p, Ext: strings.ToLower(strings.TrimPrefix(filepath.Ext(p), ".")),
			Size: fi.Size(), Allocated: allocatedBytes(fi), ModTime: fi.ModTime(), fi: fi,
		})
	case catState:
		w.states = append(w.states, stateFileOf(p, fi))
	case catConfig, catCheckpoint:
		w.configs = append(w.configs, configCand{path: p, checkpoint: cat == catCheckpoint, viaLink: link})
	case catHost:
		w.hosts = append(w.hosts, p)
	case catExport:
		w.warnings = append(w.warnings, Warning{p, "2008/2008 R2 export configuration (.exp) is not readable; use the disks' parent locators"})
	}
}

// rootFile records a file named as a root: like a file found in a folder,
// except that any .xml/.vmcx is taken as a configuration whatever its name.
func (w *walker) rootFile(p string, fi os.FileInfo) {
	if classify(p) != catNone {
		w.file(p, fi, false)
		return
	}
	switch strings.ToLower(filepath.Ext(p)) {
	case ".xml", ".vmcx":
		w.mu.Lock()
		w.configs = append(w.configs, configCand{path: p, checkpoint: strings.EqualFold(filepath.Base(filepath.Dir(p)), "Snapshots")})
		w.mu.Unlock()
	}
}

type parsed struct {
	configCand
	cfg *Config
	err error
}

// parseConfigs parses the candidate configurations with the worker pool.
func (w *walker) parseConfigs() []parsed {
	out := make([]parsed, len(w.configs))
	jobs := make(chan int, len(w.configs))
	for i := range w.configs {
		jobs <- i
	}
	close(jobs)
	var wg sync.WaitGroup
	for range w.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				c := w.configs[i]
				cfg, err := ParseConfig(c.path, &ParseOptions{PathMap: w.opts.PathMap, view: w.view})
				if cfg != nil && !w.opts.KeepTrees {
					cfg.detach()
				}
				out[i] = parsed{configCand: c, cfg: cfg, err: err}
			}
		}()
	}
	wg.Wait()
	return out
}

// dedupe drops configurations reached through a registration link whose
// target was scanned too.
func dedupe(ps []parsed) []*Config {
	real := map[string]bool{}
	for _, p := range ps {
		if p.err == nil && !p.viaLink {
			if abs, err := filepath.Abs(p.path); err == nil {
				real[abs] = true
			}
		}
	}
	var out []*Config
	for _, p := range ps {
		if p.err != nil {
			continue
		}
		if p.viaLink {
			if t, err := filepath.EvalSymlinks(p.path); err == nil {
				if abs, err := filepath.Abs(t); err == nil && real[abs] {
					continue
				}
			}
		}
		out = append(out, p.cfg)
	}
	return out
}

// group builds VMs and attaches checkpoint configurations: by VM ID when the
// checkpoint's VMID names a VM found, else by folder when exactly one VM
// shares its VM root.
func (s *Store) group(cfgs []*Config) {
	byID := map[string][]*VM{}
	var cps []*Config
	for _, c := range cfgs {
		if c.IsCheckpoint {
			cps = append(cps, c)
			continue
		}
		v := &VM{Config: c}
		s.VMs = append(s.VMs, v)
		if c.ID != "" {
			byID[c.ID] = append(byID[c.ID], v)
		}
	}
	for id, vs := range byID {
		if len(vs) > 1 {
			paths := make([]string, len(vs))
			for i, v := range vs {
				paths[i] = v.Config.Path
			}
			sort.Strings(paths)
			s.warn(paths[0], fmt.Sprintf("VM ID %s appears in %d configurations: %s", id, len(vs), strings.Join(paths, ", ")))
		}
	}
	for _, c := range cps {
		if vs := byID[c.VMID]; len(vs) > 0 && c.VMID != "" {
			c.AttachedBy = "vm-id"
			vs[0].Checkpoints = append(vs[0].Checkpoints, c)
			continue
		}
		root := vmRoot(c.Path)
		var same []*VM
		for _, v := range s.VMs {
			if root != "" && vmRoot(v.Config.Path) == root {
				same = append(same, v)
			}
		}
		if len(same) == 1 {
			c.AttachedBy = "folder"
			same[0].Checkpoints = append(same[0].Checkpoints, c)
			continue
		}
		s.OrphanCheckpoints = append(s.OrphanCheckpoints, c)
		if len(same) > 1 {
			s.warn(c.Path, fmt.Sprintf("checkpoint %s: %d VMs share its folder and none has its VM ID %s; not attached", c.CheckpointID, len(same), c.VMID))
		} else {
			s.warn(c.Path, fmt.Sprintf("checkpoint %s: no VM configuration found for it (VM ID %s)", c.CheckpointID, c.VMID))
		}
	}
}

// checkRegistries warns about registered VMs whose configuration the scan
// did not find.
func (s *Store) checkRegistries() {
	for _, h := range s.Hosts {
		for _, r := range h.VMs {
			if s.VM(r.ID) == nil {
				s.warn(h.Path, fmt.Sprintf("registered VM %s (%s) not found in the scanned folders", r.ID, r.ConfigPath))
			}
		}
	}
}

func (s *Store) sort() {
	sort.Slice(s.VMs, func(i, j int) bool {
		a, b := s.VMs[i].Config, s.VMs[j].Config
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Path < b.Path
	})
	for _, v := range s.VMs {
		sort.Slice(v.Checkpoints, func(i, j int) bool { return v.Checkpoints[i].Path < v.Checkpoints[j].Path })
	}
	sort.Slice(s.OrphanCheckpoints, func(i, j int) bool { return s.OrphanCheckpoints[i].Path < s.OrphanCheckpoints[j].Path })
	sort.Slice(s.Disks, func(i, j int) bool { return s.Disks[i].Path < s.Disks[j].Path })
	sort.Slice(s.StateFiles, func(i, j int) bool { return s.StateFiles[i].Path < s.StateFiles[j].Path })
	sort.Slice(s.Hosts, func(i, j int) bool { return s.Hosts[i].Path < s.Hosts[j].Path })
	sort.SliceStable(s.Warnings, func(i, j int) bool { return s.Warnings[i].Path < s.Warnings[j].Path })
}
