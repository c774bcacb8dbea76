package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/internal/journal"
	"github.com/hvsnap/hvsnap/relocate"
	"github.com/hvsnap/hvsnap/scenarios"
)

func cmdRelocate() *cli.Command {
	return &cli.Command{
		Name:      "relocate",
		Usage:     "move a VM to a volume with room, merge it there, and move it back (the 0x80070070 way out)",
		ArgsUsage: "VM_DIR | --resume JOURNAL",
		Description: `The documented flow for a merge that fails with 0x80070070 ("There is not
enough space on the disk") or a paused-critical VM, as one journaled,
resumable operation:

  1. preflight: the VM's files (configuration, checkpoint configurations,
     saved state, every disk of its chains, on whatever volume they are),
     locks (a running VM's files are refused: "in use"), free space on the
     target for the files and, with --merge, for the merges (with a margin);
  2. copy the VM to DIR/<VM name> through a package on the target volume:
     CRC-32C of every file while it is read, read back and checked before the
     copy is committed; parent locators and XML disk paths rewritten to the
     new place; every chain checked;
  3. with --merge: run the pending merges there (checkpoint disks that no
     checkpoint names any more: what deleting checkpoints left), each a
     journaled hvsnap merge; disk_merge_pending is cleared;
  4. remove the source files, only now (kept with --keep-source);
  5. with --back: once the original volume has room for the VM (checked
     against its real free space), bring it back into VM_DIR the same way and
     remove the copy on the target. When there is not yet room, the VM stays
     at the target, verified, and the command to move it back later is
     printed (exit 3).

The journal is kept in DIR, and a guard journal beside the source files makes
other hvsnap commands refuse to modify them meanwhile: killed at any point,
"hvsnap relocate VM_DIR --to DIR --resume" (or "hvsnap relocate --resume
JOURNAL" with either journal) finishes it; the runbooks print this. Nothing is changed when
the target lacks room (exit 3, with the numbers and the volumes that have
room). VMCX configurations are never written: the PowerShell to run on the
host is printed. Every step is printed as it runs.

Exit codes: 0 relocated (and merged, moved back as asked), 3 not enough space
(nothing changed), or relocated but not moved back for lack of room, 1 any
other failure, 2 usage.

Examples:
   hvsnap relocate /mnt/d/VMs/web01 --to /mnt/e/VMs --dry-run
   hvsnap relocate /mnt/d/VMs/web01 --to /mnt/e/VMs --merge --back --yes
   hvsnap relocate /mnt/d/VMs/web01 --to /mnt/e/VMs --path-map 'D:\VMs=/mnt/d/VMs' --path-map 'E:\VMs=/mnt/e/VMs'
   hvsnap relocate /mnt/d/VMs/web01 --to /mnt/e/VMs --merge --back --yes --resume`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "target `DIR` on a volume with room (the VM lands in DIR/<VM name>)"},
			&cli.BoolFlag{Name: "merge", Usage: "merge the VM's pending checkpoint disks at the target"},
			&cli.BoolFlag{Name: "back", Usage: "move the VM back into VM_DIR afterwards, once its volume has room"},
			&cli.BoolFlag{Name: "keep-source", Usage: "keep the source files (the VM then exists twice)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the plan and change nothing"},
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "do not ask for confirmation"},
			&cli.BoolFlag{Name: "resume", Usage: "finish an interrupted relocation of VM_DIR (its journal is in DIR); start it when none was begun"},
			&cli.StringFlag{Name: "margin", Value: "64M", Usage: "free space to keep on each volume beyond what is written"},
			pathMapFlag, jsonFlag,
		},
		Action: runRelocate,
	}
}

