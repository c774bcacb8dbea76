// Package importer reads hvsnap packages (a folder, a .tar.lz4 archive or
// a stream): it checks the listing and the free space first, stages every
// file under a hidden folder on the destination volume while verifying its
// SHA-256, refuses hostile packages, re-points the parent locators of the
// imported differencing disks to their new places (linkage IDs untouched),
// rewrites the disk paths in XML configurations, and commits by renaming
// the staged folder into place.
//
// Nothing is written outside the destination folder, and nothing outside
// the staging folder before the final rename. On failure the staging folder
// is removed, unless the input ended early (or --resume was given): then it
// is kept so that --resume continues where the import stopped.
package importer

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/pierrec/lz4/v4"

	"github.com/hvsnap/hvsnap/internal/fsutil"
	"github.com/hvsnap/hvsnap/internal/pkgfmt"
	"github.com/hvsnap/hvsnap/internal/progress"
	"github.com/hvsnap/hvsnap/vhd"
)

// Options control Import.
type Options struct {
	// To is the destination folder; the package lands in To/<root>.
	To string
	// Stdin is read when the package is "-".
	Stdin io.Reader
	// NewID gives the VM a new ID (XML configurations), like Import-VM
	// -GenerateNewId.
	NewID bool
	// VerifyOnly reads and verifies the whole package, writing nothing.
	VerifyOnly bool
	// Resume continues an interrupted import from its staging folder.
	Resume bool
	// PathMap maps the destination's local paths to the Windows paths the
	// host will see (for parent locators and configurations).
	PathMap vhd.PathMap
	// AfterFile, when set, is called after each file is staged; an error
	// stops the import there (tests use it to interrupt).
	AfterFile func(pkgPath string) error
	// FreeSpace, when set, replaces the free-space query (tests).
	FreeSpace func(dir string) (int64, error)
	// Move imports a folder package that sits on the destination's file
	// system by moving its files into the staging folder instead of copying
	// them (hvsnap relocate: the package was just written there). Every
	// file is still read and its digest checked against the manifest
	// before it is moved; the package folder is left empty of data files.
	Move bool
	// Name is the imported folder's name in To (default: the package
	// root, the VM's name).
	Name string
	// AllowCRC32C accepts files whose manifest digest is a CRC-32C instead
	// of a SHA-256 (with Move only: the packages hvsnap relocate makes on
	// the destination volume itself). Any other package must carry SHA-256.
	AllowCRC32C bool
}

// Relink is one re-pointed differencing disk.
type Relink struct {
	Child        string `json:"child"`
	Parent       string `json:"parent"`
	RelativePath string `json:"relative_path"`
	AbsolutePath string `json:"absolute_path"`
}

// Result says what Import did.
type Result struct {
	Root       string           `json:"root"`
	Path       string           `json:"path,omitempty"` // the imported folder ("" with VerifyOnly)
	VerifyOnly bool             `json:"verify_only"`
	Files      int              `json:"files"`
	Bytes      int64            `json:"bytes"`
	Resumed    int              `json:"resumed"` // files kept from an interrupted import
	VMName     string           `json:"vm_name,omitempty"`
	VMID       string           `json:"vm_id,omitempty"`
	OldVMID    string           `json:"old_vm_id,omitempty"` // with NewID
	ConfigKind string           `json:"config_kind,omitempty"`
	Config     string           `json:"config,omitempty"` // the VM configuration's new path
	Disks      []string         `json:"disks,omitempty"`
	Relinked   []Relink         `json:"relinked,omitempty"`
	Rewritten  []string         `json:"rewritten_configs,omitempty"`
	Hints      []string         `json:"hints,omitempty"` // what to run next on the host
	Manifest   *pkgfmt.Manifest `json:"-"`
}

// Errors, for errors.Is.
var (
	// ErrNoSpace: the destination volume has not enough free space.
	ErrNoSpace = errors.New("not enough space")
	// ErrBadPackage: the package is hostile, corrupt or inconsistent.
	ErrBadPackage = errors.New("bad package")
	// ErrTruncated: the input ended before the package did.
	ErrTruncated = errors.New("package truncated")
	// ErrExists: the destination or a staging folder already exists.
	ErrExists = errors.New("destination exists")
)

func bad(format string, args ...any) error {
	return fmt.Errorf("import: %s: %w", fmt.Sprintf(format, args...), ErrBadPackage)
}

