package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/hvsnap/hvsnap/internal/fsutil"
	"github.com/hvsnap/hvsnap/internal/journal"
	"github.com/hvsnap/hvsnap/internal/lock"
	"github.com/hvsnap/hvsnap/merge"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

func cmdMerge() *cli.Command {
	return &cli.Command{
		Name:      "merge",
		Usage:     "merge checkpoint (differencing) disks into their parents, safely and resumably",
		ArgsUsage: "DISK",
		Description: `Merges DISK into its parent (or, with --into, the whole chain from DISK down to
that ancestor), like deleting a checkpoint in Hyper-V or Merge-VHD, in place:
data flows from the child into the parent, only the sectors the child holds are
written, the child's children are re-pointed to the parent, XML configurations
that named DISK are updated (VMCX: the Set-VMHardDiskDrive command to run is
printed), and DISK is removed only after the parent reads back what was merged.

It refuses, before touching anything: a parent other disks also depend on
(another checkpoint branch or VM) or a VM runs on, a disk a checkpoint still
uses, a broken link,
a disk in use (locked by a running VM or another job), an unfinished operation,
and not enough free space (exit 3, with the volumes that have room and the
relocation command). It also refuses while a VMCX configuration in the store
may lack its last changes (outstanding replay-log entries hvsnap could not
replay: a damaged log, or one using fields whose meaning is not known; a log
that checks out is replayed in memory): that configuration could have a
checkpoint using these disks. Let
Hyper-V open the VM once, or, where no Hyper-V host is at hand, name the file
with --accept-stale-config to go on; the plan then says what to check on the
host afterwards.

A leaf whose parent cannot take its data (shared, or used by a VM or a
checkpoint) and that nothing uses, such as the disk of an abandoned checkpoint
branch, is what Hyper-V removes without a merge when that checkpoint is
deleted: --remove-leaf does that (its data is discarded). Only for a
checkpoint disk (.avhd/.avhdx) whose parent a VM or checkpoint configuration
under the roots names, that no disk depends on and no configuration names,
in a store that reads without warnings or unreadable disks; checked again
right before the removal. hvsnap sees only the configurations under the
roots: name every folder with configurations using these disks (--root).

Every step is journaled (.hvsnap-merge-*.journal next to the parent; for
--remove-leaf, next to DISK): a merge killed at any point, or stopped by a full disk, is finished by
'hvsnap merge --resume' (any later merge of these disks finishes it first).
At every instant the chain reads the same as before.

Exit codes: 0 merged (or nothing to do), 1 error or refusal, 2 usage,
3 not enough space (nothing changed).

Examples:
   hvsnap merge --dry-run 'VMs/web/Virtual Hard Disks/web_6F1C....avhdx'
   hvsnap merge --yes --into base.vhdx leaf.avhdx
   hvsnap merge --all /mnt/d/VMs/web --yes          # every drive's chain into its base
   hvsnap merge --remove-leaf --dry-run web_0A1B....avhdx  # an abandoned branch's leaf
   hvsnap merge --resume /mnt/d/VMs/web/Virtual\ Hard\ Disks`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "into", Usage: "ancestor to merge the chain into (default: DISK's parent)"},
			&cli.StringFlag{Name: "all", Usage: "merge every drive chain of the VM in `VM_DIR` into its base disk"},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "print the plan (order, bytes, peak space per volume) and change nothing"},
			&cli.BoolFlag{Name: "remove-leaf", Usage: "remove DISK without merging it, discarding its data (as Hyper-V does when it deletes a checkpoint whose disk is an off-branch leaf): only a leaf no disk depends on and no configuration uses"},
			&cli.BoolFlag{Name: "keep", Usage: "keep the merged file, re-pointed as a valid child of the merged parent that no configuration names (single step only)"},
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "do not ask for confirmation on a terminal"},
			&cli.BoolFlag{Name: "resume", Usage: "finish interrupted merges: PATH is a journal, a disk, or a folder (default: .)"},
			&cli.StringSliceFlag{Name: "root", Usage: "folder to search for dependent disks and VM configurations (repeatable; default: the disk's VM folder)"},
			&cli.StringFlag{Name: "margin", Value: "64M", Usage: "free space to keep on each volume beyond the merge's peak"},
			acceptStaleFlag,
			pathMapFlag, jsonFlag,
		},
		Action: withJSONRefusal(runMerge),
	}
}

