package vm

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// logWrite is one write for withReplayLog to log: data for file offset off.
type logWrite struct {
	off  int64
	data []byte
}

// replayLogAt is where withReplayLog puts the log for a file of n bytes, and
// where the log ends, for writes of total bytes.
func replayLogAt(n int, writes []logWrite) (off, end int64) {
	total := 0
	for _, w := range writes {
		total += len(w.data)
	}
	off = int64(align(n, bPage))
	return off, off + bPage + int64(align(total, bPage))
}

// withReplayLog returns data with a new replay log appended on the next
// 4 KiB boundary — a header page with room for 145 entries, then the data
// from log offset 0x1000, packed — holding writes as outstanding entries,
// and both file headers pointing at it: what a file looks like when Hyper-V
// logged these writes and stopped before it applied them in place.
func withReplayLog(data []byte, writes []logWrite) []byte {
	logOff, logEnd := replayLogAt(len(data), writes)
	out := make([]byte, logEnd)
	copy(out, data)
	log := out[logOff:]
	le.PutUint32(log[0:], vmcxReplayLogSignature)
	le.PutUint32(log[8:], uint32(len(writes)))
	le.PutUint32(log[13:], 145)
	pos := bPage
	for i, w := range writes {
		e := log[vmcxReplayLogHeaderLen+i*vmcxReplayEntryLen:]
		le.PutUint64(e[0:], uint64(w.off))
		le.PutUint32(e[8:], uint32(len(w.data)))
		le.PutUint32(e[12:], uint32(pos))
		le.PutUint32(e[24:], crc32.ChecksumIEEE(w.data))
		resumReplayEntry(out, logOff, i)
		copy(log[pos:], w.data)
		pos += len(w.data)
	}
	resumReplayLog(out, logOff)
	for _, h := range []int64{vmcxHeader1Offset, vmcxHeader2Offset} {
		le.PutUint64(out[h+26:], uint64(logOff))
		le.PutUint64(out[h+34:], uint64(logEnd-logOff))
		resumHeader(out, h)
	}
	return out
}

func resumReplayLog(data []byte, logOff int64) {
	h := data[logOff : logOff+vmcxReplayLogHeaderLen]
	le.PutUint32(h[4:], vmcxReplayLogChecksum(h))
}

func resumReplayEntry(data []byte, logOff int64, i int) {
	e := data[logOff+vmcxReplayLogHeaderLen+int64(i)*vmcxReplayEntryLen:]
	le.PutUint32(e[20:], vmcxReplayEntryChecksum(e))
}

// activeLog is the replay log offset of the active (first) header.
func activeLog(data []byte) int64 { return int64(le.Uint64(data[26:])) }

// renamedPair builds the test container twice, as named "Rescue Me" (old)
// and "Rescue It" (new, the same layout), and returns both with the new
// file's key tables that differ from the old's, as logWrites.
func renamedPair(t *testing.T) (old, cur *builtVMCX, changed []logWrite) {
	t.Helper()
	tree := func(name string) *tkey {
		root := testTree()
		root.find("properties/name").s = name
		return root
	}
	old = buildVMCX(t, tree("Rescue Me"), vmcxBuildOpts{maxPerTable: 12})
	cur = buildVMCX(t, tree("Rescue It"), vmcxBuildOpts{maxPerTable: 12})
	if len(old.data) != len(cur.data) || !reflect.DeepEqual(old.tables, cur.tables) {
		t.Fatal("the two builds have different layouts")
	}
	for _, off := range cur.tables {
		if !bytes.Equal(old.data[off:off+bPage], cur.data[off:off+bPage]) {
			changed = append(changed, logWrite{off, append([]byte(nil), cur.data[off:off+bPage]...)})
		}
	}
	if len(changed) == 0 {
		t.Fatal("the rename changed no key table")
	}
	return old, cur, changed
}

func nameOf(c *Container) string {
	return c.Root("configuration").Lookup("properties/name").String()
}

