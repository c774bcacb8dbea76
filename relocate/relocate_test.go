package relocate

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hvsnap/hvsnap/internal/journal"
	"github.com/hvsnap/hvsnap/internal/lock"
	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

const crashEnv = "HVSNAP_RELOCATE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(crashEnv) == "1" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

const mib = 1 << 20

// store is a VM on a "source volume" (folder src) and a "target volume"
// (folder dst), with what every disk must read.
type store struct {
	src, dst string // volume roots
	vmDir    string
	to       string
	pm       vhd.PathMap
	bv       *storetest.BuiltVM
	live     string            // SHA-256 of the live disk
	cps      map[string]string // checkpoint name → SHA-256 of its disk
}

// newStore builds VM web under src/VMs: a base disk, a kept checkpoint,
// a deleted one whose disk still has to be merged (disk_merge_pending),
// live data on top, and saved state.
func newStore(t *testing.T, src, dst string) *store {
	t.Helper()
	bv, err := storetest.BuildVM(filepath.Join(src, "VMs"), storetest.VMSpec{Name: "web", Size: 16 * mib,
		BaseWriteBytes: 2 * mib, LiveWriteBytes: 2 * mib, DiskMergePending: true, SavedStateBytes: 2 * mib,
		CurrentAfter: storetest.LatestCheckpoint, Checkpoints: []storetest.CheckpointSpec{
			{Parent: -1, Name: "kept", WriteBytes: 1 * mib},
			{Parent: 0, Name: "deleted", WriteBytes: 1 * mib, Deleted: true}}})
	if err != nil {
		t.Fatal(err)
	}
	s := &store{src: src, dst: dst, vmDir: bv.Dir, to: filepath.Join(dst, "relocated"), bv: bv, cps: map[string]string{}}
	e, _ := vhd.ParsePathMapping(`E:\=` + dst)
	s.pm = append(append(vhd.PathMap{}, bv.PathMap...), e)
	if s.live, err = bv.LiveSHA256(); err != nil {
		t.Fatal(err)
	}
	for i, c := range bv.Spec.Checkpoints {
		if c.Deleted {
			continue
		}
		h, err := bv.ExpectedSHA256(bv.CheckpointDisks[i])
		if err != nil {
			t.Fatal(err)
		}
		s.cps[c.Name] = h
	}
	return s
}

func (s *store) opts(o Options) *Options {
	o.To = s.to
	o.PathMap = s.pm
	if o.Volumes == nil {
		o.Volumes = space.StaticVolumes{{Mount: s.src, Free: 1 << 40, Size: 1 << 41, FSID: "src"}, {Mount: s.dst, Free: 1 << 40, Size: 1 << 41, FSID: "dst"}}
	}
	return &o
}

// state reads the VM in dir: the live disk's content hash, each
// checkpoint's, and whether the config still says a merge is pending.
func (s *store) state(dir string) (live string, cps map[string]string, pending bool, err error) {
	st, err := vm.Scan([]string{dir}, vm.ScanOptions{PathMap: s.pm})
	if err != nil {
		return "", nil, false, err
	}
	if len(st.VMs) != 1 {
		return "", nil, false, fmt.Errorf("%s: %d VMs", dir, len(st.VMs))
	}
	v := st.VMs[0]
	d := v.Config.Disks
	if len(d) == 0 || !d[0].Exists {
		return "", nil, false, fmt.Errorf("%s: live disk not found: %+v", dir, d)
	}
	if !under(d[0].LocalPath, dir) {
		return "", nil, false, fmt.Errorf("%s: live disk %s is outside the folder", dir, d[0].LocalPath)
	}
	if live, err = storetest.ChainSHA256(d[0].LocalPath, s.pm); err != nil {
		return "", nil, false, err
	}
	cps = map[string]string{}
	for _, c := range v.Checkpoints {
		if len(c.Disks) == 0 || !c.Disks[0].Exists {
			return "", nil, false, fmt.Errorf("checkpoint %s: disk not found", c.Name)
		}
		if cps[c.Name], err = storetest.ChainSHA256(c.Disks[0].LocalPath, s.pm); err != nil {
			return "", nil, false, err
		}
	}
	return live, cps, v.Config.DiskMergePending, nil
}

