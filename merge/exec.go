package merge

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hvsnap/hvsnap/internal/fsutil"
	"github.com/hvsnap/hvsnap/internal/journal"
	"github.com/hvsnap/hvsnap/internal/lock"
	"github.com/hvsnap/hvsnap/internal/progress"
	"github.com/hvsnap/hvsnap/vhd"
	"github.com/hvsnap/hvsnap/vm"
)

// chunk is the most bytes copied per read/write.
const chunk = 4 << 20

// batchBytes: block allocations committed together in the parent. A crash
// loses the copy's uncommitted allocations and resume repeats the whole copy
// anyway, so the copy commits once at its end (and whenever the pending log
// transaction grows large): a single flush, like cp + sync.
const batchBytes = 1 << 40

// writebackEvery: the copy asks the device to start writing after every so
// many bytes (Image.StartWriteback), so that writing overlaps copying.
const writebackEvery = 32 << 20

// verifyWorkers read P back in parallel (both cores of a small host).
const verifyWorkers = 2

// Run executes a plan: locks, space check, journal, steps. A *NoSpaceError
// before anything is touched means nothing changed.
func Run(p *Plan, o *Options, rep progress.Reporter) (*Result, error) {
	if o == nil {
		o = &Options{}
	}
	rep = progress.OrNop(rep)
	if len(p.Steps) == 0 {
		return &Result{Plan: p}, nil
	}
	locks, err := lock.Files(p.files()...)
	if err != nil {
		return nil, inUse(err)
	}
	defer locks.Release()
	o.hook("locked")
	if js, err := journal.Involving(p.files()...); err != nil {
		return nil, err
	} else if len(js) > 0 {
		return nil, busyError(js[0])
	}
	if err := p.refreshFree(o); err != nil {
		return nil, err
	}
	if err := p.CheckSpace(o); err != nil {
		return nil, err
	}
	j, err := journal.Create(p.dir(), "merge", p.files(), p)
	if err != nil {
		return nil, err
	}
	defer j.Close()
	o.hook("journal")
	res := newResult(p, j.Path)
	if err := execute(j, p, o, rep, locks, res); err != nil {
		return res, err
	}
	return res, nil
}

