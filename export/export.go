// Package export writes hvsnap packages: a VM (its configuration,
// checkpoint configurations, saved state and disk chains) or one disk chain,
// as a folder in Hyper-V's export layout or as one .tar.lz4 archive, with a
// manifest that holds the SHA-256 of every file (see internal/pkgfmt for the
// format).
//
// Sources are only read. Reading, hashing and compressing overlap (a reader
// goroutine, a hashing goroutine and the LZ4 writer's block compressors),
// holes of sparse files are skipped with SEEK_DATA/SEEK_HOLE, and memory is
// bounded by a fixed pool of 256 KiB buffers (8 MiB) plus the LZ4 writer's blocks.
package export

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
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

// Options control Export.
type Options struct {
	// To is the destination: a folder (the package is made in
	// To/<VM name>, like Export-VM -Path), a FILE.tar.lz4 archive, or "-"
	// (an archive written to Stdout).
	To     string
	Stdout io.Writer
	// Flatten writes each drive as one standalone disk (the VM's current
	// state, checkpoints dropped).
	Flatten bool
	// Checkpoint exports this checkpoint (name or ID) as a standalone VM.
	Checkpoint string
	// Resume continues an interrupted folder export, verifying what is
	// already there.
	Resume bool
	// PathMap maps Windows paths in configurations and parent locators.
	PathMap vhd.PathMap
	// TempDir holds flattened disks of an archive export while it is
	// written (default: the archive's folder; the system's for "-").
	TempDir string
	// Tool is recorded in the manifest (e.g. "hvsnap 0.1.0").
	Tool string
	// Digest is the per-file digest of the manifest: pkgfmt.DigestSHA256
	// (""), or DigestCRC32C for a folder package that is imported on the
	// same host right away (hvsnap relocate), where the digest only has to
	// catch a damaged copy, not a forged one.
	Digest string
	// AfterFile, when set, is called after each file of a folder export is
	// complete; an error stops the export there (tests use it to interrupt).
	AfterFile func(pkgPath string) error
}

// Result says what Export wrote.
type Result struct {
	Package string `json:"package"` // the folder or archive ("-" for standard output)
	Archive bool   `json:"archive"`
	Root    string `json:"root"`
	Files   int    `json:"files"`
	Bytes   int64  `json:"bytes"`   // content bytes of the files
	Written int64  `json:"written"` // bytes written (the archive's size)
	Resumed int    `json:"resumed"` // files kept from an interrupted export (verified)
	// Manifest is the package's manifest.
	Manifest *pkgfmt.Manifest `json:"manifest"`
}

// Errors.
var (
	ErrExists = errors.New("destination exists")
	ErrUsage  = errors.New("invalid export options")
)

// IsArchive tells whether a --to value names an archive.
func IsArchive(to string) bool {
	l := strings.ToLower(to)
	return to == "-" || strings.HasSuffix(l, ".tar.lz4") || strings.HasSuffix(l, ".tlz4")
}

// Export writes the package of src (a VM folder or a disk file).
func Export(src string, o Options, rep progress.Reporter) (*Result, error) {
	rep = progress.OrNop(rep)
	if o.To == "" {
		return nil, fmt.Errorf("export: no destination: %w", ErrUsage)
	}
	archive := IsArchive(o.To)
	if archive && o.Resume {
		return nil, fmt.Errorf("export: --resume continues folder exports; an archive is written again from the start: %w", ErrUsage)
	}
	if o.Flatten && o.Checkpoint != "" {
		return nil, fmt.Errorf("export: --flatten and --checkpoint exclude each other (a checkpoint is always flattened): %w", ErrUsage)
	}
	if o.Digest == "" {
		o.Digest = pkgfmt.DigestSHA256
	}
	if o.Digest != pkgfmt.DigestSHA256 && (o.Digest != pkgfmt.DigestCRC32C || archive) {
		return nil, fmt.Errorf("export: digest %q: packages carry SHA-256 (CRC-32C only for a local folder relocation): %w", o.Digest, ErrUsage)
	}
	if o.To == "-" && o.Stdout == nil {
		return nil, fmt.Errorf("export: no standard output to write to: %w", ErrUsage)
	}
	p, err := checkUnfinished(makePlan(src, &o))
	if err != nil {
		return nil, err
	}
	absSrc, _ := filepath.Abs(src)
	host, _ := os.Hostname()
	tool := o.Tool
	if tool == "" {
		tool = "hvsnap"
	}
	m := &pkgfmt.Manifest{
		Schema: pkgfmt.Schema, Tool: tool, Created: time.Now().UTC().Truncate(time.Second),
		Kind: p.kind, Root: p.root, VM: p.vm,
		Source: pkgfmt.Source{Host: host, OS: runtime.GOOS, Path: absSrc},
	}
	e := &exporter{o: o, p: p, m: m, rep: rep, pl: newPipeline(o.Digest)}
	if archive {
		return e.archive()
	}
	return e.folder()
}

