package scenarios

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// LabFile is the record a lab keeps in its root.
const LabFile = "hvsnap-lab.json"

// Healthy is the lab of a store with nothing to report.
const Healthy = "healthy"

// ErrNeedRoot: the lab cannot mount its volumes.
var ErrNeedRoot = errors.New("cannot mount the lab's volumes")

// Lab is what a lab built, recorded in <root>/hvsnap-lab.json so that tests
// and the demo can verify the store after recovery.
type Lab struct {
	Schema   int         `json:"schema"`
	Scenario string      `json:"scenario"`
	Root     string      `json:"root"`
	Created  time.Time   `json:"created"`
	Volumes  []LabVolume `json:"volumes"`
	// Roots: the folders to diagnose (the lab's volumes).
	Roots []string `json:"roots"`
	// PathMap: the Windows paths of the lab's imaginary Hyper-V host.
	PathMap []string `json:"path_map"`
	// Thresholds scaled to the lab's small volumes (diagnose uses them).
	Thresholds space.Thresholds `json:"thresholds"`
	BackupDir  string           `json:"backup_dir"`
	// RelocateTo: where runbooks relocate VMs (a lab volume with room).
	RelocateTo string `json:"relocate_to,omitempty"`
	// Expect: the scenarios diagnose must find (none for the healthy lab).
	Expect []string `json:"expect"`
	VMs    []LabVM  `json:"vms"`
	Notes  []string `json:"notes,omitempty"`
}

