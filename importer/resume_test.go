package importer_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hvsnap/hvsnap/export"
	"github.com/hvsnap/hvsnap/importer"
	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/vhd"
)

// stallRep stops the process's progress (forever) once after bytes were
// reported, after printing READY: the parent test then kills it with
// SIGKILL, in the middle of a file.
type stallRep struct{ after, n int64 }

func (r *stallRep) Start(string, int64) {}
func (r *stallRep) Done()               {}
func (r *stallRep) Add(n int64) {
	r.n += n
	if r.n >= r.after {
		fmt.Println("READY")
		os.Stdout.Sync()
		time.Sleep(time.Hour)
	}
}

// childMain runs one export or import in a re-executed test binary
// (HVSNAP_TEST_CHILD=export|import), to be killed by the parent.
func childMain() int {
	after, _ := strconv.ParseInt(os.Getenv("HVSNAP_KILL_AFTER"), 10, 64)
	rep := &stallRep{after: after}
	src, to := os.Getenv("HVSNAP_SRC"), os.Getenv("HVSNAP_TO")
	var err error
	switch os.Getenv("HVSNAP_TEST_CHILD") {
	case "export":
		var pm vhd.PathMap
		if m := os.Getenv("HVSNAP_PATHMAP"); m != "" {
			pmm, _ := vhd.ParsePathMapping(m)
			pm = vhd.PathMap{pmm}
		}
		_, err = export.Export(src, export.Options{To: to, PathMap: pm}, rep)
	case "import":
		_, err = importer.Import(src, importer.Options{To: to}, rep)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("DONE")
	return 0
}

// killMidway runs the child and SIGKILLs it once it stalls.
func killMidway(t *testing.T, mode, src, to string, after int64, env ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{"HVSNAP_TEST_CHILD=" + mode, "HVSNAP_SRC=" + src, "HVSNAP_TO=" + to,
		"HVSNAP_KILL_AFTER=" + strconv.FormatInt(after, 10)}, env...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if strings.TrimSpace(s) != "READY" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child said %q before being killed", s)
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("child never reached the kill point")
	}
	cmd.Process.Kill() // SIGKILL
	cmd.Wait()
}

func resumeVM(t *testing.T, f vhd.Format) *storetest.BuiltVM {
	return build(t, t.TempDir(), storetest.VMSpec{Name: "rs", Format: f, Size: 64 * vhd.MiB, BaseWriteBytes: 12 * vhd.MiB,
		Checkpoints:  []storetest.CheckpointSpec{{Parent: -1, WriteBytes: 3 * vhd.MiB}, {Parent: 0, WriteBytes: 2 * vhd.MiB}},
		CurrentAfter: -1, LiveWriteBytes: vhd.MiB, SavedStateBytes: 2 * vhd.MiB})
}

// sameImport compares two imports of one package made at the same path:
// configurations and state byte for byte; disks by content through their
// chains, identity and parent locators (a VHDX relink writes a new random
// FileWriteGuid, so its header bytes differ by design).
func sameImport(t *testing.T, a, b string, res *importer.Result) {
	t.Helper()
	for _, f := range res.Manifest.Files {
		pa := filepath.Join(a, filepath.FromSlash(f.Path))
		pb := filepath.Join(b, filepath.FromSlash(f.Path))
		if f.Disk == nil {
			ba, err1 := os.ReadFile(pa)
			bb, err2 := os.ReadFile(pb)
			if err1 != nil || err2 != nil || string(ba) != string(bb) {
				t.Errorf("%s differs (%v %v)", f.Path, err1, err2)
			}
			continue
		}
		ia, err1 := vhd.Open(pa, &vhd.Options{ReadOnly: true})
		ib, err2 := vhd.Open(pb, &vhd.Options{ReadOnly: true})
		if err1 != nil || err2 != nil {
			t.Fatalf("%v %v", err1, err2)
		}
		na, nb := ia.Info(), ib.Info()
		na.Path, nb.Path, na.FileWriteGUID, nb.FileWriteGUID, na.LogGUID, nb.LogGUID = "", "", vhd.GUID{}, vhd.GUID{}, vhd.GUID{}, vhd.GUID{}
		if !reflect.DeepEqual(na, nb) || !reflect.DeepEqual(ia.Parent(), ib.Parent()) {
			t.Errorf("%s: %+v %+v / %+v %+v", f.Path, na, ia.Parent(), nb, ib.Parent())
		}
		ia.Close()
		ib.Close()
		ha, err1 := storetest.ChainSHA256(pa, nil)
		hb, err2 := storetest.ChainSHA256(pb, nil)
		if err1 != nil || err2 != nil || ha != hb {
			t.Errorf("%s reads differently (%v %v)", f.Path, err1, err2)
		}
	}
}

