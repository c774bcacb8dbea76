package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/hvsnap/hvsnap/internal/progress"
	"github.com/hvsnap/hvsnap/vhd"
)

// jsonSchema is the version of every JSON document hvsnap prints.
const jsonSchema = 1

// parseSize parses "10G", "512MiB", "4096", "1.5T" (binary units).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"TIB", vhd.TiB}, {"GIB", vhd.GiB}, {"MIB", vhd.MiB}, {"KIB", vhd.KiB},
		{"TB", vhd.TiB}, {"GB", vhd.GiB}, {"MB", vhd.MiB}, {"KB", vhd.KiB},
		{"T", vhd.TiB}, {"G", vhd.GiB}, {"M", vhd.MiB}, {"K", vhd.KiB}, {"B", 1}} {
		if strings.HasSuffix(t, u.suf) {
			mult = u.m
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suf))
			break
		}
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		if n < 0 || (mult > 1 && n > (1<<62)/mult) {
			return 0, fmt.Errorf("size %q out of range", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || f*float64(mult) > float64(int64(1)<<62) {
		return 0, fmt.Errorf("invalid size %q (examples: 10G, 512MiB, 4096)", s)
	}
	v := int64(f * float64(mult))
	return v, nil
}

// human renders a byte count as "10.0 GiB".
func human(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		f /= unit
		if f < unit && f > -unit {
			return fmt.Sprintf("%.1f %s", f, u)
		}
	}
	return fmt.Sprintf("%.1f EiB", f/unit)
}

// pathMapFlag is the repeatable --path-map flag.
var pathMapFlag = &cli.StringSliceFlag{
	Name:  "path-map",
	Usage: "map a Windows path prefix to a local folder, e.g. 'C:\\VMs=/mnt/c/VMs' (repeatable)",
}

func pathMap(c *cli.Context) (vhd.PathMap, error) {
	var pm vhd.PathMap
	for _, s := range c.StringSlice("path-map") {
		m, err := vhd.ParsePathMapping(s)
		if err != nil {
			return nil, usagef("%v", err)
		}
		pm = append(pm, m)
	}
	return pm, nil
}

var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print a JSON document instead of text"}

func writeJSON(w io.Writer, v any) error {
	// The Encoder hands the whole compact document to indentWriter in one
	// Write; it is indented and written in pieces, so a large document
	// (hvsnap space --json: 4 MB) is not also held as a copy and an
	// indented copy (measured: a fifth of that command's page faults).
	return json.NewEncoder(indentWriter{w}).Encode(v)
}

// indentWriter writes the compact JSON documents given to it indented as
// an Encoder with SetIndent("", "  ") would.
type indentWriter struct{ w io.Writer }

const indentPiece = 64 << 10

func (iw indentWriter) Write(src []byte) (int, error) {
	if !plainCompact(src) {
		// Not the compact form indentJSONTo expects: what an Encoder with
		// SetIndent("", "  ") does.
		var b bytes.Buffer
		if err := json.Indent(&b, src, "", "  "); err != nil {
			return 0, err
		}
		if _, err := iw.w.Write(b.Bytes()); err != nil {
			return 0, err
		}
		return len(src), nil
	}
	var werr error
	dst := make([]byte, 0, indentPiece+4096)
	dst = indentJSONTo(dst, src, func(d []byte) []byte {
		if len(d) < indentPiece || werr != nil {
			return d
		}
		_, werr = iw.w.Write(d)
		return d[:0]
	})
	if werr != nil {
		return 0, werr
	}
	if _, err := iw.w.Write(dst); err != nil {
		return 0, err
	}
	return len(src), nil
}

// plainCompact reports whether src is what indentJSONTo takes: no
// whitespace outside strings but a final newline, no string left open.
func plainCompact(src []byte) bool {
	for i := 0; i < len(src); i++ {
		switch src[i] {
		case ' ', '\t', '\r', '\n':
			if i != len(src)-1 || src[i] != '\n' {
				return false
			}
		case '"':
			j, ok := stringEnd(src, i)
			if !ok {
				return false
			}
			i = j
		}
	}
	return true
}

