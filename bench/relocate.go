package main

// The relocate scenario: the 0x80070070 way out, measured. A VM with a
// 4 GiB dynamic VHDX base holding 1.5 GiB of realistic data and 4 pending
// checkpoint disks (125 MiB each in whole 2 MiB blocks, 500 MiB in all;
// disk_merge_pending) on
// one tmpfs volume is moved to another tmpfs volume and merged there:
//
//   - hvsnap: `hvsnap relocate VM --to DST --merge --yes` (SHA-256 of every
//     file while copying and again before committing, relinked parents,
//     chains checked, the merges, the source removed, every file fsynced);
//   - manual, with standard tools: `cp -a --sparse=always VM DST/` then
//     `hvsnap merge --all DST/VM --yes`, `rm -rf VM`, `sync`.
//
// Every run starts from a pristine copy of the VM on the source volume
// (untimed); 8 GiB of memory are touched once before the runs, so that the
// host's first-touch cost of guest pages does not land in one of them. Needs root for the tmpfs mounts; otherwise the scenario says
// it was not measured.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
)

// runRelocateBench returns the best run of each flow and the median of the
// per-pair ratios (hvsnap / manual, each pair run back to back).
func runRelocateBench(hv, dir string, runs int) ([]result, float64, error) {
	if os.Geteuid() != 0 {
		return nil, 0, fmt.Errorf("needs root for the tmpfs volumes")
	}
	src, dst := filepath.Join(dir, "reloc-src"), filepath.Join(dir, "reloc-dst")
	for _, d := range []string{src, dst} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, 0, err
		}
		if err := mountTmpfs(d, "12g"); err != nil {
			return nil, 0, fmt.Errorf("mount tmpfs on %s: %v", d, err)
		}
		defer unmountTmpfs(d)
	}
	// First-touch costs of guest memory (a VM's host faults pages in the
	// first time they are used) would land in whichever run comes first:
	// touch 8 GiB once, untimed.
	for _, d := range []string{src, dst} {
		if err := warmMemory(filepath.Join(d, "warm"), 8<<30); err != nil {
			return nil, 0, err
		}
	}
	pristine := filepath.Join(dir, "reloc-pristine")
	os.MkdirAll(pristine, 0o755)
	vmDir, err := buildBenchVM(pristine, 4<<30, 1536<<20, 4, 125<<20, 2<<20, true)
	if err != nil {
		return nil, 0, err
	}
	var total int64
	filepath.Walk(vmDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			total += fi.Size()
		}
		return nil
	})
	fmt.Printf("built relocate VM: %.0f MiB of files (4 GiB base, 4 pending checkpoint disks)\n", float64(total)/(1<<20))
	name := filepath.Base(vmDir)
	srcVM := filepath.Join(src, "VMs", name)
	to := filepath.Join(dst, "VMs")
	restore := func() {
		os.RemoveAll(filepath.Join(src, "VMs"))
		os.RemoveAll(to)
		os.MkdirAll(filepath.Join(src, "VMs"), 0o755)
		os.MkdirAll(to, 0o755)
		mustRun("cp", "-a", "--sparse=always", vmDir, filepath.Join(src, "VMs"))
		exec.Command("sync").Run()
	}
	manual := fmt.Sprintf("cp -a --sparse=always %q %q/ && %q -q merge --all %q --yes --margin 0 && rm -rf %q && sync", srcVM, to, hv, filepath.Join(to, name), srcVM)
	// Runs alternate between the two flows, so that both see the same
	// state of the machine's memory.
	h := result{Name: "relocate/hvsnap"}
	m := result{Name: "relocate/cp+merge"}
	var ratios []float64
	for i := 0; i < runs; i++ {
		r, err := measureE(h.Name, 1, total, restore, hv, "-q", "relocate", srcVM, "--to", to, "--merge", "--yes", "--margin", "0")
		if err != nil {
			return nil, 0, err
		}
		h = best(h, r)
		hs := r.Seconds
		fmt.Printf("  relocate run %d: hvsnap %.2f s", i+1, r.Seconds)
		r, err = measureE(m.Name, 1, total, restore, "sh", "-c", manual)
		if err != nil {
			return nil, 0, err
		}
		m = best(m, r)
		fmt.Printf(", cp+merge %.2f s\n", r.Seconds)
		ratios = append(ratios, hs/r.Seconds)
	}
	sort.Float64s(ratios)
	med := ratios[len(ratios)/2]
	if len(ratios)%2 == 0 {
		med = (ratios[len(ratios)/2-1] + med) / 2
	}
	return []result{h, m}, med, nil
}

// warmMemory writes n bytes to path (a tmpfs file) and removes it.
func warmMemory(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 4<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for w := int64(0); w < n; w += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			break // the volume is full: warm enough
		}
	}
	f.Close()
	return os.Remove(path)
}

// best keeps the faster of two measurements of one command (and the larger
// peak RSS).
func best(a, b result) result {
	rss := max(a.MaxRSS, b.MaxRSS)
	if a.Command == "" || b.Seconds < a.Seconds {
		a = b
	}
	a.MaxRSS = rss
	return a
}
