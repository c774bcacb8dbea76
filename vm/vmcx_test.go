package vm

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

const (
	testVMID   = "6F2B7A31-0C43-4E59-9B1D-2A7C5E8F9013"
	testSnapID = "0D9E3C55-7A21-4B8E-8F60-1C2B3A4D5E6F"
	testSCSI0  = "a1b2c3d4-0000-4000-8000-000000000001"
	testSCSI1  = "a1b2c3d4-0000-4000-8000-000000000002"
)

// testConfig is a Gen2 VM with IDE and two SCSI controllers.
func testConfig() tconfig {
	c := tconfig{
		name: "Rescue Me", id: testVMID, subtype: 1, version: 2304, mergePending: true,
		memoryMiB: 2048, cpus: 4,
		scsi: [][]tdrive{
			{{"VHD", `C:\VMs\Rescue Me\Virtual Hard Disks\os_` + testSnapID + `.avhdx`}, {"ISO", `C:\iso\setup.iso`}},
			{{"VHD", `D:\Data\data.vhdx`}},
		},
		scsiInstances: []string{testSCSI0, testSCSI1},
	}
	c.ide[0][0] = tdrive{"VHD", `C:\VMs\Rescue Me\Virtual Hard Disks\boot.vhd`}
	return c
}

// testTree is testConfig's tree plus a large value held in a file object.
func testTree() *tkey {
	root := testConfig().tree()
	big := bytes.Repeat([]byte{0xA5}, 0x900)
	nv := tblob("nvram", big)
	nv.external = true
	long := tstr("notes", strings.Repeat("long note ", 300)) // 6000 bytes of UTF-16
	long.external = true
	props := root.find("properties")
	props.children = append(props.children, nv, long)
	return root
}

func buildTest(t testing.TB, o vmcxBuildOpts) *builtVMCX {
	if o.maxPerTable == 0 {
		o.maxPerTable = 12 // several tables: parents cross tables
	}
	return buildVMCX(t, testTree(), o)
}

func readBuilt(data []byte, strict bool) (*Container, error) {
	return ReadContainer(bytes.NewReader(data), int64(len(data)), "test.vmcx", &ContainerOptions{Strict: strict})
}

func TestVMCXRoundTrip(t *testing.T) {
	b := buildTest(t, vmcxBuildOpts{})
	if len(b.tables) < 3 {
		t.Fatalf("want several key tables, got %d", len(b.tables))
	}
	c, err := readBuilt(b.data, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Problems)+len(c.Warnings) != 0 || c.PossiblyInconsistent {
		t.Fatalf("problems %v warnings %q", c.Problems, c.Warnings)
	}
	root := c.Root("configuration")
	if got := root.Lookup("properties/nvram"); got == nil || got.Kind != KindBytes || len(got.Bytes) != 0x900 || got.Bytes[0x8ff] != 0xA5 {
		t.Errorf("file-object blob = %+v", got)
	}
	if got := root.Lookup("properties/notes").String(); got != strings.Repeat("long note ", 300) {
		t.Errorf("file-object string has %d chars", len(got))
	}
	cfg, err := ParseVMCXConfig(bytes.NewReader(b.data), int64(len(b.data)), "/x/Virtual Machines/"+testVMID+".vmcx", &ParseOptions{NoResolve: true})
	if err != nil {
		t.Fatal(err)
	}
	checkConfig(t, cfg, Config{Kind: KindVMCX, Name: "Rescue Me", ID: testVMID, VMID: testVMID, Generation: 2, Version: "9.0", VersionRaw: 2304,
		TypeID: "Virtual Machines", DiskMergePending: true, MemoryMiB: 2048, Processors: 4})
	checkDisks(t, cfg.Disks, []DriveRef{
		{Controller: ControllerIDE, Type: "VHD", WindowsPath: `C:\VMs\Rescue Me\Virtual Hard Disks\boot.vhd`},
		{Controller: ControllerSCSI, Type: "VHD", Section: testSCSI0, WindowsPath: `C:\VMs\Rescue Me\Virtual Hard Disks\os_` + testSnapID + `.avhdx`},
		{Controller: ControllerSCSI, ControllerIndex: 1, Type: "VHD", Section: testSCSI1, WindowsPath: `D:\Data\data.vhdx`},
	})
	checkDisks(t, cfg.Media, []DriveRef{{Controller: ControllerSCSI, Drive: 1, Type: "ISO", WindowsPath: `C:\iso\setup.iso`}})
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings %q", cfg.Warnings)
	}
}

