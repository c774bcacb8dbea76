package vhd

import (
	"errors"
	"sync"
)

// errInjected is what a faultFile returns once its budget is spent.
var errInjected = errors.New("injected fault: simulated crash")

// faultBudget counts mutating operations (WriteAt, Truncate, Sync) across all
// files it wraps. After Limit operations every further mutating operation is
// dropped and fails, as if the machine stopped at that instant: nothing after
// the crash point reaches the disk. Limit < 0 means no limit; Count records how
// many operations a full run needed.
type faultBudget struct {
	mu    sync.Mutex
	Limit int
	Count int
}

func (b *faultBudget) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Limit >= 0 && b.Count >= b.Limit {
		return false
	}
	b.Count++
	return true
}

// wrap returns a FileWrapper for Options.Wrap.
func (b *faultBudget) wrap() FileWrapper {
	return func(f File) File { return &faultFile{File: f, b: b} }
}

type faultFile struct {
	File
	b *faultBudget
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if !f.b.take() {
		return 0, errInjected
	}
	return f.File.WriteAt(p, off)
}

func (f *faultFile) Truncate(n int64) error {
	if !f.b.take() {
		return errInjected
	}
	return f.File.Truncate(n)
}

func (f *faultFile) Sync() error {
	if !f.b.take() {
		return errInjected
	}
	return f.File.Sync()
}