// LabVolume is one tmpfs volume of the lab.
type LabVolume struct {
	Name string `json:"name"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	// Windows: the drive the lab's host calls it (path map).
	Windows string `json:"windows,omitempty"`
}

// LabVM is a VM of the lab and its expected content.
type LabVM struct {
	Name   string `json:"name"`
	ID     string `json:"id"`
	Dir    string `json:"dir"`
	Config string `json:"config"`
	Leaf   string `json:"leaf"` // the disk the VM config names when built
	// LiveSHA256: SHA-256 of the VM's disk as the VM sees it (through its
	// chain): what it must read after any recovery that loses nothing.
	LiveSHA256 string `json:"live_sha256"`
	// Checkpoints: each checkpoint's disk content (for backups and the
	// surviving state of a broken chain).
	Checkpoints []LabCheckpoint `json:"checkpoints,omitempty"`
	// AfterSHA256: when the scenario loses data by nature (a deleted
	// .avhdx), what the VM's disk reads after its runbook.
	AfterSHA256 string `json:"after_sha256,omitempty"`
}

// LabCheckpoint is one checkpoint of a lab VM.
type LabCheckpoint struct {
	Name    string `json:"name"`
	ID      string `json:"id"`
	Disk    string `json:"disk"`
	SHA256  string `json:"sha256"`
	Deleted bool   `json:"deleted,omitempty"`
}

// LabScenarios lists what `hvsnap lab` can build: every scenario of the
// catalog with a lab, and the healthy store.
func LabScenarios() []Info {
	out := []Info{}
	for _, c := range Catalog() {
		if labBuilders[c.ID] != nil {
			out = append(out, c)
		}
	}
	return append(out, Info{Healthy, "a healthy store", "VMs with checkpoints and room to spare: diagnose finds nothing"})
}

var labBuilders = map[string]func(*labBuild) error{
	Healthy:        buildHealthy,
	PausedCritical: buildPaused,
	MergePending:   buildMergePending,
	MergeCannotFit: buildCannotFit,
	BrokenChain:    buildBroken,
	ExpandedParent: buildExpanded,
	OldCheckpoints: buildOld,
	DeepChain:      buildDeep,
	SavedState:     buildSavedState,
	OrphanedDisks:  buildOrphans,
}

// labThresholds scale the verdicts to volumes of a few hundred MiB.
func labThresholds() space.Thresholds {
	th := space.DefaultThresholds()
	th.CriticalFree = 8 << 20
	th.WarningFree = 16 << 20
	th.SavedStateMin = 16 << 20
	return th
}

type labBuild struct {
	lab *Lab
	pm  vhd.PathMap
}

// BuildLab builds the store of scenario under root (created if needed;
// it must be empty): tmpfs volumes mounted under it, VMs with XML configs,
// checkpoint trees and known content, and the record LabFile. It needs
// root privileges (or a private user and mount namespace) for the mounts.
// On failure, what was mounted is unmounted again.
func BuildLab(scenario, root string) (*Lab, error) {
	b := labBuilders[scenario]
	if b == nil {
		return nil, fmt.Errorf("lab: unknown scenario %q (hvsnap lab list)", scenario)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, err
	}
	if ents, err := os.ReadDir(abs); err != nil {
		return nil, err
	} else if len(ents) > 0 {
		return nil, fmt.Errorf("lab: %s is not empty (hvsnap lab teardown --root %s removes a lab)", abs, abs)
	}
	lb := &labBuild{lab: &Lab{Schema: 1, Scenario: scenario, Root: abs, Created: time.Now().UTC(),
		Thresholds: labThresholds(), BackupDir: filepath.Join(abs, "backups"), Expect: []string{}, Roots: []string{}, PathMap: []string{}}}
	if scenario != Healthy {
		lb.lab.Expect = []string{scenario}
	}
	if err := os.MkdirAll(lb.lab.BackupDir, 0o755); err != nil {
		return nil, err
	}
	if err := b(lb); err != nil {
		TeardownLab(abs)
		return nil, fmt.Errorf("lab %s: %w", scenario, err)
	}
	for _, m := range lb.pm {
		lb.lab.PathMap = append(lb.lab.PathMap, m.String())
	}
	data, err := json.MarshalIndent(lb.lab, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(abs, LabFile), append(data, '\n'), 0o644); err != nil {
		TeardownLab(abs)
		return nil, err
	}
	return lb.lab, nil
}

// ReadLab reads the record of the lab at root.
func ReadLab(root string) (*Lab, error) {
	data, err := os.ReadFile(filepath.Join(root, LabFile))
	if err != nil {
		return nil, err
	}
	l := &Lab{}
	if err := json.Unmarshal(data, l); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(root, LabFile), err)
	}
	return l, nil
}

// PathMapParsed returns the lab's path map.
func (l *Lab) PathMapParsed() (vhd.PathMap, error) {
	var pm vhd.PathMap
	for _, s := range l.PathMap {
		m, err := vhd.ParsePathMapping(s)
		if err != nil {
			return nil, err
		}
		pm = append(pm, m)
	}
	return pm, nil
}

// TeardownLab unmounts the lab's volumes and removes root. It refuses a
// folder that is not a lab (no LabFile and no hvsnap-lab mounts).
func TeardownLab(root string) error {
	abs, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	l, lerr := ReadLab(abs)
	var vols []string
	if lerr == nil {
		for _, v := range l.Volumes {
			vols = append(vols, v.Path)
		}
	} else {
		ents, _ := os.ReadDir(abs)
		for _, e := range ents {
			if p := filepath.Join(abs, e.Name()); e.IsDir() && isMountPoint(p) {
				vols = append(vols, p)
			}
		}
		if len(vols) == 0 && !os.IsNotExist(lerr) {
			return fmt.Errorf("lab teardown: %s: %w", abs, lerr)
		}
		if len(vols) == 0 {
			if _, err := os.Stat(abs); os.IsNotExist(err) {
				return nil
			}
			return fmt.Errorf("lab teardown: %s is not a lab (no %s)", abs, LabFile)
		}
	}
	var errs []error
	for _, v := range vols {
		if isMountPoint(v) {
			if err := unmount(v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return os.RemoveAll(abs)
}

// volume mounts a tmpfs volume <root>/<name> of size bytes, known to the
// lab's host as drive (e.g. `D:\`).
func (lb *labBuild) volume(name string, size int64, drive string) (string, error) {
	p := filepath.Join(lb.lab.Root, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		return "", err
	}
	if err := mountTmpfs(p, size); err != nil {
		return "", err
	}
	lb.lab.Volumes = append(lb.lab.Volumes, LabVolume{Name: name, Path: p, Size: size, Windows: drive})
	lb.lab.Roots = append(lb.lab.Roots, p)
	if drive != "" {
		lb.pm = append(lb.pm, vhd.PathMapping{Windows: drive, Local: p})
	}
	return p, nil
}

// vm builds a VM under <vol>/VMs and records it.
func (lb *labBuild) vm(vol string, spec storetest.VMSpec) (*storetest.BuiltVM, error) {
	if spec.BlockSize == 0 {
		spec.BlockSize = 2 << 20
	}
	root := filepath.Join(vol, "VMs")
	bv, err := storetest.BuildVM(root, spec)
	if err != nil {
		return nil, err
	}
	// The VMs live in C:\VMs on the lab's host.
	have := false
	for _, m := range lb.pm {
		if m.Windows == storetest.WindowsRoot {
			have = true
		}
	}
	if !have {
		lb.pm = append(vhd.PathMap{{Windows: storetest.WindowsRoot, Local: root}}, lb.pm...)
	}
	return bv, lb.record(bv)
}

func (lb *labBuild) record(bv *storetest.BuiltVM) error {
	live, err := bv.LiveSHA256()
	if err != nil {
		return err
	}
	lv := LabVM{Name: bv.Spec.Name, ID: bv.Spec.ID, Dir: bv.Dir, Config: bv.ConfigPath, Leaf: bv.Leaf, LiveSHA256: live}
	for i, c := range bv.Spec.Checkpoints {
		h, err := bv.ExpectedSHA256(bv.CheckpointDisks[i])
		if err != nil {
			return err
		}
		lv.Checkpoints = append(lv.Checkpoints, LabCheckpoint{Name: c.Name, ID: c.ID, Disk: bv.CheckpointDisks[i], SHA256: h, Deleted: c.Deleted})
	}
	lb.lab.VMs = append(lb.lab.VMs, lv)
	return nil
}

func (lb *labBuild) labVM(name string) *LabVM {
	for i := range lb.lab.VMs {
		if lb.lab.VMs[i].Name == name {
			return &lb.lab.VMs[i]
		}
	}
	return nil
}

// fill writes a plain file of other data on vol so that free bytes remain.
func (lb *labBuild) fill(vol string, free int64) error {
	have, err := freeBytes(vol)
	if err != nil {
		return err
	}
	n := have - free
	if n <= 0 {
		return fmt.Errorf("volume %s has only %d bytes free, wanted %d left", vol, have, free)
	}
	dir := filepath.Join(vol, "Other data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "iso-images.bin"))
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*31 + 7)
	}
	for done := int64(0); done < n; {
		k := min(int64(len(buf)), n-done)
		if _, err := f.Write(buf[:k]); err != nil {
			f.Close()
			return err
		}
		done += k
	}
	return f.Close()
}

// db is the healthy VM every lab also holds: a checkpoint, a little data.
func (lb *labBuild) db(vol string) error {
	_, err := lb.vm(vol, storetest.VMSpec{Name: "db", Size: 64 << 20, BaseWriteBytes: 2 << 20, LiveWriteBytes: 1 << 20,
		CurrentAfter: storetest.LatestCheckpoint, Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Name: "before patch", WriteBytes: 1 << 20}}})
	return err
}

func buildHealthy(lb *labBuild) error {
	d, err := lb.volume("d", 256<<20, `D:\`)
	if err != nil {
		return err
	}
	if _, err := lb.volume("e", 512<<20, `E:\`); err != nil {
		return err
	}
	if _, err := lb.vm(d, storetest.VMSpec{Name: "web", Size: 64 << 20, BaseWriteBytes: 4 << 20, LiveWriteBytes: 2 << 20,
		CurrentAfter: storetest.LatestCheckpoint, Checkpoints: []storetest.CheckpointSpec{{Parent: -1, WriteBytes: 1 << 20}, {Parent: 0, WriteBytes: 1 << 20}}}); err != nil {
		return err
	}
	return lb.db(d)
}

// buildPaused: VM web's base disk on D:, its checkpoint disks (.avhdx) on a
// small S: volume with less free space than they can still grow by.
func buildPaused(lb *labBuild) error {
	d, err := lb.volume("d", 256<<20, `D:\`)
	if err != nil {
		return err
	}
	s, err := lb.volume("s", 48<<20, `S:\`)
	if err != nil {
		return err
	}
	e, err := lb.volume("e", 1<<30, `E:\`)
	if err != nil {
		return err
	}
	lb.lab.RelocateTo = filepath.Join(e, "hvsnap-relocated")
	bv, err := lb.vm(d, storetest.VMSpec{Name: "web", Size: 256 << 20, BaseWriteBytes: 8 << 20, LiveWriteBytes: 4 << 20,
		CurrentAfter: storetest.LatestCheckpoint, Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Name: "installed", WriteBytes: 2 << 20}, {Parent: 0, Name: "configured", WriteBytes: 2 << 20}}})
	if err != nil {
		return err
	}
	if err := lb.db(d); err != nil {
		return err
	}
	// The checkpoint disks move to S:\Snapshots\web (Hyper-V's snapshot
	// location on another volume, 2008 R2 style); their parent locators
	// still find the base through its absolute path.
	snapDir := filepath.Join(s, "Snapshots", "web")
	if err := os.MkdirAll(snapDir, 0o755); err != nil {
		return err
	}
	configs := []string{bv.ConfigPath}
	for _, c := range bv.CheckpointConfigs {
		if c != "" {
			configs = append(configs, c)
		}
	}
	lv := lb.labVM("web")
	for _, p := range bv.Disks {
		if p == bv.Base {
			continue
		}
		dst := filepath.Join(snapDir, filepath.Base(p))
		if err := os.Rename(p, dst); err != nil {
			// another volume: copy then remove
			if err := copyFile(p, dst); err != nil {
				return err
			}
			if err := os.Remove(p); err != nil {
				return err
			}
		}
		newWin := `S:\Snapshots\web\` + filepath.Base(p)
		for _, c := range configs {
			if _, err := vm.RewriteXMLDiskPath(c, bv.WindowsPath[p], newWin); err != nil {
				return err
			}
		}
		if lv.Leaf == p {
			lv.Leaf = dst
		}
		for i := range lv.Checkpoints {
			if lv.Checkpoints[i].Disk == p {
				lv.Checkpoints[i].Disk = dst
			}
		}
	}
	lb.lab.Notes = append(lb.lab.Notes, "web's base disk is on D:, its checkpoint disks on S:, which has less free space than they can still grow by")
	return nil
}

// copyFile copies src to dst keeping holes (zero 64 KiB pieces are not
// written), as a move across volumes would.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for off := int64(0); off < fi.Size(); {
		n, err := in.ReadAt(buf, off)
		if n > 0 && !allZero(buf[:n]) {
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				out.Close()
				return err
			}
		}
		off += int64(n)
		if err != nil && n == 0 {
			out.Close()
			return err
		}
	}
	if err := out.Truncate(fi.Size()); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chtimes(dst, fi.ModTime(), fi.ModTime())
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// buildMergePending: a checkpoint of web was deleted (config flag set), its
// disk is still in the live chain; D: has room for the merge.
func buildMergePending(lb *labBuild) error {
	d, err := lb.volume("d", 256<<20, `D:\`)
	if err != nil {
		return err
	}
	if _, err := lb.vm(d, storetest.VMSpec{Name: "web", Size: 64 << 20, BaseWriteBytes: 4 << 20, LiveWriteBytes: 6 << 20, DiskMergePending: true,
		CurrentAfter: storetest.LatestCheckpoint, Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Name: "installed", WriteBytes: 2 << 20}, {Parent: 0, Name: "deleted last week", WriteBytes: 4 << 20, Deleted: true}}}); err != nil {
		return err
	}
	return lb.db(d)
}

// buildCannotFit: web's deleted checkpoint left a 112 MiB merge on D:,
// which has 96 MiB free (0x80070070); E: has room.
func buildCannotFit(lb *labBuild) error {
	d, err := lb.volume("d", 320<<20, `D:\`)
	if err != nil {
		return err
	}
	e, err := lb.volume("e", 1<<30, `E:\`)
	if err != nil {
		return err
	}
	lb.lab.RelocateTo = filepath.Join(e, "hvsnap-relocated")
	const mib = 1 << 20
	if _, err := lb.vm(d, storetest.VMSpec{Name: "web", Size: 160 * mib, DiskMergePending: true,
		BaseWrites:   []storetest.Extent{{Off: 0, Len: 32 * mib}},
		LiveWrites:   []storetest.Extent{{Off: 32 * mib, Len: 112 * mib}},
		CurrentAfter: storetest.LatestCheckpoint, Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Name: "before upgrade", Deleted: true,
			Writes: []storetest.Extent{{Off: 0, Len: 4096}}}}}); err != nil {
		return err
	}
	if err := lb.db(e); err != nil {
		return err
	}
	if err := lb.fill(d, 96*mib); err != nil {
		return err
	}
	lb.lab.Notes = append(lb.lab.Notes, "D: has 96 MiB free; merging web's pending checkpoint disk needs 112 MiB there (plus merge's 64 MiB margin)")
	return nil
}

// buildBroken: web's middle checkpoint disk was deleted by hand.
func buildBroken(lb *labBuild) error {
	d, err := lb.volume("d", 256<<20, `D:\`)
	if err != nil {
		return err
	}
	bv, err := lb.vm(d, storetest.VMSpec{Name: "web", Size: 64 << 20, BaseWriteBytes: 4 << 20, LiveWriteBytes: 2 << 20,
		CurrentAfter: storetest.LatestCheckpoint, Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Name: "installed", WriteBytes: 2 << 20}, {Parent: 0, Name: "configured", WriteBytes: 4 << 20}}})
	if err != nil {
		return err
	}
	if err := lb.db(d); err != nil {
		return err
	}
	gone := bv.CheckpointDisks[1]
	if err := storetest.DeleteFile(gone); err != nil {
		return err
	}
	lv := lb.labVM("web")
	lv.AfterSHA256 = lv.Checkpoints[0].SHA256
	lb.lab.Notes = append(lb.lab.Notes, "deleted by hand: "+gone+" (checkpoint \"configured\"); what survives intact is checkpoint \"installed\"")
	return nil
}

// buildExpanded: web's base VHD was expanded from 64 to 128 MiB under its
// checkpoint.
func buildExpanded(lb *labBuild) error {
	d, err := lb.volume("d", 256<<20, `D:\`)
	if err != nil {
		return err
	}
	bv, err := lb.vm(d, storetest.VMSpec{Name: "web", Format: vhd.FormatVHD, Size: 64 << 20, BaseWriteBytes: 4 << 20, LiveWriteBytes: 2 << 20,
		CurrentAfter: storetest.LatestCheckpoint, Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Name: "installed", WriteBytes: 2 << 20}}})
	if err != nil {
		return err
	}
	if err := lb.db(d); err != nil {
		return err
	}
	if err := storetest.ResizeVHD(bv.Base, 128<<20); err != nil {
		return err
	}
	lb.lab.Notes = append(lb.lab.Notes, "expanded from 67108864 to 134217728 bytes: "+bv.Base)
	return nil
}

func buildOld(lb *labBuild) error {
	d, err := lb.volume("d", 256<<20, `D:\`)
	if err != nil {
		return err
	}
	if _, err := lb.vm(d, storetest.VMSpec{Name: "web", Size: 64 << 20, BaseWriteBytes: 4 << 20, LiveWriteBytes: 3 << 20,
		CurrentAfter: storetest.LatestCheckpoint, Checkpoints: []storetest.CheckpointSpec{{Parent: -1, Name: "backup before migration", WriteBytes: 2 << 20, Age: 95 * 24 * time.Hour}}}); err != nil {
		return err
	}
	return lb.db(d)
}

func buildDeep(lb *labBuild) error {
	d, err := lb.volume("d", 256<<20, `D:\`)
	if err != nil {
		return err
	}
	var cps []storetest.CheckpointSpec
	for i := 0; i < 7; i++ {
		cps = append(cps, storetest.CheckpointSpec{Parent: i - 1, Name: fmt.Sprintf("nightly %d", i+1), WriteBytes: 1 << 20})
	}
	if _, err := lb.vm(d, storetest.VMSpec{Name: "web", Size: 64 << 20, BaseWriteBytes: 2 << 20, LiveWriteBytes: 1 << 20, CurrentAfter: storetest.LatestCheckpoint, Checkpoints: cps}); err != nil {
		return err
	}
	return lb.db(d)
}

func buildSavedState(lb *labBuild) error {
	d, err := lb.volume("d", 256<<20, `D:\`)
	if err != nil {
		return err
	}
	if _, err := lb.vm(d, storetest.VMSpec{Name: "web", Size: 64 << 20, BaseWriteBytes: 2 << 20, LiveWriteBytes: 1 << 20,
		SavedStateBytes: 24 << 20, SavedStateAllocated: true}); err != nil {
		return err
	}
	return lb.db(d)
}

func buildOrphans(lb *labBuild) error {
	d, err := lb.volume("d", 256<<20, `D:\`)
	if err != nil {
		return err
	}
	if err := lb.db(d); err != nil {
		return err
	}
	bv, err := lb.vm(d, storetest.VMSpec{Name: "web", Size: 64 << 20, BaseWriteBytes: 2 << 20, LiveWriteBytes: 1 << 20})
	if err != nil {
		return err
	}
	p, err := storetest.OrphanDisk(bv.DiskDir, bv.Base)
	if err != nil {
		return err
	}
	lb.lab.Notes = append(lb.lab.Notes, "orphaned: "+p)
	return nil
}

// Summary lines for printing a lab.
func (l *Lab) Summary() []string {
	var out []string
	for _, v := range l.Volumes {
		out = append(out, fmt.Sprintf("volume %-4s %s  tmpfs %s  (%s on the lab's Hyper-V host)", v.Name, v.Path, human(v.Size), orDash(v.Windows)))
	}
	names := []string{}
	for _, v := range l.VMs {
		names = append(names, v.Name)
	}
	sort.Strings(names)
	out = append(out, "VMs: "+strings.Join(names, ", "))
	out = append(out, l.Notes...)
	return out
}

// LabCheck is the content check of one lab VM.
type LabCheck struct {
	VM   string `json:"vm"`
	Disk string `json:"disk"` // the disk its configuration names now
	Want string `json:"want"`
	Got  string `json:"got"`
	OK   bool   `json:"ok"`
	Err  string `json:"error,omitempty"`
}

// VerifyLab reads every VM of the lab through the disk its configuration
// names now (after merges, relocations, re-pointing) and compares its
// content with what the lab recorded (LiveSHA256, or AfterSHA256 when the
// scenario loses data by nature).
func VerifyLab(l *Lab) ([]LabCheck, error) {
	pm, err := l.PathMapParsed()
	if err != nil {
		return nil, err
	}
	st, err := vm.Scan(l.Roots, vm.ScanOptions{PathMap: pm})
	if err != nil {
		return nil, err
	}
	var out []LabCheck
	for _, lv := range l.VMs {
		c := LabCheck{VM: lv.Name, Want: lv.LiveSHA256}
		if lv.AfterSHA256 != "" {
			c.Want = lv.AfterSHA256
		}
		n := 0
		for _, v := range st.VMs {
			if v.Config.Name != lv.Name {
				continue
			}
			n++
			if len(v.Config.Disks) == 0 || !v.Config.Disks[0].Exists {
				c.Err = "its configuration names no existing disk"
				continue
			}
			c.Disk = v.Config.Disks[0].LocalPath
			c.Got, err = storetest.ChainSHA256(c.Disk, pm)
			if err != nil {
				c.Err = err.Error()
			}
		}
		switch {
		case n == 0:
			c.Err = "VM not found under " + strings.Join(l.Roots, ", ")
		case n > 1:
			c.Err = fmt.Sprintf("VM found %d times (a copy left behind?)", n)
		}
		c.OK = c.Err == "" && c.Got == c.Want
		out = append(out, c)
	}
	return out, nil
}
