// Command bench measures hvsnap side by side with its peer tools on the same
// files and prints ratios (hvsnap time / peer time; < 1 means hvsnap is
// faster) and peak memory. Run it with `make bench`; it is not a test.
//
// Scenarios:
//
//   - convert: a dynamic VHDX (4 GiB virtual, ~1 GiB written at scattered
//     offsets) to raw: `hvsnap convert` vs `qemu-img convert -f vhdx -O raw`.
//
//   - chain: reading a 6-deep VHDX chain (the same amount of data spread
//     over the layers) vs reading its flattened disk, both to /dev/null.
//
//   - merge: a 1 GiB differencing child (whole 2 MiB blocks and partial
//     blocks) merged into a 4 GiB dynamic VHDX parent: `hvsnap merge` vs
//     `qemu-img commit` of the equivalent qcow2 chain (+ sync) and `cp` of
//     the same number of bytes (+ sync); every run from pristine copies.
//     The rounds run in the scratch folder and, as root, again on a
//     journaled ext4 volume (bench/volume.go), where the cp target is
//     judged: this VM's root file system has no journal and online discard,
//     so removing the merged child waits for the device there.
//
//   - space: a synthetic store of --space-vms VMs (3-10 sparse checkpoint
//     disks each, XML configs, ~50 small config/state/log files per VM):
//     `hvsnap space --json ROOT > /dev/null` vs `du -s ROOT`, warm cache
//     (one untimed run of each first). When `hvsnap space` fails the
//     scenario prints "space: not measured (...)" and the bench goes on.
//
//   - export, import: see bench/export.go.
//
//   - relocate: see bench/relocate.go (root: two tmpfs volumes).
//
// --only convert,chain,merge,space,export,import,relocate runs some scenarios (default: all).
//
// As root on a VM whose balloon reports free pages to the host, the bench
// stops that reporting for its duration and touches 8 GiB once first, so
// no run pays host faults that the one before it caused (memquiet_linux.go;
// --leave-memory skips it).
//
// Targets (from the issues): convert ratio ≤ 1.0, chain ratio ≤ 1.2, peak
// RSS of every convert/read/check run < 64 MiB; merge faster than qemu-img
// commit and within 1.5x of cp, peak RSS < 64 MiB; space ratio ≤ 1.0 and its
// peak RSS < 200 MiB; relocate + merge within 1.2x of cp + hvsnap merge.
// --strict exits 1 when one is missed.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hvsnap/hvsnap/vhd"
)

