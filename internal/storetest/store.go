// Package storetest builds realistic Hyper-V stores for tests and the lab:
// VM folders with XML configurations in the real 2012 R2 schema, base disks
// and checkpoint differencing disks named and linked as Hyper-V does, known
// deterministic content, saved-state files, and helpers that break things
// (orphaned disks, missing files). Everything is written with the vhd
// package; the expected virtual content is kept in memory so callers can
// check what a merge, export or relocation leaves behind.
package storetest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hvsnap/hvsnap/vhd"
)

// WindowsRoot is the Windows folder the built VMs live in on their
// (imaginary) Hyper-V host: `C:\VMs\<Name>\...`.
const WindowsRoot = `C:\VMs`

// LatestCheckpoint as VMSpec.CurrentAfter: the VM runs on the last
// checkpoint of the list.
const LatestCheckpoint = -1

// Extent is a range of the virtual disk.
type Extent struct {
	Off, Len int64
}

// CheckpointSpec is one checkpoint of a VM.
//
// A checkpoint's disk is the disk the VM was writing to when the checkpoint
// was taken (what its configuration names, FORMATS.md §5.2): the base disk
// for a root checkpoint (Parent -1), otherwise a new `.avhdx` child of the
// parent checkpoint's disk (the disk the VM ran on after that checkpoint was
// taken or applied).
type CheckpointSpec struct {
	Name string // "" → "<VM> - (<index>)"
	ID   string // "" → a GUID derived from the VM ID and the index
	// Parent is the index of the parent checkpoint, -1 for a root. It must
	// be lower than this checkpoint's index (checkpoints in time order).
	Parent int
	// WriteBytes of seeded data are written into the checkpoint's disk at
	// 4 KiB-aligned offsets chosen by Seed (64 KiB to 1 MiB pieces; pieces
	// may overlap). Writes, when set, replaces it with exact ranges.
	WriteBytes int64
	Writes     []Extent
	Seed       int64 // 0 → derived from the VM ID and the index
	// Deleted: the checkpoint was deleted in Hyper-V but its disk not yet
	// merged: no configuration under Snapshots/, the disk stays in the
	// chain. (Set VMSpec.DiskMergePending as well to model what Hyper-V
	// records; it is left to the caller so both signals can be tested apart.)
	Deleted bool
	// Age sets the checkpoint disk's modification time to now - Age (before
	// its children are created, so VHD parent timestamps stay consistent).
	Age time.Duration
}

// VMSpec describes a VM to build.
type VMSpec struct {
	Name string // required; the VM folder and base disk are named after it
	ID   string // "" → a GUID derived from Name
	// Format of every disk (default vhdx: .vhdx/.avhdx; vhd: .vhd/.avhd).
	Format    vhd.Format
	Size      int64  // virtual size (default 64 MiB)
	BlockSize uint32 // 0 → vhd's default (VHD 2 MiB; VHDX dynamic 32 MiB, differencing 2 MiB)
	// Checkpoints in the order they were taken; a tree through Parent.
	Checkpoints []CheckpointSpec
	// CurrentAfter is the index of the checkpoint the VM now runs on: its
	// live leaf is a new `.avhdx` child of that checkpoint's disk.
	// LatestCheckpoint (-1) means the last one. Ignored without checkpoints
	// (the VM then runs on its base disk).
	CurrentAfter     int
	DiskMergePending bool // global_settings/disk_merge_pending
	// SavedStateBytes > 0 writes `Virtual Machines/<ID>/<ID>.bin` of that
	// size and a `.vsv` (1/64 of it, at least 1 MiB), sparse unless
	// SavedStateAllocated. The config's memory size follows it.
	SavedStateBytes     int64
	SavedStateAllocated bool
	Generation          int  // 1 (default) or 2 (SCSI only)
	SCSI                bool // the disk on SCSI 0:0 instead of IDE 0:0 (always for generation 2)
	// DiskDir: a separate folder (another volume) for the disks instead of
	// `<root>/<Name>/Virtual Hard Disks`; its Windows path is
	// `D:\Hyper-V\<Name>` (mapped in BuiltVM.PathMap).
	DiskDir string
	// Base disk content: BaseWriteBytes (0 → 1 MiB, < 0 → none) of data
	// seeded by Seed, or exactly BaseWrites.
	BaseWriteBytes int64
	BaseWrites     []Extent
	Seed           int64 // 0 → derived from the ID
	// Live leaf content (written after the last checkpoint the VM runs on);
	// LiveWriteBytes 0 → none. Without checkpoints it goes into the base.
	LiveWriteBytes int64
	LiveWrites     []Extent
	// ParentDisk: the base disk is a differencing `<Name>.vhdx` child of
	// this existing disk (VMs made from a shared template). Its content is
	// read through vhd for the expected content.
	// Size is then the parent's.
	ParentDisk string
}

