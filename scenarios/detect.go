package scenarios

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hvsnap/hvsnap/merge"
	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

type detector struct {
	o     Options
	rep   *space.Report
	disks map[string]*space.Disk
	vms   map[string]*space.VM
	out   []*Detection
	// cannotFit: volumes already explained by a VM's merge that cannot fit.
	cannotFit map[string]bool
}

// link is one pending merge: Child into Parent.
type link struct {
	child, parent *space.Disk
	plan          *merge.Plan
	refused       error
	noSpace       *merge.NoSpaceError
}

func (d *detector) run() {
	d.cannotFit = map[string]bool{}
	d.merges() // before paused: a cannot-fit explains its volume
	d.paused()
	d.broken()
	d.expanded()
	d.old()
	d.deep()
	d.savedState()
	d.orphans()
}

func (d *detector) add(x *Detection) {
	if x.Evidence == nil {
		x.Evidence = []Evidence{}
	}
	if x.Plan == nil {
		x.Plan = []Step{}
	}
	if x.Findings == nil {
		x.Findings = []string{}
	}
	d.out = append(d.out, x)
}

// ---- command pieces --------------------------------------------------

func (d *detector) pmArgs() []string {
	var a []string
	for _, m := range d.o.PathMap {
		a = append(a, "--path-map", m.String())
	}
	return a
}

func (d *detector) rootArgs() []string {
	var a []string
	for _, r := range d.rep.Roots {
		a = append(a, "--root", r)
	}
	return a
}

func sizeArg(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n%u.m == 0 && n >= u.m {
			return fmt.Sprintf("%d%s", n/u.m, u.s)
		}
	}
	return fmt.Sprint(n)
}

// thresholdArgs: the diagnose flags for thresholds that are not defaults.
func (d *detector) thresholdArgs() []string {
	th, def := d.rep.Thresholds, space.DefaultThresholds()
	var a []string
	if th.CriticalFree != def.CriticalFree {
		a = append(a, "--critical-free", sizeArg(th.CriticalFree))
	}
	if th.WarningFree != def.WarningFree {
		a = append(a, "--warning-free", sizeArg(th.WarningFree))
	}
	if th.DeepChain != def.DeepChain {
		a = append(a, "--deep-chain", fmt.Sprint(th.DeepChain))
	}
	if th.OldCheckpointAge != def.OldCheckpointAge {
		a = append(a, "--old-checkpoint", fmt.Sprintf("%ds", th.OldCheckpointAge))
	}
	if th.SavedStateMin != def.SavedStateMin {
		a = append(a, "--saved-state-min", sizeArg(th.SavedStateMin))
	}
	return a
}

// diagnoseStep re-checks the store (and extra roots, e.g. where VMs moved).
func (d *detector) diagnoseStep(title string, extra ...string) Step {
	args := append([]string{"diagnose"}, d.pmArgs()...)
	args = append(args, d.thresholdArgs()...)
	args = append(args, d.rep.Roots...)
	for _, e := range extra {
		if !containsPath(d.rep.Roots, e) {
			args = append(args, e)
		}
	}
	return checkStep(title, args...)
}

// containsPath: p is one of xs or inside one of them.
func containsPath(xs []string, p string) bool {
	for _, x := range xs {
		if rel, err := filepath.Rel(filepath.Clean(x), filepath.Clean(p)); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

func (d *detector) mergeStep(l *link) Step {
	title := fmt.Sprintf("merge %s into %s", filepath.Base(l.child.Path), filepath.Base(l.parent.Path))
	if l.plan != nil && len(l.plan.Steps) > 0 {
		s := l.plan.Steps[0]
		title += fmt.Sprintf(" (writes %s, %s grows by %s on %s, frees %s)", human(l.plan.CopyBytes),
			filepath.Base(l.parent.Path), human(s.Growth), orDash(s.ParentVolume), human(s.FreedBytes))
	}
	args := append([]string{"merge", "--yes"}, d.pmArgs()...)
	args = append(args, d.rootArgs()...)
	args = append(args, l.child.Path)
	return runStep(title, args...)
}

// relocateTarget: where plans move VMs of volume mount (RelocateTo, else
// the model's first relocation target).
func (d *detector) relocateTarget(mount string) string {
	if d.o.RelocateTo != "" {
		return d.o.RelocateTo
	}
	for _, v := range d.rep.Volumes {
		if v.Mount == mount {
			for _, t := range v.RelocationTargets {
				if usableTarget(t) {
					return filepath.Join(t, "hvsnap-relocated")
				}
			}
		}
	}
	return ""
}

// usableTarget: not a file system of the host's runtime state (see
// space.SystemMount).
func usableTarget(mount string) bool { return !space.SystemMount(mount) }

func (d *detector) relocateStep(v *space.VM, target string, mergeToo, back bool) Step {
	args := []string{"relocate", vmDir(v.ConfigPath), "--to", target}
	what := "relocate VM " + v.Name + " to " + target
	if mergeToo {
		args = append(args, "--merge")
		what += ", merge its pending checkpoint disks there"
	}
	if back {
		args = append(args, "--back")
		what += ", and move it back once its volume has room for it (checked)"
	}
	args = append(args, d.pmArgs()...)
	args = append(args, "--yes")
	return runStep(what+"; the source is removed only after the copy verifies", args...)
}

func (d *detector) volume(m string) *space.Volume {
	for _, v := range d.rep.Volumes {
		if v.Mount == m {
			return v
		}
	}
	return nil
}

func (d *detector) windowsPath(local string) string {
	if w, ok := d.o.PathMap.ToWindows(local); ok {
		return w
	}
	return local
}

// chain returns the disk at p and its ancestors, leaf first.
func (d *detector) chain(p string) []*space.Disk {
	var out []*space.Disk
	seen := map[string]bool{}
	for x := d.disks[p]; x != nil && !seen[x.Path]; x = d.disks[x.Parent] {
		seen[x.Path] = true
		out = append(out, x)
		if x.Parent == "" {
			break
		}
	}
	return out
}

func (d *detector) findings(code string) []space.Finding {
	var out []space.Finding
	for _, f := range d.rep.Findings {
		if f.Code == code {
			out = append(out, f)
		}
	}
	return out
}

func splitVMs(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ", ") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
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

// ---- merges: pending, cannot fit --------------------------------------

// pendingLinks: the VM's pending merges (chain evidence), deepest child
// first (so every command still names an existing disk when it runs).
func (d *detector) pendingLinks(v *space.VM) []*link {
	var out []*link
	seen := map[string]bool{}
	for _, f := range d.findings(space.FindMergePending) {
		if f.VM != v.Name || f.Evidence["source"] != "chain" {
			continue
		}
		c, _ := f.Evidence["child"].(string)
		p, _ := f.Evidence["parent"].(string)
		if d.disks[c] == nil || d.disks[p] == nil || seen[c] {
			continue
		}
		seen[c] = true
		out = append(out, &link{child: d.disks[c], parent: d.disks[p]})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].child.Depth > out[j].child.Depth })
	return out
}

