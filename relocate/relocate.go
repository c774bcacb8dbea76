// Package relocate moves a VM to another volume and, when asked, merges its
// pending checkpoint disks there and moves it back: the documented way out
// of a merge that fails with 0x80070070 ("There is not enough space on the
// disk") and of a paused-critical VM, as one journaled, resumable operation.
//
// The steps, each recorded in a journal (internal/journal) in the target
// folder before it runs, so that a relocation killed at any instant is
// finished by Resume:
//
//  1. export: the VM (configuration, checkpoint configurations, saved
//     state, every disk of its chains, wherever they are) is written as a
//     folder package on the target volume (export: sparse reads, CRC-32C
//     of every file while it is read, fsync).
//  2. import: the package is imported on the same volume by moving its
//     files (importer Options.Move): every file is read back and its
//     CRC-32C checked against the manifest, parent locators and XML disk
//     paths are rewritten to the new place, then the folder is committed
//     by one rename.
//  3. verify: the imported VM's configuration is read and every chain it
//     and its checkpoints use opens with matching linkage and checks clean.
//  4. merge (Merge): the pending merges (checkpoint disks no checkpoint
//     names any more, FORMATS.md §5.2) run there, deepest first, each a
//     journaled hvsnap merge; disk_merge_pending is cleared when none is
//     left.
//  5. remove-source (unless KeepSource): the source files are removed —
//     only now, after the target verified.
//  6. back (Back): once the original volume has room for the VM (checked
//     against its real free space, not assumed), the same export, import
//     and verification bring it back into its original folder, and the
//     copy on the target is removed.
//
// The engine never prints: it reports steps through Options.Log and bytes
// through a progress.Reporter.
package relocate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hvsnap/hvsnap/export"
	"github.com/hvsnap/hvsnap/importer"
	"github.com/hvsnap/hvsnap/internal/fsutil"
	"github.com/hvsnap/hvsnap/internal/journal"
	"github.com/hvsnap/hvsnap/internal/lock"
	"github.com/hvsnap/hvsnap/internal/pkgfmt"
	"github.com/hvsnap/hvsnap/internal/progress"
	"github.com/hvsnap/hvsnap/merge"
	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// Op is the journal operation name.
const Op = "relocate"

// PlanSchema is the version of Plan (stored in journals, printed as JSON).
const PlanSchema = 1

// Errors, for errors.Is.
var (
	// ErrNoSpace: the target volume has not enough free space (nothing
	// was changed).
	ErrNoSpace = errors.New("not enough space on the disk (0x80070070)")
	// ErrNoRoomBack: the VM was relocated (and merged) but its original
	// volume has not enough room to move it back yet.
	ErrNoRoomBack = errors.New("no room to move the VM back")
	// ErrUsage: the relocation asked for cannot be done as asked.
	ErrUsage = errors.New("invalid relocation")
	// ErrBusy: an unfinished operation (journal) involves the VM's files.
	ErrBusy = errors.New("unfinished operation")
	// ErrVerify: the relocated VM did not verify.
	ErrVerify = errors.New("verification failed")
)

// Options control planning and running a relocation.
type Options struct {
	// To is the target folder; the VM lands in To/<VM name>.
	To string
	// Merge runs the VM's pending merges at the target.
	Merge bool
	// Back moves the VM back into its original folder afterwards, once the
	// original volume has room for it.
	Back bool
	// KeepSource keeps the source files (the VM then exists twice: register
	// only one of them).
	KeepSource bool
	PathMap    vhd.PathMap
	// Margin is the free space kept on each volume beyond what is written
	// (default merge.DefaultMargin; negative: 0).
	Margin int64
	// Volumes lists the mounted volumes (default space.HostVolumes()).
	Volumes space.VolumeSource
	// Hook, when set, is called at every crash-test point with its name
	// (tests kill the process there).
	Hook func(point string)
	// Log, when set, receives one line per step as it starts and ends.
	Log func(line string)
	// Tool is recorded in the package manifests.
	Tool string
}

func (o *Options) margin() int64 {
	switch {
	case o.Margin < 0:
		return 0
	case o.Margin == 0:
		return merge.DefaultMargin
	}
	return o.Margin
}

func (o *Options) volumes() space.VolumeSource {
	if o.Volumes != nil {
		return o.Volumes
	}
	return space.HostVolumes()
}

func (o *Options) hook(point string) {
	if o.Hook != nil {
		o.Hook(point)
	}
}

func (o *Options) log(format string, args ...any) {
	if o.Log != nil {
		o.Log(fmt.Sprintf(format, args...))
	}
}

// File is one file of the VM that moves.
type File struct {
	PkgPath string `json:"pkg_path"`
	Source  string `json:"source"`
	Role    string `json:"role"`
	Size    int64  `json:"size"`
	Alloc   int64  `json:"alloc"`
	Volume  string `json:"volume"`
}

// MergeLink is one pending merge: the run of checkpoint disks from Child
// down to Parent (every disk between them pending too) merged into Parent
// in one hvsnap merge (--into Parent), as predicted from the source.
type MergeLink struct {
	Child  string `json:"child"`
	Parent string `json:"parent"`
	Disks  int    `json:"disks"`  // differencing disks merged
	Growth int64  `json:"growth"` // bytes the parent grows (block level, exact)
	Freed  int64  `json:"freed"`  // bytes the merged disks' removal frees
}

// VolumeNeed is the space a volume must have for a phase.
type VolumeNeed struct {
	Mount string `json:"mount"`
	Phase string `json:"phase"` // "relocate" or "back"
	Free  int64  `json:"free"`  // now (for "back": predicted after the source is removed)
	Need  int64  `json:"need"`  // including the margin
	OK    bool   `json:"ok"`
}