func runRelocate(c *cli.Context) error {
	debug.SetMemoryLimit(mergeMemoryLimit)
	args, err := interspersed(c)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return usagef("relocate: expected one VM_DIR, got %d arguments (see hvsnap relocate --help)", len(args))
	}
	vmDir := args[0]
	if fi, err := os.Stat(vmDir); err == nil && fi.Mode().IsRegular() && journal.IsJournal(vmDir) {
		// `hvsnap relocate --resume JOURNAL`: the relocation's journal, or
		// the guard beside the source files that other commands name.
		if !c.Bool("resume") {
			return usagef("relocate: %s is a journal: add --resume to finish the operation it records", vmDir)
		}
		return resumeRelocation(c, vmDir)
	}
	if c.String("to") == "" {
		return usagef("relocate: --to DIR is required (a folder on a volume with room)")
	}
	pm, err := pathMap(c)
	if err != nil {
		return err
	}
	margin, err := parseSize(c.String("margin"))
	if err != nil {
		return usagef("relocate: --margin: %v", err)
	}
	if margin == 0 {
		margin = -1
	}
	w := c.App.Writer
	asJSON := c.Bool("json")
	o := &relocate.Options{To: c.String("to"), Merge: c.Bool("merge"), Back: c.Bool("back"), KeepSource: c.Bool("keep-source"),
		PathMap: pm, Margin: margin, Tool: "hvsnap " + version}
	if !asJSON {
		o.Log = func(line string) { fmt.Fprintln(w, "relocate: "+line) }
	}
	if c.Bool("resume") {
		if st, err := os.Stat(c.String("to")); err == nil && st.IsDir() {
			js, err := relocate.FindJournals(c.String("to"), vmDir)
			if err != nil {
				return err
			}
			if len(js) > 0 {
				if !asJSON {
					fmt.Fprintf(w, "relocate: finishing the interrupted relocation recorded in %s\n", js[0])
				}
				res, err := relocate.Resume(js[0], o, reporter(c))
				return relocateDone(c, w, res, err)
			}
		}
		if _, err := os.Stat(vmDir); err != nil {
			if asJSON {
				return writeJSON(w, map[string]any{"schema": jsonSchema, "nothing_to_do": true})
			}
			fmt.Fprintf(w, "relocate: no interrupted relocation of %s in %s, and %s is not there: nothing to resume\n", vmDir, c.String("to"), vmDir)
			return nil
		}
	}
	p, err := relocate.PlanRelocation(vmDir, o)
	var ns *relocate.NoSpaceError
	if errors.As(err, &ns) && c.Bool("dry-run") && p != nil {
		if asJSON {
			return writeJSON(w, map[string]any{"schema": jsonSchema, "dry_run": true, "plan": p, "refused": err.Error()})
		}
		printRelocatePlan(w, p)
		fmt.Fprintln(w, "\nthis relocation would be refused now:")
		return &exitErr{code: exitFindings, msg: errorLine(err)}
	}
	if err != nil {
		return relocateErr(err)
	}
	if c.Bool("dry-run") {
		if asJSON {
			return writeJSON(w, map[string]any{"schema": jsonSchema, "dry_run": true, "plan": p})
		}
		printRelocatePlan(w, p)
		fmt.Fprintln(w, "\ndry run: nothing was changed")
		return nil
	}
	if !asJSON {
		printRelocatePlan(w, p)
	}
	if !c.Bool("yes") && !asJSON && isTerminal(os.Stdin) {
		if !confirm(w, os.Stdin, "Relocate now?") {
			fmt.Fprintln(w, "nothing was changed")
			return nil
		}
	}
	res, err := relocate.Run(p, o, reporter(c))
	return relocateDone(c, w, res, err)
}

func resumeRelocation(c *cli.Context, path string) error {
	pm, err := pathMap(c)
	if err != nil {
		return err
	}
	w := c.App.Writer
	js, err := relocate.FindJournals(path, "")
	if err != nil {
		return err
	}
	if len(js) == 0 {
		fmt.Fprintf(w, "relocate: %s records no unfinished relocation: nothing to resume\n", path)
		return nil
	}
	o := &relocate.Options{PathMap: pm, Tool: "hvsnap " + version}
	if !c.Bool("json") {
		o.Log = func(line string) { fmt.Fprintln(w, "relocate: "+line) }
		fmt.Fprintf(w, "relocate: finishing the interrupted relocation recorded in %s\n", js[0])
	}
	res, err := relocate.Resume(js[0], o, reporter(c))
	return relocateDone(c, w, res, err)
}

func relocateDone(c *cli.Context, w io.Writer, res *relocate.Result, err error) error {
	if err != nil && !errors.Is(err, relocate.ErrNoRoomBack) {
		if res != nil && res.Journal != "" {
			if _, serr := os.Stat(res.Journal); serr == nil {
				p := res.Plan
				err = fmt.Errorf("%w; nothing is lost: the journal %s records where it stopped; fix the cause, then run: hvsnap relocate %s --to %s%s --resume", err, res.Journal, scenarios.Quote(p.Source), scenarios.Quote(p.To), relocateFlags(p))
			}
		}
		return relocateErr(err)
	}
	if c.Bool("json") {
		if jerr := writeJSON(w, map[string]any{"schema": jsonSchema, "result": res}); jerr != nil {
			return jerr
		}
	} else {
		printRelocateResult(w, res)
	}
	if err != nil {
		return &exitErr{code: exitFindings, msg: errorLine(err)}
	}
	return nil
}