// stringEnd returns the index of the quote closing the JSON string that
// opens at src[i]; ok is false when src ends inside it.
func stringEnd(src []byte, i int) (int, bool) {
	j := i + 1
	for j < len(src) && src[j] != '"' {
		if src[j] == '\\' {
			j++
		}
		j++
	}
	return j, j < len(src)
}

// indentJSONTo appends src, one compact JSON value and a newline as
// json.Encoder.Encode writes it and for which plainCompact holds, indented
// exactly as an Encoder with SetIndent("", "  ") indents it (json.Indent's
// rules: two spaces per level, "key": value, empty objects and arrays as {}
// and []). It is several times faster than json.Indent on large documents
// (hvsnap space --json). flush is called between the members of each object
// and array with what has been appended so far, and returns the slice to go
// on appending to (dst, or dst[:0] once written out).
func indentJSONTo(dst, src []byte, flush func([]byte) []byte) []byte {
	depth := 0
	needIndent := false
	newline := func() {
		dst = append(dst, '\n')
		for range depth {
			dst = append(dst, ' ', ' ')
		}
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c == '\n' { // the final newline (plainCompact)
			dst = append(dst, c)
			continue
		}
		if needIndent && c != '}' && c != ']' {
			needIndent = false
			depth++
			newline()
		}
		switch c {
		case '"':
			// Copy the string through its closing quote.
			j, _ := stringEnd(src, i)
			dst = append(dst, src[i:j+1]...)
			i = j
		case '{', '[':
			needIndent = true
			dst = append(dst, c)
		case ',':
			dst = flush(dst)
			dst = append(dst, c)
			newline()
		case ':':
			dst = append(dst, c, ' ')
		case '}', ']':
			if needIndent {
				needIndent = false
			} else {
				depth--
				newline()
			}
			dst = append(dst, c)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// oneArg returns the single positional argument or a usage error.
func oneArg(c *cli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		return "", usagef("%s: expected one %s, got %d arguments (see hvsnap %s --help)", c.Command.Name, what, c.NArg(), c.Command.Name)
	}
	return c.Args().First(), nil
}

// reporter renders engine progress as a bar on a terminal, and nothing when
// --quiet is given or stderr is not a terminal.
func reporter(c *cli.Context) progress.Reporter {
	if c.Bool("quiet") {
		return progress.Nop{}
	}
	f, ok := c.App.ErrWriter.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return progress.Nop{}
	}
	return &barReporter{w: f}
}

type barReporter struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (r *barReporter) Start(name string, total int64) {
	if total <= 0 {
		total = -1
	}
	r.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(r.w),
		progressbar.OptionSetDescription(name),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionThrottle(100_000_000),
		// The last throttled frame can be well short of the end: finishing
		// draws the full bar with the elapsed time and ends the line,
		// instead of clearing a bar last seen at 92%.
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(r.w) }),
	)
}

func (r *barReporter) Add(n int64) {
	if r.bar != nil {
		r.bar.Add64(n)
	}
}

func (r *barReporter) Done() {
	if r.bar != nil {
		r.bar.Finish()
		r.bar = nil
	}
}

// interspersed returns the positional arguments of c, applying any of the
// command's flags that follow a positional argument (urfave/cli stops at
// the first one: `hvsnap runbook SCENARIO --execute ROOT`). Arguments after
// "--" are returned as they are, after a "--" element.
func interspersed(c *cli.Context) ([]string, error) {
	byName := map[string]cli.Flag{}
	for _, f := range c.Command.Flags {
		for _, n := range f.Names() {
			byName[n] = f
		}
	}
	var pos []string
	args := c.Args().Slice()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(append(pos, "--"), args[i+1:]...), nil
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := byName[name]
		if f == nil {
			return nil, usagef("%s: unknown flag %s (see hvsnap %s --help)", c.Command.Name, a, c.Command.Name)
		}
		if _, ok := f.(*cli.BoolFlag); ok {
			if !hasVal {
				val = "true"
			}
		} else if !hasVal {
			if i+1 >= len(args) {
				return nil, usagef("%s: flag %s needs a value", c.Command.Name, a)
			}
			i++
			val = args[i]
		}
		if err := c.Set(f.Names()[0], val); err != nil {
			return nil, usagef("%s: %s: %v", c.Command.Name, a, err)
		}
	}
	return pos, nil
}
