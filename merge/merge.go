// Package merge merges differencing disks into their parents, in place,
// safely and resumably (FORMATS.md §4).
//
// A merge is planned first (Plan): the ordered steps, the exact bytes each
// writes, the growth of each target file and the peak extra space per
// volume, and the refusals (a parent other disks depend on, a checkpoint
// that still uses a disk, a broken link, a file in use, an unfinished
// operation, not enough space). Run then executes the plan under file locks,
// recording every step in a journal (internal/journal) before it runs, so a
// merge killed at any instant, or stopped by a full disk, is finished by
// Resume. At every instant the chain reads the same as before the merge.
//
// One step merges one differencing disk C into its parent P:
//
//  1. VHDX: P's future DataWriteGuid G' is written into C's parent_linkage2
//     (C's data and DataWriteGuid unchanged), then P's header gets G'.
//  2. C's sectors (data, and zeros where C says ZERO/UNMAPPED over data
//     below) are written into P; P's untouched sectors keep what they
//     showed. The SHA-256 of what was written is recorded.
//  3. P is flushed and read back over the same ranges: the hash must match.
//  4. C's children are re-pointed to P (P's new identity, new paths).
//  5. XML configurations naming C are rewritten to name P (VMCX is never
//     written: the Set-VMHardDiskDrive command is reported instead).
//  6. C is removed (kept with Keep).
//
// Several steps merge a chain top-down into an ancestor: the disk just above
// the ancestor first, so every step writes into the same file.
package merge

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hvsnap/hvsnap/internal/progress"
	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vhd"
)

// Sentinel errors (errors.Is).
var (
	// ErrNoSpace: a volume has not enough free space for the merge
	// (Windows: 0x80070070, "There is not enough space on the disk").
	ErrNoSpace = errors.New("not enough space on the disk (0x80070070)")
	// ErrRefused: the merge would break something (shared parent, a
	// checkpoint still using a disk, broken linkage, different sizes).
	ErrRefused = errors.New("merge refused")
	// ErrBusy: another unfinished operation (journal) involves a file.
	ErrBusy = errors.New("unfinished operation")
	// ErrVerify: the parent did not read back what was written.
	ErrVerify = errors.New("verification failed")
)

// DefaultMargin is the free space kept on a volume beyond a merge's peak.
const DefaultMargin = 64 << 20

// Options control planning and running a merge.
type Options struct {
	PathMap vhd.PathMap
	// Into is the ancestor to merge into ("" = the disk's parent).
	Into string
	// Roots are folders searched (recursively) for other disks that depend
	// on the chain and for VM configurations naming its disks. Empty: the
	// disk's folder, and the VM folder above it when the disk sits in
	// "Virtual Hard Disks".
	Roots []string
	// Keep: do not remove merged files (they stay valid children).
	Keep bool
	// Margin is the free space to keep (default DefaultMargin; negative: 0).
	Margin int64
	// Volumes lists the mounted volumes (default space.HostVolumes()).
	Volumes space.VolumeSource
	// Hook, when set, is called at every crash-test point of Run/Resume
	// with the point's name (tests kill the process there).
	Hook func(point string)
	// Wrap wraps every disk file opened (fault injection).
	Wrap vhd.FileWrapper
	// AcceptStale names configurations the operator accepts although they
	// may lack their last changes (a VMCX with outstanding replay-log
	// entries that could not be replayed, or damaged entries). Without
	// it such a configuration in the store refuses the merge; with it the
	// plan carries a note saying what to check on the host.
	AcceptStale []string
	// RemoveLeaf: remove the disk without merging it (discarding its data),
	// as Hyper-V does when it deletes a checkpoint whose disk is an
	// off-branch leaf. Planned only for a leaf no disk depends on and no
	// configuration in the roots uses (PlanMerge refuses otherwise).
	RemoveLeaf bool
}

func (o *Options) margin() int64 {
	switch {
	case o.Margin < 0:
		return 0
	case o.Margin == 0:
		return DefaultMargin
	}
	return o.Margin
}

func (o *Options) volumes() space.VolumeSource {
	if o.Volumes != nil {
		return o.Volumes
	}
	return space.HostVolumes()
}

func (o *Options) hook(point string) {
	if o.Hook != nil {
		o.Hook(point)
	}
}

// Plan is what a merge will do. It is stored in the journal; its fields are
// the JSON of `hvsnap merge --dry-run --json`.
type Plan struct {
	Schema int    `json:"schema"`
	Disk   string `json:"disk"` // the disk named by the user
	Into   string `json:"into"` // the ancestor that absorbs the chain
	Steps  []Step `json:"steps"`
	// CopyBytes: bytes written into the ancestor over all steps.
	CopyBytes int64 `json:"copy_bytes"`
	// Volumes: the peak extra space each volume needs during the merge.
	Volumes []VolumeNeed `json:"volumes"`
	// Configs: configurations to update after the merge.
	Configs []ConfigChange `json:"configs"`
	// Notes: what will not be done and why, warnings.
	Notes []string `json:"notes"`
	// Keep: merged files are kept.
	Keep bool `json:"keep"`
	// PathMap used while planning (resume uses the same).
	PathMap []string `json:"path_map,omitempty"`
	// Roots searched for dependent disks and configurations (a removal
	// without merge checks them again right before it removes).
	Roots []string `json:"roots,omitempty"`
}