// withJSONRefusal: with --json, a run that fails before writing its
// document writes one naming the failure ("refused": merge's refusals,
// lack of space, unfinished operations, disks in use; "error": anything
// else), so standard output is always one JSON document. Usage errors stay
// plain.
func withJSONRefusal(run cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		if !c.Bool("json") {
			return run(c)
		}
		cw := &fsutil.CountingWriter{W: c.App.Writer}
		c.App.Writer = cw
		err := run(c)
		c.App.Writer = cw.W
		var ee *exitErr
		if err == nil || cw.N > 0 || (errors.As(err, &ee) && ee.code == exitUsage) {
			return err
		}
		key := "error"
		if errors.Is(err, merge.ErrRefused) || errors.Is(err, merge.ErrBusy) || errors.Is(err, merge.ErrNoSpace) {
			key = "refused"
		}
		if jerr := writeJSON(cw.W, map[string]any{"schema": jsonSchema, "plans": []any{}, "results": []any{}, key: errorLine(err)}); jerr != nil {
			return jerr
		}
		return err
	}
}

// acceptStaleFlag lets merge and cleanup go on past a VMCX configuration
// that may lack its last changes (merge.Options.AcceptStale).
var acceptStaleFlag = &cli.StringSliceFlag{Name: "accept-stale-config", Usage: "go on although the VMCX configuration `FILE` may lack its last changes (outstanding replay-log entries hvsnap could not replay); repeatable"}

func mergeOptions(c *cli.Context) (*merge.Options, error) {
	pm, err := pathMap(c)
	if err != nil {
		return nil, err
	}
	margin, err := parseSize(c.String("margin"))
	if err != nil {
		return nil, usagef("merge: --margin: %v", err)
	}
	if margin == 0 {
		margin = -1
	}
	return &merge.Options{PathMap: pm, Into: c.String("into"), Roots: c.StringSlice("root"), Keep: c.Bool("keep"), Margin: margin,
		AcceptStale: c.StringSlice("accept-stale-config"), RemoveLeaf: c.Bool("remove-leaf")}, nil
}

// mergeMemoryLimit keeps a merge's heap small whatever the disk size (the
// copy pipeline and page caches are bounded; this bounds the garbage too).
const mergeMemoryLimit = 40 << 20

