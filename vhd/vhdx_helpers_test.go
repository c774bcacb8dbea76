package vhd

// Test helpers of the VHDX backend (prefixed vx).

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"os"
	"sync"
	"testing"
)

// vxMemFile is an in-memory File bounded to 64 MiB.
type vxMemFile struct {
	mu sync.Mutex
	b  []byte
}

const vxMemLimit = 64 * MiB

func (m *vxMemFile) ReadAt(p []byte, off int64) (int, error) {
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

func (m *vxMemFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > vxMemLimit {
		return 0, errors.New("vxMemFile: write out of bounds")
	}
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *vxMemFile) Sync() error { return nil }

func (m *vxMemFile) Truncate(n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n < 0 || n > vxMemLimit {
		return errors.New("vxMemFile: bad truncate")
	}
	if n <= int64(len(m.b)) {
		m.b = m.b[:n]
	} else {
		m.b = append(m.b, make([]byte, n-int64(len(m.b)))...)
	}
	return nil
}

func (m *vxMemFile) Size() (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.b)), nil
}

func (m *vxMemFile) Close() error { return nil }
func (m *vxMemFile) Name() string { return "mem.vhdx" }

func (m *vxMemFile) clone() *vxMemFile {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &vxMemFile{b: append([]byte(nil), m.b...)}
}

// vxReadAll reads the whole virtual disk of b through lookup; StateAbsent
// comes from parent (or zeros).
func vxReadAll(t testing.TB, b backend, f File, parent io.ReaderAt) []byte {
	t.Helper()
	inf := b.info()
	out := make([]byte, inf.VirtualSize)
	for off := int64(0); off < inf.VirtualSize; {
		r, err := b.lookup(off, inf.VirtualSize-off)
		if err != nil {
			t.Fatalf("lookup %d: %v", off, err)
		}
		if r.Off != off || r.Len <= 0 || r.Len > inf.VirtualSize-off || r.Len%int64(inf.LogicalSectorSize) != 0 {
			t.Fatalf("bad run %+v at %d", r, off)
		}
		dst := out[off : off+r.Len]
		switch r.State {
		case StateData:
			if err := readFull(f, dst, r.FileOff); err != nil {
				t.Fatalf("read run %+v: %v", r, err)
			}
		case StateAbsent:
			if parent != nil {
				if _, err := parent.ReadAt(dst, off); err != nil && err != io.EOF {
					t.Fatalf("parent read: %v", err)
				}
			}
		}
		off += r.Len
	}
	return out
}

func vxRand(seed int64, n int) []byte {
	p := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(p)
	return p
}

func vxNoErrors(t testing.TB, fs []Finding) {
	t.Helper()
	for _, f := range fs {
		if f.Severity == SevError {
			t.Errorf("unexpected error finding: %+v", f)
		}
	}
}

func vxHasCode(fs []Finding, code string) bool {
	for _, f := range fs {
		if f.Code == code {
			return true
		}
	}
	return false
}

func vxEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	if len(got) != len(want) {
		t.Fatalf("%s: length %d, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: first difference at byte %d (0x%x): got %02x want %02x", what, i, i, got[i], want[i])
		}
	}
}

func vxHashFile(t testing.TB, p string) [32]byte {
	t.Helper()
	d, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(d)
}

// vxBack returns the VHDX backend of an image.
func vxBack(t testing.TB, im *Image) *vxBackend {
	t.Helper()
	b, ok := im.b.(*vxBackend)
	if !ok {
		t.Fatalf("%s: not a VHDX backend", im.path)
	}
	return b
}

// vxMemCreate creates a VHDX in memory.
func vxMemCreate(t testing.TB, spec CreateSpec, np *NewParent) (*vxMemFile, *vxBackend) {
	t.Helper()
	spec.Format = FormatVHDX
	var pinf *Info
	if spec.Type == TypeDifferencing {
		pinf = &Info{Format: FormatVHDX, VirtualSize: np.VirtualSize, LogicalSectorSize: np.LogicalSectorSize, PhysicalSectorSize: np.PhysicalSectorSize}
	}
	if err := spec.normalize(pinf); err != nil {
		t.Fatal(err)
	}
	m := &vxMemFile{}
	b, err := createVHDX(m, "mem.vhdx", spec, np)
	if err != nil {
		t.Fatal(err)
	}
	return m, b.(*vxBackend)
}
