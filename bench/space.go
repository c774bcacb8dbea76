package main

// The space scenario: a synthetic Hyper-V store (many VMs, each with a
// checkpoint chain of sparse disks, XML configs and small state files), then
// `hvsnap space --json ROOT` side by side with `du -s ROOT` on a warm cache.

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/vhd"
)

// spaceStore describes what buildSpaceStore wrote.
type spaceStore struct {
	VMs, Disks, SmallFiles int
}

// buildSpaceStore writes nvm VMs under root. Each has a dynamic base disk
// and 3-10 checkpoint (differencing) disks in a chain (one VM in eight with
// a branch, one in five in VHD format), every disk with 1 MiB blocks and 2-5
// pieces of 16 KiB of data so its BAT has entries; the VM config (naming the
// last disk) and one config per checkpoint (naming the disk current when it
// was taken); saved-state files for the VM and each checkpoint; and log
// files up to 50 small files per VM. Virtual size virt; disks are sparse and
// everything is deterministic.
func buildSpaceStore(root string, nvm int, virt int64) (spaceStore, error) {
	var (
		mu    sync.Mutex
		st    = spaceStore{VMs: nvm}
		first error
		wg    sync.WaitGroup
	)
	jobs := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				d, s, err := buildSpaceVM(root, i, virt)
				mu.Lock()
				st.Disks += d
				st.SmallFiles += s
				if err != nil && first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	for i := range nvm {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return st, first
}

func buildSpaceVM(root string, i int, virt int64) (disks, small int, err error) {
	rng := rand.New(rand.NewSource(int64(i) + 1000))
	name := fmt.Sprintf("vm%03d", i)
	id := storetest.GUID("bench", name)
	vmDir := filepath.Join(root, name)
	diskDir := filepath.Join(vmDir, "Virtual Hard Disks")
	winDir := storetest.WindowsRoot + `\` + name + `\Virtual Hard Disks\`
	pm := vhd.PathMap{{Windows: storetest.WindowsRoot, Local: root}}
	if err := os.MkdirAll(diskDir, 0o755); err != nil {
		return 0, 0, err
	}
	format, baseExt, diffExt := vhd.FormatVHDX, ".vhdx", ".avhdx"
	if i%5 == 4 {
		format, baseExt, diffExt = vhd.FormatVHD, ".vhd", ".avhd"
	}
	// A base and 3-10 checkpoint disks, skewed toward deep chains (about
	// 9 disk files per VM on average).
	ndisks := 1 + 3 + max(rng.Intn(8), rng.Intn(8), rng.Intn(8))
	paths := make([]string, 0, ndisks)
	for k := range ndisks {
		var p string
		spec := vhd.CreateSpec{Format: format, Type: vhd.TypeDynamic, Size: virt, BlockSize: vhd.MiB}
		parent := -1
		if k == 0 {
			p = filepath.Join(diskDir, name+baseExt)
		} else {
			parent = k - 1
			if i%8 == 0 && k == ndisks-1 && k >= 2 {
				parent = k - 2 // a branch: the last disk is a sibling
			}
			p = filepath.Join(diskDir, name+"_"+storetest.GUID("bench", name, fmt.Sprint(k))+diffExt)
			spec = vhd.CreateSpec{Format: format, Parent: paths[parent], BlockSize: vhd.MiB}
		}
		im, err := vhd.Create(p, spec, &vhd.Options{PathMap: pm})
		if err != nil {
			return disks, small, err
		}
		im.Close()
		c, err := vhd.OpenChain(p, &vhd.Options{PathMap: pm})
		if err != nil {
			return disks, small, err
		}
		buf := make([]byte, 16*vhd.KiB)
		for range 2 + rng.Intn(4) {
			rng.Read(buf)
			off := rng.Int63n((virt-int64(len(buf)))/4096) * 4096
			if _, err := c.WriteAt(buf, off); err != nil {
				c.Close()
				return disks, small, err
			}
		}
		if err := c.Close(); err != nil {
			return disks, small, err
		}
		paths = append(paths, p)
		disks++
	}
	// The VM runs on the last disk; disk k (k < last) was current when
	// checkpoint k was taken.
	leaf := ndisks - 1
	nsnap := ndisks - 1
	cfg := filepath.Join(vmDir, "Virtual Machines", id+".xml")
	if err := storetest.WriteConfig(cfg, storetest.ConfigSpec{Name: name, ID: id, DiskPath: winDir + filepath.Base(paths[leaf]),
		Snapshots: nsnap, MergePending: i%17 == 3}); err != nil {
		return disks, small, err
	}
	small++
	state := func(dir, owner string) error {
		for _, ext := range []string{".bin", ".vsv"} {
			data := bytes.Repeat([]byte{byte(i)}, 4096+rng.Intn(4)*4096)
			if err := writeSmall(filepath.Join(dir, owner, owner+ext), data); err != nil {
				return err
			}
			small++
		}
		return nil
	}
	if err := state(filepath.Dir(cfg), id); err != nil {
		return disks, small, err
	}
	for k := range nsnap {
		cid := storetest.GUID("bench", name, "checkpoint", fmt.Sprint(k))
		snapDir := filepath.Join(vmDir, "Snapshots")
		if err := storetest.WriteConfig(filepath.Join(snapDir, cid+".xml"), storetest.ConfigSpec{
			Name: fmt.Sprintf("%s - (%d)", name, k), ID: cid, VMID: id, DiskPath: winDir + filepath.Base(paths[k])}); err != nil {
			return disks, small, err
		}
		small++
		if err := state(snapDir, cid); err != nil {
			return disks, small, err
		}
	}
	for n := 0; small < 50; n++ {
		line := fmt.Sprintf("%s event %d: checkpoint operation completed\n", name, n)
		if err := writeSmall(filepath.Join(vmDir, "Logs", fmt.Sprintf("event-%03d.log", n)), []byte(strings.Repeat(line, 1+rng.Intn(40)))); err != nil {
			return disks, small, err
		}
		small++
	}
	return disks, small, nil
}

func writeSmall(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o644)
}

// runSpace builds the store (unless it exists) and measures. It returns the
// results and a note for what could not be measured.
func runSpace(hv, dir string, nvm int, virt int64, runs int) ([]result, error) {
	root := filepath.Join(dir, "space-store")
	if _, err := os.Stat(root); err != nil {
		t0 := time.Now()
		st, err := buildSpaceStore(root, nvm, virt)
		if err != nil {
			return nil, fmt.Errorf("building the store: %w", err)
		}
		fmt.Printf("built space store: %d VMs, %d disk files, %d small files in %.1fs (%s)\n",
			st.VMs, st.Disks, st.SmallFiles, time.Since(t0).Seconds(), root)
	}
	var res []result
	// Warm the cache (and learn whether `hvsnap space` works) with one
	// untimed run of each.
	duArgs := []string{"-s", root}
	if out, err := exec.Command("du", duArgs...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("du: %v: %s", err, lastLine(out))
	}
	// Standard output goes to /dev/null (os/exec's default), no shell.
	hvArgs := []string{"-q", "space", "--json", root}
	if err := tryRun(hv, hvArgs...); err != nil {
		return nil, err
	}
	r, err := measureE("space/hvsnap", runs, 0, nil, hv, hvArgs...)
	if err != nil {
		return nil, err
	}
	res = append(res, r)
	r, err = measureE("space/du", runs, 0, nil, "du", duArgs...)
	if err != nil {
		return nil, err
	}
	res = append(res, r)
	// The floor (bench/spacefloor.go): this program re-run as a child.
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, err = measureE("space/floor", runs, 0, nil, self, "-space-floor", root)
	if err != nil {
		return nil, err
	}
	return append(res, r), nil
}

// tryRun runs a command and turns a failure into an error with the last
// line it printed. Exit status 3 (findings) counts as success.
func tryRun(cmd string, args ...string) error {
	c := exec.Command(cmd, args...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	err := c.Run()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 3 {
		return nil
	}
	if err != nil {
		if l := lastLine(stderr.Bytes()); l != "" {
			return fmt.Errorf("%v: %s", err, l)
		}
		return err
	}
	return nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