// intact reports whether dir holds the whole VM, reading as built.
func (s *store) intact(dir string) error {
	live, cps, _, err := s.state(dir)
	if err != nil {
		return err
	}
	if live != s.live {
		return fmt.Errorf("%s: live disk reads %s, want %s", dir, live[:12], s.live[:12])
	}
	for n, h := range s.cps {
		if cps[n] != h {
			return fmt.Errorf("%s: checkpoint %q reads %q, want %s", dir, n, cps[n], h[:12])
		}
	}
	return nil
}

// leftovers lists hvsnap's temporary files and folders under the roots.
func leftovers(roots ...string) []string {
	var out []string
	for _, r := range roots {
		filepath.Walk(r, func(p string, fi os.FileInfo, err error) error {
			if err == nil && (strings.HasPrefix(fi.Name(), ".hvsnap-") || strings.HasSuffix(fi.Name(), ".hvsnap-partial") || journal.IsJournal(fi.Name())) {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

func checkClean(t *testing.T, dir string, pm vhd.PathMap) {
	t.Helper()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if _, ok := vhd.FormatFromExt(p); ok && err == nil && !fi.IsDir() {
			fs, err := vhd.Check(p, &vhd.Options{PathMap: pm})
			if err != nil || len(fs) > 0 {
				t.Errorf("check %s: %v %v", p, fs, err)
			}
		}
		return nil
	})
}

// final checks the end state of a relocation: the VM in want (merged:
// nothing pending), nothing elsewhere, no temporary files.
func (s *store) final(t *testing.T, want string, merged bool) {
	t.Helper()
	if err := s.intact(want); err != nil {
		t.Fatal(err)
	}
	_, _, pending, _ := s.state(want)
	other := s.vmDir
	if want == s.vmDir {
		other = filepath.Join(s.to, "web")
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Errorf("%s still exists (%v)", other, err)
	}
	if l := leftovers(s.src, s.dst); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
	checkClean(t, want, s.pm)
	rp, err := space.Analyze(t.Context(), []string{want}, space.Options{PathMap: s.pm, Volumes: space.StaticVolumes{{Mount: "/", Free: 1 << 40}}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(pendingRuns(rp, "web", s.bv.Spec.ID)); merged && (n != 0 || pending) {
		t.Errorf("after the merge: %d pending merges, disk_merge_pending %v", n, pending)
	} else if !merged && n == 0 {
		t.Errorf("without --merge the pending merge is gone")
	}
}

func TestRelocateMergeBack(t *testing.T) {
	for _, tc := range []struct {
		name         string
		merge, back  bool
		wantAtSource bool
	}{
		{"plain", false, false, false},
		{"merge", true, false, false},
		{"merge-back", true, true, true},
		{"back", false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, t.TempDir(), t.TempDir())
			o := s.opts(Options{Merge: tc.merge, Back: tc.back})
			var logs []string
			o.Log = func(l string) { logs = append(logs, l) }
			p, err := PlanRelocation(s.vmDir, o)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Files) != len(s.bv.Disks)+len(s.bv.StateFiles)+2 { // VM config + the kept checkpoint's
				t.Errorf("planned %d files: %+v", len(p.Files), p.Files)
			}
			if tc.merge && (len(p.Merges) != 1 || p.MergeGrowth <= 0) {
				t.Errorf("planned merges %+v", p.Merges)
			}
			if exists(s.to) {
				t.Fatal("planning created the target")
			}
			res, err := Run(p, o, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := filepath.Join(s.to, "web")
			if tc.wantAtSource {
				want = s.vmDir
			}
			if res.Location != want || res.MovedBack != tc.back {
				t.Errorf("result: location %s moved back %v", res.Location, res.MovedBack)
			}
			if tc.merge != (len(res.Merged) == 1) || tc.merge != res.ClearedMergePending {
				t.Errorf("merged %v, cleared flag %v", res.Merged, res.ClearedMergePending)
			}
			if len(logs) < 4 {
				t.Errorf("steps logged: %v", logs)
			}
			s.final(t, want, tc.merge)
			if tc.back && exists(s.to) {
				t.Errorf("%s (made by the relocation) is still there", s.to)
			}
		})
	}
}

// The checkpoint disks on another volume than the VM (paused-critical:
// Hyper-V's snapshot folder on a small volume) come along and are removed
// from there.
func TestRelocateDisksElsewhere(t *testing.T) {
	src, snap, dst := t.TempDir(), t.TempDir(), t.TempDir()
	s := newStore(t, src, dst)
	// Move the live disk to the snapshot volume and name it there.
	var live string
	for _, d := range s.bv.Disks {
		if d == s.bv.Leaf {
			live = d
		}
	}
	moved := filepath.Join(snap, "Snapshots", filepath.Base(live))
	os.MkdirAll(filepath.Dir(moved), 0o755)
	if err := os.Rename(live, moved); err != nil {
		t.Fatal(err)
	}
	sm, _ := vhd.ParsePathMapping(`S:\=` + snap)
	s.pm = append(s.pm, sm)
	if _, err := vm.RewriteXMLDiskPath(s.bv.ConfigPath, s.bv.WindowsPath[live], `S:\Snapshots\`+filepath.Base(live)); err != nil {
		t.Fatal(err)
	}
	if err := s.intact(s.vmDir); err == nil {
		t.Fatal("the VM folder alone should not hold the live disk now")
	}
	vols := space.StaticVolumes{{Mount: src, Free: 1 << 40, FSID: "a"}, {Mount: snap, Free: 1 << 30, FSID: "s"}, {Mount: dst, Free: 1 << 40, FSID: "b"}}
	o := s.opts(Options{Volumes: vols})
	p, err := PlanRelocation(s.vmDir, o)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range p.Files {
		found = found || (f.Source == moved && f.Volume == snap)
	}
	if !found {
		t.Fatalf("the live disk on the snapshot volume is not planned: %+v", p.Files)
	}
	if _, err := Run(p, o, nil); err != nil {
		t.Fatal(err)
	}
	s.final(t, filepath.Join(s.to, "web"), false)
	if exists(moved) {
		t.Error("the disk on the snapshot volume was not removed")
	}
}

func TestRelocateRefusals(t *testing.T) {
	t.Run("target too small", func(t *testing.T) {
		s := newStore(t, t.TempDir(), t.TempDir())
		o := s.opts(Options{Merge: true, Volumes: space.StaticVolumes{{Mount: "/", Free: 1 << 40}, {Mount: s.src, Free: 1 << 40}, {Mount: s.dst, Free: 10 * mib}}})
		_, err := PlanRelocation(s.vmDir, o)
		var ns *NoSpaceError
		if !errors.As(err, &ns) || !errors.Is(err, ErrNoSpace) || ns.Mount != s.dst || ns.Free != 10*mib || ns.Need <= ns.Free {
			t.Fatalf("err = %v", err)
		}
		for _, w := range []string{"0x80070070", "needs", "10.0 MiB", "volumes with room: /"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q lacks %q", err, w)
			}
		}
		if exists(s.to) {
			t.Error("refusal created the target")
		}
	})
	t.Run("in use", func(t *testing.T) {
		s := newStore(t, t.TempDir(), t.TempDir())
		o := s.opts(Options{})
		p, err := PlanRelocation(s.vmDir, o)
		if err != nil {
			t.Fatal(err)
		}
		l, err := lock.File(s.bv.Leaf)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Run(p, o, nil)
		l.Release()
		if !errors.Is(err, lock.ErrInUse) || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("err = %v", err)
		}
		if exists(s.to) {
			t.Error("refusal created the target")
		}
		if err := s.intact(s.vmDir); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unfinished operation", func(t *testing.T) {
		s := newStore(t, t.TempDir(), t.TempDir())
		o := s.opts(Options{})
		j, err := journal.Create(filepath.Dir(s.bv.Leaf), "merge", []string{s.bv.Leaf}, nil)
		if err != nil {
			t.Fatal(err)
		}
		j.Close()
		p, err := PlanRelocation(s.vmDir, o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Run(p, o, nil); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "merge --resume") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("usage", func(t *testing.T) {
		s := newStore(t, t.TempDir(), t.TempDir())
		for name, o := range map[string]*Options{
			"back+keep":   s.opts(Options{Back: true, KeepSource: true}),
			"no target":   {},
			"inside":      {To: filepath.Join(s.vmDir, "x")},
			"same volume": {To: filepath.Join(s.src, "elsewhere"), Volumes: space.StaticVolumes{{Mount: s.src, Free: 1 << 40}}},
		} {
			if _, err := PlanRelocation(s.vmDir, o); !errors.Is(err, ErrUsage) {
				t.Errorf("%s: err = %v", name, err)
			}
		}
		// --back with files in the VM folder that are not the VM's.
		os.WriteFile(filepath.Join(s.vmDir, "notes.txt"), []byte("mine"), 0o644)
		if _, err := PlanRelocation(s.vmDir, s.opts(Options{Back: true})); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "notes.txt") {
			t.Errorf("back with a stranger file: %v", err)
		}
		if _, err := PlanRelocation(filepath.Join(s.src, "nothing"), s.opts(Options{})); err == nil {
			t.Error("a missing folder was accepted")
		}
	})
}

// No room to move back: the VM stays at the target, verified and merged,
// the journal is finished, and the error says how to move it back later.
func TestRelocateNoRoomBack(t *testing.T) {
	s := newStore(t, t.TempDir(), t.TempDir())
	o := s.opts(Options{Merge: true, Back: true, Volumes: space.StaticVolumes{{Mount: s.src, Free: 1 * mib, FSID: "a"}, {Mount: s.dst, Free: 1 << 40, FSID: "b"}}})
	p, err := PlanRelocation(s.vmDir, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Volumes) != 2 || p.Volumes[1].Phase != "back" {
		t.Fatalf("volumes %+v", p.Volumes)
	}
	res, err := Run(p, o, nil)
	if !errors.Is(err, ErrNoRoomBack) || res == nil || res.BackRefused == "" || !strings.Contains(err.Error(), "hvsnap relocate "+filepath.Join(s.to, "web")) {
		t.Fatalf("err = %v, res %+v", err, res)
	}
	s.final(t, filepath.Join(s.to, "web"), true)
}

// ---- crash tests ------------------------------------------------------------

func crashChild() int {
	killAt, _ := strconv.Atoi(os.Getenv("KILL_AT"))
	var n atomic.Int64
	out := bufio.NewWriter(os.Stdout)
	hook := func(point string) {
		i := n.Add(1)
		fmt.Fprintf(out, "HOOK %d %s\n", i, point)
		if int(i) == killAt {
			fmt.Fprintf(out, "KILLME\n")
			out.Flush()
			time.Sleep(time.Hour)
		}
	}
	var pm vhd.PathMap
	for _, m := range strings.Split(os.Getenv("PATHMAP"), "\n") {
		if x, err := vhd.ParsePathMapping(m); err == nil {
			pm = append(pm, x)
		}
	}
	o := &Options{To: os.Getenv("TO"), Merge: true, Back: true, PathMap: pm, Hook: hook,
		Volumes: space.StaticVolumes{{Mount: os.Getenv("SRC"), Free: 1 << 40, FSID: "a"}, {Mount: os.Getenv("DST"), Free: 1 << 40, FSID: "b"}}}
	p, err := PlanRelocation(os.Getenv("VMDIR"), o)
	if err == nil {
		_, err = Run(p, o, nil)
	}
	fmt.Fprintf(out, "TOTAL %d\n", n.Load())
	out.Flush()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// runChild relocates s (--merge --back) in a child process, killed with
// SIGKILL at hook point killAt (0: not killed); returns the hook points.
func runChild(t *testing.T, s *store, killAt int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	var pms []string
	for _, m := range s.pm {
		pms = append(pms, m.String())
	}
	cmd.Env = append(os.Environ(), crashEnv+"=1", "KILL_AT="+strconv.Itoa(killAt), "VMDIR="+s.vmDir, "TO="+s.to,
		"SRC="+s.src, "DST="+s.dst, "PATHMAP="+strings.Join(pms, "\n"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var points []string
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "KILLME":
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		case strings.HasPrefix(line, "HOOK "):
			f := strings.SplitN(line, " ", 3)
			points = append(points, f[2])
		}
	}
	err = cmd.Wait()
	if killAt > 0 && !killed {
		t.Fatalf("child finished before hook point %d (saw %d): %v %s", killAt, len(points), err, stderr.String())
	}
	if killAt == 0 && err != nil {
		t.Fatalf("child relocation failed: %v\n%s", err, stderr.String())
	}
	return points
}

// TestRelocateCrashResume kills a relocation (--merge --back) with SIGKILL
// at every step of its own and at points spread over the merge, checks
// that a complete copy of the VM exists at that instant, resumes it, and
// checks the end state: the VM back in its folder, merged, reading as
// before, nothing left behind.
func TestRelocateCrashResume(t *testing.T) {
	if testing.Short() {
		t.Skip("crash tests run child processes")
	}
	s0 := newStore(t, t.TempDir(), t.TempDir())
	points := runChild(t, s0, 0)
	s0.final(t, s0.vmDir, true)
	var at []int
	var mergePts []int
	for i, p := range points {
		if strings.HasPrefix(p, "merge ") {
			mergePts = append(mergePts, i+1)
		} else {
			at = append(at, i+1)
		}
	}
	const spread = 12
	for k := 0; k < spread && len(mergePts) > 0; k++ {
		at = append(at, mergePts[k*(len(mergePts)-1)/max(spread-1, 1)])
	}
	sort.Ints(at)
	t.Logf("%d hook points (%d in the merge); killing at %d of them", len(points), len(mergePts), len(at))
	if len(at) < 20 {
		t.Fatalf("only %d kill points: %v", len(at), points)
	}
	for _, k := range uniq(at) {
		s := newStore(t, t.TempDir(), t.TempDir())
		runChild(t, s, k)
		// At this instant one complete copy exists.
		srcErr := s.intact(s.vmDir)
		if srcErr != nil {
			if dstErr := s.intact(filepath.Join(s.to, "web")); dstErr != nil {
				t.Fatalf("killed at %d (%s): no complete copy: source: %v; target: %v", k, points[k-1], srcErr, dstErr)
			}
		}
		o := s.opts(Options{})
		js, err := FindJournals(s.to, s.vmDir)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if len(js) == 0 {
			// Killed before the journal was made: nothing was changed;
			// start again.
			o.Merge, o.Back = true, true
			p, err := PlanRelocation(s.vmDir, o)
			if err != nil {
				t.Fatalf("killed at %d (%s), no journal, plan again: %v", k, points[k-1], err)
			}
			if _, err := Run(p, o, nil); err != nil {
				t.Fatalf("killed at %d (%s), no journal, run again: %v", k, points[k-1], err)
			}
		} else if _, err := Resume(js[0], o, nil); err != nil {
			t.Fatalf("killed at %d (%s): resume: %v", k, points[k-1], err)
		}
		s.final(t, s.vmDir, true)
		if t.Failed() {
			t.Fatalf("after the kill at %d (%s)", k, points[k-1])
		}
	}
}

func uniq(xs []int) []int {
	var out []int
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// ---- real small volumes (root) ----------------------------------------------

// A target volume too small for the VM is refused before anything is
// written, with the numbers (real tmpfs free space).
func TestRelocateTmpfsTargetTooSmall(t *testing.T) {
	src := storetest.MountTmpfs(t, "64m")
	dst := storetest.MountTmpfs(t, "8m")
	s := newStore(t, src, dst)
	o := s.opts(Options{Merge: true})
	o.Volumes = space.HostVolumes()
	_, err := PlanRelocation(s.vmDir, o)
	var ns *NoSpaceError
	if !errors.As(err, &ns) || ns.Mount != dst || ns.Need <= ns.Free || ns.Free > 8*mib {
		t.Fatalf("err = %v", err)
	}
	if ents, _ := os.ReadDir(dst); len(ents) != 0 {
		t.Errorf("the target volume was written: %v", ents)
	}
	if err := s.intact(s.vmDir); err != nil {
		t.Fatal(err)
	}
}

// The target fills up while the VM is copied (another writer takes the
// space): the relocation stops with the error, the source is untouched,
// and once space is freed the resumed relocation finishes.
func TestRelocateTmpfsENOSPC(t *testing.T) {
	src := storetest.MountTmpfs(t, "64m")
	dst := storetest.MountTmpfs(t, "96m")
	s := newStore(t, src, dst)
	o := s.opts(Options{Merge: true, Back: true})
	o.Volumes = space.HostVolumes()
	o.Margin = -1
	p, err := PlanRelocation(s.vmDir, o)
	if err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dst, "filler")
	o.Hook = func(pt string) {
		if pt == "start export" && !exists(filler) {
			// Leave about 1 MiB: less than the VM's files.
			var st syscall.Statfs_t
			syscall.Statfs(dst, &st)
			free := int64(st.Bavail) * int64(st.Bsize)
			f, _ := os.Create(filler)
			buf := make([]byte, mib)
			for i := range buf {
				buf[i] = 0xAA
			}
			for n := int64(0); n < free-mib; n += mib {
				f.Write(buf)
			}
			f.Close()
		}
	}
	_, err = Run(p, o, nil)
	if err == nil || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want ENOSPC", err)
	}
	if err := s.intact(s.vmDir); err != nil {
		t.Fatalf("after ENOSPC: %v", err)
	}
	os.Remove(filler)
	o.Hook = nil
	js, err := FindJournals(s.to, s.vmDir)
	if err != nil || len(js) != 1 {
		t.Fatalf("journals %v %v", js, err)
	}
	if _, err := Resume(js[0], o, nil); err != nil {
		t.Fatal(err)
	}
	s.final(t, s.vmDir, true)
}

// A copy that does not read back as it was read (a byte changed on the
// target between writing and verifying) is discarded: the source stays
// untouched and nothing is left on the target.
func TestRelocateDamagedCopy(t *testing.T) {
	s := newStore(t, t.TempDir(), t.TempDir())
	o := s.opts(Options{Merge: true})
	p, err := PlanRelocation(s.vmDir, o)
	if err != nil {
		t.Fatal(err)
	}
	o.Hook = func(pt string) {
		if pt != "start import" {
			return
		}
		disk := filepath.Join(p.Staging, p.Root, "Virtual Hard Disks", filepath.Base(s.bv.Base))
		f, err := os.OpenFile(disk, os.O_RDWR, 0)
		if err != nil {
			t.Errorf("damaging the copy: %v", err)
			return
		}
		b := make([]byte, 1)
		f.ReadAt(b, 1<<20+7)
		b[0] ^= 0xFF
		f.WriteAt(b, 1<<20+7)
		f.Close()
	}
	_, err = Run(p, o, nil)
	if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "CRC-32C mismatch") {
		t.Fatalf("err = %v", err)
	}
	if err := s.intact(s.vmDir); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(s.src, s.dst); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
	if exists(p.TargetVM) {
		t.Error("a damaged copy was committed")
	}
}