func (d *detector) planLinks(ls []*link) {
	for _, l := range ls {
		o := &merge.Options{PathMap: d.o.PathMap, Roots: d.rep.Roots, Volumes: d.o.Volumes}
		p, err := merge.PlanMerge(l.child.Path, o)
		if err != nil {
			l.refused = err
			continue
		}
		l.plan = p
		var ns *merge.NoSpaceError
		if err := p.CheckSpace(o); errors.As(err, &ns) {
			l.noSpace = ns
		}
	}
}

func (d *detector) merges() {
	for _, v := range d.rep.VMs {
		ls := d.pendingLinks(v)
		if len(ls) == 0 && !v.DiskMergePending {
			continue
		}
		d.planLinks(ls)
		var short *link
		for _, l := range ls {
			if l.noSpace != nil && short == nil {
				short = l
			}
		}
		if short != nil {
			d.cannotFitVM(v, ls, short)
			continue
		}
		d.pendingVM(v, ls)
	}
	// A volume where deleting checkpoints would not fit (no merge pending
	// yet): warn before someone deletes them.
	for _, f := range d.findings(space.FindMergeNoSpace) {
		if d.cannotFit[f.Volume] {
			continue
		}
		vol := d.volume(f.Volume)
		if vol == nil {
			continue
		}
		var who []*space.VM
		for _, v := range d.rep.VMs {
			if v.MergeNeed > vol.Free && d.baseOn(v, vol.Mount) {
				who = append(who, v)
			}
		}
		x := &Detection{Scenario: MergeCannotFit, Severity: SeverityWarning, Volumes: []string{vol.Mount},
			Title:    "deleting checkpoints on " + vol.Mount + " would fail (0x80070070)",
			Summary:  fmt.Sprintf("merging the checkpoints of the VMs on %s needs up to %s, only %s is free: deleting a checkpoint there would fail with 0x80070070 (not enough space on the disk)", vol.Mount, human(vol.MergeNeed), human(vol.Free)),
			Findings: []string{space.FindMergeNoSpace}, Warnings: []string{WarnNoDelete, WarnNotBackups}}
		x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("volume %s: %s free, largest merge need %s", vol.Mount, human(vol.Free), human(vol.MergeNeed)), Volume: vol.Mount, Bytes: vol.MergeNeed})
		for _, v := range who {
			x.VMs = append(x.VMs, v.Name)
			x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("VM %s: collapsing its checkpoints needs %s on %s", v.Name, human(v.MergeNeed), vol.Mount), Path: v.ConfigPath, ID: v.ID, Bytes: v.MergeNeed})
		}
		target := d.relocateTarget(vol.Mount)
		for _, v := range who {
			if target == "" {
				x.Plan = append(x.Plan, manualStep(fmt.Sprintf("no mounted volume has room for VM %s (%s plus %s to merge): attach one, then run this runbook again with --to DIR", v.Name, human(v.Allocated), human(v.MergeNeed)), ""))
				continue
			}
			x.Plan = append(x.Plan, d.relocateStep(v, target, false, false))
		}
		if target != "" {
			x.Plan = append(x.Plan, d.diagnoseStep("check the store again, with the relocated VMs", target))
		}
		d.add(x)
	}
}

func (d *detector) baseOn(v *space.VM, mount string) bool {
	for _, t := range v.Chains {
		if x := d.disks[t.Path]; x != nil && x.Volume == mount {
			return true
		}
	}
	return false
}

func (d *detector) linkEvidence(x *Detection, ls []*link) {
	for _, l := range ls {
		e := Evidence{Path: l.child.Path, Volume: l.parent.Volume}
		switch {
		case l.refused != nil:
			e.What = fmt.Sprintf("%s (%s) is still to be merged into %s, but the merge is refused: %v", l.child.Path, human(l.child.Allocated), l.parent.Path, l.refused)
		case l.plan != nil && len(l.plan.Steps) > 0:
			s := l.plan.Steps[0]
			free := int64(-1)
			for _, vn := range l.plan.Volumes {
				if vn.Mount == s.ParentVolume {
					free = vn.Free
				}
			}
			e.What = fmt.Sprintf("%s (%s on %s) no checkpoint names: still to be merged into %s; the merge frees %s and needs %s on %s (%s free)",
				l.child.Path, human(l.child.Allocated), orDash(l.child.Volume), l.parent.Path, human(s.FreedBytes), human(s.Growth), orDash(s.ParentVolume), human(max(free, 0)))
			e.Bytes = s.Growth
		}
		x.Evidence = append(x.Evidence, e)
	}
}

