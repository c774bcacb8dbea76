package export

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/hvsnap/hvsnap/internal/pkgfmt"
	"github.com/hvsnap/hvsnap/internal/progress"
)

// chunkSize is the unit of reading, hashing and writing; poolChunks bounds
// the memory the pipeline holds (chunkSize × poolChunks).
const (
	chunkSize  = 256 << 10
	poolChunks = 32
)

var zeroChunk = make([]byte, chunkSize)

type chunk struct {
	buf  []byte
	n    int
	off  int64 // offset in the file
	zero bool  // a hole: n zero bytes, nothing to write
	refs atomic.Int32
}

// pipeline is the bounded buffer pool shared by every file of one export.
type pipeline struct {
	pool   chan *chunk
	digest string // pkgfmt.DigestSHA256 or DigestCRC32C
}

func newPipeline(digest string) *pipeline {
	p := &pipeline{pool: make(chan *chunk, poolChunks), digest: digest}
	for range poolChunks {
		p.pool <- &chunk{buf: make([]byte, chunkSize)}
	}
	return p
}

func (p *pipeline) release(c *chunk) {
	if c.refs.Add(-1) == 0 && !c.zero {
		p.pool <- c
	}
}

// errChanged: the source file changed while it was read.
var errChanged = errors.New("changed while it was exported (is the VM running? shut it down or export a checkpoint)")

// streamFile reads f (size bytes; segs its data ranges, nil = all data)
// and calls write for every data range in order, while another goroutine
// hashes the whole content (holes as zeros). Reading, hashing and the
// caller's writing (compression) overlap. It returns the hex digest
// (SHA-256; CRC-32C for relocation packages).
func (p *pipeline) streamFile(f *os.File, size int64, segs []pkgfmt.Segment, write func(off int64, b []byte) error, rep progress.Reporter) (string, error) {
	if segs == nil {
		segs = []pkgfmt.Segment{{Off: 0, Len: size}}
	}
	hashCh := make(chan *chunk, poolChunks+2)
	writeCh := make(chan *chunk, poolChunks)
	stop := make(chan struct{})
	sumCh := make(chan string, 1)
	go func() {
		h := pkgfmt.NewDigest(p.digest)
		for c := range hashCh {
			if c.zero {
				h.Write(zeroChunk[:c.n])
			} else {
				h.Write(c.buf[:c.n])
				p.release(c)
			}
		}
		sumCh <- hex.EncodeToString(h.Sum(nil))
	}()
	var readErr error
	go func() {
		defer close(writeCh)
		defer close(hashCh)
		pos := int64(0)
		sendZero := func(end int64) {
			for pos < end {
				n := min(end-pos, chunkSize)
				hashCh <- &chunk{n: int(n), off: pos, zero: true}
				pos += n
			}
		}
		for _, s := range segs {
			sendZero(s.Off)
			for pos < s.Off+s.Len {
				var c *chunk
				select {
				case c = <-p.pool:
				case <-stop:
					return
				}
				n := int(min(s.Off+s.Len-pos, chunkSize))
				m, err := f.ReadAt(c.buf[:n], pos)
				if m < n {
					p.pool <- c
					if err == nil || err == io.EOF {
						err = errChanged
					}
					readErr = err
					return
				}
				c.n, c.off = n, pos
				c.refs.Store(2)
				hashCh <- c
				select {
				case writeCh <- c:
				case <-stop:
					p.release(c)
					return
				}
				pos += int64(n)
			}
		}
		sendZero(size)
	}()
	var werr error
	lastOff := int64(0)
	for c := range writeCh {
		if werr == nil {
			werr = write(c.off, c.buf[:c.n])
			if werr != nil {
				close(stop)
			}
			rep.Add(c.off + int64(c.n) - lastOff)
			lastOff = c.off + int64(c.n)
		}
		p.release(c)
	}
	sum := <-sumCh
	if werr != nil {
		return "", werr
	}
	if readErr != nil {
		return "", readErr
	}
	if size > lastOff {
		rep.Add(size - lastOff)
	}
	return sum, nil
}

// hashFile returns the SHA-256 of the file at path (used to verify what an
// interrupted export left).
func (p *pipeline) hashFile(path string, rep progress.Reporter) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	segs, err := pkgfmt.DataSegments(f, st.Size())
	if err != nil {
		return "", 0, err
	}
	sum, err := p.streamFile(f, st.Size(), segs, func(int64, []byte) error { return nil }, rep)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", path, err)
	}
	return sum, st.Size(), nil
}
