package main

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/hvsnap/hvsnap/vhd"
)

// runMerge: a 4 GiB dynamic VHDX parent (1 GiB of scattered data) and a
// child holding 1 GiB (512 blocks of 2 MiB: half written whole, half by a
// partial piece of 4-512 KiB, which hvsnap's writer completes from the
// parent, as FULLY_PRESENT),
// merged by `hvsnap merge`; side by side with `qemu-img commit` of the
// equivalent qcow2 chain (+ removing the merged overlay + sync: the same end
// state, since hvsnap removes the merged file and fsyncs) and `cp` of the
// same number of bytes (+ sync). Every run starts from pristine copies
// (untimed).
func runMerge(hv, dir string, runs int, vs int64, rng *rand.Rand) []result {
	pristine := filepath.Join(dir, "merge-pristine")
	os.MkdirAll(pristine, 0o755)
	parent := filepath.Join(pristine, "base.vhdx")
	child := filepath.Join(pristine, "base_6F1C.avhdx")
	writeScattered(parent, "", vs, 1<<30, rng)
	writeChild(child, parent, vs, 1<<30, rng)
	work := filepath.Join(dir, "merge-work")
	os.MkdirAll(work, 0o755)

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

	restore := func() {
		os.RemoveAll(work)
		os.MkdirAll(work, 0o755)
		mustRun("cp", "--sparse=always", parent, child, work)
		exec.Command("sync").Run()
	}
	var res []result
	res = append(res, measure("merge/hvsnap", runs, copyBytes, restore, hv, "-q", "merge", "--yes", "--margin", "0", filepath.Join(work, filepath.Base(child))))

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
	blobCopy := filepath.Join(work, "blob")
	freshCp := func() { os.Remove(blobCopy); exec.Command("sync").Run() }
	res = append(res, measure("merge/cp+sync", runs, copyBytes, freshCp, "sh", "-c", fmt.Sprintf("cp %q %q && sync", blob, blobCopy)))
	os.Remove(blob)

	if exec.Command("qemu-img", "--version").Run() == nil {
		full := filepath.Join(pristine, "full.raw")
		bq := filepath.Join(pristine, "base.qcow2")
		cq := filepath.Join(pristine, "child.qcow2")
		mustRun(hv, "-q", "convert", child, full)
		mustRun("qemu-img", "convert", "-f", "vhdx", "-O", "qcow2", parent, bq)
		mustRun("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", full, cq)
		os.Remove(full)
		restoreQ := func() {
			os.RemoveAll(work)
			os.MkdirAll(work, 0o755)
			mustRun("cp", "--sparse=always", bq, cq, work)
			exec.Command("sync").Run()
		}
		// The same end state as hvsnap merge: data in the base, the merged
		// overlay removed, everything durable.
		res = append(res, measure("merge/qemu-img-commit+rm+sync", runs, copyBytes, restoreQ, "sh", "-c",
			fmt.Sprintf("cd %q && qemu-img commit -q child.qcow2 && rm child.qcow2 && sync", work)))
	}
	os.RemoveAll(work)
	return res
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
