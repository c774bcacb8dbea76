package vm

import (
	"os"
	"runtime"
	"sort"
	"strings"
)

// HostRegistry is the host's VM registry, data.vmcx
// (`%ProgramData%\Microsoft\Windows\Hyper-V\data.vmcx`, root `Configurations`).
type HostRegistry struct {
	Path string
	// VMs lists `Configurations/VirtualMachines/_<VMID>_` = path of each
	// registered VM's .vmcx.
	VMs []HostVM
	// Cache lists `Configurations/VirtualMachinesCache` (the host's cached
	// copies under ProgramData).
	Cache                []HostVM
	PossiblyInconsistent bool
	Warnings             []string
}

// HostVM is one registered VM.
type HostVM struct {
	ID         string // VM GUID, uppercase
	ConfigPath string // Windows path of the .vmcx, as stored
	LocalPath  string // mapped local path ("" when unmapped)
	Resolved   string // RuleMap or RuleNative when LocalPath is set
	Exists     bool
}

// ParseHostRegistry reads a host registry (data.vmcx) and maps each VM's
// configuration path through pm (which may be nil).
func ParseHostRegistry(path string, pm PathMapper) (*HostRegistry, error) {
	ct, err := OpenContainer(path, nil)
	if err != nil {
		return nil, err
	}
	root := ct.Root("Configurations")
	if root == nil {
		return nil, &Error{Path: path, Offset: -1, Msg: "no `Configurations` root key: not a host registry (data.vmcx)", Err: ErrNotConfig}
	}
	h := &HostRegistry{Path: path, PossiblyInconsistent: ct.PossiblyInconsistent || len(ct.Problems) > 0}
	h.Warnings = append(h.Warnings, ct.Warnings...)
	for _, p := range ct.Problems {
		h.Warnings = append(h.Warnings, p.Error())
	}
	h.VMs = hostVMs(root.Child("VirtualMachines"), pm)
	h.Cache = hostVMs(root.Child("VirtualMachinesCache"), pm)
	return h, nil
}

func hostVMs(k *Key, pm PathMapper) []HostVM {
	if k == nil {
		return nil
	}
	var out []HostVM
	for _, c := range k.Children {
		id, ok := sectionGUID(c.Name)
		if !ok {
			continue
		}
		v := HostVM{ID: strings.ToUpper(id), ConfigPath: c.String()}
		v.LocalPath, v.Resolved, v.Exists = resolveMapped(v.ConfigPath, pm)
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// resolveMapped maps win through pm, or uses it as is on Windows.
func resolveMapped(win string, pm PathMapper) (local, rule string, exists bool) {
	if win == "" {
		return "", "", false
	}
	if pm != nil {
		if l, ok := pm.ToLocal(win); ok && l != "" {
			return l, RuleMap, isFile(l)
		}
	}
	if runtime.GOOS == "windows" && isWinAbs(win) {
		_, err := os.Stat(win)
		return win, RuleNative, err == nil
	}
	return "", "", false
}