// Plan is what a relocation will do; it is stored in the journal and is
// the JSON of `hvsnap relocate --dry-run --json`.
type Plan struct {
	Schema     int    `json:"schema"`
	Source     string `json:"source"` // the VM folder
	VMName     string `json:"vm_name"`
	VMID       string `json:"vm_id"`
	ConfigKind string `json:"config_kind"`
	Root       string `json:"root"`      // the VM's folder name at the target
	To         string `json:"to"`        // the target folder
	TargetVM   string `json:"target_vm"` // To/Root
	Staging    string `json:"staging"`   // the package while it is written
	Files      []File `json:"files"`
	Size       int64  `json:"size"`
	Alloc      int64  `json:"alloc"`
	// Merge: the pending merges to run at the target.
	Merge       bool         `json:"merge"`
	Merges      []MergeLink  `json:"merges"`
	MergeGrowth int64        `json:"merge_growth"`
	Back        bool         `json:"back"`
	BackStaging string       `json:"back_staging,omitempty"`
	KeepSource  bool         `json:"keep_source"`
	Margin      int64        `json:"margin"`
	Volumes     []VolumeNeed `json:"volumes"`
	PathMap     []string     `json:"path_map,omitempty"`
	Notes       []string     `json:"notes"`
	// CreatedTo: the target folder did not exist (removed at the end when
	// empty).
	CreatedTo bool `json:"created_to"`
}

// Result is what a relocation did.
type Result struct {
	Plan    *Plan  `json:"plan"`
	Journal string `json:"journal"`
	// Location is the VM's folder now; Config its configuration.
	Location string   `json:"location"`
	Config   string   `json:"config"`
	Merged   []string `json:"merged"`
	// ClearedMergePending: disk_merge_pending was set and is now False.
	ClearedMergePending bool     `json:"cleared_merge_pending"`
	Removed             []string `json:"removed"`
	MovedBack           bool     `json:"moved_back"`
	// BackRefused says why the VM was not moved back (ErrNoRoomBack).
	BackRefused string   `json:"back_refused,omitempty"`
	Commands    []string `json:"commands"` // to run on the Hyper-V host (VMCX paths, register)
	Hints       []string `json:"hints"`
	Resumed     bool     `json:"resumed"`
	Steps       []string `json:"steps"`
}

// NoSpaceError is ErrNoSpace with the numbers.
type NoSpaceError struct {
	Mount string
	Phase string
	Need  int64
	Free  int64
	Room  []space.VolumeInfo
	What  string
}

func (e *NoSpaceError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "relocate: not enough space on %s (0x80070070, \"There is not enough space on the disk\"): %s needs %s (%d bytes), %s (%d bytes) free; nothing was changed",
		e.Mount, e.What, human(e.Need), e.Need, human(e.Free), e.Free)
	if len(e.Room) > 0 {
		var rs []string
		for _, v := range e.Room {
			rs = append(rs, fmt.Sprintf("%s (%s free)", v.Mount, human(v.Free)))
		}
		b.WriteString("; volumes with room: " + strings.Join(rs, ", "))
	} else {
		b.WriteString("; no mounted volume has room for it")
	}
	return b.String()
}

func (e *NoSpaceError) Unwrap() error { return ErrNoSpace }

func usage(format string, args ...any) error {
	return fmt.Errorf("relocate: %s: %w", fmt.Sprintf(format, args...), ErrUsage)
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return filepath.Clean(a)
	}
	return filepath.Clean(p)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// PlanRelocation plans moving the VM in vmDir to o.To without changing
