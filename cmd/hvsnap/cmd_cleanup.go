package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/merge"
)

// exitNothing: cleanup found nothing to do.
const exitNothing = 4

func cmdCleanup() *cli.Command {
	return &cli.Command{
		Name:      "cleanup",
		Usage:     "for scheduled jobs: run the merges deleted checkpoints left pending, remove orphaned disks",
		ArgsUsage: "ROOT...",
		Description: `Finds, under the ROOTs, the checkpoint disks that a deleted checkpoint left in a
VM's live chain (the merge Hyper-V did not run: space not reclaimed) and merges
each into its parent, by the rules of 'hvsnap merge' (never a disk in use,
never a parent other disks depend on, never a disk a checkpoint still uses).
With --orphans it also removes orphaned differencing disks that nothing
depends on and no VM or checkpoint names (leaves first).

While a VMCX configuration under the ROOTs may lack its last changes
(outstanding replay-log entries hvsnap could not replay: a damaged log, or one
using fields whose meaning is not known), its merges are
skipped with the reason; --accept-stale-config FILE lets them run (never the
removal of an orphan, which that configuration may be using).

An interrupted merge (its journal next to the parent) is finished first.
A lock file (.hvsnap-cleanup.lock in every ROOT) keeps two jobs from
overlapping. A disk in use (a running VM) is skipped with the reason. Every file touched is reported with its size and identity before
and after (--log FILE appends the same as JSON lines).

Exit codes: 0 done, 4 nothing to do, 3 needs space (a merge did not fit; the
rest was done), 1 error (another cleanup running, a merge failed), 2 usage.

Examples:
   hvsnap cleanup --dry-run /mnt/d/Hyper-V
   hvsnap cleanup --older-than 720h --keep 1 --json --log /var/log/hvsnap-cleanup.jsonl /mnt/d/Hyper-V
   hvsnap cleanup --orphans --older-than 168h /mnt/d/Hyper-V`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "older-than", Usage: "only disks last written at least this long ago (e.g. 168h)"},
			&cli.IntFlag{Name: "keep", Usage: "per VM, leave the N most recent pending merges"},
			&cli.BoolFlag{Name: "orphans", Usage: "also remove orphaned differencing disks nothing depends on"},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "say what would be done and change nothing"},
			&cli.StringFlag{Name: "margin", Value: "64M", Usage: "free space to keep on each volume beyond a merge's peak"},
			&cli.StringFlag{Name: "log", Usage: "append every action as a JSON line to `FILE`"},
			acceptStaleFlag,
			pathMapFlag, jsonFlag,
		},
		Action: runCleanup,
	}
}

func runCleanup(c *cli.Context) error {
	debug.SetMemoryLimit(mergeMemoryLimit)
	if c.NArg() == 0 {
		return usagef("cleanup: give at least one ROOT folder")
	}
	if c.Int("keep") < 0 {
		return usagef("cleanup: --keep must be 0 or more")
	}
	pm, err := pathMap(c)
	if err != nil {
		return err
	}
	margin, err := parseSize(c.String("margin"))
	if err != nil {
		return usagef("cleanup: --margin: %v", err)
	}
	if margin == 0 {
		margin = -1
	}
	var roots []string
	for _, r := range c.Args().Slice() {
		a, err := filepath.Abs(r)
		if err != nil {
			return err
		}
		if fi, err := os.Stat(a); err != nil || !fi.IsDir() {
			return fmt.Errorf("cleanup: %s: not a folder", r)
		}
		roots = append(roots, a)
	}
	res, err := merge.Cleanup(roots, merge.CleanupOptions{PathMap: pm, OlderThan: c.Duration("older-than"), Keep: c.Int("keep"),
		Orphans: c.Bool("orphans"), DryRun: c.Bool("dry-run"), Margin: margin, AcceptStale: c.StringSlice("accept-stale-config")}, reporter(c))
	// A run stopped by an error (another cleanup running, an unreadable
	// store) still logs and reports what it did before, and the error.
	if res == nil {
		res = &merge.CleanupResult{Schema: merge.PlanSchema, Roots: roots, DryRun: c.Bool("dry-run"), Actions: []merge.Action{}}
	}
	if lp := c.String("log"); lp != "" && !res.DryRun {
		f, ferr := os.OpenFile(lp, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if ferr != nil {
			return fmt.Errorf("cleanup: --log: %w", ferr)
		}
		enc := json.NewEncoder(f)
		now := time.Now().UTC().Format(time.RFC3339)
		for _, a := range res.Actions {
			enc.Encode(struct {
				Time string `json:"time"`
				merge.Action
			}{now, a})
		}
		if err != nil {
			enc.Encode(map[string]string{"time": now, "kind": "error", "status": "failed", "reason": err.Error()})
		}
		if ferr := f.Close(); ferr != nil {
			return fmt.Errorf("cleanup: --log: %w", ferr)
		}
	}
	w := c.App.Writer
	if c.Bool("json") {
		doc := struct {
			*merge.CleanupResult
			Error string `json:"error,omitempty"`
		}{CleanupResult: res}
		if err != nil {
			doc.Error = err.Error()
		}
		if jerr := writeJSON(w, doc); jerr != nil {
			return jerr
		}
		if err != nil {
			return err
		}
	} else {
		for _, a := range res.Actions {
			switch a.Kind {
			case "merge":
				fmt.Fprintf(w, "%-11s merge %s into %s", a.Status, a.Child, a.Parent)
				if a.Status == "done" {
					fmt.Fprintf(w, " (parent %s → %s, id %s → %s; freed %s)", human(a.ParentSizeBefore), human(a.ParentSizeAfter), a.ParentIDBefore, a.ParentIDAfter, human(a.Freed))
				} else if a.Status == "planned" {
					fmt.Fprintf(w, " (parent grows %s, frees %s)", human(a.Growth), human(a.Freed))
				}
			case "clear-flag":
				fmt.Fprintf(w, "%-11s disk_merge_pending set to False in %s (VM %q: no merge left pending)", a.Status, a.Child, a.VM)
			case "resume":
				if a.Discard {
					fmt.Fprintf(w, "%-11s finish the interrupted removal WITHOUT MERGING (merge --remove-leaf) of %s (journal %s)", a.Status, a.Child, a.Journal)
				} else {
					fmt.Fprintf(w, "%-11s finish the interrupted merge of %s into %s (journal %s)", a.Status, a.Child, a.Parent, a.Journal)
				}
			default:
				fmt.Fprintf(w, "%-11s remove orphan %s (%s, id %s)", a.Status, a.Child, human(a.ChildSize), a.ChildID)
			}
			fmt.Fprintln(w)
			if a.Reason != "" {
				fmt.Fprintf(w, "            %s\n", a.Reason)
			}
			for _, n := range a.Notes {
				fmt.Fprintf(w, "            note: %s\n", n)
			}
		}
		if err != nil {
			return err
		}
		if len(res.Actions) == 0 {
			fmt.Fprintln(w, "nothing to do")
		} else if res.DryRun {
			fmt.Fprintln(w, "dry run: nothing was changed")
		}
	}
	failed := false
	for _, a := range res.Actions {
		if a.Status == "failed" {
			failed = true
		}
	}
	switch {
	case failed:
		return silentExit(exitError)
	case res.NeedsSpace > 0:
		return silentExit(exitFindings)
	case res.Done == 0:
		return silentExit(exitNothing)
	}
	return nil
}
