//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

// reportingOrder is the free page reporting knob of virtio-balloon guests:
// free blocks of this order and larger are handed back to the host, which
// drops their backing. (The kernel accepts values above the largest buddy
// order on some builds, which stops reporting; on others it refuses them.)
const reportingOrder = "/sys/module/page_reporting/parameters/page_reporting_order"

// warmBytes is how much anonymous memory quietMemory touches once, so that
// the page cache the runs allocate lands on memory the host backs already:
// more than any one run's working set (the merge rounds cycle ~3 GiB of
// page cache between drops).
const warmBytes = 8 << 30

// quietMemory takes one source of noise out of the figures on a VM whose
// balloon reports free pages to the host (Firecracker, QEMU with
// free-page-reporting): memory the guest frees (drop_caches between runs,
// a finished run's page cache) goes back to the host, and the first touch
// of each page afterwards costs a host fault. Measured on the bench VM on
// 2026-12-02: a plain pread/pwrite copy of 1 GiB between cached files
// took 0.3 s or 4.0 s depending only on how much of the memory it got had
// been reported (0.27-0.34 s every time with reporting stopped).
// Which peer paid depended on what ran before it, so ratios swung from 1.2
// to 11 between identical runs. As root it stops reporting for the bench's
// duration and touches warmBytes once so that every run starts on backed
// memory; restore puts the old value back (also on SIGINT/SIGTERM). It
// returns a line for the report.
func quietMemory() (restore func(), note string) {
	old, err := os.ReadFile(reportingOrder)
	if err != nil {
		return func() {}, "memory: no free page reporting on this kernel (nothing to quiet)"
	}
	prev := strings.TrimSpace(string(old))
	if os.Geteuid() != 0 {
		return func() {}, fmt.Sprintf("memory: free page reporting is on (order %s) and the bench is not root: figures may carry host-fault noise (see bench/memquiet_linux.go)", prev)
	}
	if err := os.WriteFile(reportingOrder, []byte("11"), 0); err != nil {
		return func() {}, fmt.Sprintf("memory: this kernel refuses to stop free page reporting (%v): figures may carry host-fault noise", err)
	}
	done := false
	restore = func() {
		if !done {
			done = true
			os.WriteFile(reportingOrder, []byte(prev), 0)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		restore()
		fmt.Fprintf(os.Stderr, "bench: %v: free page reporting restored to order %s\n", s, prev)
		os.Exit(130)
	}()
	restoreOnFatal = restore
	n := min(int64(warmBytes), availableBytes()/2)
	if n > 0 {
		if err := exec.Command(os.Args[0], "-touch-memory", strconv.FormatInt(n, 10)).Run(); err != nil {
			return restore, fmt.Sprintf("memory: free page reporting stopped (was order %s, restored at the end); warming failed: %v", prev, err)
		}
	}
	return restore, fmt.Sprintf("memory: free page reporting stopped for the bench (was order %s, restored at the end), %d MiB touched once so runs start on host-backed memory", prev, n>>20)
}

// touchOnce (run by the bench binary as "-touch-memory N", see main) maps n bytes of anonymous memory, writes one byte per page and
// unmaps it: the pages go back to the kernel's free lists, backed.
func touchOnce(n int64) error {
	b, err := syscall.Mmap(-1, 0, int(n), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return err
	}
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return syscall.Munmap(b)
}

// availableBytes is MemAvailable from /proc/meminfo (0 when unknown).
func availableBytes() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
