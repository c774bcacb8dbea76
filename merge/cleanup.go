package merge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hvsnap/hvsnap/internal/fsutil"
	"github.com/hvsnap/hvsnap/internal/journal"
	"github.com/hvsnap/hvsnap/internal/lock"
	"github.com/hvsnap/hvsnap/internal/progress"
	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// ErrCleanupRunning: another cleanup holds the store's lock file.
var ErrCleanupRunning = errors.New("another hvsnap cleanup is running")

// CleanupOptions control Cleanup.
type CleanupOptions struct {
	PathMap vhd.PathMap
	// OlderThan: only act on checkpoint disks (the disk a pending merge
	// writes into, or an orphan) last written at least this long ago.
	OlderThan time.Duration
	// Keep: per VM, leave the Keep most recently written pending merges.
	Keep int
	// Orphans: also remove orphaned differencing disks that have no
	// children (no VM or checkpoint uses them, nothing depends on them).
	Orphans bool
	DryRun  bool
	Margin  int64
	Volumes space.VolumeSource
	Now     time.Time
	// MaxActions bounds the work of one run (default 1000).
	MaxActions int
	// AcceptStale: as Options.AcceptStale, for merges only. Removing an
	// orphan deletes data, so a possibly-stale configuration (which may
	// name the orphan as a drive or checkpoint) always keeps it.
	AcceptStale []string
}

// Action is one thing cleanup did (or would do with DryRun, or skipped).
type Action struct {
	Kind string `json:"kind"` // "merge", "remove-orphan", "resume"
	// Journal: for "resume", the unfinished merge's journal.
	Journal string `json:"journal,omitempty"`
	VM      string `json:"vm,omitempty"`
	Child   string `json:"child"`
	Parent  string `json:"parent,omitempty"`
	// Sizes and identities before and after (parent for a merge, the file
	// itself for a removal).
	ParentSizeBefore int64  `json:"parent_size_before,omitempty"`
	ParentSizeAfter  int64  `json:"parent_size_after,omitempty"`
	ParentIDBefore   string `json:"parent_id_before,omitempty"`
	ParentIDAfter    string `json:"parent_id_after,omitempty"`
	ChildSize        int64  `json:"child_size"`
	ChildID          string `json:"child_id,omitempty"`
	Growth           int64  `json:"growth"`
	Freed            int64  `json:"freed"`
	Status           string `json:"status"` // "done", "planned", "skipped", "failed", "needs-space"
	Reason           string `json:"reason,omitempty"`
	// Notes: warnings the action went on with (e.g. an accepted
	// possibly-stale configuration).
	Notes []string `json:"notes,omitempty"`
	// Discard: a "resume" of a removal without merge (merge --remove-leaf).
	Discard bool `json:"discard,omitempty"`
}

// CleanupResult is what a cleanup run did.
type CleanupResult struct {
	Schema  int      `json:"schema"`
	Roots   []string `json:"roots"`
	DryRun  bool     `json:"dry_run"`
	Actions []Action `json:"actions"`
	// Done: actions completed (or planned with DryRun).
	Done int `json:"done"`
	// NeedsSpace: actions refused for lack of space.
	NeedsSpace int   `json:"needs_space"`
	Freed      int64 `json:"freed"`
}

// LockName is the lock file cleanup keeps in its first root.
const LockName = ".hvsnap-cleanup.lock"