func TestImportKilledAndResumed(t *testing.T) {
	for _, f := range []vhd.Format{vhd.FormatVHDX, vhd.FormatVHD} {
		t.Run(string(f), func(t *testing.T) {
			bv := resumeVM(t, f)
			arch := filepath.Join(t.TempDir(), "rs.tar.lz4")
			mustExport(t, bv.Dir, export.Options{To: arch, PathMap: bv.PathMap})
			dest := t.TempDir()
			killMidway(t, "import", arch, dest, 9*vhd.MiB)
			// Nothing outside the staging folder.
			for _, g := range listDir(t, dest) {
				if !strings.HasPrefix(g, ".hvsnap-import-rs") {
					t.Fatalf("killed import left %s", g)
				}
			}
			if _, err := importer.Import(arch, importer.Options{To: dest}, nil); err == nil || !errors.Is(err, importer.ErrExists) || !strings.Contains(err.Error(), "--resume") {
				t.Fatalf("second import without --resume: %v", err)
			}
			res := mustImport(t, arch, importer.Options{To: dest, Resume: true})
			if res.Resumed == 0 {
				t.Errorf("nothing was kept from the interrupted import")
			}
			if got := listDir(t, dest); len(got) == 0 || strings.HasPrefix(got[0], ".hvsnap") {
				t.Errorf("after resume: %v", got)
			}
			checkImported(t, bv, res, false)
			// The same as an import that was never interrupted.
			moved := filepath.Join(t.TempDir(), "rs")
			if err := os.Rename(res.Path, moved); err != nil {
				t.Fatal(err)
			}
			clean := mustImport(t, arch, importer.Options{To: dest})
			sameImport(t, moved, clean.Path, clean)
		})
	}
}

func TestExportKilledAndResumed(t *testing.T) {
	bv := resumeVM(t, vhd.FormatVHDX)
	out := t.TempDir()
	killMidway(t, "export", bv.Dir, out, 10*vhd.MiB, "HVSNAP_PATHMAP="+storetest.WindowsRoot+"="+bv.Root)
	pkg := filepath.Join(out, "rs")
	if _, err := os.Stat(filepath.Join(pkg, "hvsnap-manifest.json")); err == nil {
		t.Fatal("killed export has a manifest")
	}
	if _, err := importer.Import(out, importer.Options{VerifyOnly: true}, nil); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("importing an unfinished export: %v", err)
	}
	if _, err := export.Export(bv.Dir, export.Options{To: out, PathMap: bv.PathMap}, nil); !errors.Is(err, export.ErrExists) {
		t.Fatalf("export into an unfinished one without --resume: %v", err)
	}
	res := mustExport(t, bv.Dir, export.Options{To: out, Resume: true, PathMap: bv.PathMap})
	if res.Resumed == 0 {
		t.Errorf("nothing kept from the interrupted export")
	}
	clean := mustExport(t, bv.Dir, export.Options{To: t.TempDir(), PathMap: bv.PathMap})
	a, b := fileSet(t, res.Package), fileSet(t, clean.Package)
	for _, m := range []map[string]string{a, b} {
		delete(m, "hvsnap-manifest.json")
	}
	for k, v := range b {
		if av := a[k]; strings.Fields(av)[0] != strings.Fields(v)[0] {
			t.Errorf("%s differs after resume", k)
		}
	}
	if len(a) != len(b) {
		t.Errorf("resumed package has %d files, clean %d: %v", len(a), len(b), listDir(t, res.Package))
	}
	for i := range clean.Manifest.Files {
		x, y := res.Manifest.Files[i], clean.Manifest.Files[i]
		if x.Path != y.Path || x.SHA256 != y.SHA256 || x.Size != y.Size || !reflect.DeepEqual(x.Disk, y.Disk) {
			t.Errorf("manifest entry %d: %+v vs %+v", i, x, y)
		}
	}
	ir := mustImport(t, res.Package, importer.Options{To: t.TempDir()})
	checkImported(t, bv, ir, false)
}
