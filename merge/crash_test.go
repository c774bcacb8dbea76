package merge

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hvsnap/hvsnap/vhd"
)

// The crash tests re-run this test binary as a child process that merges
// and reports every hook point (journal steps, copied chunks, and every
// write or flush to any disk file) on stdout. At the chosen point it stops
// and waits; the parent test kills it with SIGKILL, checks that the chain
// still reads as before, resumes, and checks again.

const crashEnv = "HVSNAP_MERGE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(crashEnv) == "1" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

// countingFile reports each write and flush as a hook point.
type countingFile struct {
	vhd.File
	hook func(string)
}

func (f countingFile) WriteAt(p []byte, off int64) (int, error) {
	f.hook("write " + filepath.Base(f.Name()))
	return f.File.WriteAt(p, off)
}

func (f countingFile) Sync() error {
	f.hook("sync " + filepath.Base(f.Name()))
	return f.File.Sync()
}

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
	o := &Options{Volumes: bigVolumes, Roots: []string{os.Getenv("ROOT")}, Into: os.Getenv("INTO"), Hook: hook,
		Wrap: func(f vhd.File) vhd.File { return countingFile{File: f, hook: hook} }}
	p, err := PlanMerge(os.Getenv("DISK"), o)
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

// runCrashChild runs the merge in a child process and kills it with
// SIGKILL at hook point killAt (0: let it finish). It returns the number of
// hook points seen.
func runCrashChild(t *testing.T, dir, disk, into string, killAt int) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"=1", "KILL_AT="+strconv.Itoa(killAt), "DISK="+disk, "INTO="+into, "ROOT="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	seen := 0
	killed := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "KILLME":
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		case strings.HasPrefix(line, "HOOK "):
			seen++
		case strings.HasPrefix(line, "TOTAL "):
			seen, _ = strconv.Atoi(strings.TrimPrefix(line, "TOTAL "))
		}
	}
	err = cmd.Wait()
	if killAt > 0 && !killed {
		t.Fatalf("child finished before hook point %d (saw %d): %v %s", killAt, seen, err, stderr.String())
	}
	if killAt == 0 && err != nil {
		t.Fatalf("child merge failed: %v\n%s", err, stderr.String())
	}
	return seen
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
	}
}

func TestMergeCrashResume(t *testing.T) {
	if testing.Short() {
		t.Skip("crash tests run child processes")
	}
	cases := []struct {
		name   string
		layers []layerSpec
		into   int // -1: the leaf's parent
	}{
		{"vhdx", []layerSpec{
			{"base.vhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 24 * MiB, BlockSize: 1 * MiB}, 8, false},
			{"c.avhdx", vhd.CreateSpec{BlockSize: 2 * MiB}, 12, false},
		}, -1},
		{"vhd", []layerSpec{
			{"base.vhd", vhd.CreateSpec{Format: vhd.FormatVHD, Type: vhd.TypeDynamic, Size: 24 * MiB, BlockSize: 2 * MiB}, 8, false},
			{"c.avhd", vhd.CreateSpec{BlockSize: 512 << 10}, 12, false},
		}, -1},
		{"vhdx-chain", []layerSpec{
			{"base.vhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 24 * MiB, BlockSize: 2 * MiB}, 6, false},
			{"a.avhdx", vhd.CreateSpec{BlockSize: 1 * MiB}, 6, false},
			{"c.avhdx", vhd.CreateSpec{BlockSize: 2 * MiB}, 6, false},
		}, 0},
	}
	for ci, tc := range cases {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			tmpl := t.TempDir()
			paths, models := buildChain(t, tmpl, tc.layers, int64(100+ci))
			leaf := paths[len(paths)-1]
			// A grandchild: the disk the VM runs on; its view must never change.
			gcName := "gc" + filepath.Ext(leaf)
			if im, err := vhd.Create(filepath.Join(tmpl, gcName), fillSpec(gcName, vhd.CreateSpec{Parent: leaf}), nil); err != nil {
				t.Fatal(err)
			} else {
				im.Close()
			}
			want := sha(models[len(models)-1].data)
			into := ""
			if tc.into >= 0 {
				into = filepath.Base(paths[tc.into])
			}
			// A full run counts the hook points.
			dir0 := t.TempDir()
			copyDir(t, tmpl, dir0)
			total := runCrashChild(t, dir0, filepath.Join(dir0, filepath.Base(leaf)), joinIf(dir0, into), 0)
			if got := sha(chainBytes(t, filepath.Join(dir0, gcName))); got != want {
				t.Fatal("uninterrupted merge changed the content")
			}
			t.Logf("%d hook points", total)
			if total < 20 {
				t.Fatalf("only %d hook points", total)
			}
			// Kill at 24 points spread over the whole run (first and last included).
			const kills = 24
			for k := 0; k < kills; k++ {
				at := 1 + k*(total-1)/(kills-1)
				dir := t.TempDir()
				copyDir(t, tmpl, dir)
				runCrashChild(t, dir, filepath.Join(dir, filepath.Base(leaf)), joinIf(dir, into), at)
				gc := filepath.Join(dir, gcName)
				if got := sha(chainBytes(t, gc)); got != want {
					t.Fatalf("killed at point %d/%d: the chain reads differently before resume", at, total)
				}
				js, err := FindJournals(dir)
				if err != nil {
					t.Fatal(err)
				}
				o := &Options{Volumes: bigVolumes}
				for _, j := range js {
					if _, err := Resume(j, o, nil); err != nil {
						t.Fatalf("killed at point %d/%d: resume: %v", at, total, err)
					}
				}
				if len(js) == 0 {
					// Killed before the journal existed: nothing was changed; merge again.
					p, err := PlanMerge(filepath.Join(dir, filepath.Base(leaf)), &Options{Volumes: bigVolumes, Into: joinIf(dir, into), Roots: []string{dir}})
					if err != nil {
						t.Fatalf("killed at point %d/%d (no journal): plan: %v", at, total, err)
					}
					if _, err := Run(p, o, nil); err != nil {
						t.Fatalf("killed at point %d/%d (no journal): run: %v", at, total, err)
					}
				}
				if got := sha(chainBytes(t, gc)); got != want {
					t.Fatalf("killed at point %d/%d: the chain reads differently after resume", at, total)
				}
				checkClean(t, gc)
				ch, err := vhd.OpenChain(gc, &vhd.Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				wantLayers := len(paths) // the grandchild, minus the merged disk
				if tc.into >= 0 {
					wantLayers = tc.into + 2
				}
				if n := len(ch.Layers); n != wantLayers {
					t.Errorf("killed at point %d/%d: chain has %d layers after resume", at, total, n)
				}
				ch.Close()
				if _, err := os.Stat(filepath.Join(dir, filepath.Base(leaf))); !os.IsNotExist(err) {
					t.Errorf("killed at point %d/%d: merged file still there after resume", at, total)
				}
				if left, _ := filepath.Glob(filepath.Join(dir, ".hvsnap-*")); len(left) > 0 {
					t.Errorf("killed at point %d/%d: left behind %v", at, total, left)
				}
			}
		})
	}
}

func joinIf(dir, name string) string {
	if name == "" {
		return ""
	}
	return filepath.Join(dir, name)
}
