package merge

import (
	"context"

	"github.com/hvsnap/hvsnap/space"
	"github.com/hvsnap/hvsnap/vm"
)

// ClearPendingFlags is for after a merge run of p: it sets
// disk_merge_pending to False in the XML configuration of the VM whose
// live chain holds the merge's target, when the store (the plan's roots,
// analysed again) shows no merge left pending on that VM's chains, nothing
// about its disks in doubt and no unfinished merge — as Hyper-V clears the
// flag once it has merged. VMCX is never written (Hyper-V clears the flag
// itself when it next opens the VM). It returns the configurations changed.
func ClearPendingFlags(p *Plan, o *Options) ([]string, error) {
	if o == nil {
		o = &Options{}
	}
	merged := false
	for _, s := range p.Steps {
		merged = merged || !s.Discard
	}
	if !merged {
		return nil, nil
	}
	rp, err := space.Analyze(context.Background(), p.roots(), space.Options{PathMap: o.PathMap, Volumes: o.volumes()})
	if err != nil {
		return nil, err
	}
	if len(pendingJournals(rp)) > 0 {
		return nil, nil
	}
	pending, doubt := flagState(rp)
	disks := diskIndex(rp)
	var changed []string
	for _, v := range rp.VMs {
		// Only the VM whose live chain holds the merge's target (not every
		// VM made from the same template).
		if !v.DiskMergePending || v.ConfigKind != vm.KindXML || pending[v.Name] || doubt[v.Name] || doubt[""] || !onChain(liveChain(v, disks), p.Into) {
			continue
		}
		ok, err := vm.ClearXMLMergePending(v.ConfigPath)
		if err != nil {
			return changed, err
		}
		if ok {
			changed = append(changed, v.ConfigPath)
		}
	}
	return changed, nil
}

// onChain reports whether path (canonical) is one of the chain's disks.
func onChain(chain map[string]bool, path string) bool {
	for x := range chain {
		if canon(x) == path {
			return true
		}
	}
	return false
}
