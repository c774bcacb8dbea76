package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/vhd"
)

func cmdInfo() *cli.Command {
	return &cli.Command{
		Name:      "info",
		Usage:     "describe a disk file, like Get-VHD (with --chain: every layer)",
		ArgsUsage: "PATH",
		Description: `Prints format, type, sizes, IDs and, for a differencing disk, its parent
locator entries and the parent they resolve to. Nothing is written.

Examples:
   hvsnap info 'Virtual Hard Disks/web01_8D1E2C3A-....avhdx'
   hvsnap info --chain --json disk.avhdx
   hvsnap info --path-map 'D:\Hyper-V=/mnt/d/Hyper-V' disk.avhdx`,
		Flags: []cli.Flag{jsonFlag, pathMapFlag,
			&cli.BoolFlag{Name: "chain", Usage: "also describe every parent, leaf first"}},
		Action: runInfo,
	}
}

// infoJSON is the JSON shape of one disk (README: "info --json").
type infoJSON struct {
	Schema             int           `json:"schema,omitempty"`
	Path               string        `json:"path"`
	Format             vhd.Format    `json:"format"`
	Type               vhd.DiskType  `json:"type"`
	VirtualSize        int64         `json:"virtual_size"`
	FileSize           int64         `json:"file_size"`
	DataBytes          int64         `json:"data_bytes"`
	BlockSize          uint32        `json:"block_size"`
	LogicalSectorSize  uint32        `json:"logical_sector_size"`
	PhysicalSectorSize uint32        `json:"physical_sector_size"`
	DiskID             string        `json:"disk_id"`
	DataWriteGUID      string        `json:"data_write_guid,omitempty"`
	FileWriteGUID      string        `json:"file_write_guid,omitempty"`
	UniqueID           string        `json:"unique_id,omitempty"`
	Creator            string        `json:"creator,omitempty"`
	Created            *time.Time    `json:"created,omitempty"`
	LogReplayed        bool          `json:"log_replayed,omitempty"`
	Parent             *parentJSON   `json:"parent,omitempty"`
	Chain              []infoJSON    `json:"chain,omitempty"`
	Warnings           []vhd.Finding `json:"warnings,omitempty"`
}

type parentJSON struct {
	Locator         []vhd.LocatorEntry `json:"locator"`
	Linkage         string             `json:"linkage,omitempty"`
	Linkage2        string             `json:"linkage2,omitempty"`
	ParentUniqueID  string             `json:"parent_unique_id,omitempty"`
	ParentTimestamp *time.Time         `json:"parent_timestamp,omitempty"`
	ParentName      string             `json:"parent_name,omitempty"`
	Resolved        *string            `json:"resolved"`
	Via             string             `json:"via,omitempty"`
	LinkageOK       bool               `json:"linkage_ok"`
	Error           string             `json:"error,omitempty"`
}

func describeImage(im *vhd.Image) (infoJSON, error) {
	inf := im.Info()
	j := infoJSON{
		Path: inf.Path, Format: inf.Format, Type: inf.Type, VirtualSize: inf.VirtualSize,
		FileSize: inf.FileSize, BlockSize: inf.BlockSize, LogicalSectorSize: inf.LogicalSectorSize,
		PhysicalSectorSize: inf.PhysicalSectorSize, DiskID: inf.DiskID.String(), Creator: inf.Creator,
		LogReplayed: inf.LogReplayed,
	}
	if inf.Format == vhd.FormatVHDX {
		j.DataWriteGUID = inf.DataWriteGUID.String()
		j.FileWriteGUID = inf.FileWriteGUID.String()
	} else {
		j.UniqueID = inf.UniqueID.String()
		if !inf.Created.IsZero() {
			t := inf.Created.UTC()
			j.Created = &t
		}
	}
	err := im.Extents(func(r vhd.Run) error {
		if r.State == vhd.StateData {
			j.DataBytes += r.Len
		}
		return nil
	})
	if err != nil {
		return j, err
	}
	if loc := im.Parent(); loc != nil {
		p := &parentJSON{Locator: loc.Entries, Linkage: loc.Linkage, Linkage2: loc.Linkage2, ParentName: loc.ParentName}
		if p.Locator == nil {
			p.Locator = []vhd.LocatorEntry{}
		}
		if inf.Format == vhd.FormatVHD {
			p.ParentUniqueID = loc.ParentUniqueID.String()
			if !loc.ParentTimestamp.IsZero() {
				t := loc.ParentTimestamp.UTC()
				p.ParentTimestamp = &t
			}
		}
		j.Parent = p
	}
	return j, nil
}

