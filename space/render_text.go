package space

import (
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"
)

// WriteText writes the terminal report: a header with the summary, the
// volumes (verdicts first in importance: size, free, what merges and
// differencing growth need, the reasons), the VMs with their checkpoint
// trees, unattached chains, findings and scan warnings. Sizes use binary
// units; columns are aligned. The output depends on the report alone (no
// clock, no environment), in the report's order.
func WriteText(w io.Writer, r *Report) error {
	if r == nil {
		return fmt.Errorf("space: WriteText: nil report")
	}
	tw := &textWriter{w: w, idx: reportDiskMap(r), now: r.GeneratedAt}
	tw.header(r)
	tw.volumes(r)
	tw.vms(r)
	tw.unattached(r)
	tw.findings(r)
	tw.warnings(r)
	return tw.err
}

// textWriter accumulates the first write error.
type textWriter struct {
	w   io.Writer
	idx map[string]*Disk
	now time.Time // the report's time, for ages
	err error
}

func (t *textWriter) printf(format string, args ...any) {
	if t.err != nil {
		return
	}
	_, t.err = fmt.Fprintf(t.w, format, args...)
}

// table returns a tabwriter over t.w; flush it with t.flush.
func (t *textWriter) table() *tabwriter.Writer {
	return tabwriter.NewWriter(t.w, 0, 0, 2, ' ', 0)
}

func (t *textWriter) flush(tw *tabwriter.Writer) {
	if err := tw.Flush(); err != nil && t.err == nil {
		t.err = err
	}
}

// row writes cells separated by tabs (each cell cleaned of control
// characters) and ends the line.
func row(tw *tabwriter.Writer, cells ...string) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(tw, "\t")
		}
		io.WriteString(tw, cleanText(c))
	}
	io.WriteString(tw, "\n")
}

func (t *textWriter) header(r *Report) {
	t.printf("hvsnap space report\n")
	tw := t.table()
	row(tw, "Host:", orNone(r.Host))
	row(tw, "Generated:", fmtTime(r.GeneratedAt))
	row(tw, "Roots:", orNone(strings.Join(r.Roots, ", ")))
	s := r.Summary
	row(tw, "Summary:", fmt.Sprintf("%s, %s holding %s (%s in checkpoints), %s reclaimable, %s",
		plural(s.VMs, "VM"), plural(s.Disks, "disk file"), human(s.DiskBytes), human(s.CheckpointBytes),
		human(s.ReclaimableBytes), plural(s.Findings, "finding")))
	row(tw, "Worst verdict:", verdictText(worstOf(r)))
	t.flush(tw)
}

func (t *textWriter) volumes(r *Report) {
	t.printf("\nVOLUMES (%d)\n", len(r.Volumes))
	if len(r.Volumes) == 0 {
		t.printf("  none found\n")
		return
	}
	tw := t.table()
	row(tw, "  MOUNT", "FSTYPE", rightPad("SIZE"), rightPad("FREE"), "USED%", "DISKS", rightPad("DISK BYTES"), rightPad("DIFF GROWTH"), rightPad("MERGE NEED"), "VERDICT")
	for _, v := range r.Volumes {
		row(tw, "  "+v.Mount, orDash(v.FSType), sizeCell(v.Size), sizeCell(v.Free), usedPct(v), strconv.Itoa(v.DiskFiles),
			sizeCell(v.DiskBytes), sizeCell(v.DiffGrowth), sizeCell(v.MergeNeed), verdictText(v.Verdict))
	}
	t.flush(tw)
	for _, v := range r.Volumes {
		if len(v.Reasons) == 0 && len(v.RelocationTargets) == 0 {
			continue
		}
		t.printf("  %s (%s", cleanText(v.Mount), verdictText(v.Verdict))
		if v.Device != "" {
			t.printf(", %s", cleanText(v.Device))
		}
		t.printf("):\n")
		for _, s := range v.Reasons {
			t.printf("    - %s\n", cleanText(s))
		}
		if len(v.RelocationTargets) > 0 {
			t.printf("    - volumes with room for its VMs: %s\n", cleanText(strings.Join(v.RelocationTargets, ", ")))
		}
	}
}

