package vm

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// maxXMLSize bounds an XML configuration read into memory (real ones are
// about 40 KB).
const maxXMLSize = 32 << 20

// ReadXMLTree reads a Hyper-V XML document (a VM or checkpoint configuration)
// from r into a key tree and returns its root element. The text may be
// UTF-16LE or UTF-16BE with a byte-order mark, UTF-16LE without one, or
// UTF-8. Leaves are typed by their `type` attribute (string, integer, bool,
// bytes). path names the file in errors.
func ReadXMLTree(r io.Reader, path string) (*Key, error) {
	raw, err := readAllSized(r, maxXMLSize+1)
	if err != nil {
		return nil, &Error{Path: path, Offset: -1, Msg: "cannot read", Err: err}
	}
	return xmlTreeOf(raw, path)
}

// xmlTreeOf is [ReadXMLTree] of a document already read.
func xmlTreeOf(raw []byte, path string) (*Key, error) {
	if len(raw) > maxXMLSize {
		return nil, corruptf(path, -1, "XML configuration larger than %d bytes", maxXMLSize)
	}
	text, err := decodeXMLText(raw)
	if err != nil {
		return nil, &Error{Path: path, Offset: -1, Msg: err.Error(), Err: ErrCorrupt}
	}
	if root, ok := parseXMLTreeFast(text); ok {
		return root, nil
	}
	root, err := parseXMLTree(text)
	if err != nil {
		return nil, &Error{Path: path, Offset: -1, Msg: "bad XML: " + err.Error(), Err: ErrCorrupt}
	}
	return root, nil
}

// decodeXMLText converts the document bytes to UTF-8 by their BOM.
func decodeXMLText(b []byte) (string, error) {
	switch {
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE}):
		return utf16Text(b[2:], false), nil
	case bytes.HasPrefix(b, []byte{0xFE, 0xFF}):
		return utf16Text(b[2:], true), nil
	case bytes.HasPrefix(b, []byte{0xEF, 0xBB, 0xBF}):
		b = b[3:]
	case len(b) >= 2 && b[0] != 0 && b[1] == 0:
		return utf16Text(b, false), nil // UTF-16LE without BOM
	}
	if !utf8.Valid(b) {
		return "", errors.New("text is neither UTF-16 (no byte-order mark) nor valid UTF-8")
	}
	return string(b), nil
}

// utf16Text is string(utf16.Decode(units of b)) (a trailing odd byte is
// dropped; unpaired surrogates become U+FFFD), without the intermediate
// slices.
func utf16Text(b []byte, bigEndian bool) string {
	n := len(b) / 2
	unit := func(i int) rune {
		if bigEndian {
			return rune(b[2*i])<<8 | rune(b[2*i+1])
		}
		return rune(b[2*i]) | rune(b[2*i+1])<<8
	}
	out := make([]byte, 0, n+n/8)
	for i := 0; i < n; i++ {
		r := unit(i)
		switch {
		case r < utf8.RuneSelf:
			out = append(out, byte(r))
			continue
		case utf16.IsSurrogate(r) && r < 0xDC00 && i+1 < n:
			if r2 := unit(i + 1); r2 >= 0xDC00 && r2 < 0xE000 {
				r = utf16.DecodeRune(r, r2)
				i++
			} else {
				r = utf8.RuneError
			}
		case utf16.IsSurrogate(r):
			r = utf8.RuneError
		}
		out = utf8.AppendRune(out, r)
	}
	return string(out)
}

// readAllSized is io.ReadAll(io.LimitReader(r, limit)), starting with a
// buffer of the file's size when r is a file.
func readAllSized(r io.Reader, limit int64) ([]byte, error) {
	size := int64(512)
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = min(fi.Size(), limit) + 1 // +1: EOF is seen without growing
		}
	}
	lr := io.LimitReader(r, limit)
	b := make([]byte, 0, size)
	for {
		n, err := lr.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

type xmlFrame struct {
	key  *Key
	typ  string
	text strings.Builder
}

// parseXMLTree builds the key tree of an XML document already in UTF-8.
func parseXMLTree(text string) (*Key, error) {
	d := xml.NewDecoder(strings.NewReader(text))
	// The text is UTF-8 now whatever the declaration says (UTF-16).
	d.CharsetReader = func(_ string, in io.Reader) (io.Reader, error) { return in, nil }
	var (
		stack []*xmlFrame
		root  *Key
	)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if root != nil && len(stack) == 0 {
				return nil, errors.New("more than one root element")
			}
			if len(stack) >= maxTreeDepth {
				return nil, fmt.Errorf("elements nested deeper than %d levels", maxTreeDepth)
			}
			f := &xmlFrame{key: &Key{Name: t.Name.Local}}
			for _, a := range t.Attr {
				if a.Name.Local == "type" {
					f.typ = a.Value
				}
			}
			if len(stack) > 0 {
				p := stack[len(stack)-1].key
				p.Children = append(p.Children, f.key)
			} else {
				root = f.key
			}
			stack = append(stack, f)
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text.Write(t)
			}
		case xml.EndElement:
			if len(stack) == 0 {
				return nil, errors.New("unbalanced end element")
			}
			f := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			finishXMLKey(f.key, f.typ, f.text.String())
		}
	}
	if root == nil {
		return nil, errors.New("no root element")
	}
	if len(stack) > 0 {
		return nil, errors.New("document ends inside an element")
	}
	return root, nil
}

// finishXMLKey types a finished element from its `type` attribute and text.
func finishXMLKey(k *Key, typ, text string) {
	if len(k.Children) > 0 {
		k.Kind = KindNode
		return
	}
	k.Text = text
	trim := strings.TrimSpace(text)
	switch typ {
	case "":
		if trim == "" {
			k.Kind, k.Text = KindNode, ""
		} else {
			k.Kind = KindString
		}
	case "string":
		k.Kind = KindString
		k.Size = int64(len(text))
	case "integer":
		if n, err := strconv.ParseInt(trim, 10, 64); err == nil {
			k.Kind, k.Int = KindInt, n
		} else if u, err := strconv.ParseUint(trim, 10, 64); err == nil {
			k.Kind, k.Uint = KindUint, u
		} else {
			k.Kind = KindUnknown
		}
	case "bool":
		if v, ok := parseBoolText(trim); ok {
			k.Kind = KindBool
			if v {
				k.Int = 1
			}
		} else {
			k.Kind = KindUnknown
		}
	case "bytes":
		clean := strings.Map(func(r rune) rune {
			if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
				return -1
			}
			return r
		}, text)
		if b, err := base64.StdEncoding.DecodeString(clean); err == nil {
			k.Kind, k.Bytes, k.Size = KindBytes, b, int64(len(b))
		} else {
			k.Kind = KindUnknown
		}
	default:
		k.Kind = KindUnknown
	}
}