// BuiltVM is what BuildVM wrote, with the expected model.
type BuiltVM struct {
	Spec       VMSpec // normalized (defaults filled)
	Root       string // absolute store root
	Dir        string // <root>/<Name>
	ConfigPath string // <Dir>/Virtual Machines/<ID>.xml
	DiskDir    string
	// PathMap maps the Windows paths in configs and locators to local ones:
	// `C:\VMs` → Root (and `D:\Hyper-V\<Name>` → DiskDir when set).
	PathMap vhd.PathMap
	Base    string // the base disk
	Leaf    string // the disk the VM config names (live leaf)
	// Chain: the live chain, leaf first, base last (ParentDisk's own chain
	// not included).
	Chain []string
	// Disks: every disk file written, in creation order (base first).
	Disks []string
	// CheckpointDisks[i] is the disk checkpoint i names (its config's
	// drive path); CheckpointConfigs[i] its config ("" when Deleted).
	CheckpointDisks   []string
	CheckpointConfigs []string
	// OffBranch: disks not on the live chain (checkpoint branches).
	OffBranch []string
	// StateFiles: saved-state files written (.bin, .vsv).
	StateFiles []string
	// WindowsPath maps each disk to its Windows path (as configs name it).
	WindowsPath map[string]string
	// Parent maps each disk to its parent disk ("" for the base unless
	// ParentDisk is set).
	Parent map[string]string
	// Written: the ranges written into each disk, in write order.
	Written map[string][]Extent

	mu     sync.Mutex
	data   map[string][]write // per disk, in write order
	hashes map[string]string
}

type write struct {
	off  int64
	data []byte
}