func relocateFlags(p *relocate.Plan) string {
	s := ""
	if p.Merge {
		s += " --merge"
	}
	if p.Back {
		s += " --back"
	}
	if p.KeepSource {
		s += " --keep-source"
	}
	for _, m := range p.PathMap {
		s += " --path-map " + scenarios.Quote(m)
	}
	return s + " --yes"
}

// relocateErr maps lack of space to exit 3 and usage problems to 2.
func relocateErr(err error) error {
	switch {
	case errors.Is(err, relocate.ErrNoSpace):
		return &exitErr{code: exitFindings, msg: errorLine(err)}
	case errors.Is(err, relocate.ErrUsage):
		return &exitErr{code: exitUsage, msg: errorLine(err)}
	}
	return err
}

func printRelocatePlan(w io.Writer, p *relocate.Plan) {
	fmt.Fprintf(w, "relocate VM %q (%s) from %s to %s\n", p.VMName, p.VMID, p.Source, p.TargetVM)
	fmt.Fprintf(w, "  files: %d, %s (%s allocated)\n", len(p.Files), human(p.Size), human(p.Alloc))
	for _, f := range p.Files {
		fmt.Fprintf(w, "    %-18s %10s  %s\n", f.Role, human(f.Alloc), f.Source)
	}
	n := 1
	step := func(format string, args ...any) {
		fmt.Fprintf(w, "  %d. %s\n", n, fmt.Sprintf(format, args...))
		n++
	}
	step("copy to %s through a package in %s (CRC-32C of every file, read back and checked)", p.TargetVM, filepath.Base(p.Staging))
	step("verify: parent locators and configuration paths rewritten to the new place, every chain opens and checks clean")
	if p.Merge {
		if len(p.Merges) == 0 {
			step("merge: nothing pending")
		}
		for _, m := range p.Merges {
			step("merge %s into %s there (%d disk(s); %s grows by %s, frees %s)", filepath.Base(m.Child), filepath.Base(m.Parent), m.Disks, filepath.Base(m.Parent), human(m.Growth), human(m.Freed))
		}
	}
	if p.KeepSource {
		step("keep the source files (--keep-source)")
	} else {
		step("remove the source files, once the copy verified")
	}
	if p.Back {
		step("move the VM back into %s once its volume has room (checked then), and remove the copy in %s", p.Source, p.TargetVM)
	}
	fmt.Fprintln(w, "  volumes:")
	for _, v := range p.Volumes {
		state := "ok"
		if !v.OK {
			state = "NOT ENOUGH"
		}
		free := "unknown"
		if v.Free >= 0 {
			free = human(v.Free)
		}
		what := "free"
		if v.Phase == "back" {
			what = "free after the source is removed (predicted)"
		}
		fmt.Fprintf(w, "    %-24s %-8s needs %-10s %s %s: %s\n", v.Mount, v.Phase, human(v.Need), what, free, state)
	}
	for _, s := range p.Notes {
		fmt.Fprintf(w, "  note: %s\n", s)
	}
}

func printRelocateResult(w io.Writer, r *relocate.Result) {
	if r == nil {
		return
	}
	for _, m := range r.Merged {
		fmt.Fprintf(w, "merged %s\n", m)
	}
	if r.ClearedMergePending {
		fmt.Fprintln(w, "cleared disk_merge_pending in the VM's configuration (the merge is done)")
	}
	fmt.Fprintf(w, "removed %d source file(s)\n", len(r.Removed))
	if r.MovedBack {
		fmt.Fprintf(w, "VM %s is back in %s\n", r.Plan.VMName, r.Location)
	} else {
		fmt.Fprintf(w, "VM %s is now in %s\n", r.Plan.VMName, r.Location)
	}
	if r.Config != "" {
		fmt.Fprintf(w, "configuration: %s\n", r.Config)
	}
	for _, cmd := range r.Commands {
		fmt.Fprintf(w, "run on the Hyper-V host: %s\n", cmd)
	}
	for _, h := range r.Hints {
		fmt.Fprintf(w, "next: %s\n", h)
	}
}