type result struct {
	Name    string  `json:"name"`
	Command string  `json:"command"`
	Seconds float64 `json:"seconds"` // best of the runs
	MaxRSS  int64   `json:"max_rss_bytes"`
	MBps    float64 `json:"mb_per_s"` // virtual bytes / s
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-touch-memory" {
		// quietMemory's warm-up, in a process of its own: a child's
		// ru_maxrss starts from its parent's high-water mark at exec, so
		// touching the memory here would count in every run's peak RSS.
		n, err := strconv.ParseInt(os.Args[2], 10, 64)
		if err != nil {
			fatal(err.Error())
		}
		if err := touchOnce(n); err != nil {
			fatal(err.Error())
		}
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "-space-floor" {
		if err := spaceFloor(os.Args[2]); err != nil {
			fatal(err.Error())
		}
		return
	}
	bin := flag.String("hvsnap", "bin/hvsnap", "hvsnap binary")
	work := flag.String("work", "", "scratch folder (default: a new folder under /var/tmp)")
	virt := flag.String("virtual", "4G", "virtual disk size")
	data := flag.String("data", "1G", "bytes written at scattered offsets")
	runs := flag.Int("runs", 3, "runs per command (best time is kept)")
	strict := flag.Bool("strict", false, "exit 1 when a target is missed")
	keep := flag.Bool("keep", false, "keep the scratch folder")
	out := flag.String("out", "bench/out/results.json", "where to write the JSON results")
	only := flag.String("only", "", "comma-separated scenarios to run: convert, chain, merge, space, export, import, relocate (default: all)")
	leaveMem := flag.Bool("leave-memory", false, "do not stop the VM's free page reporting for the bench (see bench/memquiet_linux.go)")
	spaceVMs := flag.Int("space-vms", 200, "space: VMs in the synthetic store")
	spaceVirt := flag.String("space-virtual", "1G", "space: virtual size of each disk (sparse)")
	flag.Parse()
	want := map[string]bool{}
	for _, n := range strings.Split(*only, ",") {
		if n = strings.TrimSpace(n); n != "" {
			if n != "convert" && n != "chain" && n != "merge" && n != "space" && n != "export" && n != "import" && n != "relocate" {
				fatal("--only: unknown scenario " + n)
			}
			want[n] = true
		}
	}
	run := func(name string) bool { return len(want) == 0 || want[name] }
	svs, err := parseSize(*spaceVirt)
	if err != nil || svs <= 0 {
		fatal("bad --space-virtual")
	}
	vs, err1 := parseSize(*virt)
	ds, err2 := parseSize(*data)
	if err1 != nil || err2 != nil || ds > vs {
		fatal("bad --virtual/--data")
	}
	hv, err := filepath.Abs(*bin)
	if err != nil {
		fatal(err.Error())
	}
	if _, err := os.Stat(hv); err != nil {
		fatal("build hvsnap first (make build): " + err.Error())
	}
	dir := *work
	if dir == "" {
		dir, err = os.MkdirTemp("/var/tmp", "hvsnap-bench-")
		if err != nil {
			fatal(err.Error())
		}
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	fmt.Printf("bench: %s virtual, %s of data, %d runs each, scratch %s\n", *virt, *data, *runs, dir)
	restoreMem, memNote := func() {}, "memory: free page reporting left as it is (--leave-memory)"
	if !*leaveMem {
		restoreMem, memNote = quietMemory()
	}
	defer restoreMem()
	fmt.Println(memNote)

	var res []result
	rng := rand.New(rand.NewSource(1))
	haveQemu := exec.Command("qemu-img", "--version").Run() == nil
	if run("convert") {
		// 1. A dynamic VHDX with scattered data.
		src := filepath.Join(dir, "src.vhdx")
		t0 := time.Now()
		writeScattered(src, "", vs, ds, rng)
		fmt.Printf("built %s in %.1fs\n", src, time.Since(t0).Seconds())

		outRaw := filepath.Join(dir, "out.raw")
		// Before each run (untimed): remove the output and flush earlier runs'
		// dirty pages, so one run's write-back does not land in the next one's time.
		fresh := func() { os.Remove(outRaw); exec.Command("sync").Run() }
		res = append(res, measure("convert/hvsnap", *runs, vs, fresh, hv, "-q", "convert", src, outRaw))
		if haveQemu {
			// qemu-img does not fsync its output; hvsnap does (before renaming
			// it into place). "+sync" is the same durable result.
			res = append(res, measure("convert/qemu-img", *runs, vs, fresh, "qemu-img", "convert", "-f", "vhdx", "-O", "raw", src, outRaw))
			res = append(res, measure("convert/qemu-img+sync", *runs, vs, fresh, "sh", "-c", fmt.Sprintf("qemu-img convert -f vhdx -O raw %q %q && sync", src, outRaw)))
		}
		os.Remove(outRaw)
	}

	if run("chain") {
		// 2. A 6-deep chain with the same amount of data spread over the layers.
		prev := ""
		var leaf string
		for i := 0; i < 6; i++ {
			p := filepath.Join(dir, fmt.Sprintf("chain%d.%s", i, map[bool]string{true: "vhdx", false: "avhdx"}[i == 0]))
			writeScattered(p, prev, vs, ds/6, rng)
			prev, leaf = p, p
		}
		flat := filepath.Join(dir, "flat.vhdx")
		mustRun(hv, "-q", "convert", "--block-size", "2M", leaf, flat) // same block size as the chain
		fmt.Printf("built 6-deep chain and its flattened copy\n")

		res = append(res, measure("read/chain6", *runs, vs, nil, "sh", "-c", fmt.Sprintf("%q -q convert %q - > /dev/null", hv, leaf)))
		res = append(res, measure("read/flat", *runs, vs, nil, "sh", "-c", fmt.Sprintf("%q -q convert %q - > /dev/null", hv, flat)))
		res = append(res, measure("info+check/chain6", *runs, 0, nil, "sh", "-c", fmt.Sprintf("%q -q check %q > /dev/null", hv, leaf)))
	}

	var mergeSets []mergeSet
	if run("merge") {
		var mr []result
		mr, mergeSets = runMerge(hv, dir, *runs, vs, rng)
		res = append(res, mr...)
	}

	// 3. The space analyzer on a synthetic store, against du.
	var spaceErr error
	if run("space") {
		var sr []result
		sr, spaceErr = runSpace(hv, dir, *spaceVMs, svs, *runs)
		res = append(res, sr...)
	}

	// 4. export / import (bench/export.go).
	var exportErr error
	var exportSum map[string]any
	if run("export") || run("import") {
		var er []result
		er, exportSum, exportErr = runExportBench(hv, dir, 4<<30, 1536<<20, *runs, run)
		res = append(res, er...)
	}

	// 5. relocate + merge (bench/relocate.go).
	var relocErr error
	var relocMedian float64
	if run("relocate") {
		var rr []result
		rr, relocMedian, relocErr = runRelocateBench(hv, dir, *runs)
		res = append(res, rr...)
	}

	fmt.Printf("\n%-20s %9s %10s %9s  %s\n", "scenario", "best s", "MB/s", "max RSS", "command")
	for _, r := range res {
		fmt.Printf("%-20s %9.3f %10.1f %7.1fMi  %s\n", r.Name, r.Seconds, r.MBps, float64(r.MaxRSS)/(1<<20), r.Command)
	}
	if m := selfMaxRSS(); m > 0 {
		fmt.Printf("(max RSS: Linux starts a child's peak at the bench's own, %.1f MiB now, so a figure near that is a floor, not the tool's own peak; figures can read too high, never too low, so the RSS targets are judged conservatively)\n", float64(m)/(1<<20))
	}
	by := map[string]result{}
	for _, r := range res {
		by[r.Name] = r
	}
	missed := 0
	summary := map[string]any{}
	fmt.Println()
	if run("convert") {
		if q, ok := by["convert/qemu-img+sync"]; ok {
			ratio := by["convert/hvsnap"].Seconds / q.Seconds
			fmt.Printf("convert ratio hvsnap/(qemu-img + sync) = %.2f (target ≤ 1.00, same durable result) %s\n", ratio, verdict(ratio <= 1.0, &missed))
			fmt.Printf("convert ratio hvsnap/qemu-img without its sync = %.2f (qemu-img leaves its output unflushed; for information)\n", by["convert/hvsnap"].Seconds/by["convert/qemu-img"].Seconds)
		} else {
			fmt.Println("convert ratio: qemu-img not installed, not measured")
		}
	}
	if run("chain") {
		cr := by["read/chain6"].Seconds / by["read/flat"].Seconds
		fmt.Printf("chain read ratio 6-deep/flat = %.2f (target ≤ 1.20) %s\n", cr, verdict(cr <= 1.2, &missed))
	}
	for _, set := range mergeSets {
		reportMerge(set, by, summary, &missed)
	}
	if run("convert") || run("chain") {
		var maxRSS int64
		for _, r := range res {
			convertOrRead := strings.HasPrefix(r.Name, "convert/hvsnap") || strings.HasPrefix(r.Name, "read/") || strings.HasPrefix(r.Name, "info+check/")
			if convertOrRead && r.MaxRSS > maxRSS {
				maxRSS = r.MaxRSS
			}
		}
		fmt.Printf("peak RSS of hvsnap convert/read/check runs = %.1f MiB (target < 64 MiB) %s\n", float64(maxRSS)/(1<<20), verdict(maxRSS < 64<<20, &missed))
	}
	if run("space") {
		if spaceErr != nil {
			fmt.Printf("space: not measured (%v)\n", spaceErr)
			summary["space_error"] = spaceErr.Error()
		} else {
			h, d := by["space/hvsnap"], by["space/du"]
			ratio := h.Seconds / d.Seconds
			fmt.Printf("space ratio hvsnap space --json / du -s = %.2f (target ≤ 1.00, warm cache) %s\n", ratio, verdict(ratio <= 1.0, &missed))
			fmt.Printf("space peak RSS = %.1f MiB (target < 200 MiB) %s\n", float64(h.MaxRSS)/(1<<20), verdict(h.MaxRSS < 200<<20, &missed))
			summary["space_ratio"] = ratio
			if f, ok := by["space/floor"]; ok {
				fr := f.Seconds / by["space/du"].Seconds
				fmt.Printf("space floor (opens and reads every header, BAT and configuration, parses nothing) / du -s = %.2f; hvsnap / floor = %.2f (for information)\n", fr, h.Seconds/f.Seconds)
				summary["space_floor_ratio"] = fr
				summary["space_hvsnap_floor_ratio"] = h.Seconds / f.Seconds
			}
			summary["space_max_rss_bytes"] = h.MaxRSS
		}
	}
	if run("export") || run("import") {
		reportExport(by, exportSum, exportErr, summary, &missed)
	}
	if run("relocate") {
		if relocErr != nil {
			fmt.Printf("relocate: not measured (%v)\n", relocErr)
			summary["relocate_error"] = relocErr.Error()
		} else {
			h, m := by["relocate/hvsnap"], by["relocate/cp+merge"]
			ratio := h.Seconds / m.Seconds
			fmt.Printf("relocate ratio hvsnap relocate --merge / (cp + hvsnap merge + rm + sync): median of the paired runs %.2f (target ≤ 1.20) %s; best / best %.2f\n", relocMedian, verdict(relocMedian <= 1.2, &missed), ratio)
			summary["relocate_median_ratio"] = relocMedian
			fmt.Printf("relocate peak RSS = %.1f MiB\n", float64(h.MaxRSS)/(1<<20))
			summary["relocate_ratio"] = ratio
			summary["relocate_max_rss_bytes"] = h.MaxRSS
		}
	}
	if *out != "" {
		os.MkdirAll(filepath.Dir(*out), 0o755)
		b, _ := json.MarshalIndent(map[string]any{"virtual": vs, "data": ds, "runs": *runs, "space_vms": *spaceVMs, "memory": memNote, "results": res, "summary": summary}, "", "  ")
		os.WriteFile(*out, b, 0o644)
	}
	if *strict && missed > 0 {
		restoreMem()
		os.Exit(1)
	}
}

func verdict(ok bool, missed *int) string {
	if ok {
		return "OK"
	}
	*missed++
	return "MISSED"
}

// writeScattered creates path (a child of parent when parent != "") and
// writes total bytes in 1-4 MiB pieces at random offsets.
func writeScattered(path, parent string, size, total int64, rng *rand.Rand) {
	spec := vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: size, BlockSize: 2 * vhd.MiB}
	if parent != "" {
		spec = vhd.CreateSpec{Format: vhd.FormatVHDX, Parent: parent}
	}
	im, err := vhd.Create(path, spec, nil)
	if err != nil {
		fatal(err.Error())
	}
	im.Close()
	c, err := vhd.OpenChain(path, nil)
	if err != nil {
		fatal(err.Error())
	}
	defer c.Close()
	buf := make([]byte, 4*vhd.MiB)
	for done := int64(0); done < total; {
		n := int64(1+rng.Intn(4)) * vhd.MiB
		n = min(n, total-done)
		off := rng.Int63n((size-n)/4096) * 4096
		rng.Read(buf[:n])
		if _, err := c.WriteAt(buf[:n], off); err != nil {
			fatal(err.Error())
		}
		done += n
	}
	if err := c.Flush(); err != nil {
		fatal(err.Error())
	}
}

