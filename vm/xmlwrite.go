package vm

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf16"

	"github.com/hvsnap/hvsnap/internal/fsutil"
)

// RewriteXMLDiskPath replaces, in the XML configuration at path, every drive
// `pathname` equal to oldWin (compared like Windows: case-insensitively) by
// newWin, keeping the file's encoding (UTF-16LE with BOM as Hyper-V writes
// it, or UTF-8). The file is replaced atomically (temporary file, fsync,
// rename, directory sync). It returns how many values were replaced; 0
// leaves the file untouched. VMCX files are never written: see the
// Set-VMHardDiskDrive command instead.
func RewriteXMLDiskPath(path, oldWin, newWin string) (int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	text, err := decodeXMLText(raw)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := parseXMLTree(text); err != nil {
		return 0, fmt.Errorf("%s: not a readable XML configuration: %w", path, err)
	}
	var out strings.Builder
	n := 0
	rest := text
	for {
		i := strings.Index(rest, "<pathname")
		if i < 0 {
			out.WriteString(rest)
			break
		}
		gt := strings.IndexByte(rest[i:], '>')
		if gt < 0 {
			out.WriteString(rest)
			break
		}
		start := i + gt + 1
		end := strings.Index(rest[start:], "</pathname>")
		if end < 0 {
			out.WriteString(rest)
			break
		}
		val := rest[start : start+end]
		var un string
		if err := xml.Unmarshal([]byte("<v>"+val+"</v>"), &un); err != nil {
			un = val
		}
		out.WriteString(rest[:start])
		if strings.EqualFold(strings.TrimSpace(un), oldWin) {
			var esc bytes.Buffer
			xml.EscapeText(&esc, []byte(newWin))
			out.WriteString(esc.String())
			n++
		} else {
			out.WriteString(val)
		}
		rest = rest[start+end:]
	}
	if n == 0 {
		return 0, nil
	}
	if err := writeXMLText(path, raw, out.String()); err != nil {
		return 0, err
	}
	return n, nil
}

func utf16LE(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		b[2*i], b[2*i+1] = byte(c), byte(c>>8)
	}
	return b
}

// writeXMLText encodes text like raw (the file's original bytes: UTF-16LE
// or BE with BOM, UTF-8 with or without BOM) and replaces path atomically.
func writeXMLText(path string, raw []byte, text string) error {
	var enc []byte
	switch {
	case bytes.HasPrefix(raw, []byte{0xFF, 0xFE}):
		enc = append([]byte{0xFF, 0xFE}, utf16LE(text)...)
	case bytes.HasPrefix(raw, []byte{0xFE, 0xFF}):
		u := utf16.Encode([]rune(text))
		enc = []byte{0xFE, 0xFF}
		for _, c := range u {
			enc = append(enc, byte(c>>8), byte(c))
		}
	case bytes.HasPrefix(raw, []byte{0xEF, 0xBB, 0xBF}):
		enc = append([]byte{0xEF, 0xBB, 0xBF}, text...)
	case len(raw) >= 2 && raw[0] != 0 && raw[1] == 0:
		enc = utf16LE(text)
	default:
		enc = []byte(text)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".hvsnap-tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := f.Write(enc); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := fsutil.AtomicRename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
