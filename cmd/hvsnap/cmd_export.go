package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/export"
	"github.com/hvsnap/hvsnap/merge"
)

func cmdExport() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write a VM (or one disk chain) as a verified package: a folder or one .tar.lz4",
		ArgsUsage: "VM_DIR|DISK",
		Description: `Packages a VM folder (its configuration, checkpoint configurations, saved
state and every disk of its chains) or a single disk with its parents. The
package mirrors Hyper-V's export layout (<VM>/Virtual Machines, Snapshots,
Virtual Hard Disks) and carries hvsnap-manifest.json with the SHA-256, size
and role of every file and, for disks, format, type, IDs and the parent as a
path inside the package. Source files are only read.

--to DIR makes the folder DIR/<VM name> (default: the current folder);
--to FILE.tar.lz4 writes one archive (a POSIX tar stream in LZ4 frames:
"lz4 -dc FILE.tar.lz4 | tar -x" unpacks it too); --to - streams the archive
to standard output. Holes of sparse files are not read nor stored.

--flatten writes each drive as one standalone disk holding the VM's current
state (all checkpoints dropped); --checkpoint NAME|ID exports that
checkpoint's state as a standalone VM (like Export-VMSnapshot). --resume
continues an interrupted folder export, re-hashing what is already there.

Examples:
   hvsnap export --to /mnt/backup /mnt/d/VMs/web01
   hvsnap export --to web01.tar.lz4 --path-map 'D:\VMs=/mnt/d/VMs' /mnt/d/VMs/web01
   hvsnap export --flatten --to /mnt/e/exports /mnt/d/VMs/web01
   hvsnap export --checkpoint "Before update" --to web01-before.tar.lz4 /mnt/d/VMs/web01
   hvsnap export --to - /mnt/d/VMs/web01 | ssh host hvsnap import --to /mnt/e/VMs -
   hvsnap export --resume --to /mnt/backup /mnt/d/VMs/web01`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Value: ".", Usage: "destination: a folder, FILE.tar.lz4, or - for standard output"},
			&cli.BoolFlag{Name: "flatten", Usage: "one standalone disk per drive (current state, checkpoints dropped)"},
			&cli.StringFlag{Name: "checkpoint", Usage: "export this checkpoint (name or ID) as a standalone VM"},
			&cli.BoolFlag{Name: "resume", Usage: "continue an interrupted folder export"},
			pathMapFlag, jsonFlag,
		},
		Action: runExport,
	}
}

func runExport(c *cli.Context) error {
	src, err := oneArg(c, "VM folder or disk")
	if err != nil {
		return err
	}
	pm, err := pathMap(c)
	if err != nil {
		return err
	}
	o := export.Options{
		To: c.String("to"), Stdout: c.App.Writer, Flatten: c.Bool("flatten"), Checkpoint: c.String("checkpoint"),
		Resume: c.Bool("resume"), PathMap: pm, Tool: "hvsnap " + version,
	}
	if o.To == "-" && c.Bool("json") {
		return usagef("export: --json cannot be used with --to - (standard output carries the archive)")
	}
	res, err := export.Export(src, o, reporter(c))
	var be *export.BusyError
	if errors.As(err, &be) {
		// An interrupted merge of these disks: finish it, then export.
		for _, j := range be.Journals {
			if _, ferr := finishJournal(c, j, &merge.Options{PathMap: pm}); ferr != nil {
				return fmt.Errorf("%v; finishing it failed: %w", err, ferr)
			}
		}
		res, err = export.Export(src, o, reporter(c))
	}
	if err != nil {
		if errors.Is(err, export.ErrUsage) {
			return usagef("%v", err)
		}
		return err
	}
	if o.To == "-" {
		return nil
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, struct {
			Schema int `json:"schema"`
			*export.Result
		}{jsonSchema, res})
	}
	kind := "folder"
	if res.Archive {
		kind = "archive"
	}
	fmt.Fprintf(c.App.Writer, "exported %s to %s %s: %d files, %s", src, kind, res.Package, res.Files, human(res.Bytes))
	if res.Archive {
		fmt.Fprintf(c.App.Writer, " (%s compressed)", human(res.Written))
	}
	if res.Resumed > 0 {
		fmt.Fprintf(c.App.Writer, "; %d file(s) kept from the interrupted export after verifying them", res.Resumed)
	}
	fmt.Fprintln(c.App.Writer)
	return nil
}
