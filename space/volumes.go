package space

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/disk"
)

// VolumeInfo is one mounted file system as the host reports it.
type VolumeInfo struct {
	Mount  string
	Device string
	FSType string
	Size   int64
	Free   int64 // available to unprivileged writers
	Used   int64
	// ReadOnly: mounted read-only (nothing can be written or relocated
	// there).
	ReadOnly bool
	// FSID identifies the file system (st_dev on Unix; "" when unknown):
	// bind mounts of one file system share it and share their free space,
	// so one is no relocation target for another.
	FSID string
}

// VolumeSource lists mounted file systems.
type VolumeSource interface {
	Volumes() ([]VolumeInfo, error)
}

// StaticVolumes is a fixed list of volumes (tests, or a saved host list).
type StaticVolumes []VolumeInfo

// Volumes returns a copy of the list.
func (s StaticVolumes) Volumes() ([]VolumeInfo, error) {
	return append([]VolumeInfo(nil), s...), nil
}

// HostVolumes lists this host's mounted file systems through gopsutil:
// every partition (pseudo file systems such as proc, sysfs or cgroup
// dropped; tmpfs kept), one entry per mount point (the one mounted last,
// which is the one visible), with its size and the free space available to
// unprivileged writers (statfs f_bavail; GetDiskFreeSpaceEx's
// FreeBytesAvailableToCaller on Windows). Mounts whose usage cannot be read
// in time (permission denied, dead network or FUSE mounts) are left out; the
// list is an error only when no volume could be measured.
func HostVolumes() VolumeSource { return hostVolumes{} }

type hostVolumes struct{}

// statTimeout bounds the usage query of one mount (a hung NFS server must
// not hang the analysis).
const statTimeout = 3 * time.Second

// pseudoFS are file systems that never hold a VM store.
var pseudoFS = map[string]bool{
	"proc": true, "sysfs": true, "cgroup": true, "cgroup2": true, "devpts": true,
	"mqueue": true, "securityfs": true, "debugfs": true, "tracefs": true,
	"pstore": true, "bpf": true, "autofs": true, "fusectl": true, "configfs": true,
	"hugetlbfs": true, "binfmt_misc": true, "nsfs": true, "devtmpfs": true,
	"efivarfs": true, "selinuxfs": true, "rpc_pipefs": true, "nfsd": true,
	"fuse.gvfsd-fuse": true, "fuse.portal": true,
}

// keepPartition decides whether a mount is a candidate volume.
func keepPartition(fstype, mount string) bool {
	if mount == "" || fstype == "" && runtime.GOOS != "windows" {
		return false
	}
	t := strings.ToLower(fstype)
	if pseudoFS[t] || strings.HasPrefix(t, "cgroup") {
		return false
	}
	if t == "overlay" && mount != "/" {
		return false // container layers; only a container's root counts
	}
	return true
}

