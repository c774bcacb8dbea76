package space

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// WriteProm writes the report as Prometheus metrics in the text exposition
// format, for node_exporter's textfile collector (write it to a temporary
// file and rename it into the collector's directory: the collector reads it
// concurrently). Every metric is prefixed hvsnap_, has HELP and TYPE lines
// and no timestamps; label values are escaped as the format requires.
//
// Volumes carry the label volume (the mount point), VMs vm (name) and vm_id.
// hvsnap_volume_verdict is 0 ok, 1 warning, 2 critical;
// hvsnap_volume_paused_risk is 1 when the volume is critical (running VMs
// may pause, or a merge cannot run there). hvsnap_findings counts findings
// by code, severity and volume (only combinations that occur);
// hvsnap_findings_total counts them per severity (always all three).
func WriteProm(w io.Writer, r *Report) error {
	if r == nil {
		return fmt.Errorf("space: WriteProm: nil report")
	}
	p := &promWriter{w: bufio.NewWriter(w)}
	idx := reportDiskMap(r)

	vols := r.Volumes
	p.family("hvsnap_volume_info", "gauge", "Volumes holding files of the store (value 1), with device and file system type.")
	for _, v := range vols {
		p.sample(1, "volume", v.Mount, "device", v.Device, "fstype", v.FSType)
	}
	volGauge := func(name, help string, f func(*Volume) float64) {
		p.family(name, "gauge", help)
		for _, v := range vols {
			p.sample(f(v), "volume", v.Mount)
		}
	}
	volGauge("hvsnap_volume_size_bytes", "Size of the volume in bytes.", func(v *Volume) float64 { return float64(v.Size) })
	volGauge("hvsnap_volume_free_bytes", "Free bytes on the volume available to unprivileged writers.", func(v *Volume) float64 { return float64(v.Free) })
	volGauge("hvsnap_volume_disk_bytes", "Bytes allocated on the volume by virtual disk files.", func(v *Volume) float64 { return float64(v.DiskBytes) })
	volGauge("hvsnap_volume_disk_files", "Virtual disk files on the volume.", func(v *Volume) float64 { return float64(v.DiskFiles) })
	volGauge("hvsnap_volume_merge_need_bytes", "Largest peak extra space a checkpoint merge on the volume needs now.", func(v *Volume) float64 { return float64(v.MergeNeed) })
	volGauge("hvsnap_volume_diff_growth_bytes", "Bytes the differencing disks VMs write to on the volume can still grow by.", func(v *Volume) float64 { return float64(v.DiffGrowth) })
	volGauge("hvsnap_volume_verdict", "Verdict of the volume: 0 ok, 1 warning, 2 critical.", func(v *Volume) float64 { return float64(v.Verdict.Rank()) })
	volGauge("hvsnap_volume_paused_risk", "1 when the volume is critical: running VMs may pause for lack of space, or a merge cannot run there.", func(v *Volume) float64 {
		if v.Verdict == VerdictCritical {
			return 1
		}
		return 0
	})

	// VMs: name and ID; two configs with the same ID (a copied store) keep
	// only the first so that no series is duplicated.
	var vms []*VM
	seenVM := map[[2]string]bool{}
	for _, v := range r.VMs {
		k := [2]string{v.Name, v.ID}
		if !seenVM[k] {
			seenVM[k] = true
			vms = append(vms, v)
		}
	}
	vmGauge := func(name, help string, f func(*VM) float64) {
		p.family(name, "gauge", help)
		for _, v := range vms {
			p.sample(f(v), "vm", v.Name, "vm_id", v.ID)
		}
	}
	vmGauge("hvsnap_vm_allocated_bytes", "Bytes allocated by the VM's disk and state files.", func(v *VM) float64 { return float64(v.Allocated) })
	vmGauge("hvsnap_vm_reclaimable_bytes", "Bytes deleting the VM's off-branch checkpoint disks would free.", func(v *VM) float64 { return float64(v.Reclaimable) })
	vmGauge("hvsnap_vm_merge_need_bytes", "Peak extra space collapsing all the VM's checkpoints now needs.", func(v *VM) float64 { return float64(v.MergeNeed) })
	vmGauge("hvsnap_vm_checkpoints", "Checkpoint configurations of the VM.", func(v *VM) float64 { return float64(len(v.Checkpoints)) })
	vmGauge("hvsnap_vm_checkpoint_depth", "Deepest differencing chain of the VM (differencing layers above the base disk).", func(v *VM) float64 { return float64(vmMaxDepth(idx, v)) })
	vmGauge("hvsnap_vm_merge_pending", "1 when a deleted checkpoint's merge has not run (config flag or chain evidence).", func(v *VM) float64 {
		if vmMergePending(r, v) {
			return 1
		}
		return 0
	})

	type fkey struct{ code, sev, vol string }
	counts := map[fkey]int{}
	bySev := map[string]int{string(SevError): 0, string(SevWarning): 0, string(SevInfo): 0}
	for _, f := range r.Findings {
		counts[fkey{f.Code, string(f.Severity), f.Volume}]++
		bySev[string(f.Severity)]++
	}
	keys := make([]fkey, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.code != b.code {
			return a.code < b.code
		}
		if a.sev != b.sev {
			return a.sev < b.sev
		}
		return a.vol < b.vol
	})
	p.family("hvsnap_findings", "gauge", "Findings by code, severity and volume (volume empty when the finding is not tied to one).")
	for _, k := range keys {
		p.sample(float64(counts[k]), "code", k.code, "severity", k.sev, "volume", k.vol)
	}
	sevs := make([]string, 0, len(bySev))
	for s := range bySev {
		sevs = append(sevs, s)
	}
	sort.Strings(sevs)
	p.family("hvsnap_findings_total", "gauge", "Findings by severity.")
	for _, s := range sevs {
		p.sample(float64(bySev[s]), "severity", s)
	}

	s := r.Summary
	p.family("hvsnap_space_vms", "gauge", "VMs found.")
	p.sample(float64(s.VMs))
	p.family("hvsnap_space_disks", "gauge", "Virtual disk files found.")
	p.sample(float64(s.Disks))
	p.family("hvsnap_space_disk_bytes", "gauge", "Bytes allocated by all disk files.")
	p.sample(float64(s.DiskBytes))
	p.family("hvsnap_space_checkpoint_bytes", "gauge", "Bytes allocated by differencing (checkpoint) disks.")
	p.sample(float64(s.CheckpointBytes))
	p.family("hvsnap_space_reclaimable_bytes", "gauge", "Bytes reclaimable from orphaned disks and off-branch checkpoint leaves.")
	p.sample(float64(s.ReclaimableBytes))
	p.family("hvsnap_space_worst_verdict", "gauge", "Worst volume verdict: 0 ok, 1 warning, 2 critical.")
	p.sample(float64(worstOf(r).Rank()))
	p.family("hvsnap_space_scan_warnings", "gauge", "Problems met while scanning (unreadable configs, skipped folders).")
	p.sample(float64(len(r.Warnings)))
	p.family("hvsnap_space_last_run_timestamp_seconds", "gauge", "When the analysis ran (Unix time).")
	ts := 0.0
	if !r.GeneratedAt.IsZero() {
		ts = float64(r.GeneratedAt.UnixNano()) / 1e9
	}
	p.sample(ts)

	if p.err != nil {
		return p.err
	}
	return p.w.Flush()
}

type promWriter struct {
	w    *bufio.Writer
	name string
	err  error
}

func (p *promWriter) family(name, typ, help string) {
	p.name = name
	p.printf("# HELP %s %s\n# TYPE %s %s\n", name, promEscapeHelp(help), name, typ)
}

// sample writes the current family's sample with label name/value pairs.
func (p *promWriter) sample(v float64, labels ...string) {
	var b strings.Builder
	b.WriteString(p.name)
	if len(labels) > 0 {
		b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(labels[i])
			b.WriteString(`="`)
			b.WriteString(promEscapeLabel(labels[i+1]))
			b.WriteByte('"')
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
		b.WriteString(strconv.FormatInt(int64(v), 10))
	} else {
		b.WriteString(strconv.FormatFloat(v, 'f', -1, 64))
	}
	b.WriteByte('\n')
	p.printf("%s", b.String())
}

func (p *promWriter) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

// promEscapeLabel escapes a label value: backslash, double quote and line
// feed. Invalid UTF-8 is replaced (the format requires UTF-8).
func promEscapeLabel(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// promEscapeHelp escapes HELP text: backslash and line feed.
func promEscapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}