// anything. Lack of space on the target is an error (*NoSpaceError);
// the move back is predicted and checked again when it is due.
func PlanRelocation(vmDir string, o *Options) (*Plan, error) {
	if o == nil {
		o = &Options{}
	}
	src := abs(vmDir)
	st, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("relocate: %w", err)
	}
	if !st.IsDir() {
		return nil, usage("%s is not a VM folder", vmDir)
	}
	if o.To == "" {
		return nil, usage("no target folder (--to DIR)")
	}
	to := abs(o.To)
	if under(to, src) {
		return nil, usage("the target %s is inside the VM folder %s", to, src)
	}
	if o.Back && o.KeepSource {
		return nil, usage("--back and --keep-source exclude each other (the VM comes back into its source folder)")
	}
	if fi, err := os.Stat(to); err == nil && !fi.IsDir() {
		return nil, usage("the target %s is not a folder", to)
	}
	c, err := export.List(src, export.Options{PathMap: o.PathMap})
	if err != nil {
		return nil, fmt.Errorf("relocate: %w", err)
	}
	if c.Kind != "vm" || c.VM == nil {
		return nil, usage("%s is not a VM folder", src)
	}
	p := &Plan{Schema: PlanSchema, Source: src, VMName: c.VM.Name, VMID: c.VM.ID, ConfigKind: c.VM.ConfigKind,
		Root: c.Root, To: to, Merge: o.Merge, Back: o.Back, KeepSource: o.KeepSource, Margin: o.margin(),
		Size: c.Size, Alloc: c.Alloc, Notes: []string{}, Merges: []MergeLink{}}
	p.TargetVM = filepath.Join(to, c.Root)
	p.Staging = filepath.Join(to, ".hvsnap-relocate-"+c.Root)
	if p.Back {
		p.BackStaging = filepath.Join(filepath.Dir(src), ".hvsnap-relocate-back-"+filepath.Base(src))
	}
	p.CreatedTo = !exists(to)
	for _, m := range o.PathMap {
		p.PathMap = append(p.PathMap, m.String())
	}
	vols, err := o.volumes().Volumes()
	if err != nil {
		return nil, fmt.Errorf("relocate: %w", err)
	}
	idx := space.NewVolumeIndex(vols)
	tv, tok := idx.For(to)
	onTarget := 0
	for _, f := range c.Files {
		v, _ := idx.For(f.Source)
		p.Files = append(p.Files, File{PkgPath: f.PkgPath, Source: f.Source, Role: f.Role, Size: f.Size, Alloc: f.Alloc, Volume: v.Mount})
		if tok && sameVolume(v, tv) {
			onTarget++
		}
	}
	if tok && onTarget == len(p.Files) {
		return nil, usage("every file of VM %s is already on %s, the volume of %s: relocating there frees nothing; choose a folder on another volume", p.VMName, tv.Mount, to)
	}
	for _, x := range []string{p.TargetVM, p.Staging} {
		if exists(x) {
			return nil, usage("%s already exists (an earlier relocation? run again with --resume, or move it away)", x)
		}
	}
	if p.Back && exists(p.BackStaging) {
		return nil, usage("%s already exists (an earlier relocation? run again with --resume, or move it away)", p.BackStaging)
	}
	// Files in the VM folder that are not the VM's stay where they are.
	mine := map[string]bool{}
	for _, f := range p.Files {
		mine[f.Source] = true
	}
	var left []string
	filepath.Walk(src, func(q string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && !mine[q] && !journal.IsJournal(q) {
			left = append(left, q)
		}
		return nil
	})
	if len(left) > 0 {
		if p.Back {
			return nil, usage("%s holds %d file(s) that are not VM %s's (%s): the VM could not come back into its folder; move them away, or relocate without --back", src, len(left), p.VMName, strings.Join(firstN(left, 3), ", "))
		}
		p.Notes = append(p.Notes, fmt.Sprintf("%d file(s) in %s are not the VM's (not named by its configurations) and stay there: %s", len(left), src, strings.Join(firstN(left, 3), ", ")))
	}
	if p.Merge {
		if err := p.predictMerges(o); err != nil {
			return nil, err
		}
		if len(p.Merges) == 0 {
			p.Notes = append(p.Notes, "no pending merge: every checkpoint disk of the VM is still used by a checkpoint (delete checkpoints first, then merge)")
		}
	}
	if p.ConfigKind != vm.KindXML {
		p.Notes = append(p.Notes, "the configuration is VMCX, which hvsnap never writes: its disk paths must be fixed on the Hyper-V host (the commands are printed)")
	}
	// Target: the package (allocated bytes; holes are not written), the
	// merges' growth, file-system metadata, the margin.
	need := spaceNeed(p.Alloc, p.MergeGrowth, p.Margin)
	tn := VolumeNeed{Mount: tv.Mount, Phase: "relocate", Free: -1, Need: need, OK: true}
	if tok {
		tn.Free = tv.Free
		tn.OK = tv.Free >= need
	} else {
		p.Notes = append(p.Notes, "the target's volume is unknown: its free space could not be checked")
	}
	p.Volumes = append(p.Volumes, tn)
	if p.Back {
		sv, ok := idx.For(src)
		if ok {
			after := sv.Free
			for _, f := range p.Files {
				if sameMount(f.Volume, sv.Mount) {
					after += f.Alloc
				}
			}
			var freed int64
			for _, m := range p.Merges {
				freed += m.Freed
			}
			bn := spaceNeed(max(p.Alloc+p.MergeGrowth-freed, 0), 0, p.Margin)
			p.Volumes = append(p.Volumes, VolumeNeed{Mount: sv.Mount, Phase: "back", Free: after, Need: bn, OK: after >= bn})
			if after < bn {
				p.Notes = append(p.Notes, fmt.Sprintf("moving back to %s will probably not fit yet (needs %s, about %s free once the source is removed): the VM would stay at %s", sv.Mount, human(bn), human(after), p.TargetVM))
			}
		}
	}
	if tok && !tn.OK {
		return p, &NoSpaceError{Mount: tv.Mount, Phase: "relocate", Need: need, Free: tv.Free, Room: room(vols, need, p), What: fmt.Sprintf("VM %s (%s of files%s)", p.VMName, human(p.Alloc), mergeWhat(p))}
	}
	return p, nil
}

// spaceNeed is the free space that files of alloc bytes (allocated; holes
// are not written) plus grow bytes of merge growth need on a volume:
// their bytes, file-system metadata, the documents, the margin.
func spaceNeed(alloc, grow, margin int64) int64 {
	return alloc + grow + alloc/512 + 4<<20 + margin
}

func mergeWhat(p *Plan) string {
	if p.MergeGrowth > 0 {
		return fmt.Sprintf(", %s for its merges", human(p.MergeGrowth))
	}
	return ""
}

func firstN(xs []string, n int) []string {
	if len(xs) > n {
		return append(append([]string{}, xs[:n]...), "...")
	}
	return xs
}

func sameVolume(a, b space.VolumeInfo) bool {
	if a.FSID != "" && b.FSID != "" {
		return a.FSID == b.FSID
	}
	return a.Mount != "" && a.Mount == b.Mount
}

func sameMount(a, b string) bool { return a != "" && a == b }

