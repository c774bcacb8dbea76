package space

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func renderText(t *testing.T, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteText(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// lineWith returns the first line containing all parts.
func lineWith(t *testing.T, out string, parts ...string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		ok := true
		for _, p := range parts {
			if !strings.Contains(l, p) {
				ok = false
				break
			}
		}
		if ok {
			return l
		}
	}
	t.Fatalf("no line with %q in:\n%s", parts, out)
	return ""
}

// col is the rune column of sub in line (-1 when absent).
func col(line, sub string) int {
	i := strings.Index(line, sub)
	if i < 0 {
		return -1
	}
	return utf8.RuneCountInString(line[:i])
}

// cellAt: line holds want starting at rune column pos.
func cellAt(line string, pos int, want string) bool {
	r := []rune(line)
	return pos >= 0 && pos <= len(r) && strings.HasPrefix(string(r[pos:]), want)
}

// cellEndsAt: line holds want ending at rune column end.
func cellEndsAt(line string, end int, want string) bool {
	return cellAt(line, end-utf8.RuneCountInString(want), want)
}

func TestRenderTextSections(t *testing.T) {
	r := renderFixture()
	out := renderText(t, r)

	// Sections in order.
	last := -1
	for _, s := range []string{"hvsnap space report", "VOLUMES (4)", "VMS (2)", "VM web01", "UNATTACHED CHAINS (2)", "FINDINGS (16)", "SCAN WARNINGS (2)"} {
		i := strings.Index(out, s)
		if i < 0 || i < last {
			t.Fatalf("section %q missing or out of order:\n%s", s, out)
		}
		last = i
	}
	for _, s := range []string{"Host:           hv-host-01", "Generated:      2025-11-25T10:00:00Z", "Worst verdict:  CRITICAL",
		"2 VMs, 8 disk files holding 67.0 GiB (12.0 GiB in checkpoints), 3.7 GiB reclaimable, 16 findings"} {
		if !strings.Contains(out, s) {
			t.Errorf("header lacks %q", s)
		}
	}

	// Volume rows: aligned columns, every verdict, humanized sizes.
	hdr := lineWith(t, out, "MOUNT", "FSTYPE", "VERDICT")
	d := lineWith(t, out, "  /mnt/d ", "ntfs3")
	e := lineWith(t, out, "  /mnt/e ", "ext4")
	f := lineWith(t, out, "  /mnt/f ", "xfs")
	for _, c := range []struct{ line, want string }{
		{d, "CRITICAL"}, {e, "WARNING"}, {f, "OK"},
	} {
		if col(c.line, c.want) != col(hdr, "VERDICT") {
			t.Errorf("verdict column not aligned:\n%s\n%s", hdr, c.line)
		}
	}
	for _, want := range []string{"60.0 GiB", "300.0 MiB", "99.5%", "120.0 GiB", "8.0 GiB"} {
		if !strings.Contains(d, want) {
			t.Errorf("/mnt/d row lacks %q: %s", want, d)
		}
	}
	// Sizes are right-aligned: the FREE values end where the header does.
	end := func(line, sub string) int { return col(line, sub) + utf8.RuneCountInString(sub) }
	if end(d, "300.0 MiB") != end(hdr, "FREE") || end(e, "1.5 GiB") != end(hdr, "FREE") {
		t.Errorf("FREE column not right-aligned:\n%s\n%s\n%s", hdr, d, e)
	}
	for _, s := range []string{
		"  /mnt/d (CRITICAL, /dev/sdb1):",
		"    - a merge here needs 8.0 GiB but only 300.0 MiB is free (0x80070070)",
		"    - volumes with room for its VMs: /mnt/g",
		"    - only 1.5 GiB free, below 2.0 GiB",
	} {
		if !strings.Contains(out, s+"\n") {
			t.Errorf("volume reasons lack %q", s)
		}
	}

	// VM table: merge pending flag, sizes.
	vhdr := lineWith(t, out, "NAME", "ID", "MERGE PENDING")
	web := lineWith(t, out, "  web01 ", "8D1E2C3A-0000-4000-8000-000000000001", "xml")
	if col(web, "yes") != col(vhdr, "MERGE PENDING") || !strings.Contains(web, "48.5 GiB") || !strings.Contains(web, "3.0 GiB") {
		t.Errorf("VM row:\n%s\n%s", vhdr, web)
	}
	evil := lineWith(t, out, weirdVM, "F00D0000")
	if col(evil, "vmcx") != col(vhdr, "CONFIG") || col(evil, "no ") != col(vhdr, "MERGE PENDING") {
		t.Errorf("VM row not aligned:\n%s\n%s", vhdr, evil)
	}
	if !strings.Contains(out, "VM web01 (8D1E2C3A-0000-4000-8000-000000000001)  [MERGE PENDING]\n") {
		t.Error("VM heading lacks the merge-pending flag")
	}
	if !strings.Contains(out, `  drive ide0:1: E:\VMs\data "2".vhdx (not resolved)`) {
		t.Error("unresolved drive not shown")
	}

	// The branched tree, drawn with box characters and aligned columns.
	thdr := lineWith(t, out, "DISK", "TYPE", "ALLOCATED", "MERGE GROWTH", "STATE")
	rows := []struct{ prefix, alloc, growth, state, note string }{
		{"  /mnt/d/VMs/web01/Virtual Hard Disks/web01.vhdx", "35.2 GiB", "-", "live", "-"},
		{"  └─ web01_A.avhdx", "4.0 GiB", "3.0 GiB", "live", "checkpoint:Before update"},
		{"     ├─ web01_B.avhdx", "1.0 GiB", "512.0 MiB", "off-branch", "checkpoint:Test branch"},
		{"     └─ web01_C.avhdx", "6.3 GiB", "5.0 GiB", "live", "vm:web01"},
	}
	for _, rw := range rows {
		l := lineWith(t, out, rw.prefix+" ")
		if !strings.HasPrefix(l, rw.prefix) {
			t.Errorf("tree row %q drawn as %q", rw.prefix, l)
		}
		if !cellAt(l, col(thdr, "TYPE"), "vhdx ") || !cellEndsAt(l, end(thdr, "ALLOCATED"), rw.alloc) ||
			!cellEndsAt(l, end(thdr, "MERGE GROWTH"), rw.growth) || !cellAt(l, col(thdr, "STATE"), rw.state+" ") ||
			!cellAt(l, col(thdr, "USED BY"), rw.note) {
			t.Errorf("tree row not aligned:\n%s\n%s", thdr, l)
		}
	}
	if !strings.Contains(lineWith(t, out, "web01_A.avhdx", "checkpoint:"), "45d") {
		t.Error("age of the old checkpoint disk not shown")
	}

	// Unattached chains: unreadable disk, broken parent, a child.
	lineWith(t, out, "  /mnt/f/loose/broken.vhdx", "unreadable", "unattached", "unreadable: vhdx: header checksum mismatch")
	lineWith(t, out, "  /mnt/f/loose/orphan.avhdx", "unknown", "unattached", `parent: parent "C:\VMs\gone.vhdx" not found`)
	lineWith(t, out, "  └─ orphan_2.avhdx", "48.0 MiB", "unattached")

	// Findings: every code, severity, bytes, message and paths.
	for _, code := range allFindingCodes {
		lineWith(t, out, "  ", code)
	}
	fl := lineWith(t, out, "ERROR", "paused-critical-risk", "/mnt/d", "120.0 GiB", "VM web01")
	if !strings.HasPrefix(fl, "  ERROR    paused-critical-risk     /mnt/d   120.0 GiB  VM web01") {
		t.Errorf("finding row: %q", fl)
	}
	for _, s := range []string{
		"  INFO     saved-state              /mnt/d     2.0 GiB  VM web01\n           saved VM memory\n           - /mnt/d/VMs/web01/Virtual Machines/8D1E/8D1E.bin\n",
		"  WARNING  orphaned-disk            /mnt/f   764.0 MiB\n",
		"           - /mnt/f/loose/orphan_2.avhdx\n",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("findings lack %q", s)
		}
	}

	// Control characters from the model never reach the terminal.
	if strings.ContainsAny(out, "\x1b\t\r") {
		t.Error("control characters in the text report")
	}
	if !strings.Contains(out, `config \x1b[31mred\x1b[0m\tunreadable`) {
		t.Error("escaped warning missing")
	}
	// Deterministic.
	if again := renderText(t, renderFixture()); again != out {
		t.Error("two renderings differ")
	}
}