// Cleanup merges what is safe to merge under roots — checkpoint disks a
// deleted checkpoint left in a VM's live chain (merge pending) — and with
// Orphans removes orphaned differencing leaves. It never touches a disk in
// use, a shared parent, or a disk a checkpoint still uses (PlanMerge's
// rules). Two cleanups of the same store never overlap (lock file).
func Cleanup(roots []string, o CleanupOptions, rep progress.Reporter) (*CleanupResult, error) {
	if len(roots) == 0 {
		return nil, errors.New("cleanup: no root given")
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.MaxActions <= 0 {
		o.MaxActions = 1000
	}
	if !o.DryRun {
		release, err := lockRoots(roots)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	res := &CleanupResult{Schema: PlanSchema, Roots: roots, DryRun: o.DryRun, Actions: []Action{}}
	count := func(act Action) {
		res.Actions = append(res.Actions, act)
		switch act.Status {
		case "done", "planned":
			res.Done++
			res.Freed += act.Freed
		case "needs-space":
			res.NeedsSpace++
		}
	}
	tried := map[string]bool{} // child paths already handled (done, planned, skipped)
	gone := map[string]bool{}  // orphans removed (or, in a dry run, to be removed)
	resumed := false           // unfinished merges handled
	var final *space.Report    // the analysis after the last action, when nothing was left
	for n := 0; n < o.MaxActions; n++ {
		rp, err := space.Analyze(context.Background(), roots, space.Options{PathMap: o.PathMap, Volumes: o.Volumes, Now: o.Now})
		if err != nil {
			return res, err
		}
		if !resumed {
			// Merges an earlier run (or hvsnap merge) left unfinished are
			// finished first, once: until then their disks are refused.
			resumed = true
			js := pendingJournals(rp)
			finished := false
			for _, j := range js {
				a, children := resumeAction(j, o, rep)
				for _, c := range children {
					tried[c] = true // finished here, skipped, or (dry run) it would be
				}
				count(a)
				finished = finished || (a.Status == "done")
			}
			if finished {
				continue // analyse again: the finished merges changed the store
			}
		}
		act, ok := nextAction(rp, o, tried, gone)
		if !ok {
			final = rp
			break
		}
		tried[act.Child] = true
		runAction(&act, roots, o, rep, gone)
		if act.Kind == "remove-orphan" && (act.Status == "done" || act.Status == "planned") {
			gone[act.Child] = true
		}
		count(act)
	}
	if !o.DryRun {
		if err := clearFlags(roots, o, res, final); err != nil {
			return res, err
		}
	}
	return res, nil
}

// clearFlags sets disk_merge_pending to False in the XML configuration of
// every VM whose chains have no pending merge left (as Hyper-V does once it
// has merged; VMCX files are never written: Hyper-V clears the flag itself
// when it next opens the VM): the VMs this run merged for, and VMs whose
// flag is stale (an earlier hvsnap merge ran the merge) when nothing about
// their disks is in doubt (no missing, broken, unreadable or half-merged
// disk). Each change is an action of kind "clear-flag".
//
// rp is the store as the run left it (nil: analysed here).
func clearFlags(roots []string, o CleanupOptions, res *CleanupResult, rp *space.Report) error {
	merged := map[string]bool{}
	for _, a := range res.Actions {
		if (a.Kind == "merge" || (a.Kind == "resume" && !a.Discard)) && a.Status == "done" {
			merged[a.VM] = true
			if a.Kind == "resume" {
				merged[""] = true // the VM of a resumed merge is not recorded
			}
		}
	}
	if rp == nil {
		var err error
		if rp, err = space.Analyze(context.Background(), roots, space.Options{PathMap: o.PathMap, Volumes: o.Volumes, Now: o.Now}); err != nil {
			return err
		}
	}
	pending, doubt := flagState(rp)
	unfinished := len(pendingJournals(rp)) > 0
	for _, v := range rp.VMs {
		if !v.DiskMergePending || v.ConfigKind != vm.KindXML || pending[v.Name] {
			continue
		}
		if !(merged[v.Name] || merged[""]) && (doubt[v.Name] || doubt[""] || unfinished) {
			continue
		}
		a := Action{Kind: "clear-flag", VM: v.Name, Child: v.ConfigPath}
		if changed, err := vm.ClearXMLMergePending(v.ConfigPath); err != nil {
			a.Status, a.Reason = "failed", err.Error()
		} else if changed {
			a.Status = "done"
			res.Done++
		} else {
			continue
		}
		res.Actions = append(res.Actions, a)
	}
	return nil
}

// flagState reads from the analysis rp, by VM name, whether a merge is
// still pending on the VM's chains (a deleted checkpoint's disk still in
// them: space's merge-pending finding, or any differencing disk on its live
// chain that neither the VM nor one of its checkpoints names, such as a
// deleted checkpoint's disk where another branch also starts; only
// checkpoint disks, .avhd/.avhdx, count: a template the VM was made from is
// a .vhd/.vhdx) and whether
// anything about its disks is in doubt (missing, broken, unreadable,
// expanded parent): what decides whether disk_merge_pending can be
// cleared. A finding about a disk several VMs share names them all.
func flagState(rp *space.Report) (pending, doubt map[string]bool) {
	pending, doubt = map[string]bool{}, map[string]bool{}
	for _, f := range rp.Findings {
		for _, name := range strings.Split(f.VM, ", ") {
			switch f.Code {
			case space.FindMergePending:
				if f.Evidence["source"] == "chain" {
					pending[name] = true
				}
			case space.FindMissingDisk, space.FindMissingCheckpointDisk, space.FindMissingParent, space.FindLinkageMismatch, space.FindUnreadableDisk, space.FindExpandedParent:
				doubt[name] = true
			}
		}
	}
	disks := diskIndex(rp)
	for _, v := range rp.VMs {
		named := map[string]bool{}
		for _, d := range v.Drives {
			named[d.Path] = true
		}
		for _, c := range v.Checkpoints {
			for _, d := range c.Disks {
				named[d] = true
			}
		}
		for x := range liveChain(v, disks) {
			ext := strings.ToLower(filepath.Ext(x))
			if d := disks[x]; d != nil && d.Type == string(vhd.TypeDifferencing) && !named[x] && (ext == ".avhd" || ext == ".avhdx") {
				pending[v.Name] = true
			}
		}
	}
	return pending, doubt
}

// diskIndex maps the analysis's disks by path.
func diskIndex(rp *space.Report) map[string]*space.Disk {
	disks := make(map[string]*space.Disk, len(rp.Disks))
	for _, d := range rp.Disks {
		disks[d.Path] = d
	}
	return disks
}

// liveChain is the set of disks the VM's drives stand on: each drive's
// disk and its ancestors.
func liveChain(v *space.VM, disks map[string]*space.Disk) map[string]bool {
	out := map[string]bool{}
	for _, drv := range v.Drives {
		for x, n := drv.Path, 0; x != "" && !out[x] && n < 256; n++ {
			out[x] = true
			d := disks[x]
			if d == nil {
				break
			}
			x = d.Parent
		}
	}
	return out
}

// lockRoots takes the cleanup lock file in every root (canonical paths,
// in order), so that two jobs naming the same roots in any order never
// overlap.
func lockRoots(roots []string) (func(), error) {
	seen := map[string]bool{}
	var cs []string
	for _, r := range roots {
		if c := canon(r); !seen[c] {
			seen[c] = true
			cs = append(cs, c)
		}
	}
	sort.Strings(cs)
	var held []*lock.Lock
	release := func() {
		for _, l := range held {
			l.Release()
		}
	}
	for _, r := range cs {
		lockPath := filepath.Join(r, LockName)
		f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			release()
			return nil, fmt.Errorf("cleanup: %w", err)
		}
		f.Close()
		l, err := lock.File(lockPath)
		if err != nil {
			release()
			if errors.Is(err, lock.ErrInUse) {
				return nil, fmt.Errorf("%w on %s (lock file %s); try again when it ends", ErrCleanupRunning, r, lockPath)
			}
			return nil, err
		}
		held = append(held, l)
	}
	return release, nil
}

// pendingJournals lists the unfinished merge journals the analysis found
// next to the disks (next to the merge's parent, or to the disk a removal
// without merge removes).
func pendingJournals(rp *space.Report) []string {
	var out []string
	for _, f := range rp.Findings {
		if f.Code != space.FindUnfinishedOp || f.Evidence["op"] != "merge" {
			continue
		}
		if j, _ := f.Evidence["journal"].(string); j != "" {
			out = append(out, j)
		}
	}
	sort.Strings(out)
	return out
}

// resumeAction finishes the merge recorded in journal j (a dry run only
// says it would).
// It also returns the disks the journal merges.
func resumeAction(j string, o CleanupOptions, rep progress.Reporter) (Action, []string) {
	a := Action{Kind: "resume", Journal: j}
	var children []string
	plan, perr := readJournalPlan(j) // an unreadable one: Resume says why
	if perr == nil {
		a.Child, a.Parent, a.Discard = plan.Disk, plan.Into, plan.Discards()
		for _, st := range plan.Steps {
			children = append(children, st.Child)
		}
	}
	if o.DryRun {
		a.Status = "planned"
		if plan != nil {
			// Predict Resume's refusal of disks in use (a running VM, or the
			// merge still running in another process).
			if err := plan.ProbeLocks(); err != nil {
				a.Status, a.Reason = "skipped", err.Error()
			}
		}
		return a, children
	}
	mo := &Options{PathMap: o.PathMap, Margin: o.Margin, Volumes: o.Volumes}
	res, err := Resume(j, mo, rep)
	if err != nil {
		a.Status, a.Reason = failedStatus(err), err.Error()
		return a, children
	}
	a.Status = "done"
	if a.Parent != "" {
		a.ParentSizeAfter, a.ParentIDAfter = identity(a.Parent, o.PathMap)
	}
	for _, r := range res.Removed {
		a.Notes = append(a.Notes, "removed "+r)
	}
	return a, children
}

// failedStatus is the action status of a merge (or resume) that returned
// err: "needs-space", "skipped" when refused before anything was written
// (in use: a running VM), else "failed".
func failedStatus(err error) string {
	switch {
	case errors.Is(err, ErrNoSpace):
		return "needs-space"
	case errors.Is(err, ErrRefused):
		return "skipped"
	}
	return "failed"
}

// nextAction picks the next merge-pending link (or orphan) to handle.
func nextAction(rp *space.Report, o CleanupOptions, tried, gone map[string]bool) (Action, bool) {
	disks := map[string]*space.Disk{}
	for _, d := range rp.Disks {
		disks[d.Path] = d
	}
	type cand struct {
		a   Action
		age time.Time
	}
	byVM := map[string][]cand{}
	var vms []string
	for _, f := range rp.Findings {
		if f.Code != space.FindMergePending || f.Evidence["source"] != "chain" {
			continue
		}
		child, _ := f.Evidence["child"].(string)
		parent, _ := f.Evidence["parent"].(string)
		p := disks[parent]
		if child == "" || p == nil {
			continue
		}
		if _, ok := byVM[f.VM]; !ok {
			vms = append(vms, f.VM)
		}
		byVM[f.VM] = append(byVM[f.VM], cand{Action{Kind: "merge", VM: f.VM, Child: child, Parent: parent}, p.ModTime})
	}
	sort.Strings(vms)
	for _, v := range vms {
		cs := byVM[v]
		// Newest first; the Keep newest stay.
		sort.Slice(cs, func(i, j int) bool { return cs[i].age.After(cs[j].age) })
		for i, c := range cs {
			if tried[c.a.Child] || i < o.Keep || o.Now.Sub(c.age) < o.OlderThan {
				continue
			}
			return c.a, true
		}
	}
	if o.Orphans {
		// An orphaned subtree goes leaf by leaf: a disk is a leaf once all
		// its children are gone (in a dry run: would be).
		leaf := func(d *space.Disk) bool {
			for _, c := range d.Children {
				if !gone[c] {
					return false
				}
			}
			return true
		}
		for _, f := range rp.Findings {
			if f.Code != space.FindOrphan {
				continue
			}
			for _, p := range f.Paths {
				d := disks[p]
				if d == nil || tried[d.Path] || !leaf(d) || o.Now.Sub(d.ModTime) < o.OlderThan {
					continue
				}
				return Action{Kind: "remove-orphan", Child: d.Path, Parent: d.Parent}, true
			}
		}
	}
	return Action{}, false
}

func identity(path string, pm vhd.PathMap) (int64, string) {
	im, err := vhd.Open(path, &vhd.Options{ReadOnly: true, PathMap: pm})
	if err != nil {
		return fileSize(path), ""
	}
	defer im.Close()
	return fileSize(path), im.Info().Identity().String()
}

func runAction(a *Action, roots []string, o CleanupOptions, rep progress.Reporter, gone map[string]bool) {
	a.ChildSize, a.ChildID = identity(a.Child, o.PathMap)
	switch a.Kind {
	case "remove-orphan":
		a.Freed = allocatedBytes(a.Child)
		// A dry run makes the same checks (lock, journals, configurations,
		// dependents) and stops before the removal.
		if err := removeOrphan(a.Child, roots, o.PathMap, o.DryRun, gone); err != nil {
			a.Status, a.Reason = "skipped", err.Error()
			return
		}
		a.Status = "done"
		if o.DryRun {
			a.Status = "planned"
		}
	case "merge":
		a.ParentSizeBefore, a.ParentIDBefore = identity(a.Parent, o.PathMap)
		mo := &Options{PathMap: o.PathMap, Into: a.Parent, Roots: roots, Margin: o.Margin, Volumes: o.Volumes, AcceptStale: o.AcceptStale}
		p, err := PlanMerge(a.Child, mo)
		if err != nil {
			a.Status, a.Reason = "skipped", err.Error()
			return
		}
		a.Notes = p.Notes
		for _, s := range p.Steps {
			a.Growth += s.Growth
			a.Freed += s.FreedBytes
		}
		if err := p.CheckSpace(mo); err != nil {
			a.Status, a.Reason = "needs-space", err.Error()
			return
		}
		if o.DryRun {
			a.Status = "planned"
			if err := p.ProbeLocks(); err != nil {
				a.Status, a.Reason = "skipped", err.Error()
			}
			return
		}
		if _, err := Run(p, mo, rep); err != nil {
			a.Status, a.Reason = failedStatus(err), err.Error()
			return
		}
		a.ParentSizeAfter, a.ParentIDAfter = identity(a.Parent, o.PathMap)
		a.Status = "done"
	}
}

// removeOrphan removes a differencing leaf nothing depends on, under a lock
// and after re-checking that no disk names it as parent (dryRun: only the
// checks).
func removeOrphan(path string, roots []string, pm vhd.PathMap, dryRun bool, gone map[string]bool) error {
	l, err := lock.File(path)
	if err != nil {
		return inUse(err)
	}
	defer l.Release()
	if js, err := journal.Involving(path); err != nil {
		return err
	} else if len(js) > 0 {
		return busyError(js[0])
	}
	st, err := Discover(roots, []string{path}, pm, nil)
	if err != nil {
		return err
	}
	// Never accepted here: the orphan may be what such a configuration
	// uses now, and removing it would lose its data.
	if _, err := st.consistent(path, nil, false); err != nil {
		return err
	}
	// gone: (a dry run's) removals before this one.
	if err := st.removalDoubt(canon(path), gone, ""); err != nil {
		return err
	}
	l.Release()
	if dryRun {
		return nil
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	return fsutil.SyncDir(path)
}
