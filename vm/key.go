package vm

import (
	"strconv"
	"strings"
)

// ValueKind is the type of a [Key]'s value.
type ValueKind uint8

// Value kinds shared by the XML (`type` attribute) and VMCX (value type)
// formats.
const (
	KindNode    ValueKind = iota // a container of child keys, no value
	KindString                   // XML type="string", VMCX type 6
	KindInt                      // XML type="integer", VMCX type 3 (int64)
	KindUint                     // VMCX type 4 (uint64)
	KindFloat                    // VMCX type 5 (double)
	KindBool                     // XML type="bool", VMCX type 8
	KindBytes                    // XML type="bytes" (base64), VMCX type 7 (blob)
	KindUnknown                  // a value this package cannot interpret
)

var kindNames = [...]string{"node", "string", "integer", "uint", "double", "bool", "bytes", "unknown"}

func (k ValueKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Key is one node of a configuration's key tree: an XML element or a VMCX key
// entry. Leaves carry a value; nodes carry children. Names may repeat among
// siblings (e.g. `devicetype` in metrics), so children are a list.
type Key struct {
	Name     string
	Kind     ValueKind
	Text     string  // KindString value; for XML also the raw text of any leaf
	Int      int64   // KindInt value; KindBool as 0/1
	Uint     uint64  // KindUint value
	Float    float64 // KindFloat value
	Bytes    []byte  // KindBytes value (nil when Omitted)
	Omitted  bool    // the value was too large to load (its size is in Size)
	Size     int64   // stored size of a string or bytes value, in bytes
	Children []*Key
}

// Child returns the first child named name (exact match first, then
// case-insensitive), or nil. It is safe on a nil Key.
func (k *Key) Child(name string) *Key {
	if k == nil {
		return nil
	}
	for _, c := range k.Children {
		if c.Name == name {
			return c
		}
	}
	for _, c := range k.Children {
		if strings.EqualFold(c.Name, name) {
			return c
		}
	}
	return nil
}

// Lookup follows a slash-separated path of child names ("properties/name")
// and returns the key found, or nil. It is safe on a nil Key.
func (k *Key) Lookup(path string) *Key {
	cur := k
	for _, part := range strings.Split(path, "/") {
		if part == "" {
			continue
		}
		cur = cur.Child(part)
		if cur == nil {
			return nil
		}
	}
	return cur
}

// String returns the value as text: the string itself, a number or bool in
// decimal/True/False, or "" for nodes, bytes and nil keys.
func (k *Key) String() string {
	if k == nil {
		return ""
	}
	switch k.Kind {
	case KindString:
		return k.Text
	case KindInt:
		return strconv.FormatInt(k.Int, 10)
	case KindUint:
		return strconv.FormatUint(k.Uint, 10)
	case KindFloat:
		return strconv.FormatFloat(k.Float, 'g', -1, 64)
	case KindBool:
		if k.Int != 0 {
			return "True"
		}
		return "False"
	case KindUnknown:
		return k.Text
	}
	return ""
}

// IntValue returns the value as an int64: integers, uints that fit, bools
// (0/1) and decimal strings. ok is false otherwise.
func (k *Key) IntValue() (v int64, ok bool) {
	if k == nil {
		return 0, false
	}
	switch k.Kind {
	case KindInt, KindBool:
		return k.Int, true
	case KindUint:
		if k.Uint <= 1<<63-1 {
			return int64(k.Uint), true
		}
	case KindString, KindUnknown:
		if n, err := strconv.ParseInt(strings.TrimSpace(k.Text), 10, 64); err == nil {
			return n, true
		}
	}
	return 0, false
}

// BoolValue returns the value as a bool: bools, non-zero integers and the
// strings True/False/1/0. ok is false otherwise.
func (k *Key) BoolValue() (v bool, ok bool) {
	if k == nil {
		return false, false
	}
	switch k.Kind {
	case KindBool, KindInt:
		return k.Int != 0, true
	case KindUint:
		return k.Uint != 0, true
	case KindString, KindUnknown:
		return parseBoolText(k.Text)
	}
	return false, false
}

func parseBoolText(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1":
		return true, true
	case "false", "0":
		return false, true
	}
	return false, false
}

// Walk calls fn for k and every key below it, depth first, with the
// slash-separated path from k. It stops descending where fn returns false.
func (k *Key) Walk(fn func(path string, key *Key) bool) {
	if k == nil {
		return
	}
	var rec func(prefix string, key *Key, depth int)
	rec = func(prefix string, key *Key, depth int) {
		p := key.Name
		if prefix != "" {
			p = prefix + "/" + key.Name
		}
		if !fn(p, key) || depth >= maxTreeDepth {
			return
		}
		for _, c := range key.Children {
			rec(p, c, depth+1)
		}
	}
	rec("", k, 0)
}

// maxTreeDepth bounds the depth of every key tree this package builds. Real
// configurations are about 8 levels deep.
const maxTreeDepth = 128
