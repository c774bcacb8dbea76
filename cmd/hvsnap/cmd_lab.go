package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/scenarios"
)

func cmdLab() *cli.Command {
	return &cli.Command{
		Name:      "lab",
		Usage:     "build a realistic store for a scenario on real small volumes (tmpfs), to rehearse its runbook",
		ArgsUsage: "SCENARIO --root DIR | list | verify --root DIR | teardown --root DIR",
		Description: `hvsnap lab SCENARIO --root DIR mounts small tmpfs volumes under DIR (DIR/d,
DIR/e, ...), builds VMs on them with Hyper-V XML configurations, checkpoint
trees and disks of known content, and breaks them the way the scenario says
(a full snapshot volume, a deleted checkpoint not merged, a merge that cannot
fit, a deleted .avhdx, an expanded parent, ...). It records what it built in
DIR/hvsnap-lab.json: the scenario, the volumes, the path map of the lab's
imaginary Hyper-V host, thresholds scaled to the small volumes, and each VM's
expected content hashes, so every later step can be verified.

Then: hvsnap diagnose DIR, hvsnap runbook SCENARIO --execute --yes DIR (a lab
root stands for its volumes, path map and thresholds).

Mounting needs root. As a normal user, hvsnap re-runs itself inside a private
user and mount namespace when the kernel allows it (unprivileged user
namespaces) and starts a shell there (or runs the command given after --):
the volumes exist only inside it and go when it exits. Otherwise it fails
with a clear error.

hvsnap lab list shows the scenarios; hvsnap lab verify --root DIR reads
every VM through the disk its configuration names now and compares the
content with the recorded hash (exit 1 when one differs); hvsnap lab
teardown --root DIR unmounts the volumes and removes DIR.

Examples:
   sudo hvsnap lab merge-cannot-fit --root /tmp/lab
   hvsnap diagnose /tmp/lab
   hvsnap runbook merge-cannot-fit --execute --yes /tmp/lab
   sudo hvsnap lab teardown --root /tmp/lab
   hvsnap lab paused-critical --root /tmp/lab -- hvsnap diagnose /tmp/lab   # as a normal user`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "root", Usage: "the lab's folder `DIR` (created; must be empty)"},
			jsonFlag,
		},
		Action: runLab,
	}
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16]
	}
	return h
}