type exporter struct {
	o   Options
	p   *plan
	m   *pkgfmt.Manifest
	rep progress.Reporter
	pl  *pipeline
}

// flatten makes the standalone disk of it at dst (which must not exist).
func (e *exporter) flatten(it *item, dst string) error {
	c, err := vhd.OpenChain(it.flatten, &vhd.Options{ReadOnly: true, PathMap: e.o.PathMap})
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer c.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if _, err := vhd.Convert(c, dst, vhd.ConvertOptions{Format: it.format, Type: vhd.TypeDynamic}, e.rep); err != nil {
		return fmt.Errorf("export: flattening %s: %w", it.flatten, err)
	}
	it.src = dst
	return e.describeFlat(it)
}

func (e *exporter) describeFlat(it *item) error {
	im, err := vhd.Open(it.src, &vhd.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer im.Close()
	inf := im.Info()
	it.disk.DiskID = inf.DiskID.String()
	it.disk.Identity = inf.Identity().String()
	it.disk.Type = string(inf.Type)
	return nil
}

// fileInfo describes a finished file for the manifest.
func (e *exporter) fileInfo(it *item, size int64, sum string, mt time.Time) pkgfmt.FileInfo {
	src := it.src
	if it.flatten != "" {
		src = it.flatten
	}
	fi := pkgfmt.FileInfo{Path: it.pkgPath, Role: it.role, Size: size, SHA256: sum, MTime: mt.UTC(), Source: src, Disk: it.disk, Config: it.config}
	if e.pl.digest == pkgfmt.DigestCRC32C {
		fi.SHA256, fi.CRC32C = "", sum
	}
	return fi
}

// listing stats every source file.
func (e *exporter) listing() (*pkgfmt.Listing, error) {
	l := &pkgfmt.Listing{Schema: pkgfmt.Schema, Root: e.p.root}
	for _, it := range e.p.items {
		st, err := os.Stat(it.src)
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("export: %s is not a regular file", it.src)
		}
		l.Files = append(l.Files, pkgfmt.ListingFile{Path: it.pkgPath, Size: st.Size(), Alloc: pkgfmt.Allocated(st)})
		l.Total += st.Size()
	}
	return l, nil
}

// ---------------------------------------------------------------------------
// Archive

