package vhd

import (
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestVXHugeDiskMemory: a 64 TiB dynamic disk with 1 MiB blocks has a
// 512 MiB BAT; writing, walking every run and checking must stay well under
// 64 MiB of heap (the BAT is paged, never loaded whole).
func TestVXHugeDiskMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	p := filepath.Join(t.TempDir(), "huge.vhdx")
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	im, err := Create(p, CreateSpec{Format: FormatVHDX, Type: TypeDynamic, Size: MaxVHDXSize, BlockSize: MiB}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := vxBack(t, im)
	if b.batLen != 512*MiB+MiB {
		t.Logf("BAT region %d bytes", b.batLen)
	}
	offs := []int64{0, 7 * TiB, 33*TiB + 5*MiB, MaxVHDXSize - 4096}
	for i, off := range offs {
		if err := b.writeAt(vxRand(int64(i), 4096), off, nil); err != nil {
			t.Fatal(err)
		}
	}
	im.Close()
	im, err = Open(p, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var data int64
	runs := 0
	if err := im.Extents(func(r Run) error {
		runs++
		if r.State == StateData {
			data += r.Len
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	fs, err := im.Check()
	if err != nil {
		t.Fatal(err)
	}
	vxNoErrors(t, fs)
	im.Close()
	close(stop)
	wg.Wait()
	if data != 4*MiB || runs != 7 {
		t.Errorf("extents: %d data bytes in %d runs", data, runs)
	}
	used := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("peak heap growth %.1f MiB", float64(used)/MiB)
	if used > 48*MiB {
		t.Errorf("peak heap grew by %d MiB", used/MiB)
	}
}