func mustRead(t *testing.T, data []byte) *Container {
	t.Helper()
	c, err := readBuilt(data, true)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// An outstanding replay log is applied before the key tables are read: the
// old state in place plus the log reads as the new state, in strict mode,
// without warnings; the file is not written.
func TestVMCXReplay(t *testing.T) {
	old, cur, changed := renamedPair(t)
	want := mustRead(t, cur.data)
	crashed := withReplayLog(old.data, changed)
	before := append([]byte(nil), crashed...)
	c := mustRead(t, crashed)
	if !c.LogReplayed || c.ReplayLogEntries != uint32(len(changed)) || c.PossiblyInconsistent || len(c.Warnings) != 0 {
		t.Fatalf("replayed=%v entries=%d inconsistent=%v warnings=%q", c.LogReplayed, c.ReplayLogEntries, c.PossiblyInconsistent, c.Warnings)
	}
	if nameOf(c) != "Rescue It" || !reflect.DeepEqual(c.Roots, want.Roots) {
		t.Errorf("replayed tree differs from the new state (name %q)", nameOf(c))
	}
	if !bytes.Equal(crashed, before) {
		t.Error("reading changed the data")
	}
	// The same log with its count reset (what Hyper-V leaves once the
	// writes are in place): nothing is replayed.
	done := append([]byte(nil), crashed...)
	le.PutUint32(done[activeLog(done)+8:], 0)
	resumReplayLog(done, activeLog(done))
	if c := mustRead(t, done); c.LogReplayed || nameOf(c) != "Rescue Me" {
		t.Errorf("count 0: replayed=%v name %q", c.LogReplayed, nameOf(c))
	}

	// Writes apply in log order: a later write to the same bytes wins.
	junk := logWrite{changed[0].off, bytes.Repeat([]byte{0xEE}, 64)}
	if c := mustRead(t, withReplayLog(old.data, append([]logWrite{junk}, changed...))); !reflect.DeepEqual(c.Roots, want.Roots) {
		t.Error("a later write did not win over an earlier one")
	}
	if c, _ := readBuilt(withReplayLog(old.data, append(append([]logWrite(nil), changed...), junk)), false); c == nil || len(c.Problems) == 0 {
		t.Error("a last write of junk over a key table was not applied")
	}
}

// A write past the end of the file (a key table moved to new space, and the
// object-table entry that points at it) extends the file; the gap reads as
// zeros.
func TestVMCXReplayExtendsFile(t *testing.T) {
	b := buildTest(t, vmcxBuildOpts{})
	want := mustRead(t, b.data)
	tbl := b.tables[1]
	obj := -1
	for i, o := range b.objects {
		if int64(le.Uint64(b.data[o+5:])) == tbl {
			obj = i
		}
	}
	if obj < 0 {
		t.Fatal("no object entry for the table")
	}
	page := append([]byte(nil), b.data[tbl:tbl+bPage]...)
	ent := append([]byte(nil), b.data[b.objects[obj]:b.objects[obj]+vmcxObjectEntryLen]...)
	writes := []logWrite{{0, page}, {b.objects[obj], ent}}
	_, logEnd := replayLogAt(len(b.data), writes)
	newAt := logEnd + 3*bPage
	writes[0].off = newAt
	le.PutUint64(ent[5:], uint64(newAt))
	le.PutUint32(ent[1:], vmcxObjectEntryChecksum(ent))

	inPlace := append([]byte(nil), b.data...)
	clear(inPlace[tbl : tbl+bPage]) // the old copy freed and zeroed
	crashed := withReplayLog(inPlace, writes)
	if int64(len(crashed)) >= newAt {
		t.Fatal("test setup: the new table is not past the end")
	}
	c := mustRead(t, crashed)
	if !c.LogReplayed || !reflect.DeepEqual(c.Roots, want.Roots) {
		t.Errorf("replayed=%v warnings=%q; tree differs from the original", c.LogReplayed, c.Warnings)
	}
	ov := &replayOverlay{base: bytes.NewReader(crashed), baseSize: int64(len(crashed)), size: newAt + bPage,
		writes: []replayWrite{{off: newAt, data: page}}}
	got := make([]byte, 2*bPage)
	n, err := ov.ReadAt(got, newAt-bPage)
	if n != 2*bPage || err != nil || !bytes.Equal(got[:bPage], make([]byte, bPage)) || !bytes.Equal(got[bPage:], page) {
		t.Errorf("overlay read across the gap: n=%d err=%v", n, err)
	}
	if n, err := ov.ReadAt(got, newAt); n != bPage || err == nil {
		t.Errorf("overlay read past its end: n=%d err=%v", n, err)
	}
}

// Nothing is replayed unless every outstanding entry checks out: a damaged
// or not understood log leaves the old state (also the entries before the
// bad one are not applied), marked possibly inconsistent, with a warning
// that says what is wrong.
func TestVMCXReplayRefused(t *testing.T) {
	old, _, changed := renamedPair(t)
	two := append(append([]logWrite(nil), changed...), logWrite{changed[0].off + 16, changed[0].data[16:48]})
	last := len(two) - 1
	entry := func(data []byte, i int) []byte {
		return data[activeLog(data)+vmcxReplayLogHeaderLen+int64(i)*vmcxReplayEntryLen:]
	}
	cases := []struct {
		name   string
		mutate func(d []byte) []byte
		want   string
	}{
		{"entry checksum", func(d []byte) []byte { entry(d, last)[20] ^= 1; return d }, "checksum mismatch"},
		{"data checksum", func(d []byte) []byte {
			d[activeLog(d)+int64(le.Uint32(entry(d, last)[12:]))] ^= 1
			return d
		}, "data checksum mismatch"},
		{"unknown entry field", func(d []byte) []byte {
			le.PutUint32(entry(d, last)[16:], 1)
			resumReplayEntry(d, activeLog(d), last)
			return d
		}, "field at +16"},
		{"unknown header field", func(d []byte) []byte {
			le.PutUint32(d[activeLog(d)+17:], 7)
			resumReplayLog(d, activeLog(d))
			return d
		}, "+17 = 0x7"},
		{"unknown header flag", func(d []byte) []byte {
			d[activeLog(d)+12] = 1
			resumReplayLog(d, activeLog(d))
			return d
		}, "+12 = 0x1"},
		{"write into headers", func(d []byte) []byte {
			le.PutUint64(entry(d, last)[0:], 0x1000)
			resumReplayEntry(d, activeLog(d), last)
			return d
		}, "into the file headers"},
		{"write into the log", func(d []byte) []byte {
			le.PutUint64(entry(d, last)[0:], uint64(activeLog(d))+0x800)
			resumReplayEntry(d, activeLog(d), last)
			return d
		}, "into the replay log itself"},
		{"write far past the end", func(d []byte) []byte {
			le.PutUint64(entry(d, last)[0:], 1<<40)
			resumReplayEntry(d, activeLog(d), last)
			return d
		}, "far beyond the end"},
		{"write offset that wraps round", func(d []byte) []byte {
			// Target+Size overflows to 0xF0: must not pass as a small write.
			le.PutUint64(entry(d, last)[0:], ^uint64(0)-0xF)
			le.PutUint32(entry(d, last)[8:], 0x100)
			resumReplayEntry(d, activeLog(d), last)
			return d
		}, "far beyond the end"},
		{"data inside the entry area", func(d []byte) []byte {
			le.PutUint32(entry(d, last)[12:], 0x100)
			resumReplayEntry(d, activeLog(d), last)
			return d
		}, "outside the log's data area"},
		{"data past the log", func(d []byte) []byte {
			le.PutUint32(entry(d, last)[12:], uint32(len(d))-uint32(activeLog(d))-8)
			resumReplayEntry(d, activeLog(d), last)
			return d
		}, "outside the log's data area"},
		{"empty write", func(d []byte) []byte {
			le.PutUint32(entry(d, last)[8:], 0)
			resumReplayEntry(d, activeLog(d), last)
			return d
		}, "writes 0 bytes"},
		{"huge write", func(d []byte) []byte {
			le.PutUint32(entry(d, last)[8:], 0xFFFFFFFF)
			resumReplayEntry(d, activeLog(d), last)
			return d
		}, "all entries together at most"},
		{"more entries than room", func(d []byte) []byte {
			le.PutUint32(d[activeLog(d)+13:], 1)
			resumReplayLog(d, activeLog(d))
			return d
		}, "outstanding of at most 1"},
		{"room larger than the log", func(d []byte) []byte {
			le.PutUint32(d[activeLog(d)+13:], 10000)
			resumReplayLog(d, activeLog(d))
			return d
		}, "does not fit in the log"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.mutate(withReplayLog(old.data, two))
			for _, strict := range []bool{false, true} {
				c, err := readBuilt(d, strict)
				if err != nil {
					t.Fatalf("strict %v: %v", strict, err)
				}
				if c.LogReplayed || !c.PossiblyInconsistent || nameOf(c) != "Rescue Me" {
					t.Errorf("strict %v: replayed=%v inconsistent=%v name %q", strict, c.LogReplayed, c.PossiblyInconsistent, nameOf(c))
				}
				w := strings.Join(c.Warnings, "\n")
				if !strings.Contains(w, fmt.Sprintf("%d outstanding entries, not replayed", len(two))) || !strings.Contains(w, tc.want) {
					t.Errorf("strict %v: warnings %q lack %q", strict, c.Warnings, tc.want)
				}
			}
		})
	}
}