func (e *exporter) archive() (res *Result, err error) {
	o := e.o
	var out io.Writer
	var file *os.File
	var tmpName string
	if o.To != "-" {
		if _, err := os.Lstat(o.To); err == nil {
			return nil, fmt.Errorf("export: %s already exists: %w", o.To, ErrExists)
		}
		tmpName = o.To + ".partial"
		file, err = os.OpenFile(tmpName, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		defer func() {
			if err != nil {
				file.Close()
				os.Remove(tmpName)
			}
		}()
		out = file
	} else {
		out = o.Stdout
	}
	// Flattened disks are made first, in a temporary folder.
	var tmpDir string
	for _, it := range e.p.items {
		if it.flatten == "" {
			continue
		}
		if tmpDir == "" {
			base := o.TempDir
			if base == "" && o.To != "-" {
				base = filepath.Dir(o.To)
			}
			tmpDir, err = os.MkdirTemp(base, ".hvsnap-export-")
			if err != nil {
				return nil, fmt.Errorf("export: %w", err)
			}
			defer os.RemoveAll(tmpDir)
		}
		if err := e.flatten(it, filepath.Join(tmpDir, filepath.Base(it.pkgPath))); err != nil {
			return nil, err
		}
	}
	l, err := e.listing()
	if err != nil {
		return nil, err
	}
	e.rep.Start("export", l.Total)
	defer e.rep.Done()

	bw := bufio.NewWriterSize(out, 1<<20)
	cw := &fsutil.CountingWriter{W: bw}
	zw := lz4.NewWriter(cw)
	if err := zw.Apply(lz4.BlockSizeOption(lz4.Block4Mb), lz4.ConcurrencyOption(runtime.GOMAXPROCS(0)),
		lz4.CompressionLevelOption(lz4.Fast), lz4.ChecksumOption(true)); err != nil {
		return nil, fmt.Errorf("export: lz4: %w", err)
	}
	tw := pkgfmt.NewTarWriter(zw)
	now := time.Now()
	writeDoc := func(name string, b []byte) error {
		if err := tw.WriteHeader(&pkgfmt.TarHeader{Name: e.p.root + "/" + name, Size: int64(len(b)), ModTime: now}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
		return tw.EndEntry()
	}
	wrap := func(err error) error {
		if o.To == "-" {
			return fmt.Errorf("export: writing to standard output: %w", err)
		}
		return fmt.Errorf("export: writing %s: %w", o.To, err)
	}
	lb, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return nil, err
	}
	lb = append(lb, '\n')
	e.m.ListingSHA256 = pkgfmt.SumHex(lb)
	if err := writeDoc(pkgfmt.ListingName, lb); err != nil {
		return nil, wrap(err)
	}
	for i, it := range e.p.items {
		fi, err := e.archiveFile(tw, it, l.Files[i].Size)
		if err != nil {
			return nil, err
		}
		e.m.Files = append(e.m.Files, fi)
	}
	mb, err := pkgfmt.SealManifest(e.m)
	if err != nil {
		return nil, err
	}
	if err := writeDoc(pkgfmt.ManifestName, mb); err != nil {
		return nil, wrap(err)
	}
	if err := tw.Close(); err != nil {
		return nil, wrap(err)
	}
	if err := zw.Close(); err != nil {
		return nil, wrap(err)
	}
	if err := bw.Flush(); err != nil {
		return nil, wrap(err)
	}
	res = &Result{Package: o.To, Archive: true, Root: e.p.root, Files: len(e.m.Files), Bytes: l.Total, Written: cw.N, Manifest: e.m}
	if file != nil {
		if err := file.Sync(); err != nil {
			return nil, wrap(err)
		}
		if err := file.Close(); err != nil {
			return nil, wrap(err)
		}
		if err := fsutil.AtomicRename(tmpName, o.To); err != nil {
			return nil, wrap(err)
		}
	}
	return res, nil
}

func (e *exporter) archiveFile(tw *pkgfmt.TarWriter, it *item, listed int64) (pkgfmt.FileInfo, error) {
	f, err := os.Open(it.src)
	if err != nil {
		return pkgfmt.FileInfo{}, fmt.Errorf("export: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return pkgfmt.FileInfo{}, fmt.Errorf("export: %w", err)
	}
	if st.Size() != listed {
		return pkgfmt.FileInfo{}, fmt.Errorf("export: %s: %w", it.src, errChanged)
	}
	segs, err := pkgfmt.DataSegments(f, st.Size())
	if err != nil {
		return pkgfmt.FileInfo{}, fmt.Errorf("export: %s: %w", it.src, err)
	}
	h := &pkgfmt.TarHeader{Name: e.p.root + "/" + it.pkgPath, Size: st.Size(), ModTime: st.ModTime(), Segments: segs}
	if err := tw.WriteHeader(h); err != nil {
		return pkgfmt.FileInfo{}, fmt.Errorf("export: writing %s: %w", it.pkgPath, err)
	}
	sum, err := e.pl.streamFile(f, st.Size(), segs, func(_ int64, b []byte) error {
		_, err := tw.Write(b)
		return err
	}, e.rep)
	if err != nil {
		return pkgfmt.FileInfo{}, fmt.Errorf("export: %s: %w", it.src, err)
	}
	if err := tw.EndEntry(); err != nil {
		return pkgfmt.FileInfo{}, fmt.Errorf("export: writing %s: %w", it.pkgPath, err)
	}
	if st2, err := os.Stat(it.src); err != nil || st2.Size() != st.Size() || !st2.ModTime().Equal(st.ModTime()) {
		return pkgfmt.FileInfo{}, fmt.Errorf("export: %s: %w", it.src, errChanged)
	}
	return e.fileInfo(it, st.Size(), sum, st.ModTime()), nil
}

// ---------------------------------------------------------------------------
// Folder

const journalName = ".hvsnap-export.json"

// journal records the files of a folder export that are complete, so that
// --resume keeps them (after re-hashing them) instead of copying again.
type journal struct {
	Root   string                  `json:"root"`
	Digest string                  `json:"digest,omitempty"` // of the entries' SHA256 field ("": sha256)
	Done   map[string]journalEntry `json:"done"`
}

type journalEntry struct {
	Size     int64     `json:"size"`
	SHA256   string    `json:"sha256"`
	MTime    time.Time `json:"mtime"`
	Src      string    `json:"src"`
	SrcSize  int64     `json:"src_size"`
	SrcMTime time.Time `json:"src_mtime"`
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
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
	return fsutil.AtomicRename(tmp, path)
}

func (e *exporter) folder() (*Result, error) {
	o := e.o
	pkgDir := filepath.Join(o.To, e.p.root)
	jpath := filepath.Join(pkgDir, journalName)
	dg := e.pl.digest
	if dg == pkgfmt.DigestSHA256 {
		dg = ""
	}
	j := &journal{Root: e.p.root, Digest: dg, Done: map[string]journalEntry{}}
	if _, err := os.Lstat(pkgDir); err == nil {
		if !o.Resume {
			return nil, fmt.Errorf("export: %s already exists (use --resume to continue an interrupted export into it, or choose another --to): %w", pkgDir, ErrExists)
		}
		if b, err := os.ReadFile(jpath); err == nil {
			if err := json.Unmarshal(b, j); err != nil || j.Done == nil || j.Digest != dg {
				j = &journal{Root: e.p.root, Digest: dg, Done: map[string]journalEntry{}}
			}
		}
	} else if err := os.MkdirAll(pkgDir, 0o755); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	saveJournal := func() error {
		b, _ := json.MarshalIndent(j, "", "  ")
		return writeFileAtomic(jpath, b)
	}
	if err := saveJournal(); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	res := &Result{Package: pkgDir, Root: e.p.root}

	// keep reports whether dst holds what the journal says, from an
	// unchanged source; it re-hashes dst.
	keep := func(it *item, src, dst string) (journalEntry, bool) {
		je, ok := j.Done[it.pkgPath]
		if !ok || je.Src != src {
			return je, false
		}
		sst, err := os.Stat(src)
		if err != nil || sst.Size() != je.SrcSize || !sst.ModTime().Equal(je.SrcMTime) {
			return je, false
		}
		dst0, err := os.Lstat(dst)
		if err != nil || !dst0.Mode().IsRegular() || dst0.Size() != je.Size {
			return je, false
		}
		sum, _, err := e.pl.hashFile(dst, progress.Nop{})
		return je, err == nil && sum == je.SHA256
	}
	record := func(it *item, src, dst, sum string) error {
		st, err := os.Stat(dst)
		if err != nil {
			return err
		}
		sst, err := os.Stat(src)
		if err != nil {
			return err
		}
		j.Done[it.pkgPath] = journalEntry{Size: st.Size(), SHA256: sum, MTime: st.ModTime().UTC(), Src: src, SrcSize: sst.Size(), SrcMTime: sst.ModTime()}
		if err := saveJournal(); err != nil {
			return err
		}
		if o.AfterFile != nil {
			return o.AfterFile(it.pkgPath)
		}
		return nil
	}

	// 1. Flattened disks, made in place.
	for _, it := range e.p.items {
		if it.flatten == "" {
			continue
		}
		dst := filepath.Join(pkgDir, filepath.FromSlash(it.pkgPath))
		if _, ok := keep(it, it.flatten, dst); ok {
			it.src = dst
			if err := e.describeFlat(it); err != nil {
				return nil, err
			}
			res.Resumed++
			continue
		}
		os.Remove(dst)
		if err := e.flatten(it, dst); err != nil {
			return nil, err
		}
		sum, _, err := e.pl.hashFile(dst, progress.Nop{})
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		if err := record(it, it.flatten, dst, sum); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
	}
	// 2. The listing (sizes are all known now).
	var l *pkgfmt.Listing
	{
		// Flattened items are listed from their package copy.
		l = &pkgfmt.Listing{Schema: pkgfmt.Schema, Root: e.p.root}
		for _, it := range e.p.items {
			st, err := os.Stat(it.src)
			if err != nil {
				return nil, fmt.Errorf("export: %w", err)
			}
			l.Files = append(l.Files, pkgfmt.ListingFile{Path: it.pkgPath, Size: st.Size(), Alloc: pkgfmt.Allocated(st)})
			l.Total += st.Size()
		}
		b, _ := json.MarshalIndent(l, "", "  ")
		b = append(b, '\n')
		e.m.ListingSHA256 = pkgfmt.SumHex(b)
		if err := writeFileAtomic(filepath.Join(pkgDir, pkgfmt.ListingName), b); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
	}
	e.rep.Start("export", l.Total)
	defer e.rep.Done()
	// 3. Copies.
	for _, it := range e.p.items {
		dst := filepath.Join(pkgDir, filepath.FromSlash(it.pkgPath))
		if it.flatten != "" {
			je := j.Done[it.pkgPath]
			e.m.Files = append(e.m.Files, e.fileInfo(it, je.Size, je.SHA256, je.MTime))
			e.rep.Add(je.Size)
			continue
		}
		if je, ok := keep(it, it.src, dst); ok {
			e.m.Files = append(e.m.Files, e.fileInfo(it, je.Size, je.SHA256, je.SrcMTime))
			e.rep.Add(je.Size)
			res.Resumed++
			continue
		}
		sum, st, err := e.copyFile(it.src, dst)
		if err != nil {
			return nil, err
		}
		if err := record(it, it.src, dst, sum); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		e.m.Files = append(e.m.Files, e.fileInfo(it, st.Size(), sum, st.ModTime()))
	}
	// 4. The manifest marks the package complete.
	b, err := pkgfmt.SealManifest(e.m)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(pkgDir, pkgfmt.ManifestName), b); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	os.Remove(jpath)
	if err := fsutil.SyncDir(jpath); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	res.Files, res.Bytes, res.Written, res.Manifest = len(e.m.Files), l.Total, l.Total, e.m
	return res, nil
}

// copyFile copies src to dst (through dst.hvsnap-partial, fsynced and
// renamed), keeping holes and the modification time; returns the SHA-256
// and the source's stat.
func (e *exporter) copyFile(src, dst string) (string, os.FileInfo, error) {
	f, err := os.Open(src)
	if err != nil {
		return "", nil, fmt.Errorf("export: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", nil, fmt.Errorf("export: %w", err)
	}
	segs, err := pkgfmt.DataSegments(f, st.Size())
	if err != nil {
		return "", nil, fmt.Errorf("export: %s: %w", src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", nil, fmt.Errorf("export: %w", err)
	}
	tmp := dst + ".hvsnap-partial"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return "", nil, fmt.Errorf("export: %w", err)
	}
	fail := func(err error) (string, os.FileInfo, error) {
		out.Close()
		os.Remove(tmp)
		return "", nil, err
	}
	sum, err := e.pl.streamFile(f, st.Size(), segs, func(off int64, b []byte) error {
		_, err := out.WriteAt(b, off)
		return err
	}, e.rep)
	if err != nil {
		return fail(fmt.Errorf("export: %s: %w", src, err))
	}
	if err := out.Truncate(st.Size()); err != nil {
		return fail(fmt.Errorf("export: %s: %w", dst, err))
	}
	if err := out.Sync(); err != nil {
		return fail(fmt.Errorf("export: %s: %w", dst, err))
	}
	if err := out.Close(); err != nil {
		return fail(fmt.Errorf("export: %s: %w", dst, err))
	}
	os.Chtimes(tmp, st.ModTime(), st.ModTime())
	if st2, err := os.Stat(src); err != nil || st2.Size() != st.Size() || !st2.ModTime().Equal(st.ModTime()) {
		os.Remove(tmp)
		return "", nil, fmt.Errorf("export: %s: %w", src, errChanged)
	}
	if err := fsutil.AtomicRename(tmp, dst); err != nil {
		os.Remove(tmp)
		return "", nil, fmt.Errorf("export: %w", err)
	}
	return sum, st, nil
}
