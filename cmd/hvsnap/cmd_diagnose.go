package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/scenarios"
	"github.com/hvsnap/hvsnap/space"
)

// diagnoseFlags are shared by diagnose and runbook.
func diagnoseFlags() []cli.Flag {
	def := space.DefaultThresholds()
	return []cli.Flag{
		pathMapFlag,
		&cli.IntFlag{Name: "deep-chain", Value: def.DeepChain, Usage: "a chain with more than `N` differencing disks is deep"},
		&cli.StringFlag{Name: "old-checkpoint", Value: "30d", Usage: "checkpoints older than `DURATION` are old (30d, 720h)"},
		&cli.StringFlag{Name: "critical-free", Value: "200M", Usage: "a volume with less free space than `SIZE` is critical"},
		&cli.StringFlag{Name: "warning-free", Value: "2G", Usage: "a volume with less free space than `SIZE` is a warning"},
		&cli.StringFlag{Name: "saved-state-min", Value: "64M", Usage: "report saved-state files from `SIZE`"},
		&cli.StringFlag{Name: "backup-dir", Usage: "where plans export checkpoints before they are deleted (`DIR`; default hvsnap-backups on the volume with most room)"},
		&cli.StringFlag{Name: "to", Usage: "where plans relocate VMs (`DIR`; default hvsnap-relocated on a volume with room)"},
	}
}

// diagnoseSetup reads the flags, and expands a lab root (a folder holding
// hvsnap-lab.json) into its volumes, path map and thresholds.
func diagnoseSetup(c *cli.Context, cmd string, roots []string) (scenarios.Options, []string, []string, error) {
	var notes []string
	o := scenarios.Options{}
	pm, err := pathMap(c)
	if err != nil {
		return o, nil, nil, err
	}
	th := space.DefaultThresholds()
	th.DeepChain = c.Int("deep-chain")
	if th.DeepChain < 1 {
		return o, nil, nil, usagef("%s: --deep-chain must be at least 1, not %d", cmd, th.DeepChain)
	}
	age, err := parseAge(c.String("old-checkpoint"))
	if err != nil {
		return o, nil, nil, usagef("%s: --old-checkpoint: %v", cmd, err)
	}
	th.OldCheckpointAge = int64(age.Seconds())
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"critical-free", &th.CriticalFree}, {"warning-free", &th.WarningFree}, {"saved-state-min", &th.SavedStateMin}} {
		n, err := parseSize(c.String(f.name))
		if err != nil {
			return o, nil, nil, usagef("%s: --%s: %v", cmd, f.name, err)
		}
		*f.dst = n
	}
	if th.WarningFree < th.CriticalFree {
		return o, nil, nil, usagef("%s: --warning-free (%s) is below --critical-free (%s)", cmd, human(th.WarningFree), human(th.CriticalFree))
	}
	var out []string
	for _, r := range roots {
		l, err := scenarios.ReadLab(r)
		if err != nil {
			out = append(out, r)
			continue
		}
		notes = append(notes, fmt.Sprintf("%s is a lab (%s): using its volumes, path map and thresholds", r, l.Scenario))
		out = append(out, l.Roots...)
		lpm, err := l.PathMapParsed()
		if err != nil {
			return o, nil, nil, err
		}
		if len(c.StringSlice("path-map")) == 0 {
			pm = append(pm, lpm...)
		}
		for _, f := range []string{"critical-free", "warning-free", "saved-state-min", "deep-chain", "old-checkpoint"} {
			if c.IsSet(f) {
				continue
			}
			switch f {
			case "critical-free":
				th.CriticalFree = l.Thresholds.CriticalFree
			case "warning-free":
				th.WarningFree = l.Thresholds.WarningFree
			case "saved-state-min":
				th.SavedStateMin = l.Thresholds.SavedStateMin
			case "deep-chain":
				th.DeepChain = l.Thresholds.DeepChain
			case "old-checkpoint":
				th.OldCheckpointAge = l.Thresholds.OldCheckpointAge
			}
		}
		if !c.IsSet("backup-dir") {
			o.BackupDir = l.BackupDir
		}
		if !c.IsSet("to") && l.RelocateTo != "" {
			o.RelocateTo = l.RelocateTo
		}
	}
	o.PathMap, o.Thresholds = pm, th
	if c.IsSet("backup-dir") {
		o.BackupDir = c.String("backup-dir")
	}
	if c.IsSet("to") {
		o.RelocateTo = c.String("to")
	}
	o.Progress = reporter(c)
	return o, out, notes, nil
}

