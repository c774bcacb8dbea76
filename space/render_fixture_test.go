package space

import (
	"time"
)

// allFindingCodes lists every finding code of model.go (the render tests
// check that each one is rendered).
var allFindingCodes = []string{
	FindOrphan, FindMissingParent, FindLinkageMismatch, FindExpandedParent, FindMergePending,
	FindDeepChain, FindOldCheckpoint, FindSavedState, FindUnreadableDisk, FindMissingDisk,
	FindMergeNoSpace, FindPausedRisk, FindLowSpace, FindUnfinishedOp, FindMissingCheckpointDisk,
}

// Paths with characters that must be escaped everywhere they are rendered.
const (
	weirdVM   = `evil <script>alert("x")</script> & 'vm'`
	weirdDir  = `/mnt/e/VMs/<script>alert('p')</script> "q" & co`
	weirdDisk = weirdDir + `/evil "disk" <b>.vhdx`
)

// renderFixture is a hand-built report covering every verdict and finding
// code, a branched checkpoint tree, an unattached chain, a VM with a
// missing drive and paths with markup and quotes in them.
func renderFixture() *Report {
	gen := time.Date(2025, 11, 25, 10, 0, 0, 0, time.UTC)
	old := gen.Add(-45 * 24 * time.Hour)
	const GiB, MiB = int64(1) << 30, int64(1) << 20
	d := func(path, vol, typ string, alloc, data, growth int64, parent string, children ...string) *Disk {
		format := "vhdx"
		return &Disk{Path: path, Volume: vol, Format: format, Type: typ, VirtualSize: 127 * GiB,
			FileSize: alloc, Allocated: alloc, DataBytes: data, MaxFileSize: 128 * GiB, ModTime: gen.Add(-time.Hour),
			Parent: parent, LinkageOK: true, Children: children, MergeGrowth: growth}
	}
	const web = "/mnt/d/VMs/web01/Virtual Hard Disks/"
	base := d(web+"web01.vhdx", "/mnt/d", "dynamic", 35*GiB+200*MiB, 35*GiB, 0, "", web+"web01_A.avhdx")
	a := d(web+"web01_A.avhdx", "/mnt/d", "differencing", 4*GiB, 4*GiB-10*MiB, 3*GiB, base.Path, web+"web01_B.avhdx", web+"web01_C.avhdx")
	a.Depth, a.ModTime = 1, old
	a.UsedBy = []string{"checkpoint:Before update"}
	b := d(web+"web01_B.avhdx", "/mnt/d", "differencing", 1*GiB, 1*GiB-1*MiB, 512*MiB, a.Path)
	b.Depth = 2
	b.UsedBy = []string{"checkpoint:Test branch"}
	c := d(web+"web01_C.avhdx", "/mnt/d", "differencing", 6*GiB+300*MiB, 6*GiB, 5*GiB, a.Path)
	c.Depth = 2
	c.UsedBy = []string{"vm:web01"}
	for _, x := range []*Disk{base, a, c} {
		x.OnLiveChain = true
	}

	ev := d(weirdDisk, "/mnt/e", "fixed", 20*GiB, 20*GiB, 0, "")
	ev.UsedBy = []string{"vm:" + weirdVM}
	ev.OnLiveChain = true

	orphan := d("/mnt/f/loose/orphan.avhdx", "/mnt/f", "differencing", 700*MiB, 690*MiB, -1, "")
	orphan.Depth = 1
	orphan.ParentError = `parent "C:\VMs\gone.vhdx" not found (tried relative_path, absolute_win32_path)`
	orphan.LinkageOK = false
	orphanKid := d("/mnt/f/loose/orphan_2.avhdx", "/mnt/f", "differencing", 64*MiB, 60*MiB, 48*MiB, orphan.Path)
	orphanKid.Depth = 2
	orphan.Children = []string{orphanKid.Path}
	bad := &Disk{Path: "/mnt/f/loose/broken.vhdx", Volume: "/mnt/f", FileSize: 4096, Allocated: 4096, MergeGrowth: -1,
		Error: "vhdx: header checksum mismatch"}

	r := &Report{
		Schema: Schema, GeneratedAt: gen, Host: "hv-host-01", Roots: []string{"/mnt/d/VMs", "/mnt/e/VMs", "/mnt/f/loose"},
		Thresholds: DefaultThresholds(),
		Volumes: []*Volume{
			{Mount: "/mnt/d", Device: "/dev/sdb1", FSType: "ntfs3", Size: 60 * GiB, Free: 300 * MiB, Used: 60*GiB - 300*MiB,
				Verdict: VerdictCritical, DiskFiles: 4, DiskBytes: 46*GiB + 500*MiB, DiffGrowth: 120 * GiB, MergeNeed: 8 * GiB,
				Reasons: []string{"a merge here needs 8.0 GiB but only 300.0 MiB is free (0x80070070)",
					"differencing disks here can still grow by 120.0 GiB but only 300.0 MiB is free: running VMs pause (paused-critical) when it runs out"},
				RelocationTargets: []string{"/mnt/g"}},
			{Mount: "/mnt/e", Device: "/dev/sdc1", FSType: "ext4", Size: 100 * GiB, Free: 1536 * MiB, Used: 100*GiB - 1536*MiB,
				Verdict: VerdictWarning, DiskFiles: 1, DiskBytes: 20 * GiB, Reasons: []string{"only 1.5 GiB free, below 2.0 GiB"},
				RelocationTargets: []string{}},
			{Mount: "/mnt/f", Device: "/dev/sdd1", FSType: "xfs", Size: 500 * GiB, Free: 400 * GiB, Used: 100 * GiB,
				Verdict: VerdictOK, DiskFiles: 3, DiskBytes: 764*MiB + 4096, MergeNeed: 60 * GiB, DiffGrowth: 25 * GiB,
				Reasons: []string{}, RelocationTargets: []string{}},
			{Mount: "/mnt/g", Device: "/dev/sde1", FSType: "ext4", Size: 1024 * GiB, Free: 900 * GiB, Used: 124 * GiB,
				Verdict: VerdictOK, Reasons: []string{}, RelocationTargets: []string{}},
		},
		VMs: []*VM{
			{ID: "8D1E2C3A-0000-4000-8000-000000000001", Name: "web01", ConfigPath: "/mnt/d/VMs/web01/Virtual Machines/8D1E2C3A-0000-4000-8000-000000000001.xml",
				ConfigKind: "xml", Generation: 2, Version: "5.0", DiskMergePending: true,
				Drives: []Drive{{Location: "scsi0:0", WindowsPath: `C:\VMs\web01\Virtual Hard Disks\web01_C.avhdx`, Path: c.Path, Exists: true}},
				Checkpoints: []Checkpoint{
					{ID: "A1", Name: "Before update", ConfigPath: "/mnt/d/VMs/web01/Snapshots/A1.xml", Disks: []string{a.Path}},
					{ID: "B1", Name: "Test branch", ConfigPath: "/mnt/d/VMs/web01/Snapshots/B1.xml", Disks: []string{b.Path}},
				},
				Chains: []*Tree{{Path: base.Path, Live: true, Children: []*Tree{
					{Path: a.Path, Live: true, Children: []*Tree{{Path: b.Path}, {Path: c.Path, Live: true}}},
				}}},
				Volumes: []string{"/mnt/d"}, Allocated: 46*GiB + 500*MiB + 2*GiB, Reclaimable: 1*GiB + 2*GiB, MergeNeed: 8 * GiB},
			{ID: "F00D0000-0000-4000-8000-000000000002", Name: weirdVM, ConfigPath: weirdDir + "/Virtual Machines/F00D.vmcx",
				ConfigKind: "vmcx", Generation: 1, Version: "9.0",
				Drives: []Drive{
					{Location: "ide0:0", WindowsPath: `E:\VMs\evil.vhdx`, Path: ev.Path, Exists: true},
					{Location: "ide0:1", WindowsPath: `E:\VMs\data "2".vhdx`, Path: "", Exists: false},
				},
				Checkpoints: []Checkpoint{},
				Chains:      []*Tree{{Path: ev.Path, Live: true}},
				Volumes:     []string{"/mnt/e"}, Allocated: 20 * GiB},
		},
		Unattached: []*Tree{
			{Path: bad.Path},
			{Path: orphan.Path, Children: []*Tree{{Path: orphanKid.Path}}},
		},
		Disks: []*Disk{base, a, b, c, ev, bad, orphan, orphanKid},
		StateFiles: []*StateFile{{Path: "/mnt/d/VMs/web01/Virtual Machines/8D1E/8D1E.bin", Volume: "/mnt/d", Kind: "bin",
			VM: "web01", Size: 2 * GiB, Allocated: 2 * GiB, ModTime: gen}},
		Warnings: []string{"/mnt/f/loose/notes: permission denied", "config \x1b[31mred\x1b[0m\tunreadable"},
	}
	f := func(code string, sev Severity, vm, vol string, bytes int64, msg string, paths ...string) Finding {
		return Finding{Code: code, Severity: sev, VM: vm, Volume: vol, Bytes: bytes, Message: msg, Paths: paths}
	}
	r.Findings = []Finding{
		f(FindMergeNoSpace, SevError, "", "/mnt/d", 8*GiB, "not enough space on /mnt/d (0x80070070) to merge checkpoints: needs 8.0 GiB, 300.0 MiB free"),
		f(FindPausedRisk, SevError, "web01", "/mnt/d", 120*GiB, "paused-critical risk on /mnt/d: the differencing disks VMs write to here can still grow by 120.0 GiB, only 300.0 MiB is free"),
		f(FindLowSpace, SevError, "", "/mnt/d", 300*MiB, "/mnt/d has only 300.0 MiB free (critical below 200.0 MiB)"),
		f(FindMissingParent, SevError, "", "/mnt/f", 0, "broken chain: "+orphan.ParentError, orphan.Path),
		f(FindLinkageMismatch, SevError, "web01", "/mnt/d", 0, "broken chain: identity differs", c.Path, a.Path),
		f(FindExpandedParent, SevError, "web01", "/mnt/d", 0, "parent was expanded", base.Path, a.Path),
		f(FindUnreadableDisk, SevError, "", "/mnt/f", 0, bad.Path+" cannot be read: "+bad.Error, bad.Path),
		f(FindMissingDisk, SevError, weirdVM, "", 0, `VM `+weirdVM+`: drive ide0:1 names E:\VMs\data "2".vhdx, which is not there`, weirdDir+"/Virtual Machines/F00D.vmcx"),
		f(FindMissingCheckpointDisk, SevWarning, "web01", "", 0, `VM web01: checkpoint "before update" names D:\VMs\web01\gone.avhdx on drive scsi0:0, which is not there`, "/mnt/d/VMs/web01/Snapshots/0C1D.xml"),
		f(FindLowSpace, SevWarning, "", "/mnt/e", 1536*MiB, "/mnt/e has only 1.5 GiB free (warning below 2.0 GiB)"),
		f(FindOrphan, SevWarning, "", "/mnt/f", 764*MiB, orphan.Path+" is a differencing disk that no VM or checkpoint uses", orphan.Path, orphanKid.Path),
		f(FindMergePending, SevWarning, "web01", "", 0, "VM web01: its configuration says a deleted checkpoint's disk merge has not run yet", "/mnt/d/VMs/web01/Virtual Machines/8D1E2C3A-0000-4000-8000-000000000001.xml"),
		f(FindDeepChain, SevWarning, "web01", "/mnt/d", 0, "VM web01: drive scsi0:0 reads through 6 differencing disks (threshold 5)", c.Path),
		f(FindOldCheckpoint, SevWarning, "web01", "/mnt/d", 0, "VM web01: its oldest checkpoint disk was last written 45 days ago", a.Path),
		f(FindSavedState, SevInfo, "web01", "/mnt/d", 2*GiB, "saved VM memory", "/mnt/d/VMs/web01/Virtual Machines/8D1E/8D1E.bin"),
		f(FindUnfinishedOp, SevWarning, "", "/mnt/d", 0, "an unfinished hvsnap merge involves disks here; finish it: hvsnap merge --resume /mnt/d/VMs/web01/.hvsnap-merge-1.journal", "/mnt/d/VMs/web01/.hvsnap-merge-1.journal"),
	}
	r.Findings[10].Evidence = map[string]any{"vm_id": "8D1E2C3A-0000-4000-8000-000000000001", "source": "config"}
	r.Summary = Summary{VMs: 2, Disks: len(r.Disks), DiskBytes: 67 * GiB, CheckpointBytes: 12 * GiB,
		ReclaimableBytes: 3*GiB + 764*MiB, Findings: len(r.Findings), Worst: VerdictCritical}
	return r
}
