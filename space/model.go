// Package space builds the storage model of Hyper-V VM stores: volumes, VMs,
// checkpoint chains, orphaned and broken disks, the exact space each merge
// needs, and a verdict per volume. It reads headers, BATs and locators only,
// never payload, and writes nothing. Renderers (text, JSON, HTML,
// Prometheus) work from the model alone.
package space

import "time"

// Schema is the version of the JSON model (Report.Schema).
const Schema = 1

// Verdict of a volume.
type Verdict string

const (
	VerdictOK       Verdict = "ok"
	VerdictWarning  Verdict = "warning"
	VerdictCritical Verdict = "critical"
)

// Rank orders verdicts: ok 0, warning 1, critical 2.
func (v Verdict) Rank() int {
	switch v {
	case VerdictWarning:
		return 1
	case VerdictCritical:
		return 2
	}
	return 0
}

// Severity of a finding.
type Severity string

const (
	SevInfo    Severity = "info"
	SevWarning Severity = "warning"
	SevError   Severity = "error"
)

// Finding codes.
const (
	FindOrphan          = "orphaned-disk"    // differencing disk no VM or checkpoint uses, not a parent of a used disk
	FindMissingParent   = "broken-chain"     // parent not found
	FindLinkageMismatch = "linkage-mismatch" // parent found, identity differs
	FindExpandedParent  = "expanded-parent"  // virtual size differs from the parent's
	FindMergePending    = "merge-pending"    // config flag, or a deleted checkpoint's disk still in the chain
	FindDeepChain       = "deep-chain"       // depth over the threshold
	FindOldCheckpoint   = "old-checkpoint"   // checkpoint disk older than the threshold
	FindSavedState      = "saved-state"      // saved-state files holding RAM-sized space
	FindUnreadableDisk  = "unreadable-disk"  // a disk file that does not open
	FindMissingDisk     = "missing-disk"     // a config names a disk that is not there
	// FindMissingCheckpointDisk: a checkpoint config names a disk that is
	// not there (the checkpoint cannot be applied).
	FindMissingCheckpointDisk = "missing-checkpoint-disk"
	FindMergeNoSpace          = "merge-cannot-fit"     // a merge needs more than the volume has free
	FindPausedRisk            = "paused-critical-risk" // free space below what differencing disks can still grow
	FindLowSpace              = "low-space"            // free space below the thresholds
	FindUnfinishedOp          = "unfinished-operation" // an hvsnap merge/relocation journal next to the disks: interrupted (or running)
	// FindVMCXLogReplayed: a VMCX configuration held writes Hyper-V had
	// logged but not applied (the host stopped in between); it was read with
	// them replayed in memory (info).
	FindVMCXLogReplayed = "vmcx-log-replayed"
)

// Thresholds used for findings and verdicts.
type Thresholds struct {
	CriticalFree     int64 `json:"critical_free"`          // bytes; default 200 MiB (Hyper-V's pause point)
	WarningFree      int64 `json:"warning_free"`           // bytes; default 2 GiB
	DeepChain        int   `json:"deep_chain"`             // differencing layers; default 5
	OldCheckpointAge int64 `json:"old_checkpoint_seconds"` // default 30 days
	SavedStateMin    int64 `json:"saved_state_min"`        // bytes; default 64 MiB
}

// DefaultThresholds returns the defaults documented in the README.
func DefaultThresholds() Thresholds {
	return Thresholds{
		CriticalFree:     200 << 20,
		WarningFree:      2 << 30,
		DeepChain:        5,
		OldCheckpointAge: 30 * 24 * 3600,
		SavedStateMin:    64 << 20,
	}
}

// Report is the whole model.
type Report struct {
	Schema      int        `json:"schema"`
	GeneratedAt time.Time  `json:"generated_at"`
	Host        string     `json:"host"`
	Roots       []string   `json:"roots"`
	Thresholds  Thresholds `json:"thresholds"`
	Volumes     []*Volume  `json:"volumes"`
	VMs         []*VM      `json:"vms"`
	// Unattached: chains of disks that no VM config references.
	Unattached []*Tree      `json:"unattached"`
	Disks      []*Disk      `json:"disks"` // every disk file found, sorted by path
	StateFiles []*StateFile `json:"state_files"`
	Findings   []Finding    `json:"findings"`
	Warnings   []string     `json:"warnings"` // scan problems (unreadable configs, skipped folders)
	Summary    Summary      `json:"summary"`
}

// Summary are the headline numbers.
type Summary struct {
	VMs              int     `json:"vms"`
	Disks            int     `json:"disks"`
	DiskBytes        int64   `json:"disk_bytes"`        // allocated on the host by all disk files
	CheckpointBytes  int64   `json:"checkpoint_bytes"`  // allocated by differencing disks
	ReclaimableBytes int64   `json:"reclaimable_bytes"` // orphans + off-branch leaves
	Findings         int     `json:"findings"`
	Worst            Verdict `json:"worst"`
}

