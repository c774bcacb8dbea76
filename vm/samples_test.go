package vm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// samplesDir returns the folder of real Windows/Hyper-V samples
// ($HVSNAP_SAMPLES, else ../../shared/testdata/windows), or skips the test.
func samplesDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("HVSNAP_SAMPLES")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "testdata", "windows")
	}
	if _, err := os.Stat(filepath.Join(dir, "test.vmcx")); err != nil {
		t.Skipf("real Hyper-V samples not found in %s (set HVSNAP_SAMPLES to the folder holding test.vmcx etc.)", dir)
	}
	return dir
}

func TestSampleXML(t *testing.T) {
	p := filepath.Join(samplesDir(t), "B90AC31B-C6F8-479F-9B91-07B894A6A3F6.xml")
	c, err := ParseConfig(p, &ParseOptions{NoResolve: true})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Kind: KindXML, Name: "Default Generation 1", ID: "B90AC31B-C6F8-479F-9B91-07B894A6A3F6",
		VMID: "B90AC31B-C6F8-479F-9B91-07B894A6A3F6", Generation: 1, Version: "5.0", VersionRaw: 1280,
		TypeID: "Virtual Machines", MemoryMiB: 512, Processors: 1,
	}
	checkConfig(t, c, want)
	checkDisks(t, c.Disks, []DriveRef{{Controller: ControllerIDE, ControllerIndex: 0, Drive: 0, Section: deviceIDE, Type: "VHD",
		WindowsPath: `C:\Disks\Default Generation 1.vhdx`}})
	if len(c.Media) != 0 {
		t.Errorf("media = %+v, want none (the ISO drive is empty)", c.Media)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings: %q", c.Warnings)
	}
	// Keys the model does not extract stay reachable in the tree.
	if got := c.Tree.Lookup("_ac6b8dc1-3257-4a70-b1b2-a9c9215659ad_/bios_guid").String(); got != "{5AB19138-BAE3-417B-92CF-17EAB4346C65}" {
		t.Errorf("bios_guid = %q", got)
	}
	if got, _ := c.Tree.Lookup("properties/last_powered_off_time").IntValue(); got != 133211067586606556 {
		t.Errorf("last_powered_off_time = %d", got)
	}
	data := c.Tree.Lookup("_b5996220-9ab5-4a2d-a79d-cbe9c4bc06d6_/Connection/Feature_C885BFD1-ABB7-418F-8163-9F379C9F7166/Setting_50D7CB38-1C3E-4B1B-86D5-831734003B01/Data")
	if data == nil || data.Kind != KindBytes || len(data.Bytes) != 20 {
		t.Errorf("bytes value = %+v", data)
	}
}

func TestSampleVMCX(t *testing.T) {
	dir := samplesDir(t)
	cases := []struct {
		file  string
		want  Config
		disk  string
		guest string
	}{
		{"EC04F346-DB96-4700-AF5B-77B3C56C38BD.vmcx", Config{
			Kind: KindVMCX, Name: "Default Generation 1", ID: "EC04F346-DB96-4700-AF5B-77B3C56C38BD", VMID: "EC04F346-DB96-4700-AF5B-77B3C56C38BD",
			Generation: 1, Version: "9.0", VersionRaw: 2304, TypeID: "Virtual Machines", MemoryMiB: 1024, Processors: 1},
			`C:\Disks\Default Generation 1.vhdx`,
			`C:\Hyper-V\EasyToFind\Virtual Machines\EC04F346-DB96-4700-AF5B-77B3C56C38BD.vmgs`},
		{"test.vmcx", Config{
			Kind: KindVMCX, Name: "Other Location", ID: "282874FC-59D6-4F30-BC04-5FDD909C82E0", VMID: "282874FC-59D6-4F30-BC04-5FDD909C82E0",
			Generation: 1, Version: "9.0", VersionRaw: 2304, TypeID: "Virtual Machines", MemoryMiB: 1024, Processors: 1},
			`C:\Users\Public\Documents\Hyper-V\Virtual Hard Disks\Other Location.vhdx`,
			`C:\Hyper-V\EasyToFind\Virtual Machines\282874FC-59D6-4F30-BC04-5FDD909C82E0.vmgs`},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			p := filepath.Join(dir, tc.file)
			c, err := ParseConfig(p, &ParseOptions{NoResolve: true})
			if err != nil {
				t.Fatal(err)
			}
			checkConfig(t, c, tc.want)
			checkDisks(t, c.Disks, []DriveRef{{Controller: ControllerIDE, Section: deviceIDE, Type: "VHD", WindowsPath: tc.disk}})
			if c.GuestStatePath != tc.guest {
				t.Errorf("GuestStatePath = %q, want %q", c.GuestStatePath, tc.guest)
			}
			if c.PossiblyInconsistent || len(c.Warnings) != 0 {
				t.Errorf("PossiblyInconsistent=%v warnings=%q", c.PossiblyInconsistent, c.Warnings)
			}
			// The SCSI controller (no drives) is known from the manifest.
			if got := c.Tree.Lookup("manifest/vdev037/name").String(); got != "Synthetic SCSI Controller" {
				t.Errorf("manifest/vdev037/name = %q", got)
			}
		})
	}
}