func measure(name string, runs int, bytes int64, before func(), cmd string, args ...string) result {
	r, err := measureE(name, runs, bytes, before, cmd, args...)
	if err != nil {
		fatal(err.Error())
	}
	return r
}

// measureE is measure returning the failure of a run instead of exiting.
func measureE(name string, runs int, bytes int64, before func(), cmd string, args ...string) (result, error) {
	r := result{Name: name, Command: cmd + " " + fmt.Sprint(args)}
	var times []float64
	for i := 0; i < runs; i++ {
		if before != nil {
			before()
		}
		c := exec.Command(cmd, args...)
		c.Stderr = os.Stderr
		t0 := time.Now()
		if err := c.Run(); err != nil {
			return r, fmt.Errorf("%s: %v", r.Command, err)
		}
		times = append(times, time.Since(t0).Seconds())
		if rss := maxRSS(c.ProcessState); rss > r.MaxRSS {
			r.MaxRSS = rss
		}
	}
	sort.Float64s(times)
	r.Seconds = times[0]
	if bytes > 0 {
		r.MBps = float64(bytes) / (1 << 20) / r.Seconds
	}
	return r, nil
}

func mustRun(cmd string, args ...string) {
	c := exec.Command(cmd, args...)
	c.Stderr = os.Stderr
	if err := c.Run(); err != nil {
		fatal(fmt.Sprintf("%s %v: %v", cmd, args, err))
	}
}

func parseSize(s string) (int64, error) {
	var n int64
	var u string
	if _, err := fmt.Sscanf(s, "%d%s", &n, &u); err != nil {
		if _, err := fmt.Sscanf(s, "%d", &n); err != nil {
			return 0, err
		}
	}
	switch u {
	case "", "B":
		return n, nil
	case "K":
		return n << 10, nil
	case "M":
		return n << 20, nil
	case "G":
		return n << 30, nil
	}
	return 0, fmt.Errorf("unit %q", u)
}

func fatal(msg string) {
	fmt.Fprintln(os.Stderr, "bench: "+msg)
	restoreOnFatal()
	os.Exit(1)
}

// restoreOnFatal undoes quietMemory's system setting before fatal exits.
var restoreOnFatal = func() {}
