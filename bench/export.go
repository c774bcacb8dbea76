package main

// The export and import scenarios: a VM with a 4 GiB dynamic VHDX holding
// about 1.5 GiB of realistic data (runs of text-like compressible data,
// zeros and random bytes laid out like a file system fills a disk) and two
// checkpoint disks, exported to one .tar.lz4 by `hvsnap export` side by
// side with `tar -cS | lz4 -1` of the same folder, and imported by `hvsnap
// import` side by side with `lz4 -dc | tar -x`. hvsnap hashes every byte
// (SHA-256) and fsyncs what it writes; the peers do neither, so the "+sync"
// rows give them the same durability.

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/vhd"
)

// fillRealistic writes mixed content into b: half of the 64 KiB pieces
// random (compressed files, encrypted data), the others text-like records
// or zero runs.
func fillRealistic(b []byte, rng *rand.Rand) {
	words := []string{"System32 ", "Windows ", "Program Files ", "dll ", "<config> ", "registry ", "the ", "Microsoft ",
		"value=", "0x0000 ", "\r\n", "user ", "GUID {", "} ", "error ", "log ", "2024-05-01 ", "ntfs ", "\x00\x00\x00\x00"}
	for i := 0; i < len(b); i += 64 << 10 {
		end := min(i+64<<10, len(b))
		switch r := rng.Intn(10); {
		case r < 5:
			rng.Read(b[i:end])
		case r < 9:
			for j := i; j < end; {
				j += copy(b[j:end], words[rng.Intn(len(words))])
				if rng.Intn(8) == 0 {
					n := copy(b[j:end], fmt.Sprintf("%08x ", rng.Uint32()))
					j += n
				}
			}
		default:
			clear(b[i:end])
		}
	}
}

// buildExportVM writes root/benchvm (two checkpoint disks of 64 MiB) and
// returns its folder.
func buildExportVM(root string, virt, data int64) (string, error) {
	return buildBenchVM(root, virt, data, 2, 64<<20, 256<<10, false)
}

