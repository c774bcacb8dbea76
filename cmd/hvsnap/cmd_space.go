package main

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hvsnap/hvsnap/internal/fsutil"
	"github.com/hvsnap/hvsnap/space"
)

func cmdSpace() *cli.Command {
	def := space.DefaultThresholds()
	return &cli.Command{
		Name:      "space",
		Usage:     "analyze VM stores: volumes, checkpoint chains, reclaimable space, merge needs, verdicts",
		ArgsUsage: "ROOT...",
		Description: `Scans each ROOT (a folder of VMs, e.g. a mounted C:\ProgramData\Microsoft\
Windows\Hyper-V or D:\VMs) for VM configurations (XML, VMCX), disk files and
saved-state files, and reads every disk's headers, block table and parent
locator (never its payload). Nothing is written to the store.

Reports, per volume, its size and free space, the largest merge need (the
peak extra space deleting checkpoints needs now, block-exact), how much the
differencing disks in use can still grow, and a verdict:
   critical  a merge cannot fit, or the differencing disks can outgrow the
             free space (running VMs pause), or free < --critical-free
   warning   free < --warning-free
   ok        otherwise
then each VM with its checkpoint trees, the chains no VM uses, and the
findings (orphaned, broken, expanded-parent, merge-pending, deep, old,
saved state, unreadable or missing disks, low space).

The text report goes to standard output, or the whole model as JSON with
--json. --html and --prom write files in addition (each written under a
temporary name and renamed, so readers never see a partial file).

Exit codes: 0 done (whatever the verdicts, unless --fail-on), 3 a volume's
verdict is at or above --fail-on (warning means warning or critical), 2 usage
error, 1 the scan could not run or a file could not be written.

Examples:
   hvsnap space /mnt/d/VMs
   hvsnap space --path-map 'D:\VMs=/mnt/d/VMs' --path-map 'E:\=/mnt/e' /mnt/d/VMs /mnt/e
   hvsnap space --json /mnt/d/VMs > space.json
   hvsnap space --html report.html /mnt/d/VMs
   hvsnap -q space --prom /var/lib/node_exporter/textfile/hvsnap.prom --fail-on critical /mnt/d/VMs
   hvsnap space --deep-chain 3 --old-checkpoint 14d --warning-free 20G /mnt/d/VMs`,
		Flags: []cli.Flag{
			jsonFlag, pathMapFlag,
			&cli.StringFlag{Name: "html", Usage: "also write a self-contained HTML report to `FILE`"},
			&cli.StringFlag{Name: "prom", Usage: "also write Prometheus metrics (node_exporter textfile collector) to `FILE`"},
			&cli.StringFlag{Name: "fail-on", Usage: "exit 3 when a volume's verdict is at or above `LEVEL`: warning (warning or critical) or critical"},
			&cli.IntFlag{Name: "deep-chain", Value: def.DeepChain, Usage: "report chains with more than `N` differencing disks"},
			&cli.StringFlag{Name: "old-checkpoint", Value: "30d", Usage: "report checkpoint disks older than `DURATION` (30d, 720h)"},
			&cli.StringFlag{Name: "critical-free", Value: "200M", Usage: "a volume with less free space than `SIZE` is critical"},
			&cli.StringFlag{Name: "warning-free", Value: "2G", Usage: "a volume with less free space than `SIZE` is a warning"},
		},
		Action: runSpace,
	}
}

