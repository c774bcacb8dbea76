package scenarios

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hvsnap/hvsnap/internal/fsutil"
	"github.com/hvsnap/hvsnap/vm"
)

// Step kinds.
const (
	StepRun    = "run"    // an hvsnap command
	StepCheck  = "check"  // a read-only hvsnap command (dry run, check, diagnose)
	StepAction = "action" // an engine action hvsnap performs itself (Do)
	StepManual = "manual" // done by the operator (on the Hyper-V host); --execute stops here
)

// Step is one numbered step of a plan.
type Step struct {
	N     int    `json:"n"`
	Kind  string `json:"kind"`
	Title string `json:"title"` // what and why, one sentence
	// Args: the hvsnap command line without the program name (run, check).
	Args []string `json:"args,omitempty"`
	// Command: the command line as printed (hvsnap …, or for actions and
	// manual steps what to run by hand, e.g. PowerShell on the host).
	Command string `json:"command,omitempty"`
	// Action parameters (StepAction).
	Action string   `json:"action,omitempty"` // "clear-merge-pending", "set-drive", "move-aside"
	Config string   `json:"config,omitempty"`
	Old    string   `json:"old,omitempty"`
	New    string   `json:"new,omitempty"`
	Files  []string `json:"files,omitempty"`
	Dir    string   `json:"dir,omitempty"`
}

func runStep(title string, args ...string) Step {
	return Step{Kind: StepRun, Title: title, Args: args, Command: CommandLine(args)}
}

func checkStep(title string, args ...string) Step {
	return Step{Kind: StepCheck, Title: title, Args: args, Command: CommandLine(args)}
}

func manualStep(title, command string) Step {
	return Step{Kind: StepManual, Title: title, Command: command}
}

// CommandLine renders hvsnap args as one shell-safe line.
func CommandLine(args []string) string {
	parts := []string{"hvsnap"}
	for _, a := range args {
		parts = append(parts, Quote(a))
	}
	return strings.Join(parts, " ")
}

// Quote quotes s for a POSIX shell when it needs it.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func psQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Do performs an action step. Actions are idempotent: repeating one that
// is done changes nothing.
func (s Step) Do() (string, error) {
	switch s.Action {
	case "clear-merge-pending":
		if !strings.EqualFold(filepath.Ext(s.Config), ".xml") {
			return "", fmt.Errorf("%s is not an XML configuration (VMCX is never written): %s", s.Config, s.Command)
		}
		changed, err := vm.ClearXMLMergePending(s.Config)
		if err != nil {
			return "", err
		}
		if !changed {
			return "disk_merge_pending already False in " + s.Config, nil
		}
		return "disk_merge_pending set to False in " + s.Config, nil
	case "set-drive":
		if !strings.EqualFold(filepath.Ext(s.Config), ".xml") {
			return "", fmt.Errorf("%s is not an XML configuration (VMCX is never written): run on the host: %s", s.Config, s.Command)
		}
		n, err := vm.RewriteXMLDiskPath(s.Config, s.Old, s.New)
		if err != nil {
			return "", err
		}
		if n == 0 {
			cfg, err := vm.ParseConfig(s.Config, nil)
			if err == nil {
				for _, d := range cfg.Disks {
					if strings.EqualFold(d.WindowsPath, s.New) {
						return "drive already names " + s.New, nil
					}
				}
			}
			return "", fmt.Errorf("%s names no drive %s", s.Config, s.Old)
		}
		return fmt.Sprintf("%s: drive %s → %s", s.Config, s.Old, s.New), nil
	case "move-aside":
		if err := os.MkdirAll(s.Dir, 0o755); err != nil {
			return "", err
		}
		var moved []string
		for _, f := range s.Files {
			if _, err := os.Lstat(f); os.IsNotExist(err) {
				continue // already moved
			}
			dst := filepath.Join(s.Dir, filepath.Base(f)+".hvsnap-kept")
			if _, err := os.Lstat(dst); err == nil {
				return "", fmt.Errorf("%s already exists: not overwriting it", dst)
			}
			if err := os.Rename(f, dst); err != nil {
				return "", err
			}
			moved = append(moved, dst)
		}
		if err := fsutil.SyncDir(s.Dir); err != nil {
			return "", err
		}
		for _, f := range s.Files {
			_ = fsutil.SyncDir(filepath.Dir(f))
		}
		if len(moved) == 0 {
			return "nothing left to move", nil
		}
		return "kept (moved, not deleted): " + strings.Join(moved, ", "), nil
	}
	return "", fmt.Errorf("unknown action %q", s.Action)
}
