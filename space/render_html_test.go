package space

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func renderHTML(t *testing.T, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestRenderHTMLContent(t *testing.T) {
	r := renderFixture()
	page := renderHTML(t, r)

	// Self-contained: nothing to fetch, and a policy that forbids fetching.
	if !strings.Contains(page, `<meta http-equiv="Content-Security-Policy" content="default-src 'none';`) {
		t.Error("no Content-Security-Policy")
	}
	for _, bad := range []string{"http://", "https://", "//cdn", " src=", "<link", "@import", "url(http"} {
		if strings.Contains(page, bad) {
			t.Errorf("page references something external: %q", bad)
		}
	}
	// Escaping: the model's markup never becomes markup.
	if n := strings.Count(page, "<script"); n != 2 {
		t.Errorf("%d <script> elements, want the page's own 2", n)
	}
	for _, raw := range []string{`<script>alert(`, `<b>.vhdx`, `"disk"`} {
		if strings.Contains(page, raw) {
			t.Errorf("unescaped %q in the page", raw)
		}
	}
	for _, esc := range []string{`evil &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;vm&#39;`,
		`evil &#34;disk&#34; &lt;b&gt;.vhdx`} {
		if !strings.Contains(page, esc) {
			t.Errorf("escaped text %q missing", esc)
		}
	}
	// Content: title, summary, every volume with its verdict, the chart with
	// the merge and growth marks, the trees, every finding code.
	for _, s := range []string{
		"<title>hvsnap space report — hv-host-01 — 2025-11-25 10:00 UTC</title>",
		"Generated <b>2025-11-25T10:00:00Z</b>",
		`<span class="pill critical">critical</span>`, `<span class="pill warning">warning</span>`, `<span class="pill ok">ok</span>`,
		`<rect class="used critical" x="0" y="0" width="99.512%"`,
		`<rect class="merge" x="20.000%" y="1" width="12.000%"`, // /mnt/f: 60 GiB of 500
		`<rect class="merge over"`, `<rect class="growth over"`, `<rect class="edge"`,
		"8.0 GiB (does not fit)", "Volumes with room for its VMs",
		`<span class="pill warning">merge pending</span>`,
		`<span class="fname">web01_B.avhdx</span>`, `<span class="chip off-branch">off-branch</span>`,
		`<span class="chip checkpoint">checkpoint: Test branch</span>`, `<span class="chip vm">vm: web01</span>`,
		"merge <b>+512.0 MiB</b>", "merge growth unknown", "45d old",
		"unreadable: vhdx: header checksum mismatch",
		`<tr class="finding" data-sev="error">`, `<tr class="finding" data-sev="info">`,
		"Errors 8", "Warnings 7", "Info 1",
	} {
		if !strings.Contains(page, s) {
			t.Errorf("page lacks %q", s)
		}
	}
	for _, code := range allFindingCodes {
		if !strings.Contains(page, `<td class="mono code">`+code+`</td>`) {
			t.Errorf("finding %s not in the table", code)
		}
	}
	// The tree nests: B and C inside A inside the base.
	i := strings.Index(page, `<span class="fname">/mnt/d/VMs/web01/Virtual Hard Disks/web01.vhdx</span>`)
	j := strings.Index(page, `<span class="fname">web01_A.avhdx</span>`)
	k := strings.Index(page, `<span class="fname">web01_C.avhdx</span>`)
	if !(i >= 0 && i < j && j < k) || strings.Count(page[i:k], "<ul>") != 2 {
		t.Error("checkpoint tree not nested as base > A > {B, C}")
	}
	if renderHTML(t, renderFixture()) != page {
		t.Error("two renderings differ")
	}
	if err := WriteHTML(&bytes.Buffer{}, nil); err == nil {
		t.Error("nil report accepted")
	}
}

// chromium returns the headless browser to check pages with, or skips.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium not installed (apt-get install chromium, or make test-deps as root): the HTML report is not checked in a browser")
	return ""
}

// browse runs headless chromium on the page with extra arguments and
// returns stdout and stderr.
func browse(t *testing.T, bin, page string, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-extensions", "--mute-audio",
		"--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(append(base, args...), "file://"+page)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
	}
	return out.String(), errb.String()
}

