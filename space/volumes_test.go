package space

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/hvsnap/hvsnap/internal/storetest"
)

func realTempDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestVolumeForLongestPrefix(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix paths")
	}
	vols := StaticVolumes{
		{Mount: "/", FSType: "ext4"},
		{Mount: "/nonexistent-hvsnap/d", FSType: "xfs"},
		{Mount: "/nonexistent-hvsnap/dd/", FSType: "tmpfs"},
		{Mount: "/nonexistent-hvsnap/d/e/f", FSType: "nfs"},
	}
	list, _ := vols.Volumes()
	for path, want := range map[string]string{
		"/nonexistent-hvsnap/d/VMs/a.vhdx":       "/nonexistent-hvsnap/d",
		"/nonexistent-hvsnap/d":                  "/nonexistent-hvsnap/d",
		"/nonexistent-hvsnap/dd/x":               "/nonexistent-hvsnap/dd/",
		"/nonexistent-hvsnap/ddd/x":              "/",
		"/nonexistent-hvsnap/d/e/f/g":            "/nonexistent-hvsnap/d/e/f",
		"/nonexistent-hvsnap/d/e/fg":             "/nonexistent-hvsnap/d",
		"/nonexistent-hvsnap/d/./e/../e/f/x.vhd": "/nonexistent-hvsnap/d/e/f",
		"/":                                      "/",
	} {
		v, ok := VolumeFor(list, path)
		if !ok || v.Mount != want {
			t.Errorf("VolumeFor(%s) = %q %v, want %q", path, v.Mount, ok, want)
		}
	}
	if _, ok := VolumeFor(list[1:], "/elsewhere/x"); ok {
		t.Error("a path on no listed volume was mapped")
	}
	// StaticVolumes hands out copies.
	list[0].Mount = "changed"
	if again, _ := vols.Volumes(); again[0].Mount != "/" {
		t.Error("StaticVolumes shares its backing array")
	}
}

func TestVolumeForRelativeAndSymlinks(t *testing.T) {
	base := realTempDir(t)
	a, b := filepath.Join(base, "a"), filepath.Join(base, "b")
	os.MkdirAll(filepath.Join(a, "sub"), 0o755)
	os.MkdirAll(filepath.Join(b, "VMs"), 0o755)
	os.WriteFile(filepath.Join(b, "VMs", "disk.vhdx"), []byte("x"), 0o644)
	if err := os.Symlink(filepath.Join(b, "VMs"), filepath.Join(a, "link")); err != nil {
		t.Skip("no symlinks:", err)
	}
	os.Symlink(filepath.Join(b, "VMs", "disk.vhdx"), filepath.Join(a, "sub", "file-link.vhdx"))
	vols := []VolumeInfo{{Mount: filepath.Dir(base)}, {Mount: a}, {Mount: b}}
	idx := NewVolumeIndex(vols)
	for path, want := range map[string]string{
		filepath.Join(a, "sub", "x.vhdx"):                     a,
		filepath.Join(a, "link", "disk.vhdx"):                 b, // folder link
		filepath.Join(a, "link", "new", "deeper", "x"):        b, // does not exist yet
		filepath.Join(a, "sub", "file-link.vhdx"):             b, // file link
		filepath.Join(a, "sub", "..", "link", "x.avhdx"):      b,
		filepath.Join(base, "c", "nothing", "here.vhdx"):      filepath.Dir(base),
		filepath.Join(b, "VMs", "disk.vhdx"):                  b,
		filepath.Join(a, "link", "..", "sub", "x.avhdx"):      a, // lexical, as filepath.Abs cleans first
		filepath.Join(a, "link") + string(filepath.Separator): b,
	} {
		v, ok := VolumeFor(vols, path)
		if !ok || v.Mount != want {
			t.Errorf("VolumeFor(%s) = %q, want %q", path, v.Mount, want)
		}
		v, ok = idx.For(path)
		if !ok || v.Mount != want {
			t.Errorf("VolumeIndex.For(%s) = %q, want %q", path, v.Mount, want)
		}
	}
	// Relative paths are taken from the working directory.
	t.Chdir(filepath.Join(a, "link"))
	if v, _ := VolumeFor(vols, "disk.vhdx"); v.Mount != b {
		t.Errorf("relative path on %q", v.Mount)
	}
}

