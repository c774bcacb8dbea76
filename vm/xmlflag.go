package vm

import (
	"fmt"
	"os"
	"regexp"
)

var mergePendingRe = regexp.MustCompile(`(?i)(<disk_merge_pending\b[^>]*>)\s*(true|1)\s*(</disk_merge_pending>)`)

// ClearXMLMergePending sets global_settings/disk_merge_pending to False in
// the XML configuration at path, keeping its encoding, and replaces the file
// atomically. Call it only once the merge the flag announces is done (no
// unmerged checkpoint disk left in the VM's chains). It reports whether the
// flag was set; a configuration without the flag set is left untouched.
// VMCX files are never written.
func ClearXMLMergePending(path string) (bool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	text, err := decodeXMLText(raw)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := parseXMLTree(text); err != nil {
		return false, fmt.Errorf("%s: not a readable XML configuration: %w", path, err)
	}
	if !mergePendingRe.MatchString(text) {
		return false, nil
	}
	text = mergePendingRe.ReplaceAllString(text, "${1}False${3}")
	if err := writeXMLText(path, raw, text); err != nil {
		return false, err
	}
	return true, nil
}
