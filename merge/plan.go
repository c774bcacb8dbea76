package merge

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hvsnap/hvsnap/internal/fsutil"
	"github.com/hvsnap/hvsnap/internal/journal"
	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// PlanSchema is the version of Plan's JSON.
const PlanSchema = 1

// canon is the absolute, symlink-free form of p (p itself when it cannot be
// resolved).
func canon(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	if r, err := filepath.EvalSymlinks(a); err == nil {
		return r
	}
	return a
}

// defaultRoots: the disk's folder, plus the VM folder when the disk sits in
// Hyper-V's "Virtual Hard Disks" folder.
func defaultRoots(disk string) []string {
	dir := filepath.Dir(disk)
	roots := []string{dir}
	if strings.EqualFold(filepath.Base(dir), "Virtual Hard Disks") {
		roots = append(roots, filepath.Dir(dir))
	}
	return roots
}

// Store is what planning knows about the disks around a chain: which disks
// depend on which, and which configurations name them.
type Store struct {
	// Children maps a disk (canonical path) to the differencing disks whose
	// parent resolves to it with a valid linkage.
	Children map[string][]string
	// Broken: differencing disks that resolve to a disk with a linkage
	// mismatch (already broken children).
	Broken map[string][]string
	VMs    []*vm.VM
	// Scanned: whether VM configurations were found at all.
	Scanned bool
	// OrphanCheckpoints: checkpoint configurations no VM was matched to.
	OrphanCheckpoints []*vm.Config
	// Warnings of the scan (unreadable folders or configurations, VMs a
	// host registry lists but that were not found, ...).
	Warnings []vm.Warning
	// parentOf: each scanned differencing disk's resolved parent.
	parentOf map[string]string
	// Unreadable: disk files under the roots that could not be opened
	// (path → why); any of them may be a child of any disk.
	Unreadable map[string]string
	// Unresolved: differencing disks whose parent could not be found, with
	// what their locators say about it.
	Unresolved []UnresolvedChild
}

// UnresolvedChild is a differencing disk whose parent did not resolve.
type UnresolvedChild struct {
	Path string
	// Names: the file names its locator gives for the parent (winBase);
	// Linkage: VHDX parent_linkage(2) (normGUID); ParentID: VHD.
	Names    []string
	Linkage  []string
	ParentID vhd.GUID
}

// Discover scans roots (and the folders of extra) for disks and VM
// configurations.
func Discover(roots []string, extra []string, pm vhd.PathMap, wrap vhd.FileWrapper) (*Store, error) {
	all := append([]string(nil), roots...)
	st, err := vm.Scan(all, vm.ScanOptions{PathMap: pm})
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var disks []string
	add := func(p string) {
		c := canon(p)
		if !seen[c] {
			seen[c] = true
			disks = append(disks, c)
		}
	}
	for _, d := range st.Disks {
		add(d.Path)
	}
	for _, e := range extra {
		ents, err := os.ReadDir(filepath.Dir(e))
		if err != nil {
			continue
		}
		for _, de := range ents {
			if _, ok := vhd.FormatFromExt(de.Name()); ok && !de.IsDir() {
				add(filepath.Join(filepath.Dir(e), de.Name()))
			}
		}
	}
	s := &Store{Children: map[string][]string{}, Broken: map[string][]string{}, VMs: st.VMs, Scanned: len(st.VMs) > 0,
		OrphanCheckpoints: st.OrphanCheckpoints, Warnings: st.Warnings, parentOf: map[string]string{}, Unreadable: map[string]string{}}
	for _, d := range disks {
		im, err := vhd.Open(d, &vhd.Options{ReadOnly: true, PathMap: pm, Wrap: wrap})
		if err != nil {
			// Not a child of anything we can see, but it may be one.
			s.Unreadable[d] = err.Error()
			continue
		}
		loc := im.Parent()
		if loc == nil {
			im.Close()
			continue
		}
		link, err := im.ResolveParent(&vhd.Options{ReadOnly: true, PathMap: pm, Wrap: wrap})
		im.Close()
		if err != nil || link == nil {
			u := UnresolvedChild{Path: d, ParentID: loc.ParentUniqueID}
			for _, n := range []string{loc.RelativePath, loc.AbsolutePath, loc.VolumePath, loc.ParentName} {
				if n != "" {
					u.Names = append(u.Names, winBase(n))
				}
			}
			for _, l := range []string{loc.Linkage, loc.Linkage2} {
				if g := normGUID(l); g != "" {
					u.Linkage = append(u.Linkage, g)
				}
			}
			s.Unresolved = append(s.Unresolved, u)
			continue
		}
		p := canon(link.Path)
		s.parentOf[d] = p
		if link.LinkageOK {
			s.Children[p] = append(s.Children[p], d)
		} else {
			s.Broken[p] = append(s.Broken[p], d)
		}
	}
	for k := range s.Children {
		sort.Strings(s.Children[k])
	}
	return s, nil
}

