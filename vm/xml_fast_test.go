package vm

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf16"
)

// xmlFastCases are documents the fast XML path must parse exactly like
// encoding/xml, or decline.
var xmlFastCases = []string{
	`<configuration><a type="string">x</a></configuration>`,
	"<?xml version=\"1.0\" encoding=\"UTF-16\" standalone=\"yes\"?>\r\n<configuration>\r\n  <a type=\"string\">line 1\r\nline 2\rline 3</a>\r\n</configuration>\r\n",
	`<configuration><a type="string">&lt;&gt;&amp;&apos;&quot; ]] &gt;</a><b type='integer'> 42 </b><c/><d type="bool"/></configuration>`,
	`<configuration><a type="string">caf` + "\u00e9 \U0001F600" + `</a><n>  <x type="bytes">AAEC
AwQ=</x>  </n></configuration>`,
	`<configuration ><a  type = "string" >v</a ></configuration>`,
	`<configuration><a type="str&amp;ing">v</a></configuration>`,
	`<configuration><a type="string" type="integer">7</a></configuration>`,
	`<configuration><a>text<b type="integer">1</b>more &amp; more</a></configuration>`,
	// Declined (or rejected by encoding/xml): the fast path must not accept.
	`<configuration><!-- c --><a type="string">x</a></configuration>`,
	`<configuration><a type="string"><![CDATA[x]]></a></configuration>`,
	`<configuration><a type="string">&#65;&#x42;</a></configuration>`,
	`<configuration><a type="string">&nbsp;</a></configuration>`,
	`<configuration><a type="string">]]></a></configuration>`,
	"<configuration><a type=\"string\">\x01</a></configuration>",
	"<configuration><a type=\"string\">\uFFFE</a></configuration>",
	`<configuration><a type="string">x</b></configuration>`,
	`<configuration><a type="string">x</a>`,
	`<configuration></configuration><second/>`,
	`<configuration></configuration>tail`,
	`<x:configuration xmlns:x="urn:x"><x:a type="string">v</x:a></x:configuration>`,
	`<configuration><a x:type="integer">5</a></configuration>`,
	`<configuration><a type=string>v</a></configuration>`,
	`<configuration><a type="a<b">v</a></configuration>`,
	`<configuration><a type="string"y="1">v</a></configuration>`,
	`<configuration><1a/></configuration>`,
	`<?xml version="1.1"?><configuration/>`,
	`<?xml version='1.0'?><configuration/>`,
	`<?xml encoding="UTF-8" version="1.0"?><configuration/>`,
	`<?xml version="1.0"?><?pi x?><configuration/>`,
	`<!DOCTYPE configuration><configuration/>`,
	`</configuration>`,
	``,
	`   `,
}

// checkXMLFast fails when the fast path accepts a document that
// parseXMLTree rejects or parses differently.
func checkXMLFast(t *testing.T, doc string) (accepted bool) {
	t.Helper()
	fast, ok := parseXMLTreeFast(doc)
	if !ok {
		return false
	}
	slow, err := parseXMLTree(doc)
	if err != nil {
		t.Fatalf("fast path accepted what encoding/xml rejects (%v): %q", err, doc)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("fast path tree differs for %q:\nfast %+v\nslow %+v", doc, fast, slow)
	}
	return true
}

func TestXMLFastMatchesEncodingXML(t *testing.T) {
	accepted := 0
	for _, doc := range xmlFastCases {
		if checkXMLFast(t, doc) {
			accepted++
		}
	}
	if accepted < 8 {
		t.Fatalf("the fast path accepted only %d of the documents it is meant for", accepted)
	}
	// What the tests and storetest write, and the real sample, take the
	// fast path.
	docs := map[string]string{"rendered": mustDecode(t, renderXML(testConfig().tree()))}
	dir := os.Getenv("HVSNAP_SAMPLES")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "testdata", "windows")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "B90AC31B-C6F8-479F-9B91-07B894A6A3F6.xml")); err == nil {
		docs["sample"] = mustDecode(t, b)
	}
	for name, doc := range docs {
		if !checkXMLFast(t, doc) {
			t.Errorf("%s: the fast path declined it", name)
		}
	}
}

func mustDecode(t *testing.T, b []byte) string {
	t.Helper()
	s, err := decodeXMLText(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func FuzzXMLFast(f *testing.F) {
	for _, doc := range xmlFastCases {
		f.Add(doc)
	}
	f.Add(mustDecodeF(renderXML(testConfig().tree())))
	f.Fuzz(func(t *testing.T, doc string) {
		checkXMLFast(t, doc)
		if !strings.ContainsRune(doc, 0) {
			b := []byte(doc)
			for _, be := range []bool{false, true} {
				u := make([]uint16, len(b)/2)
				for i := range u {
					if be {
						u[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
					} else {
						u[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
					}
				}
				if got, want := utf16Text(b, be), string(utf16.Decode(u)); got != want {
					t.Fatalf("utf16Text(%q, %v) = %q, want %q", b, be, got, want)
				}
			}
		}
	})
}

func mustDecodeF(b []byte) string {
	s, err := decodeXMLText(b)
	if err != nil {
		panic(err)
	}
	return s
}
