// Package progress is the small interface engines report long work through.
// Engines never print; the CLI renders a Reporter as a progress bar, JSON
// lines, or nothing.
package progress

// Reporter receives progress of long operations.
type Reporter interface {
	// Start begins a task: a short name and its total in bytes (0 unknown).
	Start(name string, total int64)
	// Add reports n more bytes done.
	Add(n int64)
	// Done ends the current task.
	Done()
}

// Nop reports nothing.
type Nop struct{}

func (Nop) Start(string, int64) {}
func (Nop) Add(int64)           {}
func (Nop) Done()               {}

// OrNop returns r, or Nop when r is nil.
func OrNop(r Reporter) Reporter {
	if r == nil {
		return Nop{}
	}
	return r
}