func (d *detector) pendingVM(v *space.VM, ls []*link) {
	x := &Detection{Scenario: MergePending, Severity: SeverityWarning, VMs: []string{v.Name},
		Title:    "space not reclaimed: VM " + v.Name + " has a pending merge",
		Findings: []string{space.FindMergePending}, Warnings: []string{WarnNoDelete}}
	var frees, needs int64
	for _, l := range ls {
		if l.plan != nil && len(l.plan.Steps) > 0 {
			frees += l.plan.Steps[0].FreedBytes
			needs = max(needs, l.plan.Steps[0].Growth)
		}
		x.Volumes = appendUniq(x.Volumes, l.parent.Volume)
	}
	if v.DiskMergePending {
		x.Evidence = append(x.Evidence, Evidence{What: "its configuration says a deleted checkpoint's merge has not run (global_settings/disk_merge_pending = True)", Path: v.ConfigPath, ID: v.ID})
	}
	d.linkEvidence(x, ls)
	refused := false
	for _, l := range ls {
		if l.refused != nil {
			refused = true
		}
	}
	switch {
	case len(ls) == 0:
		x.Summary = fmt.Sprintf("VM %s's configuration says a merge is pending, but every differencing disk in its chains is named by the VM or a checkpoint: nothing is left to merge (the merge already ran); the flag is stale", v.Name)
		if d.missingDisks(v) {
			x.Summary += "; some of its disks are missing, so the flag is left alone"
			x.Plan = append(x.Plan, manualStep("resolve the missing disks first (see the broken-chain scenario)", ""))
		} else {
			x.Plan = append(x.Plan, d.clearFlagStep(v))
		}
	case refused:
		x.Summary = fmt.Sprintf("VM %s: deleted checkpoints left %d disk(s) to merge (%s to free), but hvsnap refuses at least one merge (see the evidence)", v.Name, len(ls), human(frees))
	default:
		x.Summary = fmt.Sprintf("VM %s: deleted checkpoints left %d disk(s) in its live chain that still have to be merged: the merges free %s and need at most %s on the parent's volume, which has room", v.Name, len(ls), human(frees), human(needs))
	}
	if len(ls) > 0 {
		for _, l := range ls {
			if l.refused == nil {
				x.Plan = append(x.Plan, d.mergeStep(l))
			} else {
				x.Plan = append(x.Plan, manualStep(fmt.Sprintf("the merge of %s is refused: %v", l.child.Path, l.refused), ""))
			}
		}
		if v.DiskMergePending {
			x.Plan = append(x.Plan, d.clearFlagStep(v))
		}
	}
	x.Plan = append(x.Plan, d.diagnoseStep("check the store again"))
	d.add(x)
}

func (d *detector) missingDisks(v *space.VM) bool {
	for _, dr := range v.Drives {
		if !dr.Exists {
			return true
		}
	}
	return false
}

func (d *detector) clearFlagStep(v *space.VM) Step {
	if v.ConfigKind != vm.KindXML {
		return manualStep("VMCX configurations are never written by hvsnap: Hyper-V clears disk_merge_pending itself when it finds the chain merged (start the VM once)", "")
	}
	return Step{Kind: StepAction, Action: "clear-merge-pending", Config: v.ConfigPath,
		Title:   "the merges the flag announced are done: set disk_merge_pending to False in the VM's configuration (done by hvsnap when executing)",
		Command: "(hvsnap: set global_settings/disk_merge_pending to False in " + v.ConfigPath + ")"}
}

func (d *detector) cannotFitVM(v *space.VM, ls []*link, short *link) {
	ns := short.noSpace
	d.cannotFit[ns.Mount] = true
	x := &Detection{Scenario: MergeCannotFit, Severity: SeverityCrit, VMs: []string{v.Name}, Volumes: []string{ns.Mount},
		Title:    "merge cannot fit (0x80070070): VM " + v.Name,
		Findings: []string{space.FindMergePending, space.FindMergeNoSpace}, Warnings: []string{WarnNoDelete}}
	x.Summary = fmt.Sprintf("VM %s has %d pending merge(s); merging %s into %s needs %s free on %s, which has %s: it fails with 0x80070070 (not enough space on the disk). Move the VM to a volume with room, merge it there, and move it back once its volume has room",
		v.Name, len(ls), filepath.Base(short.child.Path), filepath.Base(short.parent.Path), human(ns.Need), ns.Mount, human(ns.Free))
	if v.DiskMergePending {
		x.Evidence = append(x.Evidence, Evidence{What: "its configuration says a deleted checkpoint's merge has not run (disk_merge_pending = True)", Path: v.ConfigPath, ID: v.ID})
	}
	d.linkEvidence(x, ls)
	x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("volume %s: %s free; the merge needs %s (its growth plus a %s margin)", ns.Mount, human(ns.Free), human(ns.Need), human(merge.DefaultMargin)), Volume: ns.Mount, Bytes: ns.Need})
	var room []string
	for _, r := range ns.Room {
		if usableTarget(r.Mount) && len(room) < 5 {
			room = append(room, fmt.Sprintf("%s (%s free)", r.Mount, human(r.Free)))
		}
	}
	if len(room) > 0 {
		x.Evidence = append(x.Evidence, Evidence{What: "volumes with room for the VM and its merge: " + strings.Join(room, ", ")})
	}
	target := d.o.RelocateTo
	for _, r := range ns.Room {
		if target == "" && usableTarget(r.Mount) {
			target = filepath.Join(r.Mount, "hvsnap-relocated")
		}
	}
	if target == "" {
		target = d.relocateTarget(ns.Mount)
	}
	if target == "" {
		x.Plan = append(x.Plan, manualStep(fmt.Sprintf("no mounted volume has room for VM %s and its merge (%s plus %s): attach one, then run this runbook again with --to DIR", v.Name, human(v.Allocated), human(ns.Need)), ""))
	} else {
		x.Plan = append(x.Plan, d.relocateStep(v, target, true, true))
		if v.DiskMergePending {
			// relocate --back brings back the configuration it merged; the
			// flag is cleared where the VM ends up (its original folder).
			x.Plan = append(x.Plan, d.clearFlagStep(v))
		}
		x.Plan = append(x.Plan, d.diagnoseStep("check the store again (and the relocation target)", target))
	}
	d.add(x)
}

