package space

import (
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// promSample is one parsed sample line.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

func (s promSample) key() string {
	names := make([]string, 0, len(s.labels))
	for k := range s.labels {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(s.name)
	for _, k := range names {
		fmt.Fprintf(&b, "|%s=%q", k, s.labels[k])
	}
	return b.String()
}

var (
	promMetricRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	promLabelRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// parseProm is a strict parser of the text exposition format as
// node_exporter's textfile collector reads it: HELP then TYPE before a
// family's samples, families not interleaved, no duplicate series, no
// timestamps, escapes \\ \" \n in label values only.
func parseProm(t *testing.T, text string) map[string]promSample {
	t.Helper()
	if !strings.HasSuffix(text, "\n") {
		t.Fatal("output does not end with a newline")
	}
	help := map[string]bool{}
	typ := map[string]string{}
	done := map[string]bool{} // families closed by the start of another
	current := ""
	out := map[string]promSample{}
	for n, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		n++
		switch {
		case strings.HasPrefix(line, "# HELP "):
			f := strings.SplitN(strings.TrimPrefix(line, "# HELP "), " ", 2)
			if len(f) != 2 || !promMetricRE.MatchString(f[0]) || f[1] == "" {
				t.Fatalf("line %d: bad HELP: %q", n, line)
			}
			if help[f[0]] || done[f[0]] {
				t.Fatalf("line %d: second HELP for %s", n, f[0])
			}
			if current != "" && current != f[0] {
				done[current] = true
			}
			help[f[0]], current = true, f[0]
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(strings.TrimPrefix(line, "# TYPE "))
			if len(f) != 2 || f[0] != current || !help[f[0]] {
				t.Fatalf("line %d: TYPE not right after its HELP: %q", n, line)
			}
			switch f[1] {
			case "gauge", "counter", "untyped":
			default:
				t.Fatalf("line %d: type %q", n, f[1])
			}
			if _, dup := typ[f[0]]; dup {
				t.Fatalf("line %d: second TYPE for %s", n, f[0])
			}
			typ[f[0]] = f[1]
		case strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "":
			t.Fatalf("line %d: unexpected line %q", n, line)
		default:
			s := parsePromSample(t, n, line)
			if s.name != current || typ[s.name] == "" {
				t.Fatalf("line %d: sample of %s outside its family (HELP/TYPE missing or families interleaved)", n, s.name)
			}
			if !strings.HasPrefix(s.name, "hvsnap_") {
				t.Fatalf("line %d: metric %s not prefixed hvsnap_", n, s.name)
			}
			if _, dup := out[s.key()]; dup {
				t.Fatalf("line %d: duplicate series %s", n, line)
			}
			out[s.key()] = s
		}
	}
	for name := range help {
		if typ[name] == "" {
			t.Errorf("%s has HELP but no TYPE", name)
		}
	}
	return out
}

func parsePromSample(t *testing.T, n int, line string) promSample {
	t.Helper()
	s := promSample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		t.Fatalf("line %d: no value: %q", n, line)
	}
	s.name = line[:i]
	if !promMetricRE.MatchString(s.name) {
		t.Fatalf("line %d: bad metric name %q", n, s.name)
	}
	rest := line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.Index(rest, `="`)
			if eq <= 0 || !promLabelRE.MatchString(rest[:eq]) {
				t.Fatalf("line %d: bad label in %q", n, line)
			}
			name := rest[:eq]
			rest = rest[eq+2:]
			var val strings.Builder
			closed := false
			for j := 0; j < len(rest); j++ {
				c := rest[j]
				if c == '\\' {
					if j+1 >= len(rest) {
						t.Fatalf("line %d: dangling escape", n)
					}
					switch rest[j+1] {
					case '\\':
						val.WriteByte('\\')
					case '"':
						val.WriteByte('"')
					case 'n':
						val.WriteByte('\n')
					default:
						t.Fatalf("line %d: bad escape \\%c", n, rest[j+1])
					}
					j++
					continue
				}
				if c == '"' {
					rest = rest[j+1:]
					closed = true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				t.Fatalf("line %d: unterminated label value", n)
			}
			if _, dup := s.labels[name]; dup {
				t.Fatalf("line %d: label %s twice", n, name)
			}
			s.labels[name] = val.String()
			if strings.HasPrefix(rest, ",") {
				rest = rest[1:]
			} else if !strings.HasPrefix(rest, "}") {
				t.Fatalf("line %d: expected , or } in %q", n, line)
			}
		}
	}
	if !strings.HasPrefix(rest, " ") || strings.Count(rest, " ") != 1 {
		t.Fatalf("line %d: expected exactly one value and no timestamp: %q", n, line)
	}
	v, err := strconv.ParseFloat(rest[1:], 64)
	if err != nil {
		t.Fatalf("line %d: value: %v", n, err)
	}
	s.value = v
	return s
}

func renderProm(t *testing.T, r *Report) map[string]promSample {
	t.Helper()
	var b bytes.Buffer
	if err := WriteProm(&b, r); err != nil {
		t.Fatal(err)
	}
	return parseProm(t, b.String())
}

