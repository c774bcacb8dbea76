// Package pkgfmt is the package format hvsnap export writes and hvsnap
// import reads: the listing and the manifest (JSON), the rules for names
// inside a package, the tar writer (POSIX pax, with GNU sparse 1.0 entries
// for files with holes) and the data map of sparse files.
//
// A package is a folder named after the VM (its root) holding Hyper-V's
// export layout:
//
//	<root>/hvsnap-listing.json          files and sizes (first in an archive)
//	<root>/Virtual Machines/<ID>.xml     the VM configuration (+ <ID>/ saved state)
//	<root>/Snapshots/<ID>.xml            checkpoint configurations
//	<root>/Virtual Hard Disks/*.vhdx ... the disks
//	<root>/hvsnap-manifest.json         everything, with SHA-256 (last)
//
// An archive is the same tree as one tar stream in LZ4 frames, so
// `lz4 -dc x.tar.lz4 | tar -x` unpacks it into the folder form.
package pkgfmt

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"path"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Schema is the version of the listing and manifest documents.
const Schema = 1

// File names of the two documents inside the package root.
const (
	ListingName  = "hvsnap-listing.json"
	ManifestName = "hvsnap-manifest.json"
)

// Limits on the documents (bounded memory when reading hostile packages).
const (
	MaxListingSize  = 16 << 20
	MaxManifestSize = 64 << 20
	MaxFiles        = 100000
)

// Folders of Hyper-V's export layout.
const (
	DirVMs       = "Virtual Machines"
	DirSnapshots = "Snapshots"
	DirDisks     = "Virtual Hard Disks"
)

// Roles of the files of a package.
const (
	RoleVMConfig         = "vm-config"
	RoleCheckpointConfig = "checkpoint-config"
	RoleState            = "state"
	RoleDisk             = "disk"
)

// Listing is the first entry of an archive: what follows and how big it is,
// so an importer can check space and show progress before reading data.
type Listing struct {
	Schema int           `json:"schema"`
	Root   string        `json:"root"`
	Files  []ListingFile `json:"files"`
	// Total is the sum of the files' sizes.
	Total int64 `json:"total"`
}

// ListingFile is one file of a listing, in archive order.
type ListingFile struct {
	Path string `json:"path"` // slash-separated, relative to the root
	Size int64  `json:"size"` // bytes of content
	// Alloc is how many bytes the file occupied on the source volume (holes
	// not counted); an estimate of what it needs on the destination.
	Alloc int64 `json:"alloc,omitempty"`
}

// Manifest describes a complete package (the last entry of an archive).
type Manifest struct {
	// Checksum: see SealManifest (always the first field).
	Checksum string    `json:"checksum"`
	Schema   int       `json:"schema"`
	Tool     string    `json:"tool"`
	Created  time.Time `json:"created"`
	// Kind is "vm" (a VM with its configurations) or "disk" (one chain).
	Kind   string     `json:"kind"`
	Root   string     `json:"root"`
	Source Source     `json:"source"`
	VM     *VMInfo    `json:"vm,omitempty"`
	Files  []FileInfo `json:"files"`
	// ListingSHA256 is the SHA-256 of the listing file's bytes.
	ListingSHA256 string `json:"listing_sha256"`
}

// Source says where a package was made from.
type Source struct {
	Host string `json:"host"`
	OS   string `json:"os"`
	Path string `json:"path"` // the VM folder or disk given to export
}

// VMInfo identifies the exported VM.
type VMInfo struct {
	Name       string `json:"name"`
	ID         string `json:"id"`
	ConfigKind string `json:"config_kind"` // xml | vmcx
	// Flattened: every drive is one standalone disk (--flatten or
	// --checkpoint); no checkpoint is carried.
	Flattened bool `json:"flattened,omitempty"`
	// Checkpoint: the checkpoint exported as a standalone VM (--checkpoint).
	Checkpoint   string `json:"checkpoint,omitempty"`
	CheckpointID string `json:"checkpoint_id,omitempty"`
}

// Digests a package's files can carry.
const (
	DigestSHA256 = "sha256" // every package (the default)
	DigestCRC32C = "crc32c" // local relocation only (hvsnap relocate)
)

// Digest returns the file's recorded digest and its kind.
func (f *FileInfo) Digest() (kind, sum string) {
	if f.SHA256 == "" && f.CRC32C != "" {
		return DigestCRC32C, f.CRC32C
	}
	return DigestSHA256, f.SHA256
}

// NewDigest returns the hash for a digest kind.
func NewDigest(kind string) hash.Hash {
	if kind == DigestCRC32C {
		return crc32.New(crc32.MakeTable(crc32.Castagnoli))
	}
	return sha256.New()
}