// TestSampleContainers: every real container reads cleanly in strict mode,
// with the header of the higher sequence and no replay entries.
func TestSampleContainers(t *testing.T) {
	dir := samplesDir(t)
	cases := []struct {
		file, root string
		seq        uint16
		keys       int
	}{
		{"EC04F346-DB96-4700-AF5B-77B3C56C38BD.vmcx", "configuration", 25, 409},
		{"test.vmcx", "configuration", 25, 409},
		{"test.VMRS", "configuration", 7, 113},
		{"data.vmcx", "Configurations", 105, 39},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			c, err := OpenContainer(filepath.Join(dir, tc.file), &ContainerOptions{Strict: true})
			if err != nil {
				t.Fatal(err)
			}
			if c.ActiveHeader != 1 || c.Sequence != tc.seq || c.Version != 0x400 {
				t.Errorf("header %d seq %d version 0x%x", c.ActiveHeader, c.Sequence, c.Version)
			}
			if c.PossiblyInconsistent || len(c.Warnings) != 0 || len(c.Problems) != 0 {
				t.Errorf("inconsistent=%v warnings=%q problems=%v", c.PossiblyInconsistent, c.Warnings, c.Problems)
			}
			if len(c.Roots) != 1 || c.Roots[0].Name != tc.root {
				t.Fatalf("roots = %v", c.Roots)
			}
			n := 0
			c.Roots[0].Walk(func(string, *Key) bool { n++; return true })
			if n != tc.keys {
				t.Errorf("%d keys, want %d", n, tc.keys)
			}
		})
	}
}