// The real Hyper-V files: their logs (count 0) still hold the entries of
// the last writes, with data equal to what is in place. Made outstanding
// again, with the bytes in place zeroed (the writes never landed), they
// replay to exactly the tree of the real file.
func TestVMCXReplaySamples(t *testing.T) {
	dir := samplesDir(t)
	for _, tc := range []struct {
		file string
		n    uint32 // leading entries whose data is what is in place
	}{
		{"EC04F346-DB96-4700-AF5B-77B3C56C38BD.vmcx", 1},
		{"test.vmcx", 1},
		{"data.vmcx", 2},
		{"test.VMRS", 3},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			want := mustRead(t, data)
			logOff := activeLog(data)
			crashed := append([]byte(nil), data...)
			for i := 0; i < int(tc.n); i++ {
				e := decodeVMCXReplayEntry(data[logOff+vmcxReplayLogHeaderLen+int64(i)*vmcxReplayEntryLen:])
				logged := data[logOff+int64(e.DataOffset) : logOff+int64(e.DataOffset)+int64(e.Size)]
				if crc32.ChecksumIEEE(logged) != e.DataChecksum || !bytes.Equal(logged, data[e.Target:e.Target+uint64(e.Size)]) {
					t.Fatalf("entry %d: the sample's logged data is not what is in place", i)
				}
				clear(crashed[e.Target : e.Target+uint64(e.Size)])
			}
			// Zeroed without the log: the tree is not the same (so the
			// replay below is what restores it).
			if c, err := readBuilt(crashed, false); err == nil && reflect.DeepEqual(c.Roots, want.Roots) {
				t.Fatal("zeroing the logged bytes changed nothing")
			}
			le.PutUint32(crashed[logOff+8:], tc.n)
			resumReplayLog(crashed, logOff)
			c := mustRead(t, crashed)
			if !c.LogReplayed || c.PossiblyInconsistent || len(c.Warnings) != 0 || !reflect.DeepEqual(c.Roots, want.Roots) {
				t.Errorf("replayed=%v inconsistent=%v warnings=%q, same tree %v", c.LogReplayed, c.PossiblyInconsistent, c.Warnings, reflect.DeepEqual(c.Roots, want.Roots))
			}
		})
	}
}