// room lists volumes other than the VM's own that have need bytes free.
func room(vols []space.VolumeInfo, need int64, p *Plan) []space.VolumeInfo {
	var out []space.VolumeInfo
	for _, v := range vols {
		if v.ReadOnly || space.SystemMount(v.Mount) || v.Free < need {
			continue
		}
		own := false
		for _, f := range p.Files {
			if f.Volume == v.Mount {
				own = true
			}
		}
		if !own {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Free > out[j].Free })
	if len(out) > 5 {
		out = out[:5]
	}
	return out
}

// roots are the folders holding the VM's files (for the space model).
func (p *Plan) roots() []string {
	out := []string{p.Source}
	for _, f := range p.Files {
		d := filepath.Dir(f.Source)
		if under(d, p.Source) {
			continue
		}
		dup := false
		for _, r := range out {
			if under(d, r) {
				dup = true
			}
		}
		if !dup {
			out = append(out, d)
		}
	}
	return out
}

// pendingRuns returns the VM's pending merges in the space model grouped
// into runs: a checkpoint disk no checkpoint names, and every pending disk
// below it, merge into the lowest one's parent in one merge. Deepest run
// first.
func pendingRuns(rp *space.Report, vmName, vmID string) []MergeLink {
	disks := map[string]*space.Disk{}
	for _, d := range rp.Disks {
		disks[d.Path] = d
	}
	parentOf := map[string]string{} // pending child → parent
	isParent := map[string]bool{}
	for _, f := range rp.Findings {
		if f.Code != space.FindMergePending || f.Evidence["source"] != "chain" {
			continue
		}
		if id, _ := f.Evidence["vm_id"].(string); !(strings.EqualFold(id, vmID) || (id == "" && f.VM == vmName)) {
			continue
		}
		c, _ := f.Evidence["child"].(string)
		pa, _ := f.Evidence["parent"].(string)
		if disks[c] == nil || disks[pa] == nil {
			continue
		}
		parentOf[c] = pa
		isParent[pa] = true
	}
	type run struct {
		MergeLink
		depth int
	}
	var rs []run
	for c := range parentOf {
		if isParent[c] {
			continue // not the top of its run
		}
		r := run{MergeLink: MergeLink{Child: c}, depth: disks[c].Depth}
		for x, n := c, 0; n < 1024; n++ {
			pa, ok := parentOf[x]
			if !ok {
				r.Parent = x
				break
			}
			r.Disks++
			r.Growth += max(disks[x].MergeGrowth, 0)
			r.Freed += disks[x].Allocated
			x = pa
		}
		rs = append(rs, r)
	}
	sort.SliceStable(rs, func(i, j int) bool {
		if rs[i].depth != rs[j].depth {
			return rs[i].depth > rs[j].depth
		}
		return rs[i].Child < rs[j].Child
	})
	out := []MergeLink{}
	for _, r := range rs {
		out = append(out, r.MergeLink)
	}
	return out
}

func analyze(roots []string, o *Options) (*space.Report, error) {
	return space.Analyze(context.Background(), roots, space.Options{PathMap: o.PathMap, Volumes: o.volumes()})
}

func (p *Plan) predictMerges(o *Options) error {
	rp, err := analyze(p.roots(), o)
	if err != nil {
		return fmt.Errorf("relocate: %w", err)
	}
	p.Merges = pendingRuns(rp, p.VMName, p.VMID)
	for i, m := range p.Merges {
		// The merge planner's exact figures for the run (read only).
		if mp, err := merge.PlanMerge(m.Child, &merge.Options{PathMap: o.PathMap, Into: m.Parent, Roots: p.roots(), Volumes: o.volumes()}); err == nil {
			var g, f int64
			for _, st := range mp.Steps {
				g += st.Growth
				f += st.FreedBytes
			}
			p.Merges[i].Growth, p.Merges[i].Freed = g, f
		} else {
			p.Notes = append(p.Notes, fmt.Sprintf("merging %s into %s: %v", filepath.Base(m.Child), filepath.Base(m.Parent), err))
		}
		p.MergeGrowth += p.Merges[i].Growth
	}
	return nil
}

func (p *Plan) sources() []string {
	var out []string
	for _, f := range p.Files {
		out = append(out, f.Source)
	}
	return out
}

func inUse(err error) error {
	var iu *lock.InUseError
	if errors.As(err, &iu) {
		return fmt.Errorf("relocate: %s is in use: the file is held open or locked by another process (a running VM or another hvsnap job); stop it and try again: %w", iu.Path, err)
	}
	return err
}

// Run executes the plan (made by PlanRelocation just before).
func Run(p *Plan, o *Options, rep progress.Reporter) (*Result, error) {
	if o == nil {
		o = &Options{}
	}
	rep = progress.OrNop(rep)
	locks, err := lock.Files(p.sources()...)
	if err != nil {
		return nil, inUse(err)
	}
	defer locks.Release()
	js, err := journal.Involving(p.sources()...)
	if err != nil {
		return nil, fmt.Errorf("relocate: %w", err)
	}
	if len(js) > 0 {
		return nil, fmt.Errorf("relocate: an unfinished %s (%s) involves %s; finish it first (hvsnap %s --resume %s): %w", js[0].Header.Op, js[0].Path, p.Source, js[0].Header.Op, js[0].Path, ErrBusy)
	}
	// Space again, right before writing (the plan may be minutes old).
	if vols, err := o.volumes().Volumes(); err == nil {
		if tv, ok := space.VolumeFor(vols, p.To); ok && len(p.Volumes) > 0 && tv.Free < p.Volumes[0].Need {
			return nil, &NoSpaceError{Mount: tv.Mount, Phase: "relocate", Need: p.Volumes[0].Need, Free: tv.Free, Room: room(vols, p.Volumes[0].Need, p), What: "VM " + p.VMName}
		}
	}
	if err := os.MkdirAll(p.To, 0o755); err != nil {
		return nil, fmt.Errorf("relocate: %w", err)
	}
	if err := fsutil.SyncDir(p.To); err != nil {
		return nil, fmt.Errorf("relocate: %w", err)
	}
	files := append(p.sources(), p.TargetVM, p.Staging)
	if p.Back {
		files = append(files, p.BackStaging)
	}
	j, err := journal.Create(p.To, Op, files, p)
	if err != nil {
		return nil, fmt.Errorf("relocate: %w", err)
	}
	defer j.Close()
	o.hook("journal")
	res := &Result{Plan: p, Journal: j.Path}
	writeGuards(j, p)
	return res, execute(j, p, o, rep, res, locks)
}