func runMerge(c *cli.Context) error {
	debug.SetMemoryLimit(mergeMemoryLimit)
	o, err := mergeOptions(c)
	if err != nil {
		return err
	}
	if o.RemoveLeaf && (c.Bool("resume") || c.String("into") != "" || c.Bool("keep")) {
		return usagef("merge: --remove-leaf removes DISK alone: it takes no --resume, --into or --keep")
	}
	if c.Bool("resume") {
		return runMergeResume(c, o)
	}
	var disks []string
	var allCfg *vm.Config // --all: the VM's configuration
	switch {
	case c.String("all") != "":
		if c.NArg() > 0 || c.String("into") != "" || c.Bool("remove-leaf") {
			return usagef("merge: --all takes no DISK, no --into and no --remove-leaf")
		}
		disks, allCfg, err = vmChains(c.String("all"), o)
		if err != nil {
			return err
		}
		if len(o.Roots) == 0 {
			o.Roots = []string{c.String("all")}
		}
	default:
		d, err := oneArg(c, "DISK")
		if err != nil {
			return err
		}
		disks = []string{d}
	}
	var plans []*merge.Plan
	resumedAll := []string{} // disks the interrupted merges finished had merged
	removedAll := []string{} // disks interrupted removals without merge (--remove-leaf) finished removing
	pending := []string{}    // dry run: journals the real run would finish first
	for _, d := range disks {
		oo := *o
		if c.String("all") != "" {
			base, err := baseOf(d, o)
			if err != nil {
				return err
			}
			if base == "" {
				continue // the drive has no checkpoint disks
			}
			oo.Into = base
		}
		p, finished, err := planWithResume(c, d, &oo)
		var pd *pendingDry
		if errors.As(err, &pd) {
			pending = append(pending, pd.journals...)
			if !c.Bool("json") {
				fmt.Fprintf(c.App.Writer, "%v\n", pd)
			}
			continue
		}
		if err != nil {
			return err
		}
		switch finished {
		case "merged":
			resumedAll = append(resumedAll, d)
			continue
		case "removed":
			removedAll = append(removedAll, d)
			continue
		}
		plans = append(plans, p)
	}
	w := c.App.Writer
	if len(plans) == 0 {
		if c.Bool("json") {
			doc := map[string]any{"schema": jsonSchema, "plans": []any{}, "results": []any{}, "nothing_to_do": len(resumedAll) == 0 && len(removedAll) == 0 && len(pending) == 0, "merged_by_resume": resumedAll, "removed_by_resume": removedAll}
			if c.Bool("dry-run") {
				doc["dry_run"], doc["pending_journals"] = true, pending
			}
			return writeJSON(w, doc)
		}
		if len(pending) > 0 {
			fmt.Fprintln(w, "dry run: nothing was changed")
			return nil
		}
		if len(resumedAll) > 0 || len(removedAll) > 0 {
			if len(resumedAll) > 0 {
				fmt.Fprintf(w, "%s: merged by the interrupted merge just finished; nothing left to do\n", strings.Join(resumedAll, ", "))
			}
			if len(removedAll) > 0 {
				fmt.Fprintf(w, "%s: removed WITHOUT MERGING (its data discarded) by the interrupted --remove-leaf just finished; nothing left to do\n", strings.Join(removedAll, ", "))
			}
			return nil
		}
		fmt.Fprintln(w, "nothing to merge: the VM's drives have no checkpoint disks")
		return nil
	}
	// What the merge would be refused for now (nothing changed): lack of
	// space (exit 3), a disk in use (exit 1).
	var spaceErr, busyErr error
	for _, p := range plans {
		if err := p.CheckSpace(o); err != nil {
			spaceErr = err
		}
		if c.Bool("dry-run") && busyErr == nil {
			busyErr = p.ProbeLocks()
		}
	}
	refusal := spaceErr
	if refusal == nil {
		refusal = busyErr
	}
	refusedExit := func() error {
		if spaceErr != nil {
			return &exitErr{code: exitFindings, msg: errorLine(spaceErr)}
		}
		return &exitErr{code: exitError, msg: errorLine(busyErr)}
	}
	if c.Bool("dry-run") {
		if c.Bool("json") {
			doc := map[string]any{"schema": jsonSchema, "dry_run": true, "plans": plans, "pending_journals": pending}
			if refusal != nil {
				doc["refused"] = errorLine(refusal)
			}
			if err := writeJSON(w, doc); err != nil || refusal == nil {
				return err
			}
			return refusedExit()
		}
		for _, p := range plans {
			printPlan(w, p)
		}
		if refusal != nil {
			fmt.Fprintln(w, "\nthis merge would be refused now:")
			return refusedExit()
		}
		fmt.Fprintln(w, "\ndry run: nothing was changed")
		return nil
	}
	if spaceErr != nil {
		if c.Bool("json") {
			if err := writeJSON(w, map[string]any{"schema": jsonSchema, "plans": plans, "results": []any{}, "refused": errorLine(spaceErr)}); err != nil {
				return err
			}
		}
		return mergeErr(spaceErr)
	}
	if !c.Bool("json") {
		for _, p := range plans {
			printPlan(w, p)
		}
	}
	if !c.Bool("yes") && isTerminal(os.Stdin) {
		// With --json the question goes to standard error, keeping standard
		// output one JSON document.
		qw := c.App.Writer
		if c.Bool("json") {
			qw = c.App.ErrWriter
		}
		q := "Merge now?"
		if o.RemoveLeaf {
			q = "Remove it now, discarding its data?"
		}
		if !confirm(qw, os.Stdin, q) {
			fmt.Fprintln(qw, "nothing was changed")
			return nil
		}
	}
	var results []*merge.Result
	for _, p := range plans {
		res, err := merge.Run(p, o, reporter(c))
		if err != nil {
			return mergeErr(err)
		}
		results = append(results, res)
		if !c.Bool("json") {
			printResult(w, res)
		}
	}
	// --all merged every drive chain into its base: no merge is left
	// pending, so the flag a deleted checkpoint left goes (as Hyper-V does;
	// VMCX is never written).
	cleared := []string{}
	if allCfg != nil && allCfg.DiskMergePending && allCfg.Kind == vm.KindXML {
		changed, err := vm.ClearXMLMergePending(allCfg.Path)
		if err != nil {
			return fmt.Errorf("merge: merged, but clearing disk_merge_pending in %s failed: %w", allCfg.Path, err)
		}
		if changed {
			cleared = append(cleared, allCfg.Path)
		}
	}
	if allCfg == nil {
		// One merge: the flag goes when the store shows no merge left
		// pending on the VM's chains (and nothing in doubt).
		for _, p := range plans {
			changed, err := merge.ClearPendingFlags(p, o)
			if err != nil {
				return fmt.Errorf("merge: merged, but clearing disk_merge_pending failed: %w", err)
			}
			cleared = append(cleared, changed...)
		}
	}
	if !c.Bool("json") {
		for _, f := range cleared {
			fmt.Fprintf(w, "disk_merge_pending set to False in %s\n", f)
		}
	}
	if c.Bool("json") {
		return writeJSON(w, map[string]any{"schema": jsonSchema, "results": results, "merge_pending_cleared": cleared})
	}
	return nil
}

