package vhd

import (
	"errors"
	"testing"
)

// vxBaseImages builds small valid images in memory: a dynamic disk with
// blocks 0 and 2 allocated, and a differencing disk with block 1 allocated.
func vxBaseImages(t testing.TB) (dyn, diff []byte) {
	m, b := vxMemCreate(t, CreateSpec{Type: TypeDynamic, Size: 4 * MiB, BlockSize: MiB}, nil)
	for _, off := range []int64{0, 2 * MiB} {
		if err := b.writeAt(vxRand(off, 4096), off, nil); err != nil {
			t.Fatal(err)
		}
	}
	b.close()
	np := &NewParent{Linkage: NewGUID(), RelativePath: `.\p.vhdx`, AbsolutePath: `C:\p.vhdx`, VirtualSize: 4 * MiB, LogicalSectorSize: 512, PhysicalSectorSize: 4096}
	m2, b2 := vxMemCreate(t, CreateSpec{Type: TypeDifferencing, Size: 4 * MiB, BlockSize: MiB}, np)
	if err := b2.writeAt(vxRand(9, 4096), MiB, zeroReader{}); err != nil {
		t.Fatal(err)
	}
	b2.close()
	return m.b, m2.b
}

type zeroReader struct{}

func (zeroReader) ReadAt(p []byte, off int64) (int, error) { clear(p); return len(p), nil }

// vxFixHeaders re-encodes both headers with mod applied.
func vxFixHeaders(p []byte, mod func(h *vxHeader)) {
	for _, off := range []int{vxHeader1Off, vxHeader2Off} {
		h, ok := decodeVXHeader(p[off:])
		if ok {
			mod(&h)
			copy(p[off:], h.encode())
		}
	}
}

// vxFixRegions applies mod to both region tables and re-encodes them.
func vxFixRegions(p []byte, mod func([]vxRegion) []vxRegion) {
	for _, off := range []int{vxRegion1Off, vxRegion2Off} {
		rs, ok := decodeVXRegionTable(p[off:])
		if ok {
			copy(p[off:], encodeVXRegionTable(mod(rs)))
		}
	}
}

const (
	vxTMeta = vxCreateMetaOff
	vxTBAT  = vxCreateBATOff
)

func vxSetBAT(p []byte, idx int, v uint64) { vxPut64(p[vxTBAT+8*idx:], v) }