// BuildVM writes the VM described by spec under root:
//
//	<root>/<Name>/Virtual Machines/<ID>.xml          VM config (UTF-16LE, BOM), drive = live leaf
//	<root>/<Name>/Virtual Machines/<ID>/<ID>.bin|.vsv saved state (SavedStateBytes > 0)
//	<root>/<Name>/Virtual Hard Disks/<Name>.vhdx      base disk (or DiskDir)
//	<root>/<Name>/Virtual Hard Disks/<Name>_<GUID>.avhdx  checkpoint and live disks
//	<root>/<Name>/Snapshots/<CheckpointID>.xml        one per checkpoint not Deleted
//
// Disks are written through vhd with the returned PathMap, so their
// absolute parent locators hold `C:\VMs\...` paths as Hyper-V writes them.
func BuildVM(root string, spec VMSpec) (*BuiltVM, error) {
	if err := normalize(&spec); err != nil {
		return nil, err
	}
	absRoot, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	bv := &BuiltVM{
		Spec: spec, Root: absRoot, Dir: filepath.Join(absRoot, spec.Name),
		WindowsPath: map[string]string{}, Parent: map[string]string{}, Written: map[string][]Extent{},
		data: map[string][]write{}, hashes: map[string]string{},
	}
	bv.ConfigPath = filepath.Join(bv.Dir, "Virtual Machines", spec.ID+".xml")
	bv.PathMap = vhd.PathMap{{Windows: WindowsRoot, Local: absRoot}}
	winDiskDir := WindowsRoot + `\` + spec.Name + `\Virtual Hard Disks`
	bv.DiskDir = filepath.Join(bv.Dir, "Virtual Hard Disks")
	if spec.DiskDir != "" {
		if bv.DiskDir, err = filepath.Abs(spec.DiskDir); err != nil {
			return nil, err
		}
		winDiskDir = `D:\Hyper-V\` + spec.Name
		bv.PathMap = append(bv.PathMap, vhd.PathMapping{Windows: winDiskDir, Local: bv.DiskDir})
	}
	for _, d := range []string{filepath.Dir(bv.ConfigPath), bv.DiskDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	baseExt, diffExt := ".vhdx", ".avhdx"
	if spec.Format == vhd.FormatVHD {
		baseExt, diffExt = ".vhd", ".avhd"
	}
	newDisk := func(name string) string {
		p := filepath.Join(bv.DiskDir, name)
		bv.WindowsPath[p] = winDiskDir + `\` + name
		bv.Disks = append(bv.Disks, p)
		return p
	}
	diffName := func(what string) string {
		return spec.Name + "_" + GUID(spec.ID, "disk", what) + diffExt
	}

	// Base: its own data, root checkpoints' data, and the live data when
	// there are no checkpoints.
	bv.Base = newDisk(spec.Name + baseExt)
	baseWrites := genWrites(spec.BaseWrites, spec.BaseWriteBytes, spec.Seed, spec.Size)
	var baseAge time.Duration
	for ci, c := range spec.Checkpoints {
		if c.Parent < 0 {
			baseWrites = append(baseWrites, genWrites(c.Writes, c.WriteBytes, c.Seed, spec.Size)...)
			if baseAge == 0 {
				baseAge = spec.Checkpoints[ci].Age
			}
		}
	}
	if len(spec.Checkpoints) == 0 {
		baseWrites = append(baseWrites, genWrites(spec.LiveWrites, spec.LiveWriteBytes, spec.Seed+1, spec.Size)...)
	}
	baseSpec := vhd.CreateSpec{Format: spec.Format, Type: vhd.TypeDynamic, Size: spec.Size, BlockSize: spec.BlockSize}
	if spec.ParentDisk != "" {
		pd, err := filepath.Abs(spec.ParentDisk)
		if err != nil {
			return nil, err
		}
		baseSpec = vhd.CreateSpec{Format: spec.Format, Parent: pd, BlockSize: spec.BlockSize}
		bv.Parent[bv.Base] = pd
	}
	if err := bv.makeDisk(bv.Base, baseSpec, baseWrites, baseAge); err != nil {
		return nil, err
	}

	// Checkpoint disks, in time order.
	bv.CheckpointDisks = make([]string, len(spec.Checkpoints))
	bv.CheckpointConfigs = make([]string, len(spec.Checkpoints))
	for ci, c := range spec.Checkpoints {
		if c.Parent < 0 {
			bv.CheckpointDisks[ci] = bv.Base
			continue
		}
		parent := bv.CheckpointDisks[c.Parent]
		p := newDisk(diffName(fmt.Sprint("checkpoint", ci)))
		bv.Parent[p] = parent
		ds := vhd.CreateSpec{Format: spec.Format, Parent: parent, BlockSize: spec.BlockSize}
		if err := bv.makeDisk(p, ds, genWrites(c.Writes, c.WriteBytes, c.Seed, spec.Size), c.Age); err != nil {
			return nil, err
		}
		bv.CheckpointDisks[ci] = p
	}

	// Live leaf.
	bv.Leaf = bv.Base
	if len(spec.Checkpoints) > 0 {
		parent := bv.CheckpointDisks[spec.CurrentAfter]
		bv.Leaf = newDisk(diffName("live"))
		bv.Parent[bv.Leaf] = parent
		ds := vhd.CreateSpec{Format: spec.Format, Parent: parent, BlockSize: spec.BlockSize}
		if err := bv.makeDisk(bv.Leaf, ds, genWrites(spec.LiveWrites, spec.LiveWriteBytes, spec.Seed+1, spec.Size), 0); err != nil {
			return nil, err
		}
	}
	for p := bv.Leaf; ; p = bv.Parent[p] {
		bv.Chain = append(bv.Chain, p)
		if p == bv.Base {
			break
		}
	}
	onChain := map[string]bool{}
	for _, p := range bv.Chain {
		onChain[p] = true
	}
	for _, p := range bv.Disks {
		if !onChain[p] {
			bv.OffBranch = append(bv.OffBranch, p)
		}
	}

	// Configurations.
	memMiB := int64(512)
	if spec.SavedStateBytes > 0 {
		memMiB = max((spec.SavedStateBytes+vhd.MiB-1)/vhd.MiB, 1)
	}
	base := configXML{
		name: spec.Name, globalID: spec.ID, vmID: spec.ID, generation: spec.Generation,
		scsi: spec.SCSI, scsiInstance: strings.ToLower(GUID(spec.ID, "scsi")),
		diskWinPath: bv.WindowsPath[bv.Leaf], mergePending: spec.DiskMergePending, memoryMiB: memMiB,
	}
	for _, c := range spec.Checkpoints {
		if !c.Deleted {
			base.snapshots++
		}
	}
	if err := writeFile(bv.ConfigPath, renderXML(base.tree())); err != nil {
		return nil, err
	}
	for ci, c := range spec.Checkpoints {
		if c.Deleted {
			continue
		}
		cc := base
		cc.name, cc.globalID = c.Name, c.ID
		cc.diskWinPath = bv.WindowsPath[bv.CheckpointDisks[ci]]
		cc.mergePending = false
		p := filepath.Join(bv.Dir, "Snapshots", c.ID+".xml")
		if err := writeFile(p, renderXML(cc.tree())); err != nil {
			return nil, err
		}
		bv.CheckpointConfigs[ci] = p
	}

	// Saved state.
	if spec.SavedStateBytes > 0 {
		dir := filepath.Join(filepath.Dir(bv.ConfigPath), spec.ID)
		for _, f := range []struct {
			ext  string
			size int64
		}{{".bin", spec.SavedStateBytes}, {".vsv", max(spec.SavedStateBytes/64, vhd.MiB)}} {
			p := filepath.Join(dir, spec.ID+f.ext)
			if err := writeStateFile(p, f.size, spec.SavedStateAllocated); err != nil {
				return nil, err
			}
			bv.StateFiles = append(bv.StateFiles, p)
		}
	}
	return bv, nil
}

func normalize(spec *VMSpec) error {
	if spec.Name == "" || strings.ContainsAny(spec.Name, `/\:*?"<>|`) {
		return fmt.Errorf("storetest: VM name %q is empty or not a valid file name", spec.Name)
	}
	if spec.ID == "" {
		spec.ID = GUID("vm", spec.Name)
	}
	spec.ID = strings.ToUpper(strings.Trim(spec.ID, "{}"))
	if spec.Format == "" {
		spec.Format = vhd.FormatVHDX
	}
	if spec.ParentDisk != "" {
		im, err := vhd.Open(spec.ParentDisk, &vhd.Options{ReadOnly: true})
		if err != nil {
			return err
		}
		ps := im.VirtualSize()
		im.Close()
		if spec.Size != 0 && spec.Size != ps {
			return fmt.Errorf("storetest: Size %d differs from the parent disk's %d", spec.Size, ps)
		}
		spec.Size = ps
	}
	if spec.Size == 0 {
		spec.Size = 64 * vhd.MiB
	}
	if spec.Generation == 0 {
		spec.Generation = 1
	}
	if spec.Generation == 2 {
		spec.SCSI = true
	}
	if spec.Seed == 0 {
		spec.Seed = seedOf(spec.ID, "base")
	}
	if spec.BaseWriteBytes == 0 {
		spec.BaseWriteBytes = vhd.MiB
	}
	spec.Checkpoints = append([]CheckpointSpec(nil), spec.Checkpoints...)
	roots := 0
	for ci := range spec.Checkpoints {
		c := &spec.Checkpoints[ci]
		if c.Parent >= ci || c.Parent < -1 {
			return fmt.Errorf("storetest: checkpoint %d: parent %d must be -1 or an earlier checkpoint", ci, c.Parent)
		}
		if c.Parent < 0 {
			roots++
		}
		if c.Name == "" {
			c.Name = fmt.Sprintf("%s - (%d)", spec.Name, ci)
		}
		if c.ID == "" {
			c.ID = GUID(spec.ID, "checkpoint", fmt.Sprint(ci))
		}
		c.ID = strings.ToUpper(strings.Trim(c.ID, "{}"))
		if c.Seed == 0 {
			c.Seed = seedOf(spec.ID, fmt.Sprint("checkpoint", ci))
		}
	}
	if len(spec.Checkpoints) > 0 {
		if roots == 0 {
			return errors.New("storetest: no root checkpoint (Parent -1)")
		}
		if spec.CurrentAfter == LatestCheckpoint {
			spec.CurrentAfter = len(spec.Checkpoints) - 1
		}
		if spec.CurrentAfter < 0 || spec.CurrentAfter >= len(spec.Checkpoints) {
			return fmt.Errorf("storetest: CurrentAfter %d is not a checkpoint index", spec.CurrentAfter)
		}
	}
	return nil
}

