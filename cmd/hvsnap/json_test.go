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
	for _, v := range values {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := writeJSON(&got, v); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Fatalf("writeJSON(%#v):\n%s\nwant\n%s", v, got.String(), want.String())
		}
	}
}