// guardPlan is the plan of a guard journal: a small journal beside the
// source files that names them and points at the relocation's journal, so
// that any hvsnap command about to modify one of them finds the unfinished
// relocation (journal.Involving) and says how to finish it.
type guardPlan struct {
	GuardFor string `json:"guard_for"` // the relocation's journal
}

// guardDirs returns the folders of the source files, each with the files
// in it, in plan order.
func (p *Plan) guardDirs() ([]string, map[string][]string) {
	files := map[string][]string{}
	var dirs []string
	for _, f := range p.Files {
		d := filepath.Dir(f.Source)
		if files[d] == nil {
			dirs = append(dirs, d)
		}
		files[d] = append(files[d], f.Source)
	}
	return dirs, files
}

// writeGuards puts a guard journal in every folder of the source files
// (best effort: a full source volume may not take one; the files stay
// locked while the relocation runs).
func writeGuards(j *journal.Journal, p *Plan) {
	dirs, files := p.guardDirs()
	for _, d := range dirs {
		if g, err := journal.Create(d, Op, files[d], guardPlan{GuardFor: j.Path}); err == nil {
			g.Close()
		}
	}
}

// removeGuards removes the guard journals of j from the source folders
// (found there, so that a guard written just before a crash goes too).
func removeGuards(j *journal.Journal, p *Plan) {
	dirs, _ := p.guardDirs()
	for _, d := range dirs {
		found, _ := journal.Find(d)
		for _, g := range found {
			if gj, err := journal.Read(g); err == nil {
				if main, ok := isGuard(gj); ok && main == j.Path && os.Remove(g) == nil {
					fsutil.SyncDir(g)
				}
			}
		}
	}
}

// isGuard reports whether the journal is a guard; for reports the
// relocation journal it points at.
func isGuard(j *journal.Journal) (string, bool) {
	var gp guardPlan
	if json.Unmarshal(j.Header.Plan, &gp) == nil && gp.GuardFor != "" {
		return gp.GuardFor, true
	}
	return "", false
}