func runLab(c *cli.Context) error {
	pos, err := interspersed(c)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("lab: expected a SCENARIO, list or teardown (see hvsnap lab --help)")
	}
	what := pos[0]
	rest := pos[1:]
	switch what {
	case "list":
		if c.Bool("json") {
			return writeJSON(c.App.Writer, scenarios.LabScenarios())
		}
		for _, s := range scenarios.LabScenarios() {
			fmt.Fprintf(c.App.Writer, "%-18s %s: %s\n", s.ID, s.Title, s.Summary)
		}
		return nil
	case "verify":
		root := c.String("root")
		if root == "" && len(rest) == 1 {
			root = rest[0]
		}
		if root == "" {
			return usagef("lab verify: --root DIR is required")
		}
		l, err := scenarios.ReadLab(root)
		if err != nil {
			return fmt.Errorf("lab verify: %w", err)
		}
		checks, err := scenarios.VerifyLab(l)
		if err != nil {
			return fmt.Errorf("lab verify: %w", err)
		}
		bad := 0
		if c.Bool("json") {
			if err := writeJSON(c.App.Writer, checks); err != nil {
				return err
			}
		}
		for _, k := range checks {
			if !k.OK {
				bad++
			}
			if c.Bool("json") {
				continue
			}
			state := "same content"
			if !k.OK {
				state = "DIFFERENT " + k.Err
			}
			fmt.Fprintf(c.App.Writer, "VM %-6s %s\n  disk   %s\n  sha256 %s (recorded %s)\n", k.VM, state, k.Disk, short(k.Got), short(k.Want))
		}
		if bad > 0 {
			return &exitErr{code: exitError, msg: fmt.Sprintf("lab verify: %d VM(s) do not read as recorded", bad)}
		}
		return nil
	case "teardown":
		root := c.String("root")
		if root == "" && len(rest) == 1 {
			root = rest[0]
		}
		if root == "" {
			return usagef("lab teardown: --root DIR is required")
		}
		if err := scenarios.TeardownLab(root); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "lab %s unmounted and removed\n", root)
		return nil
	}
	known := false
	for _, s := range scenarios.LabScenarios() {
		if s.ID == what {
			known = true
		}
	}
	if !known {
		return usagef("lab: unknown scenario %q (hvsnap lab list)", what)
	}
	root := c.String("root")
	if root == "" {
		return usagef("lab: --root DIR is required")
	}
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
	}
	if os.Geteuid() != 0 && os.Getenv("HVSNAP_LAB_NS") == "" && os.Getenv("HVSNAP_LAB_NO_NS") == "" {
		return labInNamespace(c, what, root, rest)
	}
	l, err := scenarios.BuildLab(what, root)
	if err != nil {
		if errors.Is(err, scenarios.ErrNeedRoot) {
			return fmt.Errorf("lab: %w", err)
		}
		return err
	}
	if c.Bool("json") {
		if err := writeJSON(c.App.Writer, l); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.App.Writer, "lab %s built in %s\n", l.Scenario, l.Root)
		for _, s := range l.Summary() {
			fmt.Fprintln(c.App.Writer, "  "+s)
		}
		fmt.Fprintf(c.App.Writer, "  recorded in %s/%s (expected content hashes)\n", l.Root, scenarios.LabFile)
		fmt.Fprintf(c.App.Writer, "next:\n  hvsnap diagnose %s\n", scenarios.Quote(l.Root))
		if l.Scenario != scenarios.Healthy {
			fmt.Fprintf(c.App.Writer, "  hvsnap runbook %s %s\n  hvsnap runbook %s --execute --yes %s\n", l.Scenario, scenarios.Quote(l.Root), l.Scenario, scenarios.Quote(l.Root))
		}
		fmt.Fprintf(c.App.Writer, "  hvsnap lab teardown --root %s\n", scenarios.Quote(l.Root))
	}
	if os.Getenv("HVSNAP_LAB_NS") != "" {
		// Inside the private namespace: the volumes live as long as we do.
		defer scenarios.TeardownLab(l.Root)
		cmd := rest
		if len(cmd) == 0 {
			sh := os.Getenv("SHELL")
			if sh == "" {
				sh = "/bin/sh"
			}
			cmd = []string{sh}
			fmt.Fprintf(c.App.ErrWriter, "hvsnap lab: the lab's volumes exist only inside this shell (a private mount namespace); exit to tear it down\n")
		}
		x := exec.Command(cmd[0], cmd[1:]...)
		x.Stdin, x.Stdout, x.Stderr = os.Stdin, c.App.Writer, c.App.ErrWriter
		if err := x.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return silentExit(ee.ExitCode())
			}
			return err
		}
	}
	return nil
}

// labInNamespace re-runs the lab inside a private user and mount namespace
// (not root) and runs rest (or a shell) there.
func labInNamespace(c *cli.Context, scenario, root string, rest []string) error {
	args := []string{"lab", scenario, "--root", root}
	if c.Bool("json") {
		args = append(args, "--json")
	}
	if len(rest) > 0 {
		args = append(append(args, "--"), rest...)
	}
	cmd, err := inNamespace(args)
	if err == nil {
		err = cmd.Start()
		if err == nil {
			err = cmd.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return silentExit(ee.ExitCode())
			}
			return err
		}
	}
	return fmt.Errorf("lab: mounting the lab's tmpfs volumes needs root, and a private user and mount namespace could not be created (%v): run it as root (sudo hvsnap lab %s --root %s), or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces)", err, scenario, strings.TrimSpace(root))
}