// consistent refuses to change disk when a configuration found may lack
// its last changes: a VMCX whose replay log holds changes that could not
// be replayed (a damaged or not understood log) or with damaged entries may have a checkpoint, or a
// drive, that uses the disk. A configuration the operator accepted
// (Options.AcceptStale) is not a refusal: it comes back as a note for the
// plan, with what to check on the host afterwards.
// acceptable says whether the refusal may offer --accept-stale-config
// (not for removals, which would lose data).
func (s *Store) consistent(disk string, accept []string, acceptable bool) ([]string, error) {
	var notes []string
	used := map[string]bool{}
	for _, v := range s.VMs {
		for _, c := range v.Configs() {
			if c == nil || !c.PossiblyInconsistent {
				continue
			}
			if !acceptable || !accepted(c.Path, accept) {
				hint := ""
				if acceptable {
					hint = fmt.Sprintf("; where that cannot be done, accept the risk for this file with --accept-stale-config '%s'", c.Path)
				}
				return nil, refused(disk, "%s is a VMCX configuration that may lack its last changes (%s; its replay-log entries are replayed only when every one checks out): it may have checkpoints or drives that use this disk; let Hyper-V open it once on the host (Get-VM), or do this there%s", c.Path, staleWhy(c), hint)
			}
			notes = append(notes, staleNote(v, c))
			used[canon(c.Path)] = true
		}
	}
	for _, a := range accept {
		if acceptable && !used[canon(a)] {
			notes = append(notes, fmt.Sprintf("--accept-stale-config %s: no configuration found here that may lack its last changes has that path; nothing to accept", a))
		}
	}
	return notes, nil
}

// accepted reports whether path is one of the accepted configurations
// (compared in canonical form).
func accepted(path string, accept []string) bool {
	cp := canon(path)
	for _, a := range accept {
		if canon(a) == cp {
			return true
		}
	}
	return false
}

// staleWhy is the reason a configuration may lack its last changes.
func staleWhy(c *vm.Config) string {
	for _, w := range c.Warnings {
		if strings.Contains(w, "possibly inconsistent") || strings.Contains(w, "replay log") {
			return w
		}
	}
	if len(c.Warnings) > 0 {
		return c.Warnings[0]
	}
	return "outstanding replay-log entries or damaged entries"
}

// staleNote is the plan note for an accepted possibly-stale configuration.
func staleNote(v *vm.VM, c *vm.Config) string {
	name := strings.ReplaceAll(v.Config.Name, "'", "''")
	return fmt.Sprintf("%s may lack its last changes (%s); going on as asked (--accept-stale-config): a checkpoint or drive recorded only in those changes is not protected, and configuration updates are computed from what could be read. On the host, before starting the VM, check what it uses: Get-VMHardDiskDrive -VMName '%s'; Get-VMSnapshot -VMName '%s' | Get-VMHardDiskDrive", c.Path, staleWhy(c), name, name)
}

// configUse is one configuration naming a disk.
type configUse struct {
	cfg        *vm.Config
	vmName     string
	drive      vm.DriveRef
	checkpoint bool
}

// what is "VM" or "checkpoint".
func (u configUse) what() string {
	if u.checkpoint {
		return "checkpoint"
	}
	return "VM"
}

func (s *Store) uses(disk string) []configUse {
	var out []configUse
	for _, v := range s.VMs {
		for _, c := range v.Configs() {
			if c == nil {
				continue
			}
			for _, d := range c.Disks {
				if d.LocalPath != "" && canon(d.LocalPath) == disk {
					out = append(out, configUse{cfg: c, vmName: v.Config.Name, drive: d, checkpoint: c.IsCheckpoint})
				}
			}
		}
	}
	return out
}