// planWithResume plans a merge; an interrupted merge of the same disks is
// finished first. finished: that merge already merged disk (nothing left
// to plan).
// finished: "merged" or "removed" when an interrupted merge (or removal
// without merge) of disk, just finished, left nothing to do.
func planWithResume(c *cli.Context, disk string, o *merge.Options) (p *merge.Plan, finished string, err error) {
	if c.Bool("dry-run") {
		// A dry run changes nothing: an interrupted merge of these disks is
		// named (the real run finishes it first), not finished.
		p, err := merge.PlanMerge(disk, o)
		if err != nil && errors.Is(err, merge.ErrBusy) {
			if js, ferr := merge.FindJournals(disk); ferr == nil && len(js) > 0 {
				for _, j := range js {
					if perr := merge.ProbeJournal(j); perr != nil {
						return nil, "", fmt.Errorf("merge: the merge recorded in %s is not finished and its disks are in use (still running in another process, or a VM holds them): %w", j, perr)
					}
				}
				return nil, "", &pendingDry{disk: disk, journals: js}
			}
		}
		return p, "", mergeErr(err)
	}
	if _, serr := os.Stat(disk); os.IsNotExist(serr) {
		// Killed after the disk was removed: its journal is still next to it.
		js, jerr := journal.Involving(disk)
		if jerr == nil && len(js) > 0 && js[0].Header.Op == "merge" {
			done := "merged"
			for _, j := range js {
				removal, err := finishJournal(c, j.Path, o)
				if err != nil {
					return nil, "", err
				}
				if removal {
					done = "removed"
				}
			}
			return nil, done, nil
		}
	}
	p, err = merge.PlanMerge(disk, o)
	if err == nil || !errors.Is(err, merge.ErrBusy) {
		if err != nil {
			return nil, "", mergeErr(err)
		}
		return p, "", nil
	}
	js, ferr := merge.FindJournals(disk)
	if ferr != nil || len(js) == 0 {
		return nil, "", mergeErr(err) // another kind of operation: not ours to finish
	}
	done := "merged"
	for _, j := range js {
		removal, err := finishJournal(c, j, o)
		if err != nil {
			return nil, "", err
		}
		if removal {
			done = "removed"
		}
	}
	if _, err := os.Stat(disk); os.IsNotExist(err) {
		return nil, done, nil
	}
	p, err = merge.PlanMerge(disk, o)
	if err != nil {
		return nil, "", mergeErr(err)
	}
	return p, "", nil
}

// pendingDry: in a dry run, an interrupted merge of the disk that the real
// run would finish first (the plan can only be made after it).
type pendingDry struct {
	disk     string
	journals []string
}

func (e *pendingDry) Error() string {
	return fmt.Sprintf("%s: the interrupted merge recorded in %s would be finished first (as hvsnap merge --resume does); plan again after it", e.disk, strings.Join(e.journals, ", "))
}

