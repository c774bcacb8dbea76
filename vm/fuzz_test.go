package vm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fuzzSeeds are small valid (and nearly valid) containers built in code.
func fuzzSeeds(t testing.TB) [][]byte {
	small := tconfig{name: "fuzz", id: testVMID, subtype: 0, version: 2304, memoryMiB: 512, cpus: 1,
		scsi: [][]tdrive{{{"VHD", `C:\d.vhdx`}}}, scsiInstances: []string{testSCSI0}}
	small.ide[0][0] = tdrive{"VHD", `C:\a.vhd`}
	withExt := small.tree()
	ext := tstr("notes", "external value")
	ext.external = true
	withExt.find("properties").children = append(withExt.find("properties").children, ext,
		tblob("creation_time", []byte{1, 2, 3, 4, 5, 6, 7, 8}),
		&tkey{name: "u", typ: vmcxTypeUint, i: 7}, &tkey{name: "d", typ: vmcxTypeDouble, i: 2})
	reg := tnode("Configurations", tnode("VirtualMachines", tstr("_"+testVMID+"_", `C:\VM\Virtual Machines\`+testVMID+`.vmcx`)))

	broken := buildVMCX(t, small.tree(), vmcxBuildOpts{compact: true, seq1: 1, seq2: 2, replayCount: 1})
	broken.data[0x1004] ^= 1 // header 2 (the newer) is bad: fall back to header 1
	return [][]byte{
		buildVMCX(t, small.tree(), vmcxBuildOpts{compact: true}).data,
		buildVMCX(t, small.tree(), vmcxBuildOpts{compact: true, maxPerTable: 4}).data,
		buildVMCX(t, withExt, vmcxBuildOpts{compact: true, maxPerTable: 8}).data,
		buildVMCX(t, reg, vmcxBuildOpts{compact: true}).data,
		buildVMCX(t, small.tree(), vmcxBuildOpts{compact: true, staleTable1: true, unallocTable: true}).data,
		broken.data,
		pendingSeed(t, small),
	}
}

// pendingSeed is the small configuration with a change not yet applied in
// place: the file names C:\e.vhdx as its SCSI drive, and its replay log
// holds, as an outstanding write, the change to C:\d.vhdx (seed-6; the
// storetest package writes it as a VM whose configuration must be read
// with its log replayed).
func pendingSeed(t testing.TB, small tconfig) []byte {
	cur := buildVMCX(t, small.tree(), vmcxBuildOpts{compact: true})
	old := small
	old.scsi = [][]tdrive{{{"VHD", `C:\e.vhdx`}}}
	in := buildVMCX(t, old.tree(), vmcxBuildOpts{compact: true})
	if len(in.data) != len(cur.data) {
		t.Fatal("pendingSeed: the two layouts differ")
	}
	lo, hi := 0, len(cur.data)
	for lo < hi && in.data[lo] == cur.data[lo] {
		lo++
	}
	for hi > lo && in.data[hi-1] == cur.data[hi-1] {
		hi--
	}
	if lo == hi || lo < vmcxObjectTableOffset {
		t.Fatalf("pendingSeed: change at 0x%x..0x%x", lo, hi)
	}
	return withReplayLog(in.data, []logWrite{{int64(lo), cur.data[lo:hi]}})
}

// The fuzz input is a container in packed form: the two 46-byte headers, then
// the file from the object table (0x2000) on. unpackVMCX restores the file by
// placing them at 0x0, 0x1000 and 0x2000; the padding between, which the
// reader never looks at, is zero. This keeps inputs (and the committed
// corpus) a few KB instead of 8 KB of padding that the fuzzer would mutate
// and minimize in vain. Offsets inside the input stay absolute file offsets.
func packVMCX(file []byte) []byte {
	out := append([]byte(nil), file[:vmcxHeaderLen]...)
	out = append(out, file[vmcxHeader2Offset:vmcxHeader2Offset+vmcxHeaderLen]...)
	return append(out, file[vmcxObjectTableOffset:]...)
}

func unpackVMCX(in []byte) []byte {
	file := make([]byte, vmcxObjectTableOffset, vmcxObjectTableOffset+max(len(in)-2*vmcxHeaderLen, 0))
	copy(file, in[:min(len(in), vmcxHeaderLen)])
	if len(in) > vmcxHeaderLen {
		copy(file[vmcxHeader2Offset:], in[vmcxHeaderLen:min(len(in), 2*vmcxHeaderLen)])
	}
	if len(in) > 2*vmcxHeaderLen {
		file = append(file, in[2*vmcxHeaderLen:]...)
	}
	if len(in) < 2*vmcxHeaderLen {
		file = file[:len(in)*vmcxObjectTableOffset/(2*vmcxHeaderLen)] // short inputs: short files
	}
	return file
}

func FuzzVMCX(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(packVMCX(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		data := unpackVMCX(in)
		for _, strict := range []bool{false, true} {
			c, err := ReadContainer(bytes.NewReader(data), int64(len(data)), "fuzz.vmcx", &ContainerOptions{Strict: strict})
			if err != nil {
				var e *Error
				if !errors.As(err, &e) || e.Path != "fuzz.vmcx" || !(errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupported)) {
					t.Fatalf("error %v (%T) is not an *Error wrapping ErrCorrupt/ErrUnsupported", err, err)
				}
				continue
			}
			if strict && len(c.Problems) != 0 {
				t.Fatalf("strict read returned problems: %v", c.Problems)
			}
			n := 0
			for _, r := range c.Roots {
				r.Walk(func(string, *Key) bool { n++; return true })
			}
			if n > len(data) {
				t.Fatalf("%d keys from %d bytes", n, len(data))
			}
		}
		if c, err := ParseVMCXConfig(bytes.NewReader(data), int64(len(data)), "fuzz.vmcx", &ParseOptions{NoResolve: true}); err == nil {
			_ = c.Name
		}
	})
}

// TestFuzzSeedsRead: the seeds read as intended (so the fuzzer starts from
// deep inside the format), also after packing and unpacking.
func TestFuzzSeedsRead(t *testing.T) {
	for i, s := range fuzzSeeds(t) {
		if !bytes.Equal(unpackVMCX(packVMCX(s)), s) {
			t.Fatalf("seed %d: pack/unpack changes it", i)
		}
		c, err := ReadContainer(bytes.NewReader(s), int64(len(s)), "seed", &ContainerOptions{Strict: true})
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		if len(c.Roots) != 1 {
			t.Errorf("seed %d: roots %v", i, c.Roots)
		}
	}
}

// TestFuzzCorpus checks the committed corpus (small, well-formed) and, with
// HVSNAP_WRITE_FUZZ_SEEDS=1, rewrites it from fuzzSeeds.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzVMCX")
	if os.Getenv("HVSNAP_WRITE_FUZZ_SEEDS") == "1" {
		for i, s := range fuzzSeeds(t) {
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(packVMCX(s))) + ")\n"
			writeFile(t, filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body))
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("no committed corpus: %v", err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) >= 100<<10 || !strings.HasPrefix(string(b), "go test fuzz v1\n") {
			t.Errorf("%s: %d bytes or not in `go test fuzz v1` format", e.Name(), len(b))
		}
	}
}
