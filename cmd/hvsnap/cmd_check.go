package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/internal/journal"
	"github.com/hvsnap/hvsnap/vhd"
)

func cmdCheck() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "validate a disk and its parent chain, like Test-VHD but with reasons",
		ArgsUsage: "PATH",
		Description: `Checks the file's structure (checksums, headers, region and metadata rules,
block table entries past the end of the file or overlapping, block states not
allowed for the disk type, log state) and the chain (missing parent, linkage
mismatch, sector or size mismatch, parent timestamp). Nothing is written: a
dirty VHDX log is replayed in memory only.

Exit codes: 0 healthy (warnings may be printed), 3 problems found (or warnings
with --strict), 1 the file could not be checked (missing, unreadable).

Examples:
   hvsnap check disk.avhdx
   hvsnap check --json --path-map 'C:\VMs=/mnt/c/VMs' disk.avhdx`,
		Flags: []cli.Flag{jsonFlag, pathMapFlag,
			&cli.BoolFlag{Name: "strict", Usage: "treat warnings as findings (exit 3)"}},
		Action: runCheck,
	}
}

type checkJSON struct {
	Schema   int           `json:"schema"`
	Path     string        `json:"path"`
	Healthy  bool          `json:"healthy"`
	Findings []vhd.Finding `json:"findings"`
}

func runCheck(c *cli.Context) error {
	path, err := oneArg(c, "PATH")
	if err != nil {
		return err
	}
	pm, err := pathMap(c)
	if err != nil {
		return err
	}
	findings, err := vhd.Check(path, &vhd.Options{ReadOnly: true, PathMap: pm})
	if err != nil {
		return err
	}
	findings = append(findings, unfinishedFindings(path, pm)...)
	bad := false
	for _, f := range findings {
		if f.Severity == vhd.SevError || c.Bool("strict") {
			bad = true
		}
	}
	if c.Bool("json") {
		if err := writeJSON(c.App.Writer, checkJSON{Schema: jsonSchema, Path: path, Healthy: !bad, Findings: findings}); err != nil {
			return err
		}
	} else {
		for _, f := range findings {
			fmt.Fprintf(c.App.Writer, "%-7s %s: %s: %s\n", f.Severity, f.Code, f.Path, f.Message)
		}
		if bad {
			fmt.Fprintf(c.App.Writer, "%s: %d problem(s) found\n", path, len(findings))
		} else {
			fmt.Fprintf(c.App.Writer, "%s: healthy\n", path)
		}
	}
	if bad {
		return silentExit(exitFindings)
	}
	return nil
}

// unfinishedFindings: a warning for each unfinished hvsnap operation (its
// journal next to the files) that involves a file of path's chain: until
// it is finished the chain is mid-change (other readers may reject it).
func unfinishedFindings(path string, pm vhd.PathMap) []vhd.Finding {
	files := []string{path}
	if c, err := vhd.OpenChain(path, &vhd.Options{ReadOnly: true, PathMap: pm}); err == nil {
		files = files[:0]
		for _, l := range c.Layers {
			files = append(files, l.Path())
		}
		c.Close()
	}
	js, err := journal.Involving(files...)
	if err != nil {
		return []vhd.Finding{{Code: "unfinished-operation", Severity: vhd.SevWarning, Path: path, Message: err.Error()}}
	}
	var out []vhd.Finding
	for _, j := range js {
		out = append(out, vhd.Finding{Code: "unfinished-operation", Severity: vhd.SevWarning, Path: j.Path,
			Message: fmt.Sprintf("an unfinished hvsnap %s (started %s by pid %d on %s) involves this chain; finish it: hvsnap %s --resume %s",
				j.Header.Op, j.Header.Started.Format("2006-01-02 15:04:05Z"), j.Header.PID, j.Header.Host, j.Header.Op, j.Path)})
	}
	return out
}
