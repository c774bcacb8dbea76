package vhd

// Test helpers of the VHD backend (prefixed v1).

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"math/rand"
	"os"
	"sync"
	"testing"
)

// v1MemFile is an in-memory File.
type v1MemFile struct {
	mu   sync.Mutex
	b    []byte
	name string
}

func (m *v1MemFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *v1MemFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > 1<<30 {
		return 0, errors.New("v1MemFile: write out of bounds")
	}
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *v1MemFile) Sync() error { return nil }

func (m *v1MemFile) Truncate(n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n < 0 || n > 1<<30 {
		return errors.New("v1MemFile: bad truncate")
	}
	if n <= int64(len(m.b)) {
		m.b = m.b[:n]
	} else {
		m.b = append(m.b, make([]byte, n-int64(len(m.b)))...)
	}
	return nil
}

func (m *v1MemFile) Size() (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.b)), nil
}

func (m *v1MemFile) Close() error { return nil }
func (m *v1MemFile) Name() string { return m.name }

func (m *v1MemFile) bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.b...)
}

// v1ReadAll reads the whole virtual disk of b through lookup: data from f,
// absent from parent (or zeros when parent is nil), other states zeros.
func v1ReadAll(t testing.TB, b backend, f File, parent []byte) []byte {
	t.Helper()
	size := b.info().VirtualSize
	out := make([]byte, size)
	for off := int64(0); off < size; {
		r, err := b.lookup(off, size-off)
		if err != nil {
			t.Fatalf("lookup(%d): %v", off, err)
		}
		if r.Off != off || r.Len <= 0 || r.Len > size-off {
			t.Fatalf("lookup(%d): bad run %+v", off, r)
		}
		dst := out[off : off+r.Len]
		switch r.State {
		case StateData:
			if err := readFull(f, dst, r.FileOff); err != nil {
				t.Fatalf("read run %+v: %v", r, err)
			}
		case StateAbsent:
			if parent != nil {
				copy(dst, parent[off:off+r.Len])
			}
		}
		off += r.Len
	}
	return out
}

// v1Rand returns n pseudo-random bytes.
func v1Rand(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// v1Pattern returns n bytes of a recognizable pattern.
func v1Pattern(tag byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = tag ^ byte(i/512)
	}
	return b
}

// v1RawID renders 16 bytes as libvhdi prints identifiers (raw byte order).
func v1RawID(g GUID) string {
	h := hex.EncodeToString(g[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// v1NoErrors fails when findings contain an error-severity one.
func v1NoErrors(t testing.TB, fs []Finding) {
	t.Helper()
	for _, f := range fs {
		if f.Severity == SevError {
			t.Errorf("unexpected error finding: %+v", f)
		}
	}
}

// v1HasCode reports whether findings contain code.
func v1HasCode(fs []Finding, code string) bool {
	for _, f := range fs {
		if f.Code == code {
			return true
		}
	}
	return false
}

// v1Equal compares two disks and names the first differing sector.
func v1Equal(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: length %d, want %d", what, len(got), len(want))
	}
	if bytes.Equal(got, want) {
		return
	}
	for i := 0; i < len(got); i += 512 {
		e := min(i+512, len(got))
		if !bytes.Equal(got[i:e], want[i:e]) {
			t.Fatalf("%s: first difference in sector %d (offset %d): got % x..., want % x...", what, i/512, i, got[i:i+8], want[i:i+8])
		}
	}
}

// v1ReadFile reads a file or fails.
func v1ReadFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// v1MemCreate creates a VHD in memory.
func v1MemCreate(t testing.TB, spec CreateSpec, np *NewParent) (*v1MemFile, *v1Disk) {
	t.Helper()
	spec.Format = FormatVHD
	var pinf *Info
	if np != nil {
		pinf = &Info{Format: FormatVHD, VirtualSize: np.VirtualSize, LogicalSectorSize: 512, PhysicalSectorSize: 512}
	}
	if err := spec.normalize(pinf); err != nil {
		t.Fatal(err)
	}
	f := &v1MemFile{name: "mem.vhd"}
	b, err := createVHD(f, "mem.vhd", spec, np)
	if err != nil {
		t.Fatal(err)
	}
	return f, b.(*v1Disk)
}
