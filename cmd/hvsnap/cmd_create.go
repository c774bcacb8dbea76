package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/vhd"
)

func cmdCreate() *cli.Command {
	return &cli.Command{
		Name:      "create",
		Usage:     "create a fixed, dynamic or differencing VHD/VHDX, like New-VHD",
		ArgsUsage: "PATH",
		Description: `The format comes from the extension when --format is not given (.vhd/.avhd
→ vhd, .vhdx/.avhdx → vhdx). --parent makes a differencing disk linked to that
parent (its size and sector size are inherited). PATH must not exist.

Defaults follow New-VHD: dynamic; VHDX block size 32 MiB (dynamic) or 2 MiB
(differencing, fixed); VHD block size 2 MiB; logical sector 512, physical 4096.

Examples:
   hvsnap create --size 40G base.vhdx
   hvsnap create --type fixed --size 1G --format vhd data.vhd
   hvsnap create --logical-sector-size 4096 --size 10G ssd.vhdx
   hvsnap create --parent base.vhdx base_0A1B2C3D-0000-0000-0000-000000000000.avhdx`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "format", Usage: "vhd or vhdx (default: from the extension)"},
			&cli.StringFlag{Name: "type", Usage: "fixed, dynamic or differencing (default: dynamic; differencing with --parent)"},
			&cli.StringFlag{Name: "size", Usage: "virtual size, e.g. 40G, 512MiB (not for differencing)"},
			&cli.StringFlag{Name: "block-size", Usage: "block size, e.g. 2M, 32M"},
			&cli.IntFlag{Name: "logical-sector-size", Usage: "512 or 4096 (VHDX only)"},
			&cli.IntFlag{Name: "physical-sector-size", Usage: "512 or 4096 (VHDX only)"},
			&cli.StringFlag{Name: "parent", Usage: "parent disk: make a differencing disk"},
			pathMapFlag, jsonFlag,
		},
		Action: runCreate,
	}
}

func runCreate(c *cli.Context) error {
	path, err := oneArg(c, "PATH")
	if err != nil {
		return err
	}
	pm, err := pathMap(c)
	if err != nil {
		return err
	}
	spec := vhd.CreateSpec{Type: vhd.DiskType(strings.ToLower(c.String("type"))), Parent: c.String("parent")}
	if f := strings.ToLower(c.String("format")); f != "" {
		spec.Format = vhd.Format(f)
	} else if f, ok := vhd.FormatFromExt(path); ok {
		spec.Format = f
	} else {
		return usagef("create: cannot tell the format from %q: give --format vhd|vhdx or use a .vhd/.vhdx/.avhd/.avhdx name", path)
	}
	if s := c.String("size"); s != "" {
		if spec.Size, err = parseSize(s); err != nil {
			return usagef("create: --size: %v", err)
		}
	} else if spec.Parent == "" {
		return usagef("create: --size is required (e.g. --size 40G) unless --parent is given")
	}
	if s := c.String("block-size"); s != "" {
		n, err := parseSize(s)
		if err != nil || n <= 0 || n > 1<<31 {
			return usagef("create: --block-size %q: give a power of two such as 2M or 32M", s)
		}
		spec.BlockSize = uint32(n)
	}
	spec.LogicalSectorSize = uint32(c.Int("logical-sector-size"))
	spec.PhysicalSectorSize = uint32(c.Int("physical-sector-size"))
	im, err := vhd.Create(path, spec, &vhd.Options{PathMap: pm})
	if err != nil {
		return err
	}
	j, derr := describeImage(im)
	if err := im.Close(); err != nil {
		return err
	}
	if derr != nil {
		return derr
	}
	if c.Bool("json") {
		j.Schema = jsonSchema
		return writeJSON(c.App.Writer, j)
	}
	what := fmt.Sprintf("%s %s", strings.ToUpper(string(j.Format)), j.Type)
	fmt.Fprintf(c.App.Writer, "created %s: %s, virtual size %s, block size %s\n", path, what, human(j.VirtualSize), human(int64(j.BlockSize)))
	if spec.Parent != "" {
		fmt.Fprintf(c.App.Writer, "parent: %s\n", spec.Parent)
	}
	return nil
}