func appendUniq(xs []string, s string) []string {
	if s == "" {
		return xs
	}
	for _, x := range xs {
		if x == s {
			return xs
		}
	}
	return append(xs, s)
}

// ---- paused-critical ------------------------------------------------------

func (d *detector) paused() {
	for _, vol := range d.rep.Volumes {
		var codes []string
		sev := ""
		for _, f := range d.rep.Findings {
			if f.Volume != vol.Mount {
				continue
			}
			switch {
			case f.Code == space.FindPausedRisk:
				codes, sev = appendUniq(codes, f.Code), SeverityCrit
			case f.Code == space.FindLowSpace && f.Severity == space.SevError:
				codes, sev = appendUniq(codes, f.Code), SeverityCrit
			case f.Code == space.FindLowSpace && sev == "":
				codes, sev = appendUniq(codes, f.Code), SeverityWarning
			}
		}
		if sev == "" || (d.cannotFit[vol.Mount] && !contains(codes, space.FindPausedRisk)) {
			continue
		}
		x := &Detection{Scenario: PausedCritical, Severity: sev, Volumes: []string{vol.Mount}, Findings: codes,
			Warnings: []string{WarnNoDelete,
				"If a VM is paused-critical now: free space on " + vol.Mount + " by moving other files away (not its .avhd/.avhdx), resume it, shut it down, then relocate it (hvsnap locks every file it moves: a running VM's disks are refused)."}}
		if sev == SeverityCrit {
			x.Title = "paused-critical: " + vol.Mount + " is too full for the VMs writing to it"
		} else {
			x.Title = "paused risk: " + vol.Mount + " is running low on space"
		}
		x.Summary = fmt.Sprintf("%s has %s free of %s", vol.Mount, human(vol.Free), human(vol.Size))
		if vol.DiffGrowth > vol.Free {
			x.Summary += fmt.Sprintf("; the differencing disks VMs write to there can still grow by %s: when the volume fills, Hyper-V pauses those VMs (paused-critical)", human(vol.DiffGrowth))
		} else {
			x.Summary += fmt.Sprintf(", below the %s at which Hyper-V pauses VMs (critical) / the warning level", human(d.rep.Thresholds.CriticalFree))
		}
		x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("volume %s (%s, %s): size %s, free %s, differencing growth still possible %s, largest merge need %s",
			vol.Mount, orDash(vol.Device), orDash(vol.FSType), human(vol.Size), human(vol.Free), human(vol.DiffGrowth), human(vol.MergeNeed)), Volume: vol.Mount, Bytes: vol.Free})
		// VMs writing differencing disks here first, then any VM with files here.
		var writers, others []*space.VM
		for _, v := range d.rep.VMs {
			writes := false
			for _, dr := range v.Drives {
				if x := d.disks[dr.Path]; x != nil && x.Volume == vol.Mount && x.Type == string(vhd.TypeDifferencing) {
					writes = true
				}
			}
			switch {
			case writes:
				writers = append(writers, v)
			case contains(v.Volumes, vol.Mount):
				others = append(others, v)
			}
		}
		at := writers
		if len(at) == 0 {
			at = others
		}
		for _, v := range at {
			x.VMs = append(x.VMs, v.Name)
			for _, dr := range v.Drives {
				ch := d.chain(dr.Path)
				if len(ch) == 0 {
					continue
				}
				leaf, base := ch[0], ch[len(ch)-1]
				grow := max(leaf.MaxFileSize-leaf.FileSize, 0)
				what := fmt.Sprintf("VM %s (%s), drive %s: writes to %s on %s", v.Name, v.ID, dr.Location, leaf.Path, orDash(leaf.Volume))
				if leaf.Type == string(vhd.TypeDifferencing) {
					what += fmt.Sprintf(" (differencing, %s allocated, can still grow by %s); its base disk %s is on %s", human(leaf.Allocated), human(grow), base.Path, orDash(base.Volume))
					if base.Volume != leaf.Volume {
						what += " — a different volume: the .avhd(x) volume is the one that fills"
					}
				}
				x.Evidence = append(x.Evidence, Evidence{What: what, Path: leaf.Path, Volume: leaf.Volume, Bytes: grow, ID: v.ID})
			}
		}
		var room []string
		for _, t := range vol.RelocationTargets {
			if usableTarget(t) && len(room) < 5 {
				room = append(room, t)
			}
		}
		if len(room) > 0 {
			x.Evidence = append(x.Evidence, Evidence{What: "volumes with room for these VMs (most free first): " + strings.Join(room, ", ")})
		}
		target := d.relocateTarget(vol.Mount)
		for _, v := range at {
			if target == "" {
				x.Plan = append(x.Plan, manualStep(fmt.Sprintf("no mounted volume has room for VM %s (%s): attach one, then run this runbook again with --to DIR", v.Name, human(v.Allocated+v.MergeNeed)), ""))
				continue
			}
			x.Plan = append(x.Plan, d.relocateStep(v, target, len(d.pendingLinks(v)) > 0, false))
		}
		if target != "" {
			x.Warnings = append(x.Warnings, "After relocating: register the VMs from their new folder on the Hyper-V host (hvsnap relocate prints the Import-VM command), then start them.")
			x.Plan = append(x.Plan, d.diagnoseStep("check the store again, with the relocated VMs", target))
		}
		d.add(x)
	}
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// ---- broken chains ----------------------------------------------------------