func cmdDiagnose() *cli.Command {
	return &cli.Command{
		Name:      "diagnose",
		Usage:     "name the situations a VM store is in (paused-critical, merge pending or unable to fit, broken chain, ...) with evidence and a plan",
		ArgsUsage: "ROOT...",
		Description: `Analyzes each ROOT like hvsnap space (nothing is written) and reports the
situations of the Hyper-V snapshot FAQ it finds, most urgent first:

   paused-critical   the volume of a VM's differencing disks is full, or has
                     less free space than they can still grow by
   merge-cannot-fit  a pending merge needs more space than its volume has
                     (0x80070070): relocate the VM, merge there, move back
   broken-chain      a deleted or missing .avhd(x): the newest surviving
                     state, what is lost, the config fix
   expanded-parent   a disk resized under its checkpoints, the exact size
                     to restore
   merge-pending     space not reclaimed: deleted checkpoints not merged yet
   old-checkpoints   checkpoints kept for months as backups
   deep-chain        too many differencing disks in a chain
   saved-state       saved memory files
   orphaned-disks    differencing disks nothing uses

Each comes with its evidence (files, sizes, volumes, IDs) and a plan of
numbered steps with the exact commands for this store; hvsnap runbook
SCENARIO prints them alone and runs them with --execute.

A ROOT that is a lab (hvsnap lab) stands for its volumes, with the lab's
path map and thresholds unless given.

Exit codes: 0 done (whatever was found, unless --fail-on), 3 a detection at
or above --fail-on, 2 usage error, 1 the scan could not run.

Examples:
   hvsnap diagnose /mnt/d/VMs /mnt/e
   hvsnap diagnose --path-map 'D:\VMs=/mnt/d/VMs' --json /mnt/d/VMs
   hvsnap -q diagnose --fail-on critical D:\VMs`,
		Flags: append([]cli.Flag{jsonFlag,
			&cli.StringFlag{Name: "fail-on", Usage: "exit 3 when a detection is at or above `LEVEL`: warning (warning or critical) or critical"},
		}, diagnoseFlags()...),
		Action: runDiagnose,
	}
}

func runDiagnose(c *cli.Context) error {
	if c.NArg() == 0 {
		return usagef("diagnose: expected at least one ROOT folder (see hvsnap diagnose --help)")
	}
	failOn := strings.ToLower(strings.TrimSpace(c.String("fail-on")))
	if failOn != "" && failOn != scenarios.SeverityWarning && failOn != scenarios.SeverityCrit {
		return usagef("diagnose: --fail-on must be warning or critical, not %q", c.String("fail-on"))
	}
	o, roots, notes, err := diagnoseSetup(c, "diagnose", c.Args().Slice())
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt)
	defer stop()
	dg, err := scenarios.Diagnose(ctx, roots, o)
	if err != nil {
		return fmt.Errorf("diagnose: %w", err)
	}
	if c.Bool("json") {
		if err := writeJSON(c.App.Writer, dg); err != nil {
			return err
		}
	} else {
		for _, n := range notes {
			fmt.Fprintln(c.App.ErrWriter, "note: "+n)
		}
		writeDiagnosis(c.App.Writer, dg)
	}
	if failOn != "" {
		var hit []string
		for _, x := range dg.Detections {
			if scenarios.SeverityRank(x.Severity) >= scenarios.SeverityRank(failOn) {
				hit = append(hit, x.Scenario+" ("+x.Severity+")")
			}
		}
		if len(hit) > 0 {
			return &exitErr{code: exitFindings, msg: fmt.Sprintf("diagnose: %s (--fail-on %s)", strings.Join(hit, ", "), failOn)}
		}
	}
	return nil
}

func writeDiagnosis(w io.Writer, dg *scenarios.Diagnosis) {
	fmt.Fprintf(w, "hvsnap diagnose: %s\n", strings.Join(dg.Roots, " "))
	if len(dg.Unfinished) > 0 {
		fmt.Fprintf(w, "\nunfinished hvsnap operations — finish them first (until then their disks are mid-change and refused):\n")
		for _, u := range dg.Unfinished {
			fmt.Fprintf(w, "  - %s\n", u)
		}
	}
	if len(dg.Detections) == 0 && len(dg.Unfinished) > 0 {
		return
	}
	if len(dg.Detections) == 0 {
		fmt.Fprintf(w, "\nnothing to report: no paused-critical risk, pending or impossible merge, broken chain, expanded parent,\nold or deep checkpoints, saved state or orphaned disk (%d VMs, %d disks)\n", dg.Report.Summary.VMs, dg.Report.Summary.Disks)
		return
	}
	fmt.Fprintf(w, "%d situation(s), worst %s\n", len(dg.Detections), dg.Worst)
	for i, x := range dg.Detections {
		writeDetection(w, i+1, x)
	}
}

func writeDetection(w io.Writer, n int, x *scenarios.Detection) {
	fmt.Fprintf(w, "\n[%d] %s  %s — %s\n", n, strings.ToUpper(x.Severity), x.Scenario, x.Title)
	fmt.Fprintf(w, "    %s\n", x.Summary)
	if len(x.Evidence) > 0 {
		fmt.Fprintln(w, "  evidence:")
		for _, e := range x.Evidence {
			fmt.Fprintf(w, "    - %s\n", e.What)
		}
	}
	if len(x.Warnings) > 0 {
		fmt.Fprintln(w, "  warnings:")
		for _, s := range x.Warnings {
			fmt.Fprintf(w, "    ! %s\n", s)
		}
	}
	if len(x.Plan) > 0 {
		fmt.Fprintf(w, "  plan (hvsnap runbook %s", x.Scenario)
		if len(x.VMs) == 1 {
			fmt.Fprintf(w, " --vm %s", scenarios.Quote(x.VMs[0]))
		}
		fmt.Fprintln(w, " ... prints it, --execute runs it):")
		writePlan(w, x.Plan, 0)
	}
}

func writePlan(w io.Writer, steps []scenarios.Step, offset int) {
	for _, s := range steps {
		tag := ""
		switch s.Kind {
		case scenarios.StepManual:
			tag = " [manual]"
		case scenarios.StepAction:
			tag = " [hvsnap does this]"
		case scenarios.StepCheck:
			tag = " [check]"
		}
		fmt.Fprintf(w, "    %d.%s %s\n", s.N+offset, tag, s.Title)
		if s.Command != "" {
			fmt.Fprintf(w, "         %s\n", s.Command)
		}
	}
}
