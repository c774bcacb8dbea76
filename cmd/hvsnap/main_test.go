package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hv runs the CLI in-process and returns exit code, stdout, stderr.
func hv(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"hvsnap", "-q"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func mustHV(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := hv(t, args...)
	if code != 0 {
		t.Fatalf("hvsnap %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func TestCLIChainWorkflow(t *testing.T) {
	for _, ext := range []string{"vhdx", "vhd"} {
		t.Run(ext, func(t *testing.T) {
			dir := t.TempDir()
			base := filepath.Join(dir, "base."+ext)
			child := filepath.Join(dir, "base_1."+"a"+ext)
			leaf := filepath.Join(dir, "base_2."+"a"+ext)
			mustHV(t, "create", "--size", "64M", base)
			mustHV(t, "write", "--offset", "0", "--fill", "0x11", "--length", "3M", base)
			mustHV(t, "create", "--parent", base, child)
			// Writing into a parent that has a child is refused.
			if code, _, errs := hv(t, "write", "--offset", "0", "--fill", "1", "--length", "512", base); code != 1 || !strings.Contains(errs, "depend on it") {
				t.Fatalf("write into parent: exit %d %s", code, errs)
			}
			in := filepath.Join(dir, "in.bin")
			os.WriteFile(in, []byte("checkpoint data, unaligned"), 0o644)
			mustHV(t, "write", "--offset", "1000001", "--input", in, child)
			mustHV(t, "create", "--parent", child, leaf)
			mustHV(t, "write", "--offset", "2M", "--fill", "0x33", "--length", "5000", leaf)

			out := mustHV(t, "info", "--json", "--chain", leaf)
			var info map[string]any
			if err := json.Unmarshal([]byte(out), &info); err != nil {
				t.Fatal(err, out)
			}
			if info["schema"].(float64) != 1 || info["format"] != ext || info["type"] != "differencing" ||
				info["virtual_size"].(float64) != 64<<20 {
				t.Fatalf("info: %v", info)
			}
			p := info["parent"].(map[string]any)
			if p["resolved"] != child || p["linkage_ok"] != true {
				t.Fatalf("parent: %v", p)
			}
			if n := len(info["chain"].([]any)); n != 3 {
				t.Fatalf("chain length %d", n)
			}
			for _, k := range []string{"file_size", "block_size", "logical_sector_size"} {
				if _, ok := info[k].(float64); !ok {
					t.Fatalf("info lacks %s: %v", k, info)
				}
			}
			text := mustHV(t, "info", "--chain", leaf)
			if !strings.Contains(text, "linkage ok") || !strings.Contains(text, "Chain (3 layers") {
				t.Fatalf("text info:\n%s", text)
			}
			if out := mustHV(t, "check", leaf); !strings.Contains(out, "healthy") {
				t.Fatalf("check: %s", out)
			}

			// convert: to raw file, to stdout, to vhdx; all the same bytes.
			raw := filepath.Join(dir, "flat.raw")
			mustHV(t, "convert", leaf, raw)
			rawData, _ := os.ReadFile(raw)
			want := make([]byte, 64<<20)
			for i := 0; i < 3<<20; i++ {
				want[i] = 0x11
			}
			copy(want[1000001:], "checkpoint data, unaligned")
			for i := 2 << 20; i < 2<<20+5000; i++ {
				want[i] = 0x33
			}
			if !bytes.Equal(rawData, want) {
				t.Fatal("raw output differs from the expected disk content")
			}
			stdout := mustHV(t, "convert", leaf, "-")
			if sha256.Sum256([]byte(stdout)) != sha256.Sum256(want) {
				t.Fatal("stdout output differs")
			}
			flat := filepath.Join(dir, "flat.vhdx")
			out = mustHV(t, "convert", "--json", leaf, flat)
			if !strings.Contains(out, `"layers": 3`) {
				t.Fatalf("convert json: %s", out)
			}
			if got := mustHV(t, "convert", flat, "-"); sha256.Sum256([]byte(got)) != sha256.Sum256(want) {
				t.Fatal("flattened vhdx differs")
			}
			// convert refuses to overwrite.
			if code, _, errs := hv(t, "convert", leaf, flat); code != 1 || !strings.Contains(errs, "exists") {
				t.Fatalf("overwrite: %d %s", code, errs)
			}

			// Move the middle layer away: check reports the broken chain (exit 3).
			moved := filepath.Join(dir, "sub")
			os.Mkdir(moved, 0o755)
			nchild := filepath.Join(moved, filepath.Base(child))
			os.Rename(child, nchild)
			code, out, _ := hv(t, "check", "--json", leaf)
			if code != 3 || !strings.Contains(out, "parent-missing") {
				t.Fatalf("check broken: %d %s", code, out)
			}
			code, out, _ = hv(t, "info", "--json", leaf)
			if code != 0 || !strings.Contains(out, `"resolved": null`) {
				t.Fatalf("info broken: %d %s", code, out)
			}
			mustHV(t, "reparent", "--parent", nchild, leaf)
			// The moved middle layer still finds base via its absolute? No: via relative path ..\base; fix it too.
			if code, _, _ := hv(t, "check", leaf); code != 0 {
				mustHV(t, "reparent", "--parent", base, nchild)
			}
			if out := mustHV(t, "check", leaf); !strings.Contains(out, "healthy") {
				t.Fatal(out)
			}
			if got := mustHV(t, "convert", leaf, "-"); sha256.Sum256([]byte(got)) != sha256.Sum256(want) {
				t.Fatal("content after reparent differs")
			}
			// Reparent to an unrelated disk is refused.
			other := filepath.Join(dir, "other."+ext)
			mustHV(t, "create", "--size", "64M", other)
			if code, _, errs := hv(t, "reparent", "--parent", other, leaf); code != 1 || !strings.Contains(errs, "does not match") && !strings.Contains(errs, "not this disk's parent") {
				t.Fatalf("reparent unrelated: %d %s", code, errs)
			}
		})
	}
}

func TestCLIUsageAndErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"info"}, 2, "expected one PATH"},
		{[]string{"create", filepath.Join(dir, "x.vhdx")}, 2, "--size is required"},
		{[]string{"create", "--size", "1G", filepath.Join(dir, "x.img")}, 2, "cannot tell the format"},
		{[]string{"create", "--size", "lots", filepath.Join(dir, "x.vhdx")}, 2, "invalid size"},
		{[]string{"create", "--size", "10M", "--block-size", "3M", filepath.Join(dir, "x.vhdx")}, 2, "power of two"},
		{[]string{"create", "--size", "10M", "--logical-sector-size", "4096", filepath.Join(dir, "x.vhd")}, 2, "512-byte sectors"},
		{[]string{"info", filepath.Join(dir, "missing.vhdx")}, 1, "missing.vhdx"},
		{[]string{"check", filepath.Join(dir, "missing.vhdx")}, 1, "missing.vhdx"},
		{[]string{"convert", "a"}, 2, "expected SRC and DST"},
		{[]string{"info", "--bogus", "x"}, 2, "bogus"},
		{[]string{"nonsense-command"}, 2, ""},
	}
	for _, c := range cases {
		code, out, errs := hv(t, c.args...)
		if code != c.code || !strings.Contains(errs+out, c.msg) {
			t.Errorf("hvsnap %v: exit %d (want %d), output %q%q", c.args, code, c.code, out, errs)
		}
	}
	// A file that is not a disk: one line naming it.
	junk := filepath.Join(dir, "junk.vhdx")
	os.WriteFile(junk, bytes.Repeat([]byte{7}, 8192), 0o644)
	code, _, errs := hv(t, "info", junk)
	if code != 1 || !strings.Contains(errs, junk) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Errorf("junk: %d %q", code, errs)
	}
	code, out, _ := hv(t, "check", junk)
	if code != 3 || !strings.Contains(out, "not-image") {
		t.Errorf("check junk: %d %q", code, out)
	}
	// --help for every command lists examples.
	for _, cmd := range []string{"info", "check", "create", "convert", "reparent", "write"} {
		code, out, _ := hv(t, cmd, "--help")
		if code != 0 || !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help: %d %q", cmd, code, out)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "10G": 10 << 30, "512MiB": 512 << 20, "1.5k": 1536, "2 TB": 2 << 40, "7b": 7} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1", "1e400G", "99999999999T"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}