// buildBenchVM writes root/benchvm: a dynamic VHDX base with data bytes of
// realistic content laid out from the start, ncp differencing disks of
// cpBytes each (pieces of piece bytes at random piece-aligned offsets)
// chained on it, and an XML configuration naming the last (mergePending:
// disk_merge_pending set).
func buildBenchVM(root string, virt, data int64, ncp int, cpBytes, piece int64, mergePending bool) (string, error) {
	rng := rand.New(rand.NewSource(7))
	name := "benchvm"
	id := storetest.GUID("bench-export")
	vmDir := filepath.Join(root, name)
	disks := filepath.Join(vmDir, "Virtual Hard Disks")
	if err := os.MkdirAll(disks, 0o755); err != nil {
		return "", err
	}
	base := filepath.Join(disks, name+".vhdx")
	im, err := vhd.Create(base, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: virt}, nil)
	if err != nil {
		return "", err
	}
	im.Close()
	write := func(path string, fn func(c *vhd.Chain, buf []byte) error) error {
		c, err := vhd.OpenChain(path, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := fn(c, make([]byte, 8<<20)); err != nil {
			return err
		}
		return c.Flush()
	}
	// The base: data laid out from the start of the disk with small gaps,
	// like a file system that filled up over time.
	err = write(base, func(c *vhd.Chain, buf []byte) error {
		off := int64(0)
		for done := int64(0); done < data; {
			n := min(int64(1+rng.Intn(8))<<20, data-done)
			fillRealistic(buf[:n], rng)
			if off+n > virt {
				break
			}
			if _, err := c.WriteAt(buf[:n], off); err != nil {
				return err
			}
			done += n
			off += n + int64(rng.Intn(4))*64<<10
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	parent := base
	var leaf string
	for i := 0; i < ncp; i++ {
		leaf = filepath.Join(disks, fmt.Sprintf("%s_%s.avhdx", name, storetest.GUID("bench-export", fmt.Sprint(i))))
		im, err := vhd.Create(leaf, vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDifferencing, Parent: parent}, nil)
		if err != nil {
			return "", err
		}
		im.Close()
		err = write(leaf, func(c *vhd.Chain, buf []byte) error {
			for done := int64(0); done < cpBytes; {
				n := piece
				fillRealistic(buf[:n], rng)
				off := rng.Int63n((virt-n)/piece) * piece
				if _, err := c.WriteAt(buf[:n], off); err != nil {
					return err
				}
				done += n
			}
			return nil
		})
		if err != nil {
			return "", err
		}
		parent = leaf
	}
	cfg := filepath.Join(vmDir, "Virtual Machines", id+".xml")
	err = storetest.WriteConfig(cfg, storetest.ConfigSpec{Name: name, ID: id, MergePending: mergePending,
		DiskPath: storetest.WindowsRoot + `\` + name + `\Virtual Hard Disks\` + filepath.Base(leaf)})
	return vmDir, err
}

func runExportBench(hv, dir string, virt, data int64, runs int, want func(string) bool) ([]result, map[string]any, error) {
	for _, tool := range []string{"lz4", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, nil, fmt.Errorf("%s not installed", tool)
		}
	}
	root := filepath.Join(dir, "export-src")
	vmDir, err := buildExportVM(root, virt, data)
	if err != nil {
		return nil, nil, err
	}
	var fileBytes int64
	filepath.Walk(vmDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			fileBytes += info.Size()
		}
		return nil
	})
	fmt.Printf("built export VM %s: %.1f MiB of files\n", vmDir, float64(fileBytes)/(1<<20))
	out := filepath.Join(dir, "export-out")
	os.MkdirAll(out, 0o755)
	arch := filepath.Join(out, "vm.tar.lz4")
	ref := filepath.Join(out, "ref.tar.lz4")
	sync := func() { exec.Command("sync").Run() }
	var res []result
	// Warm the page cache for both (untimed).
	exec.Command("sh", "-c", fmt.Sprintf("tar -cSf - -C %q benchvm > /dev/null", root)).Run()
	freshArch := func() { os.Remove(arch); sync() }
	freshRef := func() { os.Remove(ref); sync() }
	tarLZ4 := fmt.Sprintf("tar -cSf - -C %q benchvm | lz4 -1 -q > %q", root, ref)
	res = append(res, measure("export/hvsnap", runs, fileBytes, freshArch, hv, "-q", "export", "--to", arch, vmDir))
	res = append(res, measure("export/tar+lz4", runs, fileBytes, freshRef, "sh", "-c", tarLZ4))
	res = append(res, measure("export/tar+lz4+sync", runs, fileBytes, freshRef, "sh", "-c", tarLZ4+" && sync"))
	sa, _ := os.Stat(arch)
	sr, _ := os.Stat(ref)
	summary := map[string]any{"package_bytes": sa.Size(), "tar_lz4_bytes": sr.Size(), "file_bytes": fileBytes}
	if want("import") {
		dst := filepath.Join(dir, "import-dst")
		clean := func() { os.RemoveAll(dst); os.MkdirAll(dst, 0o755); sync() }
		untar := fmt.Sprintf("lz4 -dc %q | tar -xf - -C %q", ref, dst)
		res = append(res, measure("import/hvsnap", runs, fileBytes, clean, hv, "-q", "import", "--to", dst, arch))
		res = append(res, measure("import/lz4+tar", runs, fileBytes, clean, "sh", "-c", untar))
		res = append(res, measure("import/lz4+tar+sync", runs, fileBytes, clean, "sh", "-c", untar+" && sync"))
		os.RemoveAll(dst)
	}
	return res, summary, nil
}

func reportExport(by map[string]result, sum map[string]any, err error, summary map[string]any, missed *int) {
	if err != nil {
		fmt.Printf("export/import: not measured (%v)\n", err)
		summary["export_error"] = err.Error()
		return
	}
	var rss int64
	for _, n := range []string{"export/hvsnap", "import/hvsnap"} {
		if r, ok := by[n]; ok && r.MaxRSS > rss {
			rss = r.MaxRSS
		}
	}
	if h, ok := by["export/hvsnap"]; ok {
		r1 := h.Seconds / by["export/tar+lz4"].Seconds
		r2 := h.Seconds / by["export/tar+lz4+sync"].Seconds
		fmt.Printf("export ratio hvsnap/(tar -cS | lz4 -1) = %.2f; with sync %.2f (target ≤ 1.00, hvsnap also hashes and fsyncs) %s\n", r1, r2, verdict(r2 <= 1.0, missed))
		summary["export_ratio"], summary["export_ratio_sync"] = r1, r2
		pb, rb := sum["package_bytes"].(int64), sum["tar_lz4_bytes"].(int64)
		sr := float64(pb) / float64(rb)
		fmt.Printf("package size %d / tar+lz4 %d = %.4f (target within 2%%) %s\n", pb, rb, sr, verdict(sr <= 1.02 && sr >= 0.98, missed))
		summary["size_ratio"], summary["package_bytes"], summary["tar_lz4_bytes"] = sr, pb, rb
	}
	if h, ok := by["import/hvsnap"]; ok {
		r1 := h.Seconds / by["import/lz4+tar"].Seconds
		r2 := h.Seconds / by["import/lz4+tar+sync"].Seconds
		fmt.Printf("import ratio hvsnap/(lz4 -dc | tar -x) = %.2f; with sync %.2f (target ≤ 1.00, hvsnap also verifies and fsyncs) %s\n", r1, r2, verdict(r2 <= 1.0, missed))
		summary["import_ratio"], summary["import_ratio_sync"] = r1, r2
	}
	fmt.Printf("export/import peak RSS = %.1f MiB (target < 128 MiB) %s\n", float64(rss)/(1<<20), verdict(rss < 128<<20, missed))
	summary["export_import_max_rss_bytes"] = rss
}
