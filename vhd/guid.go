package vhd

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// GUID is 16 bytes in Microsoft layout as stored on disk: Data1 (u32 LE),
// Data2 (u16 LE), Data3 (u16 LE), Data4 (8 raw bytes).
type GUID [16]byte

// NewGUID returns a random (version 4) GUID.
func NewGUID() GUID {
	var g GUID
	if _, err := rand.Read(g[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	// Version 4 lives in the high nibble of Data3 (stored LE: byte 7).
	g[7] = (g[7] & 0x0f) | 0x40
	g[8] = (g[8] & 0x3f) | 0x80
	return g
}

// IsZero reports whether g is the all-zero GUID.
func (g GUID) IsZero() bool { return g == GUID{} }

// String renders g as upper-case text without braces, as Windows prints IDs.
func (g GUID) String() string {
	return fmt.Sprintf("%08X-%04X-%04X-%02X%02X-%s",
		binary.LittleEndian.Uint32(g[0:4]),
		binary.LittleEndian.Uint16(g[4:6]),
		binary.LittleEndian.Uint16(g[6:8]),
		g[8], g[9], strings.ToUpper(hex.EncodeToString(g[10:16])))
}

// Linkage renders g the way a VHDX parent_linkage value must be written:
// lower case, with braces (libvhdi rejects upper case).
func (g GUID) Linkage() string { return "{" + strings.ToLower(g.String()) + "}" }

// ParseGUID parses "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", with or without
// braces, any case.
func ParseGUID(s string) (GUID, error) {
	var g GUID
	t := strings.TrimSpace(s)
	t = strings.TrimPrefix(t, "{")
	t = strings.TrimSuffix(t, "}")
	if len(t) != 36 || t[8] != '-' || t[13] != '-' || t[18] != '-' || t[23] != '-' {
		return g, fmt.Errorf("invalid GUID %q", s)
	}
	h := t[0:8] + t[9:13] + t[14:18] + t[19:23] + t[24:36]
	b, err := hex.DecodeString(h)
	if err != nil {
		return g, fmt.Errorf("invalid GUID %q", s)
	}
	binary.LittleEndian.PutUint32(g[0:4], binary.BigEndian.Uint32(b[0:4]))
	binary.LittleEndian.PutUint16(g[4:6], binary.BigEndian.Uint16(b[4:6]))
	binary.LittleEndian.PutUint16(g[6:8], binary.BigEndian.Uint16(b[6:8]))
	copy(g[8:], b[8:16])
	return g, nil
}
