package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/importer"
)

func cmdImport() *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "verify and import an hvsnap package (folder, .tar.lz4 or -) into a folder",
		ArgsUsage: "PACKAGE|-",
		Description: `Reads a package made by hvsnap export: a folder, a .tar.lz4 archive, or "-"
(standard input). The listing is checked first: hostile names (absolute,
"..", symlinks, hard links, devices, duplicates) are refused, and the free
space of the destination volume must hold the package ("not enough space"
names the bytes needed and free). Files are staged under
--to/.hvsnap-import-<name>/ while their SHA-256 is verified; then the parent
locators of the differencing disks are re-pointed to their new places
(relative and absolute paths; linkage IDs untouched), disk paths in XML
configurations are rewritten (VMCX is never written: the PowerShell fix is
printed), and the VM folder is renamed into place as --to/<name>.

On failure nothing is left outside the staging folder; it is removed, or
kept when the input ended early so that --resume continues from it.
--verify-only checks a package without writing anything. --new-id gives the
VM a new ID (XML configurations, like Import-VM -GenerateNewId).
--path-map maps the destination to the Windows path the Hyper-V host will
see, for the absolute paths written into locators and configurations.

Examples:
   hvsnap import --to /mnt/e/VMs web01.tar.lz4
   hvsnap import --to /mnt/e/VMs --path-map 'E:\VMs=/mnt/e/VMs' /mnt/backup/web01
   hvsnap import --verify-only web01.tar.lz4
   ssh old hvsnap export --to - /mnt/d/VMs/web01 | hvsnap import --to /mnt/e/VMs -
   hvsnap import --resume --to /mnt/e/VMs web01.tar.lz4`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Value: ".", Usage: "destination folder (the VM lands in DIR/<name>)"},
			&cli.BoolFlag{Name: "new-id", Usage: "give the VM a new ID (XML configurations)"},
			&cli.BoolFlag{Name: "verify-only", Usage: "verify the package, write nothing"},
			&cli.BoolFlag{Name: "resume", Usage: "continue an interrupted import from its staging folder"},
			pathMapFlag, jsonFlag,
		},
		Action: runImport,
	}
}

func runImport(c *cli.Context) error {
	src, err := oneArg(c, "package")
	if err != nil {
		return err
	}
	pm, err := pathMap(c)
	if err != nil {
		return err
	}
	o := importer.Options{
		To: c.String("to"), Stdin: os.Stdin, NewID: c.Bool("new-id"), VerifyOnly: c.Bool("verify-only"),
		Resume: c.Bool("resume"), PathMap: pm,
	}
	res, err := importer.Import(src, o, reporter(c))
	if err != nil {
		if errors.Is(err, importer.ErrTruncated) && !o.VerifyOnly {
			return fmt.Errorf("%w (the staged files are kept: run the same command with --resume)", err)
		}
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, struct {
			Schema int `json:"schema"`
			*importer.Result
		}{jsonSchema, res})
	}
	w := c.App.Writer
	if res.VerifyOnly {
		fmt.Fprintf(w, "verified %s: %d files, %s, every SHA-256 matches\n", src, res.Files, human(res.Bytes))
		return nil
	}
	fmt.Fprintf(w, "imported %s to %s: %d files, %s verified", src, res.Path, res.Files, human(res.Bytes))
	if res.Resumed > 0 {
		fmt.Fprintf(w, " (%d kept from the interrupted import)", res.Resumed)
	}
	fmt.Fprintln(w)
	for _, r := range res.Relinked {
		fmt.Fprintf(w, "  re-pointed %s → %s\n", r.Child, r.RelativePath)
	}
	for _, p := range res.Rewritten {
		fmt.Fprintf(w, "  rewrote disk paths in %s\n", p)
	}
	if res.OldVMID != "" {
		fmt.Fprintf(w, "  new VM ID %s (was %s)\n", res.VMID, res.OldVMID)
	}
	for _, h := range res.Hints {
		fmt.Fprintln(w, h)
	}
	return nil
}
