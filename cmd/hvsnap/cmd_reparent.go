package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/vhd"
)

func cmdReparent() *cli.Command {
	return &cli.Command{
		Name:      "reparent",
		Usage:     "point a differencing disk at its parent's new location, like Set-VHD -ParentPath",
		ArgsUsage: "CHILD",
		Description: `Rewrites the parent locator of CHILD (relative path, and the Windows absolute
path when --path-map maps the new parent) so it finds PATH. The new parent must
be the same disk the child was made from (VHDX DataWriteGuid / VHD unique ID);
otherwise it refuses, unless --ignore-id-mismatch is given, in which case the
child records the new parent's identity and hvsnap says so. Reading the chain
afterwards is only correct if the new parent really holds the same data.

Examples:
   hvsnap reparent --parent /mnt/e/VMs/base.vhdx /mnt/e/VMs/base_6F1C....avhdx
   hvsnap reparent --parent base.vhdx --path-map 'E:\VMs=/mnt/e/VMs' child.avhdx`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "parent", Required: true, Usage: "the parent disk's path"},
			&cli.BoolFlag{Name: "ignore-id-mismatch", Usage: "link even if the parent's identity differs (recovery only)"},
			pathMapFlag, jsonFlag,
		},
		Action: runReparent,
	}
}

func runReparent(c *cli.Context) error {
	child, err := oneArg(c, "CHILD")
	if err != nil {
		return err
	}
	pm, err := pathMap(c)
	if err != nil {
		return err
	}
	if err := finishInterrupted(c, pm, child); err != nil {
		return err
	}
	res, err := vhd.Reparent(child, c.String("parent"), vhd.ReparentOptions{PathMap: pm, IgnoreIDMismatch: c.Bool("ignore-id-mismatch")})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, map[string]any{
			"schema": jsonSchema, "child": res.Child, "parent": res.Parent, "linkage_ok": res.LinkageOK,
			"old_locator": res.OldLocator.Entries, "new_locator": res.NewLocator.Entries, "note": res.Note,
		})
	}
	fmt.Fprintf(c.App.Writer, "%s now points at %s\n", res.Child, res.Parent)
	for _, e := range res.NewLocator.Entries {
		fmt.Fprintf(c.App.Writer, "  %-20s %s\n", e.Key, e.Value)
	}
	if res.Note != "" {
		fmt.Fprintf(c.App.Writer, "note: %s\n", res.Note)
	}
	return nil
}
