package main

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/hvsnap/hvsnap/vhd"
)

// mergeSet is one volume's rounds: the results are named Prefix+"/...".
type mergeSet struct {
	Prefix, Label string
	Med           mergeRatios
	// Target: the cp target is judged on this set (the journaled volume
	// when there is one); the others are printed for information.
	Target bool
}

// runMerge: a 4 GiB dynamic VHDX parent (1 GiB of scattered data) and a
// child holding 1 GiB (512 blocks of 2 MiB: half written whole, half by a
// partial piece of 4-512 KiB, which hvsnap's writer completes from the
// parent, as FULLY_PRESENT),
// merged by `hvsnap merge`; side by side with `qemu-img commit` of the
// equivalent qcow2 chain (+ removing the merged overlay + sync: the same end
// state, since hvsnap removes the merged file and fsyncs) and `cp` of the
// same number of bytes (+ sync). Every run starts from pristine copies
// (untimed). The rounds run twice: in the scratch folder (this machine's
// root file system) and, as root, on a journaled ext4 volume
// (journaledVolume), where the cp target is judged.
func runMerge(hv, dir string, runs int, vs int64, rng *rand.Rand) (res []result, sets []mergeSet) {
	pristine := filepath.Join(dir, "merge-pristine")
	os.MkdirAll(pristine, 0o755)
	parent := filepath.Join(pristine, "base.vhdx")
	child := filepath.Join(pristine, "base_6F1C.avhdx")
	writeScattered(parent, "", vs, 1<<30, rng)
	writeChild(child, parent, vs, 1<<30, rng)

	// Bytes the merge copies (the child's data), for the cp peer.
	im, err := vhd.Open(child, &vhd.Options{ReadOnly: true})
	if err != nil {
		fatal(err.Error())
	}
	var copyBytes int64
	im.Extents(func(r vhd.Run) error {
		if r.State != vhd.StateAbsent {
			copyBytes += r.Len
		}
		return nil
	})
	im.Close()
	fmt.Printf("built merge pair: parent 4 GiB virtual, child holds %.0f MiB\n", float64(copyBytes)/(1<<20))

	// cp of the same number of bytes (a non-sparse file), plus sync.
	blob := filepath.Join(pristine, "blob")
	f, err := os.Create(blob)
	if err != nil {
		fatal(err.Error())
	}
	buf := make([]byte, 4<<20)
	for left := copyBytes; left > 0; left -= int64(len(buf)) {
		rng.Read(buf)
		f.Write(buf[:min(left, int64(len(buf)))])
	}
	f.Close()
	defer os.Remove(blob)

	// The equivalent qcow2 chain for qemu-img commit.
	haveQemu := exec.Command("qemu-img", "--version").Run() == nil
	bq := filepath.Join(pristine, "base.qcow2")
	cq := filepath.Join(pristine, "child.qcow2")
	if haveQemu {
		full := filepath.Join(pristine, "full.raw")
		mustRun(hv, "-q", "convert", child, full)
		mustRun("qemu-img", "convert", "-f", "vhdx", "-O", "qcow2", parent, bq)
		mustRun("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", full, cq)
		os.Remove(full)
	}
	in := mergeInputs{parent: parent, child: child, blob: blob, bq: bq, cq: cq, copyBytes: copyBytes, qemu: haveQemu}

	root := mergeSet{Prefix: "merge", Label: "scratch folder on this machine's root file system (ext4 without a journal, online discard)", Target: true}
	r, med := mergeRounds(hv, filepath.Join(dir, "merge-work"), root.Prefix, in, runs)
	res, root.Med = append(res, r...), med
	sets = append(sets, root)

	// Work, inputs and growth: parent + child + what the parent grows.
	mnt, done, err := journaledVolume(dir, 6<<30)
	if err != nil {
		fmt.Printf("merge on a journaled ext4 volume: not measured (%v); the cp target is judged on the root file system\n", err)
		return res, sets
	}
	defer done()
	sets[0].Target = false
	j := mergeSet{Prefix: "merge-journaled", Label: "a journaled ext4 (mkfs.ext4 defaults) on a direct-I/O loop device over the same disk", Target: true}
	r, med = mergeRounds(hv, filepath.Join(mnt, "merge-work"), j.Prefix, in, runs)
	res, j.Med = append(res, r...), med
	return res, append(sets, j)
}

// mergeInputs are the pristine files the rounds copy from.
type mergeInputs struct {
	parent, child, blob, bq, cq string
	copyBytes                   int64
	qemu                        bool
}