func seedOf(parts ...string) int64 {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	v := int64(0)
	for _, c := range h[:8] {
		v = v<<8 | int64(c)
	}
	if v == 0 {
		v = 1
	}
	return v
}

// genWrites returns the writes of one disk: exact extents when given, else
// total bytes in seeded pieces.
func genWrites(exact []Extent, total, seed, size int64) []write {
	rng := rand.New(rand.NewSource(seed))
	var out []write
	if len(exact) > 0 {
		for _, e := range exact {
			if e.Len <= 0 || e.Off < 0 || e.Off+e.Len > size {
				continue
			}
			d := make([]byte, e.Len)
			rng.Read(d)
			out = append(out, write{e.Off, d})
		}
		return out
	}
	for done := int64(0); done < total; {
		l := min(int64(1+rng.Intn(16))*64*vhd.KiB, total-done, size)
		off := rng.Int63n((size-l)/4096+1) * 4096
		d := make([]byte, l)
		rng.Read(d)
		out = append(out, write{off, d})
		done += l
	}
	return out
}

// makeDisk creates path, writes ws through the chain and sets its age.
func (bv *BuiltVM) makeDisk(path string, spec vhd.CreateSpec, ws []write, age time.Duration) error {
	opts := &vhd.Options{PathMap: bv.PathMap}
	im, err := vhd.Create(path, spec, opts)
	if err != nil {
		return err
	}
	if err := im.Close(); err != nil {
		return err
	}
	if len(ws) > 0 {
		c, err := vhd.OpenChain(path, opts)
		if err != nil {
			return err
		}
		for _, w := range ws {
			if _, err := c.WriteAt(w.data, w.off); err != nil {
				c.Close()
				return err
			}
		}
		if err := c.Close(); err != nil {
			return err
		}
	}
	bv.data[path] = ws
	ext := []Extent{}
	for _, w := range ws {
		ext = append(ext, Extent{w.off, int64(len(w.data))})
	}
	bv.Written[path] = ext
	if age > 0 {
		t := time.Now().Add(-age)
		if err := os.Chtimes(path, t, t); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o644)
}