func (t *textWriter) vms(r *Report) {
	t.printf("\nVMS (%d)\n", len(r.VMs))
	if len(r.VMs) == 0 {
		t.printf("  none found\n")
		return
	}
	tw := t.table()
	row(tw, "  NAME", "ID", "CONFIG", "CHECKPOINTS", "MERGE PENDING", rightPad("ALLOCATED"), rightPad("RECLAIMABLE"), rightPad("MERGE NEED"), "VOLUMES")
	for _, v := range r.VMs {
		row(tw, "  "+v.Name, orDash(v.ID), orDash(v.ConfigKind), strconv.Itoa(len(v.Checkpoints)), yesNo(vmMergePending(r, v)),
			sizeCell(v.Allocated), sizeCell(v.Reclaimable), sizeCell(v.MergeNeed), orDash(strings.Join(v.Volumes, ", ")))
	}
	t.flush(tw)
	for _, v := range r.VMs {
		t.printf("\nVM %s", cleanText(v.Name))
		if v.ID != "" && v.ID != v.Name {
			t.printf(" (%s)", cleanText(v.ID))
		}
		if vmMergePending(r, v) {
			t.printf("  [MERGE PENDING]")
		}
		t.printf("\n")
		kind := orDash(v.ConfigKind)
		if v.Generation > 0 {
			kind += fmt.Sprintf(", generation %d", v.Generation)
		}
		if v.Version != "" {
			kind += ", version " + v.Version
		}
		t.printf("  config: %s (%s)\n", cleanText(orDash(v.ConfigPath)), cleanText(kind))
		t.printf("  allocated %s, reclaimable %s, merge need %s\n", human(v.Allocated), human(v.Reclaimable), human(v.MergeNeed))
		for _, d := range v.Drives {
			p := d.Path
			if p == "" {
				p = d.WindowsPath + " (not resolved)"
			} else if !d.Exists {
				p += " (missing)"
			}
			t.printf("  drive %s: %s\n", cleanText(orDash(d.Location)), cleanText(p))
		}
		if len(v.Chains) == 0 {
			t.printf("  no disk chains\n")
			continue
		}
		t.trees(v.Chains, true)
	}
}

func (t *textWriter) unattached(r *Report) {
	t.printf("\nUNATTACHED CHAINS (%d)\n", len(r.Unattached))
	if len(r.Unattached) == 0 {
		if len(r.Disks) > 0 {
			t.printf("  none: every disk found belongs to a VM\n")
		} else {
			t.printf("  none\n")
		}
		return
	}
	t.trees(r.Unattached, false)
}

// trees draws chain trees in one aligned table.
func (t *textWriter) trees(ts []*Tree, attached bool) {
	tw := t.table()
	row(tw, "  DISK", "TYPE", rightPad("ALLOCATED"), rightPad("DATA"), "MERGE GROWTH", "AGE", "STATE", "USED BY / NOTES")
	for _, tr := range ts {
		for _, tr := range flattenTree(tr, t.idx) {
			row(tw, "  "+tr.prefix+tr.name, tr.kind(), sizeCellOr(tr.d, func(d *Disk) int64 { return d.Allocated }),
				sizeCellOr(tr.d, func(d *Disk) int64 { return d.DataBytes }), fmt.Sprintf("%12s", tr.growth()),
				fmt.Sprintf("%4s", tr.age(t.now)), tr.state(attached), tr.notes())
		}
	}
	t.flush(tw)
}

func (t *textWriter) findings(r *Report) {
	t.printf("\nFINDINGS (%d)\n", len(r.Findings))
	if len(r.Findings) == 0 {
		t.printf("  none\n")
		return
	}
	sevW, codeW, volW := 0, 0, 0
	for _, f := range r.Findings {
		sevW = max(sevW, utf8.RuneCountInString(severityText(f.Severity)))
		codeW = max(codeW, utf8.RuneCountInString(f.Code))
		volW = max(volW, utf8.RuneCountInString(cleanText(orDash(f.Volume))))
	}
	indent := strings.Repeat(" ", 2+sevW+2)
	for _, f := range r.Findings {
		bytes := rightPad("-")
		if f.Bytes != 0 {
			bytes = sizeCell(f.Bytes)
		}
		line := fmt.Sprintf("  %s  %s  %s  %s", padRight(severityText(f.Severity), sevW), padRight(f.Code, codeW),
			padRight(cleanText(orDash(f.Volume)), volW), bytes)
		if f.VM != "" {
			line += "  VM " + cleanText(f.VM)
		}
		t.printf("%s\n", strings.TrimRight(line, " "))
		t.printf("%s%s\n", indent, cleanText(f.Message))
		for _, p := range f.Paths {
			t.printf("%s- %s\n", indent, cleanText(p))
		}
	}
}

