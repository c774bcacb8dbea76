package merge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/hvsnap/hvsnap/internal/fsutil"
	"github.com/hvsnap/hvsnap/internal/journal"
	"github.com/hvsnap/hvsnap/internal/lock"
	"github.com/hvsnap/hvsnap/internal/progress"
	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vhd"
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
	Kind   string `json:"kind"` // "merge", "remove-orphan"
	VM     string `json:"vm,omitempty"`
	Child  string `json:"child"`
	Parent string `json:"parent,omitempty"`
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
	lockPath := filepath.Join(roots[0], LockName)
	if !o.DryRun {
		f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("cleanup: %w", err)
		}
		f.Close()
		l, err := lock.File(lockPath)
		if err != nil {
			if errors.Is(err, lock.ErrInUse) {
				return nil, fmt.Errorf("%w on %s (lock file %s); try again when it ends", ErrCleanupRunning, roots[0], lockPath)
			}
			return nil, err
		}
		defer l.Release()
	}
	res := &CleanupResult{Schema: PlanSchema, Roots: roots, DryRun: o.DryRun, Actions: []Action{}}
	tried := map[string]bool{} // child paths already handled (done, planned, skipped)
	for n := 0; n < o.MaxActions; n++ {
		rp, err := space.Analyze(context.Background(), roots, space.Options{PathMap: o.PathMap, Volumes: o.Volumes, Now: o.Now})
		if err != nil {
			return res, err
		}
		act, ok := nextAction(rp, o, tried)
		if !ok {
			break
		}
		tried[act.Child] = true
		runAction(&act, roots, o, rep)
		res.Actions = append(res.Actions, act)
		switch act.Status {
		case "done", "planned":
			res.Done++
			res.Freed += act.Freed
		case "needs-space":
			res.NeedsSpace++
		}
	}
	return res, nil
}

// nextAction picks the next merge-pending link (or orphan) to handle.
func nextAction(rp *space.Report, o CleanupOptions, tried map[string]bool) (Action, bool) {
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
		for _, f := range rp.Findings {
			if f.Code != space.FindOrphan || len(f.Paths) != 1 {
				continue // only leaves; a subtree goes leaf by leaf
			}
			d := disks[f.Paths[0]]
			if d == nil || tried[d.Path] || len(d.Children) > 0 || o.Now.Sub(d.ModTime) < o.OlderThan {
				continue
			}
			return Action{Kind: "remove-orphan", Child: d.Path, Parent: d.Parent}, true
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

func runAction(a *Action, roots []string, o CleanupOptions, rep progress.Reporter) {
	a.ChildSize, a.ChildID = identity(a.Child, o.PathMap)
	switch a.Kind {
	case "remove-orphan":
		a.Freed = allocatedBytes(a.Child)
		if o.DryRun {
			a.Status = "planned"
			return
		}
		if err := removeOrphan(a.Child, roots, o.PathMap); err != nil {
			a.Status, a.Reason = "skipped", err.Error()
			return
		}
		a.Status = "done"
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
			return
		}
		if _, err := Run(p, mo, rep); err != nil {
			a.Status, a.Reason = "failed", err.Error()
			if errors.Is(err, ErrNoSpace) {
				a.Status = "needs-space"
			}
			return
		}
		a.ParentSizeAfter, a.ParentIDAfter = identity(a.Parent, o.PathMap)
		a.Status = "done"
	}
}

// removeOrphan removes a differencing leaf nothing depends on, under a lock
// and after re-checking that no disk names it as parent.
func removeOrphan(path string, roots []string, pm vhd.PathMap) error {
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
	c := canon(path)
	if kids := append(st.Children[c], st.Broken[c]...); len(kids) > 0 {
		return refused(path, "other disks depend on it: %v", kids)
	}
	if uses := st.uses(c); len(uses) > 0 {
		return refused(path, "a configuration names it: %s", uses[0].cfg.Path)
	}
	l.Release()
	if err := os.Remove(path); err != nil {
		return err
	}
	return fsutil.SyncDir(path)
}
