// Package lock takes exclusive, non-blocking locks on files, so that a disk
// held by a running VM or by another hvsnap job is refused as "in use" instead
// of being modified under its owner.
//
// On Unix the lock is flock(2) LOCK_EX|LOCK_NB on a separate descriptor
// (advisory: it detects other hvsnap jobs and any tool that locks the same
// way). On Windows the file is opened with no sharing and locked with
// LockFileEx, which fails while Hyper-V's worker process (vmwp.exe) holds the
// disk open.
package lock

import (
	"errors"
	"fmt"
	"os"
	"sort"
)

// ErrInUse reports a file that another process holds.
var ErrInUse = errors.New("in use")

// InUseError names the file that is in use.
type InUseError struct {
	Path string
	Err  error
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("%s: in use (held open or locked by another process: a running VM or another hvsnap job): %v", e.Path, e.Err)
}

func (e *InUseError) Unwrap() error { return ErrInUse }

// Lock is one held file lock.
type Lock struct {
	path string
	f    *os.File
}

// Path is the locked file.
func (l *Lock) Path() string { return l.path }

// File takes an exclusive lock on path without waiting. A lock held
// elsewhere gives an *InUseError (errors.Is(err, ErrInUse)).
func File(path string) (*Lock, error) {
	f, err := openForLock(path)
	if err != nil {
		if isSharingViolation(err) {
			return nil, &InUseError{Path: path, Err: err}
		}
		return nil, err
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if isBusy(err) {
			return nil, &InUseError{Path: path, Err: err}
		}
		return nil, fmt.Errorf("%s: lock: %w", path, err)
	}
	return &Lock{path: path, f: f}, nil
}

// Release drops the lock.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	unlockFile(l.f)
	err := l.f.Close()
	l.f = nil
	return err
}

// Set is a group of locks taken together and released together.
type Set struct {
	locks []*Lock
}

// Files locks every path (in sorted order, so two jobs never deadlock); on
// the first failure the locks already taken are released.
func Files(paths ...string) (*Set, error) {
	ps := append([]string(nil), paths...)
	sort.Strings(ps)
	s := &Set{}
	seen := map[string]bool{}
	for _, p := range ps {
		if seen[p] {
			continue
		}
		seen[p] = true
		l, err := File(p)
		if err != nil {
			s.Release()
			return nil, err
		}
		s.locks = append(s.locks, l)
	}
	return s, nil
}

// Add locks one more file into the set.
func (s *Set) Add(path string) error {
	for _, l := range s.locks {
		if l.path == path {
			return nil
		}
	}
	l, err := File(path)
	if err != nil {
		return err
	}
	s.locks = append(s.locks, l)
	return nil
}

// Drop releases the lock on one file (before it is removed).
func (s *Set) Drop(path string) {
	for i, l := range s.locks {
		if l.path == path {
			l.Release()
			s.locks = append(s.locks[:i], s.locks[i+1:]...)
			return
		}
	}
}

// Release drops every lock of the set.
func (s *Set) Release() {
	if s == nil {
		return
	}
	for _, l := range s.locks {
		l.Release()
	}
	s.locks = nil
}
