package vm

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// fsView answers the questions configuration parsing asks of the file
// system (is this a file, what does this folder hold) from what a scan has
// already read: the folders it listed and the files it stat'ed. Anything it
// has not seen is asked of the file system (once per folder). A nil *fsView
// asks the file system every time.
type fsView struct {
	mu    sync.Mutex
	dirs  map[string]dirList     // clean path → os.ReadDir result
	stats map[string]os.FileInfo // clean path → os.Stat result (regular files)
}

type dirList struct {
	ents []os.DirEntry
	err  error
}

func newFSView() *fsView {
	return &fsView{dirs: map[string]dirList{}, stats: map[string]os.FileInfo{}}
}

func (v *fsView) putDir(dir string, ents []os.DirEntry, err error) {
	v.mu.Lock()
	v.dirs[filepath.Clean(dir)] = dirList{ents, err}
	v.mu.Unlock()
}

func (v *fsView) putStat(p string, fi os.FileInfo) {
	v.mu.Lock()
	v.stats[filepath.Clean(p)] = fi
	v.mu.Unlock()
}

// readDir is os.ReadDir(dir).
func (v *fsView) readDir(dir string) ([]os.DirEntry, error) {
	if v == nil {
		return os.ReadDir(dir)
	}
	k := filepath.Clean(dir)
	v.mu.Lock()
	l, ok := v.dirs[k]
	v.mu.Unlock()
	if !ok {
		l.ents, l.err = os.ReadDir(dir)
		v.putDir(k, l.ents, l.err)
	}
	return l.ents, l.err
}

// stat is os.Stat(p).
func (v *fsView) stat(p string) (os.FileInfo, error) {
	if v != nil {
		v.mu.Lock()
		fi, ok := v.stats[filepath.Clean(p)]
		v.mu.Unlock()
		if ok {
			return fi, nil
		}
	}
	return os.Stat(p)
}

// isFile reports whether p is (or links to) a regular file.
func (v *fsView) isFile(p string) bool {
	fi, err := v.stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// noFoldMatch reports that dir is listed and holds no entry named name
// case-insensitively, so neither name nor a case variant of it exists.
func (v *fsView) noFoldMatch(dir, name string) bool {
	if v == nil {
		return false
	}
	ents, err := v.readDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if strings.EqualFold(e.Name(), name) {
			return false
		}
	}
	return true
}
