package space

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"path/filepath"
	"strings"
	"time"
)

//go:embed report.html.tmpl
var reportHTML string

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"human": human,
	"pct":   func(f float64) string { return fmt.Sprintf("%.3f%%", f) },
}).Parse(reportHTML))

// WriteHTML writes the report as one self-contained HTML page for support
// tickets: a chart of volume usage (used and free space, with the merge
// need and the differencing growth still possible marked), each VM's
// checkpoint tree with sizes, the findings, the summary, and when and where
// it was generated. Styles and the small script are inline; the page loads
// nothing (its Content-Security-Policy forbids any fetch). Every value from
// the model is escaped by html/template.
//
// The script marks the page as rendered with data-hvsnap="ok" on the html
// element (data-hvsnap="error: ..." when a script error happened); the
// browser test reads it.
func WriteHTML(w io.Writer, r *Report) error {
	if r == nil {
		return fmt.Errorf("space: WriteHTML: nil report")
	}
	return reportTmpl.Execute(w, newHTMLView(r))
}

type htmlView struct {
	R         *Report
	Title     string
	Generated string
	Worst     string // verdict class
	Cards     []htmlCard
	Volumes   []htmlVolume
	VMs       []htmlVM
	Unattach  []*htmlNode
	Findings  []htmlFinding
	Counts    map[string]int // findings per severity class
	Th        []htmlKV
	Schema    int
}

type htmlCard struct {
	Label, Value, Sub string
	Class             string
}

type htmlKV struct{ K, V string }

type htmlVolume struct {
	V                *Volume
	Class            string // ok | warning | critical | unknown
	Known            bool   // size known
	UsedPct, FreePct string // of the size, for the labels
	UsedW            float64
	MergeX, MergeW   float64
	MergeOver        bool // the merge need exceeds free space
	GrowthX, GrowthW float64
	GrowthOver       bool
	Free, Size, Used string
	Merge, Growth    string
	DiskBytes        string
	Targets          string
}

type htmlVM struct {
	V            *VM
	MergePending bool
	MaxDepth     int
	Roots        []*htmlNode
	Findings     int
}

type htmlNode struct {
	Path, Name, Kind string
	Alloc, Data      string
	Growth           string
	Age              string
	State            string // live | off-branch | unattached | base
	UsedBy           []htmlChip
	Notes            []string
	BarW             float64 // allocated relative to the largest disk of the tree set
	Children         []*htmlNode
}

// htmlChip is one UsedBy entry: Kind "vm" or "checkpoint" (or "" for
// anything else) and the name.
type htmlChip struct{ Kind, Label string }

type htmlFinding struct {
	F     Finding
	Class string // error | warning | info
	Bytes string
}

func newHTMLView(r *Report) *htmlView {
	idx := reportDiskMap(r)
	worst := worstOf(r)
	v := &htmlView{R: r, Worst: verdictClass(worst), Schema: r.Schema, Generated: fmtTime(r.GeneratedAt),
		Counts: map[string]int{}}
	v.Title = "hvsnap space report"
	if r.Host != "" {
		v.Title += " — " + r.Host
	}
	if !r.GeneratedAt.IsZero() {
		v.Title += " — " + r.GeneratedAt.UTC().Format("2006-01-02 15:04 UTC")
	}
	s := r.Summary
	v.Cards = []htmlCard{
		{Label: "Worst verdict", Value: strings.ToUpper(string(worst)), Class: verdictClass(worst),
			Sub: fmt.Sprintf("%d volume(s)", len(r.Volumes))},
		{Label: "VMs", Value: fmt.Sprint(s.VMs), Sub: fmt.Sprintf("%d disk files", s.Disks)},
		{Label: "Disk files", Value: human(s.DiskBytes), Sub: "allocated on the host"},
		{Label: "Checkpoints", Value: human(s.CheckpointBytes), Sub: "in differencing disks"},
		{Label: "Reclaimable", Value: human(s.ReclaimableBytes), Sub: "orphans and off-branch leaves"},
		{Label: "Findings", Value: fmt.Sprint(s.Findings), Sub: ""},
	}
	for _, f := range r.Findings {
		v.Counts[severityClass(f.Severity)]++
	}
	v.Cards[5].Sub = fmt.Sprintf("%d error, %d warning, %d info", v.Counts["error"], v.Counts["warning"], v.Counts["info"])
	if v.Counts["error"] > 0 {
		v.Cards[5].Class = "critical"
	} else if v.Counts["warning"] > 0 {
		v.Cards[5].Class = "warning"
	}

	for _, vol := range r.Volumes {
		v.Volumes = append(v.Volumes, newHTMLVolume(vol))
	}
	for _, vm := range r.VMs {
		hv := htmlVM{V: vm, MergePending: vmMergePending(r, vm), MaxDepth: vmMaxDepth(idx, vm)}
		hv.Roots = htmlTrees(vm.Chains, idx, true, r.GeneratedAt)
		for _, f := range r.Findings {
			if findingNamesVM(f, vm) {
				hv.Findings++
			}
		}
		v.VMs = append(v.VMs, hv)
	}
	v.Unattach = htmlTrees(r.Unattached, idx, false, r.GeneratedAt)
	for _, f := range r.Findings {
		hf := htmlFinding{F: f, Class: severityClass(f.Severity), Bytes: "—"}
		if f.Bytes != 0 {
			hf.Bytes = human(f.Bytes)
		}
		v.Findings = append(v.Findings, hf)
	}
	th := r.Thresholds
	v.Th = []htmlKV{
		{"Critical below", human(th.CriticalFree) + " free"},
		{"Warning below", human(th.WarningFree) + " free"},
		{"Deep chain", fmt.Sprintf("more than %d differencing layers", th.DeepChain)},
		{"Old checkpoint", fmt.Sprintf("older than %s", durationText(th.OldCheckpointAge))},
		{"Saved state", "from " + human(th.SavedStateMin)},
	}
	return v
}

