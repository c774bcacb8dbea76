package vm

import (
	"strings"
	"unicode/utf8"
)

// parseXMLTreeFast builds the key tree of a document in the subset of XML
// Hyper-V writes (an optional <?xml version="1.0" ...?> declaration,
// elements with ASCII names and quoted attributes, text with the five
// predefined entities, CR LF line ends) exactly as parseXMLTree builds it
// with encoding/xml, several times faster. ok is false for anything outside
// that subset (comments, CDATA, DOCTYPE, processing instructions, namespace
// prefixes, character references, non-whitespace outside the root) and for
// anything encoding/xml would reject: the caller then parses with
// parseXMLTree, which gives the same tree or the error.
func parseXMLTreeFast(s string) (root *Key, ok bool) {
	i := 0
	if strings.HasPrefix(s, "<?xml") {
		end := strings.Index(s, "?>")
		if end < 0 || !xmlDeclOK(s[5:end]) {
			return nil, false
		}
		i = end + 2
	}
	type frame struct {
		key  *Key
		typ  string
		text []byte
		raw  string // text when it is one run without escapes
		n    int    // text runs seen
	}
	var stack []frame
	for i < len(s) {
		if s[i] != '<' {
			// Character data up to the next tag.
			j := strings.IndexByte(s[i:], '<')
			if j < 0 {
				j = len(s) - i
			}
			run := s[i : i+j]
			i += j
			if len(stack) == 0 {
				if strings.Trim(run, " \t\r\n") != "" {
					return nil, false
				}
				continue
			}
			f := &stack[len(stack)-1]
			if len(f.key.Children) > 0 {
				// A node's text is dropped; it must still be valid.
				if _, ok := xmlUnescape(nil, run); !ok {
					return nil, false
				}
				continue
			}
			if f.n == 0 && xmlPlain(run) {
				f.raw, f.n = run, 1
				continue
			}
			if f.n == 1 && f.text == nil {
				f.text = append(f.text, f.raw...)
			}
			var ok bool
			if f.text, ok = xmlUnescape(f.text, run); !ok {
				return nil, false
			}
			f.n++
			continue
		}
		i++
		if i >= len(s) {
			return nil, false
		}
		switch s[i] {
		case '/':
			i++
			name, n := xmlName(s[i:])
			if n == 0 || len(stack) == 0 {
				return nil, false
			}
			i += n
			for i < len(s) && xmlSpace(s[i]) {
				i++
			}
			if i >= len(s) || s[i] != '>' {
				return nil, false
			}
			i++
			f := stack[len(stack)-1]
			if f.key.Name != name {
				return nil, false
			}
			stack = stack[:len(stack)-1]
			text := f.raw
			if f.text != nil {
				text = string(f.text)
			}
			finishXMLKey(f.key, f.typ, text)
			continue
		case '?', '!':
			return nil, false
		}
		name, n := xmlName(s[i:])
		if n == 0 {
			return nil, false
		}
		i += n
		if root != nil && len(stack) == 0 {
			return nil, false // a second root
		}
		if len(stack) >= maxTreeDepth {
			return nil, false
		}
		f := frame{key: &Key{Name: name}}
		empty := false
		for {
			sp := i
			for i < len(s) && xmlSpace(s[i]) {
				i++
			}
			if i >= len(s) {
				return nil, false
			}
			if s[i] == '>' {
				i++
				break
			}
			if s[i] == '/' {
				if i+1 >= len(s) || s[i+1] != '>' {
					return nil, false
				}
				i += 2
				empty = true
				break
			}
			if sp == i {
				return nil, false // attributes need space before them
			}
			an, n := xmlName(s[i:])
			if n == 0 {
				return nil, false
			}
			i += n
			for i < len(s) && xmlSpace(s[i]) {
				i++
			}
			if i >= len(s) || s[i] != '=' {
				return nil, false
			}
			i++
			for i < len(s) && xmlSpace(s[i]) {
				i++
			}
			if i >= len(s) || (s[i] != '"' && s[i] != '\'') {
				return nil, false
			}
			q := s[i]
			i++
			j := strings.IndexByte(s[i:], q)
			if j < 0 {
				return nil, false
			}
			val := s[i : i+j]
			i += j + 1
			if strings.IndexByte(val, '<') >= 0 {
				return nil, false
			}
			if !xmlPlain(val) {
				b, ok := xmlUnescape(nil, val)
				if !ok {
					return nil, false
				}
				val = string(b)
			}
			if an == "type" {
				f.typ = val
			}
		}
		if len(stack) > 0 {
			p := stack[len(stack)-1].key
			p.Children = append(p.Children, f.key)
		} else {
			root = f.key
		}
		if empty {
			finishXMLKey(f.key, f.typ, "")
			continue
		}
		stack = append(stack, f)
	}
	if root == nil || len(stack) > 0 {
		return nil, false
	}
	return root, true
}