func runInfo(c *cli.Context) error {
	path, err := oneArg(c, "PATH")
	if err != nil {
		return err
	}
	pm, err := pathMap(c)
	if err != nil {
		return err
	}
	opts := &vhd.Options{ReadOnly: true, PathMap: pm}
	im, err := vhd.Open(path, opts)
	if err != nil {
		return err
	}
	top, err := describeImage(im)
	im.Close()
	if err != nil {
		return err
	}
	top.Schema = jsonSchema
	if top.Parent != nil {
		// Resolve the chain; a mismatched parent is still shown (linkage_ok false).
		o := *opts
		o.IgnoreLinkage = true
		ch, err := vhd.OpenChain(path, &o)
		if err != nil {
			top.Parent.Error = errorLine(err)
		} else {
			defer ch.Close()
			r := ch.Links[0].Parent
			top.Parent.Resolved = &r
			top.Parent.Via = ch.Links[0].Via
			top.Parent.LinkageOK = ch.Links[0].LinkageOK
			top.Warnings = ch.Warnings
			if c.Bool("chain") {
				for i, layer := range ch.Layers {
					lj, err := describeImage(layer)
					if err != nil {
						return err
					}
					if i < len(ch.Links) && lj.Parent != nil {
						r := ch.Links[i].Parent
						lj.Parent.Resolved = &r
						lj.Parent.Via = ch.Links[i].Via
						lj.Parent.LinkageOK = ch.Links[i].LinkageOK
					}
					top.Chain = append(top.Chain, lj)
				}
			}
		}
	} else if c.Bool("chain") {
		t := top
		t.Schema = 0
		top.Chain = []infoJSON{t}
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, top)
	}
	printInfo(c.App.Writer, top, c.Bool("chain"))
	return nil
}

func printInfo(w io.Writer, j infoJSON, chain bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	printOne(tw, j)
	if len(j.Warnings) > 0 {
		fmt.Fprintln(tw, "Warnings:\t")
		for _, f := range j.Warnings {
			fmt.Fprintf(tw, "  %s\t%s: %s\n", f.Severity, f.Code, f.Message)
		}
	}
	if chain && len(j.Chain) > 0 {
		fmt.Fprintf(tw, "\nChain (%d layers, leaf first):\t\n", len(j.Chain))
		for i, l := range j.Chain {
			fmt.Fprintf(tw, "  [%d] %s\t%s %s, %s file, %s data\n", i, l.Path, strings.ToUpper(string(l.Format)), l.Type, human(l.FileSize), human(l.DataBytes))
		}
		for i, l := range j.Chain[1:] {
			fmt.Fprintf(tw, "\nLayer %d:\t\n", i+1)
			printOne(tw, l)
		}
	}
	tw.Flush()
}

func printOne(tw *tabwriter.Writer, j infoJSON) {
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("Path", j.Path)
	row("Format", strings.ToUpper(string(j.Format)))
	row("Type", string(j.Type))
	row("Virtual size", fmt.Sprintf("%s (%d bytes)", human(j.VirtualSize), j.VirtualSize))
	row("File size", fmt.Sprintf("%s (%d bytes)", human(j.FileSize), j.FileSize))
	row("Data held", fmt.Sprintf("%s (%d bytes)", human(j.DataBytes), j.DataBytes))
	if j.Type != vhd.TypeFixed || j.Format == vhd.FormatVHDX {
		row("Block size", human(int64(j.BlockSize)))
	}
	row("Logical sector size", fmt.Sprint(j.LogicalSectorSize))
	row("Physical sector size", fmt.Sprint(j.PhysicalSectorSize))
	if j.Format == vhd.FormatVHDX {
		row("Disk ID", j.DiskID)
		row("DataWriteGuid", j.DataWriteGUID)
		row("FileWriteGuid", j.FileWriteGUID)
	} else {
		row("Unique ID", j.UniqueID)
		if j.Created != nil {
			row("Created", j.Created.Format(time.RFC3339))
		}
	}
	if j.Creator != "" {
		row("Creator", j.Creator)
	}
	if j.LogReplayed {
		row("Log", "dirty; replayed in memory (file unchanged)")
	}
	if p := j.Parent; p != nil {
		fmt.Fprintln(tw, "Parent locator:\t")
		for _, e := range p.Locator {
			fmt.Fprintf(tw, "  %s\t%s\n", e.Key, e.Value)
		}
		if p.ParentName != "" {
			fmt.Fprintf(tw, "  parent name\t%s\n", p.ParentName)
		}
		if p.ParentUniqueID != "" {
			fmt.Fprintf(tw, "  parent unique ID\t%s\n", p.ParentUniqueID)
		}
		if p.ParentTimestamp != nil {
			fmt.Fprintf(tw, "  parent timestamp\t%s\n", p.ParentTimestamp.Format(time.RFC3339))
		}
		switch {
		case p.Resolved != nil && p.LinkageOK:
			row("Resolved parent", fmt.Sprintf("%s (via %s, linkage ok)", *p.Resolved, p.Via))
		case p.Resolved != nil:
			row("Resolved parent", fmt.Sprintf("%s (via %s, LINKAGE MISMATCH)", *p.Resolved, p.Via))
		default:
			row("Resolved parent", "none: "+p.Error)
		}
	}
}
