package vhd

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
)

// PathMap maps Windows path prefixes found in parent locators and VM configs
// (`C:\VMs`, `\\?\Volume{guid}\`, `\\server\share`) to local directories.
type PathMap []PathMapping

// PathMapping is one `WINDOWS=LOCAL` pair.
type PathMapping struct {
	Windows string // normalized: backslashes, no trailing backslash, no \\?\ prefix
	Local   string
}

// ParsePathMapping parses `C:\VMs=/mnt/c/VMs`.
func ParsePathMapping(s string) (PathMapping, error) {
	i := strings.LastIndex(s, "=")
	if i <= 0 || i == len(s)-1 {
		return PathMapping{}, fmt.Errorf("path map %q: want WINDOWS_PREFIX=LOCAL_DIR, e.g. 'C:\\VMs=/mnt/c/VMs'", s)
	}
	w := normWin(s[:i])
	if w == "" {
		return PathMapping{}, fmt.Errorf("path map %q: empty Windows prefix", s)
	}
	return PathMapping{Windows: w, Local: filepath.Clean(s[i+1:])}, nil
}

// normWin normalizes a Windows path for prefix comparison.
func normWin(p string) string {
	p = strings.ReplaceAll(p, "/", `\`)
	if strings.HasPrefix(p, `\\?\UNC\`) {
		p = `\\` + p[len(`\\?\UNC\`):]
	} else if strings.HasPrefix(p, `\\?\`) && !strings.HasPrefix(strings.ToLower(p), `\\?\volume{`) {
		p = p[len(`\\?\`):]
	}
	return strings.TrimRight(p, `\`)
}

// isWinAbs reports whether p is an absolute Windows path (drive, UNC, \\?\).
func isWinAbs(p string) bool {
	if len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/') {
		return true
	}
	return strings.HasPrefix(p, `\\`)
}

// isDrive reports whether p is a bare drive ("E:", a drive root once
// normalized).
func isDrive(p string) bool {
	return len(p) == 2 && p[1] == ':' && (p[0]|0x20) >= 'a' && (p[0]|0x20) <= 'z'
}

// ToLocal maps a Windows absolute path to a local path. ok is false when no
// mapping applies. On Windows an unmapped path is used as it is.
func (m PathMap) ToLocal(win string) (string, bool) {
	n := normWin(win)
	best := -1
	for i, pm := range m {
		w := pm.Windows
		if len(n) >= len(w) && strings.EqualFold(n[:len(w)], w) && (len(n) == len(w) || n[len(w)] == '\\') {
			if best < 0 || len(w) > len(m[best].Windows) {
				best = i
			}
		}
	}
	if best >= 0 {
		rest := strings.TrimLeft(n[len(m[best].Windows):], `\`)
		parts := strings.Split(rest, `\`)
		return filepath.Join(append([]string{m[best].Local}, parts...)...), true
	}
	if runtime.GOOS == "windows" && isWinAbs(n) {
		return n, true
	}
	return "", false
}

// ToWindows maps a local absolute path to the Windows path it has on the Hyper-V
// host, through the reverse of the map. On Windows the path is its own
// Windows path. ok is false when nothing maps it.
func (m PathMap) ToWindows(local string) (string, bool) {
	if runtime.GOOS == "windows" {
		if abs, err := filepath.Abs(local); err == nil {
			return abs, true
		}
	}
	l := filepath.Clean(local)
	best := -1
	for i, pm := range m {
		if (isWinAbs(pm.Windows) || isDrive(pm.Windows)) && (l == pm.Local || strings.HasPrefix(l, strings.TrimRight(pm.Local, string(filepath.Separator))+string(filepath.Separator))) {
			if best < 0 || len(pm.Local) > len(m[best].Local) {
				best = i
			}
		}
	}
	if best < 0 {
		return "", false
	}
	rest := strings.TrimPrefix(l[len(m[best].Local):], string(filepath.Separator))
	if rest == "" {
		if isDrive(m[best].Windows) {
			return m[best].Windows + `\`, true
		}
		return m[best].Windows, true
	}
	return m[best].Windows + `\` + strings.ReplaceAll(rest, string(filepath.Separator), `\`), true
}

// winRelative returns the Windows-form relative path (`.\x.vhdx`,
// `..\dir\x.vhdx`) from dir of child to parent.
func winRelative(childPath, parentPath string) (string, error) {
	cd, err := filepath.Abs(filepath.Dir(childPath))
	if err != nil {
		return "", err
	}
	pa, err := filepath.Abs(parentPath)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(cd, pa)
	if err != nil {
		return "", err
	}
	rel = strings.ReplaceAll(rel, string(filepath.Separator), `\`)
	if !strings.HasPrefix(rel, `..\`) {
		rel = `.\` + rel
	}
	return rel, nil
}

// winToLocalRelative turns a stored Windows relative path into a local
// path relative to the child's directory.
func winToLocalRelative(childPath, rel string) string {
	r := strings.ReplaceAll(rel, `\`, "/")
	r = strings.TrimPrefix(r, "./")
	return filepath.Join(filepath.Dir(childPath), filepath.FromSlash(r))
}

// winBase returns the last component of a Windows path.
func winBase(p string) string {
	p = strings.ReplaceAll(p, "/", `\`)
	if i := strings.LastIndex(p, `\`); i >= 0 {
		return p[i+1:]
	}
	return p
}

// String is the mapping as ParsePathMapping reads it.
func (m PathMapping) String() string { return m.Windows + "=" + m.Local }