var consoleRE = regexp.MustCompile(`(?m)^.*:CONSOLE[^\n]*$|^.*Uncaught[^\n]*$`)

// checkInBrowser loads page in chromium: the script must have run without
// errors (data-hvsnap="ok"), the console must stay silent (errors, CSP
// violations, failed loads all log there), and the screenshot must show a
// real page.
func checkInBrowser(t *testing.T, bin, page string) (dom string, img image.Image) {
	t.Helper()
	dom, stderr := browse(t, bin, page, "--enable-logging=stderr", "--v=0", "--dump-dom")
	if m := regexp.MustCompile(`<html[^>]*data-hvsnap="([^"]*)"`).FindStringSubmatch(dom); m == nil || m[1] != "ok" {
		t.Errorf("page script did not finish cleanly: %v", m)
	}
	if lines := consoleRE.FindAllString(stderr, -1); len(lines) > 0 {
		t.Errorf("console output while loading the page:\n%s", strings.Join(lines, "\n"))
	}
	shot := filepath.Join(t.TempDir(), "page.png")
	browse(t, bin, page, "--screenshot="+shot, "--window-size=1280,2000", "--hide-scrollbars")
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err = png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if dir := os.Getenv("HVSNAP_SCREENSHOTS"); dir != "" {
		data, _ := os.ReadFile(shot)
		os.WriteFile(filepath.Join(dir, filepath.Base(filepath.Dir(page))+".png"), data, 0o644)
	}
	return dom, img
}

// pixelStats: distinct colors and the share of pixels that are not the
// most common color (the background).
func pixelStats(img image.Image) (colors int, nonBackground float64) {
	count := map[uint32]int{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			count[(r>>8)<<16|(g>>8)<<8|bl>>8]++
		}
	}
	top := 0
	for _, n := range count {
		top = max(top, n)
	}
	total := b.Dx() * b.Dy()
	return len(count), float64(total-top) / float64(total)
}

func writePage(t *testing.T, name, html string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "report.html")
	if err := os.WriteFile(p, []byte(html), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRenderHTMLBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no browser")
	}
	bin := chromium(t)

	// The harness itself must see script errors and console output.
	t.Run("harness", func(t *testing.T) {
		bad := writePage(t, "bad", `<!DOCTYPE html><html data-hvsnap="pending"><head><title>x</title>
<script>window.onerror=function(m){document.documentElement.setAttribute("data-hvsnap","error: "+m)};</script></head>
<body><script>console.error("boom"); missingFunction();</script></body></html>`)
		dom, stderr := browse(t, bin, bad, "--enable-logging=stderr", "--v=0", "--dump-dom")
		if !strings.Contains(dom, `data-hvsnap="error: Uncaught ReferenceError`) {
			t.Errorf("onerror did not mark the page: %.300s", dom)
		}
		if !consoleRE.MatchString(stderr) {
			t.Log("chromium does not log console messages to stderr here; relying on data-hvsnap only")
		}
	})

	t.Run("fixture", func(t *testing.T) {
		page := writePage(t, "fixture", renderHTML(t, renderFixture()))
		dom, img := checkInBrowser(t, bin, page)
		if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 2000 {
			t.Errorf("screenshot %v", b)
		}
		colors, fg := pixelStats(img)
		t.Logf("screenshot: %d colors, %.1f%% not background", colors, 100*fg)
		if colors < 100 || fg < 0.10 {
			t.Errorf("screenshot looks blank: %d colors, %.1f%% not background", colors, 100*fg)
		}
		// The browser saw the model's markup as text.
		if strings.Contains(dom, "<script>alert(") || !strings.Contains(dom, "evil &lt;script&gt;alert(") {
			t.Error("markup from the model reached the DOM")
		}
		// The findings filter ran (every row visible, "All" selected).
		if !strings.Contains(dom, `<button type="button" class="on" data-sev="all">`) {
			t.Error("filter script did not run")
		}
	})

	t.Run("empty", func(t *testing.T) {
		page := writePage(t, "empty", renderHTML(t, &Report{Schema: Schema}))
		_, img := checkInBrowser(t, bin, page)
		if colors, _ := pixelStats(img); colors < 10 {
			t.Errorf("empty report renders blank (%d colors)", colors)
		}
	})
}