func (t *textWriter) warnings(r *Report) {
	if len(r.Warnings) == 0 {
		return
	}
	t.printf("\nSCAN WARNINGS (%d)\n", len(r.Warnings))
	for _, w := range r.Warnings {
		t.printf("  - %s\n", cleanText(w))
	}
}

// treeRow is one disk of a drawn chain tree.
type treeRow struct {
	prefix string // box-drawing prefix ("├─ ", "│  └─ ")
	name   string // file name, or full path when not in the tree root's folder
	level  int    // 0 for the tree root
	tree   *Tree
	d      *Disk // nil when the report has no entry for the path
}

// flattenTree lists a tree depth-first with the prefixes that draw it:
//
//	base.vhdx
//	├─ a.avhdx
//	│  └─ b.avhdx
//	└─ c.avhdx
func flattenTree(root *Tree, idx map[string]*Disk) []treeRow {
	if root == nil {
		return nil
	}
	dir := filepath.Dir(root.Path)
	name := func(p string) string {
		if filepath.Dir(p) == dir {
			return filepath.Base(p)
		}
		return p
	}
	var out []treeRow
	seen := map[*Tree]bool{}
	var walk func(t *Tree, lead string, level int)
	walk = func(t *Tree, lead string, level int) {
		for i, c := range t.Children {
			if c == nil || seen[c] {
				continue
			}
			seen[c] = true
			last := i == len(t.Children)-1
			branch, next := "├─ ", "│  "
			if last {
				branch, next = "└─ ", "   "
			}
			out = append(out, treeRow{prefix: lead + branch, name: name(c.Path), level: level + 1, tree: c, d: idx[c.Path]})
			walk(c, lead+next, level+1)
		}
	}
	seen[root] = true
	out = append(out, treeRow{name: root.Path, tree: root, d: idx[root.Path]})
	walk(root, "", 0)
	return out
}

// kind is "vhdx differencing", "vhd fixed", or "unreadable".
func (tr treeRow) kind() string {
	d := tr.d
	switch {
	case d == nil:
		return "?"
	case d.Format == "" && d.Type == "":
		return "unreadable"
	}
	return strings.TrimSpace(d.Format + " " + d.Type)
}

// growth is what merging the disk into its parent would add to the parent.
func (tr treeRow) growth() string {
	d := tr.d
	switch {
	case d == nil || d.Type != "differencing":
		return "-"
	case d.Parent == "" || d.MergeGrowth < 0:
		return "unknown"
	}
	return human(d.MergeGrowth)
}

// state: "live" (on a chain a VM writes to), "off-branch" (a VM's
// differencing disk not on its live chain), "unattached" (no VM uses it).
func (tr treeRow) state(attached bool) string {
	switch {
	case tr.tree.Live:
		return "live"
	case !attached:
		return "unattached"
	case tr.d != nil && tr.d.Type == "differencing":
		return "off-branch"
	}
	return "-"
}

// age is how long ago the file was last written, relative to the report
// time: "45d", "3h", "12m", "-" when unknown.
func (tr treeRow) age(now time.Time) string {
	if tr.d == nil {
		return "-"
	}
	return ageText(now, tr.d.ModTime)
}

func ageText(now, t time.Time) string {
	if t.IsZero() || now.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0m"
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dm", int(d.Minutes()))
}

// notes: what the configs say about the disk (UsedBy), then problems.
func (tr treeRow) notes() string {
	var notes []string
	if tr.d != nil {
		notes = append(notes, tr.d.UsedBy...)
	}
	notes = append(notes, tr.problems()...)
	if len(notes) == 0 {
		return "-"
	}
	return strings.Join(notes, "; ")
}

