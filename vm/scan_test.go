package vm

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const (
	vm2ID    = "11111111-2222-4333-8444-555555555555"
	vm2Snap  = "99999999-8888-4777-8666-555555555555"
	orphanCP = "ABCDEF01-2345-4678-89AB-CDEF01234567"
	brokenID = "DEADBEEF-0000-4000-8000-00000000BEEF"
	missing  = "77777777-7777-4777-8777-777777777777"
)

// scanFixture writes a store in the Hyper-V layout:
//
//	store/Rescue Me/Virtual Machines/<VMID>.xml      2012 R2 XML, merge pending
//	store/Rescue Me/Virtual Machines/<VMID>/<VMID>.bin|.vsv
//	store/Rescue Me/Snapshots/<SNAPID>.xml           checkpoint (logical_id = VMID)
//	store/Rescue Me/Snapshots/<SNAPID>/<SNAPID>.VSV
//	store/Rescue Me/Virtual Hard Disks/boot.vhd, os.vhdx, os_<SNAPID>.avhdx, moved.vhdx
//	store/data/DATA.VHDX                             (config says D:\Data\data.vhdx)
//	store/New/Virtual Machines/<VM2>.vmcx            VMCX, no logical_id
//	store/New/Virtual Machines/<VM2>.vmrs, .vmgs
//	store/New/Snapshots/<VM2SNAP>.vmcx               attached by folder
//	store/Orphan/Snapshots/<X>.xml                   no VM
//	store/Broken/Virtual Machines/<ID>.xml           garbage
//	store/ProgramData/Hyper-V/data.vmcx              registry: VM2 + a missing VM
//	store/misc/random.bin, notes.xml                 not Hyper-V files
func scanFixture(t *testing.T) (store string, pm PathMapper) {
	t.Helper()
	store = t.TempDir()
	vm1 := filepath.Join(store, "Rescue Me")

	cfg := testConfig()
	cfg.version = 1280 // 2012 R2
	cfg.ide[0][0] = tdrive{"VHD", `C:\VMs\Rescue Me\Virtual Hard Disks\boot.vhd`}
	cfg.ide[1][0] = tdrive{"ISO", `C:\iso\setup.iso`}
	cfg.scsi[0] = []tdrive{
		{"VHD", `C:\VMs\Rescue Me\Virtual Hard Disks\os_` + testSnapID + `.avhdx`},
		{"VHD", `X:\Old\Place\moved.vhdx`}, // unmapped: found by name
	}
	writeFile(t, filepath.Join(vm1, "Virtual Machines", testVMID+".xml"), renderXML(cfg.tree()))
	writeFile(t, filepath.Join(vm1, "Virtual Machines", testVMID, testVMID+".bin"), make([]byte, 4096))
	writeFile(t, filepath.Join(vm1, "Virtual Machines", testVMID, testVMID+".vsv"), make([]byte, 100))

	cp := testConfig()
	cp.version = 1280
	cp.id, cp.logicalID, cp.mergePending = testSnapID, testVMID, false
	cp.ide[0][0] = tdrive{"VHD", `C:\VMs\Rescue Me\Virtual Hard Disks\boot.vhd`}
	cp.scsi = [][]tdrive{{{"VHD", `C:\VMs\Rescue Me\Virtual Hard Disks\os.vhdx`}}}
	cp.scsiInstances = cp.scsiInstances[:1]
	writeFile(t, filepath.Join(vm1, "Snapshots", testSnapID+".xml"), renderXML(cp.tree()))
	writeFile(t, filepath.Join(vm1, "Snapshots", testSnapID, testSnapID+".VSV"), make([]byte, 10))

	for _, n := range []string{"boot.vhd", "os.vhdx", "os_" + testSnapID + ".avhdx", "moved.vhdx"} {
		writeFile(t, filepath.Join(vm1, "Virtual Hard Disks", n), make([]byte, 1024))
	}
	writeFile(t, filepath.Join(store, "data", "DATA.VHDX"), make([]byte, 512))

	vm2 := tconfig{name: "New VM", id: vm2ID, subtype: 1, version: 2304, memoryMiB: 4096, cpus: 2}
	vm2.ide[0][0] = tdrive{"VHD", `C:\VMs\New\Virtual Hard Disks\new.vhdx`}
	writeFile(t, filepath.Join(store, "New", "Virtual Machines", vm2ID+".vmcx"), buildVMCX(t, vm2.tree(), vmcxBuildOpts{}).data)
	writeFile(t, filepath.Join(store, "New", "Virtual Machines", vm2ID+".vmrs"), make([]byte, 64))
	writeFile(t, filepath.Join(store, "New", "Virtual Machines", vm2ID+".VMGS"), make([]byte, 64))
	vm2cp := vm2
	vm2cp.id = vm2Snap
	writeFile(t, filepath.Join(store, "New", "Snapshots", vm2Snap+".vmcx"), buildVMCX(t, vm2cp.tree(), vmcxBuildOpts{}).data)

	orphan := testConfig()
	orphan.id, orphan.logicalID = orphanCP, missing
	writeFile(t, filepath.Join(store, "Orphan", "Snapshots", orphanCP+".xml"), renderXML(orphan.tree()))

	writeFile(t, filepath.Join(store, "Broken", "Virtual Machines", brokenID+".xml"), utf16LEWithBOM("<configuration><properties>"))

	reg := tnode("Configurations", tint("FormatVersion", 2),
		tnode("VirtualMachines",
			tstr("_"+vm2ID+"_", `C:\VMs\New\Virtual Machines\`+vm2ID+`.vmcx`),
			tstr("_"+missing+"_", `C:\VMs\Gone\Virtual Machines\`+missing+`.vmcx`)))
	writeFile(t, filepath.Join(store, "ProgramData", "Hyper-V", "data.vmcx"), buildVMCX(t, reg, vmcxBuildOpts{}).data)

	writeFile(t, filepath.Join(store, "misc", "random.bin"), []byte("x"))
	writeFile(t, filepath.Join(store, "misc", "notes.xml"), []byte("<a/>"))

	pm = PathMapFunc(func(w string) (string, bool) {
		for _, m := range [][2]string{{`C:\VMs\`, store}, {`D:\Data\`, filepath.Join(store, "data")}} {
			if rest, ok := cutPrefixFold(w, m[0]); ok {
				return filepath.Join(m[1], filepath.FromSlash(strings.ReplaceAll(rest, `\`, "/"))), true
			}
		}
		return "", false
	})
	return store, pm
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}

func TestScan(t *testing.T) {
	store, pm := scanFixture(t)
	s, err := Scan([]string{store}, ScanOptions{PathMap: pm, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.VMs) != 2 {
		t.Fatalf("VMs: %d", len(s.VMs))
	}

	// VM 1: XML, IDE + SCSI, merge pending, checkpoint attached by VM ID.
	v := s.VM(strings.ToLower(testVMID))
	if v == nil {
		t.Fatal("VM 1 not found")
	}
	c := v.Config
	checkConfig(t, c, Config{Kind: KindXML, Name: "Rescue Me", ID: testVMID, VMID: testVMID, Generation: 2, Version: "5.0", VersionRaw: 1280,
		TypeID: "Virtual Machines", DiskMergePending: true, MemoryMiB: 2048, Processors: 4})
	vhds := filepath.Join(store, "Rescue Me", "Virtual Hard Disks")
	wantDisks := []DriveRef{
		{Controller: ControllerIDE, Type: "VHD", WindowsPath: `C:\VMs\Rescue Me\Virtual Hard Disks\boot.vhd`,
			LocalPath: filepath.Join(vhds, "boot.vhd"), Resolved: RuleMap, Exists: true},
		{Controller: ControllerSCSI, Type: "VHD", WindowsPath: `C:\VMs\Rescue Me\Virtual Hard Disks\os_` + testSnapID + `.avhdx`,
			LocalPath: filepath.Join(vhds, "os_"+testSnapID+".avhdx"), Resolved: RuleMap, Exists: true},
		{Controller: ControllerSCSI, Drive: 1, Type: "VHD", WindowsPath: `X:\Old\Place\moved.vhdx`,
			LocalPath: filepath.Join(vhds, "moved.vhdx"), Resolved: RuleVMRoot, Exists: true},
		{Controller: ControllerSCSI, ControllerIndex: 1, Type: "VHD", WindowsPath: `D:\Data\data.vhdx`,
			LocalPath: filepath.Join(store, "data", "DATA.VHDX"), Resolved: RuleMap, Exists: true},
	}
	checkDisks(t, c.Disks, wantDisks)
	for i, w := range wantDisks {
		if g := c.Disks[i]; g.LocalPath != w.LocalPath || g.Resolved != w.Resolved || g.Exists != w.Exists {
			t.Errorf("disk %d resolved to %q by %q (exists %v), want %q by %q", i, g.LocalPath, g.Resolved, g.Exists, w.LocalPath, w.Resolved)
		}
	}
	if len(c.Media) != 1 || c.Media[0].Type != "ISO" || c.Media[0].Location() != "ide1:0" || c.Media[0].Exists {
		t.Errorf("media = %+v", c.Media)
	}
	if len(c.StateFiles) != 2 || c.StateFiles[0].Type != "bin" || c.StateFiles[0].Size != 4096 || c.StateFiles[1].Type != "vsv" {
		t.Errorf("state files = %+v", c.StateFiles)
	}
	if len(v.Checkpoints) != 1 {
		t.Fatalf("VM 1 checkpoints: %d", len(v.Checkpoints))
	}
	cp := v.Checkpoints[0]
	checkConfig(t, cp, Config{Kind: KindXML, Name: "Rescue Me", ID: testSnapID, VMID: testVMID, Generation: 2, Version: "5.0", VersionRaw: 1280,
		TypeID: "Virtual Machines", MemoryMiB: 2048, Processors: 4, IsCheckpoint: true, CheckpointID: testSnapID})
	if cp.AttachedBy != "vm-id" || len(cp.Disks) != 2 || cp.Disks[1].LocalPath != filepath.Join(vhds, "os.vhdx") {
		t.Errorf("checkpoint: attached by %q, disks %+v", cp.AttachedBy, cp.Disks)
	}
	if len(cp.StateFiles) != 1 || cp.StateFiles[0].OwnerID != testSnapID {
		t.Errorf("checkpoint state files = %+v", cp.StateFiles)
	}

	// VM 2: VMCX, checkpoint attached by folder, runtime state files.
	v2 := s.VM(vm2ID)
	if v2 == nil || v2.Config.Kind != KindVMCX || v2.Config.Name != "New VM" || v2.Config.Version != "9.0" {
		t.Fatalf("VM 2 = %+v", v2)
	}
	if len(v2.Checkpoints) != 1 || v2.Checkpoints[0].AttachedBy != "folder" || v2.Checkpoints[0].CheckpointID != vm2Snap {
		t.Errorf("VM 2 checkpoints = %+v", v2.Checkpoints)
	}
	if len(v2.Config.StateFiles) != 2 {
		t.Errorf("VM 2 state files = %+v", v2.Config.StateFiles)
	}
	if d := v2.Config.Disks; len(d) != 1 || d[0].Exists || d[0].Resolved != RuleMap {
		t.Errorf("VM 2 disk (missing file) = %+v", d)
	}

	// Orphan checkpoint, broken config, registry.
	if len(s.OrphanCheckpoints) != 1 || s.OrphanCheckpoints[0].CheckpointID != orphanCP {
		t.Errorf("orphans = %+v", s.OrphanCheckpoints)
	}
	if len(s.Hosts) != 1 || len(s.Hosts[0].VMs) != 2 || !s.Hosts[0].VMs[0].Exists {
		t.Errorf("hosts = %+v", s.Hosts)
	}
	ws := make([]string, len(s.Warnings))
	for i, w := range s.Warnings {
		ws[i] = w.String()
	}
	for _, want := range []string{
		brokenID + ".xml: vm: ",    // corrupt config: a warning, not an abort
		"registered VM " + missing, // registry entry without config
		"checkpoint " + orphanCP + ": no VM configuration found",
	} {
		if !anyContains(ws, want) {
			t.Errorf("warnings lack %q:\n%s", want, strings.Join(ws, "\n"))
		}
	}

	// Disks: all five, extensions case-insensitive, not opened.
	if len(s.Disks) != 5 {
		t.Errorf("disks = %+v", s.Disks)
	}
	for _, d := range s.Disks {
		if d.Size == 0 || d.Allocated < 0 || d.ModTime.IsZero() {
			t.Errorf("disk %+v", d)
		}
		if strings.HasSuffix(d.Path, "DATA.VHDX") && d.Ext != "vhdx" {
			t.Errorf("ext = %q", d.Ext)
		}
	}
	// State files: bin, vsv, VSV, vmrs, VMGS — not misc/random.bin.
	if len(s.StateFiles) != 5 {
		t.Errorf("state files = %+v", s.StateFiles)
	}
}

// TestScanSingleFileAndErrors: a root may be a file; a missing root is an
// error naming it.
func TestScanSingleFileAndErrors(t *testing.T) {
	store, pm := scanFixture(t)
	cfg := filepath.Join(store, "Rescue Me", "Virtual Machines", testVMID+".xml")
	s, err := Scan([]string{cfg}, ScanOptions{PathMap: pm})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.VMs) != 1 || len(s.VMs[0].Config.Disks) != 4 {
		t.Errorf("single-file scan: %+v", s.VMs)
	}
	// A configuration named as a root is parsed whatever its name.
	odd := filepath.Join(t.TempDir(), "copy.xml")
	raw, _ := os.ReadFile(cfg)
	writeFile(t, odd, raw)
	s, err = Scan([]string{odd}, ScanOptions{})
	if err != nil || len(s.VMs) != 1 || s.VMs[0].Config.ID != testVMID {
		t.Errorf("odd-named root: %v %+v", err, s)
	}
	if _, err := Scan([]string{filepath.Join(store, "nope")}, ScanOptions{}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing root: %v", err)
	}
}

// TestScanRegistrationLink: a registration symlink to a scanned config does
// not make a second VM.
func TestScanRegistrationLink(t *testing.T) {
	store, pm := scanFixture(t)
	link := filepath.Join(store, "ProgramData", "Hyper-V", "Virtual Machines", testVMID+".xml")
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(store, "Rescue Me", "Virtual Machines", testVMID+".xml"), link); err != nil {
		t.Skipf("symlinks unavailable: %v", err)
	}
	s, err := Scan([]string{store}, ScanOptions{PathMap: pm})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.VMs) != 2 {
		t.Errorf("%d VMs, want 2 (link deduplicated)", len(s.VMs))
	}
}

func TestXMLVariants(t *testing.T) {
	tree := testConfig().tree()
	utf16Doc := renderXML(tree)
	// UTF-8 with and without BOM, UTF-16LE without BOM.
	text := utf16Text(utf16Doc[2:], false)
	utf8Doc := []byte(strings.Replace(text, `encoding="UTF-16"`, `encoding="UTF-8"`, 1))
	for name, doc := range map[string][]byte{
		"utf16le-bom": utf16Doc,
		"utf16le":     utf16Doc[2:],
		"utf8":        utf8Doc,
		"utf8-bom":    append([]byte{0xEF, 0xBB, 0xBF}, utf8Doc...),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := ParseXMLConfig(strings.NewReader(string(doc)), "/x/Virtual Machines/"+testVMID+".xml", &ParseOptions{NoResolve: true})
			if err != nil {
				t.Fatal(err)
			}
			if c.Name != "Rescue Me" || !c.DiskMergePending || len(c.Disks) != 3 {
				t.Errorf("name %q merge %v disks %d", c.Name, c.DiskMergePending, len(c.Disks))
			}
		})
	}
	for name, doc := range map[string]string{
		"truncated":   "<configuration><properties>",
		"not xml":     "hello",
		"wrong root":  "<foo/>",
		"two roots":   "<configuration/><configuration/>",
		"bad utf8":    "<configuration>\xff</configuration>",
		"deep":        strings.Repeat("<a>", 200) + strings.Repeat("</a>", 200),
		"empty":       "",
		"unbalanced":  "<configuration></x>",
		"bad integer": `<configuration><properties><version type="integer">x</version></properties></configuration>`,
	} {
		t.Run(name, func(t *testing.T) {
			c, err := ParseXMLConfig(strings.NewReader(doc), "bad.xml", &ParseOptions{NoResolve: true})
			if name == "bad integer" {
				if err != nil || !anyContains(c.Warnings, "no properties/version") {
					t.Errorf("err %v warnings %q", err, c.Warnings)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "bad.xml") {
				t.Errorf("err = %v, want an error naming the file", err)
			}
		})
	}
}

// A scan drops the key trees unless asked to keep them; the model is the
// same either way.
func TestScanKeepTrees(t *testing.T) {
	store, pm := scanFixture(t)
	kept, err := Scan([]string{store}, ScanOptions{PathMap: pm, KeepTrees: true})
	if err != nil {
		t.Fatal(err)
	}
	dropped, err := Scan([]string{store}, ScanOptions{PathMap: pm})
	if err != nil {
		t.Fatal(err)
	}
	if len(kept.VMs) == 0 || len(kept.VMs) != len(dropped.VMs) {
		t.Fatalf("VMs: %d kept, %d dropped", len(kept.VMs), len(dropped.VMs))
	}
	for i, v := range kept.VMs {
		for j, c := range append([]*Config{v.Config}, v.Checkpoints...) {
			d := dropped.VMs[i].Config
			if j > 0 {
				d = dropped.VMs[i].Checkpoints[j-1]
			}
			if c.Tree == nil || c.Tree.Lookup("properties/name") == nil {
				t.Errorf("%s: KeepTrees gave no tree", c.Path)
			}
			if d.Tree != nil {
				t.Errorf("%s: the default scan kept the tree", d.Path)
			}
			cc := *c
			cc.Tree = nil
			if !reflect.DeepEqual(&cc, d) {
				t.Errorf("%s: the model differs without the tree:\n%+v\n%+v", c.Path, cc, *d)
			}
		}
	}
}
