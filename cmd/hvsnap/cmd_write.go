package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/vhd"
)

func cmdWrite() *cli.Command {
	return &cli.Command{
		Name:      "write",
		Usage:     "write bytes into a virtual disk (for building test and rehearsal images)",
		ArgsUsage: "PATH",
		Description: `Writes the bytes of --input (or standard input), or --length bytes of --fill,
into the virtual disk at --offset. A differencing disk receives the data; its
parents are only read. Refuses a disk that other disks in its folder (or in
--children-dir) use as their parent: writing into it would corrupt them.

Examples:
   hvsnap write --offset 1M --input boot.bin disk.vhdx
   head -c 4096 /dev/urandom | hvsnap write --offset 0 child.avhdx
   hvsnap write --offset 10M --fill 0xAB --length 3M child.avhd`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "offset", Required: true, Usage: "virtual byte offset (e.g. 1M, 4096)"},
			&cli.StringFlag{Name: "input", Usage: "file to write (default: standard input)"},
			&cli.StringFlag{Name: "fill", Usage: "write --length copies of this byte (e.g. 0xAB) instead of input"},
			&cli.StringFlag{Name: "length", Usage: "number of bytes for --fill"},
			&cli.StringSliceFlag{Name: "children-dir", Usage: "also look for child disks here (repeatable)"},
			pathMapFlag,
		},
		Action: runWrite,
	}
}

func runWrite(c *cli.Context) error {
	path, err := oneArg(c, "PATH")
	if err != nil {
		return err
	}
	pm, err := pathMap(c)
	if err != nil {
		return err
	}
	off, err := parseSize(c.String("offset"))
	if err != nil {
		return usagef("write: --offset: %v", err)
	}
	if err := finishInterrupted(c, pm, path); err != nil {
		return err
	}
	var src io.Reader
	var total int64 = -1
	switch {
	case c.IsSet("fill"):
		if c.IsSet("input") {
			return usagef("write: give --input or --fill, not both")
		}
		var b uint64
		if _, err := fmt.Sscan(c.String("fill"), &b); err != nil || b > 255 {
			var x uint64
			if _, err := fmt.Sscanf(strings.ToLower(c.String("fill")), "0x%x", &x); err != nil || x > 255 {
				return usagef("write: --fill %q: give a byte value such as 0xAB or 171", c.String("fill"))
			}
			b = x
		}
		if !c.IsSet("length") {
			return usagef("write: --fill needs --length")
		}
		total, err = parseSize(c.String("length"))
		if err != nil {
			return usagef("write: --length: %v", err)
		}
		src = io.LimitReader(repeatReader(byte(b)), total)
	case c.IsSet("input"):
		f, err := os.Open(c.String("input"))
		if err != nil {
			return err
		}
		defer f.Close()
		src = f
	default:
		src = os.Stdin
	}
	dirs := append([]string{filepath.Dir(path)}, c.StringSlice("children-dir")...)
	kids, err := vhd.FindChildren(path, dirs, pm)
	if err != nil {
		return err
	}
	if len(kids) > 0 {
		return fmt.Errorf("%s: refusing to write: %d differencing disk(s) depend on it (%s); write into the newest child instead", path, len(kids), strings.Join(kids, ", "))
	}
	ch, err := vhd.OpenChain(path, &vhd.Options{PathMap: pm})
	if err != nil {
		return err
	}
	defer ch.Close()
	if off > ch.Size() {
		return fmt.Errorf("%s: offset %d is beyond the end of the virtual disk (%d bytes)", path, off, ch.Size())
	}
	rep := reporter(c)
	rep.Start("write", total)
	buf := make([]byte, 1<<20)
	written := int64(0)
	for {
		n, rerr := io.ReadFull(src, buf)
		if n > 0 {
			if off+written+int64(n) > ch.Size() {
				return fmt.Errorf("%s: data runs past the end of the virtual disk (%d bytes) at offset %d", path, ch.Size(), off+written)
			}
			if _, err := ch.WriteAt(buf[:n], off+written); err != nil {
				return err
			}
			written += int64(n)
			rep.Add(int64(n))
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	rep.Done()
	if err := ch.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "wrote %d bytes at offset %d into %s\n", written, off, path)
	return nil
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}