// FileInfo is one file of a manifest.
type FileInfo struct {
	Path   string `json:"path"`
	Role   string `json:"role"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// CRC32C replaces SHA256 in the packages hvsnap relocate makes and
	// consumes on one host (DigestCRC32C); imports refuse it otherwise.
	CRC32C string    `json:"crc32c,omitempty"`
	MTime  time.Time `json:"mtime"`
	Source string    `json:"source,omitempty"` // path on the source host
	Disk   *DiskInfo `json:"disk,omitempty"`
	Config *Config   `json:"config,omitempty"`
}

// DiskInfo describes a disk file.
type DiskInfo struct {
	Format      string `json:"format"` // vhd | vhdx
	Type        string `json:"type"`   // fixed | dynamic | differencing
	VirtualSize int64  `json:"virtual_size"`
	DiskID      string `json:"disk_id"`
	// Identity is what children link to: VHDX DataWriteGuid, VHD unique ID.
	Identity string `json:"identity"`
	// Parent is the parent's path inside the package ("" for a base disk).
	Parent string `json:"parent,omitempty"`
	// ParentLinkage is the identity the disk records for its parent.
	ParentLinkage string `json:"parent_linkage,omitempty"`
	// FlattenedFrom: the chain (leaf first, source paths) a --flatten or
	// --checkpoint disk was made from.
	FlattenedFrom []string `json:"flattened_from,omitempty"`
}

// Config describes a configuration file.
type Config struct {
	Kind   string  `json:"kind"` // xml | vmcx
	ID     string  `json:"id"`
	VMID   string  `json:"vm_id,omitempty"`
	Name   string  `json:"name"`
	Drives []Drive `json:"drives,omitempty"`
}

// Drive is a hard disk a configuration names.
type Drive struct {
	Location    string `json:"location"`     // e.g. "ide0:0"
	WindowsPath string `json:"windows_path"` // as stored in the configuration
	Disk        string `json:"disk"`         // the disk's path inside the package ("" when not carried)
}

// ReadJSON decodes a document of at most limit bytes from r into v.
func ReadJSON(r io.Reader, limit int64, v any, what string) error {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return err
	}
	if int64(len(b)) > limit {
		return fmt.Errorf("%s is larger than %d bytes", what, limit)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s is not valid JSON: %v", what, err)
	}
	return nil
}

// ValidRoot checks a package root name: one path component, no control
// characters, nothing Windows cannot name.
func ValidRoot(root string) error {
	if err := validComponent(root); err != nil {
		return fmt.Errorf("package root %q: %v", root, err)
	}
	return nil
}

// ValidPath checks a file path inside a package root: relative,
// slash-separated, clean, no `..`, no empty or dot components, nothing a
// Windows file system rejects, and not one of the package's own documents.
func ValidPath(p string) error {
	if p == "" {
		return fmt.Errorf("empty path")
	}
	if strings.HasPrefix(p, "/") || strings.Contains(p, `\`) || (len(p) >= 2 && p[1] == ':') {
		return fmt.Errorf("path %q is absolute or not slash-separated", p)
	}
	if path.Clean(p) != p {
		return fmt.Errorf("path %q is not clean", p)
	}
	for _, c := range strings.Split(p, "/") {
		if err := validComponent(c); err != nil {
			return fmt.Errorf("path %q: %v", p, err)
		}
	}
	if p == ListingName || p == ManifestName {
		return fmt.Errorf("path %q is reserved for the package's own documents", p)
	}
	return nil
}

func validComponent(c string) error {
	switch {
	case c == "":
		return fmt.Errorf("empty name")
	case c == "." || c == "..":
		return fmt.Errorf("%q is not allowed", c)
	case len(c) > 255:
		return fmt.Errorf("name longer than 255 bytes")
	case !utf8.ValidString(c):
		return fmt.Errorf("name is not valid UTF-8")
	case strings.ContainsAny(c, `/\:*?"<>|`):
		return fmt.Errorf("name %q has a character Windows does not allow", c)
	case strings.HasSuffix(c, " ") || strings.HasSuffix(c, "."):
		return fmt.Errorf("name %q ends with a space or dot", c)
	}
	for _, r := range c {
		if r < 0x20 || r == 0x7f || unicode.Is(unicode.Cc, r) {
			return fmt.Errorf("name %q has a control character", c)
		}
	}
	return nil
}

// SafeName turns a VM or file name into a valid path component.
func SafeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(`/\:*?"<>|`, r) {
			b.WriteRune('_')
			continue
		}
		b.WriteRune(r)
	}
	out := strings.TrimRight(strings.TrimSpace(b.String()), ". ")
	if out == "" || out == "." || out == ".." {
		return ""
	}
	if len(out) > 200 {
		out = out[:200]
		for !utf8.ValidString(out) {
			out = out[:len(out)-1]
		}
	}
	return out
}

// FoldKey is the key duplicate names are detected by: Windows file systems
// compare names case-insensitively.
func FoldKey(p string) string { return strings.ToLower(p) }