// mergeRounds runs the peers in rounds in work (created and removed by each
// run's preparation) and returns their best results and per-round ratios.
func mergeRounds(hv, work, prefix string, in mergeInputs, runs int) (res []result, med mergeRatios) {
	fmt.Printf("merge rounds in %s\n", work)
	// copyIn returns a before-run step: settle, then copy files into work
	// (sparse) and sync.
	copyIn := func(files ...string) func() {
		return func() {
			settleCache(work)
			os.MkdirAll(work, 0o755)
			if len(files) > 0 {
				mustRun("cp", append(append([]string{"--sparse=always"}, files...), work)...)
			}
			exec.Command("sync").Run()
		}
	}
	restore := copyIn(in.parent, in.child)
	blobCopy := filepath.Join(work, "blob")
	// The cp peers' input is cached too, as hvsnap's inputs are (just
	// copied): read it once after the settle.
	freshCp := func() {
		copyIn()()
		mustRun("cat", in.blob)
	}
	restoreQ := copyIn(in.bq, in.cq)

	// Runs go in rounds, every peer once per round, so that all see the same
	// state of this machine, whose disk speed drifts by tens of percent over
	// minutes; the ratios are the medians of the per-round ratios (best /
	// best is printed too). The order rotates from round to round: what one
	// run leaves behind (freed page cache, discards still running on the
	// device) slows the next by up to 3x here, so no peer may always follow
	// the same one. A plain rotation (round i starts at peer i) does not do
	// that: it keeps who follows whom, and hvsnap ran right after qemu-img
	// commit in every round it did not open; the rounds follow a balanced
	// Latin square instead (roundOrder).
	victim := filepath.Join(work, "victim")
	withVictim := func() {
		freshCp()
		mustRun("cp", "--sparse=always", in.child, victim)
		exec.Command("sync").Run()
	}
	type peer struct {
		res    result
		before func()
		cmd    []string
	}
	peers := []*peer{
		{result{Name: prefix + "/hvsnap"}, restore, []string{hv, "-q", "merge", "--yes", "--margin", "0", filepath.Join(work, filepath.Base(in.child))}},
		{result{Name: prefix + "/cp+sync"}, freshCp, []string{"sh", "-c", fmt.Sprintf("cp %q %q && sync", in.blob, blobCopy)}},
		// For information: cp + sync + removing a file the size of the
		// merged child, the other half of what a merge does (on a volume
		// mounted with online discard the removal may wait for the device).
		{result{Name: prefix + "/cp+sync+rm"}, withVictim, []string{"sh", "-c", fmt.Sprintf("cp %q %q && sync && rm %q && sync", in.blob, blobCopy, victim)}},
	}
	if in.qemu {
		// The same end state as hvsnap merge: data in the base, the
		// merged overlay removed, everything durable.
		peers = append(peers, &peer{result{Name: prefix + "/qemu-img-commit+rm+sync"}, restoreQ,
			[]string{"sh", "-c", fmt.Sprintf("cd %q && qemu-img commit -q child.qcow2 && rm child.qcow2 && sync", work)}})
	}
	for i := 0; i < runs; i++ {
		secs := make([]float64, len(peers))
		for k := range peers {
			j := roundOrder(i, len(peers))[k]
			pr := peers[j]
			r := measure(pr.res.Name, 1, in.copyBytes, pr.before, pr.cmd[0], pr.cmd[1:]...)
			pr.res = best(pr.res, r)
			secs[j] = r.Seconds
		}
		fmt.Printf("  %s round %d:", prefix, i+1)
		for j, pr := range peers {
			fmt.Printf(" %s %.2f s", strings.TrimPrefix(pr.res.Name, prefix+"/"), secs[j])
		}
		fmt.Println()
		med.cp = append(med.cp, secs[0]/secs[1])
		med.cpRm = append(med.cpRm, secs[0]/secs[2])
		if in.qemu {
			med.qemu = append(med.qemu, secs[0]/secs[3])
		}
	}
	for _, pr := range peers {
		res = append(res, pr.res)
	}
	os.RemoveAll(work)
	return res, med
}