// The committed seed-6 (what storetest.ReplayPendingVM writes) reads, once
// its log is replayed, as the configuration naming C:\d.vhdx; without the
// replay it names C:\e.vhdx.
func TestVMCXPendingSeed(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzVMCX", "seed-6"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(raw), "\n", 3)
	q, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		t.Fatal(err)
	}
	data := unpackVMCX([]byte(q))
	drives := func(data []byte) []string {
		c, err := ParseVMCXConfig(bytes.NewReader(data), int64(len(data)), "seed-6.vmcx", &ParseOptions{NoResolve: true})
		if err != nil {
			t.Fatal(err)
		}
		var d []string
		for _, r := range c.Disks {
			d = append(d, r.WindowsPath)
		}
		if c.PossiblyInconsistent || len(c.Warnings) != 0 {
			t.Errorf("inconsistent=%v warnings=%q", c.PossiblyInconsistent, c.Warnings)
		}
		return d
	}
	if got := drives(data); !reflect.DeepEqual(got, []string{`C:\a.vhd`, `C:\d.vhdx`}) {
		t.Errorf("replayed: drives %q", got)
	}
	le.PutUint32(data[activeLog(data)+8:], 0)
	resumReplayLog(data, activeLog(data))
	if got := drives(data); !reflect.DeepEqual(got, []string{`C:\a.vhd`, `C:\e.vhdx`}) {
		t.Errorf("not replayed: drives %q", got)
	}
}