// FindJournals lists the unfinished relocation journals in dir (the target
// folder), or the journal at path when path is one; with vmDir set, only
// those relocating it.
func FindJournals(path, vmDir string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	var cands []string
	if fi.IsDir() {
		if cands, err = journal.Find(path); err != nil {
			return nil, err
		}
	} else {
		cands = []string{path}
	}
	var out []string
	for _, c := range cands {
		j, err := journal.Read(c)
		if err != nil {
			return nil, err
		}
		if j.Header.Op != Op || j.Ended() {
			continue
		}
		if main, ok := isGuard(j); ok {
			if fi.IsDir() {
				continue // listed through its relocation's journal
			}
			if _, err := os.Stat(main); err != nil {
				// The relocation ended without removing this guard
				// (killed right then): nothing to finish.
				os.Remove(c)
				continue
			}
			c = main
			if j, err = journal.Read(c); err != nil {
				return nil, err
			}
			if j.Ended() {
				continue
			}
		}
		if vmDir != "" {
			var p Plan
			if json.Unmarshal(j.Header.Plan, &p) != nil || p.Source != abs(vmDir) {
				continue
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// Resume finishes the relocation recorded in the journal at path.
func Resume(path string, o *Options, rep progress.Reporter) (*Result, error) {
	if o == nil {
		o = &Options{}
	}
	rep = progress.OrNop(rep)
	jr, err := journal.Read(path)
	if err != nil {
		return nil, err
	}
	if main, ok := isGuard(jr); ok {
		path = main
		if jr, err = journal.Read(path); err != nil {
			return nil, err
		}
	}
	if jr.Header.Op != Op {
		return nil, fmt.Errorf("%s: a %s journal, not a relocation: run hvsnap %s --resume", path, jr.Header.Op, jr.Header.Op)
	}
	var p Plan
	if err := json.Unmarshal(jr.Header.Plan, &p); err != nil || p.Schema != PlanSchema {
		return nil, fmt.Errorf("%w %s: unreadable relocation plan", journal.ErrCorrupt, path)
	}
	if len(o.PathMap) == 0 {
		for _, s := range p.PathMap {
			if m, err := vhd.ParsePathMapping(s); err == nil {
				o.PathMap = append(o.PathMap, m)
			}
		}
	}
	var existing []string
	for _, f := range p.sources() {
		if exists(f) {
			existing = append(existing, f)
		}
	}
	locks, err := lock.Files(existing...)
	if err != nil {
		return nil, inUse(err)
	}
	defer locks.Release()
	j, err := journal.Open(path)
	if err != nil {
		return nil, err
	}
	defer j.Close()
	res := &Result{Plan: &p, Journal: path, Resumed: true}
	o.hook("resume")
	return res, execute(j, &p, o, rep, res, locks)
}

// stepper runs journaled steps.
type stepper struct {
	j     *journal.Journal
	o     *Options
	res   *Result
	locks *lock.Set // the source files' locks
}

// do runs step fn unless the journal says it is done; started tells fn
// that an earlier run began it (fn must then finish or redo it).
func (s *stepper) do(step, what string, fn func(started bool) (any, error)) error {
	if ok, _ := s.j.IsDone(step); ok {
		return nil
	}
	started, _ := s.j.Started(step)
	if err := s.j.Start(step, nil); err != nil {
		return fmt.Errorf("relocate: journal: %w", err)
	}
	s.o.hook("start " + step)
	s.o.log("%s ...", what)
	data, err := fn(started)
	if err != nil {
		return err
	}
	s.o.hook("end " + step)
	if err := s.j.Done(step, data); err != nil {
		return fmt.Errorf("relocate: journal: %w", err)
	}
	s.res.Steps = append(s.res.Steps, step)
	return nil
}

// doneData decodes what a done step recorded.
func (s *stepper) doneData(step string, v any) bool {
	ok, raw := s.j.IsDone(step)
	return ok && len(raw) > 0 && json.Unmarshal(raw, v) == nil
}

type importDone struct {
	Config string   `json:"config"`
	Hints  []string `json:"hints"`
}

func execute(j *journal.Journal, p *Plan, o *Options, rep progress.Reporter, res *Result, locks *lock.Set) error {
	s := &stepper{j: j, o: o, res: res, locks: locks}
	res.Location = p.TargetVM
	// 1-3: to the target.
	if err := s.move("", p.Source, p.Staging, p.To, p.Root, p.TargetVM, rep); err != nil {
		return err
	}
	// 4. Merges at the target.
	if p.Merge {
		if err := s.do("merge", "merging the pending checkpoint disks in "+p.TargetVM, func(bool) (any, error) {
			return nil, s.merges(p, rep)
		}); err != nil {
			return err
		}
	}
	// 5. The source goes, now that the target verified.
	if !p.KeepSource {
		if err := s.do("remove-source", "removing the source files of VM "+p.VMName+" (the copy verified)", func(bool) (any, error) {
			removeGuards(j, p)
			removed, err := removeFiles(p.sources(), p.Source, o, locks)
			res.Removed = append(res.Removed, removed...)
			return nil, err
		}); err != nil {
			return err
		}
	} else {
		res.Hints = append(res.Hints, "the source VM in "+p.Source+" was kept (--keep-source): register only one of the two copies on the Hyper-V host")
	}
	// 6. Back, when the original volume has room.
	if p.Back {
		if err := s.back(p, rep); err != nil {
			if errors.Is(err, ErrNoRoomBack) {
				if ferr := s.finish(p); ferr != nil {
					return ferr
				}
			}
			return err
		}
	}
	return s.finish(p)
}

// finish ends the journal and removes the target folder when it was made
// for this relocation and is empty now.
func (s *stepper) finish(p *Plan) error {
	var d importDone
	step := "import"
	if s.res.MovedBack {
		step = "back-import"
	}
	if s.doneData(step, &d) {
		s.res.Config = d.Config
		s.res.Hints = append(s.res.Hints, d.Hints...)
	}
	s.o.hook("finish")
	removeGuards(s.j, p)
	if err := s.j.Finish(); err != nil {
		return fmt.Errorf("relocate: journal: %w", err)
	}
	if p.CreatedTo {
		if os.Remove(p.To) == nil {
			fsutil.SyncDir(p.To)
		}
	}
	return nil
}

// move copies the VM folder src to dst (= into/name) through a package in
// staging, verified; prefix names the steps ("" or "back-").
func (s *stepper) move(prefix, src, staging, into, name, dst string, rep progress.Reporter) error {
	o := s.o
	p := s.res.Plan
	pkgDir := ""
	if err := s.do(prefix+"export", "copying VM "+p.VMName+" from "+src+" to "+into+" (CRC-32C of every file)", func(started bool) (any, error) {
		if err := os.MkdirAll(staging, 0o755); err != nil {
			return nil, fmt.Errorf("relocate: %w", err)
		}
		if err := fsutil.SyncDir(staging); err != nil {
			return nil, fmt.Errorf("relocate: %w", err)
		}
		res, err := export.Export(src, export.Options{To: staging, Resume: started, PathMap: o.PathMap, Tool: o.Tool, Digest: pkgfmt.DigestCRC32C,
			AfterFile: func(pp string) error { o.hook(prefix + "export-file " + pp); return nil }}, rep)
		if err != nil {
			return nil, fmt.Errorf("relocate: %w", err)
		}
		if prefix == "" && len(res.Manifest.Files) != len(p.Files) {
			return nil, fmt.Errorf("relocate: VM %s changed since it was planned (%d files planned, %d exported): run the relocation again: %w", p.VMName, len(p.Files), len(res.Manifest.Files), ErrVerify)
		}
		return map[string]string{"package": res.Package}, nil
	}); err != nil {
		return err
	}
	var ed map[string]string
	if s.doneData(prefix+"export", &ed) {
		pkgDir = ed["package"]
	}
	if err := s.do(prefix+"import", "verifying and committing "+dst+" (parent locators and configuration paths rewritten)", func(started bool) (any, error) {
		if started && exists(dst) {
			// Committed by the interrupted run: dst did not exist when
			// the relocation was planned (or was removed before the move
			// back), and only the import's commit (one rename) makes it.
			if err := removeStaging(filepath.Join(into, ".hvsnap-import-"+name), staging); err != nil {
				return nil, err
			}
			return importDone{Config: configOf(dst, o)}, nil
		}
		if pkgDir == "" {
			return nil, fmt.Errorf("relocate: the journal does not name the package: %w", journal.ErrCorrupt)
		}
		ir, err := importer.Import(pkgDir, importer.Options{To: into, Name: name, Move: true, AllowCRC32C: true, Resume: true, PathMap: o.PathMap,
			AfterFile: func(pp string) error { o.hook(prefix + "import-file " + pp); return nil }}, rep)
		if errors.Is(err, importer.ErrBadPackage) {
			// The copy just written does not read back as it was read:
			// discard it (the source is untouched) and end.
			removeStaging(filepath.Join(into, ".hvsnap-import-"+name), staging)
			removeGuards(s.j, p)
			s.j.Finish()
			return nil, fmt.Errorf("relocate: the copy in %s did not verify, it was discarded and %s is untouched (a failing disk or memory? check the volume, then run the relocation again): %v: %w", into, src, err, ErrVerify)
		}
		if err != nil {
			return nil, fmt.Errorf("relocate: %w", err)
		}
		o.hook(prefix + "import-committed")
		if err := removeStaging(staging); err != nil {
			return nil, err
		}
		return importDone{Config: ir.Config, Hints: ir.Hints}, nil
	}); err != nil {
		return err
	}
	return s.do(prefix+"verify", "verifying VM "+p.VMName+" in "+dst+" (every chain opens with matching linkage and checks clean)", func(bool) (any, error) {
		return nil, verifyVM(dst, p, o)
	})
}

// removeStaging removes staging folders (absent ones are fine) and syncs
// their parents.
func removeStaging(dirs ...string) error {
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("relocate: %w", err)
		}
		fsutil.SyncDir(d)
	}
	return nil
}

func configOf(dir string, o *Options) string {
	st, err := vm.Scan([]string{dir}, vm.ScanOptions{PathMap: o.PathMap})
	if err != nil || len(st.VMs) != 1 {
		return ""
	}
	return st.VMs[0].Config.Path
}

// verifyVM checks that dir holds VM p (same ID) whose every chain opens
// with matching linkage and checks clean.
func verifyVM(dir string, p *Plan, o *Options) error {
	st, err := vm.Scan([]string{dir}, vm.ScanOptions{PathMap: o.PathMap})
	if err != nil {
		return fmt.Errorf("relocate: verifying %s: %w", dir, err)
	}
	if len(st.VMs) != 1 || !strings.EqualFold(st.VMs[0].Config.ID, p.VMID) {
		return fmt.Errorf("relocate: verifying %s: expected VM %s (%s), found %d VM(s): %w", dir, p.VMName, p.VMID, len(st.VMs), ErrVerify)
	}
	v := st.VMs[0]
	for _, c := range v.Configs() {
		if c.Kind != vm.KindXML {
			continue // VMCX paths are fixed on the host; the disks are checked below
		}
		for _, d := range c.Disks {
			if !strings.EqualFold(d.Type, "VHD") || d.WindowsPath == "" {
				continue
			}
			if !d.Exists || !under(d.LocalPath, dir) {
				return fmt.Errorf("relocate: verifying %s: %s names %s, which is not in the relocated folder: %w", dir, c.Path, d.WindowsPath, ErrVerify)
			}
		}
	}
	var disks []string
	filepath.Walk(dir, func(q string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if _, ok := vhd.FormatFromExt(q); ok {
				disks = append(disks, q)
			}
		}
		return nil
	})
	for _, d := range disks {
		fs, err := vhd.Check(d, &vhd.Options{PathMap: o.PathMap})
		if err != nil {
			return fmt.Errorf("relocate: verifying %s: %w", d, err)
		}
		for _, f := range fs {
			if f.Severity == vhd.SevError {
				return fmt.Errorf("relocate: verifying %s: %s: %s: %w", dir, f.Path, f.Message, ErrVerify)
			}
		}
		if ch, err := vhd.OpenChain(d, &vhd.Options{ReadOnly: true, PathMap: o.PathMap}); err != nil {
			return fmt.Errorf("relocate: verifying %s: %w", d, err)
		} else {
			for _, im := range ch.Layers {
				if !under(im.Path(), dir) {
					ch.Close()
					return fmt.Errorf("relocate: verifying %s: its chain still reaches %s outside the relocated folder: %w", d, im.Path(), ErrVerify)
				}
			}
			ch.Close()
		}
	}
	return nil
}

// merges runs the VM's pending merges at the target, deepest first,
// finishing any interrupted one first.
func (s *stepper) merges(p *Plan, rep progress.Reporter) error {
	o := s.o
	mo := func() *merge.Options {
		return &merge.Options{PathMap: o.PathMap, Roots: []string{p.TargetVM}, Volumes: o.volumes(), Margin: o.Margin,
			Hook: func(pt string) { o.hook("merge " + pt) }}
	}
	for round := 0; round < 64; round++ {
		js, err := merge.FindJournals(p.TargetVM) // the folder and those below
		if err != nil {
			return fmt.Errorf("relocate: %w", err)
		}
		for _, jp := range js {
			o.log("finishing the interrupted merge recorded in %s", jp)
			mr, err := merge.Resume(jp, mo(), rep)
			if err != nil {
				return fmt.Errorf("relocate: %w", err)
			}
			s.res.Merged = append(s.res.Merged, mr.Merged...)
		}
		rp, err := analyze([]string{p.TargetVM}, o)
		if err != nil {
			return fmt.Errorf("relocate: %w", err)
		}
		ls := pendingRuns(rp, p.VMName, p.VMID)
		if len(ls) == 0 {
			break
		}
		l := ls[0]
		o.log("merging %s into %s (%d disk(s))", filepath.Base(l.Child), filepath.Base(l.Parent), l.Disks)
		mopts := mo()
		mopts.Into = l.Parent
		mp, err := merge.PlanMerge(l.Child, mopts)
		if err != nil {
			return fmt.Errorf("relocate: %w", err)
		}
		if err := mp.CheckSpace(mopts); err != nil {
			return fmt.Errorf("relocate: %w", err)
		}
		mr, err := merge.Run(mp, mopts, rep)
		if err != nil {
			return fmt.Errorf("relocate: %w", err)
		}
		s.res.Merged = append(s.res.Merged, mr.Merged...)
		s.res.Commands = append(s.res.Commands, mr.Commands...)
	}
	// Hyper-V clears disk_merge_pending when the merge is done.
	if cfg := configOf(p.TargetVM, o); cfg != "" && strings.EqualFold(filepath.Ext(cfg), ".xml") {
		ok, err := vm.ClearXMLMergePending(cfg)
		if err != nil {
			return fmt.Errorf("relocate: %w", err)
		}
		s.res.ClearedMergePending = s.res.ClearedMergePending || ok
	}
	return nil
}

// removeFiles removes files (absent ones are fine), syncs their folders,
// then removes the folders under top left empty.
func removeFiles(files []string, top string, o *Options, locks *lock.Set) ([]string, error) {
	var removed []string
	dirs := map[string]bool{}
	for _, f := range files {
		if locks != nil {
			// A file still open keeps its space (and cannot be removed
			// on Windows).
			locks.Drop(f)
		}
		err := os.Remove(f)
		if err != nil && !os.IsNotExist(err) {
			return removed, fmt.Errorf("relocate: removing %s: %w", f, err)
		}
		if err == nil {
			removed = append(removed, f)
		}
		dirs[filepath.Dir(f)] = true
		o.hook("removed " + filepath.Base(f))
	}
	for d := range dirs {
		if err := fsutil.SyncDir(filepath.Join(d, "x")); err != nil && !os.IsNotExist(err) {
			return removed, fmt.Errorf("relocate: %w", err)
		}
	}
	var all []string
	filepath.Walk(top, func(q string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			all = append(all, q)
		}
		return nil
	})
	sort.Slice(all, func(i, j int) bool { return len(all[i]) > len(all[j]) })
	for _, d := range all {
		os.Remove(d) // only succeeds when empty
	}
	fsutil.SyncDir(top)
	return removed, nil
}