// roundOrder is the order of n peers in round i: the rows of a balanced
// Latin square (Williams design), so that over n rounds (2n for odd n) every
// peer runs first equally often and follows every other peer equally often.
func roundOrder(i, n int) []int {
	r := i % n
	order := make([]int, n)
	for j := range order {
		f := 0 // the column offsets 0, 1, n-1, 2, n-2, ...
		if j%2 == 1 {
			f = (j + 1) / 2
		} else if j > 0 {
			f = n - j/2
		}
		order[j] = (r + f) % n
	}
	if n%2 == 1 && (i/n)%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

// settleCache removes the work folder and, as root, drops the page cache, so
// that every run starts from the same state: only its own inputs, copied
// just before, are cached. Measured here: with 11 GB of other files' pages
// cached, hvsnap's copy into the parent took 0.6-1.2 s instead of 0.17 s
// (and grew from round to round), as did a bare pread/pwrite loop, while
// cp, which copies inside the kernel (copy_file_range), was unaffected.
func settleCache(work string) {
	os.RemoveAll(work)
	exec.Command("sync").Run()
	if os.Geteuid() == 0 {
		os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
	}
}

// mergeRatios are the per-round ratios hvsnap / peer.
type mergeRatios struct{ cp, cpRm, qemu []float64 }

// median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + m) / 2
	}
	return m
}

// writeChild creates a differencing child of parent holding total bytes of
// 2 MiB blocks: half written whole, half by one partial piece (4-512 KiB).
func writeChild(path, parent string, size, total int64, rng *rand.Rand) {
	im, err := vhd.Create(path, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, Parent: parent}, nil)
	if err != nil {
		fatal(err.Error())
	}
	im.Close()
	c, err := vhd.OpenChain(path, nil)
	if err != nil {
		fatal(err.Error())
	}
	defer c.Close()
	const bs = 2 * vhd.MiB
	buf := make([]byte, bs)
	used := map[int64]bool{}
	blocks := total / bs
	for i := int64(0); i < blocks; {
		b := rng.Int63n(size / bs)
		if used[b] {
			continue
		}
		used[b] = true
		off, n := b*bs, int64(bs)
		if i >= blocks/2 {
			n = int64(1+rng.Intn(128)) * 4096
			off += rng.Int63n((bs-n)/4096+1) * 4096
		}
		rng.Read(buf[:n])
		if _, err := c.WriteAt(buf[:n], off); err != nil {
			fatal(err.Error())
		}
		i++
	}
	if err := c.Flush(); err != nil {
		fatal(err.Error())
	}
}

// reportMerge prints one volume's merge ratios; the cp target is judged on
// the set marked Target only, the qemu-img and memory targets on every set.
// Summary keys: merge_* for the root file system, merge_journaled_* for the
// journaled volume.
func reportMerge(set mergeSet, by map[string]result, summary map[string]any, missed *int) {
	key := strings.ReplaceAll(set.Prefix, "-", "_") + "_"
	h := by[set.Prefix+"/hvsnap"]
	fmt.Printf("merge on %s:\n", set.Label)
	cr, cm := h.Seconds/by[set.Prefix+"/cp+sync"].Seconds, median(set.Med.cp)
	v := "(for information: the target is judged on the journaled volume)"
	if set.Target {
		v = verdict(cm <= 1.5, missed)
	}
	fmt.Printf("  merge ratio hvsnap/(cp + sync): median of the rounds %.2f (target ≤ 1.50) %s; best / best %.2f\n", cm, v, cr)
	summary[key+"cp_ratio"] = cr
	summary[key+"cp_median_ratio"] = cm
	if len(set.Med.cpRm) > 0 {
		rm := median(set.Med.cpRm)
		fmt.Printf("  merge ratio hvsnap/(cp + sync + rm of a file the size of the child): median of the rounds %.2f (for information: the same work as the merge)\n", rm)
		summary[key+"cp_rm_median_ratio"] = rm
	}
	if q, ok := by[set.Prefix+"/qemu-img-commit+rm+sync"]; ok {
		qr, qm := h.Seconds/q.Seconds, median(set.Med.qemu)
		fmt.Printf("  merge ratio hvsnap/(qemu-img commit + rm + sync): median of the rounds %.2f (target < 1.00) %s; best / best %.2f\n", qm, verdict(qm < 1.0, missed), qr)
		summary[key+"qemu_ratio"] = qr
		summary[key+"qemu_median_ratio"] = qm
	} else {
		fmt.Println("  merge ratio vs qemu-img commit: qemu-img not installed, not measured")
	}
	fmt.Printf("  merge peak RSS = %.1f MiB (target < 64 MiB) %s\n", float64(h.MaxRSS)/(1<<20), verdict(h.MaxRSS < 64<<20, missed))
	summary[key+"max_rss_bytes"] = h.MaxRSS
}