// FuzzVMCXReplay mutates the fields of one outstanding replay-log entry (and
// the log's counts) of a pending file and fixes up every checksum after, so
// that the fuzzer gets past CRC-32 to the bounds checks; FuzzVMCX, whose
// mutations almost never keep a checksum valid, rarely does. Whatever the
// fields, the read must not panic, and a replay it accepts must write only
// where a replay may: at or after the object table, inside the file or at
// most vmcxMaxReplayBytes past its end, never over the log.
func FuzzVMCXReplay(f *testing.F) {
	f.Add(uint64(0x2000), uint32(0x20), uint32(0x1000), uint32(1), uint32(145), uint8(0))
	f.Add(^uint64(0)-0xF, uint32(0x100), uint32(0x1000), uint32(1), uint32(145), uint8(0))
	f.Add(uint64(1)<<63, uint32(0x10), uint32(0xFFFFFFF0), uint32(1), uint32(145), uint8(1))
	f.Add(uint64(0x3000), uint32(0xFFFFFFFF), uint32(0x1000), uint32(2), uint32(1), uint8(2))
	small := tconfig{name: "fuzz", id: testVMID, subtype: 0, version: 2304, memoryMiB: 512, cpus: 1,
		scsi: [][]tdrive{{{"VHD", `C:\d.vhdx`}}}, scsiInstances: []string{testSCSI0}}
	small.ide[0][0] = tdrive{"VHD", `C:\a.vhd`}
	base := pendingSeed(f, small)
	f.Fuzz(func(t *testing.T, target uint64, size, dataOff, count, maxEntries uint32, slot uint8) {
		data := append([]byte(nil), base...)
		logOff := activeLog(data)
		logSize := int64(le.Uint64(data[34:]))
		i := int(slot % 3)
		e := data[logOff+vmcxReplayLogHeaderLen+int64(i)*vmcxReplayEntryLen:]
		le.PutUint64(e[0:], target)
		le.PutUint32(e[8:], size)
		le.PutUint32(e[12:], dataOff)
		// A valid data checksum whenever the data lies inside the file.
		if lo := logOff + int64(dataOff); int64(size) <= int64(len(data)) && lo <= int64(len(data))-int64(size) {
			le.PutUint32(e[24:], crc32.ChecksumIEEE(data[lo:lo+int64(size)]))
		}
		resumReplayEntry(data, logOff, i)
		le.PutUint32(data[logOff+8:], count%8)
		le.PutUint32(data[logOff+13:], maxEntries)
		resumReplayLog(data, logOff)

		x := &vmcxReader{r: bytes.NewReader(data), size: int64(len(data)), path: "fuzz.vmcx", c: &Container{Path: "fuzz.vmcx"}}
		h, err := x.readHeaders()
		if err != nil {
			t.Fatalf("headers: %v", err)
		}
		l := decodeVMCXReplayLog(data[logOff : logOff+vmcxReplayLogHeaderLen])
		ov, err := x.replayEntries(h, l, data[logOff:logOff+vmcxReplayLogHeaderLen])
		if err == nil {
			for _, w := range ov.writes {
				end := w.off + int64(len(w.data))
				switch {
				case w.off < vmcxObjectTableOffset || end < w.off:
					t.Fatalf("accepted a write of %d bytes at %d (headers or wrapped)", len(w.data), w.off)
				case end > int64(len(data))+vmcxMaxReplayBytes:
					t.Fatalf("accepted a write of %d bytes at 0x%x, far past the end", len(w.data), w.off)
				case w.off < logOff+logSize && end > logOff:
					t.Fatalf("accepted a write of %d bytes at 0x%x into the log", len(w.data), w.off)
				}
			}
			if ov.size < int64(len(data)) || ov.size > int64(len(data))+vmcxMaxReplayBytes {
				t.Fatalf("overlay size %d for a %d-byte file", ov.size, len(data))
			}
		}
		c, err := ReadContainer(bytes.NewReader(data), int64(len(data)), "fuzz.vmcx", nil)
		if err == nil && c.LogReplayed == c.PossiblyInconsistent && c.ReplayLogEntries > 0 {
			t.Fatalf("%d outstanding entries: replayed=%v and possibly inconsistent=%v", c.ReplayLogEntries, c.LogReplayed, c.PossiblyInconsistent)
		}
	})
}