func setParent(data []byte, abs int64, table uint16, off uint32) {
	le.PutUint16(data[abs+6:], table)
	le.PutUint32(data[abs+8:], off)
	resumEntry(data, abs)
}

func TestVMCXCorruption(t *testing.T) {
	type tc struct {
		name   string
		opts   vmcxBuildOpts
		mutate func(b *builtVMCX) []byte
		// Expectations (lenient read): an error wrapping want; else a
		// problem/warning containing the text.
		wantErr     error
		errText     string
		problem     string
		warning     string
		check       func(t *testing.T, c *Container)
		strictOK    bool // strict read succeeds too
		configError bool // ParseVMCXConfig fails
	}
	nameIs := func(want string) func(t *testing.T, c *Container) {
		return func(t *testing.T, c *Container) {
			t.Helper()
			if got := nameOf(c); got != want {
				t.Errorf("name = %q, want %q", got, want)
			}
		}
	}
	cases := []tc{
		{name: "valid", check: nameIs("Rescue Me"), strictOK: true},
		{name: "header 1 bad checksum → header 2", mutate: func(b *builtVMCX) []byte { b.data[4] ^= 1; return b.data },
			warning: "header 1 at 0x0: checksum mismatch", strictOK: true,
			check: func(t *testing.T, c *Container) {
				if c.ActiveHeader != 2 || nameOf(c) != "Rescue Me" {
					t.Errorf("active header %d, name %q", c.ActiveHeader, nameOf(c))
				}
			}},
		{name: "header 2 bad signature → header 1", mutate: func(b *builtVMCX) []byte { b.data[0x1000] = 0; return b.data },
			warning: "header 2 at 0x1000: bad signature", strictOK: true, check: nameIs("Rescue Me")},
		{name: "higher sequence wins", opts: vmcxBuildOpts{seq1: 3, seq2: 9}, strictOK: true,
			check: func(t *testing.T, c *Container) {
				if c.ActiveHeader != 2 || c.Sequence != 9 {
					t.Errorf("active header %d seq %d", c.ActiveHeader, c.Sequence)
				}
			}},
		{name: "both headers bad", mutate: func(b *builtVMCX) []byte { b.data[4] ^= 1; b.data[0x1004] ^= 1; return b.data },
			wantErr: ErrCorrupt, errText: "header 1 at 0x0: checksum mismatch"},
		{name: "unsupported version", opts: vmcxBuildOpts{version: 0x500}, wantErr: ErrUnsupported, errText: "version 0x500"},
		{name: "empty file", mutate: func(b *builtVMCX) []byte { return nil }, wantErr: ErrCorrupt, errText: "missing"},
		{name: "truncated in object table", mutate: func(b *builtVMCX) []byte { return b.data[:0x2010] }, wantErr: ErrCorrupt, errText: "beyond the end of the file"},
		{name: "object table bad signature", mutate: func(b *builtVMCX) []byte { b.data[0x2000] ^= 0xFF; return b.data },
			wantErr: ErrCorrupt, errText: "object table: bad signature"},
		{name: "object table huge count", mutate: func(b *builtVMCX) []byte { le.PutUint32(b.data[0x2004:], 0xFFFFFFFF); return b.data },
			wantErr: ErrCorrupt, errText: "claims 4294967295 entries"},
		{name: "object table count past EOF", mutate: func(b *builtVMCX) []byte { le.PutUint32(b.data[0x2004:], 60000); return b.data },
			wantErr: ErrCorrupt, errText: "beyond the end of the file"},
		{name: "object entry bad checksum", mutate: func(b *builtVMCX) []byte { b.data[b.objects[1]+10] ^= 1; return b.data },
			problem: "object-table entry 1: checksum mismatch", configError: false},
		{name: "key table past EOF", mutate: func(b *builtVMCX) []byte {
			le.PutUint64(b.data[b.objects[2]+5:], 1<<40)
			resumObject(b.data, b.objects[2])
			return b.data
		}, problem: "lies beyond the end of the file"},
		{name: "all key tables past EOF", mutate: func(b *builtVMCX) []byte {
			for i := range b.tables {
				le.PutUint64(b.data[b.objects[i]+5:], 1<<40)
				resumObject(b.data, b.objects[i])
			}
			return b.data
		}, wantErr: ErrCorrupt, errText: "no readable key table"},
		{name: "key table huge size", mutate: func(b *builtVMCX) []byte {
			le.PutUint32(b.data[b.objects[0]+13:], 0xFFFFFFF0)
			resumObject(b.data, b.objects[0])
			return b.data
		}, problem: "lies beyond the end of the file", configError: true},
		{name: "key table header bad checksum", mutate: func(b *builtVMCX) []byte { b.data[b.tables[0]+4] ^= 1; return b.data },
			warning: "key table at 0x4000 ignored", problem: "does not exist", configError: true},
		{name: "entry bad checksum", mutate: func(b *builtVMCX) []byte {
			b.data[b.entries["configuration/properties/name"]+vmcxEntryHeaderLen+5+6] ^= 0x20 // inside the value
			return b.data
		}, problem: `key "name" at`, check: nameIs("")},
		{name: "entry size huge", mutate: func(b *builtVMCX) []byte {
			le.PutUint32(b.data[b.entries["configuration/properties/name"]+2:], 0xFFFFFFF0)
			return b.data
		}, problem: "entry size 4294967280"},
		{name: "entry size too small", mutate: func(b *builtVMCX) []byte {
			le.PutUint32(b.data[b.entries["configuration/properties/name"]+2:], 3)
			return b.data
		}, problem: "entry size 3"},
		{name: "string length huge", mutate: func(b *builtVMCX) []byte {
			le.PutUint32(b.data[b.entries["configuration/properties/name"]+vmcxEntryHeaderLen+5:], 0xFFFFFFF0)
			return b.data
		}, problem: "longer than the entry", check: nameIs("")},
		{name: "key length past entry", mutate: func(b *builtVMCX) []byte {
			b.data[b.entries["configuration/properties/name"]+20] = 255
			return b.data
		}, problem: "key length 255"},
		{name: "unknown value type", mutate: func(b *builtVMCX) []byte {
			b.data[b.entries["configuration/properties/name"]] = 0x0B
			return b.data
		}, problem: "value type 11"},
		{name: "cyclic parents", mutate: func(b *builtVMCX) []byte {
			p, s := b.entries["configuration/properties"], b.entries["configuration/settings"]
			pr, sr := b.refs["configuration/properties"], b.refs["configuration/settings"]
			setParent(b.data, p, sr.table, sr.off)
			setParent(b.data, s, pr.table, pr.off)
			return b.data
		}, problem: "cyclic parent chain", check: nameIs("")},
		{name: "self parent", mutate: func(b *builtVMCX) []byte {
			pr := b.refs["configuration/properties"]
			setParent(b.data, b.entries["configuration/properties"], pr.table, pr.off)
			return b.data
		}, problem: "cyclic parent chain", check: nameIs("")},
		{name: "root in a cycle", mutate: func(b *builtVMCX) []byte {
			r := b.entries["configuration"]
			pt, po := b.refs["configuration/properties"].table, b.refs["configuration/properties"].off
			setParent(b.data, r, pt, po)
			return b.data
		}, problem: "cyclic parent chain", configError: true},
		{name: "dangling parent", mutate: func(b *builtVMCX) []byte {
			setParent(b.data, b.entries["configuration/properties"], 1, 0x999)
			return b.data
		}, problem: "does not exist", check: nameIs("")},
		{name: "parent table missing", mutate: func(b *builtVMCX) []byte {
			setParent(b.data, b.entries["configuration/properties"], 0xFFFF, 0xFFFFFFFF)
			return b.data
		}, problem: "does not exist", check: nameIs("")},
		{name: "parent is a value", mutate: func(b *builtVMCX) []byte {
			t, o := b.refs["configuration/properties/global_id"].table, b.refs["configuration/properties/global_id"].off
			setParent(b.data, b.entries["configuration/properties/name"], t, o)
			return b.data
		}, problem: "is a value, not a node", check: nameIs("")},
		{name: "file object pointer to nowhere", mutate: func(b *builtVMCX) []byte {
			e := b.entries["configuration/properties/nvram"]
			le.PutUint64(b.data[e+vmcxEntryHeaderLen+6+4:], 0x123456789)
			resumEntry(b.data, e)
			return b.data
		}, problem: "not a file object", check: nameIs("Rescue Me")},
		{name: "file object value huge", mutate: func(b *builtVMCX) []byte {
			e := b.entries["configuration/properties/nvram"]
			le.PutUint32(b.data[e+vmcxEntryHeaderLen+6:], 0xFFFFFFFF)
			resumEntry(b.data, e)
			return b.data
		}, problem: "larger than its file object"},
		{name: "replay log has entries", opts: vmcxBuildOpts{replayCount: 3}, warning: "3 outstanding entries", strictOK: true,
			check: func(t *testing.T, c *Container) {
				if !c.PossiblyInconsistent || c.ReplayLogEntries != 3 || nameOf(c) != "Rescue Me" {
					t.Errorf("inconsistent=%v entries=%d name=%q", c.PossiblyInconsistent, c.ReplayLogEntries, nameOf(c))
				}
			}},
		{name: "replay log past EOF", mutate: func(b *builtVMCX) []byte {
			le.PutUint64(b.data[26:], 1<<50)
			resumHeader(b.data, 0)
			return b.data
		}, warning: "replay log offset", strictOK: true, check: func(t *testing.T, c *Container) {
			if !c.PossiblyInconsistent {
				t.Error("not marked possibly inconsistent")
			}
		}},
		{name: "stale key table copy ignored", opts: vmcxBuildOpts{staleTable1: true}, strictOK: true,
			check: func(t *testing.T, c *Container) {
				if c.Root("stale") != nil || nameOf(c) != "Rescue Me" {
					t.Errorf("stale table used: roots %v", c.Roots)
				}
			}},
		{name: "unallocated object ignored", opts: vmcxBuildOpts{unallocTable: true}, strictOK: true, check: nameIs("Rescue Me")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := buildTest(t, tc.opts)
			data := b.data
			if tc.mutate != nil {
				data = tc.mutate(b)
			}
			c, err := readBuilt(data, false)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err = %v, want %v containing %q", err, tc.wantErr, tc.errText)
				}
				var e *Error
				if !errors.As(err, &e) || e.Path != "test.vmcx" {
					t.Errorf("error %v does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("lenient read: %v", err)
			}
			if tc.problem != "" && !anyContains(errorsText(c.Problems), tc.problem) {
				t.Errorf("problems %v lack %q", c.Problems, tc.problem)
			}
			if tc.problem == "" && len(c.Problems) != 0 {
				t.Errorf("unexpected problems %v", c.Problems)
			}
			for _, p := range c.Problems {
				if !errors.Is(p, ErrCorrupt) || !strings.Contains(p.Error(), "test.vmcx") {
					t.Errorf("problem %v: not an ErrCorrupt naming the file", p)
				}
			}
			if tc.warning != "" && !anyContains(c.Warnings, tc.warning) {
				t.Errorf("warnings %q lack %q", c.Warnings, tc.warning)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
			_, serr := readBuilt(data, true)
			if tc.strictOK != (serr == nil) {
				t.Errorf("strict read: err = %v, want success %v", serr, tc.strictOK)
			}
			if serr != nil && (!errors.Is(serr, ErrCorrupt) || (tc.problem != "" && !strings.Contains(serr.Error(), tc.problem))) {
				t.Errorf("strict error %v: want ErrCorrupt with %q", serr, tc.problem)
			}
			cfg, cerr := ParseVMCXConfig(bytes.NewReader(data), int64(len(data)), "test.vmcx", &ParseOptions{NoResolve: true})
			if tc.configError != (cerr != nil) {
				t.Errorf("ParseVMCXConfig: err = %v, want error %v", cerr, tc.configError)
			}
			if cerr == nil && len(c.Problems) > 0 && (!cfg.PossiblyInconsistent || len(cfg.Warnings) == 0) {
				t.Errorf("config from a damaged file: inconsistent=%v warnings=%q", cfg.PossiblyInconsistent, cfg.Warnings)
			}
		})
	}
}

func errorsText(errs []error) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Error()
	}
	return out
}

func anyContains(ss []string, sub string) bool {
	for _, s := range ss {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// TestVMCXProblemCap: a table of many damaged entries records a bounded
// number of problems.
func TestVMCXProblemCap(t *testing.T) {
	root := tnode("configuration")
	for i := range 150 {
		root.children = append(root.children, tint(fmt.Sprintf("k%03d", i), int64(i)))
	}
	b := buildVMCX(t, root, vmcxBuildOpts{})
	for p, off := range b.entries {
		if p != "configuration" {
			b.data[off+vmcxEntryHeaderLen+2] ^= 0xFF // break the key → checksum
		}
	}
	c, err := readBuilt(b.data, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Problems) != vmcxMaxProblems+1 || !strings.Contains(c.Problems[vmcxMaxProblems].Error(), "more problems not listed") {
		t.Errorf("%d problems; last %v", len(c.Problems), c.Problems[len(c.Problems)-1])
	}
}
