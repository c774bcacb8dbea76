package main

import (
	"bufio"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/vhd"
)

func cmdConvert() *cli.Command {
	return &cli.Command{
		Name:      "convert",
		Usage:     "flatten a disk's whole chain into a standalone disk (raw, VHD or VHDX)",
		ArgsUsage: "SRC DST",
		Description: `Reads SRC through its whole parent chain and writes the virtual disk as a
standalone file, like Convert-VHD or Edit Disk's "merge to a new disk". SRC and
its parents are only read. DST must not exist; it is written under a temporary
name beside DST and renamed when complete. Raw output is sparse where the disk
reads zeros; "-" as DST streams raw bytes to standard output.

The format comes from DST's extension when --format is not given (.vhd/.avhd,
.vhdx/.avhdx, anything else raw).

Examples:
   hvsnap convert web01_8D1E....avhdx web01-flat.vhdx
   hvsnap convert --type fixed disk.avhd disk-fixed.vhd
   hvsnap convert disk.avhdx disk.raw
   hvsnap convert disk.avhdx - | gzip > disk.raw.gz`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "format", Usage: "raw, vhd or vhdx (default: from DST's extension)"},
			&cli.StringFlag{Name: "type", Value: "dynamic", Usage: "fixed or dynamic (VHD/VHDX output)"},
			&cli.StringFlag{Name: "block-size", Usage: "block size of VHD/VHDX output"},
			pathMapFlag, jsonFlag,
		},
		Action: runConvert,
	}
}

func runConvert(c *cli.Context) error {
	if c.NArg() != 2 {
		return usagef("convert: expected SRC and DST, got %d arguments (see hvsnap convert --help)", c.NArg())
	}
	src, dst := c.Args().Get(0), c.Args().Get(1)
	pm, err := pathMap(c)
	if err != nil {
		return err
	}
	var o vhd.ConvertOptions
	switch f := strings.ToLower(c.String("format")); {
	case f != "":
		o.Format = vhd.Format(f)
	case dst == "-":
		o.Format = vhd.FormatRaw
	default:
		if f, ok := vhd.FormatFromExt(dst); ok {
			o.Format = f
		} else {
			o.Format = vhd.FormatRaw
		}
	}
	switch o.Format {
	case vhd.FormatRaw, vhd.FormatVHD, vhd.FormatVHDX:
	default:
		return usagef("convert: --format must be raw, vhd or vhdx, not %q", o.Format)
	}
	if dst == "-" && o.Format != vhd.FormatRaw {
		return usagef("convert: only raw output can go to standard output")
	}
	o.Type = vhd.DiskType(strings.ToLower(c.String("type")))
	if o.Type != vhd.TypeFixed && o.Type != vhd.TypeDynamic {
		return usagef("convert: --type must be fixed or dynamic, not %q", o.Type)
	}
	if s := c.String("block-size"); s != "" {
		n, err := parseSize(s)
		if err != nil || n <= 0 || n > 1<<31 {
			return usagef("convert: --block-size %q: give a power of two such as 2M", s)
		}
		o.BlockSize = uint32(n)
	}
	ch, err := vhd.OpenChain(src, &vhd.Options{ReadOnly: true, PathMap: pm})
	if err != nil {
		return err
	}
	defer ch.Close()
	rep := reporter(c)
	if dst == "-" {
		w := bufio.NewWriterSize(c.App.Writer, 1<<20)
		if err := vhd.WriteRaw(ch, w, rep); err != nil {
			return err
		}
		return w.Flush()
	}
	res, err := vhd.Convert(ch, dst, o, rep)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, struct {
			Schema int    `json:"schema"`
			Source string `json:"source"`
			Layers int    `json:"layers"`
			*vhd.ConvertResult
		}{jsonSchema, src, len(ch.Layers), res})
	}
	fmt.Fprintf(c.App.Writer, "converted %s (%d layer(s)) to %s: %s %s, virtual size %s, %s of data, file %s\n",
		src, len(ch.Layers), filepath.Clean(dst), strings.ToUpper(string(res.Format)), res.Type, human(res.VirtualSize), human(res.DataBytes), human(res.FileSize))
	return nil
}