// finishJournal finishes the interrupted merge recorded in j; one whose
// disks are held (it is still running in another process) is reported as
// such.
func finishJournal(c *cli.Context, j string, o *merge.Options) (removal bool, err error) {
	oo := *o
	oo.Into, oo.Keep, oo.RemoveLeaf = "", false, false
	res, err := merge.Resume(j, &oo, reporter(c))
	var p *merge.Plan
	if res != nil {
		p = res.Plan
	} else {
		p, _ = merge.JournalPlan(j) // refused before the journal was read: for the message
	}
	what := "merge"
	if p != nil && p.Discards() {
		removal, what = true, "removal without merge (--remove-leaf)"
	}
	if err != nil {
		if errors.Is(err, lock.ErrInUse) {
			return removal, fmt.Errorf("merge: the %s recorded in %s is not finished and its disks are in use (still running in another process, or a VM holds them): %w", what, j, err)
		}
		return removal, mergeErr(err)
	}
	fmt.Fprintf(c.App.ErrWriter, "hvsnap: finished the interrupted %s recorded in %s\n", what, j)
	return removal, nil
}

func runMergeResume(c *cli.Context, o *merge.Options) error {
	path := "."
	if c.NArg() > 1 {
		return usagef("merge --resume takes at most one PATH")
	}
	if c.NArg() == 1 {
		path = c.Args().First()
	}
	js, err := merge.FindJournals(path)
	if err != nil {
		return err
	}
	w := c.App.Writer
	if len(js) == 0 {
		if c.Bool("json") {
			return writeJSON(w, map[string]any{"schema": jsonSchema, "results": []any{}, "nothing_to_do": true})
		}
		fmt.Fprintf(w, "no interrupted merge found for %s\n", path)
		return nil
	}
	var results []*merge.Result
	for _, j := range js {
		res, err := merge.Resume(j, o, reporter(c))
		if err != nil {
			return mergeErr(err)
		}
		results = append(results, res)
		if !c.Bool("json") {
			if res.Plan != nil && res.Plan.Discards() {
				fmt.Fprintf(w, "resumed %s: the removal WITHOUT MERGING (--remove-leaf) of %s is done\n", j, res.Plan.Disk)
			} else {
				fmt.Fprintf(w, "resumed %s\n", j)
			}
			printResult(w, res)
		}
	}
	if c.Bool("json") {
		return writeJSON(w, map[string]any{"schema": jsonSchema, "results": results})
	}
	return nil
}

// mergeErr maps lack of space to exit 3.
func mergeErr(err error) error {
	if errors.Is(err, merge.ErrNoSpace) {
		return &exitErr{code: exitFindings, msg: errorLine(err)}
	}
	return err
}

// vmChains lists the disks the VM's configuration names (each drive's live
// leaf).
func vmChains(dir string, o *merge.Options) ([]string, *vm.Config, error) {
	st, err := vm.Scan([]string{dir}, vm.ScanOptions{PathMap: o.PathMap})
	if err != nil {
		return nil, nil, err
	}
	if len(st.VMs) == 0 {
		return nil, nil, fmt.Errorf("merge: no VM configuration found under %s", dir)
	}
	if len(st.VMs) > 1 {
		var names []string
		for _, v := range st.VMs {
			names = append(names, v.Config.Name)
		}
		return nil, nil, fmt.Errorf("merge: %s holds %d VMs (%s): name one VM's folder", dir, len(st.VMs), strings.Join(names, ", "))
	}
	var out []string
	for _, d := range st.VMs[0].Config.Disks {
		if d.LocalPath == "" || !d.Exists {
			return nil, nil, fmt.Errorf("merge: %s: drive %s names %s, which was not found (use --path-map)", st.VMs[0].Config.Path, d.Location(), d.WindowsPath)
		}
		out = append(out, d.LocalPath)
	}
	return out, st.VMs[0].Config, nil
}

