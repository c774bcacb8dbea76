package main

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/hvsnap/hvsnap/scenarios"
)

// exitManual: runbook --execute stopped at a manual step.
const exitManual = 4

func cmdRunbook() *cli.Command {
	var ids []string
	for _, s := range scenarios.Catalog() {
		ids = append(ids, s.ID)
	}
	return &cli.Command{
		Name:      "runbook",
		Usage:     "print (or run, with --execute) the numbered recovery steps of a scenario for this store",
		ArgsUsage: "SCENARIO [--vm VM] [--execute] [--yes] ROOT...",
		Description: `Diagnoses each ROOT (as hvsnap diagnose) and prints the plan of every
detection of SCENARIO (` + strings.Join(ids, ", ") + `),
or only those of VM with --vm: numbered steps with the exact hvsnap commands
for this store, the actions hvsnap performs itself (clearing
disk_merge_pending once the merge it announced is done, pointing a VM's drive
at a new disk, moving unusable files aside — never deleting them), and the
manual steps for the Hyper-V host.

--execute runs the steps one by one (asking once unless --yes; required when
not on a terminal). It stops at the first failure with the command that
resumes (plans are computed from the store as it is, so running the runbook
again continues where it stopped; an interrupted merge or relocation is
finished by its --resume first), and at a manual step, saying what to do
before running it again.

Exit codes: 0 printed, or every step ran; 4 stopped at a manual step (do it,
then run the same command again); 1 a step failed; 2 usage error.

Examples:
   hvsnap runbook merge-pending /mnt/d/VMs
   hvsnap runbook merge-cannot-fit --vm web --execute --yes /mnt/d/VMs /mnt/e
   hvsnap runbook broken-chain --path-map 'D:\VMs=/mnt/d/VMs' /mnt/d/VMs`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "vm", Usage: "only the detections of the VM named `NAME`"},
			&cli.BoolFlag{Name: "execute", Usage: "run the steps"},
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "do not ask before running"},
			jsonFlag,
		}, diagnoseFlags()...),
		Action: runRunbook,
	}
}

func runRunbook(c *cli.Context) error {
	pos, err := interspersed(c)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return usagef("runbook: expected SCENARIO and at least one ROOT (see hvsnap runbook --help)")
	}
	scenario, given := pos[0], pos[1:]
	if !scenarios.Known(scenario) {
		var ids []string
		for _, s := range scenarios.Catalog() {
			ids = append(ids, s.ID)
		}
		return usagef("runbook: unknown scenario %q (one of: %s)", scenario, strings.Join(ids, ", "))
	}
	o, roots, notes, err := diagnoseSetup(c, "runbook", given)
	if err != nil {
		return err
	}
	execute := c.Bool("execute")
	if execute && !c.Bool("yes") {
		f, ok := c.App.Reader.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) {
			return usagef("runbook: --execute needs --yes when not on a terminal")
		}
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt)
	defer stop()
	dg, err := scenarios.Diagnose(ctx, roots, o)
	if err != nil {
		return fmt.Errorf("runbook: %w", err)
	}
	sel := dg.Select(scenario, c.String("vm"))
	w := c.App.Writer
	if c.Bool("json") && !execute {
		return writeJSON(w, map[string]any{"schema": jsonSchema, "scenario": scenario, "roots": roots, "detections": orEmpty(sel)})
	}
	for _, n := range notes {
		fmt.Fprintln(c.App.ErrWriter, "note: "+n)
	}
	if len(sel) == 0 {
		who := ""
		if c.String("vm") != "" {
			who = " for VM " + c.String("vm")
		}
		fmt.Fprintf(w, "runbook %s: no %s found%s under %s: nothing to do\n", scenario, scenario, who, strings.Join(roots, " "))
		return nil
	}
	var steps []scenarios.Step
	for _, x := range sel {
		writeDetection(w, 1, x)
		steps = append(steps, x.Plan...)
	}
	for i := range steps {
		steps[i].N = i + 1
	}
	if len(sel) > 1 {
		fmt.Fprintln(w, "\nall steps, in order:")
		writePlan(w, steps, 0)
	}
	if !execute {
		fmt.Fprintf(w, "\nto run these steps: %s\n", resumeLine(c, scenario, given))
		return nil
	}
	if !c.Bool("yes") {
		fmt.Fprintf(c.App.ErrWriter, "run these %d steps? [y/N] ", len(steps))
		ans, _ := bufio.NewReader(c.App.Reader).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(ans)); a != "y" && a != "yes" {
			return &exitErr{code: exitError, msg: "runbook: not confirmed; nothing was run"}
		}
	}
	resume := resumeLine(c, scenario, given)
	for _, s := range steps {
		fmt.Fprintf(w, "\n== step %d/%d: %s\n", s.N, len(steps), s.Title)
		switch s.Kind {
		case scenarios.StepManual:
			if s.Command != "" {
				fmt.Fprintf(w, "   %s\n", s.Command)
			}
			return &exitErr{code: exitManual, msg: fmt.Sprintf("runbook: step %d is manual (not something hvsnap can do here): %s. When it is done, continue with: %s", s.N, s.Title, resume)}
		case scenarios.StepAction:
			msg, err := s.Do()
			if err != nil {
				return &exitErr{code: exitError, msg: fmt.Sprintf("runbook: step %d failed: %v; fix the cause, then resume with: %s", s.N, err, resume)}
			}
			fmt.Fprintf(w, "   %s\n", msg)
		default:
			fmt.Fprintf(w, "$ %s\n", s.Command)
			code := run(append([]string{"hvsnap", "-q"}, s.Args...), w, c.App.ErrWriter)
			if code != exitOK {
				first := ""
				switch {
				case len(s.Args) > 0 && s.Args[0] == "merge":
					first = fmt.Sprintf("hvsnap merge --resume %s (finishes an interrupted merge), then ", scenarios.Quote(filepath.Dir(s.Args[len(s.Args)-1])))
				case len(s.Args) > 0 && s.Args[0] == "relocate":
					first = scenarios.CommandLine(append(append([]string{}, s.Args...), "--resume")) + " (finishes an interrupted relocation), then "
				}
				return &exitErr{code: exitError, msg: fmt.Sprintf("runbook: step %d failed (exit %d): %s; resume with: %s%s", s.N, code, s.Command, first, resume)}
			}
		}
	}
	fmt.Fprintf(w, "\nrunbook %s: all %d steps done\n", scenario, len(steps))
	return nil
}

func orEmpty(x []*scenarios.Detection) []*scenarios.Detection {
	if x == nil {
		return []*scenarios.Detection{}
	}
	return x
}

// resumeLine is the runbook command that runs the steps (again).
func resumeLine(c *cli.Context, scenario string, roots []string) string {
	args := []string{"runbook", scenario}
	if v := c.String("vm"); v != "" {
		args = append(args, "--vm", v)
	}
	args = append(args, "--execute", "--yes")
	for _, p := range c.StringSlice("path-map") {
		args = append(args, "--path-map", p)
	}
	for _, f := range []string{"deep-chain", "old-checkpoint", "critical-free", "warning-free", "saved-state-min", "backup-dir", "to"} {
		if c.IsSet(f) {
			args = append(args, "--"+f, c.String(f))
		}
	}
	return scenarios.CommandLine(append(args, roots...))
}