func TestRenderTextEmpty(t *testing.T) {
	out := renderText(t, &Report{Schema: Schema})
	for _, s := range []string{"VOLUMES (0)\n  none found", "VMS (0)\n  none found", "UNATTACHED CHAINS (0)", "FINDINGS (0)\n  none", "Worst verdict:  OK"} {
		if !strings.Contains(out, s) {
			t.Errorf("empty report lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "SCAN WARNINGS") {
		t.Error("scan warnings section without warnings")
	}
	if err := WriteText(&bytes.Buffer{}, nil); err == nil {
		t.Error("nil report accepted")
	}
}

func TestRenderTextCleanText(t *testing.T) {
	for in, want := range map[string]string{
		"plain":          "plain",
		"tab\there":      `tab\there`,
		"nl\nx":          `nl\nx`,
		"\x1b[2J":        `\x1b[2J`,
		"bad\xffutf8":    `bad\xffutf8`,
		"ünïcode ├─ ok":  "ünïcode ├─ ok",
		"del\x7f":        `del\x7f`,
		"c1\u0085 (NEL)": `c1\u0085 (NEL)`,
	} {
		if got := cleanText(in); got != want {
			t.Errorf("cleanText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRenderTextTreeCycle(t *testing.T) {
	// A malformed tree that repeats a node must not loop forever.
	a := &Tree{Path: "/x/a.vhdx"}
	b := &Tree{Path: "/x/b.avhdx"}
	a.Children = []*Tree{b}
	b.Children = []*Tree{a}
	rows := flattenTree(a, nil)
	if len(rows) != 2 || rows[1].prefix != "└─ " || rows[1].name != "b.avhdx" {
		t.Fatalf("rows: %+v", rows)
	}
}