func (hostVolumes) Volumes() ([]VolumeInfo, error) {
	parts, perr := disk.PartitionsWithContext(partitionsCtx(), true)
	if len(parts) == 0 {
		if perr == nil {
			perr = errors.New("none reported")
		}
		return nil, fmt.Errorf("list mounted file systems: %w", perr)
	}
	// One entry per mount point: the last mounted is the visible one.
	byMount := map[string]int{}
	var cands []VolumeInfo
	for _, p := range parts {
		m := normMount(p.Mountpoint)
		if !keepPartition(p.Fstype, m) {
			continue
		}
		v := VolumeInfo{Mount: m, Device: p.Device, FSType: p.Fstype}
		for _, o := range p.Opts {
			if o == "ro" {
				v.ReadOnly = true
			}
		}
		if i, ok := byMount[mountKey(m)]; ok {
			cands[i] = v
			continue
		}
		byMount[mountKey(m)] = len(cands)
		cands = append(cands, v)
	}

	// Usage, in parallel, each bounded by statTimeout.
	type res struct {
		i    int
		u    usageStat
		err  error
		done bool
	}
	ch := make(chan res, len(cands))
	for i := range cands {
		go func() {
			u, err := volumeUsage(cands[i].Mount)
			if err == nil {
				u.fsid = fsID(cands[i].Mount)
			}
			ch <- res{i: i, u: u, err: err, done: true}
		}()
	}
	got := make([]res, len(cands))
	timer := time.NewTimer(statTimeout)
	defer timer.Stop()
wait:
	for range cands {
		select {
		case r := <-ch:
			got[r.i] = r
		case <-timer.C:
			break wait
		}
	}
	var out []VolumeInfo
	var firstErr error
	for i, v := range cands {
		r := got[i]
		if !r.done || r.err != nil {
			if firstErr == nil {
				if r.err == nil {
					r.err = errors.New("timed out")
				}
				firstErr = fmt.Errorf("%s: %w", v.Mount, r.err)
			}
			continue
		}
		v.Size, v.Free, v.Used, v.FSID = r.u.size, r.u.free, r.u.used, r.u.fsid
		out = append(out, v)
	}
	if len(out) == 0 {
		if firstErr == nil {
			firstErr = errors.New("no file system reported")
		}
		return nil, fmt.Errorf("measure mounted file systems: %w", firstErr)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Mount < out[j].Mount })
	return out, nil
}

type usageStat struct {
	size, free, used int64
	fsid             string
}

// VolumeFor returns the volume holding path: the one whose mount point is
// the longest prefix of the path, after making it absolute and resolving the
// symbolic links of its deepest existing ancestor (so a path that does not
// exist yet maps to the volume it would be created on). On Windows,
// comparisons ignore case and `C:` is `C:\`.
func VolumeFor(vols []VolumeInfo, path string) (VolumeInfo, bool) {
	return pickVolume(vols, resolveExisting(path))
}

// VolumeIndex answers VolumeFor for many paths, resolving each folder once.
// It is safe for concurrent use.
type VolumeIndex struct {
	vols []VolumeInfo
	mu   sync.Mutex
	dirs map[string]string // absolute folder → resolved folder
	// byFS: FSID → index in vols of the only volume with that FSID (-1
	// when several share it: bind mounts, a mount point mounted over).
	byFS map[string]int
}

// NewVolumeIndex indexes vols.
func NewVolumeIndex(vols []VolumeInfo) *VolumeIndex {
	x := &VolumeIndex{vols: vols, dirs: map[string]string{}, byFS: map[string]int{}}
	for i, v := range vols {
		if v.FSID == "" {
			continue
		}
		if _, dup := x.byFS[v.FSID]; dup {
			x.byFS[v.FSID] = -1
		} else {
			x.byFS[v.FSID] = i
		}
	}
	return x
}

// ForFile is [VolumeIndex.For] for a file whose stat (following links) the
// caller has: when the file system it names (st_dev) is under exactly one
// volume, that volume, with no system call; otherwise (no stat, an unknown
// or shared file system, Windows) For(path).
func (x *VolumeIndex) ForFile(path string, fi os.FileInfo) (VolumeInfo, bool) {
	if fi != nil && len(x.byFS) > 0 {
		if id := statFSID(fi); id != "" {
			if i, ok := x.byFS[id]; ok && i >= 0 {
				return x.vols[i], true
			}
		}
	}
	return x.For(path)
}

// For is VolumeFor(vols, path) with the folder resolution cached. A path
// that is itself a symbolic link is resolved in full, uncached.
func (x *VolumeIndex) For(path string) (VolumeInfo, bool) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return VolumeFor(x.vols, path)
	}
	fi, err := os.Lstat(abs)
	if err != nil || fi.Mode()&os.ModeSymlink != 0 {
		return VolumeFor(x.vols, abs)
	}
	dir := filepath.Dir(abs)
	if dir == abs {
		return pickVolume(x.vols, resolveExisting(abs))
	}
	return pickVolume(x.vols, filepath.Join(x.resolveDir(dir), filepath.Base(abs)))
}