func (d *detector) broken() {
	type brokenVM struct {
		v     *space.VM
		disks []*space.Disk // disks whose parent is missing or mismatched
		codes []string
	}
	byVM := map[string]*brokenVM{}
	var order []string
	get := func(name string) *brokenVM {
		if b := byVM[name]; b != nil {
			return b
		}
		b := &brokenVM{v: d.vms[name]}
		byVM[name] = b
		order = append(order, name)
		return b
	}
	for _, f := range d.rep.Findings {
		switch f.Code {
		case space.FindMissingParent, space.FindLinkageMismatch:
			if len(f.Paths) == 0 || d.disks[f.Paths[0]] == nil {
				continue
			}
			names := splitVMs(f.VM)
			if len(names) == 0 {
				names = []string{""}
			}
			for _, n := range names {
				b := get(n)
				b.disks = append(b.disks, d.disks[f.Paths[0]])
				b.codes = appendUniq(b.codes, f.Code)
			}
		case space.FindMissingDisk:
			w, _ := f.Evidence["windows_path"].(string)
			if e := strings.ToLower(w); strings.HasSuffix(e, ".avhd") || strings.HasSuffix(e, ".avhdx") {
				b := get(f.VM)
				b.codes = appendUniq(b.codes, f.Code)
			}
		}
	}
	for _, name := range order {
		b := byVM[name]
		d.brokenVM(b.v, name, b.disks, b.codes)
	}
}

// intact: every disk of p's chain opens, resolves and links.
func (d *detector) intact(p string) bool {
	ch := d.chain(p)
	if len(ch) == 0 {
		return false
	}
	for _, x := range ch {
		if x.Error != "" || x.ParentError != "" || !x.LinkageOK {
			return false
		}
	}
	return ch[len(ch)-1].Type != string(vhd.TypeDifferencing)
}

func (d *detector) brokenVM(v *space.VM, name string, disks []*space.Disk, codes []string) {
	x := &Detection{Scenario: BrokenChain, Severity: SeverityCrit, Findings: codes,
		Warnings: []string{WarnNoDelete, WarnNotBackups}}
	if name != "" {
		x.VMs = []string{name}
		x.Title = "broken chain: VM " + name
	} else {
		x.Title = "broken chain (disks no VM configuration names)"
	}
	var missing []string
	var lost int64
	for _, b := range disks {
		x.Volumes = appendUniq(x.Volumes, b.Volume)
		if b.ParentError != "" {
			want := d.expectedParent(b)
			missing = appendUniq(missing, want)
			x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("%s (%s of data, on %s) needs its parent %s, which is missing: %s", b.Path, human(b.DataBytes), orDash(b.Volume), want, b.ParentError), Path: b.Path, Volume: b.Volume, Bytes: b.DataBytes})
		} else {
			x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("%s names %s as its parent, but that file's identity differs (modified, replaced or restored from another time)", b.Path, b.Parent), Path: b.Path, Volume: b.Volume})
		}
		lost += b.DataBytes
	}
	if v == nil {
		x.Summary = "differencing disks whose parent is missing or not the file they were made from"
		x.Plan = append(x.Plan, manualStep("restore the missing parent from a backup to the path it is expected at (see the evidence), then check the chain", ""))
		d.add(x)
		return
	}
	// Checkpoint configurations whose disk is missing or above the gap.
	brokenSet := map[string]bool{}
	for _, b := range disks {
		for _, s := range d.subtree(b.Path) {
			brokenSet[s] = true
		}
	}
	var brokenCps []string
	type cpState struct {
		name, id, disk string
		mtime          time.Time
	}
	var survivors []cpState
	for _, cp := range v.Checkpoints {
		cfg, err := vm.ParseConfig(cp.ConfigPath, &vm.ParseOptions{PathMap: d.o.PathMap})
		if err != nil {
			continue
		}
		bad := false
		for _, dr := range cfg.Disks {
			p := filepath.Clean(dr.LocalPath)
			if !dr.Exists || brokenSet[p] {
				bad = true
				if !dr.Exists {
					missing = appendUniq(missing, orDash(dr.LocalPath))
					x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("checkpoint %q (%s) names %s, which is missing", cp.Name, cp.ID, dr.WindowsPath), Path: cp.ConfigPath, ID: cp.ID})
				}
			} else if d.intact(p) {
				survivors = append(survivors, cpState{cp.Name, cp.ID, p, d.disks[p].ModTime})
			}
		}
		if bad {
			brokenCps = append(brokenCps, cp.ConfigPath)
		}
	}
	for _, dr := range v.Drives {
		if !dr.Exists {
			x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("VM %s's drive %s names %s, which is missing", name, dr.Location, dr.WindowsPath), Path: v.ConfigPath, ID: v.ID})
		}
	}
	sort.SliceStable(survivors, func(i, j int) bool { return survivors[i].mtime.After(survivors[j].mtime) })
	if len(survivors) == 0 {
		x.Summary = fmt.Sprintf("VM %s's disk chain is broken (%s missing) and no checkpoint's chain survives intact: restore the missing file from a backup", name, strings.Join(missing, ", "))
		x.Plan = append(x.Plan, manualStep("restore "+strings.Join(missing, ", ")+" from a backup, the recycle bin or a shadow copy to exactly that path; then the chain reads again", ""))
		x.Plan = append(x.Plan, d.diagnoseStep("check the store again"))
		d.add(x)
		return
	}
	sv := survivors[0]
	x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("newest surviving intact state: checkpoint %q (%s), disk %s, last written %s", sv.name, sv.id, sv.disk, sv.mtime.UTC().Format(time.RFC3339)), Path: sv.disk, ID: sv.id})
	x.Summary = fmt.Sprintf("VM %s's chain is broken: %s is missing. The newest state that survives intact is checkpoint %q (%s). Lost unless the missing file is restored: everything written after that checkpoint — the missing file's data and the %s held by the disks above it, which are unreadable without it",
		name, strings.Join(missing, ", "), sv.name, sv.disk, human(lost))
	x.Warnings = append([]string{"Best fix, nothing lost: restore " + strings.Join(missing, ", ") + " from a backup, the recycle bin or a shadow copy to exactly that path, then run `hvsnap check` on the VM's disk; do that instead of the steps below if you can."}, x.Warnings...)

	// Steps: a new disk on the survivor, the VM's drive pointed at it, the
	// unusable files kept aside.
	ext := ".avhdx"
	if d.disks[sv.disk] != nil && d.disks[sv.disk].Format == string(vhd.FormatVHD) {
		ext = ".avhd"
	}
	stem := strings.TrimSuffix(filepath.Base(sv.disk), filepath.Ext(sv.disk))
	if i := strings.Index(stem, "_"); i > 0 && strings.HasPrefix(strings.ToLower(filepath.Ext(sv.disk)), ".a") {
		stem = stem[:i]
	}
	var drive *space.Drive
	for i := range v.Drives {
		dr := &v.Drives[i]
		if !dr.Exists || brokenSet[dr.Path] {
			drive = dr
			break
		}
	}
	dir := filepath.Dir(sv.disk)
	if drive != nil && drive.Path != "" {
		dir = filepath.Dir(drive.Path)
	}
	newLeaf := filepath.Join(dir, stem+"_"+strings.ToUpper(vhd.NewGUID().String())+ext)
	x.Plan = append(x.Plan, runStep(fmt.Sprintf("create a new differencing disk on %s (checkpoint %q): the VM runs on it from now on", filepath.Base(sv.disk), sv.name),
		append(append([]string{"create"}, d.pmArgs()...), "--parent", sv.disk, newLeaf)...))
	if drive != nil {
		newWin := d.windowsPath(newLeaf)
		if i := strings.LastIndexAny(drive.WindowsPath, `\/`); i >= 0 && filepath.Dir(newLeaf) == filepath.Dir(drive.Path) {
			newWin = drive.WindowsPath[:i+1] + filepath.Base(newLeaf)
		}
		ps := fmt.Sprintf("Set-VMHardDiskDrive -VMName %s -Path %s (drive %s)", psQuote(name), psQuote(newWin), drive.Location)
		if v.ConfigKind == vm.KindXML {
			x.Plan = append(x.Plan, Step{Kind: StepAction, Action: "set-drive", Config: v.ConfigPath, Old: drive.WindowsPath, New: newWin,
				Title:   fmt.Sprintf("point VM %s's drive %s at the new disk (done by hvsnap in the XML configuration; on a host: %s)", name, drive.Location, ps),
				Command: ps})
		} else {
			x.Plan = append(x.Plan, manualStep(fmt.Sprintf("point VM %s's drive %s at the new disk on the Hyper-V host (VMCX is never written by hvsnap)", name, drive.Location), ps))
		}
	}
	var aside []string
	for _, b := range disks {
		aside = append(aside, d.subtree(b.Path)...)
	}
	aside = append(aside, brokenCps...)
	if len(aside) > 0 {
		kept := filepath.Join(vmDir(v.ConfigPath), "hvsnap-kept")
		x.Plan = append(x.Plan, Step{Kind: StepAction, Action: "move-aside", Files: aside, Dir: kept,
			Title:   fmt.Sprintf("keep the unusable files aside in %s (moved and renamed *.hvsnap-kept, never deleted: if the missing file turns up, move them back and run hvsnap reparent): %s", kept, strings.Join(aside, ", ")),
			Command: "mkdir -p " + Quote(kept) + " && mv FILE " + Quote(kept) + "/FILE.hvsnap-kept (each file)"})
	}
	x.Plan = append(x.Plan, checkStep("check the VM's new chain", append(append([]string{"check"}, d.pmArgs()...), newLeaf)...))
	x.Plan = append(x.Plan, d.diagnoseStep("check the store again"))
	d.add(x)
}