// PlanMerge plans merging disk into its parent (or o.Into) without
// changing anything. Refusals are returned as errors (ErrRefused,
// ErrBusy, vhd errors for broken chains); lack of space is not an error
// here: see Plan.Volumes and Check.
func PlanMerge(disk string, o *Options) (*Plan, error) {
	if o == nil {
		o = &Options{}
	}
	disk = canon(disk)
	ch, err := vhd.OpenChain(disk, &vhd.Options{ReadOnly: true, PathMap: o.PathMap, Wrap: o.Wrap})
	if err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	defer ch.Close()
	var layers []string
	for _, im := range ch.Layers {
		layers = append(layers, canon(im.Path()))
	}
	if len(layers) < 2 {
		return nil, refused(disk, "not a differencing disk: there is nothing to merge it into")
	}
	k := 1
	if o.Into != "" {
		into := canon(o.Into)
		k = -1
		for i := 1; i < len(layers); i++ {
			if layers[i] == into {
				k = i
			}
		}
		if k < 0 {
			if _, err := os.Stat(o.Into); err != nil {
				return nil, refused(disk, "--into %s: %v", o.Into, err)
			}
			return nil, refused(disk, "%s is not an ancestor of this disk (its chain: %s)", o.Into, strings.Join(layers[1:], " → "))
		}
	}
	// Structural damage (what hvsnap check reports as an error) in any file
	// the merge reads from and writes or removes: refused, so that the
	// damaged file, the only evidence, is not merged as it reads and removed.
	for i := 0; i <= k; i++ {
		if err := refuseDamaged(ch.Layers[i], layers[i], fmt.Sprintf("a merge would carry the damage into %s and remove the evidence", filepath.Base(layers[k]))); err != nil {
			return nil, err
		}
	}
	leaf := ch.Layers[0].Info()
	target := ch.Layers[k].Info()
	if leaf.VirtualSize != target.VirtualSize {
		return nil, refused(disk, "virtual size %d differs from %s (%d): an expanded or shrunk disk in the chain; restore the original size first (hvsnap diagnose)", leaf.VirtualSize, layers[k], target.VirtualSize)
	}
	for i := 0; i < k; i++ {
		if ch.Layers[i].Info().VirtualSize != target.VirtualSize {
			return nil, refused(layers[i], "virtual size differs from the merge target %s", layers[k])
		}
	}
	// Unfinished operations on any file of the chain.
	if js, err := journal.Involving(layers...); err != nil {
		return nil, err
	} else if len(js) > 0 {
		return nil, busyError(js[0])
	}

	var roots []string
	for _, r := range o.Roots {
		roots = append(roots, canon(r))
	}
	if len(roots) == 0 {
		roots = defaultRoots(disk)
	}
	st, err := Discover(roots, layers, o.PathMap, o.Wrap)
	if err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	// A removal is never made on the word of a configuration that may lack
	// its last changes (it may use the disk).
	staleNotes, err := st.consistent(disk, o.AcceptStale, !o.RemoveLeaf)
	if err != nil {
		return nil, err
	}

	p := &Plan{Schema: PlanSchema, Disk: disk, Into: layers[k], Keep: o.Keep, Configs: []ConfigChange{}, Notes: staleNotes, Roots: roots}
	if p.Notes == nil {
		p.Notes = []string{}
	}
	for _, m := range o.PathMap {
		p.PathMap = append(p.PathMap, m.String())
	}
	for i := 0; i <= k; i++ {
		if ch.Layers[i].Info().LogReplayed {
			p.Notes = append(p.Notes, fmt.Sprintf("%s has a dirty VHDX log (an interrupted write): it is replayed onto the file before the merge writes anything", layers[i]))
		}
	}
	if !st.Scanned {
		p.Notes = append(p.Notes, fmt.Sprintf("no VM configuration found under %s: configurations naming these disks cannot be checked or updated (use --root)", strings.Join(roots, ", ")))
	}

	if o.RemoveLeaf {
		if err := planRemoveLeaf(p, st, layers, roots, o); err != nil {
			return nil, err
		}
		if err := p.measure(ch, 1, o); err != nil {
			return nil, err
		}
		return p, nil
	}
	// An unused leaf whose parent cannot take its data is what Hyper-V
	// removes without a merge: the refusals below say how.
	leafHint := ""
	if k == 1 && len(staleNotes) == 0 {
		if owner, err := st.leafRemovable(disk, layers[1], roots); err == nil {
			leafHint = fmt.Sprintf(" %s is a checkpoint disk of %s off its live chain that no disk depends on and no configuration uses: to remove it without merging (discarding its data, as Hyper-V does when it deletes such a checkpoint), run %s", filepath.Base(disk), owner, removeLeafCommand(disk, o))
		}
	}

	// Refusals from configurations: a checkpoint (or another VM) that uses
	// a disk this merge modifies or removes.
	for i := 1; i <= k; i++ {
		for _, u := range st.uses(layers[i]) {
			what := u.what()
			verb := "modifies"
			if i < k {
				verb = "removes"
			}
			advice := ""
			if u.checkpoint {
				advice = " Delete the checkpoint first (Hyper-V: Remove-VMCheckpoint; its merge is then pending and hvsnap can run it)."
			}
			return nil, refused(layers[i], "%s %q (%s, %s) still uses this disk, and the merge %s it: its state would be lost.%s%s",
				what, u.cfg.Name, u.cfg.Path, u.drive.Location(), verb, advice, leafHint)
		}
	}

	// Children, simulated step by step.
	kids := map[string][]string{}
	for kk, v := range st.Children {
		kids[kk] = append([]string(nil), v...)
	}
	// The chain's own links are children too (found by the chain even when
	// the roots did not include a folder).
	for i := 0; i < len(layers)-1; i++ {
		if !contains(kids[layers[i+1]], layers[i]) {
			kids[layers[i+1]] = append(kids[layers[i+1]], layers[i])
		}
	}
	target0 := layers[k]
	for i := k - 1; i >= 0; i-- {
		c := layers[i]
		if others := without(kids[target0], c); len(others) > 0 {
			return nil, refused(target0, "this disk is also the parent of %s: merging %s into it would change what %s (and break their linkage). It is left unmerged; merge %s into another ancestor or delete the other branch first.%s",
				strings.Join(others, ", "), filepath.Base(c), plural(len(others), "that disk shows", "those disks show"), filepath.Base(c), leafHint)
		}
		if len(st.Broken[c]) > 0 {
			p.Notes = append(p.Notes, fmt.Sprintf("%s has children whose linkage does not match it (already broken): %s; they are not re-pointed", c, strings.Join(st.Broken[c], ", ")))
		}
		kids[target0] = append([]string(nil), kids[c]...)
		step := Step{Child: c, Parent: target0, Children: append([]string{}, kids[c]...)}
		for _, gc := range step.Children {
			if fi, err := os.Stat(gc); err == nil {
				if step.ChildrenModTime == nil {
					step.ChildrenModTime = map[string]int64{}
				}
				step.ChildrenModTime[gc] = fi.ModTime().UnixNano()
			}
		}
		delete(kids, c)
		p.Steps = append(p.Steps, step)
	}

	// The disks re-pointed along the way (the merged disks' children) are
	// rewritten too: damage in them is refused like damage in the chain.
	for _, st := range p.Steps {
		for _, c := range st.Children {
			if contains(layers, c) {
				continue
			}
			// The file alone: its link to the chain was resolved by Discover.
			im, err := vhd.Open(c, &vhd.Options{ReadOnly: true, PathMap: o.PathMap, Wrap: o.Wrap})
			if err != nil {
				return nil, fmt.Errorf("merge: %w", err)
			}
			err = refuseDamaged(im, c, "the merge would rewrite its parent link")
			im.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	if o.Keep && len(p.Steps) > 1 {
		return nil, refused(disk, "--keep works for a single step: a kept disk would no longer match its parent once the next disk is merged into it")
	}
	if err := p.measure(ch, k, o); err != nil {
		return nil, err
	}

	// Configurations naming the merged leaf (the chain's top).
	for _, u := range st.uses(layers[0]) {
		if u.checkpoint && u.cfg.Kind != vm.KindXML {
			// hvsnap never writes VMCX, and no cmdlet changes a checkpoint's
			// disk (Set-VMHardDiskDrive -VMName would re-point the running VM).
			// Keeping the file does not help: the VM then writes into the
			// parent, which the kept file reads through.
			return nil, refused(layers[0], "checkpoint %q (%s, %s) is a VMCX configuration that names this disk: hvsnap does not write VMCX and Hyper-V has no command to re-point a checkpoint's disk, so the merge would break the checkpoint. Delete the checkpoint in Hyper-V first (its merge is then pending and hvsnap can run it)",
				u.cfg.Name, u.cfg.Path, u.drive.Location())
		}
		cc := ConfigChange{Config: u.cfg.Path, Kind: u.cfg.Kind, VM: u.vmName, Drive: u.drive.Location(), OldPath: u.drive.WindowsPath}
		cc.NewPath = newWindowsPath(u.drive.WindowsPath, layers[0], target0, o.PathMap)
		if u.cfg.Kind != vm.KindXML {
			cc.Command = setDriveCommand(u.vmName, u.drive, cc.NewPath)
		}
		p.Configs = append(p.Configs, cc)
	}
	return p, nil
}

// planRemoveLeaf makes p the removal of the leaf layers[0] without a merge
// (--remove-leaf), or refuses (leafRemovable).
func planRemoveLeaf(p *Plan, st *Store, layers, roots []string, o *Options) error {
	disk := layers[0]
	switch {
	case o.Into != "":
		return refused(disk, "--remove-leaf removes this disk alone: it does not take --into")
	case o.Keep:
		return refused(disk, "--remove-leaf and --keep contradict each other")
	}
	owner, err := st.leafRemovable(disk, layers[1], roots)
	if err != nil {
		return err
	}
	p.Into = layers[1]
	p.Steps = []Step{{Child: disk, Parent: layers[1], Children: []string{}, Discard: true}}
	p.Notes = append(p.Notes, fmt.Sprintf("%s is removed without merging: its data is discarded. It is a checkpoint disk of %s off its live chain that no disk depends on and no configuration under %s uses; %s is not written. hvsnap sees only the configurations under these folders: a VM configured elsewhere that uses this disk would lose it (name such folders with --root)",
		disk, owner, strings.Join(roots, ", "), layers[1]))
	return nil
}

// removeLeafCommand is the hvsnap command line that removes disk without a
// merge with the same path maps and roots.
func removeLeafCommand(disk string, o *Options) string {
	cmd := "hvsnap merge --remove-leaf"
	for _, m := range o.PathMap {
		cmd += " --path-map " + quoteArg(m.String())
	}
	for _, r := range o.Roots {
		cmd += " --root " + quoteArg(r)
	}
	return cmd + " " + quoteArg(disk)
}

// leafRemovable says whether the leaf disk (canonical; its parent parent)
// may be removed without a merge, and names the VM it belongs to: a
// checkpoint disk (.avhd/.avhdx: Hyper-V makes those for checkpoints only)
// whose parent belongs to a VM found under the roots (named by one of its
// configurations, or below one of the disks they name), that nothing needs
// (removalDoubt).
func (s *Store) leafRemovable(disk, parent string, roots []string) (string, error) {
	if !s.Scanned {
		return "", refused(disk, "--remove-leaf: no VM configuration found under %s, so whether a VM or checkpoint uses this disk cannot be told; name the VM store with --root", strings.Join(roots, ", "))
	}
	if ext := strings.ToLower(filepath.Ext(disk)); ext != ".avhd" && ext != ".avhdx" {
		return "", refused(disk, "--remove-leaf: not a checkpoint disk (.avhd/.avhdx): a differencing disk made by hand may be a VM's own disk; hvsnap removes only checkpoint disks")
	}
	if err := s.removalDoubt(disk, nil, "--remove-leaf: "); err != nil {
		return "", err
	}
	owner := s.owner(parent)
	if owner == "" {
		return "", refused(disk, "--remove-leaf: its parent %s is named by no VM or checkpoint configuration found under %s, so this disk may be the disk of a VM configured elsewhere (a parent may be a template other VMs were made from too); name the folder with that VM's configuration with --root", parent, strings.Join(roots, ", "))
	}
	return owner, nil
}

// owner names the VM one of whose configurations (its own or a
// checkpoint's) names disk ("" when none does). Only a disk a configuration
// names counts: one merely below a VM's disks may be a template that VMs
// configured elsewhere were made from too.
func (s *Store) owner(disk string) string {
	for _, u := range s.uses(disk) {
		for _, v := range s.VMs {
			for _, c := range v.Configs() {
				if c == u.cfg {
					return fmt.Sprintf("VM %q (%s)", v.Config.Name, v.Config.Path)
				}
			}
		}
	}
	return ""
}

// winBase is the file name of a Windows (or local) path as Windows
// compares it: lowercase, without an NTFS stream suffix (::$DATA) or
// trailing dots and spaces.
func winBase(p string) string {
	p = strings.ToLower(p)
	if i := strings.LastIndexAny(p, `\/`); i >= 0 {
		p = p[i+1:]
	}
	p = strings.TrimSuffix(p, "::$data")
	return strings.TrimRight(p, ". ")
}

// normGUID is g lowercase without braces ("" for none or all-zero).
func normGUID(g string) string {
	g = strings.ToLower(strings.Trim(strings.TrimSpace(g), "{}"))
	if g == "" || strings.Trim(g, "0-") == "" {
		return ""
	}
	return g
}

// removalDoubt says why removing disk (canonical) could lose what another
// disk or a configuration needs, or nil: a disk depends on it (also one
// whose linkage to it no longer matches: a repairable child), a
// configuration names it (a checkpoint's not matched to any VM too), a
// configuration under the roots could not be read (it may name it: the
// scan's warnings), or a configuration names a file of its name that did
// not resolve to an existing local file (a missing --path-map). gone lists
// disks already removed by this run; prefix starts each message.
func (s *Store) removalDoubt(disk string, gone map[string]bool, prefix string) error {
	var kids []string
	for _, k := range append(append([]string(nil), s.Children[disk]...), s.Broken[disk]...) {
		if !gone[k] {
			kids = append(kids, k)
		}
	}
	if len(kids) > 0 {
		return refused(disk, "%s%s %s on this disk (removing it would break %s); it is not a leaf", prefix, strings.Join(kids, ", "), plural(len(kids), "depends", "depend"), plural(len(kids), "that disk", "those disks"))
	}
	for _, u := range s.uses(disk) {
		return refused(disk, "%s%s %q (%s, %s) uses this disk: removing it would lose that state. Delete the checkpoint (or detach the drive) in Hyper-V first", prefix, u.what(), u.cfg.Name, u.cfg.Path, u.drive.Location())
	}
	for _, w := range s.Warnings {
		return refused(disk, "%sthe scan of the roots reported a problem (%s): a configuration it could not read or match may use this disk; nothing is removed until the store reads without warnings", prefix, w)
	}
	var bad []string
	for d := range s.Unreadable {
		if d != disk && !gone[d] {
			bad = append(bad, d)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return refused(disk, "%s%s under the roots cannot be read (%s): it may be a child of this disk; nothing is removed while a disk cannot be read (hvsnap check)", prefix, bad[0], s.Unreadable[bad[0]])
	}
	base := winBase(disk)
	if len(s.Unresolved) > 0 {
		im, err := vhd.Open(disk, &vhd.Options{ReadOnly: true})
		if err != nil {
			return fmt.Errorf("merge: %w", err)
		}
		inf := im.Info()
		im.Close()
		dwg := normGUID(inf.DataWriteGUID.String())
		for _, u := range s.Unresolved {
			if gone[u.Path] {
				continue
			}
			named := contains(u.Names, base) || (!inf.UniqueID.IsZero() && u.ParentID == inf.UniqueID) || (dwg != "" && contains(u.Linkage, dwg))
			if named {
				return refused(disk, "%s%s names this disk as its parent (its locator does not resolve here): removing it would lose that disk's base; repair the link first (hvsnap reparent)", prefix, u.Path)
			}
		}
	}
	// The VMs' configurations naming it were uses above; a checkpoint's
	// matched to no VM is not among them.
	for _, c := range s.OrphanCheckpoints {
		for _, d := range c.Disks {
			if d.LocalPath != "" && canon(d.LocalPath) == disk {
				return refused(disk, "%scheckpoint configuration %s (not matched to any VM found) names this disk: removing it would lose that checkpoint's state", prefix, c.Path)
			}
		}
	}
	var cfgs []*vm.Config
	for _, v := range s.VMs {
		cfgs = append(cfgs, v.Configs()...)
	}
	cfgs = append(cfgs, s.OrphanCheckpoints...)
	for _, c := range cfgs {
		if c == nil {
			continue
		}
		for _, d := range c.Disks {
			if winBase(d.WindowsPath) == base && (d.LocalPath == "" || !d.Exists) {
				return refused(disk, "%s%s names %s, which did not resolve to a local file (a missing --path-map?): it may be this disk", prefix, c.Path, d.WindowsPath)
			}
		}
	}
	return nil
}

// roots are the folders the plan searched (the disk's default roots for a
// journal written before plans recorded them).
func (p *Plan) roots() []string {
	if len(p.Roots) > 0 {
		return p.Roots
	}
	return defaultRoots(p.Disk)
}

// recheckRemoval checks a removal without merge again, right before it
// removes (the store may have changed since the plan, or since the
// interruption a resume finishes): the same rules as the plan.
func recheckRemoval(p *Plan, o *Options) error {
	st := &p.Steps[0]
	roots := p.roots()
	for _, r := range roots {
		if _, err := os.Stat(r); err != nil {
			return refused(st.Child, "--remove-leaf: the folder %s searched when this removal was planned cannot be read now (%v), so whether a configuration there uses this disk cannot be told", r, err)
		}
	}
	s, err := Discover(roots, []string{st.Child}, o.PathMap, o.Wrap)
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	if _, err := s.consistent(st.Child, nil, false); err != nil {
		return err
	}
	_, err = s.leafRemovable(st.Child, st.Parent, roots)
	return err
}

// refuseDamaged refuses path (open as im) when hvsnap check finds an error
// in the file itself; why says what the merge would do to it.
func refuseDamaged(im *vhd.Image, path, why string) error {
	fs, err := im.Check()
	if err != nil {
		return fmt.Errorf("merge: check %s: %w", path, err)
	}
	for _, f := range fs {
		if f.Severity == vhd.SevError {
			return refused(path, "damaged: %s (%s); %s. Nothing was changed; see hvsnap check %s, and copy it aside before any repair", f.Message, f.Code, why, quoteArg(path))
		}
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func without(xs []string, x string) []string {
	var out []string
	for _, v := range xs {
		if v != x {
			out = append(out, v)
		}
	}
	return out
}

// newWindowsPath is the path a configuration should name for target, given
// the path it named for old: through the path map, else old's folder with
// target's name when both files share a folder.
func newWindowsPath(oldWin, old, target string, pm vhd.PathMap) string {
	if w, ok := pm.ToWindows(target); ok {
		return w
	}
	if filepath.Dir(old) == filepath.Dir(target) && oldWin != "" {
		i := strings.LastIndexAny(oldWin, `\/`)
		return oldWin[:i+1] + filepath.Base(target)
	}
	return strings.ReplaceAll(target, string(filepath.Separator), `\`)
}

func setDriveCommand(vmName string, d vm.DriveRef, path string) string {
	ct := "IDE"
	if d.Controller == vm.ControllerSCSI {
		ct = "SCSI"
	}
	return fmt.Sprintf("Set-VMHardDiskDrive -VMName '%s' -ControllerType %s -ControllerNumber %d -ControllerLocation %d -Path '%s'",
		strings.ReplaceAll(vmName, "'", "''"), ct, d.ControllerIndex, d.Drive, strings.ReplaceAll(path, "'", "''"))
}

// measure fills the byte counts, growth and per-volume peaks.
func (p *Plan) measure(ch *vhd.Chain, k int, o *Options) error {
	target := ch.Layers[k]
	tinf := target.Info()
	unit := target.AllocUnit()
	tbs := target.BlockSize()
	fixed := tinf.Type == vhd.TypeFixed
	var newly []uint64
	if !fixed {
		newly = make([]uint64, (target.Blocks()+63)/64)
	}
	byPath := map[string]*vhd.Image{}
	for _, im := range ch.Layers {
		byPath[canon(im.Path())] = im
	}
	vols, verr := o.volumes().Volumes()
	vidx := space.NewVolumeIndex(vols)
	mountOf := func(path string) string {
		if verr != nil {
			return ""
		}
		if v, ok := vidx.For(path); ok {
			return v.Mount
		}
		return ""
	}
	for i := range p.Steps {
		s := &p.Steps[i]
		c := byPath[s.Child]
		s.Format = string(tinf.Format)
		s.ParentType = string(tinf.Type)
		s.ChildBlock = c.BlockSize()
		s.ParentBlock = tbs
		if !o.Keep {
			s.FreedBytes = allocatedBytes(s.Child)
		}
		s.ParentVolume = mountOf(s.Parent)
		s.ChildVolume = mountOf(s.Child)
		if s.Discard {
			continue // removed without a merge: nothing copied, no growth
		}
		err := c.Extents(func(r vhd.Run) error {
			if r.State != vhd.StateAbsent {
				s.CopyBytes += r.Len
			}
			return nil
		})
		if err != nil {
			return err
		}
		if !fixed {
			err = c.TouchedBlocks(tbs, func(b int64) error {
				if b >= target.Blocks() || newly[b/64]&(1<<(b%64)) != 0 {
					return nil
				}
				ok, err := target.BlockAllocated(b)
				if err != nil {
					return err
				}
				if !ok {
					s.Growth += unit
					newly[b/64] |= 1 << (b % 64)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if tinf.Format == vhd.FormatVHDX {
			s.NewDataWriteGUID = vhd.NewGUID().String()
		}
		p.CopyBytes += s.CopyBytes
	}
	// Peaks: growth lands on the parent's volume, a removal frees the
	// child's space after its step.
	cur := map[string]int64{}
	peak := map[string]int64{}
	for _, s := range p.Steps {
		cur[s.ParentVolume] += s.Growth
		peak[s.ParentVolume] = max(peak[s.ParentVolume], cur[s.ParentVolume])
		cur[s.ChildVolume] -= s.FreedBytes
		if _, ok := peak[s.ChildVolume]; !ok {
			peak[s.ChildVolume] = 0
		}
	}
	var mounts []string
	for m := range peak {
		mounts = append(mounts, m)
	}
	sort.Strings(mounts)
	for _, m := range mounts {
		vn := VolumeNeed{Mount: m, Peak: peak[m], Margin: o.margin(), Free: -1}
		if v, ok := volumeByMount(vols, m); ok {
			vn.Free = v.Free
			vn.OK = vn.Peak == 0 || v.Free >= vn.Peak+vn.Margin
		} else {
			vn.OK = vn.Peak == 0
		}
		p.Volumes = append(p.Volumes, vn)
	}
	return nil
}

func volumeByMount(vols []space.VolumeInfo, m string) (space.VolumeInfo, bool) {
	for _, v := range vols {
		if v.Mount == m {
			return v, true
		}
	}
	return space.VolumeInfo{}, false
}

// CheckSpace returns a *NoSpaceError when a volume of the plan lacks room.
func (p *Plan) CheckSpace(o *Options) error {
	for _, v := range p.Volumes {
		if v.OK {
			continue
		}
		e := &NoSpaceError{Mount: v.Mount, Need: v.Peak + v.Margin, Free: max(v.Free, 0), Disk: p.Disk}
		if v.Free < 0 {
			e.Detail = "the free space of this volume could not be read"
		}
		need := p.totalSize()
		if vols, err := o.volumes().Volumes(); err == nil {
			var src space.VolumeInfo
			src, _ = volumeByMount(vols, v.Mount)
			for _, w := range vols {
				if w.Mount == v.Mount || w.ReadOnly || (src.FSID != "" && w.FSID == src.FSID) || space.SystemMount(w.Mount) {
					continue
				}
				if w.Free >= need+v.Peak+v.Margin {
					e.Room = append(e.Room, w)
				}
			}
			sort.Slice(e.Room, func(i, j int) bool { return e.Room[i].Free > e.Room[j].Free })
		}
		if len(e.Room) > 0 {
			var pms string
			for _, m := range p.PathMap {
				pms += " --path-map " + quoteArg(m)
			}
			room := filepath.Join(e.Room[0].Mount, "hvsnap-relocated")
			if dir := p.vmDir(); dir != "" {
				e.Reloc = fmt.Sprintf("hvsnap relocate %s --to %s --merge%s", quoteArg(dir), quoteArg(room), pms)
			} else {
				// No VM configuration names the disk: move the chain alone.
				name := strings.TrimSuffix(filepath.Base(p.Disk), filepath.Ext(p.Disk))
				pkg := filepath.Join(room, name+".tar.lz4")
				e.Reloc = fmt.Sprintf("hvsnap export%s --to %s %s && hvsnap import --to %s %s, then merge the imported copy there (no VM configuration names this disk, so hvsnap relocate does not apply)",
					pms, quoteArg(pkg), quoteArg(p.Disk), quoteArg(filepath.Join(room, name)), quoteArg(pkg))
			}
		}
		return e
	}
	return nil
}

// totalSize is the space the chain's files take (what a relocation moves).
func (p *Plan) totalSize() int64 {
	var n int64
	seen := map[string]bool{}
	for _, s := range p.Steps {
		for _, f := range []string{s.Child, s.Parent} {
			if !seen[f] {
				seen[f] = true
				n += allocatedBytes(f)
			}
		}
	}
	return n
}

// vmDir is the folder of the VM whose configuration names the merged disk
// (the folder holding "Virtual Machines"), "" when no VM configuration does.
func (p *Plan) vmDir() string {
	for _, c := range p.Configs {
		d := filepath.Dir(c.Config)
		if strings.EqualFold(filepath.Base(d), "Virtual Machines") {
			return filepath.Dir(d)
		}
	}
	return ""
}

func quoteArg(s string) string {
	if strings.ContainsAny(s, " '\"\\$`") {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	return s
}

func busyError(j *journal.Journal) error {
	return fmt.Errorf("%w: %s (%s started %s by pid %d on %s) involves these disks; finish it first: hvsnap %s --resume %s",
		ErrBusy, j.Path, j.Header.Op, j.Header.Started.Format("2006-01-02 15:04:05Z"), j.Header.PID, j.Header.Host, j.Header.Op, j.Path)
}

var errStop = errors.New("stop")

// allocatedBytes is what the file at path occupies (0 when it is gone).
func allocatedBytes(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fsutil.Allocated(fi)
}
