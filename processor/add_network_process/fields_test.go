package add_network_process

import (
	"flag"
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var updateDocs = flag.Bool("update", false, "rewrite the field table in docs/add_network_process.md from _meta/fields.yml")

// fieldsFile is the subset of libbeat's fields.yml format the tests read.
type fieldsFile []struct {
	Key    string      `yaml:"key"`
	Fields []fieldsDef `yaml:"fields"`
}

type fieldsDef struct {
	Name        string      `yaml:"name"`
	Type        string      `yaml:"type"`
	Description string      `yaml:"description"`
	Fields      []fieldsDef `yaml:"fields"`
}

func parseFieldsYML(t *testing.T) map[string]fieldsDef {
	t.Helper()
	var f fieldsFile
	if err := yaml.Unmarshal([]byte(FieldsYML()), &f); err != nil {
		t.Fatalf("_meta/fields.yml: %v", err)
	}
	if len(f) != 1 || f[0].Key != "add_network_process" {
		t.Fatalf("_meta/fields.yml: want one key add_network_process, got %+v", f)
	}
	groups := map[string]fieldsDef{}
	for _, g := range f[0].Fields {
		if g.Type != "group" {
			t.Fatalf("_meta/fields.yml: top-level field %s has type %q, want group", g.Name, g.Type)
		}
		groups[g.Name] = g
	}
	return groups
}

// TestFieldsYMLDeclaresEveryWrittenField checks that every include_fields
// name the processor writes under source.process and destination.process is
// declared, with a type and a description, so the index template maps it.
func TestFieldsYMLDeclaresEveryWrittenField(t *testing.T) {
	groups := parseFieldsYML(t)
	var want []string
	for _, f := range includeFieldNames() {
		// container.id: ECS, mapped by the beat's ECS fields; found_by:
		// under add_network_process, checked below.
		if f != "container.id" && f != "found_by" {
			want = append(want, f)
		}
	}
	for _, side := range []string{"source.process", "destination.process"} {
		g, ok := groups[side]
		if !ok {
			t.Errorf("%s: not declared", side)
			continue
		}
		var got []string
		for _, f := range g.Fields {
			got = append(got, f.Name)
			if f.Type == "" || f.Description == "" {
				t.Errorf("%s.%s: needs a type and a description", side, f.Name)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s declares %v, want the processor's fields %v in that order", side, got, want)
		}
	}
	var prov []string
	for _, f := range groups[provenanceRoot].Fields {
		prov = append(prov, f.Name)
		if f.Type == "" || f.Description == "" {
			t.Errorf("%s.%s: needs a type and a description", provenanceRoot, f.Name)
		}
	}
	if want := []string{"source.found_by", "source.socket_closed", "destination.found_by", "destination.socket_closed"}; !slices.Equal(prov, want) {
		t.Errorf("%s declares %v, want %v", provenanceRoot, prov, want)
	}
	// ECS process.user.* is written with set_process but is missing from
	// libbeat's ECS fields.
	var user []string
	for _, f := range groups["process.user"].Fields {
		user = append(user, f.Name)
	}
	if !slices.Equal(user, []string{"id", "name"}) {
		t.Errorf("process.user declares %v, want [id name]", user)
	}
}

const (
	docsPath        = "../../docs/add_network_process.md"
	docsTableBegin  = "<!-- fields table: generated from processor/add_network_process/_meta/fields.yml; go test ./processor/add_network_process -run TestFieldsDocTable -update -->\n"
	docsTableEnding = "<!-- end of fields table -->\n"
)

// fieldsTable renders the source.process fields as the docs' Markdown table.
func fieldsTable(t *testing.T) string {
	var b strings.Builder
	b.WriteString("| Field | Type | Content |\n|---|---|---|\n")
	for _, f := range parseFieldsYML(t)["source.process"].Fields {
		b.WriteString("| `" + f.Name + "` | " + f.Type + " | " + strings.Join(strings.Fields(f.Description), " ") + " |\n")
	}
	return b.String()
}

// TestFieldsDocTable checks that the field table in
// docs/add_network_process.md is the one rendered from _meta/fields.yml;
// -update rewrites it.
func TestFieldsDocTable(t *testing.T) {
	raw, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	begin := strings.Index(doc, docsTableBegin)
	end := strings.Index(doc, docsTableEnding)
	if begin < 0 || end < begin {
		t.Fatalf("%s: no field table between %q and %q", docsPath, docsTableBegin, docsTableEnding)
	}
	begin += len(docsTableBegin)
	want := fieldsTable(t)
	if doc[begin:end] == want {
		return
	}
	if *updateDocs {
		if err := os.WriteFile(docsPath, []byte(doc[:begin]+want+doc[end:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s: the field table differs from _meta/fields.yml (run with -update):\ngot:\n%s\nwant:\n%s", docsPath, doc[begin:end], want)
}
