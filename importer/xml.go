package importer

import (
	"bytes"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"html"
	"regexp"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// xmlValue matches the leaves rewriteXML may change.
var xmlValue = regexp.MustCompile(`<(pathname|global_id|logical_id)(\s[^>]*)?>([^<]*)</(pathname|global_id|logical_id)>`)

// rewriteXML changes, in a Hyper-V XML configuration, every `pathname`
// whose value (case-insensitively) is a key of paths to the mapped value,
// and every `global_id`/`logical_id` named in ids whose value is oldID to
// the new ID. Everything else, including the encoding (UTF-16 with its
// byte-order mark, or UTF-8) and the layout, is kept byte for byte.
func rewriteXML(b []byte, paths map[string]string, ids map[string]string, oldID string) ([]byte, error) {
	var (
		text string
		enc  string
	)
	switch {
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE}):
		text, enc = decode16(b[2:], binary.LittleEndian), "le-bom"
	case bytes.HasPrefix(b, []byte{0xFE, 0xFF}):
		text, enc = decode16(b[2:], binary.BigEndian), "be-bom"
	case len(b) >= 2 && b[0] != 0 && b[1] == 0:
		text, enc = decode16(b, binary.LittleEndian), "le"
	default:
		if !utf8.Valid(b) {
			return nil, errors.New("configuration is neither UTF-16 nor UTF-8")
		}
		text, enc = string(b), "utf8"
	}
	oldID = strings.Trim(oldID, "{}")
	out := xmlValue.ReplaceAllStringFunc(text, func(s string) string {
		m := xmlValue.FindStringSubmatch(s)
		if m[1] != m[4] {
			return s
		}
		val := html.UnescapeString(m[3])
		var nv string
		switch m[1] {
		case "pathname":
			v, ok := paths[strings.ToLower(val)]
			if !ok {
				return s
			}
			nv = v
		default:
			id, ok := ids[m[1]]
			if !ok || oldID == "" || !strings.EqualFold(strings.Trim(strings.TrimSpace(val), "{}"), oldID) {
				return s
			}
			nv = id
			if strings.HasPrefix(strings.TrimSpace(val), "{") {
				nv = "{" + id + "}"
			}
		}
		var esc strings.Builder
		xml.EscapeText(&esc, []byte(nv))
		return "<" + m[1] + m[2] + ">" + esc.String() + "</" + m[4] + ">"
	})
	switch enc {
	case "le-bom":
		return append([]byte{0xFF, 0xFE}, encode16(out, binary.LittleEndian)...), nil
	case "be-bom":
		return append([]byte{0xFE, 0xFF}, encode16(out, binary.BigEndian)...), nil
	case "le":
		return encode16(out, binary.LittleEndian), nil
	}
	return []byte(out), nil
}

func decode16(b []byte, bo binary.ByteOrder) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = bo.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

func encode16(s string, bo binary.ByteOrder) []byte {
	u := utf16.Encode([]rune(s))
	out := make([]byte, 2*len(u))
	for i, c := range u {
		bo.PutUint16(out[2*i:], c)
	}
	return out
}