func TestVolumeUnderMountWindows(t *testing.T) {
	for _, c := range []struct {
		p, m string
		want bool
	}{
		{`C:\VMs\a.vhdx`, `C:\`, true},
		{`c:\VMs\a.vhdx`, `C:`, true},
		{`C:\VMs\a.vhdx`, `c:\vms`, true},
		{`C:\VMs`, `C:\VMs`, true},
		{`C:\VMs2\a.vhdx`, `C:\VMs`, false},
		{`D:\VMs\a.vhdx`, `C:\`, false},
		{`C:`, `C:\`, true},
		{`C:/VMs/x`, `C:\VMs`, true},
		{`C:\mnt\vol1\x.vhdx`, `C:\mnt\vol1`, true},
	} {
		if got := underMount(c.p, c.m, true); got != c.want {
			t.Errorf("underMount(%q, %q) = %v", c.p, c.m, got)
		}
	}
	// Longest prefix wins between C:\ and a folder mount.
	vols := []VolumeInfo{{Mount: `C:\`}, {Mount: `C:\ClusterStorage\Volume1`}}
	best, bestLen := "", -1
	for _, v := range vols {
		if underMount(`c:\clusterstorage\volume1\VMs\x.avhdx`, v.Mount, true) && len(v.Mount) > bestLen {
			best, bestLen = v.Mount, len(v.Mount)
		}
	}
	if best != `C:\ClusterStorage\Volume1` {
		t.Errorf("best %q", best)
	}
	if !underMount("/a/b", "/", false) || underMount("/ab", "/a", false) || !underMount("/a", "/a", false) || underMount("/A/b", "/a", false) {
		t.Error("unix prefix rules")
	}
}

func TestVolumeKeepPartition(t *testing.T) {
	for _, c := range []struct {
		fs, m string
		want  bool
	}{
		{"ext4", "/", true}, {"tmpfs", "/dev/shm", true}, {"xfs", "/srv", true}, {"ntfs3", "/mnt/c", true},
		{"proc", "/proc", false}, {"sysfs", "/sys", false}, {"cgroup2", "/sys/fs/cgroup", false},
		{"cgroup", "/sys/fs/cgroup/cpu", false}, {"devpts", "/dev/pts", false}, {"mqueue", "/dev/mqueue", false},
		{"nsfs", "/run/netns/x", false}, {"overlay", "/", true}, {"overlay", "/var/lib/docker/overlay2/x/merged", false},
		{"binfmt_misc", "/proc/sys/fs/binfmt_misc", false}, {"autofs", "/mnt/auto", false},
	} {
		if got := keepPartition(c.fs, c.m); got != c.want {
			t.Errorf("keepPartition(%s, %s) = %v", c.fs, c.m, got)
		}
	}
}

func TestVolumeHostList(t *testing.T) {
	vols, err := HostVolumes().Volumes()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, v := range vols {
		if seen[v.Mount] {
			t.Errorf("mount point %s listed twice", v.Mount)
		}
		seen[v.Mount] = true
		if !keepPartition(v.FSType, v.Mount) {
			t.Errorf("pseudo file system listed: %+v", v)
		}
		if v.Size < 0 || v.Free < 0 || v.Free > v.Size && v.Size > 0 {
			t.Errorf("bad sizes: %+v", v)
		}
	}
	dir := t.TempDir()
	if v, ok := VolumeFor(vols, filepath.Join(dir, "x.vhdx")); !ok || v.Size <= 0 {
		t.Errorf("temp dir %s on no volume (%+v) of %+v", dir, v, vols)
	}
}

// TestVolumeTmpfs checks the host list against real small volumes: the
// exact size of a tmpfs mount, its free space before and after a write, and
// that files (also through links) map to it.
func TestVolumeTmpfs(t *testing.T) {
	small := storetest.MountTmpfs(t, "64m")
	other := storetest.MountTmpfs(t, "16m")
	find := func(mount string) VolumeInfo {
		t.Helper()
		vols, err := HostVolumes().Volumes()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vols {
			if v.Mount == mount {
				return v
			}
		}
		t.Fatalf("HostVolumes does not list %s: %+v", mount, vols)
		return VolumeInfo{}
	}
	v := find(small)
	if v.FSType != "tmpfs" || v.Device != "hvsnap-test" || v.Size != 64<<20 || v.Free != 64<<20 || v.Used != 0 || v.ReadOnly {
		t.Errorf("fresh tmpfs: %+v", v)
	}
	// Write 10 MiB: free space drops by exactly that much.
	dir := filepath.Join(small, "VMs", "a", "Virtual Hard Disks")
	os.MkdirAll(dir, 0o755)
	file := filepath.Join(dir, "a.vhdx")
	if err := os.WriteFile(file, make([]byte, 10<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	v = find(small)
	if v.Size != 64<<20 || v.Free != 54<<20 || v.Used != 10<<20 {
		t.Errorf("after a 10 MiB write: %+v", v)
	}
	if o := find(other); o.Size != 16<<20 || o.Free != 16<<20 || o.FSID == "" || o.FSID == v.FSID {
		t.Errorf("second tmpfs: %+v (first %s)", o, v.FSID)
	}
	vols, _ := HostVolumes().Volumes()
	idx := NewVolumeIndex(vols)
	link := filepath.Join(other, "link.vhdx")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		file:                                small,
		filepath.Join(dir, "new.avhdx"):     small,
		filepath.Join(small, "x", "y", "z"): small,
		link:                                small, // the link's target is what occupies space
		filepath.Join(other, "x.vhdx"):      other,
	} {
		if got, ok := VolumeFor(vols, path); !ok || got.Mount != want {
			t.Errorf("VolumeFor(%s) = %q, want %q", path, got.Mount, want)
		}
		if got, ok := idx.For(path); !ok || got.Mount != want {
			t.Errorf("VolumeIndex.For(%s) = %q, want %q", path, got.Mount, want)
		}
	}
	// A VM built on it maps every file to it.
	bv, err := storetest.BuildVM(small, storetest.VMSpec{Name: "vm", Size: 8 << 20, BlockSize: 1 << 20,
		Checkpoints: []storetest.CheckpointSpec{{Parent: -1}}, CurrentAfter: storetest.LatestCheckpoint})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append(bv.Disks, bv.ConfigPath) {
		if got, _ := idx.For(d); got.Mount != small {
			t.Errorf("%s on %q", d, got.Mount)
		}
	}
}

func TestSystemMount(t *testing.T) {
	for m, want := range map[string]bool{"/dev/shm": true, "/run": true, "/run/user/0": true, "/sys/fs/cgroup": true,
		"/boot/efi": true, "/": false, "/mnt/e": false, "/devices": false, "/srv/run": false} {
		if got := SystemMount(m); got != want {
			t.Errorf("SystemMount(%q) = %v, want %v", m, got, want)
		}
	}
}

// ForFile takes the volume from the file's st_dev when exactly one volume
// has that file system, and falls back to the path otherwise.
func TestVolumeForFileByDevice(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no st_dev on Windows: ForFile is For")
	}
	dir := realTempDir(t)
	p := filepath.Join(dir, "a.vhdx")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	id := statFSID(fi)
	if id == "" {
		t.Fatal("statFSID gave nothing for a regular file")
	}
	// dir is listed as a volume of another file system: the path says dir,
	// the device says "/".
	vols := []VolumeInfo{{Mount: "/", FSID: id}, {Mount: dir, FSID: "other"}}
	if v, ok := NewVolumeIndex(vols).ForFile(p, fi); !ok || v.Mount != "/" {
		t.Errorf("by device: got %q %v, want /", v.Mount, ok)
	}
	if v, ok := NewVolumeIndex(vols).ForFile(p, nil); !ok || v.Mount != dir {
		t.Errorf("without a stat: got %q %v, want %s (the path)", v.Mount, ok, dir)
	}
	// Two volumes on the file system (a bind mount): the path decides.
	vols[1].FSID = id
	if v, ok := NewVolumeIndex(vols).ForFile(p, fi); !ok || v.Mount != dir {
		t.Errorf("shared file system: got %q %v, want %s (the path)", v.Mount, ok, dir)
	}
	// No volume has the file system: the path decides.
	vols[0].FSID, vols[1].FSID = "x", "y"
	if v, ok := NewVolumeIndex(vols).ForFile(p, fi); !ok || v.Mount != dir {
		t.Errorf("unknown file system: got %q %v, want %s (the path)", v.Mount, ok, dir)
	}
}