// problems of the disk and its link to its parent.
func (tr treeRow) problems() []string {
	d := tr.d
	if d == nil {
		return []string{"not described in the report"}
	}
	var out []string
	if d.Error != "" {
		out = append(out, "unreadable: "+d.Error)
	}
	if d.ParentError != "" {
		out = append(out, "parent: "+d.ParentError)
	} else if d.Parent != "" && !d.LinkageOK {
		out = append(out, "parent identity differs (linkage mismatch)")
	}
	if d.Error == "" && d.ParentError == "" && tr.level == 0 && d.Type == "differencing" && d.Parent == "" {
		out = append(out, "parent missing")
	}
	return out
}

// reportDiskMap indexes r.Disks by path.
func reportDiskMap(r *Report) map[string]*Disk {
	m := make(map[string]*Disk, len(r.Disks))
	for _, d := range r.Disks {
		if d != nil {
			m[d.Path] = d
		}
	}
	return m
}

// vmMergePending: the config flag, or a merge-pending finding naming the VM.
func vmMergePending(r *Report, v *VM) bool {
	if v.DiskMergePending {
		return true
	}
	for _, f := range r.Findings {
		if f.Code == FindMergePending && findingNamesVM(f, v) {
			return true
		}
	}
	return false
}

// findingNamesVM: f.VM is the VM's name or a ", "-joined list holding it,
// or the evidence carries its ID.
func findingNamesVM(f Finding, v *VM) bool {
	if id, ok := f.Evidence["vm_id"].(string); ok && id != "" && v.ID != "" {
		return strings.EqualFold(id, v.ID)
	}
	if f.VM == v.Name {
		return true
	}
	for _, n := range strings.Split(f.VM, ", ") {
		if n == v.Name {
			return true
		}
	}
	return false
}

// vmMaxDepth is the deepest differencing layer of the VM's chains.
func vmMaxDepth(idx map[string]*Disk, v *VM) int {
	depth := 0
	for _, t := range v.Chains {
		for _, tr := range flattenTree(t, idx) {
			if tr.d != nil {
				depth = max(depth, tr.d.Depth)
			}
		}
	}
	return depth
}

// worstOf is Summary.Worst, or the worst volume verdict when it is unset.
func worstOf(r *Report) Verdict {
	w := r.Summary.Worst
	for _, v := range r.Volumes {
		if v.Verdict.Rank() > w.Rank() {
			w = v.Verdict
		}
	}
	if w == "" {
		w = VerdictOK
	}
	return w
}

func verdictText(v Verdict) string {
	if v == "" {
		return "-"
	}
	return strings.ToUpper(string(v))
}

func severityText(s Severity) string {
	if s == "" {
		return "-"
	}
	return strings.ToUpper(string(s))
}

func usedPct(v *Volume) string {
	if v.Size <= 0 {
		return "-"
	}
	return fmt.Sprintf("%5.1f%%", 100*float64(volumeUsed(v))/float64(v.Size))
}

// volumeUsed is the space not free for the store's writers: the file
// systems' used space, or size minus free when that is more (space
// reserved for root counts as used: VMs cannot grow into it).
func volumeUsed(v *Volume) int64 {
	used := max(v.Used, v.Size-v.Free)
	return min(max(used, 0), max(v.Size, 0))
}

// sizeWidth fits every human() value ("1023.9 GiB").
const sizeWidth = 10

func rightPad(s string) string { return fmt.Sprintf("%*s", sizeWidth, s) }

func sizeCell(n int64) string { return rightPad(human(n)) }

func sizeCellOr(d *Disk, f func(*Disk) int64) string {
	if d == nil {
		return rightPad("?")
	}
	return sizeCell(f(d))
}

func padRight(s string, w int) string {
	if n := utf8.RuneCountInString(s); n < w {
		return s + strings.Repeat(" ", w-n)
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// cleanText makes s safe for a terminal and for tabwriter: control
// characters (tabs, newlines, escape sequences) and invalid UTF-8 are
// written as Go escapes.
func cleanText(s string) string {
	clean := true
	for _, c := range s {
		if c == utf8.RuneError || unicode.IsControl(c) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		c, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsControl(c):
			q := strconv.QuoteRune(c)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
