// Package journal records long operations step by step so that they can be
// finished after a crash (kill -9, power loss) or a full disk.
//
// A journal is an append-only file next to the data it protects, named
// `.hvsnap-<op>-<id>.journal`. Each record is one line: the CRC-32C of the
// JSON text in hex, a space, the JSON text. Every record is fsynced before
// the caller goes on, so a step's "start" is durable before the step touches
// anything and its "done" only after its effects are durable. A torn last
// record (crash during the append) is ignored; damage anywhere else is an
// error. When the operation ends the journal is removed and the directory
// synced.
//
// The header lists every file the operation may touch, so any command can
// find an unfinished operation on a file it is about to modify (Involving).
package journal

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hvsnap/hvsnap/internal/fsutil"
)

// ErrCorrupt is a journal damaged before its last record.
var ErrCorrupt = errors.New("corrupt journal")

const (
	prefix = ".hvsnap-"
	suffix = ".journal"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is the first record of a journal.
type Header struct {
	Op      string    `json:"op"`
	ID      string    `json:"id"`
	Files   []string  `json:"files"` // absolute paths the operation may touch
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	// Plan is the operation's own description (what resume needs).
	Plan json.RawMessage `json:"plan,omitempty"`
}

// Record is one line of a journal after the header.
type Record struct {
	Kind string          `json:"kind"` // "start", "done", "note", "end"
	Step string          `json:"step,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
	Time time.Time       `json:"time"`
}

// Journal is an open journal file.
type Journal struct {
	Path    string
	Header  Header
	Records []Record
	f       *os.File
	// Torn: the file ended in a damaged record, dropped when opened.
	Torn bool
}

// Create starts a journal in dir for op, naming the files it may touch and
// the plan; the file and its directory entry are durable on return.
func Create(dir, op string, files []string, plan any) (*Journal, error) {
	var idb [8]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return nil, err
	}
	id := hex.EncodeToString(idb[:])
	h := Header{Op: op, ID: id, PID: os.Getpid(), Started: time.Now().UTC()}
	h.Host, _ = os.Hostname()
	for _, f := range files {
		if a, err := filepath.Abs(f); err == nil {
			f = a
		}
		h.Files = append(h.Files, f)
	}
	if plan != nil {
		b, err := json.Marshal(plan)
		if err != nil {
			return nil, err
		}
		h.Plan = b
	}
	path := filepath.Join(dir, prefix+op+"-"+id+suffix)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	j := &Journal{Path: path, Header: h, f: f}
	if err := j.append(h); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	if err := fsutil.SyncDir(path); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("journal %s: sync directory: %w", path, err)
	}
	return j, nil
}

func encodeLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	line := fmt.Sprintf("%08x %s\n", crc32.Checksum(b, castagnoli), b)
	return []byte(line), nil
}

func (j *Journal) append(v any) error {
	line, err := encodeLine(v)
	if err != nil {
		return err
	}
	if _, err := j.f.Write(line); err != nil {
		return fmt.Errorf("journal %s: %w", j.Path, err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("journal %s: sync: %w", j.Path, err)
	}
	return nil
}

func (j *Journal) add(kind, step string, data any) error {
	r := Record{Kind: kind, Step: step, Time: time.Now().UTC()}
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			return err
		}
		r.Data = b
	}
	if err := j.append(r); err != nil {
		return err
	}
	j.Records = append(j.Records, r)
	return nil
}

// Start records that step is about to run (with what it needs to be
// repeated), durably.
func (j *Journal) Start(step string, data any) error { return j.add("start", step, data) }

// Done records that step's effects are durable.
func (j *Journal) Done(step string, data any) error { return j.add("done", step, data) }

// Note records something worth keeping (a skipped step, a warning).
func (j *Journal) Note(step string, data any) error { return j.add("note", step, data) }

// IsDone reports whether step has a "done" record, and its data.
func (j *Journal) IsDone(step string) (bool, json.RawMessage) {
	for i := len(j.Records) - 1; i >= 0; i-- {
		r := j.Records[i]
		if r.Step == step && r.Kind == "done" {
			return true, r.Data
		}
	}
	return false, nil
}

// Started returns the data of step's last "start" record, if any.
func (j *Journal) Started(step string) (bool, json.RawMessage) {
	for i := len(j.Records) - 1; i >= 0; i-- {
		r := j.Records[i]
		if r.Step == step && r.Kind == "start" {
			return true, r.Data
		}
	}
	return false, nil
}

// Finish records the end, removes the journal and syncs its directory.
func (j *Journal) Finish() error {
	if err := j.add("end", "", nil); err != nil {
		return err
	}
	j.f.Close()
	j.f = nil
	if err := os.Remove(j.Path); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return fsutil.SyncDir(j.Path)
}

// Close releases the file without ending the operation (it stays resumable).
func (j *Journal) Close() error {
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

// Open reads a journal for resuming; it stays open for appending. A torn
// last record is cut off (and the file truncated to the last good record).
func Open(path string) (*Journal, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	j, good, err := parse(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	if j.Torn {
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, fmt.Errorf("journal %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("journal %s: %w", path, err)
		}
	}
	if _, err := f.Seek(good, 0); err != nil {
		f.Close()
		return nil, err
	}
	j.f = f
	return j, nil
}

// Read parses a journal without opening it for writing.
func Read(path string) (*Journal, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	j, _, err := parse(f, path)
	return j, err
}

// parse returns the journal and the length of its good prefix.
func parse(f *os.File, path string) (*Journal, int64, error) {
	data, err := readAll(f)
	if err != nil {
		return nil, 0, fmt.Errorf("journal %s: %w", path, err)
	}
	j := &Journal{Path: path}
	var good int64
	first := true
	for len(data) > 0 {
		nl := bytes.IndexByte(data, '\n')
		var line []byte
		complete := nl >= 0
		if complete {
			line = data[:nl]
		} else {
			line = data
		}
		payload, ok := checkLine(line)
		if !ok || !complete {
			var rest []byte
			if complete {
				rest = data[nl+1:]
			}
			if len(bytes.TrimSpace(rest)) > 0 {
				return nil, 0, fmt.Errorf("%w %s: damaged record at byte %d", ErrCorrupt, path, good)
			}
			j.Torn = true
			break
		}
		if first {
			if err := json.Unmarshal(payload, &j.Header); err != nil || j.Header.Op == "" {
				return nil, 0, fmt.Errorf("%w %s: bad header", ErrCorrupt, path)
			}
			first = false
		} else {
			var r Record
			if err := json.Unmarshal(payload, &r); err != nil {
				return nil, 0, fmt.Errorf("%w %s: bad record at byte %d", ErrCorrupt, path, good)
			}
			j.Records = append(j.Records, r)
		}
		good += int64(nl + 1)
		data = data[nl+1:]
	}
	if first {
		return nil, 0, fmt.Errorf("%w %s: no complete header: the operation never started (its header is written and fsynced before any change), so nothing was changed under it; remove the file to go on", ErrCorrupt, path)
	}
	return j, good, nil
}

func readAll(f *os.File) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(bufio.NewReader(f))
	return buf.Bytes(), err
}

func checkLine(line []byte) ([]byte, bool) {
	if len(line) < 10 || line[8] != ' ' {
		return nil, false
	}
	var want uint32
	if _, err := fmt.Sscanf(string(line[:8]), "%08x", &want); err != nil {
		return nil, false
	}
	payload := line[9:]
	return payload, crc32.Checksum(payload, castagnoli) == want
}

// Ended reports whether the journal has its end record (the operation is
// complete and the file merely was not removed yet).
func (j *Journal) Ended() bool {
	n := len(j.Records)
	return n > 0 && j.Records[n-1].Kind == "end"
}

// Find lists the journal files in dir (any operation), sorted.
func Find(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() && strings.HasPrefix(n, prefix) && strings.HasSuffix(n, suffix) {
			out = append(out, filepath.Join(dir, n))
		}
	}
	sort.Strings(out)
	return out, nil
}

// IsJournal reports whether name is a journal file name.
func IsJournal(name string) bool {
	n := filepath.Base(name)
	return strings.HasPrefix(n, prefix) && strings.HasSuffix(n, suffix)
}

// Involving returns the unfinished journals, found in the folders of files,
// that name any of files. A journal that cannot be read is returned as an
// error: it may protect one of the files.
func Involving(files ...string) ([]*Journal, error) {
	want := map[string]bool{}
	dirs := map[string]bool{}
	for _, f := range files {
		if a, err := filepath.Abs(f); err == nil {
			f = a
		}
		want[f] = true
		dirs[filepath.Dir(f)] = true
	}
	var ds []string
	for d := range dirs {
		ds = append(ds, d)
	}
	sort.Strings(ds)
	var out []*Journal
	seen := map[string]bool{}
	for _, d := range ds {
		paths, err := Find(d)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return nil, err
		}
		for _, p := range paths {
			if seen[p] {
				continue
			}
			seen[p] = true
			j, err := Read(p)
			if err != nil {
				return nil, err
			}
			if j.Ended() {
				continue
			}
			for _, f := range j.Header.Files {
				if want[f] {
					out = append(out, j)
					break
				}
			}
		}
	}
	return out, nil
}