// writeStateFile writes a saved-state file of size bytes: sparse, or
// filled with a repeating pattern (allocated).
func writeStateFile(p string, size int64, allocated bool) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if allocated {
		buf := make([]byte, vhd.MiB)
		for j := range buf {
			buf[j] = byte(j*7 + 1)
		}
		for done := int64(0); done < size; {
			k := min(int64(len(buf)), size-done)
			if _, err := f.Write(buf[:k]); err != nil {
				f.Close()
				return err
			}
			done += k
		}
	} else if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Expected returns the expected virtual content of disk (any disk BuildVM
// wrote: the view through its chain), computed from what was written, not
// read through vhd. A ParentDisk's content is read through vhd.
func (bv *BuiltVM) Expected(disk string) (io.ReaderAt, error) {
	var layers []string // base first
	for p := disk; p != ""; p = bv.Parent[p] {
		if _, ok := bv.data[p]; !ok {
			if p == disk {
				return nil, fmt.Errorf("storetest: %s is not a disk of VM %s", disk, bv.Spec.Name)
			}
			// ParentDisk: outside this VM.
			return &modelReader{bv: bv, layers: layers, external: p, size: bv.Spec.Size}, nil
		}
		layers = append([]string{p}, layers...)
	}
	return &modelReader{bv: bv, layers: layers, size: bv.Spec.Size}, nil
}

type modelReader struct {
	bv       *BuiltVM
	layers   []string // base first
	external string   // ParentDisk ("" when none)
	size     int64
}

func (m *modelReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= m.size {
		return 0, io.EOF
	}
	n := len(p)
	var err error
	if off+int64(n) > m.size {
		n, err = int(m.size-off), io.EOF
	}
	p = p[:n]
	clear(p)
	if m.external != "" {
		c, e := vhd.OpenChain(m.external, &vhd.Options{ReadOnly: true, PathMap: m.bv.PathMap})
		if e != nil {
			return 0, e
		}
		_, e = c.ReadAt(p, off)
		c.Close()
		if e != nil && e != io.EOF {
			return 0, e
		}
	}
	for _, l := range m.layers {
		for _, w := range m.bv.data[l] {
			a, z := max(off, w.off), min(off+int64(n), w.off+int64(len(w.data)))
			if a < z {
				copy(p[a-off:z-off], w.data[a-w.off:z-w.off])
			}
		}
	}
	return n, err
}

// ExpectedSHA256 is the hex SHA-256 of disk's expected virtual content
// (cached).
func (bv *BuiltVM) ExpectedSHA256(disk string) (string, error) {
	bv.mu.Lock()
	h, ok := bv.hashes[disk]
	bv.mu.Unlock()
	if ok {
		return h, nil
	}
	r, err := bv.Expected(disk)
	if err != nil {
		return "", err
	}
	h, err = hashReaderAt(r, bv.Spec.Size)
	if err != nil {
		return "", err
	}
	bv.mu.Lock()
	bv.hashes[disk] = h
	bv.mu.Unlock()
	return h, nil
}

// LiveSHA256 is ExpectedSHA256(bv.Leaf): what the VM's disk must read as,
// whatever is merged, exported or moved later.
func (bv *BuiltVM) LiveSHA256() (string, error) { return bv.ExpectedSHA256(bv.Leaf) }

// ChainSHA256 reads the virtual disk of path through its whole chain with
// vhd (read-only) and returns the hex SHA-256 of its content.
func ChainSHA256(path string, pm vhd.PathMap) (string, error) {
	c, err := vhd.OpenChain(path, &vhd.Options{ReadOnly: true, PathMap: pm})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return hashReaderAt(c, c.Size())
}

func hashReaderAt(r io.ReaderAt, size int64) (string, error) {
	h := sha256.New()
	buf := make([]byte, 4*vhd.MiB)
	for off := int64(0); off < size; {
		k := min(int64(len(buf)), size-off)
		if _, err := r.ReadAt(buf[:k], off); err != nil && err != io.EOF {
			return "", err
		}
		h.Write(buf[:k])
		off += k
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// OrphanDisk creates a differencing disk in dir that no configuration names:
// a child of parent named `<parent base name>_<GUID>.avhdx` (Hyper-V style;
// .avhd for a VHD parent) holding 256 KiB of seeded data at 1 MiB. With
// parent "" it creates a standalone dynamic `Orphan_<GUID>.vhdx` (64 MiB)
// instead. The GUID is deterministic (from dir, parent and a counter).
func OrphanDisk(dir, parent string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	var spec vhd.CreateSpec
	stem, ext := "Orphan", ".vhdx"
	if parent != "" {
		pf, ok := vhd.FormatFromExt(parent)
		if !ok {
			return "", fmt.Errorf("storetest: %s: not a disk file name", parent)
		}
		stem = strings.TrimSuffix(filepath.Base(parent), filepath.Ext(parent))
		if k := strings.Index(stem, "_"); k > 0 && strings.HasPrefix(strings.ToLower(filepath.Ext(parent)), ".a") {
			stem = stem[:k] // checkpoint disks keep the base disk's name
		}
		ext = ".avhdx"
		if pf == vhd.FormatVHD {
			ext = ".avhd"
		}
		spec = vhd.CreateSpec{Format: pf, Parent: parent}
	} else {
		spec = vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 64 * vhd.MiB, BlockSize: 2 * vhd.MiB}
	}
	var p string
	for k := 0; ; k++ {
		p = filepath.Join(dir, stem+"_"+GUID("orphan", dir, parent, fmt.Sprint(k))+ext)
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			break
		}
	}
	im, err := vhd.Create(p, spec, nil)
	if err != nil {
		return "", err
	}
	size := im.VirtualSize()
	if err := im.Close(); err != nil {
		return "", err
	}
	c, err := vhd.OpenChain(p, nil)
	if err != nil {
		return "", err
	}
	ws := genWrites([]Extent{{min(vhd.MiB, size-256*vhd.KiB), 256 * vhd.KiB}}, 0, seedOf("orphan", p), size)
	for _, w := range ws {
		if _, err := c.WriteAt(w.data, w.off); err != nil {
			c.Close()
			return "", err
		}
	}
	return p, c.Close()
}

// DeleteFile removes path (a disk, config or state file) to break a store.
func DeleteFile(path string) error { return os.Remove(path) }

// SetAge sets path's modification (and access) time to now - age.
func SetAge(path string, age time.Duration) error {
	t := time.Now().Add(-age)
	return os.Chtimes(path, t, t)
}