func newHTMLVolume(vol *Volume) htmlVolume {
	h := htmlVolume{V: vol, Class: verdictClass(vol.Verdict), Free: human(vol.Free), Size: human(vol.Size),
		Merge: human(vol.MergeNeed), Growth: human(vol.DiffGrowth), DiskBytes: human(vol.DiskBytes),
		Targets: strings.Join(vol.RelocationTargets, ", ")}
	if vol.Size <= 0 {
		return h
	}
	h.Known = true
	used := volumeUsed(vol)
	h.Used = human(used)
	frac := func(n int64) float64 { return 100 * float64(n) / float64(vol.Size) }
	h.UsedW = frac(used)
	h.UsedPct = fmt.Sprintf("%.1f%%", h.UsedW)
	h.FreePct = fmt.Sprintf("%.1f%%", 100-h.UsedW)
	room := 100 - h.UsedW
	h.MergeX, h.GrowthX = h.UsedW, h.UsedW
	h.MergeW = min(frac(vol.MergeNeed), room)
	h.MergeOver = vol.MergeNeed > vol.Free
	h.GrowthW = min(frac(vol.DiffGrowth), room)
	h.GrowthOver = vol.DiffGrowth > vol.Free
	return h
}

// htmlTrees converts chain trees; bars are relative to the largest disk.
func htmlTrees(ts []*Tree, idx map[string]*Disk, attached bool, now time.Time) []*htmlNode {
	var biggest int64 = 1
	for _, t := range ts {
		for _, tr := range flattenTree(t, idx) {
			if tr.d != nil {
				biggest = max(biggest, tr.d.Allocated)
			}
		}
	}
	seen := map[*Tree]bool{}
	var conv func(t *Tree, dir string, level int) *htmlNode
	conv = func(t *Tree, dir string, level int) *htmlNode {
		seen[t] = true
		tr := treeRow{tree: t, d: idx[t.Path], level: level}
		n := &htmlNode{Path: t.Path, Name: t.Path, Kind: tr.kind(), Growth: tr.growth(), Age: tr.age(now),
			State: tr.state(attached), Alloc: "?", Data: "?"}
		if level > 0 && filepath.Dir(t.Path) == dir {
			n.Name = filepath.Base(t.Path)
		}
		if n.State == "-" {
			n.State = "base"
		}
		if d := tr.d; d != nil {
			n.Alloc, n.Data = human(d.Allocated), human(d.DataBytes)
			n.BarW = 100 * float64(d.Allocated) / float64(biggest)
			for _, u := range d.UsedBy {
				k, name, ok := strings.Cut(u, ":")
				switch {
				case ok && k == "vm":
					n.UsedBy = append(n.UsedBy, htmlChip{Kind: "vm", Label: name})
				case ok && k == "checkpoint":
					n.UsedBy = append(n.UsedBy, htmlChip{Kind: "checkpoint", Label: name})
				default:
					n.UsedBy = append(n.UsedBy, htmlChip{Label: u})
				}
			}
		}
		n.Notes = tr.problems()
		for _, c := range t.Children {
			if c != nil && !seen[c] {
				n.Children = append(n.Children, conv(c, dir, level+1))
			}
		}
		return n
	}
	var out []*htmlNode
	for _, t := range ts {
		if t != nil {
			out = append(out, conv(t, filepath.Dir(t.Path), 0))
		}
	}
	return out
}

func verdictClass(v Verdict) string {
	switch v {
	case VerdictOK, VerdictWarning, VerdictCritical:
		return string(v)
	}
	return "unknown"
}

func severityClass(s Severity) string {
	switch s {
	case SevError, SevWarning, SevInfo:
		return string(s)
	}
	return "info"
}

// durationText renders seconds as "30 days", "12 hours", "90 seconds".
func durationText(sec int64) string {
	switch {
	case sec > 0 && sec%86400 == 0:
		return fmt.Sprintf("%d days", sec/86400)
	case sec > 0 && sec%3600 == 0:
		return fmt.Sprintf("%d hours", sec/3600)
	}
	return fmt.Sprintf("%d seconds", sec)
}