// Discards reports whether the plan removes a disk without merging it
// (--remove-leaf).
func (p *Plan) Discards() bool { return len(p.Steps) == 1 && p.Steps[0].Discard }

// dir is where the plan's journal lives: next to the merge's target, or,
// for a removal without merge, next to the disk it removes (whose folder
// the operator names).
func (p *Plan) dir() string {
	if p.Discards() {
		return filepath.Dir(p.Disk)
	}
	return filepath.Dir(p.Into)
}

// Step merges Child into Parent.
type Step struct {
	Child        string `json:"child"`
	Parent       string `json:"parent"`
	Format       string `json:"format"`
	ParentType   string `json:"parent_type"`
	ChildBlock   int64  `json:"child_block_size"`
	ParentBlock  int64  `json:"parent_block_size"`
	CopyBytes    int64  `json:"copy_bytes"`    // bytes of the child written into the parent
	Growth       int64  `json:"growth"`        // bytes the parent's file grows (exact, block level)
	FreedBytes   int64  `json:"freed_bytes"`   // space the child's removal frees (0 with Keep)
	ParentVolume string `json:"parent_volume"` // mount point
	ChildVolume  string `json:"child_volume"`
	// Children of Child, re-pointed to Parent after the copy.
	Children []string `json:"children"`
	// ChildrenModTime: each child's modification time (Unix nanoseconds)
	// when planned; a re-pointed VHD gets it back (its own children record
	// it as their parent's time), also when a resume repeats the re-point.
	ChildrenModTime map[string]int64 `json:"children_mtime,omitempty"`
	// NewDataWriteGUID: the parent's DataWriteGuid after the merge (VHDX).
	NewDataWriteGUID string `json:"new_data_write_guid,omitempty"`
	// Discard: the child is removed without merging (--remove-leaf): its
	// data is discarded, nothing is written into Parent.
	Discard bool `json:"discard,omitempty"`
}

// VolumeNeed is the space a volume needs.
type VolumeNeed struct {
	Mount string `json:"mount"`
	Free  int64  `json:"free"`
	// Peak is the most extra space the merge holds on this volume at once.
	Peak int64 `json:"peak"`
	// Margin is kept free beyond Peak.
	Margin int64 `json:"margin"`
	OK     bool  `json:"ok"`
}

// ConfigChange is a VM or checkpoint configuration that names a merged disk.
type ConfigChange struct {
	Config string `json:"config"`
	Kind   string `json:"kind"` // "xml" or "vmcx"
	VM     string `json:"vm"`
	// Drive location, e.g. "IDE 0:0".
	Drive   string `json:"drive"`
	OldPath string `json:"old_path"` // Windows path as stored
	NewPath string `json:"new_path"` // Windows path of the disk that replaces it
	// Command: for VMCX (never written by hvsnap), the PowerShell command
	// to run on the host.
	Command string `json:"command,omitempty"`
}

// NoSpaceError is ErrNoSpace with the numbers.
type NoSpaceError struct {
	Mount  string
	Need   int64 // peak + margin
	Free   int64
	Room   []space.VolumeInfo // volumes with room for the VM's files
	Disk   string
	Reloc  string // suggested command
	Detail string
}

func (e *NoSpaceError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "merge: not enough space on %s (0x80070070, \"There is not enough space on the disk\"): needs %s (%d bytes), %s (%d bytes) free",
		e.Mount, human(e.Need), e.Need, human(e.Free), e.Free)
	if e.Detail != "" {
		b.WriteString("; " + e.Detail)
	}
	if len(e.Room) > 0 {
		var rs []string
		for _, v := range e.Room {
			rs = append(rs, fmt.Sprintf("%s (%s free)", v.Mount, human(v.Free)))
		}
		b.WriteString("; volumes with room: " + strings.Join(rs, ", "))
		if e.Reloc != "" {
			b.WriteString(" — run: " + e.Reloc)
		}
	} else {
		b.WriteString("; no other volume has room: free space on " + e.Mount + " first")
	}
	return b.String()
}

func (e *NoSpaceError) Unwrap() error { return ErrNoSpace }

// RefusedError is ErrRefused naming the file and why.
type RefusedError struct {
	Path   string
	Reason string
	// Cause, when set, is the error behind the refusal (a *lock.InUseError
	// for a disk in use: errors.Is(err, lock.ErrInUse)).
	Cause error
}

func (e *RefusedError) Error() string { return fmt.Sprintf("merge: %s: %s", e.Path, e.Reason) }
func (e *RefusedError) Unwrap() []error {
	if e.Cause != nil {
		return []error{ErrRefused, e.Cause}
	}
	return []error{ErrRefused}
}

func refused(path, format string, args ...any) error {
	return &RefusedError{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// Result is what a run did.
type Result struct {
	Plan    *Plan    `json:"plan"`
	Journal string   `json:"journal"`
	Merged  []string `json:"merged"`  // child files merged
	Removed []string `json:"removed"` // files removed
	// Growth: how much each target file grew, by path.
	Growth map[string]int64 `json:"growth"`
	// Configs rewritten (XML) and commands to run (VMCX).
	ConfigsUpdated []string `json:"configs_updated"`
	Commands       []string `json:"commands"`
	Resumed        bool     `json:"resumed"`
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

var _ progress.Reporter = progress.Nop{}