// xmlDeclOK reports whether the content of an <?xml ...?> declaration is
// a list of name="value" pairs, one of them version="1.0".
func xmlDeclOK(c string) bool {
	version := false
	for {
		t := strings.TrimLeft(c, " \t\r\n")
		if t == "" {
			return version
		}
		if len(t) == len(c) {
			return false // no space before a pair
		}
		eq := strings.Index(t, `="`)
		if eq <= 0 {
			return false
		}
		name := t[:eq]
		if n, l := xmlName(name); l != len(name) || n != name {
			return false
		}
		end := strings.IndexByte(t[eq+2:], '"')
		if end < 0 {
			return false
		}
		val := t[eq+2 : eq+2+end]
		if strings.Contains(val, "=") || strings.Contains(val, "version") {
			return false
		}
		if name == "version" {
			if val != "1.0" || version {
				return false
			}
			version = true
		}
		c = t[eq+2+end+1:]
	}
}

func xmlSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// xmlName returns the ASCII name at the start of s ([A-Za-z_][A-Za-z0-9_.-]*,
// no namespace prefix) and its length, or 0 when s does not start with one
// followed by a character that can end a name.
func xmlName(s string) (string, int) {
	n := 0
	for n < len(s) {
		c := s[n]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || n > 0 && (c >= '0' && c <= '9' || c == '.' || c == '-') {
			n++
			continue
		}
		break
	}
	if n == 0 {
		return "", 0
	}
	if n < len(s) {
		switch c := s[n]; {
		case xmlSpace(c), c == '>', c == '/', c == '=':
		default:
			return "", 0 // ':' or a non-ASCII name character
		}
	}
	return s[:n], n
}

// xmlPlain reports whether text is printable ASCII, tab or LF only: what
// encoding/xml returns unchanged.
func xmlPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 && c != '\t' && c != '\n' || c >= utf8.RuneSelf || c == '&' || c == '\r' || c == ']' {
			return false
		}
	}
	return true
}

// xmlUnescape appends text as encoding/xml decodes it (the five predefined
// entities, CR LF and CR as LF); ok is false for anything else it would
// treat differently or reject (character references, other entities,
// "]]>", characters outside XML's range).
func xmlUnescape(dst []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '&':
			j := strings.IndexByte(s[i:], ';')
			if j < 0 {
				return nil, false
			}
			switch s[i+1 : i+j] {
			case "lt":
				dst = append(dst, '<')
			case "gt":
				dst = append(dst, '>')
			case "amp":
				dst = append(dst, '&')
			case "apos":
				dst = append(dst, '\'')
			case "quot":
				dst = append(dst, '"')
			default:
				return nil, false
			}
			i += j + 1
		case c == '\r':
			dst = append(dst, '\n')
			i++
			if i < len(s) && s[i] == '\n' {
				i++
			}
		case c == ']':
			if strings.HasPrefix(s[i:], "]]>") {
				return nil, false
			}
			dst = append(dst, c)
			i++
		case c < 0x20 && c != '\t' && c != '\n':
			return nil, false
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 || !(r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF) {
				return nil, false
			}
			dst = append(dst, s[i:i+n]...)
			i += n
		}
	}
	return dst, true
}