// resolveDir is resolveExisting(dir) for an absolute clean folder, cached.
// A folder that exists and is not a symbolic link resolves to its parent's
// resolution and its own name, so each folder costs one Lstat.
func (x *VolumeIndex) resolveDir(dir string) string {
	x.mu.Lock()
	r, ok := x.dirs[dir]
	x.mu.Unlock()
	if ok {
		return r
	}
	parent := filepath.Dir(dir)
	if fi, err := os.Lstat(dir); err == nil && fi.IsDir() && parent != dir {
		r = filepath.Join(x.resolveDir(parent), filepath.Base(dir))
	} else {
		r = resolveExisting(dir)
	}
	x.mu.Lock()
	x.dirs[dir] = r
	x.mu.Unlock()
	return r
}

// pickVolume returns the volume whose mount point is the longest prefix of
// the resolved absolute path p.
func pickVolume(vols []VolumeInfo, p string) (VolumeInfo, bool) {
	win := runtime.GOOS == "windows"
	best, bestLen := -1, -1
	for i, v := range vols {
		m := normMount(v.Mount)
		if underMount(p, m, win) && len(m) > bestLen {
			best, bestLen = i, len(m)
		}
	}
	if best < 0 {
		return VolumeInfo{}, false
	}
	return vols[best], true
}

// underMount reports whether path p lies on mount point m (both absolute
// and clean). win: case-insensitive, either separator.
func underMount(p, m string, win bool) bool {
	if win {
		p = strings.ToLower(strings.ReplaceAll(p, "/", `\`))
		m = strings.ToLower(strings.ReplaceAll(m, "/", `\`))
		if len(m) == 2 && m[1] == ':' {
			m += `\`
		}
		if len(p) == 2 && p[1] == ':' {
			p += `\`
		}
	}
	if m == "" || !strings.HasPrefix(p, m) {
		return false
	}
	if len(p) == len(m) {
		return true
	}
	last := m[len(m)-1]
	if last == '/' || win && last == '\\' {
		return true // the root ("/", `C:\`)
	}
	c := p[len(m)]
	return c == '/' || win && c == '\\'
}

// normMount cleans a mount point: `C:` → `C:\`, no trailing separator
// except on a root.
func normMount(m string) string {
	if m == "" {
		return ""
	}
	if runtime.GOOS == "windows" {
		m = strings.ReplaceAll(m, "/", `\`)
		if len(m) == 2 && m[1] == ':' {
			return strings.ToUpper(m[:1]) + `:\`
		}
		if len(m) > 3 {
			m = strings.TrimRight(m, `\`)
		}
		if len(m) >= 2 && m[1] == ':' {
			m = strings.ToUpper(m[:1]) + m[1:]
		}
		return m
	}
	return filepath.Clean(m)
}

// mountKey is the map key of a mount point (case-insensitive on Windows).
func mountKey(m string) string {
	if runtime.GOOS == "windows" {
		return strings.ToLower(m)
	}
	return m
}

// resolveExisting makes p absolute and resolves the symbolic links of its
// deepest existing ancestor; the part that does not exist is kept as is.
func resolveExisting(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		abs = filepath.Clean(p)
	}
	cur, rest := abs, ""
	for {
		if _, err := os.Lstat(cur); err == nil {
			if r, err := filepath.EvalSymlinks(cur); err == nil {
				if !filepath.IsAbs(r) {
					r, _ = filepath.Abs(r)
				}
				cur = r
			}
			break
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			break
		}
		if rest == "" {
			rest = filepath.Base(cur)
		} else {
			rest = filepath.Join(filepath.Base(cur), rest)
		}
		cur = parent
	}
	if rest == "" {
		return cur
	}
	return filepath.Join(cur, rest)
}