// baseOf returns the base of disk's chain ("" when disk is not differencing).
func baseOf(disk string, o *merge.Options) (string, error) {
	ch, err := vhd.OpenChain(disk, &vhd.Options{ReadOnly: true, PathMap: o.PathMap})
	if err != nil {
		return "", err
	}
	defer ch.Close()
	if len(ch.Layers) < 2 {
		return "", nil
	}
	return ch.Base().Path(), nil
}

func printPlan(w io.Writer, p *merge.Plan) {
	if len(p.Steps) == 1 && p.Steps[0].Discard {
		fmt.Fprintf(w, "removal plan (--remove-leaf): %s, not merged into %s\n", p.Disk, p.Into)
	} else {
		fmt.Fprintf(w, "merge plan: %s → %s\n", p.Disk, p.Into)
	}
	for i, s := range p.Steps {
		if s.Discard {
			fmt.Fprintf(w, "  %d. remove %s WITHOUT MERGING (its data is discarded; %s is not written), frees %s\n",
				i+1, filepath.Base(s.Child), filepath.Base(s.Parent), human(s.FreedBytes))
			continue
		}
		fmt.Fprintf(w, "  %d. merge %s into %s: write %s, %s grows %s",
			i+1, filepath.Base(s.Child), filepath.Base(s.Parent), human(s.CopyBytes), filepath.Base(s.Parent), human(s.Growth))
		if len(s.Children) > 0 {
			fmt.Fprintf(w, ", re-point %d child disk(s)", len(s.Children))
		}
		if p.Keep {
			fmt.Fprintf(w, ", keep %s", filepath.Base(s.Child))
		} else {
			fmt.Fprintf(w, ", remove %s (frees %s)", filepath.Base(s.Child), human(s.FreedBytes))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "  space:")
	for _, v := range p.Volumes {
		state := "ok"
		if !v.OK {
			state = "NOT ENOUGH SPACE"
		}
		free := "unknown"
		if v.Free >= 0 {
			free = human(v.Free)
		}
		fmt.Fprintf(w, "    %-24s free %-10s peak +%-10s margin %-8s %s\n", v.Mount, free, human(v.Peak), human(v.Margin), state)
	}
	for _, cc := range p.Configs {
		how := "updated"
		if cc.Kind != vm.KindXML {
			how = "VMCX, not written: run on the host: " + cc.Command
		}
		fmt.Fprintf(w, "  config %s (VM %q, %s): %s → %s (%s)\n", cc.Config, cc.VM, cc.Drive, cc.OldPath, cc.NewPath, how)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

func printResult(w io.Writer, r *merge.Result) {
	for _, m := range r.Merged {
		fmt.Fprintf(w, "merged %s\n", m)
	}
	for _, f := range r.Removed {
		fmt.Fprintf(w, "removed %s\n", f)
	}
	for f, g := range r.Growth {
		fmt.Fprintf(w, "%s grew by %s\n", f, human(g))
	}
	for _, f := range r.ConfigsUpdated {
		fmt.Fprintf(w, "updated %s\n", f)
	}
	for _, cmd := range r.Commands {
		fmt.Fprintf(w, "run on the Hyper-V host: %s\n", cmd)
	}
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

func confirm(w io.Writer, r io.Reader, q string) bool {
	fmt.Fprintf(w, "%s [y/N] ", q)
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(strings.ToLower(line))
	return line == "y" || line == "yes"
}

// finishInterrupted is called by commands that modify disk files: an
// unfinished merge of any of paths is finished first (so the command never
// works on a half-merged chain); an unfinished operation of another kind is
// refused with its resume command.
func finishInterrupted(c *cli.Context, pm vhd.PathMap, paths ...string) error {
	js, err := journal.Involving(paths...)
	if err != nil {
		return err
	}
	for _, j := range js {
		if j.Header.Op != "merge" {
			return fmt.Errorf("%s: an unfinished %s (%s) involves this disk; finish it first: hvsnap %s --resume %s", paths[0], j.Header.Op, j.Path, j.Header.Op, j.Path)
		}
		fmt.Fprintf(c.App.ErrWriter, "hvsnap: finishing the interrupted merge recorded in %s first\n", j.Path)
		if _, err := merge.Resume(j.Path, &merge.Options{PathMap: pm}, reporter(c)); err != nil {
			return mergeErr(err)
		}
	}
	return nil
}