func TestVXCorruption(t *testing.T) {
	dyn, diff := vxBaseImages(t)
	cases := []struct {
		name     string
		diff     bool
		mutate   func(p []byte) []byte
		sentinel error  // open must fail with this...
		code     string // ...and code; with sentinel nil, check must report code
	}{
		{"header1-crc", false, func(p []byte) []byte { p[vxHeader1Off+100] ^= 1; return p }, nil, "vhdx-header-crc"},
		{"both-header-crc", false, func(p []byte) []byte { p[vxHeader1Off+100] ^= 1; p[vxHeader2Off+100] ^= 1; return p }, ErrCorrupt, "vhdx-header-crc"},
		{"region1-crc", false, func(p []byte) []byte { p[vxRegion1Off+5000] ^= 1; return p }, nil, "vhdx-region-crc"},
		{"both-region-crc", false, func(p []byte) []byte { p[vxRegion1Off+5000] ^= 1; p[vxRegion2Off+5000] ^= 1; return p }, ErrCorrupt, "vhdx-region-crc"},
		{"header-version", false, func(p []byte) []byte { vxFixHeaders(p, func(h *vxHeader) { h.Version = 2 }); return p }, ErrUnsupported, "vhdx-header-version"},
		{"log-version", false, func(p []byte) []byte { vxFixHeaders(p, func(h *vxHeader) { h.LogVersion = 1 }); return p }, ErrUnsupported, "vhdx-log-version"},
		{"log-garbage", false, func(p []byte) []byte {
			vxFixHeaders(p, func(h *vxHeader) { h.LogGUID = NewGUID() })
			copy(p[MiB:], vxRand(3, MiB))
			copy(p[MiB:], "loge")
			return p
		}, ErrCorrupt, "vhdx-log-no-sequence"},
		{"log-outside", false, func(p []byte) []byte {
			vxFixHeaders(p, func(h *vxHeader) { h.LogOffset = 1 << 40; h.LogGUID = NewGUID() })
			return p
		}, ErrCorrupt, "vhdx-log-region"},
		{"region-unknown-required", false, func(p []byte) []byte {
			vxFixRegions(p, func(rs []vxRegion) []vxRegion {
				return append(rs, vxRegion{GUID: NewGUID(), Off: 4 * MiB, Len: MiB, Required: true})
			})
			return p
		}, ErrUnsupported, "vhdx-region-unknown"},
		{"region-overlap", false, func(p []byte) []byte {
			vxFixRegions(p, func(rs []vxRegion) []vxRegion { rs[1].Off = vxTBAT; return rs })
			return p
		}, ErrCorrupt, "vhdx-region-overlap"},
		{"region-past-eof", false, func(p []byte) []byte {
			vxFixRegions(p, func(rs []vxRegion) []vxRegion { rs[0].Off = 1 << 45; return rs })
			return p
		}, ErrCorrupt, "vhdx-region-bounds"},
		{"region-count", false, func(p []byte) []byte {
			vxPut32(p[vxRegion1Off+8:], 5000)
			vxPut32(p[vxRegion1Off+4:], vxCRC(p[vxRegion1Off:vxRegion1Off+vxRegionSize], 4))
			return p
		}, nil, "vhdx-region-crc"},
		{"metadata-signature", false, func(p []byte) []byte { p[vxTMeta] = 'X'; return p }, ErrCorrupt, "vhdx-metadata-table"},
		{"metadata-hostile-offset", false, func(p []byte) []byte { vxPut32(p[vxTMeta+32+16:], 0xFFFFFFF0); return p }, ErrCorrupt, "vhdx-metadata-item"},
		{"metadata-hostile-length", false, func(p []byte) []byte { vxPut32(p[vxTMeta+32+20:], 0x7FFFFFFF); return p }, ErrCorrupt, "vhdx-metadata-item"},
		{"metadata-offset-in-table", false, func(p []byte) []byte { vxPut32(p[vxTMeta+32+16:], 100); return p }, ErrCorrupt, "vhdx-metadata-item"},
		{"metadata-unknown-required", false, func(p []byte) []byte {
			n := vxU16(p[vxTMeta+10:])
			g := NewGUID()
			encodeVXMetaEntry(p[vxTMeta+32+32*int(n):], vxMetaEntry{ID: g, Flags: vxFlagIsRequired})
			vxPut16(p[vxTMeta+10:], n+1)
			return p
		}, ErrUnsupported, "vhdx-metadata-unknown"},
		{"metadata-missing", false, func(p []byte) []byte { p[vxTMeta+32+32+3] ^= 0xff; vxPut32(p[vxTMeta+32+32+24:], 0); return p }, ErrCorrupt, "vhdx-metadata-missing"},
		{"block-size", false, func(p []byte) []byte { vxPut32(p[vxTMeta+0x10000:], 3*MiB); return p }, ErrCorrupt, "vhdx-metadata-block-size"},
		{"virtual-size-zero", false, func(p []byte) []byte { vxPut64(p[vxTMeta+0x10008:], 0); return p }, ErrCorrupt, "vhdx-metadata-size"},
		{"sector-size", false, func(p []byte) []byte { vxPut32(p[vxTMeta+0x10010:], 1024); return p }, ErrCorrupt, "vhdx-metadata-sector-size"},
		{"bat-too-small", false, func(p []byte) []byte { vxPut64(p[vxTMeta+0x10008:], 64*TiB); return p }, ErrCorrupt, "vhdx-bat-too-small"},
		{"bat-past-eof", false, func(p []byte) []byte { vxSetBAT(p, 1, 1<<40|vxFull); return p }, nil, "vhdx-bat-past-eof"},
		{"bat-in-header", false, func(p []byte) []byte { vxSetBAT(p, 1, vxFull); return p }, nil, "vhdx-bat-offset"},
		{"bat-overlap-blocks", false, func(p []byte) []byte { vxSetBAT(p, 1, vxU64(p[vxTBAT:])); return p }, nil, "vhdx-bat-overlap"},
		{"bat-overlap-metadata", false, func(p []byte) []byte { vxSetBAT(p, 1, vxTMeta|vxFull); return p }, nil, "vhdx-bat-overlap"},
		{"bat-partial-in-dynamic", false, func(p []byte) []byte { vxSetBAT(p, 0, vxU64(p[vxTBAT:])|vxPartial); return p }, nil, "vhdx-bat-state"},
		{"bat-state-4", false, func(p []byte) []byte { vxSetBAT(p, 1, 4); return p }, nil, "vhdx-bat-state"},
		{"sb-in-dynamic", false, func(p []byte) []byte { vxSetBAT(p, 4096, 5*MiB|vxSBPresent); return p }, nil, "vhdx-sb-state"},
		{"bat-reserved", false, func(p []byte) []byte { vxSetBAT(p, 1, 1<<10); return p }, nil, "vhdx-bat-reserved"},
		{"bat-offset-nonzero", false, func(p []byte) []byte { vxSetBAT(p, 1, 9*MiB|vxZero); return p }, nil, "vhdx-bat-offset-nonzero"},
		{"truncated-small", false, func(p []byte) []byte { return p[:512*KiB] }, ErrCorrupt, "vhdx-truncated"},
		{"truncated-bat", false, func(p []byte) []byte { return p[:3*MiB+512*KiB] }, ErrCorrupt, "vhdx-region-bounds"},
		{"truncated-blocks", false, func(p []byte) []byte { return p[:len(p)-MiB/2] }, nil, "vhdx-bat-past-eof"},
		{"diff-partial-no-sb", true, func(p []byte) []byte {
			// Block 1 PARTIALLY_PRESENT, and chunk 0's SB entry (index CR = 4096
			// for 1 MiB blocks, 512-byte sectors) removed.
			vxSetBAT(p, 1, vxU64(p[vxTBAT+8:])&vxOffMask|vxPartial)
			vxSetBAT(p, 4096, 0)
			return p
		}, nil, "vhdx-sb-missing"},
		{"diff-zero-state", true, func(p []byte) []byte { vxSetBAT(p, 2, vxZero); return p }, nil, "vhdx-diff-zero-state"},
		{"diff-locator-type", true, func(p []byte) []byte { p[vxTMeta+0x10000+8+8+4+4+16] ^= 1; return p }, ErrUnsupported, "vhdx-locator-type"},
		{"diff-locator-hostile", true, func(p []byte) []byte { vxPut32(p[vxTMeta+0x10000+8+8+4+4+16+20:], 0xFFFFFF00); return p }, ErrCorrupt, "vhdx-locator"},
		{"diff-no-locator", true, func(p []byte) []byte { p[vxTMeta+32+5*32+3] ^= 0xff; return p }, ErrUnsupported, "vhdx-metadata-unknown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := dyn
			if tc.diff {
				src = diff
			}
			p := tc.mutate(append([]byte(nil), src...))
			m := &vxMemFile{b: p}
			bk, err := openVHDX(m, "c.vhdx", false)
			if tc.sentinel != nil {
				var e *Error
				if !errors.Is(err, tc.sentinel) || !errors.As(err, &e) || e.Code != tc.code {
					t.Fatalf("open: got %v (%#v), want %v/%s", err, err, tc.sentinel, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			fs, err := bk.check()
			if err != nil {
				t.Fatal(err)
			}
			if !vxHasCode(fs, tc.code) {
				t.Fatalf("check: no %s in %+v", tc.code, fs)
			}
			// Lookups never panic; errors are typed.
			vs := bk.info().VirtualSize
			for off := int64(0); off < vs; {
				r, err := bk.lookup(off, vs-off)
				if err != nil {
					var e *Error
					if !errors.As(err, &e) || !errors.Is(err, ErrCorrupt) {
						t.Fatalf("lookup error not typed: %v", err)
					}
					off += MiB
					continue
				}
				off += r.Len
			}
		})
	}
}
