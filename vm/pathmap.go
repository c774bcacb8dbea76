package vm

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// PathMapper maps a Windows path found in a configuration (`C:\VMs\a.vhdx`)
// to a local path. ok is false when no mapping applies. The lead's vhd.PathMap
// satisfies it.
type PathMapper interface {
	ToLocal(win string) (local string, ok bool)
}

// PathMapFunc adapts a function to [PathMapper].
type PathMapFunc func(win string) (string, bool)

// ToLocal calls f.
func (f PathMapFunc) ToLocal(win string) (string, bool) { return f(win) }

// Rules that resolve a Windows path to a local file, recorded in
// DriveRef.Resolved and HostVM.Resolved.
const (
	RuleMap       = "map"        // through the PathMapper
	RuleNative    = "native"     // the Windows path itself (on Windows)
	RuleVMRoot    = "vm-root"    // <VM root>/Virtual Hard Disks/<name> or <VM root>/<name>
	RuleConfigDir = "config-dir" // <name> in the configuration's own folder
)

// ResolvePath finds the local file for the Windows path win named in the
// configuration at configPath. It tries, in order: the path map (when the
// mapped file exists, its name compared case-insensitively), the path itself on Windows, then the file name in the
// VM's folder tree: `<VM root>/Virtual Hard Disks/<name>`, the configuration's
// folder, `<VM root>/<name>` (file names compared case-insensitively, as
// Windows does). The VM root is the folder holding `Virtual Machines\` or
// `Snapshots\`.
//
// It returns the local path, the rule that found it and whether the file
// exists. When nothing exists, local is the mapped path (rule RuleMap) if the
// map applied, else "".
func ResolvePath(win, configPath string, pm PathMapper) (local, rule string, exists bool) {
	return resolvePath(nil, win, configPath, pm)
}

// resolvePath is ResolvePath asking v about the file system.
func resolvePath(v *fsView, win, configPath string, pm PathMapper) (local, rule string, exists bool) {
	if strings.TrimSpace(win) == "" {
		return "", "", false
	}
	var mapped string
	if pm != nil {
		if l, ok := pm.ToLocal(win); ok && l != "" {
			if v.isFile(l) {
				return l, RuleMap, true
			}
			// Windows names are case-insensitive; a copy on Linux is not.
			if p, ok := v.findFold(filepath.Dir(l), filepath.Base(l)); ok {
				return p, RuleMap, true
			}
			mapped = l
		}
	}
	if runtime.GOOS == "windows" && isWinAbs(win) && v.isFile(win) {
		return win, RuleNative, true
	}
	if name := winBase(win); name != "" && name != "." && name != ".." && configPath != "" {
		dir := filepath.Dir(configPath)
		root := vmRoot(configPath)
		type cand struct{ dir, rule string }
		cands := []cand{}
		if root != "" {
			cands = append(cands, cand{filepath.Join(root, "Virtual Hard Disks"), RuleVMRoot})
		}
		cands = append(cands, cand{dir, RuleConfigDir})
		if root != "" {
			cands = append(cands, cand{root, RuleVMRoot})
		}
		for _, c := range cands {
			if p, ok := v.findFold(c.dir, name); ok {
				return p, c.rule, true
			}
		}
	}
	if mapped != "" {
		return mapped, RuleMap, false
	}
	return "", "", false
}

// vmRoot returns the VM root folder of a configuration file: the parent of its
// `Virtual Machines` or `Snapshots` folder, or "" for another layout.
func vmRoot(configPath string) string {
	dir := filepath.Dir(configPath)
	switch strings.ToLower(filepath.Base(dir)) {
	case "virtual machines", "snapshots":
		return filepath.Dir(dir)
	}
	return ""
}

// findFold returns dir/name if it is a file, else the file in dir whose name
// equals name case-insensitively.
func findFold(dir, name string) (string, bool) { return (*fsView)(nil).findFold(dir, name) }

func (v *fsView) findFold(dir, name string) (string, bool) {
	if v.noFoldMatch(dir, name) {
		return "", false
	}
	p := filepath.Join(dir, name)
	if v.isFile(p) {
		return p, true
	}
	ents, err := v.readDir(dir)
	if err != nil {
		return "", false
	}
	for _, e := range ents {
		if strings.EqualFold(e.Name(), name) {
			q := filepath.Join(dir, e.Name())
			if v.isFile(q) {
				return q, true
			}
		}
	}
	return "", false
}

// isFile reports whether p is (or links to) a regular file.
func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// isWinAbs reports whether p is an absolute Windows path (drive, UNC, \\?\).
func isWinAbs(p string) bool {
	if len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/') {
		return true
	}
	return strings.HasPrefix(p, `\\`)
}

// winBase returns the last component of a Windows path ("" for `C:\`).
func winBase(p string) string {
	p = strings.TrimRight(strings.ReplaceAll(p, "/", `\`), `\`)
	if i := strings.LastIndex(p, `\`); i >= 0 {
		p = p[i+1:]
	}
	if len(p) == 2 && p[1] == ':' {
		return ""
	}
	return p
}