func runSpace(c *cli.Context) error {
	roots := c.Args().Slice()
	if len(roots) == 0 {
		return usagef("space: expected at least one ROOT folder (see hvsnap space --help)")
	}
	failOn := space.Verdict("")
	switch f := strings.ToLower(strings.TrimSpace(c.String("fail-on"))); f {
	case "":
	case string(space.VerdictWarning), string(space.VerdictCritical):
		failOn = space.Verdict(f)
	default:
		return usagef("space: --fail-on must be warning or critical, not %q", c.String("fail-on"))
	}
	th, err := spaceThresholds(c)
	if err != nil {
		return err
	}
	pm, err := pathMap(c)
	if err != nil {
		return err
	}
	for _, f := range []string{"html", "prom"} {
		if c.IsSet(f) && c.String(f) == "" {
			return usagef("space: --%s needs a file name", f)
		}
	}

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt)
	defer stop()
	rep, err := space.Analyze(ctx, roots, space.Options{PathMap: pm, Thresholds: th, Progress: reporter(c)})
	if err != nil {
		return fmt.Errorf("space: %w", err)
	}

	if c.Bool("json") {
		err = writeJSON(c.App.Writer, rep)
	} else {
		err = space.WriteText(c.App.Writer, rep)
	}
	if err != nil {
		return err
	}
	if p := c.String("html"); p != "" {
		if err := writeFileAtomic(p, func(b *bytes.Buffer) error { return space.WriteHTML(b, rep) }); err != nil {
			return fmt.Errorf("space: --html: %w", err)
		}
	}
	if p := c.String("prom"); p != "" {
		if err := writeFileAtomic(p, func(b *bytes.Buffer) error { return space.WriteProm(b, rep) }); err != nil {
			return fmt.Errorf("space: --prom: %w", err)
		}
	}

	if failOn != "" {
		var hit []string
		for _, v := range rep.Volumes {
			if v.Verdict.Rank() >= failOn.Rank() {
				hit = append(hit, fmt.Sprintf("%s is %s", v.Mount, v.Verdict))
			}
		}
		if len(hit) == 0 && rep.Summary.Worst.Rank() >= failOn.Rank() {
			hit = append(hit, "worst verdict "+string(rep.Summary.Worst))
		}
		if len(hit) > 0 {
			return &exitErr{code: exitFindings, msg: fmt.Sprintf("space: %s (--fail-on %s)", strings.Join(hit, ", "), failOn)}
		}
	}
	return nil
}

// spaceThresholds starts from the defaults and applies the flags.
func spaceThresholds(c *cli.Context) (space.Thresholds, error) {
	th := space.DefaultThresholds()
	th.DeepChain = c.Int("deep-chain")
	if th.DeepChain < 1 {
		return th, usagef("space: --deep-chain must be at least 1, not %d", th.DeepChain)
	}
	age, err := parseAge(c.String("old-checkpoint"))
	if err != nil {
		return th, usagef("space: --old-checkpoint: %v", err)
	}
	th.OldCheckpointAge = int64(age / time.Second)
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"critical-free", &th.CriticalFree}, {"warning-free", &th.WarningFree}} {
		n, err := parseSize(c.String(f.name))
		if err != nil {
			return th, usagef("space: --%s: %v", f.name, err)
		}
		*f.dst = n
	}
	if th.WarningFree < th.CriticalFree {
		return th, usagef("space: --warning-free (%s) is below --critical-free (%s)", human(th.WarningFree), human(th.CriticalFree))
	}
	return th, nil
}

// parseAge parses "30d", "2w", "720h", "90m" (days and weeks added to Go's
// time.ParseDuration); it must be positive.
func parseAge(s string) (time.Duration, error) {
	t := strings.TrimSpace(strings.ToLower(s))
	var d time.Duration
	var err error
	switch {
	case strings.HasSuffix(t, "d") || strings.HasSuffix(t, "w"):
		unit := 24 * time.Hour
		if strings.HasSuffix(t, "w") {
			unit *= 7
		}
		var f float64
		f, err = strconv.ParseFloat(strings.TrimSpace(t[:len(t)-1]), 64)
		if err == nil && f*float64(unit) > float64(1<<62) {
			err = fmt.Errorf("out of range")
		}
		d = time.Duration(f * float64(unit))
	default:
		d, err = time.ParseDuration(t)
	}
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("invalid duration %q (examples: 30d, 2w, 720h)", s)
	}
	return d, nil
}

// writeFileAtomic renders into memory, writes the result to a temporary
// file beside path, syncs it and renames it over path, so that a reader
// (node_exporter's textfile collector, a web server) sees the old file or
// the new one, never a partial one. The file is world-readable (0644): the
// collector usually runs as another user.
func writeFileAtomic(path string, render func(*bytes.Buffer) error) error {
	var b bytes.Buffer
	if err := render(&b); err != nil {
		return err
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// A leading dot and no .prom suffix: the collector ignores the
	// temporary file (it reads *.prom only).
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(b.Bytes()); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil && !isWindows() {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fsutil.AtomicRename(tmp, path); err != nil {
		return err
	}
	ok = true
	return nil
}

func isWindows() bool { return filepath.Separator == '\\' }
