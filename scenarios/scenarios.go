// Package scenarios turns the storage model of a Hyper-V store into the
// situations the Hyper-V snapshot FAQ documents — a VM paused-critical
// because the volume of its differencing disks is full, space not reclaimed
// because a merge is pending, a merge that cannot fit (0x80070070), deleted
// .avhd(x) files, a parent expanded under its checkpoints, checkpoints kept
// as backups, deep chains, saved-state files — each with its evidence and a
// plan of numbered steps with the exact hvsnap commands for this store.
//
// Detectors read the space model (space.Analyze) and ask the merge planner
// (merge.PlanMerge) what a merge needs and whether it is refused; they
// change nothing. Runbooks are the plans of the detections; steps are either
// hvsnap commands (run by the CLI), small engine actions hvsnap performs
// itself (clearing a config flag after the merge it announced, pointing a
// VM's drive at a new disk, moving unusable files aside — never deleting
// them), or manual steps for the Hyper-V host. The lab (lab.go) builds a
// store for each scenario on real small volumes.
package scenarios

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hvsnap/hvsnap/internal/progress"
	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vhd"
)

// Schema is the version of Diagnosis's JSON.
const Schema = 1

// Scenario identifiers.
const (
	PausedCritical  = "paused-critical"  // volume of the differencing disks full or below their growth
	MergePending    = "merge-pending"    // space not reclaimed: a deleted checkpoint's merge has not run
	MergeCannotFit  = "merge-cannot-fit" // a merge needs more than its volume has free (0x80070070)
	BrokenChain     = "broken-chain"     // a deleted or missing .avhd(x), or a parent whose identity differs
	ExpandedParent  = "expanded-parent"  // a parent's virtual size changed under its checkpoints
	OldCheckpoints  = "old-checkpoints"  // checkpoints kept for months, used as backups
	DeepChain       = "deep-chain"       // too many differencing disks in a chain
	SavedState      = "saved-state"      // saved VM memory files holding space
	OrphanedDisks   = "orphaned-disks"   // differencing disks nothing uses
	SeverityCrit    = "critical"
	SeverityWarning = "warning"
	SeverityInfo    = "info"
)

// FAQ warnings, quoted in the plans where they apply.
const (
	WarnNotBackups = "Checkpoints are not backups: a checkpoint is only the changes since the disk below it; if that disk (or any disk between) is lost or damaged, every checkpoint above it is lost too. Keep real backups (hvsnap export makes a standalone, verified copy)."
	WarnNoExpand   = "Do not expand (or shrink) a virtual disk that has checkpoints: its differencing disks were made for the old size. Delete (merge) the checkpoints first, then resize the merged disk."
	WarnNoDelete   = "Do not delete .avhd/.avhdx files directly, not even to free space: each holds every change since its checkpoint, and every disk above it becomes unreadable. Delete checkpoints in Hyper-V, or let hvsnap merge them."
)

// Info describes a scenario (hvsnap lab list, runbook help).
type Info struct {
	ID      string `json:"id"`
	Title   string `json:"title"`
	Summary string `json:"summary"`
}

// Catalog lists every scenario, most urgent first.
func Catalog() []Info {
	return []Info{
		{PausedCritical, "VM paused-critical / paused risk", "the volume holding a VM's differencing disks (.avhd/.avhdx, which may not be the volume of its .vhd/.vhdx) is full or has less free space than those disks can still grow: Hyper-V pauses the VM"},
		{MergeCannotFit, "merge cannot fit (0x80070070)", "a merge (deleting a checkpoint) needs more free space than its volume has: it fails with 0x80070070, \"There is not enough space on the disk\"; relocate the VM to a volume with room and merge there"},
		{BrokenChain, "deleted or missing .avhd(x): broken chain", "a differencing disk's parent is missing (deleted by hand, moved) or is not the file it was made from"},
		{ExpandedParent, "expanded parent", "a disk was expanded (or shrunk) while checkpoints depended on it: its differencing disks no longer match"},
		{MergePending, "space not reclaimed: merge pending", "checkpoints were deleted but their disks were not merged yet (the config flag, or checkpoint disks no checkpoint owns in a live chain)"},
		{OldCheckpoints, "old checkpoints used as backups", "checkpoints kept for months: the chain above them keeps growing, and they are not backups"},
		{DeepChain, "deep checkpoint chain", "a drive reads through many differencing disks: slower reads, longer merges"},
		{SavedState, "saved-state files", "saved VM memory (.bin/.vsv/.vmrs) holding RAM-sized space"},
		{OrphanedDisks, "orphaned differencing disks", "differencing disks no VM or checkpoint uses and no used disk depends on"},
	}
}

// Known reports whether id is a scenario of the catalog.
func Known(id string) bool {
	for _, s := range Catalog() {
		if s.ID == id {
			return true
		}
	}
	return false
}

// Options control Diagnose.
type Options struct {
	PathMap    vhd.PathMap
	Thresholds space.Thresholds // zero: space.DefaultThresholds()
	Volumes    space.VolumeSource
	Now        time.Time
	// BackupDir: where plans export checkpoints before they are deleted
	// ("" → hvsnap-backups on the volume with the most room outside the
	// store, or a placeholder).
	BackupDir string
	// RelocateTo: the folder plans relocate VMs to ("" → hvsnap-relocated
	// on the space model's first relocation target).
	RelocateTo string
	// ExtraRoots are scanned by the final check of relocation plans (the
	// relocation targets); Diagnose adds RelocateTo.
	Progress progress.Reporter
}

