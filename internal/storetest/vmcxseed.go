package storetest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
)

// VMCXSeed reads a VMCX container from the vm package's committed fuzz
// corpus (vm/testdata/fuzz/FuzzVMCX/seed-N: Go's "go test fuzz v1" file
// holding the container in its packed form) and returns the file as it is
// on disk: the two 46-byte headers at 0x0 and 0x1000, the rest from the
// object table at 0x2000. Tests of packages that cannot build VMCX files
// themselves use it (seed-5 and seed-6: VM "fuzz", ID 6F2B7A31-0C43-4E59-9B1D-
// 2A7C5E8F9013, drives C:\a.vhd and C:\d.vhdx; seed-5 with a damaged
// replay log, seed-6 with a replayable one).
func VMCXSeed(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := bytes.SplitN(raw, []byte("\n"), 3)
	if len(lines) < 2 || string(lines[0]) != "go test fuzz v1" || !bytes.HasPrefix(lines[1], []byte("[]byte(")) || !bytes.HasSuffix(lines[1], []byte(")")) {
		return nil, fmt.Errorf("%s: not a go fuzz []byte seed", path)
	}
	s, err := strconv.Unquote(string(lines[1][len("[]byte(") : len(lines[1])-1]))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	const hdr, h2, obj = 46, 0x1000, 0x2000
	in := []byte(s)
	if len(in) < 2*hdr {
		return nil, fmt.Errorf("%s: %d bytes, shorter than two headers", path, len(in))
	}
	file := make([]byte, obj, obj+len(in)-2*hdr)
	copy(file, in[:hdr])
	copy(file[h2:], in[hdr:2*hdr])
	return append(file, in[2*hdr:]...), nil
}

// unreplayedSeed is the configuration UnreplayedVM writes: the seed of the vm
// package's fuzz corpus whose replay log claims one outstanding entry that
// is not there (an all-zero slot: a damaged log, which cannot be replayed).
const unreplayedSeed = "seed-5"

// pendingSeed is the configuration ReplayPendingVM writes: the seed whose
// replay log holds one outstanding write that changes the SCSI drive from
// C:\e.vhdx (in place) to C:\d.vhdx.
const pendingSeed = "seed-6"

// UnreplayedVM writes the VMCX seed whose replay log cannot be replayed
// (VM "fuzz", see VMCXSeed) as the configuration of the VM folder vmDir
// ("Virtual Machines/6F2B7A31-….vmcx") and returns the file's path. The
// seed is found next to this source file, so any package's tests can call
// it.
func UnreplayedVM(vmDir string) (string, error) { return seedVM(vmDir, unreplayedSeed) }

// ReplayPendingVM is UnreplayedVM for the seed with a replayable
// outstanding write: read with its log replayed, VM "fuzz" has the drives
// C:\a.vhd and C:\d.vhdx; the bytes in place still name C:\e.vhdx.
func ReplayPendingVM(vmDir string) (string, error) { return seedVM(vmDir, pendingSeed) }

func seedVM(vmDir, seed string) (string, error) {
	_, src, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("storetest: cannot locate the source tree")
	}
	data, err := VMCXSeed(filepath.Join(filepath.Dir(src), "..", "..", "vm", "testdata", "fuzz", "FuzzVMCX", seed))
	if err != nil {
		return "", err
	}
	cfg := filepath.Join(vmDir, "Virtual Machines", "6F2B7A31-0C43-4E59-9B1D-2A7C5E8F9013.vmcx")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		return "", err
	}
	return cfg, os.WriteFile(cfg, data, 0o644)
}