func TestSampleVMRS(t *testing.T) {
	c, err := ParseConfig(filepath.Join(samplesDir(t), "test.VMRS"), &ParseOptions{NoResolve: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.Kind != KindVMCX || c.VersionRaw != 2304 || c.Name != "" {
		t.Errorf("VMRS: kind %s version %d name %q", c.Kind, c.VersionRaw, c.Name)
	}
	// Repeated sibling names are kept (three metrics/devicetype nodes).
	n := 0
	for _, k := range c.Tree.Lookup("global_settings/metrics").Children {
		if k.Name == "devicetype" {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d devicetype nodes, want 3", n)
	}
}

func TestSampleHostRegistry(t *testing.T) {
	p := filepath.Join(samplesDir(t), "data.vmcx")
	pm := PathMapFunc(func(w string) (string, bool) {
		if rest, ok := strings.CutPrefix(w, `C:\`); ok {
			return "/mnt/c/" + strings.ReplaceAll(rest, `\`, "/"), true
		}
		return "", false
	})
	h, err := ParseHostRegistry(p, pm)
	if err != nil {
		t.Fatal(err)
	}
	want := []HostVM{
		{ID: "4C57771A-3230-4B92-B029-D63F96518E70", ConfigPath: `C:\VM\Other Generation 2\Virtual Machines\4C57771A-3230-4B92-B029-D63F96518E70.vmcx`},
		{ID: "993F7B33-6057-4D1E-A1FE-A1A1D77BE974", ConfigPath: `C:\Hyper-V\EasyToFind\Virtual Machines\993F7B33-6057-4D1E-A1FE-A1A1D77BE974.vmcx`},
		{ID: "A5B56431-CA94-482A-B70A-F1F2B12373BE", ConfigPath: `C:\VM\Other Generation 1\Virtual Machines\A5B56431-CA94-482A-B70A-F1F2B12373BE.vmcx`},
		{ID: "EC04F346-DB96-4700-AF5B-77B3C56C38BD", ConfigPath: `C:\Hyper-V\EasyToFind\Virtual Machines\EC04F346-DB96-4700-AF5B-77B3C56C38BD.vmcx`},
	}
	if len(h.VMs) != len(want) {
		t.Fatalf("VMs = %+v", h.VMs)
	}
	for i, w := range want {
		g := h.VMs[i]
		if g.ID != w.ID || g.ConfigPath != w.ConfigPath {
			t.Errorf("VM %d = %+v, want %+v", i, g, w)
		}
		if g.Resolved != RuleMap || !strings.HasPrefix(g.LocalPath, "/mnt/c/") || g.Exists {
			t.Errorf("VM %d mapping: %+v", i, g)
		}
	}
	if len(h.Cache) != 4 || !strings.Contains(h.Cache[0].ConfigPath, `Virtual Machines Cache`) {
		t.Errorf("cache = %+v", h.Cache)
	}
	// A host registry is not a VM configuration.
	if _, err := ParseConfig(p, nil); err == nil || !strings.Contains(err.Error(), "host registry") {
		t.Errorf("ParseConfig(data.vmcx) = %v", err)
	}
}

// TestSampleResolve copies the real XML (into a temporary folder, at test
// time) into a Hyper-V layout and resolves its disk by each rule.
func TestSampleResolve(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(samplesDir(t), "B90AC31B-C6F8-479F-9B91-07B894A6A3F6.xml"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	cfg := filepath.Join(tmp, "VM", "Virtual Machines", "B90AC31B-C6F8-479F-9B91-07B894A6A3F6.xml")
	writeFile(t, cfg, raw)

	// No map, disk nowhere: unresolved.
	c, err := ParseConfig(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Disks[0]; d.Exists || d.LocalPath != "" || d.Resolved != "" {
		t.Errorf("unresolved disk: %+v", d)
	}
	// Fallback: <VM root>/Virtual Hard Disks/<name>, name case differs.
	vhd := filepath.Join(tmp, "VM", "Virtual Hard Disks", "default generation 1.VHDX")
	writeFile(t, vhd, []byte("x"))
	c, _ = ParseConfig(cfg, nil)
	if d := c.Disks[0]; !d.Exists || d.LocalPath != vhd || d.Resolved != RuleVMRoot {
		t.Errorf("vm-root rule: %+v", d)
	}
	// The map wins when its file exists.
	mapped := filepath.Join(tmp, "cdrive", "Disks", "Default Generation 1.vhdx")
	writeFile(t, mapped, []byte("x"))
	pm := PathMapFunc(func(w string) (string, bool) {
		if rest, ok := strings.CutPrefix(w, `C:\`); ok {
			return filepath.Join(tmp, "cdrive", filepath.FromSlash(strings.ReplaceAll(rest, `\`, "/"))), true
		}
		return "", false
	})
	c, _ = ParseConfig(cfg, &ParseOptions{PathMap: pm})
	if d := c.Disks[0]; !d.Exists || d.LocalPath != mapped || d.Resolved != RuleMap {
		t.Errorf("map rule: %+v", d)
	}
}

func checkConfig(t *testing.T, c *Config, w Config) {
	t.Helper()
	if c.Kind != w.Kind || c.Name != w.Name || c.ID != w.ID || c.VMID != w.VMID || c.Generation != w.Generation ||
		c.Version != w.Version || c.VersionRaw != w.VersionRaw || c.TypeID != w.TypeID ||
		c.DiskMergePending != w.DiskMergePending || c.MemoryMiB != w.MemoryMiB || c.Processors != w.Processors ||
		c.IsCheckpoint != w.IsCheckpoint || c.CheckpointID != w.CheckpointID {
		t.Errorf("config\n got: kind=%s name=%q id=%s vmid=%s gen=%d ver=%s/%d type=%q merge=%v mem=%d cpu=%d cp=%v/%s\nwant: kind=%s name=%q id=%s vmid=%s gen=%d ver=%s/%d type=%q merge=%v mem=%d cpu=%d cp=%v/%s",
			c.Kind, c.Name, c.ID, c.VMID, c.Generation, c.Version, c.VersionRaw, c.TypeID, c.DiskMergePending, c.MemoryMiB, c.Processors, c.IsCheckpoint, c.CheckpointID,
			w.Kind, w.Name, w.ID, w.VMID, w.Generation, w.Version, w.VersionRaw, w.TypeID, w.DiskMergePending, w.MemoryMiB, w.Processors, w.IsCheckpoint, w.CheckpointID)
	}
}

// checkDisks compares the parsed drives (location, type, Windows path).
func checkDisks(t *testing.T, got, want []DriveRef) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("drives:\n got %+v\nwant %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Controller != w.Controller || g.ControllerIndex != w.ControllerIndex || g.Drive != w.Drive ||
			g.Type != w.Type || g.WindowsPath != w.WindowsPath || (w.Section != "" && g.Section != w.Section) {
			t.Errorf("drive %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}