// Volume is one mounted file system holding files of the store.
type Volume struct {
	Mount   string   `json:"mount"`
	Device  string   `json:"device"`
	FSType  string   `json:"fstype"`
	Size    int64    `json:"size"`
	Free    int64    `json:"free"` // available to unprivileged writers
	Used    int64    `json:"used"`
	Verdict Verdict  `json:"verdict"`
	Reasons []string `json:"reasons"` // why the verdict, one sentence each
	// Disk files on this volume and the bytes they occupy on it.
	DiskFiles int   `json:"disk_files"`
	DiskBytes int64 `json:"disk_bytes"`
	// DiffGrowth: how much the differencing disks on this volume can still
	// grow (their fully allocated size minus their current size).
	DiffGrowth int64 `json:"diff_growth"`
	// MergeNeed: the largest peak extra space any merge on this volume needs
	// (a single link, or collapsing a whole chain).
	MergeNeed int64 `json:"merge_need"`
	// RelocationTargets: for critical volumes, other volumes with room for
	// the VMs stored here, most free first.
	RelocationTargets []string `json:"relocation_targets"`
}

// Disk is one disk file.
type Disk struct {
	Path        string    `json:"path"`
	Volume      string    `json:"volume"` // mount point
	Format      string    `json:"format"` // vhd | vhdx ("" when unreadable)
	Type        string    `json:"type"`   // fixed | dynamic | differencing
	VirtualSize int64     `json:"virtual_size"`
	FileSize    int64     `json:"file_size"`     // apparent size
	Allocated   int64     `json:"allocated"`     // bytes allocated on the host file system
	DataBytes   int64     `json:"data_bytes"`    // virtual bytes this layer holds
	MaxFileSize int64     `json:"max_file_size"` // size when every block is allocated
	ModTime     time.Time `json:"mtime"`
	// Parent: the resolved parent path ("" for a base disk or when broken).
	Parent      string   `json:"parent,omitempty"`
	ParentError string   `json:"parent_error,omitempty"`
	LinkageOK   bool     `json:"linkage_ok"`
	Children    []string `json:"children,omitempty"`
	Depth       int      `json:"depth"` // differencing layers above the base (base = 0)
	// MergeGrowth: bytes the parent grows if this disk is merged into it now
	// (0 for a fixed parent; -1 when unknown, e.g. the parent is missing).
	MergeGrowth int64 `json:"merge_growth"`
	// UsedBy: VM and checkpoint configs that name this disk.
	UsedBy []string `json:"used_by,omitempty"`
	// OnLiveChain: an ancestor of (or) a disk a VM currently writes to.
	OnLiveChain bool   `json:"on_live_chain"`
	Error       string `json:"error,omitempty"` // could not be opened
}

// StateFile is a saved-state or runtime-state file.
type StateFile struct {
	Path      string    `json:"path"`
	Volume    string    `json:"volume"`
	Kind      string    `json:"kind"` // vsv | bin | vmrs | vmgs
	VM        string    `json:"vm,omitempty"`
	Size      int64     `json:"size"`
	Allocated int64     `json:"allocated"`
	ModTime   time.Time `json:"mtime"`
}

// VM is one virtual machine and its storage.
type VM struct {
	ID               string       `json:"id"`
	Name             string       `json:"name"`
	ConfigPath       string       `json:"config_path"`
	ConfigKind       string       `json:"config_kind"` // xml | vmcx
	Generation       int          `json:"generation"`
	Version          string       `json:"version"`
	DiskMergePending bool         `json:"disk_merge_pending"`
	Drives           []Drive      `json:"drives"`
	Checkpoints      []Checkpoint `json:"checkpoints"`
	Chains           []*Tree      `json:"chains"` // one tree per base disk the VM's drives stand on
	Volumes          []string     `json:"volumes"`
	Allocated        int64        `json:"allocated"`   // all its disk and state files
	Reclaimable      int64        `json:"reclaimable"` // off-branch leaves (saved state: a saved-state finding, not counted)
	// MergeNeed: the most extra space any merge of its checkpoints needs now:
	// the largest single-link merge growth, or the peak while collapsing a
	// whole live chain into its base, whichever is larger.
	MergeNeed int64 `json:"merge_need"`
}

// Drive is an attached hard disk of a VM config.
type Drive struct {
	Location    string `json:"location"`     // e.g. "scsi0:1"
	WindowsPath string `json:"windows_path"` // as stored in the config
	Path        string `json:"path"`         // local path ("" when unresolved)
	Exists      bool   `json:"exists"`
}

// Checkpoint is a checkpoint config of a VM.
type Checkpoint struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	ConfigPath string   `json:"config_path"`
	Disks      []string `json:"disks"` // local paths of the disks it names
}

// Tree is a disk and the differencing disks that depend on it.
type Tree struct {
	Path     string  `json:"path"`
	Live     bool    `json:"live"` // on a chain a VM currently writes to
	Children []*Tree `json:"children,omitempty"`
}

// Finding is one problem or opportunity, with its evidence.
type Finding struct {
	Code     string         `json:"code"`
	Severity Severity       `json:"severity"`
	Message  string         `json:"message"`
	VM       string         `json:"vm,omitempty"` // VM name (ID in Evidence)
	Volume   string         `json:"volume,omitempty"`
	Paths    []string       `json:"paths,omitempty"`
	Bytes    int64          `json:"bytes,omitempty"` // bytes at stake (reclaimable, needed, missing)
	Evidence map[string]any `json:"evidence,omitempty"`
}
