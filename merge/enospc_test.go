package merge

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hvsnap/hvsnap/internal/storetest"
	"github.com/hvsnap/hvsnap/vhd"
)

// fillVolume writes a file that takes all but keep bytes of dir's volume.
func fillVolume(t *testing.T, dir, name string, keep int64) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for left := free - keep; left > 0; {
		n := min(left, int64(len(buf)))
		if _, err := f.Write(buf[:n]); err != nil {
			break // the volume is full: that is the point
		}
		left -= n
	}
	f.Sync()
	return p
}

// A real small volume: the merge is refused up front when the space is
// short, and when another writer takes the space mid-way it stops with the
// clear error, the chain reads the same, and resume finishes after space is
// freed.
func TestMergeENOSPC(t *testing.T) {
	vol := storetest.MountTmpfs(t, "64m")
	paths, models := buildChain(t, vol, []layerSpec{
		{"base.vhdx", vhd.CreateSpec{Format: vhd.FormatVHDX, Type: vhd.TypeDynamic, Size: 40 * MiB, BlockSize: 1 * MiB}, 2, false},
		{"c.avhdx", vhd.CreateSpec{BlockSize: 1 * MiB}, 0, false},
	}, 5)
	leaf := paths[1]
	// 16 MiB of data in 1 MiB pieces in the child.
	c, err := vhd.OpenChain(leaf, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MiB)
	for i := 0; i < 16; i++ {
		for j := range buf {
			buf[j] = byte(i*7 + j)
		}
		off := int64(i) * 2 * MiB
		if _, err := c.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
		copy(models[1].data[off:], buf)
	}
	c.Close()
	want := sha(models[1].data)

	// 1. Up front: free space below the growth → refused, nothing changed.
	filler := fillVolume(t, vol, "filler", 8*MiB)
	o := &Options{Roots: []string{vol}, Margin: -1}
	p, err := PlanMerge(leaf, o)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(p, o, nil)
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), vol) {
		t.Fatalf("up-front refusal: got %v", err)
	}
	if got := sha(chainBytes(t, leaf)); got != want {
		t.Fatal("refused merge changed the chain")
	}
	if js, _ := FindJournals(vol); len(js) != 0 {
		t.Fatalf("refused merge left a journal: %v", js)
	}
	os.Remove(filler)

	// 2. Mid-way: another writer takes the space after 3 chunks.
	o.Hook = func(point string) {
		if point == "copy-chunk:3" && filler == "" {
			filler = fillVolume(t, vol, "filler2", 0)
		}
	}
	filler = ""
	p, err = PlanMerge(leaf, o)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(p, o, nil)
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "0x80070070") {
		t.Fatalf("mid-way: got %v", err)
	}
	if filler == "" {
		t.Fatal("the filler never ran")
	}
	if got := sha(chainBytes(t, leaf)); got != want {
		t.Fatal("the chain reads differently after the failed merge")
	}
	js, err := FindJournals(vol)
	if err != nil || len(js) != 1 {
		t.Fatalf("journals after failure: %v %v", js, err)
	}
	// Resume while still full fails the same clean way.
	o.Hook = nil
	if _, err := Resume(js[0], o, nil); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("resume while full: %v", err)
	}
	if got := sha(chainBytes(t, leaf)); got != want {
		t.Fatal("the chain reads differently after the failed resume")
	}
	os.Remove(filler)
	if _, err := Resume(js[0], o, nil); err != nil {
		t.Fatalf("resume after freeing space: %v", err)
	}
	if got := sha(chainBytes(t, paths[0])); got != want {
		t.Fatal("merged base differs")
	}
	checkClean(t, paths[0])
	if _, err := os.Stat(leaf); !os.IsNotExist(err) {
		t.Fatal("merged child still there")
	}
}
