//go:build linux

package e2e

import (
	"encoding/json"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// ecsProcessTypes are the Elasticsearch types ECS gives the process fields
// that add_network_process writes (include_fields names). They are written
// out here, not read from the processor's fields.yml, so that a wrong type
// there fails this test.
var ecsProcessTypes = map[string]string{
	"pid":               "long",
	"name":              "keyword",
	"args":              "keyword",
	"executable":        "keyword",
	"start":             "date",
	"entity_id":         "keyword",
	"parent.pid":        "long",
	"parent.entity_id":  "keyword",
	"parent.name":       "keyword",
	"parent.executable": "keyword",
	"parent.start":      "date",
	"working_directory": "keyword",
	"user.id":           "keyword",
	"user.name":         "keyword",
}

// TestExportTemplateMapsProcessFields runs `netprocbeat export template` and
// checks that every field the processor writes at the default target is
// mapped with its ECS type, so none of them is left to dynamic mapping (which
// makes source.process.name a text field that terms aggregations reject).
func TestExportTemplateMapsProcessFields(t *testing.T) {
	cmd := exec.Command(beatBin, "export", "template", "-c", filepath.Join(moduleRoot, "netprocbeat.yml"), "--path.home", t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("netprocbeat export template: %v\n%s", err, stderrOf(err))
	}
	var tmpl struct {
		IndexPatterns []string `json:"index_patterns"`
		Template      struct {
			Mappings struct {
				Properties map[string]any `json:"properties"`
			} `json:"mappings"`
		} `json:"template"`
	}
	if err := json.Unmarshal(out, &tmpl); err != nil {
		t.Fatalf("export template output is not a JSON template: %v\n%.500s", err, out)
	}
	if len(tmpl.IndexPatterns) == 0 || !strings.HasPrefix(tmpl.IndexPatterns[0], "netprocbeat-") {
		t.Errorf("index_patterns = %v, want netprocbeat-*", tmpl.IndexPatterns)
	}
	props := tmpl.Template.Mappings.Properties

	want := map[string]string{"container.id": "keyword"}
	for _, side := range []string{"source.process", "destination.process", "process"} {
		for f, typ := range ecsProcessTypes {
			want[side+"."+f] = typ
		}
	}
	// How each side's process was found (include_fields found_by): the
	// processor's own fields, not ECS.
	for _, side := range []string{"source", "destination"} {
		want["add_network_process."+side+".found_by"] = "keyword"
		want["add_network_process."+side+".socket_closed"] = "boolean"
	}
	for _, field := range slices.Sorted(maps.Keys(want)) {
		typ := want[field]
		m := mappingOf(props, field)
		if m == nil {
			t.Errorf("%s: not in the template (it would be mapped dynamically)", field)
			continue
		}
		if got, _ := m["type"].(string); got != typ {
			t.Errorf("%s: mapped as %q, want %q (ECS)", field, got, typ)
		}
	}
	// Names are searchable as text too, as in ECS.
	for _, field := range []string{"source.process.name", "destination.process.name"} {
		multi, _ := mappingOf(props, field)["fields"].(map[string]any)
		if multi["text"] == nil {
			t.Errorf("%s: no text multi-field (ECS has %s.text)", field, field)
		}
	}
}

// mappingOf returns the mapping of a dotted field in a template's
// properties, or nil.
func mappingOf(props map[string]any, field string) map[string]any {
	cur := map[string]any{"properties": props}
	for _, k := range strings.Split(field, ".") {
		p, _ := cur["properties"].(map[string]any)
		next, _ := p[k].(map[string]any)
		if next == nil {
			return nil
		}
		cur = next
	}
	return cur
}

// stderrOf returns the standard error captured in an *exec.ExitError.
func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