// Diagnosis is what Diagnose found.
type Diagnosis struct {
	Schema      int          `json:"schema"`
	GeneratedAt time.Time    `json:"generated_at"`
	Roots       []string     `json:"roots"`
	Worst       string       `json:"worst"` // "ok", "info", "warning", "critical"
	Detections  []*Detection `json:"detections"`
	// Unfinished: hvsnap operations left unfinished in the store (their
	// journals), each with its resume command: finish them before following
	// any plan, whose merges are refused until then.
	Unfinished []string `json:"unfinished_operations"`
	// Report is the space model the detections come from.
	Report *space.Report `json:"-"`
}

// Detection is one scenario found in the store.
type Detection struct {
	Scenario string   `json:"scenario"`
	Severity string   `json:"severity"`
	Title    string   `json:"title"`
	Summary  string   `json:"summary"`
	VMs      []string `json:"vms,omitempty"`
	Volumes  []string `json:"volumes,omitempty"`
	// Evidence: files, sizes, volumes, IDs.
	Evidence []Evidence `json:"evidence"`
	// Plan: numbered steps with exact commands.
	Plan []Step `json:"plan"`
	// Warnings: the FAQ's warnings that apply, and what not to do.
	Warnings []string `json:"warnings,omitempty"`
	// Findings: the space findings (codes) this detection explains.
	Findings []string `json:"findings"`
}

// Evidence is one fact behind a detection.
type Evidence struct {
	What   string `json:"what"`
	Path   string `json:"path,omitempty"`
	Volume string `json:"volume,omitempty"`
	Bytes  int64  `json:"bytes,omitempty"`
	ID     string `json:"id,omitempty"`
}

func sevRank(s string) int {
	switch s {
	case SeverityCrit:
		return 3
	case SeverityWarning:
		return 2
	case SeverityInfo:
		return 1
	}
	return 0
}

// SeverityRank orders severities: "" or "ok" 0, info 1, warning 2,
// critical 3.
func SeverityRank(s string) int { return sevRank(s) }

// Diagnose analyzes roots and returns the scenarios found. It writes
// nothing.
func Diagnose(ctx context.Context, roots []string, o Options) (*Diagnosis, error) {
	rep, err := space.Analyze(ctx, roots, space.Options{PathMap: o.PathMap, Thresholds: o.Thresholds,
		Volumes: o.Volumes, Now: o.Now, Progress: o.Progress})
	if err != nil {
		return nil, err
	}
	return FromReport(rep, o), nil
}

// FromReport runs the detectors over a space model.
func FromReport(rep *space.Report, o Options) *Diagnosis {
	d := &detector{o: o, rep: rep, disks: map[string]*space.Disk{}, vms: map[string]*space.VM{}}
	for _, x := range rep.Disks {
		d.disks[x.Path] = x
	}
	for _, v := range rep.VMs {
		d.vms[v.Name] = v
	}
	d.run()
	dg := &Diagnosis{Schema: Schema, GeneratedAt: rep.GeneratedAt, Roots: rep.Roots, Worst: "ok",
		Detections: append([]*Detection{}, d.out...), Unfinished: []string{}, Report: rep}
	for _, f := range rep.Findings {
		if f.Code == space.FindUnfinishedOp {
			dg.Unfinished = append(dg.Unfinished, f.Message)
		}
	}
	order := map[string]int{}
	for i, c := range Catalog() {
		order[c.ID] = i
	}
	sort.SliceStable(dg.Detections, func(i, j int) bool {
		a, b := dg.Detections[i], dg.Detections[j]
		if sevRank(a.Severity) != sevRank(b.Severity) {
			return sevRank(a.Severity) > sevRank(b.Severity)
		}
		return order[a.Scenario] < order[b.Scenario]
	})
	for _, x := range dg.Detections {
		for i := range x.Plan {
			x.Plan[i].N = i + 1
		}
		if sevRank(x.Severity) > sevRank(dg.Worst) {
			dg.Worst = x.Severity
		}
	}
	return dg
}

// Select returns the detections of scenario (all when ""), for the VM named
// vmName when not "".
func (dg *Diagnosis) Select(scenario, vmName string) []*Detection {
	var out []*Detection
	for _, x := range dg.Detections {
		if scenario != "" && x.Scenario != scenario {
			continue
		}
		if vmName != "" && !containsFold(x.VMs, vmName) {
			continue
		}
		out = append(out, x)
	}
	return out
}

func containsFold(xs []string, s string) bool {
	for _, x := range xs {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// vmDir is the VM's folder: the folder above `Virtual Machines`.
func vmDir(configPath string) string {
	dir := filepath.Dir(configPath)
	if strings.EqualFold(filepath.Base(dir), "Virtual Machines") {
		return filepath.Dir(dir)
	}
	return dir
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

// Human renders bytes with binary units ("35.2 GiB").
func Human(n int64) string { return human(n) }
