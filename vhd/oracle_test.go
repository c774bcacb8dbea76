package vhd

// Shared test helpers: the independent readers used as oracles (qemu-img,
// libvhdi's vhdiinfo and vhdimount) and the real Windows samples. Tests that
// need a missing tool skip with a message saying what to install.

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needTool skips the test when a command is missing.
func needTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("oracle %s not installed (apt-get install %s, or run make test as root)", name, pkg)
	}
	return p
}

// runTool runs a command and returns its combined output, failing the test on error.
func runTool(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// qemuImg runs qemu-img (skipping when absent).
func qemuImg(t testing.TB, args ...string) string {
	t.Helper()
	needTool(t, "qemu-img", "qemu-utils")
	return runTool(t, "qemu-img", args...)
}

// vhdiinfo runs libvhdi's vhdiinfo and returns its "Key: value" lines
// (keys trimmed, e.g. "Disk type", "Media size", "Parent identifier").
func vhdiinfo(t testing.TB, path string) map[string]string {
	t.Helper()
	needTool(t, "vhdiinfo", "libvhdi-utils")
	out := runTool(t, "vhdiinfo", path)
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, ":")
		if i <= 0 {
			continue
		}
		k := strings.TrimSpace(line[:i])
		v := strings.TrimSpace(line[i+1:])
		if _, dup := m[k]; !dup {
			m[k] = v
		}
	}
	return m
}

// vhdimount mounts path with libvhdi through FUSE and returns the file that
// shows the whole chain (the highest-numbered vhdiN). It skips when FUSE is
// not usable. The mount is removed when the test ends.
func vhdimount(t testing.TB, path string) string {
	t.Helper()
	needTool(t, "vhdimount", "libvhdi-utils")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("FUSE not available (/dev/fuse missing): vhdimount oracle skipped")
	}
	fm := "fusermount"
	if _, err := exec.LookPath(fm); err != nil {
		fm = "fusermount3"
		needTool(t, fm, "fuse3")
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("vhdimount", path, mnt).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "fuse") && (strings.Contains(string(out), "ermission") || strings.Contains(string(out), "not permitted")) {
			t.Skipf("FUSE mount not permitted here: %s", out)
		}
		t.Fatalf("vhdimount %s: %v\n%s", path, err, out)
	}
	t.Cleanup(func() {
		for i := 0; i < 20; i++ {
			if exec.Command(fm, "-u", mnt).Run() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Still busy (a failed test left a file open): detach lazily.
		exec.Command(fm, "-u", "-z", mnt).Run()
	})
	var best string
	var bestN int
	for i := 0; i < 50 && best == ""; i++ {
		ents, _ := os.ReadDir(mnt)
		for _, e := range ents {
			var n int
			if _, err := fmtSscanf(e.Name(), "vhdi%d", &n); err == nil && n > bestN {
				best, bestN = filepath.Join(mnt, e.Name()), n
			}
		}
		if best == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if best == "" {
		t.Fatalf("vhdimount %s: no vhdiN file appeared", path)
	}
	return best
}

// sampleDir returns ../shared/testdata/windows (from the repository root),
// skipping when absent.
func sampleDir(t testing.TB) string {
	t.Helper()
	for _, rel := range []string{"../../shared/testdata/windows", "../shared/testdata/windows"} {
		if st, err := os.Stat(rel); err == nil && st.IsDir() {
			abs, _ := filepath.Abs(rel)
			return abs
		}
	}
	if d := os.Getenv("HVSNAP_SAMPLES"); d != "" {
		return d
	}
	t.Skip("real Windows samples not found (../shared/testdata/windows): skipped")
	return ""
}

// sample decompresses a .gz sample into the test's temp dir and returns the path.
func sample(t testing.TB, name string) string {
	t.Helper()
	src := filepath.Join(sampleDir(t), name+".gz")
	in, err := os.Open(src)
	if err != nil {
		t.Skipf("sample %s missing: %v", src, err)
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), name)
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}