// back moves the VM from the target into its original folder once the
// original volume has room.
func (s *stepper) back(p *Plan, rep progress.Reporter) error {
	o := s.o
	parent := filepath.Dir(p.Source)
	if done, _ := s.j.IsDone("back-export"); !done {
		started, _ := s.j.Started("back-export")
		if !started {
			// Room is checked against the real free space, now.
			c, err := export.List(p.TargetVM, export.Options{PathMap: o.PathMap})
			if err != nil {
				return fmt.Errorf("relocate: %w", err)
			}
			need := spaceNeed(c.Alloc, 0, p.Margin)
			vols, err := o.volumes().Volumes()
			if err != nil {
				return fmt.Errorf("relocate: %w", err)
			}
			sv, ok := space.VolumeFor(vols, parent)
			if exists(p.Source) {
				why := fmt.Sprintf("%s exists again (something was put there while VM %s was away)", p.Source, p.VMName)
				s.res.BackRefused = why
				s.j.Note("back", why)
				return fmt.Errorf("relocate: VM %s is in %s (verified%s) but was not moved back: %s; move it back later with: hvsnap relocate %s --to %s: %w", p.VMName, p.TargetVM, mergedWord(p), why, quote(p.TargetVM), quote(parent), ErrNoRoomBack)
			}
			if ok && sv.Free < need {
				why := fmt.Sprintf("%s has %s free, the VM needs %s there (with a %s margin)", sv.Mount, human(sv.Free), human(need), human(p.Margin))
				s.res.BackRefused = why
				s.j.Note("back", why)
				return fmt.Errorf("relocate: VM %s is in %s (verified%s) but was not moved back: %s; free space there, then run: hvsnap relocate %s --to %s: %w", p.VMName, p.TargetVM, mergedWord(p), why, quote(p.TargetVM), quote(parent), ErrNoRoomBack)
			}
			if err := s.j.Note("back-files", c); err != nil {
				return fmt.Errorf("relocate: journal: %w", err)
			}
		}
	}
	if err := s.move("back-", p.TargetVM, p.BackStaging, parent, filepath.Base(p.Source), p.Source, rep); err != nil {
		return err
	}
	if err := s.do("back-remove", "removing the copy in "+p.TargetVM+" (the VM is back in "+p.Source+")", func(bool) (any, error) {
		var c export.Contents
		for _, r := range s.j.Records {
			if r.Kind == "note" && r.Step == "back-files" {
				json.Unmarshal(r.Data, &c)
			}
		}
		var files []string
		for _, f := range c.Files {
			files = append(files, f.Source)
		}
		removed, err := removeFiles(files, p.TargetVM, o, nil)
		s.res.Removed = append(s.res.Removed, removed...)
		return nil, err
	}); err != nil {
		return err
	}
	s.res.MovedBack = true
	s.res.Location = p.Source
	return nil
}

func mergedWord(p *Plan) string {
	if p.Merge {
		return ", merged"
	}
	return ""
}

func quote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t'\"\\$`!*?()[]{}<>|&;#~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for x := n / unit; x >= unit && exp < 4; x /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
