package main

// The space scenario's floor: the file-system work `hvsnap space` cannot
// avoid, done by a minimal program with no parsing at all. It walks the tree
// as du does (every folder listed, every entry lstat'ed), and with two
// workers opens every disk file and reads the structures hvsnap reads (VHDX:
// file identifier, both headers, both 64 KiB region tables, the metadata
// table and items, the BAT; VHD: footer, dynamic header, BAT, a locator) and
// every XML configuration in one read. The bench runs it as
// `bench -space-floor ROOT` beside hvsnap and du, so the ratio
// hvsnap/du can be read against floor/du: what any tool reading every
// header and BAT pays on this machine over du's directory walk.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

func spaceFloor(root string) error {
	var (
		mu          sync.Mutex
		disks, xmls []string
		wg          sync.WaitGroup
		sem         = make(chan struct{}, 2)
	)
	var walk func(dir string)
	walk = func(dir string) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			if e.IsDir() {
				select {
				case sem <- struct{}{}:
					wg.Add(1)
					go func() { defer func() { <-sem; wg.Done() }(); walk(p) }()
				default:
					walk(p)
				}
				continue
			}
			if _, err := os.Lstat(p); err != nil {
				continue
			}
			ext := strings.ToLower(filepath.Ext(p))
			mu.Lock()
			switch ext {
			case ".vhd", ".avhd", ".vhdx", ".avhdx":
				disks = append(disks, p)
			case ".xml":
				xmls = append(xmls, p)
			}
			mu.Unlock()
		}
	}
	walk(root)
	wg.Wait()
	jobs := make(chan string, len(disks)+len(xmls))
	for _, p := range disks {
		jobs <- p
	}
	for _, p := range xmls {
		jobs <- p
	}
	close(jobs)
	vhdx := [][2]int64{{0, 520}, {64 << 10, 4096}, {128 << 10, 4096}, {192 << 10, 64 << 10}, {256 << 10, 64 << 10},
		{2 << 20, 4096}, {2<<20 + 64<<10, 512}, {3 << 20, 4096}, {3<<20 + 4096, 8192}}
	vhd := [][2]int64{{-512, 512}, {512, 1024}, {1536, 4096}, {5632, 512}}
	var n int
	var nmu sync.Mutex
	var wg2 sync.WaitGroup
	for range 2 {
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			buf := make([]byte, 256<<10)
			for p := range jobs {
				f, err := os.Open(p)
				if err != nil {
					continue
				}
				fi, _ := f.Stat()
				switch strings.ToLower(filepath.Ext(p)) {
				case ".xml":
					f.ReadAt(buf[:min(fi.Size(), int64(len(buf)))], 0)
				case ".vhdx", ".avhdx":
					for _, r := range vhdx {
						f.ReadAt(buf[:r[1]], r[0])
					}
				default:
					for _, r := range vhd {
						off := r[0]
						if off < 0 {
							off += fi.Size()
						}
						f.ReadAt(buf[:r[1]], off)
					}
				}
				f.Close()
				nmu.Lock()
				n++
				nmu.Unlock()
			}
		}()
	}
	wg2.Wait()
	fmt.Printf("%d disks and %d configurations read\n", len(disks), len(xmls))
	if n == 0 {
		return fmt.Errorf("nothing read under %s", root)
	}
	return nil
}