// CheckListing validates a listing: root, every path, no duplicates, sizes.
func CheckListing(l *Listing) error {
	if l.Schema != Schema {
		return fmt.Errorf("listing schema %d is not supported (this hvsnap reads %d)", l.Schema, Schema)
	}
	if err := ValidRoot(l.Root); err != nil {
		return err
	}
	if len(l.Files) > MaxFiles {
		return fmt.Errorf("listing names %d files (limit %d)", len(l.Files), MaxFiles)
	}
	seen := map[string]bool{}
	dirs := map[string]bool{}
	var total int64
	for _, f := range l.Files {
		if err := ValidPath(f.Path); err != nil {
			return fmt.Errorf("listing: %v", err)
		}
		k := FoldKey(f.Path)
		if seen[k] {
			return fmt.Errorf("listing: duplicate name %q", f.Path)
		}
		seen[k] = true
		for d := path.Dir(k); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
		if f.Size < 0 || f.Size > 1<<50 || f.Alloc < 0 {
			return fmt.Errorf("listing: %q has an impossible size %d", f.Path, f.Size)
		}
		total += f.Size
	}
	for d := range dirs {
		if seen[d] {
			return fmt.Errorf("listing: %q is both a file and a folder", d)
		}
	}
	if total != l.Total {
		return fmt.Errorf("listing: sizes add up to %d, total says %d", total, l.Total)
	}
	return nil
}

// CheckManifest validates a manifest against the listing it must agree with
// (nil: only its own consistency).
func CheckManifest(m *Manifest, l *Listing) error {
	if m.Schema != Schema {
		return fmt.Errorf("manifest schema %d is not supported (this hvsnap reads %d)", m.Schema, Schema)
	}
	if err := ValidRoot(m.Root); err != nil {
		return err
	}
	ml := &Listing{Schema: Schema, Root: m.Root}
	for _, f := range m.Files {
		ml.Files = append(ml.Files, ListingFile{Path: f.Path, Size: f.Size})
		ml.Total += f.Size
		validSHA := len(f.SHA256) == 64 && strings.Trim(f.SHA256, "0123456789abcdef") == ""
		validCRC := f.SHA256 == "" && len(f.CRC32C) == 8 && strings.Trim(f.CRC32C, "0123456789abcdef") == ""
		if !validSHA && !validCRC {
			return fmt.Errorf("manifest: %q has no valid SHA-256", f.Path)
		}
	}
	if err := CheckListing(ml); err != nil {
		return fmt.Errorf("manifest: %v", err)
	}
	byPath := map[string]*FileInfo{}
	for i := range m.Files {
		byPath[m.Files[i].Path] = &m.Files[i]
	}
	for _, f := range m.Files {
		if f.Disk != nil && f.Disk.Parent != "" {
			p := byPath[f.Disk.Parent]
			if p == nil || p.Disk == nil {
				return fmt.Errorf("manifest: parent %q of %q is not a disk of the package", f.Disk.Parent, f.Path)
			}
		}
		if f.Config != nil {
			for _, d := range f.Config.Drives {
				if d.Disk != "" && (byPath[d.Disk] == nil || byPath[d.Disk].Disk == nil) {
					return fmt.Errorf("manifest: drive %q of %q is not a disk of the package", d.Disk, f.Path)
				}
			}
		}
	}
	if l == nil {
		return nil
	}
	if m.Root != l.Root {
		return fmt.Errorf("manifest root %q differs from the listing's %q", m.Root, l.Root)
	}
	if len(m.Files) != len(l.Files) {
		return fmt.Errorf("manifest names %d files, the listing %d", len(m.Files), len(l.Files))
	}
	for i, f := range m.Files {
		if f.Path != l.Files[i].Path || f.Size != l.Files[i].Size {
			return fmt.Errorf("manifest entry %q (%d bytes) differs from the listing's %q (%d bytes)", f.Path, f.Size, l.Files[i].Path, l.Files[i].Size)
		}
	}
	return nil
}

// checksumKey starts the manifest's checksum field; the value is the
// SHA-256 of the document's bytes with the value itself written as 64
// zeros, so that any changed byte of the file is detected (not only the
// values a JSON decoder reads back).
const checksumKey = `"checksum": "`

var zeroSum = strings.Repeat("0", 64)

// SealManifest renders m as the manifest file, with its checksum.
func SealManifest(m *Manifest) ([]byte, error) {
	m.Checksum = zeroSum
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	b = append(b, '\n')
	i := bytes.Index(b, []byte(checksumKey+zeroSum))
	if i < 0 {
		return nil, fmt.Errorf("manifest: checksum field not found")
	}
	sum := sha256.Sum256(b)
	m.Checksum = hex.EncodeToString(sum[:])
	copy(b[i+len(checksumKey):], m.Checksum)
	return b, nil
}

// OpenManifest parses a manifest file and verifies its checksum.
func OpenManifest(b []byte) (*Manifest, error) {
	i := bytes.Index(b, []byte(checksumKey))
	if i < 0 || len(b) < i+len(checksumKey)+64 {
		return nil, fmt.Errorf("the manifest has no checksum")
	}
	v := i + len(checksumKey)
	got := string(b[v : v+64])
	c := append([]byte(nil), b...)
	copy(c[v:], zeroSum)
	sum := sha256.Sum256(c)
	if hex.EncodeToString(sum[:]) != got {
		return nil, fmt.Errorf("the manifest's checksum does not match its content (damaged manifest)")
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("the manifest is not valid JSON: %v", err)
	}
	if m.Checksum != got {
		return nil, fmt.Errorf("the manifest's checksum field is ambiguous")
	}
	return &m, nil
}

// SumHex is the hex SHA-256 of b.
func SumHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
