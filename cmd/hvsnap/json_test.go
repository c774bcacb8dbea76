package main

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"
)

// TestWriteJSONMatchesEncoder: writeJSON prints exactly what an Encoder
// with SetIndent("", "  ") prints.
func TestWriteJSONMatchesEncoder(t *testing.T) {
	type inner struct {
		A []int          `json:"a"`
		M map[string]any `json:"m,omitempty"`
	}
	values := []any{
		nil, 0, -1.5e300, math.MaxInt64, "", "x", true,
		"quote \" backslash \\ slash / tab \t nl \n cr \r <html> & \u2028 \x01 é 😀",
		[]int{}, map[string]int{}, []any{[]any{}, map[string]any{}, []any{[]int{1}}},
		map[string]any{"k": []string{"a", "b"}, "e": struct{}{}, "n": nil, "{[,:]}": "{[,:]}"},
		inner{A: []int{1, 2, 3}, M: map[string]any{"x\\\"y": inner{}}},
		[]inner{{}, {A: []int{}}},
		time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		json.RawMessage(` { "raw" : [ 1 , 2 ] } `),
	}
	// Documents larger than one written piece (indentPiece), nested.
	big := make([]inner, 6000)
	for i := range big {
		big[i] = inner{A: []int{i, -i}, M: map[string]any{"s": "a \" string, {[,:]}", "n": []inner{{A: []int{i}}}}}
	}
	values = append(values, big, map[string]any{"outer": big[:3000], "z": []any{}})
	bigDone := false
	for _, v := range values {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		cw := &countingWriter{w: &got}
		if err := writeJSON(cw, v); err != nil {
			t.Fatal(err)
		}
		if want.Len() > 4*indentPiece {
			bigDone = true
			if cw.writes < want.Len()/indentPiece {
				t.Errorf("a %d-byte document written in %d writes, want pieces of about %d bytes", want.Len(), cw.writes, indentPiece)
			}
		}
		if got.String() != want.String() {
			if len(want.String()) > 4096 {
				t.Fatalf("writeJSON of a %d-byte document differs from the Encoder's (%d bytes)", want.Len(), got.Len())
			}
			t.Fatalf("writeJSON(%#v):\n%s\nwant\n%s", v, got.String(), want.String())
		}
	}
	if !bigDone {
		t.Error("no document larger than four pieces was tested")
	}
}

type countingWriter struct {
	w      *bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes++
	return c.w.Write(p)
}