// want checks one series' value.
func wantSample(t *testing.T, got map[string]promSample, v float64, name string, labels ...string) {
	t.Helper()
	s := promSample{name: name, labels: map[string]string{}}
	for i := 0; i+1 < len(labels); i += 2 {
		s.labels[labels[i]] = labels[i+1]
	}
	g, ok := got[s.key()]
	if !ok {
		t.Errorf("no series %s", s.key())
		return
	}
	if g.value != v {
		t.Errorf("%s = %v, want %v", s.key(), g.value, v)
	}
}

func TestRenderProm(t *testing.T) {
	r := renderFixture()
	got := renderProm(t, r)
	const GiB, MiB = 1 << 30, 1 << 20
	for _, c := range []struct {
		vol            string
		verdict, pause float64
		free           float64
	}{{"/mnt/d", 2, 1, 300 * MiB}, {"/mnt/e", 1, 0, 1536 * MiB}, {"/mnt/f", 0, 0, 400 * GiB}, {"/mnt/g", 0, 0, 900 * GiB}} {
		wantSample(t, got, c.verdict, "hvsnap_volume_verdict", "volume", c.vol)
		wantSample(t, got, c.pause, "hvsnap_volume_paused_risk", "volume", c.vol)
		wantSample(t, got, c.free, "hvsnap_volume_free_bytes", "volume", c.vol)
	}
	wantSample(t, got, 60*GiB, "hvsnap_volume_size_bytes", "volume", "/mnt/d")
	wantSample(t, got, 8*GiB, "hvsnap_volume_merge_need_bytes", "volume", "/mnt/d")
	wantSample(t, got, 120*GiB, "hvsnap_volume_diff_growth_bytes", "volume", "/mnt/d")
	wantSample(t, got, 1, "hvsnap_volume_info", "volume", "/mnt/d", "device", "/dev/sdb1", "fstype", "ntfs3")

	web := []string{"vm", "web01", "vm_id", "8D1E2C3A-0000-4000-8000-000000000001"}
	evil := []string{"vm", weirdVM, "vm_id", "F00D0000-0000-4000-8000-000000000002"}
	wantSample(t, got, float64(r.VMs[0].Allocated), "hvsnap_vm_allocated_bytes", web...)
	wantSample(t, got, 3*GiB, "hvsnap_vm_reclaimable_bytes", web...)
	wantSample(t, got, 8*GiB, "hvsnap_vm_merge_need_bytes", web...)
	wantSample(t, got, 2, "hvsnap_vm_checkpoint_depth", web...)
	wantSample(t, got, 2, "hvsnap_vm_checkpoints", web...)
	wantSample(t, got, 1, "hvsnap_vm_merge_pending", web...)
	wantSample(t, got, 0, "hvsnap_vm_merge_pending", evil...) // the label value round-trips through the escapes
	wantSample(t, got, 20*GiB, "hvsnap_vm_allocated_bytes", evil...)

	wantSample(t, got, 1, "hvsnap_findings", "code", FindLowSpace, "severity", "error", "volume", "/mnt/d")
	wantSample(t, got, 1, "hvsnap_findings", "code", FindLowSpace, "severity", "warning", "volume", "/mnt/e")
	wantSample(t, got, 1, "hvsnap_findings", "code", FindMergePending, "severity", "warning", "volume", "")
	codes := map[string]bool{}
	for _, s := range got {
		if s.name == "hvsnap_findings" {
			codes[s.labels["code"]] = true
		}
	}
	for _, c := range allFindingCodes {
		if !codes[c] {
			t.Errorf("no hvsnap_findings series for %s", c)
		}
	}
	wantSample(t, got, 8, "hvsnap_findings_total", "severity", "error")
	wantSample(t, got, 7, "hvsnap_findings_total", "severity", "warning")
	wantSample(t, got, 1, "hvsnap_findings_total", "severity", "info")
	wantSample(t, got, float64(r.GeneratedAt.Unix()), "hvsnap_space_last_run_timestamp_seconds")
	wantSample(t, got, 2, "hvsnap_space_worst_verdict")
	wantSample(t, got, 3*GiB+764*MiB, "hvsnap_space_reclaimable_bytes")
}

func TestRenderPromEscapes(t *testing.T) {
	r := renderFixture()
	odd := "C:\\Cluster\"Storage\"\nVolume1 \xff"
	r.Volumes[0].Mount = odd
	r.Findings[0].Volume = odd
	r.VMs = append(r.VMs, r.VMs[0]) // a duplicate VM must not duplicate series
	var b bytes.Buffer
	if err := WriteProm(&b, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `volume="C:\\Cluster\"Storage\"\nVolume1 `+"\uFFFD"+`"`) {
		t.Errorf("label not escaped:\n%s", b.String())
	}
	got := parseProm(t, b.String())
	wantSample(t, got, 2, "hvsnap_volume_verdict", "volume", strings.ToValidUTF8(odd, "\uFFFD"))
	wantSample(t, got, 1, "hvsnap_findings", "code", FindMergeNoSpace, "severity", "error", "volume", strings.ToValidUTF8(odd, "\uFFFD"))
}

func TestRenderPromEmpty(t *testing.T) {
	got := renderProm(t, &Report{Schema: Schema})
	wantSample(t, got, 0, "hvsnap_findings_total", "severity", "error")
	wantSample(t, got, 0, "hvsnap_space_worst_verdict")
	wantSample(t, got, 0, "hvsnap_space_last_run_timestamp_seconds")
}