// expectedParent: the local path a broken disk's parent locator names.
func (d *detector) expectedParent(b *space.Disk) string {
	im, err := vhd.Open(b.Path, &vhd.Options{ReadOnly: true, PathMap: d.o.PathMap})
	if err != nil {
		return "(its parent)"
	}
	defer im.Close()
	pl := im.Parent()
	if pl == nil {
		return "(its parent)"
	}
	if pl.RelativePath != "" {
		rel := strings.ReplaceAll(pl.RelativePath, `\`, string(filepath.Separator))
		if !filepath.IsAbs(rel) {
			return filepath.Clean(filepath.Join(filepath.Dir(b.Path), rel))
		}
	}
	if pl.AbsolutePath != "" {
		if l, ok := d.o.PathMap.ToLocal(pl.AbsolutePath); ok {
			return l
		}
		return pl.AbsolutePath
	}
	if pl.ParentName != "" {
		return filepath.Join(filepath.Dir(b.Path), filepath.Base(strings.ReplaceAll(pl.ParentName, `\`, "/")))
	}
	return "(its parent)"
}

func (d *detector) subtree(p string) []string {
	var out []string
	seen := map[string]bool{}
	var walk func(string)
	walk = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		out = append(out, p)
		if x := d.disks[p]; x != nil {
			for _, c := range x.Children {
				walk(c)
			}
		}
	}
	walk(p)
	return out
}

// ---- expanded parent ---------------------------------------------------------

func (d *detector) expanded() {
	for _, f := range d.findings(space.FindExpandedParent) {
		if len(f.Paths) < 2 {
			continue
		}
		p, c := d.disks[f.Paths[0]], d.disks[f.Paths[1]]
		if p == nil || c == nil {
			continue
		}
		x := &Detection{Scenario: ExpandedParent, Severity: SeverityCrit, VMs: splitVMs(f.VM), Volumes: []string{p.Volume},
			Title:    "expanded parent: " + filepath.Base(p.Path),
			Findings: []string{f.Code}, Warnings: []string{WarnNoExpand, WarnNoDelete}}
		x.Summary = fmt.Sprintf("%s was resized to %d bytes (%s) while %s depended on it; the differencing disk was made when it was exactly %d bytes (%s). Restore that exact size before using the chain; expand only after the checkpoints are merged",
			p.Path, p.VirtualSize, human(p.VirtualSize), c.Path, c.VirtualSize, human(c.VirtualSize))
		x.Evidence = append(x.Evidence,
			Evidence{What: fmt.Sprintf("parent %s: virtual size %d bytes now", p.Path, p.VirtualSize), Path: p.Path, Volume: p.Volume, Bytes: p.VirtualSize},
			Evidence{What: fmt.Sprintf("child %s: made for a parent of %d bytes (its own virtual size): the size to restore", c.Path, c.VirtualSize), Path: c.Path, Bytes: c.VirtualSize})
		win := d.windowsPath(p.Path)
		x.Plan = append(x.Plan,
			manualStep(fmt.Sprintf("shrink %s back to exactly %d bytes (on the Hyper-V host, VM off; if the guest already extended a partition into the new space, shrink that partition back first)", filepath.Base(p.Path), c.VirtualSize),
				fmt.Sprintf("Resize-VHD -Path %s -SizeBytes %d", psQuote(win), c.VirtualSize)),
			checkStep("check the chain reads again", append(append([]string{"check"}, d.pmArgs()...), c.Path)...),
			d.diagnoseStep("check the store again"))
		d.add(x)
	}
}

// ---- old checkpoints, deep chains --------------------------------------------

type cpDisk struct {
	name, id, config, disk string
	mtime                  time.Time
}

// checkpointsOf: the VM's checkpoints with the disk each names, oldest
// first.
func (d *detector) checkpointsOf(v *space.VM) []cpDisk {
	var out []cpDisk
	for _, cp := range v.Checkpoints {
		for _, p := range cp.Disks {
			if x := d.disks[p]; x != nil {
				out = append(out, cpDisk{cp.Name, cp.ID, cp.ConfigPath, p, x.ModTime})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].mtime.Before(out[j].mtime) })
	return out
}

func (d *detector) backupDir() string {
	if d.o.BackupDir != "" {
		return d.o.BackupDir
	}
	var best *space.Volume
	for _, v := range d.rep.Volumes {
		if best == nil || v.Free > best.Free {
			best = v
		}
	}
	if best != nil {
		return filepath.Join(best.Mount, "hvsnap-backups")
	}
	return "BACKUP_DIR"
}

func (d *detector) exportStep(v *space.VM, cp cpDisk) (Step, bool) {
	dir := filepath.Join(d.backupDir(), v.Name+"-checkpoint-"+cp.id)
	if _, err := os.Stat(dir); err == nil {
		return Step{}, false // exported already
	}
	args := append([]string{"export", "--checkpoint", cp.id, "--to", dir}, d.pmArgs()...)
	args = append(args, vmDir(v.ConfigPath))
	return runStep(fmt.Sprintf("export checkpoint %q as a standalone, verified backup (a real backup, unlike the checkpoint) to %s", cp.name, dir), args...), true
}

func (d *detector) deleteCheckpointsStep(v *space.VM, cps []cpDisk, why string) Step {
	var names, cmds []string
	for _, cp := range cps {
		names = append(names, fmt.Sprintf("%q", cp.name))
		cmds = append(cmds, fmt.Sprintf("Remove-VMCheckpoint -VMName %s -Name %s", psQuote(v.Name), psQuote(cp.name)))
	}
	return manualStep(fmt.Sprintf("%s: delete checkpoint(s) %s in Hyper-V (the VM may run; Hyper-V leaves their disks to merge, which the next steps do when this runbook is run again)", why, strings.Join(names, ", ")),
		strings.Join(cmds, "; "))
}

func (d *detector) mergeSteps(v *space.VM) []Step {
	ls := d.pendingLinks(v)
	d.planLinks(ls)
	var out []Step
	for _, l := range ls {
		if l.refused == nil && l.noSpace == nil {
			out = append(out, d.mergeStep(l))
		}
	}
	if len(out) > 0 && v.DiskMergePending {
		out = append(out, d.clearFlagStep(v))
	}
	return out
}

func (d *detector) old() {
	done := map[string]bool{}
	limit := time.Duration(d.rep.Thresholds.OldCheckpointAge) * time.Second
	for _, f := range d.findings(space.FindOldCheckpoint) {
		v := d.vms[f.VM]
		if v == nil || done[v.Name] {
			continue
		}
		done[v.Name] = true
		now := d.rep.GeneratedAt
		x := &Detection{Scenario: OldCheckpoints, Severity: SeverityWarning, VMs: []string{v.Name}, Volumes: v.Volumes,
			Title:    "old checkpoints used as backups: VM " + v.Name,
			Findings: []string{f.Code}, Warnings: []string{WarnNotBackups, WarnNoDelete}}
		var old []cpDisk
		for _, cp := range d.checkpointsOf(v) {
			if now.Sub(cp.mtime) > limit {
				old = append(old, cp)
				x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("checkpoint %q (%s): its disk %s was last written %d days ago", cp.name, cp.id, cp.disk, int(now.Sub(cp.mtime).Hours()/24)), Path: cp.disk, ID: cp.id})
			}
		}
		for _, p := range f.Paths {
			if x0 := d.disks[p]; x0 != nil && len(old) == 0 {
				x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("%s (no checkpoint names it any more) was last written %d days ago and is still in the chain", p, int(now.Sub(x0.ModTime).Hours()/24)), Path: p})
			}
		}
		x.Summary = fmt.Sprintf("VM %s keeps checkpoints older than %d days: the chain above them keeps growing and every read walks it, and a checkpoint is no backup (it dies with the disks below it)", v.Name, int(limit.Hours()/24))
		for _, cp := range old {
			if s, ok := d.exportStep(v, cp); ok {
				x.Plan = append(x.Plan, s)
			}
		}
		if len(old) > 0 {
			x.Plan = append(x.Plan, d.deleteCheckpointsStep(v, old, "once the backups are made"))
		} else {
			x.Plan = append(x.Plan, d.mergeSteps(v)...)
		}
		x.Plan = append(x.Plan, d.diagnoseStep("check the store again"))
		d.add(x)
	}
}

func (d *detector) deep() {
	done := map[string]bool{}
	for _, f := range d.findings(space.FindDeepChain) {
		v := d.vms[f.VM]
		if v == nil || done[v.Name] {
			continue
		}
		done[v.Name] = true
		depth, _ := f.Evidence["depth"].(int)
		th := d.rep.Thresholds.DeepChain
		x := &Detection{Scenario: DeepChain, Severity: SeverityWarning, VMs: []string{v.Name}, Volumes: v.Volumes,
			Title:    "deep chain: VM " + v.Name,
			Findings: []string{f.Code}, Warnings: []string{WarnNotBackups, WarnNoDelete}}
		x.Summary = fmt.Sprintf("VM %s's drive reads through %d differencing disks (threshold %d): every read walks the chain and merges take longer", v.Name, depth, th)
		if len(f.Paths) > 0 {
			for _, c := range d.chain(f.Paths[0]) {
				x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("%s (%s, %s, %s)", c.Path, c.Type, human(c.Allocated), strings.Join(c.UsedBy, ", ")), Path: c.Path, Volume: c.Volume, Bytes: c.Allocated})
			}
		}
		pending := d.pendingLinks(v)
		left := depth - len(pending)
		if left > th {
			cps := d.checkpointsOf(v)
			n := min(left-th, len(cps))
			x.Plan = append(x.Plan, d.deleteCheckpointsStep(v, cps[:n], fmt.Sprintf("keep at most %d checkpoints in the chain — export first any you need (hvsnap export --checkpoint)", th)))
		} else {
			x.Plan = append(x.Plan, d.mergeSteps(v)...)
		}
		x.Plan = append(x.Plan, d.diagnoseStep("check the store again"))
		d.add(x)
	}
}

// ---- saved state, orphans -------------------------------------------------------

func (d *detector) savedState() {
	byVM := map[string]*Detection{}
	for _, f := range d.findings(space.FindSavedState) {
		x := byVM[f.VM]
		if x == nil {
			x = &Detection{Scenario: SavedState, Severity: SeverityInfo, Title: "saved-state files: VM " + orDash(f.VM),
				Findings: []string{f.Code}}
			if f.VM != "" {
				x.VMs = []string{f.VM}
			}
			byVM[f.VM] = x
			d.add(x)
		}
		x.Volumes = appendUniq(x.Volumes, f.Volume)
		x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("%s: %s of saved memory", strings.Join(f.Paths, ", "), human(f.Bytes)), Path: firstOf(f.Paths), Volume: f.Volume, Bytes: f.Bytes})
	}
	for name, x := range byVM {
		var total int64
		for _, e := range x.Evidence {
			total += e.Bytes
		}
		x.Summary = fmt.Sprintf("VM %s is saved (or a checkpoint keeps its memory): %s of saved memory. It is freed when the VM is started (it resumes from it) or the saved state is discarded, or with the checkpoint it belongs to", orDash(name), human(total))
		x.Warnings = []string{"Do not delete .bin/.vsv/.vmrs files by hand: Hyper-V then cannot start the VM (Remove-VMSavedState discards the state properly)."}
		x.Plan = append(x.Plan,
			manualStep(fmt.Sprintf("start VM %s (it resumes from its saved state and Hyper-V removes the files), or, if the memory state is not needed, discard it (the guest loses its unsaved work)", orDash(name)),
				fmt.Sprintf("Start-VM -Name %s   # or: Remove-VMSavedState -VMName %s", psQuote(name), psQuote(name))),
			d.diagnoseStep("check the store again"))
	}
}

func firstOf(xs []string) string {
	if len(xs) > 0 {
		return xs[0]
	}
	return ""
}

func (d *detector) orphans() {
	fs := d.findings(space.FindOrphan)
	if len(fs) == 0 {
		return
	}
	x := &Detection{Scenario: OrphanedDisks, Severity: SeverityWarning, Title: "orphaned differencing disks",
		Findings: []string{space.FindOrphan}, Warnings: []string{"Before running the plan: make sure no VM on another host or volume uses these disks (an orphan here may belong to a VM whose configuration is not under the scanned roots). --execute --yes takes that as confirmed."}}
	var total int64
	for _, f := range fs {
		x.Volumes = appendUniq(x.Volumes, f.Volume)
		total += f.Bytes
		x.Evidence = append(x.Evidence, Evidence{What: fmt.Sprintf("%s: %s, no VM or checkpoint uses it and no used disk depends on it", strings.Join(f.Paths, ", "), human(f.Bytes)), Path: firstOf(f.Paths), Volume: f.Volume, Bytes: f.Bytes})
	}
	x.Summary = fmt.Sprintf("%d differencing disk(s) nothing uses hold %s", len(fs), human(total))
	args := append([]string{"cleanup", "--orphans"}, d.pmArgs()...)
	x.Plan = append(x.Plan,
		checkStep("see what would be removed", append(append([]string{}, args...), append([]string{"--dry-run"}, d.rep.Roots...)...)...),
		runStep("remove the orphaned leaves (hvsnap re-checks each under a lock right before removing it)", append(args, d.rep.Roots...)...),
		d.diagnoseStep("check the store again"))
	d.add(x)
}