// Import imports the package at src: a folder, an archive, or "-".
func Import(src string, o Options, rep progress.Reporter) (res *Result, err error) {
	rep = progress.OrNop(rep)
	if o.To == "" && !o.VerifyOnly {
		return nil, errors.New("import: no destination folder (--to)")
	}
	im := &importer{o: o, rep: rep, pool: make(chan []byte, 8)}
	for range 8 {
		im.pool <- make([]byte, 1<<20)
	}
	if !o.VerifyOnly {
		abs, err := filepath.Abs(o.To)
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		st, err := os.Stat(abs)
		if err != nil {
			return nil, fmt.Errorf("import: destination %s: %w", o.To, err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("import: destination %s is not a folder", o.To)
		}
		im.to = abs
	}
	defer func() {
		if err != nil && im.staging != "" && !im.keepStaging(err) {
			os.RemoveAll(im.staging)
			fsutil.SyncDir(im.staging)
		}
	}()
	if src == "-" {
		if o.Stdin == nil {
			return nil, errors.New("import: no standard input")
		}
		return im.archive(o.Stdin, "standard input")
	}
	st, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if st.IsDir() {
		return im.folder(src)
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer f.Close()
	return im.archive(f, src)
}

type importer struct {
	o    Options
	rep  progress.Reporter
	pool chan []byte
	to   string // absolute destination

	root    string
	final   string // <to>/<name>
	staging string // <to>/.hvsnap-import-<name>
	stRoot  string // <staging>/<root>
	state   *stageState
	sums    map[string]string // path → SHA-256 of the staged (or verified) data
	resumed int
}

// keepStaging: the staging folder is kept for --resume when the input
// ended early or when resuming was asked for; verification failures and
// other errors remove it.
func (im *importer) keepStaging(err error) bool {
	if im.o.Move {
		return true // it holds files moved out of the package: never delete them
	}
	if errors.Is(err, ErrBadPackage) || errors.Is(err, ErrExists) {
		return false
	}
	return errors.Is(err, ErrTruncated) || im.o.Resume
}

// stageState is the staging folder's journal of finished files.
type stageState struct {
	Root string               `json:"root"`
	Done map[string]stageDone `json:"done"`
}

type stageDone struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

const stateName = "hvsnap-import-state.json"

func (im *importer) saveState() error {
	b, _ := json.Marshal(im.state)
	p := filepath.Join(im.staging, stateName)
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return fsutil.AtomicRename(tmp, p)
}

// begin prepares the destination for root after the listing was read:
// the final folder must not exist, free space must suffice, and the
// staging folder is created (or reopened with Resume).
func (im *importer) begin(root string, files []pkgfmt.ListingFile) error {
	im.root = root
	im.sums = map[string]string{}
	if im.o.VerifyOnly {
		return nil
	}
	name := root
	if im.o.Name != "" {
		if err := pkgfmt.ValidPath(im.o.Name); err != nil || strings.ContainsAny(im.o.Name, `/\`) {
			return fmt.Errorf("import: %q is not a folder name", im.o.Name)
		}
		name = im.o.Name
	}
	final := filepath.Join(im.to, name)
	im.final = final
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("import: %s already exists; choose another --to or move it away: %w", final, ErrExists)
	}
	im.staging = filepath.Join(im.to, ".hvsnap-import-"+name)
	im.stRoot = filepath.Join(im.staging, root)
	im.state = &stageState{Root: root, Done: map[string]stageDone{}}
	if _, err := os.Lstat(im.staging); err == nil {
		if !im.o.Resume {
			s := im.staging
			im.staging = "" // not ours to remove
			return fmt.Errorf("import: %s holds an interrupted import of %q: run again with --resume, or remove it: %w", s, root, ErrExists)
		}
		if b, err := os.ReadFile(filepath.Join(im.staging, stateName)); err == nil {
			var s stageState
			if json.Unmarshal(b, &s) == nil && s.Root == root && s.Done != nil {
				im.state = &s
			}
		}
	}
	// Preflight: what is still to be written must fit.
	var need int64
	for _, f := range files {
		if d, ok := im.state.Done[f.Path]; ok && d.Size == f.Size {
			continue
		}
		n := f.Size
		if f.Alloc > 0 && f.Alloc < n {
			n = f.Alloc
		}
		if im.o.Move {
			n = 0 // moved within the file system, not written
		}
		need += n
	}
	need += need/512 + 4<<20 // file-system metadata and the documents
	fs := freeSpace
	if im.o.FreeSpace != nil {
		fs = im.o.FreeSpace
	}
	free, err := fs(im.to)
	if err != nil {
		return fmt.Errorf("import: free space of %s: %w", im.to, err)
	}
	if need > free {
		if im.state != nil && len(im.state.Done) == 0 {
			im.staging = "" // nothing created yet
		}
		return fmt.Errorf("import: not enough space on %s: needs %s, %s free: %w", im.to, human(need), human(free), ErrNoSpace)
	}
	if err := os.MkdirAll(im.stRoot, 0o755); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if err := fsutil.SyncDir(im.staging); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	return im.saveState()
}

// done reports whether a resumed import already staged p with this size.
func (im *importer) done(p string, size int64) (stageDone, bool) {
	if im.o.VerifyOnly || im.state == nil {
		return stageDone{}, false
	}
	d, ok := im.state.Done[p]
	if !ok || d.Size != size {
		return d, false
	}
	st, err := os.Lstat(filepath.Join(im.stRoot, filepath.FromSlash(p)))
	if err != nil || !st.Mode().IsRegular() || st.Size() != size {
		return d, false
	}
	return d, true
}

// stage reads exactly size bytes of p from r, hashing them and (unless
// verifying only) writing them to the staging folder, zero runs as holes.
func (im *importer) stage(p string, size int64, mtime time.Time, r io.Reader, srcName string) (string, error) {
	if d, ok := im.done(p, size); ok {
		// Staged by an interrupted run: skip the bytes; the hash is
		// checked against the manifest like the others.
		n, err := io.CopyN(io.Discard, r, size)
		im.rep.Add(n)
		if err != nil {
			return "", im.readErr(p, srcName, n, size, err)
		}
		im.sums[p] = d.SHA256
		im.resumed++
		return d.SHA256, nil
	}
	var out *os.File
	dst := filepath.Join(im.stRoot, filepath.FromSlash(p))
	if !im.o.VerifyOnly {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", fmt.Errorf("import: %w", err)
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			return "", fmt.Errorf("import: %w", err)
		}
		out = f
		defer func() {
			if out != nil {
				out.Close()
			}
		}()
	}
	h := sha256.New()
	sum, err := im.copyHash(h, out, r, p, srcName, size)
	if err != nil {
		return "", err
	}
	if out != nil {
		if err := out.Truncate(size); err != nil {
			return "", fmt.Errorf("import: %s: %w", dst, err)
		}
		if err := out.Sync(); err != nil {
			return "", fmt.Errorf("import: %s: %w", dst, err)
		}
		if err := out.Close(); err != nil {
			out = nil
			return "", fmt.Errorf("import: %s: %w", dst, err)
		}
		out = nil
		if !mtime.IsZero() {
			os.Chtimes(dst, mtime, mtime)
		}
		im.state.Done[p] = stageDone{Size: size, SHA256: sum}
		if err := im.saveState(); err != nil {
			return "", fmt.Errorf("import: %w", err)
		}
	}
	im.sums[p] = sum
	if im.o.AfterFile != nil {
		if err := im.o.AfterFile(p); err != nil {
			return "", err
		}
	}
	return sum, nil
}

func (im *importer) readErr(p, srcName string, got, size int64, err error) error {
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("import: %s ends inside %s (%d of %d bytes): %w", srcName, p, got, size, ErrTruncated)
	}
	if errors.Is(err, ErrBadPackage) || errors.Is(err, ErrTruncated) {
		return err
	}
	return fmt.Errorf("import: reading %s from %s: %v: %w", p, srcName, err, ErrTruncated)
}

type wjob struct {
	buf []byte
	n   int
	off int64
}

// copyHash moves size bytes from r to out (nil: nowhere) while hashing;
// writing runs in its own goroutine, overlapping reading and hashing.
func (im *importer) copyHash(h hash.Hash, out *os.File, r io.Reader, p, srcName string, size int64) (string, error) {
	var (
		wch   chan wjob
		wdone chan error
	)
	if out != nil {
		wch = make(chan wjob, 4)
		wdone = make(chan error, 1)
		go func() {
			var werr error
			for j := range wch {
				if werr == nil {
					werr = writeSparse(out, j.buf[:j.n], j.off)
				}
				im.pool <- j.buf
			}
			wdone <- werr
		}()
	}
	finish := func() error {
		if wch == nil {
			return nil
		}
		close(wch)
		err := <-wdone
		wch = nil
		return err
	}
	var off int64
	for off < size {
		buf := <-im.pool
		n := int(min(int64(len(buf)), size-off))
		if out == nil {
			// Only hashing: pieces that stay in the CPU cache between
			// the copy out of the page cache and the hash.
			n = min(n, 256<<10)
		}
		m, err := io.ReadFull(r, buf[:n])
		h.Write(buf[:m])
		im.rep.Add(int64(m))
		if m > 0 && wch != nil {
			wch <- wjob{buf: buf, n: m, off: off}
		} else {
			im.pool <- buf
		}
		off += int64(m)
		if err != nil {
			if werr := finish(); werr != nil {
				return "", fmt.Errorf("import: writing %s: %w", p, werr)
			}
			return "", im.readErr(p, srcName, off, size, err)
		}
	}
	if werr := finish(); werr != nil {
		return "", fmt.Errorf("import: writing %s: %w", filepath.Join(im.stRoot, filepath.FromSlash(p)), werr)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

var zeros = make([]byte, 64<<10)

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// writeSparse writes b at off, leaving 64 KiB zero runs unwritten (holes;
// the file's length is set at the end).
func writeSparse(f *os.File, b []byte, off int64) error {
	start := -1
	for i := 0; i < len(b); i += len(zeros) {
		end := min(i+len(zeros), len(b))
		z := bytes.Equal(b[i:end], zeros[:end-i])
		if !z && start < 0 {
			start = i
		}
		if z && start >= 0 {
			if _, err := f.WriteAt(b[start:i], off+int64(start)); err != nil {
				return err
			}
			start = -1
		}
	}
	if start >= 0 {
		if _, err := f.WriteAt(b[start:], off+int64(start)); err != nil {
			return err
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Archive input

// limitReader fails once more than max bytes were read: the decompressed
// stream may not exceed what the listing announced (decompression bombs).
type limitReader struct {
	r   io.Reader
	n   int64
	max int64
}

var errBomb = errors.New("decompressed data exceeds the sizes the listing announced (decompression bomb?)")

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n >= l.max {
		return 0, fmt.Errorf("import: %w: %w", errBomb, ErrBadPackage)
	}
	if int64(len(p)) > l.max-l.n {
		p = p[:l.max-l.n]
	}
	n, err := l.r.Read(p)
	l.n += int64(n)
	return n, err
}

// entryName checks an archive entry's name and type before anything else.
func checkEntry(h *tar.Header) error {
	name := h.Name
	if strings.HasPrefix(name, "/") || strings.HasPrefix(name, `\`) || (len(name) >= 2 && name[1] == ':') {
		return bad("entry %q has an absolute path", name)
	}
	for _, c := range strings.FieldsFunc(name, func(r rune) bool { return r == '/' || r == '\\' }) {
		if c == ".." {
			return bad("entry %q leaves the package (..)", name)
		}
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		return nil
	case tar.TypeSymlink:
		return bad("entry %q is a symlink (to %q)", name, h.Linkname)
	case tar.TypeLink:
		return bad("entry %q is a hard link (to %q)", name, h.Linkname)
	case tar.TypeChar, tar.TypeBlock:
		return bad("entry %q is a device", name)
	case tar.TypeFifo:
		return bad("entry %q is a FIFO", name)
	case tar.TypeDir:
		return bad("entry %q is a folder entry (packages hold files only)", name)
	default:
		return bad("entry %q has the unsupported type %q", name, h.Typeflag)
	}
}

func (im *importer) next(tr *tar.Reader, srcName, expect string) (*tar.Header, error) {
	h, err := tr.Next()
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("import: %s ends before %s: %w", srcName, expect, ErrTruncated)
	}
	if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
		if errors.Is(err, ErrBadPackage) {
			return nil, err
		}
		if errors.Is(err, tar.ErrHeader) {
			return nil, bad("%s: damaged tar header before %s: %v", srcName, expect, err)
		}
		return nil, fmt.Errorf("import: reading %s before %s: %v: %w", srcName, expect, err, ErrTruncated)
	}
	if err := checkEntry(h); err != nil {
		return nil, err
	}
	return h, nil
}

func (im *importer) archive(in io.Reader, srcName string) (*Result, error) {
	zr := lz4.NewReader(bufio.NewReaderSize(in, 1<<20))
	if err := zr.Apply(lz4.ConcurrencyOption(runtime.GOMAXPROCS(0))); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	lim := &limitReader{r: lz4Errs{zr}, max: pkgfmt.MaxListingSize + 64<<10}
	tr := tar.NewReader(lim)
	h, err := im.next(tr, srcName, "the listing")
	if err != nil {
		return nil, err
	}
	root, rest, _ := strings.Cut(h.Name, "/")
	if rest != pkgfmt.ListingName {
		return nil, bad("%s: the first entry is %q, not <root>/%s (not an hvsnap package?)", srcName, h.Name, pkgfmt.ListingName)
	}
	if h.Size > pkgfmt.MaxListingSize {
		return nil, bad("%s: listing of %d bytes (limit %d)", srcName, h.Size, pkgfmt.MaxListingSize)
	}
	lb, err := io.ReadAll(tr)
	if err != nil {
		return nil, im.readErr("the listing", srcName, int64(len(lb)), h.Size, err)
	}
	var l pkgfmt.Listing
	if err := json.Unmarshal(lb, &l); err != nil {
		return nil, bad("%s: the listing is not valid JSON: %v", srcName, err)
	}
	if err := pkgfmt.CheckListing(&l); err != nil {
		return nil, bad("%s: %v", srcName, err)
	}
	if l.Root != root {
		return nil, bad("%s: listing root %q differs from its entry's folder %q", srcName, l.Root, root)
	}
	// Everything that may still come: the files, their headers and
	// padding, sparse maps, the manifest and the end of the archive.
	lim.max = lim.n + l.Total + int64(len(l.Files)+2)*(64<<10) + pkgfmt.MaxManifestSize + (1 << 20)
	if err := im.begin(l.Root, l.Files); err != nil {
		return nil, err
	}
	im.rep.Start("import", l.Total)
	defer im.rep.Done()
	seen := map[string]bool{pkgfmt.FoldKey(h.Name): true}
	for i, f := range l.Files {
		want := l.Root + "/" + f.Path
		h, err := im.next(tr, srcName, want)
		if err != nil {
			return nil, err
		}
		if seen[pkgfmt.FoldKey(h.Name)] {
			return nil, bad("%s: duplicate entry %q", srcName, h.Name)
		}
		seen[pkgfmt.FoldKey(h.Name)] = true
		if h.Name != want {
			return nil, bad("%s: entry %d is %q, the listing says %q", srcName, i+2, h.Name, want)
		}
		if h.Size > f.Size {
			return nil, bad("%s: entry %q is %d bytes, the listing says %d (decompression bomb?)", srcName, h.Name, h.Size, f.Size)
		}
		if h.Size != f.Size {
			return nil, bad("%s: entry %q is %d bytes, the listing says %d", srcName, h.Name, h.Size, f.Size)
		}
		if _, err := im.stage(f.Path, f.Size, h.ModTime, tr, srcName); err != nil {
			return nil, err
		}
	}
	h, err = im.next(tr, srcName, "the manifest")
	if err != nil {
		return nil, err
	}
	if h.Name != l.Root+"/"+pkgfmt.ManifestName {
		if seen[pkgfmt.FoldKey(h.Name)] {
			return nil, bad("%s: duplicate entry %q", srcName, h.Name)
		}
		return nil, bad("%s: entry %q is not in the listing (expected the manifest)", srcName, h.Name)
	}
	if h.Size > pkgfmt.MaxManifestSize {
		return nil, bad("%s: manifest of %d bytes (limit %d)", srcName, h.Size, pkgfmt.MaxManifestSize)
	}
	mb, err := io.ReadAll(tr)
	if err != nil {
		return nil, im.readErr("the manifest", srcName, int64(len(mb)), h.Size, err)
	}
	m, err := pkgfmt.OpenManifest(mb)
	if err != nil {
		return nil, bad("%s: %v", srcName, err)
	}
	if m.ListingSHA256 != pkgfmt.SumHex(lb) {
		return nil, bad("%s: the listing's SHA-256 differs from the manifest's (damaged listing)", srcName)
	}
	if err := pkgfmt.CheckManifest(m, &l); err != nil {
		return nil, bad("%s: %v", srcName, err)
	}
	if _, err := tr.Next(); err != io.EOF {
		if err == nil {
			return nil, bad("%s: an entry follows the manifest", srcName)
		}
		if errors.Is(err, ErrBadPackage) {
			return nil, err
		}
		return nil, fmt.Errorf("import: %s: the end of the archive is missing (%v): %w", srcName, err, ErrTruncated)
	}
	// The rest of the stream is the tar record's zero padding and the end
	// of the LZ4 frame, whose content checksum is verified on the way.
	lim.max = lim.n + 1<<20
	buf := make([]byte, 32<<10)
	for {
		n, err := lim.Read(buf)
		if !isZero(buf[:n]) {
			return nil, bad("%s: data follows the end of the archive", srcName)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, ErrBadPackage) {
				return nil, err
			}
			return nil, fmt.Errorf("import: %s: the end of the archive is missing (%v): %w", srcName, err, ErrTruncated)
		}
	}
	return im.finish(m)
}

// lz4Errs marks LZ4 frame damage as a bad package (a corrupt block, a
// checksum mismatch) rather than an input that stopped early.
type lz4Errs struct{ r io.Reader }

func (z lz4Errs) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return n, err
		}
		return n, fmt.Errorf("import: LZ4 stream: %v: %w", err, ErrBadPackage)
	}
	return n, err
}

// ---------------------------------------------------------------------------
// Folder input

// findPackage returns the package folder: dir itself when it holds a
// manifest, else its only subfolder that does.
func findPackage(dir string) (string, error) {
	if _, err := os.Lstat(filepath.Join(dir, pkgfmt.ManifestName)); err == nil {
		return dir, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("import: %w", err)
	}
	var found []string
	for _, e := range ents {
		if e.IsDir() {
			if _, err := os.Lstat(filepath.Join(dir, e.Name(), pkgfmt.ManifestName)); err == nil {
				found = append(found, filepath.Join(dir, e.Name()))
			}
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		unfinished := false
		for _, d := range append([]string{dir}, subdirs(ents, dir)...) {
			if _, err := os.Lstat(filepath.Join(d, ".hvsnap-export.json")); err == nil {
				unfinished = true
			}
		}
		if unfinished {
			return "", bad("%s is an interrupted export (no %s): finish it with hvsnap export --resume", dir, pkgfmt.ManifestName)
		}
		return "", bad("%s holds no %s (not an hvsnap package, or an unfinished export)", dir, pkgfmt.ManifestName)
	default:
		return "", fmt.Errorf("import: %s holds %d packages (%s); give one", dir, len(found), strings.Join(found, ", "))
	}
}

func subdirs(ents []os.DirEntry, dir string) []string {
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

// openInside opens rel inside dir refusing symlinks (and anything not a
// regular file) on the way.
func openInside(dir, rel string) (*os.File, os.FileInfo, error) {
	cur := dir
	parts := strings.Split(rel, "/")
	for i, c := range parts {
		cur = filepath.Join(cur, c)
		st, err := os.Lstat(cur)
		if err != nil {
			return nil, nil, bad("%s: %v", rel, err)
		}
		if st.Mode()&os.ModeSymlink != 0 {
			return nil, nil, bad("%s is a symlink", cur)
		}
		if i < len(parts)-1 && !st.IsDir() {
			return nil, nil, bad("%s is not a folder", cur)
		}
		if i == len(parts)-1 && !st.Mode().IsRegular() {
			return nil, nil, bad("%s is not a regular file (device, FIFO or folder)", cur)
		}
	}
	f, err := os.Open(cur)
	if err != nil {
		return nil, nil, fmt.Errorf("import: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("import: %w", err)
	}
	return f, st, nil
}

func (im *importer) folder(dir string) (*Result, error) {
	pkg, err := findPackage(dir)
	if err != nil {
		return nil, err
	}
	mf, _, err := openInside(pkg, pkgfmt.ManifestName)
	if err != nil {
		return nil, err
	}
	mb, err := io.ReadAll(io.LimitReader(mf, pkgfmt.MaxManifestSize+1))
	mf.Close()
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if len(mb) > pkgfmt.MaxManifestSize {
		return nil, bad("%s: manifest larger than %d bytes", pkg, pkgfmt.MaxManifestSize)
	}
	m, err := pkgfmt.OpenManifest(mb)
	if err != nil {
		return nil, bad("%s: %v", pkg, err)
	}
	var lp *pkgfmt.Listing
	if m.ListingSHA256 != "" {
		lf, _, err := openInside(pkg, pkgfmt.ListingName)
		if err != nil {
			return nil, err
		}
		lb, err := io.ReadAll(io.LimitReader(lf, pkgfmt.MaxListingSize+1))
		lf.Close()
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		if pkgfmt.SumHex(lb) != m.ListingSHA256 {
			return nil, bad("%s: the listing's SHA-256 differs from the manifest's (damaged listing)", pkg)
		}
		var l pkgfmt.Listing
		if err := json.Unmarshal(lb, &l); err != nil {
			return nil, bad("%s: the listing is not valid JSON: %v", pkg, err)
		}
		lp = &l
	}
	if err := pkgfmt.CheckManifest(m, lp); err != nil {
		return nil, bad("%s: %v", pkg, err)
	}
	// Before anything is staged or moved.
	if err := im.checkDigests(m); err != nil {
		return nil, err
	}
	files := make([]pkgfmt.ListingFile, len(m.Files))
	var total int64
	for i, f := range m.Files {
		files[i] = pkgfmt.ListingFile{Path: f.Path, Size: f.Size}
		if lp != nil {
			files[i].Alloc = lp.Files[i].Alloc
		}
		total += f.Size
	}
	if err := im.begin(m.Root, files); err != nil {
		return nil, err
	}
	im.rep.Start("import", total)
	defer im.rep.Done()
	for _, f := range m.Files {
		if err := im.folderFile(pkg, f); err != nil {
			return nil, err
		}
	}
	return im.finish(m)
}

func (im *importer) folderFile(pkg string, f pkgfmt.FileInfo) error {
	if err := pkgfmt.ValidPath(f.Path); err != nil {
		return bad("%v", err)
	}
	if im.o.Move && !im.o.VerifyOnly {
		return im.moveFile(pkg, f)
	}
	src, st, err := openInside(pkg, f.Path)
	if err != nil {
		return err
	}
	defer src.Close()
	if st.Size() != f.Size {
		return bad("%s is %d bytes, the manifest says %d", filepath.Join(pkg, f.Path), st.Size(), f.Size)
	}
	sum, err := im.stage(f.Path, f.Size, f.MTime, src, pkg)
	if err != nil {
		return err
	}
	if sum != f.SHA256 {
		return bad("%s: SHA-256 mismatch: the manifest says %s, the data is %s (damaged package)", filepath.Join(pkg, f.Path), f.SHA256, sum)
	}
	return nil
}

// crcAllowed: CRC-32C digests are accepted (relocate's local move, which
// moves and verifies files; VerifyOnly reads through the SHA-256 path).
func (im *importer) crcAllowed() bool {
	return im.o.Move && im.o.AllowCRC32C && !im.o.VerifyOnly
}

// checkDigests refuses a manifest whose files carry CRC-32C unless the
// import allows it.
func (im *importer) checkDigests(m *pkgfmt.Manifest) error {
	for _, f := range m.Files {
		if kind, _ := f.Digest(); kind != pkgfmt.DigestSHA256 && !im.crcAllowed() {
			return bad("%s: the manifest has no SHA-256 for it (a CRC-32C is accepted only by hvsnap relocate's local move)", f.Path)
		}
	}
	return nil
}

func digestName(kind string) string {
	if kind == pkgfmt.DigestCRC32C {
		return "CRC-32C"
	}
	return "SHA-256"
}

// moveFile verifies the package file f against the manifest and moves it
// into the staging folder (Options.Move). A file moved by an interrupted
// run is found in the staging folder and verified there.
func (im *importer) moveFile(pkg string, f pkgfmt.FileInfo) error {
	dst := filepath.Join(im.stRoot, filepath.FromSlash(f.Path))
	if d, ok := im.done(f.Path, f.Size); ok {
		im.rep.Add(f.Size)
		im.sums[f.Path] = d.SHA256
		im.resumed++
		return nil
	}
	from := filepath.Join(pkg, filepath.FromSlash(f.Path))
	src, st, err := openInside(pkg, f.Path)
	if err != nil {
		// Moved before the state was saved (a crash in between)?
		if _, serr := os.Lstat(from); !os.IsNotExist(serr) {
			return err
		}
		if ds, derr := os.Lstat(dst); derr != nil || !ds.Mode().IsRegular() {
			return err
		}
		src, st, err = openInside(im.stRoot, f.Path)
		if err != nil {
			return err
		}
		from = ""
	}
	defer src.Close()
	if st.Size() != f.Size {
		return bad("%s is %d bytes, the manifest says %d", filepath.Join(pkg, f.Path), st.Size(), f.Size)
	}
	kind, want := f.Digest()
	sum, err := im.copyHash(pkgfmt.NewDigest(kind), nil, src, f.Path, pkg, f.Size)
	if err != nil {
		return err
	}
	if sum != want {
		return bad("%s: %s mismatch: the manifest says %s, the data is %s (damaged package)", filepath.Join(pkg, f.Path), digestName(kind), want, sum)
	}
	if from != "" {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("import: %w", err)
		}
		if err := os.Rename(from, dst); err != nil {
			return fmt.Errorf("import: moving %s into %s (the package must be on the destination's file system): %w", from, im.staging, err)
		}
		if err := fsutil.SyncDir(dst); err != nil {
			return fmt.Errorf("import: %w", err)
		}
	}
	im.state.Done[f.Path] = stageDone{Size: f.Size, SHA256: sum}
	if err := im.saveState(); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	im.sums[f.Path] = sum
	if im.o.AfterFile != nil {
		return im.o.AfterFile(f.Path)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Verification, relinking, configurations, commit

func (im *importer) finish(m *pkgfmt.Manifest) (*Result, error) {
	if err := im.checkDigests(m); err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		kind, want := f.Digest()
		if got := im.sums[f.Path]; got != want {
			return nil, bad("%s: %s mismatch: the manifest says %s, the data is %s (damaged package)", f.Path, digestName(kind), want, got)
		}
	}
	res := &Result{Root: m.Root, VerifyOnly: im.o.VerifyOnly, Files: len(m.Files), Resumed: im.resumed, Manifest: m}
	for _, f := range m.Files {
		res.Bytes += f.Size
	}
	if m.VM != nil {
		res.VMName, res.VMID, res.ConfigKind = m.VM.Name, m.VM.ID, m.VM.ConfigKind
	}
	if im.o.VerifyOnly {
		return res, nil
	}
	final := im.final
	res.Path = final
	if err := im.relink(m, final, res); err != nil {
		return nil, err
	}
	if err := im.configs(m, final, res); err != nil {
		return nil, err
	}
	// Every staged file was fsynced when written; make the folders
	// durable, then commit with one rename.
	if err := filepath.Walk(im.stRoot, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() {
			return fsutil.SyncDir(filepath.Join(p, "x"))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if _, err := os.Lstat(final); err == nil {
		return nil, fmt.Errorf("import: %s appeared while importing: %w", final, ErrExists)
	}
	if err := os.Rename(im.stRoot, final); err != nil {
		return nil, fmt.Errorf("import: committing %s: %w", final, err)
	}
	if err := fsutil.SyncDir(final); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	os.RemoveAll(im.staging)
	fsutil.SyncDir(im.staging)
	im.staging = ""
	for i := range res.Disks {
		res.Disks[i] = filepath.Join(final, filepath.FromSlash(res.Disks[i]))
	}
	res.Hints = hints(m, res, im.winPath)
	return res, nil
}

// winPath is the path a Windows host will see for the local path p: the
// path map's, the path itself on Windows, else the local path with
// backslashes (the same convention vhd uses for parent locators).
func (im *importer) winPath(p string) string {
	if w, ok := im.o.PathMap.ToWindows(p); ok {
		return w
	}
	return strings.ReplaceAll(p, "/", `\`)
}

// relink re-points every differencing disk's locator at its parent's new
// place, keeping the recorded linkage (the data did not change).
func (im *importer) relink(m *pkgfmt.Manifest, final string, res *Result) error {
	byPath := map[string]*pkgfmt.FileInfo{}
	for i := range m.Files {
		byPath[m.Files[i].Path] = &m.Files[i]
	}
	isParent := map[string]bool{}
	for _, f := range m.Files {
		if f.Disk == nil {
			continue
		}
		res.Disks = append(res.Disks, f.Path)
		if f.Disk.Parent != "" {
			isParent[f.Disk.Parent] = true
		}
	}
	for _, f := range m.Files {
		if f.Disk == nil || f.Disk.Parent == "" {
			continue
		}
		child := filepath.Join(im.stRoot, filepath.FromSlash(f.Path))
		parentFinal := filepath.Join(final, filepath.FromSlash(f.Disk.Parent))
		rel, err := filepath.Rel(filepath.Dir(filepath.Join(final, filepath.FromSlash(f.Path))), parentFinal)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		rel = strings.ReplaceAll(rel, string(filepath.Separator), `\`)
		if !strings.HasPrefix(rel, `..\`) {
			rel = `.\` + rel
		}
		abs := im.winPath(parentFinal)
		pim, err := vhd.Open(filepath.Join(im.stRoot, filepath.FromSlash(f.Disk.Parent)), &vhd.Options{ReadOnly: true})
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		pinf := pim.Info()
		pim.Close()
		cim, err := vhd.Open(child, nil)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		loc := cim.Parent()
		if loc == nil {
			cim.Close()
			return bad("%s: the manifest gives it a parent but it is not a differencing disk", f.Path)
		}
		np := &vhd.NewParent{
			Name:               filepath.Base(parentFinal),
			RelativePath:       rel,
			AbsolutePath:       abs,
			UniqueID:           loc.ParentUniqueID,
			Timestamp:          loc.ParentTimestamp,
			VirtualSize:        pinf.VirtualSize,
			LogicalSectorSize:  pinf.LogicalSectorSize,
			PhysicalSectorSize: pinf.PhysicalSectorSize,
		}
		if g, err := vhd.ParseGUID(loc.Linkage); err == nil {
			np.Linkage = g
		}
		if loc.Linkage2 != "" {
			if g, err := vhd.ParseGUID(loc.Linkage2); err == nil {
				np.Linkage2 = g
			}
		}
		err = cim.SetParent(np)
		if err == nil {
			err = cim.Flush()
		}
		if cerr := cim.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("import: re-pointing %s: %w", f.Path, err)
		}
		// Keep the modification time: a VHD child of this disk records it.
		os.Chtimes(child, f.MTime, f.MTime)
		res.Relinked = append(res.Relinked, Relink{Child: filepath.Join(final, filepath.FromSlash(f.Path)), Parent: parentFinal, RelativePath: rel, AbsolutePath: abs})
	}
	// Every chain must open in the staging folder through its relative
	// paths, with matching linkage.
	for _, f := range m.Files {
		if f.Disk == nil || isParent[f.Path] {
			continue
		}
		c, err := vhd.OpenChain(filepath.Join(im.stRoot, filepath.FromSlash(f.Path)), &vhd.Options{ReadOnly: true})
		if err != nil {
			return fmt.Errorf("import: the imported chain of %s does not open: %w", f.Path, err)
		}
		for _, l := range c.Links {
			if !l.LinkageOK || l.Via != "relative_path" {
				c.Close()
				return fmt.Errorf("import: %s → %s: linkage ok %v via %s after re-pointing", l.Child, l.Parent, l.LinkageOK, l.Via)
			}
		}
		c.Close()
	}
	return nil
}

// configs rewrites the drive paths (and, with NewID, the VM ID) of the XML
// configurations; VMCX files are never written.
func (im *importer) configs(m *pkgfmt.Manifest, final string, res *Result) error {
	newID := ""
	if im.o.NewID && m.VM != nil && m.VM.ConfigKind == "xml" {
		newID = vhd.NewGUID().String()
		res.OldVMID, res.VMID = res.VMID, newID
	}
	oldVMID := ""
	if m.VM != nil {
		oldVMID = m.VM.ID
	}
	for _, f := range m.Files {
		if f.Config == nil {
			continue
		}
		staged := filepath.Join(im.stRoot, filepath.FromSlash(f.Path))
		finalPath := filepath.Join(final, filepath.FromSlash(f.Path))
		if f.Config.Kind != "xml" {
			if f.Role == pkgfmt.RoleVMConfig {
				res.Config = finalPath
			}
			continue
		}
		repl := map[string]string{}
		for _, d := range f.Config.Drives {
			if d.Disk != "" {
				repl[strings.ToLower(d.WindowsPath)] = im.winPath(filepath.Join(final, filepath.FromSlash(d.Disk)))
			}
		}
		b, err := os.ReadFile(staged)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		ids := map[string]string{}
		if newID != "" {
			ids = map[string]string{"logical_id": newID}
			if f.Role == pkgfmt.RoleVMConfig {
				ids["global_id"] = newID
			}
		}
		nb, err := rewriteXML(b, repl, ids, oldVMID)
		if err != nil {
			return bad("%s: %v", f.Path, err)
		}
		if err := writeAtomic(staged, nb); err != nil {
			return fmt.Errorf("import: %w", err)
		}
		res.Rewritten = append(res.Rewritten, finalPath)
		if f.Role == pkgfmt.RoleVMConfig {
			res.Config = finalPath
		}
	}
	if newID != "" {
		if err := im.renameIDs(oldVMID, newID, res, final); err != nil {
			return err
		}
	}
	return nil
}

// renameIDs renames `Virtual Machines/<old>.xml`, its `<old>/` folder and
// the files in it named after the old ID.
func (im *importer) renameIDs(oldID, newID string, res *Result, final string) error {
	vmDir := filepath.Join(im.stRoot, pkgfmt.DirVMs)
	ents, err := os.ReadDir(vmDir)
	if err != nil {
		return nil
	}
	ren := func(dir, name string) (string, error) {
		if !strings.HasPrefix(strings.ToUpper(name), strings.ToUpper(oldID)) {
			return name, nil
		}
		nn := newID + name[len(oldID):]
		return nn, os.Rename(filepath.Join(dir, name), filepath.Join(dir, nn))
	}
	for _, e := range ents {
		nn, err := ren(vmDir, e.Name())
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		if e.IsDir() && nn != e.Name() {
			sub := filepath.Join(vmDir, nn)
			subs, _ := os.ReadDir(sub)
			for _, s := range subs {
				if _, err := ren(sub, s.Name()); err != nil {
					return fmt.Errorf("import: %w", err)
				}
			}
			fsutil.SyncDir(filepath.Join(sub, "x"))
		}
		if strings.EqualFold(filepath.Join(final, pkgfmt.DirVMs, e.Name()), res.Config) {
			res.Config = filepath.Join(final, pkgfmt.DirVMs, nn)
		}
	}
	return fsutil.SyncDir(filepath.Join(vmDir, "x"))
}

func writeAtomic(p string, b []byte) error {
	st, _ := os.Stat(p)
	tmp := p + ".hvsnap-tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if st != nil {
		os.Chtimes(tmp, st.ModTime(), st.ModTime())
	}
	return fsutil.AtomicRename(tmp, p)
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		f /= unit
		if f < unit {
			return fmt.Sprintf("%.1f %s", f, u)
		}
	}
	return fmt.Sprintf("%.1f EiB", f/unit)
}

// hints says what to run on the Hyper-V host after the files are in place.
func hints(m *pkgfmt.Manifest, res *Result, winOf func(string) string) []string {
	var out []string
	if m.VM == nil || res.Config == "" {
		if len(res.Disks) > 0 {
			out = append(out, "attach the disk to a VM with: Add-VMHardDiskDrive -VMName <VM> -Path '"+winOf(res.Disks[len(res.Disks)-1])+"'")
		}
		return out
	}
	cfg := winOf(res.Config)
	id := res.VMID
	if m.VM.ConfigKind == "vmcx" {
		vhdDir := winOf(filepath.Join(res.Path, pkgfmt.DirDisks))
		out = append(out,
			"the VM configuration is VMCX, which hvsnap does not write: its disk paths still name the old places. Register it and fix the paths in PowerShell:",
			"  $r = Compare-VM -Path '"+cfg+"' -Register",
			"  Get-VMHardDiskDrive -VM $r.VM | ForEach-Object { Set-VMHardDiskDrive -VMHardDiskDrive $_ -Path (Join-Path '"+vhdDir+"' (Split-Path $_.Path -Leaf)) }",
			"  Import-VM -CompatibilityReport $r")
	} else {
		out = append(out, "register the VM on the Hyper-V host: Import-VM -Path '"+cfg+"' -Register")
	}
	if runtime.GOOS != "windows" {
		out = append(out, "NTFS permissions are not carried by the package: if Hyper-V refuses to start the VM (0x80070005, access denied), grant the VM's account access:",
			"  icacls '"+winOf(res.Path)+"' /grant 'NT VIRTUAL MACHINE\\"+id+":(OI)(CI)F' /T")
	}
	return out
}
