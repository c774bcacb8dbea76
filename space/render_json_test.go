package space

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// jsonFields is the JSON model as documented in README.md (section "hvsnap space", "JSON"):
// per type, the keys always present and those left out when empty. A change
// here is a change of the documented schema: update the README (and bump
// Schema when a key is renamed or removed).
var jsonFields = map[string]struct{ always, optional string }{
	"Report":     {always: "schema generated_at host roots thresholds volumes vms unattached disks state_files findings warnings summary"},
	"Thresholds": {always: "critical_free warning_free deep_chain old_checkpoint_seconds saved_state_min"},
	"Summary":    {always: "vms disks disk_bytes checkpoint_bytes reclaimable_bytes findings worst"},
	"Volume":     {always: "mount device fstype size free used verdict reasons disk_files disk_bytes diff_growth merge_need relocation_targets"},
	"Disk": {always: "path volume format type virtual_size file_size allocated data_bytes max_file_size mtime linkage_ok depth merge_growth on_live_chain",
		optional: "parent parent_error children used_by error"},
	"StateFile":  {always: "path volume kind size allocated mtime", optional: "vm"},
	"VM":         {always: "id name config_path config_kind generation version disk_merge_pending drives checkpoints chains volumes allocated reclaimable merge_need"},
	"Drive":      {always: "location windows_path path exists"},
	"Checkpoint": {always: "id name config_path disks"},
	"Tree":       {always: "path live", optional: "children"},
	"Finding":    {always: "code severity message", optional: "vm volume paths bytes evidence"},
}

// fill sets every field of v (recursively) to a non-zero value.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.Type().Elem() == reflect.TypeOf(Tree{}) && v.IsNil() {
			v.Set(reflect.ValueOf(&Tree{Path: "p", Live: true}))
			return
		}
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Unix(1, 0).UTC()))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0))
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		m.SetMapIndex(reflect.ValueOf("k"), reflect.ValueOf(any(1)))
		v.Set(m)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(1)
	case reflect.Interface:
		v.Set(reflect.ValueOf(any(1)))
	}
}

func jsonKeys(t *testing.T, v any) []string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortedFields(s ...string) []string {
	out := strings.Fields(strings.Join(s, " "))
	sort.Strings(out)
	return out
}

func TestRenderJSONFieldNames(t *testing.T) {
	types := map[string]any{
		"Report": Report{}, "Thresholds": Thresholds{}, "Summary": Summary{}, "Volume": Volume{}, "Disk": Disk{},
		"StateFile": StateFile{}, "VM": VM{}, "Drive": Drive{}, "Checkpoint": Checkpoint{}, "Tree": Tree{}, "Finding": Finding{},
	}
	if len(types) != len(jsonFields) {
		t.Fatalf("documented types %d, checked %d", len(jsonFields), len(types))
	}
	for name, zero := range types {
		doc := jsonFields[name]
		full := reflect.New(reflect.TypeOf(zero))
		fill(full.Elem())
		if got, want := jsonKeys(t, full.Interface()), sortedFields(doc.always, doc.optional); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: JSON keys %v, documented %v", name, got, want)
		}
		if got, want := jsonKeys(t, zero), sortedFields(doc.always); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: keys of the empty value %v, documented as always present %v", name, got, want)
		}
	}
}

func TestRenderJSONReport(t *testing.T) {
	r := renderFixture()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["schema"] != float64(1) || m["generated_at"] != "2025-11-25T10:00:00Z" {
		t.Fatalf("schema/generated_at: %v %v", m["schema"], m["generated_at"])
	}
	v0 := m["volumes"].([]any)[0].(map[string]any)
	if v0["verdict"] != "critical" || v0["free"] != float64(300<<20) {
		t.Errorf("volume: %v", v0)
	}
	vm := m["vms"].([]any)[0].(map[string]any)
	tree := vm["chains"].([]any)[0].(map[string]any)
	kids := tree["children"].([]any)[0].(map[string]any)["children"].([]any)
	if len(kids) != 2 || kids[0].(map[string]any)["live"] != false {
		t.Errorf("tree: %v", tree)
	}
	// Round trip: the model decodes back to the same report.
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(&back)
	if string(b) != string(b2) {
		t.Error("JSON does not round-trip")
	}
}