// files is every disk the plan may touch.
func (p *Plan) files() []string {
	seen := map[string]bool{}
	var out []string
	add := func(f string) {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	for _, s := range p.Steps {
		add(s.Child)
		if !s.Discard {
			// A removal without merge does not touch the parent, which
			// the VM running on the other branch holds open.
			add(s.Parent)
		}
		for _, c := range s.Children {
			add(c)
		}
	}
	return out
}

// refreshFree updates the free space of the plan's volumes.
func (p *Plan) refreshFree(o *Options) error {
	vols, err := o.volumes().Volumes()
	if err != nil {
		return nil // unknown: CheckSpace reports volumes as they were planned
	}
	for i := range p.Volumes {
		v := &p.Volumes[i]
		if w, ok := volumeByMount(vols, v.Mount); ok {
			v.Free = w.Free
			v.OK = v.Peak == 0 || w.Free >= v.Peak+v.Margin
		}
	}
	return nil
}

func inUse(err error) error {
	var iu *lock.InUseError
	if errors.As(err, &iu) {
		return &RefusedError{Path: iu.Path, Reason: "in use: the disk is held open or locked by another process (a running VM or another hvsnap job); stop it and try again", Cause: err}
	}
	return err
}

// ProbeLocks reports (as an "in use" refusal) whether another process
// holds any file the plan would lock, taking and releasing the locks. It
// changes nothing; a dry run uses it to predict what Run would refuse.
func (p *Plan) ProbeLocks() error {
	locks, err := p.lockFiles()
	if err != nil {
		return err
	}
	locks.Release()
	return nil
}

// ProbeJournal reports whether the merge recorded in the journal at path
// could be resumed now: an "in use" refusal when another process holds its
// files (it is still running there, or a VM holds them). It changes nothing.
func ProbeJournal(path string) error {
	p, err := readJournalPlan(path)
	if err != nil {
		return err
	}
	return p.ProbeLocks()
}

// JournalPlan is the plan recorded in the merge journal at path.
func JournalPlan(path string) (*Plan, error) { return readJournalPlan(path) }

// readJournalPlan reads the plan a merge journal was created with.
func readJournalPlan(path string) (*Plan, error) {
	jr, err := journal.Read(path)
	if err != nil {
		return nil, err
	}
	if jr.Header.Op != "merge" {
		return nil, fmt.Errorf("%s: a %s journal, not a merge: run hvsnap %s --resume", path, jr.Header.Op, jr.Header.Op)
	}
	var p Plan
	if err := json.Unmarshal(jr.Header.Plan, &p); err != nil || p.Schema != PlanSchema {
		return nil, fmt.Errorf("%w %s: unreadable merge plan", journal.ErrCorrupt, path)
	}
	return &p, nil
}

// newResult is an empty Result of plan p recorded in journal path (lists
// empty, not null, in JSON).
func newResult(p *Plan, path string) *Result {
	return &Result{Plan: p, Journal: path, Growth: map[string]int64{}, Merged: []string{}, Removed: []string{}, ConfigsUpdated: []string{}, Commands: []string{}}
}

// lockFiles locks every file of the plan that exists (an "in use" refusal
// when another process holds one).
func (p *Plan) lockFiles() (*lock.Set, error) {
	var existing []string
	for _, f := range p.files() {
		if _, err := os.Stat(f); err == nil {
			existing = append(existing, f)
		}
	}
	locks, err := lock.Files(existing...)
	if err != nil {
		return nil, inUse(err)
	}
	return locks, nil
}

// Resume finishes the merge recorded in the journal at path.
func Resume(path string, o *Options, rep progress.Reporter) (*Result, error) {
	if o == nil {
		o = &Options{}
	}
	rep = progress.OrNop(rep)
	pp, err := readJournalPlan(path)
	if err != nil {
		return nil, err
	}
	p := *pp
	// A journal sits next to the merge's target (a removal's: next to the
	// removed disk). One found elsewhere was copied or moved with its
	// folder: its records are about the files at the recorded paths, not
	// the copies next to it.
	if p.Into != "" && canon(filepath.Dir(path)) != canon(p.dir()) {
		return nil, refused(path, "this journal records a merge into %s, in another folder: it was copied or moved with its folder and belongs to the files there (resume it there: hvsnap merge --resume %s). The copies here are as that merge left them, and read the same: remove this journal, then merge the copy's disk again with hvsnap merge",
			p.Into, quoteArg(p.dir()))
	}
	if len(o.PathMap) == 0 {
		for _, s := range p.PathMap {
			m, err := vhd.ParsePathMapping(s)
			if err == nil {
				o.PathMap = append(o.PathMap, m)
			}
		}
	}
	locks, err := p.lockFiles()
	if err != nil {
		return nil, err
	}
	defer locks.Release()
	j, err := journal.Open(path)
	if err != nil {
		return nil, err
	}
	defer j.Close()
	res := newResult(&p, path)
	res.Resumed = true
	if j.Ended() {
		return res, j.Finish()
	}
	o.hook("resume")
	if err := execute(j, &p, o, rep, locks, res); err != nil {
		return res, err
	}
	return res, nil
}

// FindJournals lists the unfinished merge journals for a path: a journal
// file itself, the journals in a folder and its subfolders, or those naming
// a disk.
func FindJournals(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() && journal.IsJournal(path) {
		return []string{path}, nil
	}
	var cands []string
	if fi.IsDir() {
		// The folder and the folders below it (a VM folder: its journals
		// sit in "Virtual Hard Disks"); unreadable folders are passed over.
		err = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				if p == path {
					return err
				}
				return filepath.SkipDir
			}
			if d.IsDir() {
				js, err := journal.Find(p)
				if err == nil {
					cands = append(cands, js...)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	} else {
		js, err := journal.Involving(path)
		if err != nil {
			return nil, err
		}
		for _, j := range js {
			cands = append(cands, j.Path)
		}
	}
	var out []string
	for _, c := range cands {
		if j, err := journal.Read(c); err == nil && j.Header.Op == "merge" {
			out = append(out, c)
		} else if err != nil {
			return nil, err
		}
	}
	return out, nil
}

type stepState struct {
	j   *journal.Journal
	key string
	o   *Options
}

// do runs fn as journaled sub-step name unless it is done already.
func (s stepState) do(name string, data any, fn func() (any, error)) error {
	k := s.key + name
	if ok, _ := s.j.IsDone(k); ok {
		return nil
	}
	if err := s.j.Start(k, data); err != nil {
		return err
	}
	s.o.hook(k + ":start")
	out, err := fn()
	if err != nil {
		return err
	}
	if err := s.j.Done(k, out); err != nil {
		return err
	}
	s.o.hook(k + ":done")
	return nil
}

func execute(j *journal.Journal, p *Plan, o *Options, rep progress.Reporter, locks *lock.Set, res *Result) error {
	for i := range p.Steps {
		st := &p.Steps[i]
		ss := stepState{j: j, key: fmt.Sprintf("%d/", i), o: o}
		if ok, _ := j.IsDone(ss.key + "remove"); !ok {
			before := fileSize(st.Parent)
			if err := runStep(ss, p, i, o, rep, locks, res); err != nil {
				return err
			}
			if !st.Discard {
				res.Growth[st.Parent] += fileSize(st.Parent) - before
			}
		}
		if !st.Discard {
			res.Merged = append(res.Merged, st.Child)
		}
	}
	o.hook("finish")
	return j.Finish()
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func runStep(ss stepState, p *Plan, i int, o *Options, rep progress.Reporter, locks *lock.Set, res *Result) error {
	st := &p.Steps[i]
	if st.Discard {
		// Checked again under the lock, right before the removal (also when
		// a resume, maybe a scheduled cleanup, gets here later). Refused,
		// nothing was changed: the removal is abandoned (its journal ended)
		// rather than left to be refused at every later run.
		if _, serr := os.Stat(st.Child); !os.IsNotExist(serr) {
			if err := recheckRemoval(p, o); err != nil {
				if ferr := ss.j.Finish(); ferr != nil {
					return ferr
				}
				return fmt.Errorf("%w (the removal is abandoned: nothing was changed, and its journal %s is removed)", err, ss.j.Path)
			}
		}
		return ss.do("remove", nil, func() (any, error) { return nil, removeChild(st, locks, res) })
	}
	var g vhd.GUID
	if st.NewDataWriteGUID != "" {
		var err error
		if g, err = vhd.ParseGUID(st.NewDataWriteGUID); err != nil {
			return fmt.Errorf("%w %s: bad GUID in plan", journal.ErrCorrupt, ss.j.Path)
		}
		// 1. Announce P's future identity to C, then give it to P.
		err = ss.do("linkage2", nil, func() (any, error) { return nil, announce(st, g, o) })
		if err != nil {
			return err
		}
		err = ss.do("pguid", nil, func() (any, error) {
			im, err := vhd.Open(st.Parent, &vhd.Options{PathMap: o.PathMap, Wrap: o.Wrap})
			if err != nil {
				return nil, err
			}
			if err := im.SetDataWriteGUID(g); err != nil {
				im.Close()
				return nil, err
			}
			return nil, im.Close()
		})
		if err != nil {
			return err
		}
	}
	// 2. Copy C into P, hashing what is written.
	err := ss.do("copy", nil, func() (any, error) {
		sum, err := copyInto(st, g, o, rep)
		if err != nil {
			return nil, err
		}
		return map[string]string{"sha256": sum}, nil
	})
	if err != nil {
		return err
	}
	// 3. Read P back over the same ranges.
	_, raw := ss.j.IsDone(ss.key + "copy")
	var cp struct {
		SHA256 string `json:"sha256"`
	}
	if err := json.Unmarshal(raw, &cp); err != nil || cp.SHA256 == "" {
		return fmt.Errorf("%w %s: copy record without checksum", journal.ErrCorrupt, ss.j.Path)
	}
	err = ss.do("verify", nil, func() (any, error) {
		sum, err := hashTarget(st, o, rep)
		if err != nil {
			return nil, err
		}
		if sum != cp.SHA256 {
			return nil, fmt.Errorf("%w: %s does not read back what was merged from %s (sha256 %s, expected %s); %s is kept and the chain is unchanged",
				ErrVerify, st.Parent, st.Child, sum, cp.SHA256, st.Child)
		}
		return nil, nil
	})
	if err != nil {
		return err
	}
	// 4. Re-point C's children to P.
	err = ss.do("repoint", st.Children, func() (any, error) { return nil, repoint(ss, st, o) })
	if err != nil {
		return err
	}
	// 5. Configurations naming the merged leaf.
	if i == len(p.Steps)-1 {
		err = ss.do("config", p.Configs, func() (any, error) {
			for _, c := range p.Configs {
				if c.Kind != vm.KindXML {
					continue
				}
				if _, err := vm.RewriteXMLDiskPath(c.Config, c.OldPath, c.NewPath); err != nil {
					return nil, fmt.Errorf("merge: update %s: %w", c.Config, err)
				}
			}
			return nil, nil
		})
		if err != nil {
			return err
		}
		for _, c := range p.Configs {
			if c.Kind == vm.KindXML {
				res.ConfigsUpdated = append(res.ConfigsUpdated, c.Config)
			} else {
				res.Commands = append(res.Commands, c.Command)
			}
		}
	}
	// 6. Remove C.
	return ss.do("remove", nil, func() (any, error) {
		if p.Keep {
			return nil, keepChild(st, o)
		}
		return nil, removeChild(st, locks, res)
	})
}

// removeChild removes the step's child (repeatable: a missing file is done).
func removeChild(st *Step, locks *lock.Set, res *Result) error {
	locks.Drop(st.Child)
	if err := os.Remove(st.Child); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("merge: remove %s: %w", st.Child, err)
	}
	if err := fsutil.SyncDir(st.Child); err != nil {
		return err
	}
	res.Removed = append(res.Removed, st.Child)
	return nil
}

// announce writes parent_linkage2 = g into C (VHDX), keeping its paths and
// its current linkage.
func announce(st *Step, g vhd.GUID, o *Options) error {
	pim, err := vhd.Open(st.Parent, &vhd.Options{ReadOnly: true, PathMap: o.PathMap, Wrap: o.Wrap})
	if err != nil {
		return err
	}
	defer pim.Close()
	cim, err := vhd.Open(st.Child, &vhd.Options{PathMap: o.PathMap, Wrap: o.Wrap})
	if err != nil {
		return err
	}
	np, err := vhd.ParentFor(st.Child, pim, o.PathMap)
	if err != nil {
		cim.Close()
		return err
	}
	if cur := pim.Info().DataWriteGUID; cur == g {
		// P already carries g (a repeated step): keep C's recorded linkage.
		if l, err := vhd.ParseGUID(cim.Parent().Linkage); err == nil {
			np.Linkage = l
		}
	}
	np.Linkage2 = g
	if err := cim.SetParent(np); err != nil {
		cim.Close()
		return err
	}
	return cim.Close()
}

type piece struct {
	off, n int64
	zero   bool // a ZERO/UNMAPPED range of C: zeros over data below
	buf    []byte
}

// pieces lists what C overrides, in order, in chunks of at most chunk bytes.
func pieces(c *vhd.Image, fn func(piece) error) error {
	return c.Extents(func(r vhd.Run) error {
		if r.State == vhd.StateAbsent {
			return nil
		}
		for off := r.Off; off < r.Off+r.Len; off += chunk {
			n := min(int64(chunk), r.Off+r.Len-off)
			if err := fn(piece{off: off, n: n, zero: r.State != vhd.StateData}); err != nil {
				return err
			}
		}
		return nil
	})
}

// hashPiece adds one piece to the merge checksum: SHA-256 over (kind,
// offset, length, CRC-32C of the data) records. CRC-32C runs at memory
// speed (SSE4.2/ARMv8 instructions) and catches any misplaced or damaged
// sector; SHA-256 over the records makes the whole sequence one value.
func hashPiece(h hash.Hash, pc piece) {
	var crc uint32
	if !pc.zero {
		crc = crc32.Checksum(pc.buf[:pc.n], castagnoli)
	}
	hashRecord(h, pc, crc)
}

// hashRecord is hashPiece with the CRC-32C of the data already computed.
func hashRecord(h hash.Hash, pc piece, crc uint32) {
	var hdr [21]byte
	hdr[0] = 'D'
	if pc.zero {
		hdr[0] = 'Z'
	} else {
		binary.LittleEndian.PutUint32(hdr[17:], crc)
	}
	binary.LittleEndian.PutUint64(hdr[1:], uint64(pc.off))
	binary.LittleEndian.PutUint64(hdr[9:], uint64(pc.n))
	h.Write(hdr[:])
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// copyInto writes C's overrides into P (through P's chain, so blocks newly
// allocated in P are filled with what P showed) and returns the hash of
// what was written. A reader goroutine reads and hashes while the caller's
// goroutine writes.
func copyInto(st *Step, g vhd.GUID, o *Options, rep progress.Reporter) (string, error) {
	pc, err := vhd.OpenChain(st.Parent, &vhd.Options{PathMap: o.PathMap, Wrap: o.Wrap})
	if err != nil {
		return "", err
	}
	defer pc.Close()
	if !g.IsZero() {
		if err := pc.Leaf().SetDataWriteGUID(g); err != nil {
			return "", err
		}
	}
	// Block allocations share metadata updates: a crash loses only
	// uncommitted copies, which resume repeats.
	if err := pc.Leaf().SetWriteBatch(batchBytes); err != nil {
		return "", err
	}
	cc, err := vhd.OpenChain(st.Child, &vhd.Options{ReadOnly: true, PathMap: o.PathMap, Wrap: o.Wrap})
	if err != nil {
		return "", err
	}
	defer cc.Close()
	if got := cc.Layers[1].Path(); canon(got) != st.Parent {
		return "", fmt.Errorf("merge: %s: parent resolves to %s, not %s as planned", st.Child, got, st.Parent)
	}
	rep.Start("merge "+filepath.Base(st.Child), st.CopyBytes)
	defer rep.Done()

	pool := sync.Pool{New: func() any { return make([]byte, chunk) }}
	work := make(chan piece, 2)
	stop := make(chan struct{})
	h := sha256.New()
	var rerr error
	go func() {
		defer close(work)
		rerr = pieces(cc.Leaf(), func(p piece) error {
			if !p.zero {
				p.buf = pool.Get().([]byte)
				if _, err := cc.ReadAt(p.buf[:p.n], p.off); err != nil {
					return fmt.Errorf("merge: read %s at %d: %w", st.Child, p.off, err)
				}
			}
			hashPiece(h, p)
			select {
			case work <- p:
				return nil
			case <-stop:
				return errStop
			}
		})
	}()
	var werr error
	var zero []byte
	n := 0
	var unflushed int64
	for p := range work {
		if werr == nil {
			if p.zero {
				if zero == nil {
					zero = make([]byte, chunk)
				}
				werr = writeZeros(pc, p, zero)
			} else {
				_, werr = pc.WriteAt(p.buf[:p.n], p.off)
				pool.Put(p.buf)
			}
			if werr != nil {
				werr = spaceErr(st.Parent, werr)
				close(stop)
			} else {
				rep.Add(p.n)
				n++
				o.hook(fmt.Sprintf("copy-chunk:%d", n))
				if unflushed += p.n; unflushed >= writebackEvery {
					// The device writes while the copy goes on; the
					// flush at the end then waits for the tail only.
					pc.Leaf().StartWriteback()
					unflushed = 0
				}
			}
		}
	}
	if werr != nil {
		return "", werr
	}
	if rerr != nil {
		return "", rerr
	}
	if err := pc.Flush(); err != nil {
		return "", spaceErr(st.Parent, err)
	}
	o.hook("copy-flushed")
	if err := pc.Close(); err != nil {
		return "", spaceErr(st.Parent, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeZeros makes the range read as zeros in P, writing only where the
// chain below does not already read zeros (so a trimmed range does not
// allocate blocks in a dynamic parent).
func writeZeros(pc *vhd.Chain, p piece, zero []byte) error {
	return pc.Map(p.off, p.n, func(r vhd.MapRun) error {
		if r.Layer < 0 {
			return nil
		}
		_, err := pc.WriteAt(zero[:r.Len], r.Off)
		return err
	})
}

// spaceErr turns ENOSPC into ErrNoSpace naming the file.
func spaceErr(path string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || isDiskFull(err) {
		return &NoSpaceError{Mount: volumeOfPath(path), Disk: path, Detail: fmt.Sprintf("the volume filled up while writing %s (%v); nothing is lost: the chain reads as before. Free space and run hvsnap merge --resume", path, err)}
	}
	return err
}

func volumeOfPath(p string) string { return filepath.Dir(p) }

// hashTarget reads P (with its own chain) over C's overrides and hashes it
// like copyInto did; zero ranges must read as zeros.
func hashTarget(st *Step, o *Options, rep progress.Reporter) (string, error) {
	c, err := vhd.Open(st.Child, &vhd.Options{ReadOnly: true, PathMap: o.PathMap, Wrap: o.Wrap})
	if err != nil {
		return "", err
	}
	defer c.Close()
	// Workers read and check pieces in parallel, each through its own open
	// of P's chain (a chain is not safe for concurrent reads); piece k goes
	// to worker k%n and the results are hashed in order.
	n := verifyWorkers
	type result struct {
		p   piece
		crc uint32
		err error
	}
	chains := make([]*vhd.Chain, 0, n)
	for range n {
		pc, err := vhd.OpenChain(st.Parent, &vhd.Options{ReadOnly: true, PathMap: o.PathMap, Wrap: o.Wrap})
		if err != nil {
			for _, pc := range chains {
				pc.Close()
			}
			return "", err
		}
		chains = append(chains, pc)
	}
	ins := make([]chan piece, n)
	outs := make([]chan result, n)
	for i, pc := range chains {
		ins[i], outs[i] = make(chan piece, 1), make(chan result, 1)
		go func(in <-chan piece, out chan<- result) {
			defer close(out)
			defer pc.Close()
			buf := make([]byte, chunk)
			for p := range in {
				r := result{p: p}
				if _, err := pc.ReadAt(buf[:p.n], p.off); err != nil {
					r.err = err
				} else if p.zero {
					for _, b := range buf[:p.n] {
						if b != 0 {
							r.err = fmt.Errorf("%w: %s: range %d+%d should read as zeros", ErrVerify, st.Parent, p.off, p.n)
							break
						}
					}
				} else {
					r.crc = crc32.Checksum(buf[:p.n], castagnoli)
				}
				out <- r
			}
		}(ins[i], outs[i])
	}
	stop := make(chan struct{})
	var perr error
	go func() {
		defer func() {
			for _, in := range ins {
				close(in)
			}
		}()
		k := 0
		perr = pieces(c, func(p piece) error {
			select {
			case ins[k%n] <- p:
				k++
				return nil
			case <-stop:
				return errStop
			}
		})
	}()
	rep.Start("verify "+filepath.Base(st.Parent), st.CopyBytes)
	defer rep.Done()
	h := sha256.New()
	var werr error
	for k := 0; ; k++ {
		r, ok := <-outs[k%n]
		if !ok {
			break
		}
		if werr == nil && r.err != nil {
			werr = r.err
			close(stop)
		}
		if werr == nil {
			hashRecord(h, r.p, r.crc)
			rep.Add(r.p.n)
		}
	}
	for _, out := range outs { // drained: every worker has ended
		for range out {
		}
	}
	if werr != nil {
		return "", werr
	}
	if perr != nil {
		return "", perr
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// repoint links each child of C to P (P's current identity and path).
func repoint(ss stepState, st *Step, o *Options) error {
	pim, err := vhd.Open(st.Parent, &vhd.Options{ReadOnly: true, PathMap: o.PathMap, Wrap: o.Wrap})
	if err != nil {
		return err
	}
	defer pim.Close()
	for n, gc := range st.Children {
		if _, err := os.Stat(gc); os.IsNotExist(err) {
			ss.j.Note(ss.key+"repoint", map[string]string{"skipped": gc, "why": "file no longer exists"})
			continue
		}
		var mt time.Time
		if ns, ok := st.ChildrenModTime[gc]; ok {
			mt = time.Unix(0, ns)
		}
		if err := pointAt(gc, pim, o, mt); err != nil {
			return err
		}
		o.hook(fmt.Sprintf("%srepoint-child:%d", ss.key, n))
	}
	return nil
}

// pointAt makes disk's parent link name pim as it is now (VHDX:
// parent_linkage = its DataWriteGuid, linkage2 cleared; VHD: its unique ID
// and timestamp), flushed. Repeating it changes nothing.
//
// A VHD child records its parent's modification time (and hvsnap check,
// like Windows, compares it), so the re-pointed disk keeps its own — mtime
// when given (recorded at planning, so that a repeated re-point restores
// the original), else its current one: its data is unchanged, and its
// children's links stay exact.
func pointAt(disk string, pim *vhd.Image, o *Options, mtime time.Time) error {
	fi, err := os.Stat(disk)
	if err != nil {
		return err
	}
	if mtime.IsZero() {
		mtime = fi.ModTime()
	}
	im, err := vhd.Open(disk, &vhd.Options{PathMap: o.PathMap, Wrap: o.Wrap})
	if err != nil {
		return err
	}
	isVHD := im.Info().Format == vhd.FormatVHD
	np, err := vhd.ParentFor(disk, pim, o.PathMap)
	if err == nil {
		err = im.SetParent(np)
	}
	if err == nil {
		err = im.Flush()
	}
	if cerr := im.Close(); err == nil {
		err = cerr
	}
	if err == nil && isVHD {
		o.hook("repointed:" + filepath.Base(disk)) // rewritten, time not yet restored
		err = os.Chtimes(disk, mtime, mtime)
	}
	return err
}

// keepChild leaves the merged file C as a child of the merged P that any
// reader accepts: during the merge C matched P only through linkage2, which
// libvhdi (and older readers) ignore.
func keepChild(st *Step, o *Options) error {
	pim, err := vhd.Open(st.Parent, &vhd.Options{ReadOnly: true, PathMap: o.PathMap, Wrap: o.Wrap})
	if err != nil {
		return err
	}
	defer pim.Close()
	return pointAt(st.Child, pim, o, time.Time{})
}
