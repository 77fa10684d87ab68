// Package golden runs the add_network_process processor end to end against
// fake hosts and compares its output with checked-in golden events.
//
// Each directory under testdata/ is one case:
//
//	config.yml      the options under `add_network_process:`, as a user
//	                writes them; host_path is set to the fake host unless
//	                the case sets it
//	host.yml        the host, in testing/fakehost's format
//	input.ndjson    one event per line (see inputLine)
//	expected.ndjson one result per input line (see outputLine), or a single
//	                {"new_error": "..."} line when New must reject the config
//	sources.yml     optional: fake owner sources for the watcher (see
//	                sourcesFile): eBPF tracker records, answers of the exact
//	                sock_diag lookup, conntrack entries. With it the watcher
//	                is built here over the fake host with these sources
//	                (cache settings at their defaults) and handed to
//	                add_network_process.NewWithWatcher.
//
// `go test ./testing/golden -update` rewrites expected.ndjson from the
// processor's output. Each input line may also carry "check" assertions
// stating the rule the case is about; they are enforced even with -update,
// so regenerating the golden files cannot quietly bless a regression.
package golden

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/elastic/beats/v7/libbeat/beat"
	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/logp/logptest"
	"github.com/elastic/elastic-agent-libs/mapstr"

	"github.com/netprocbeat/netprocbeat/processor/add_network_process"
	"github.com/netprocbeat/netprocbeat/testing/fakehost"
)

var update = flag.Bool("update", false, "rewrite testdata/*/expected.ndjson from the processor's output")

// inputLine is one line of input.ndjson.
type inputLine struct {
	Timestamp string          `json:"@timestamp"`
	Fields    json.RawMessage `json:"fields"`
	// Numbers picks how JSON numbers in Fields reach the processor:
	// "" decodes them as float64 (encoding/json's default, as from
	// decode_json_fields), "json.Number" keeps json.Number, "int" turns
	// whole numbers into int64 (as most inputs set ports).
	Numbers string `json:"numbers"`
	// Check maps dotted output paths to the value the case's rule demands;
	// null demands that the path is absent. "error" names Run's error text.
	Check map[string]any `json:"check"`
	// CheckContains maps dotted output paths to a substring their string
	// value must contain (for error messages, whose wording may change).
	CheckContains map[string]string `json:"check_contains"`
}

// outputLine is one line of expected.ndjson.
type outputLine struct {
	Timestamp string `json:"@timestamp,omitempty"`
	Fields    any    `json:"fields"`
	// Error is the text of the error Run returned, if any.
	Error string `json:"error,omitempty"`
	// Dropped is set when Run returned a nil event.
	Dropped bool `json:"dropped,omitempty"`
	// NewError is the only line when New rejected the configuration.
	NewError string `json:"new_error,omitempty"`
}

func TestGolden(t *testing.T) {
	dirs, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		n++
		dir := filepath.Join("testdata", d.Name())
		t.Run(d.Name(), func(t *testing.T) {
			// Parallel is safe: every case keeps fakehost's default boot
			// time, which go-sysinfo caches once per process.
			t.Parallel()
			runCase(t, dir)
		})
	}
	if n == 0 {
		t.Fatal("no cases under testdata/")
	}
}

func runCase(t *testing.T, dir string) {
	host, err := fakehost.Load(filepath.Join(dir, "host.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if host.BootTime != fakehost.DefaultBootTime {
		t.Fatalf("host.yml sets boot_time %d: go-sysinfo caches one boot time per test binary, so every case must keep the default", host.BootTime)
	}
	root := t.TempDir()
	if err := host.Write(root); err != nil {
		t.Fatal(err)
	}

	cfgText, err := os.ReadFile(filepath.Join(dir, "config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// conf.NewConfigFrom parses YAML with the options a beat uses for its
	// own configuration files (dotted keys, ${VAR} expansion).
	cfg, err := conf.NewConfigFrom(string(cfgText))
	if err != nil {
		t.Fatalf("config.yml: %v", err)
	}
	if !cfg.HasField("host_path") {
		if err := cfg.SetString("host_path", -1, root); err != nil {
			t.Fatal(err)
		}
	}

	inputs := readInputs(t, filepath.Join(dir, "input.ndjson"))
	var got []outputLine
	var p beat.Processor
	if src, ok := loadSources(t, filepath.Join(dir, "sources.yml")); ok {
		p, err = add_network_process.NewWithWatcher(cfg, logptest.NewTestingLogger(t, ""), src.watcher(t, root))
	} else {
		p, err = add_network_process.New(cfg, logptest.NewTestingLogger(t, ""))
	}
	if err != nil {
		// A rejected configuration is a result too: record it with the
		// host path (a temporary directory) masked.
		got = []outputLine{{NewError: strings.ReplaceAll(err.Error(), root, "<host_path>")}}
	} else {
		for _, in := range inputs {
			got = append(got, run(t, p, in))
		}
		if c, ok := p.(interface{ Close() error }); ok {
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	}
	var gotJSON []string
	for _, g := range got {
		gotJSON = append(gotJSON, canonical(t, g))
	}

	// Rule assertions first: they hold whether or not -update is given.
	if got[0].NewError == "" {
		for i, in := range inputs {
			checkRules(t, i+1, in, gotJSON[i])
		}
	} else {
		for i, in := range inputs {
			if len(in.Check) > 0 || len(in.CheckContains) > 0 {
				t.Errorf("input line %d has checks but New failed: %s", i+1, got[0].NewError)
			}
		}
	}

	expectedPath := filepath.Join(dir, "expected.ndjson")
	if *update {
		if t.Failed() {
			// Rewriting now would record output that breaks the case's
			// own rule.
			t.Log("expected.ndjson left as it was: the rule checks above failed")
			return
		}
		if err := os.WriteFile(expectedPath, []byte(strings.Join(gotJSON, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want := readLines(t, expectedPath)
	if len(want) != len(gotJSON) {
		t.Errorf("expected.ndjson has %d lines, the run produced %d (run with -update to regenerate)", len(want), len(gotJSON))
	}
	for i := 0; i < len(want) && i < len(gotJSON); i++ {
		w := canonicalText(t, want[i])
		if w != gotJSON[i] {
			t.Errorf("line %d differs from expected.ndjson (- expected, + got):\n%s", i+1, diff(t, w, gotJSON[i]))
		}
	}
}

// run passes one input event through the processor.
func run(t *testing.T, p beat.Processor, in inputLine) outputLine {
	t.Helper()
	ev := &beat.Event{Fields: decodeFields(t, in)}
	if in.Timestamp != "" {
		ts, err := time.Parse(time.RFC3339Nano, in.Timestamp)
		if err != nil {
			t.Fatalf("@timestamp: %v", err)
		}
		ev.Timestamp = ts
	}
	out, err := p.Run(ev)
	var line outputLine
	if err != nil {
		line.Error = err.Error()
	}
	if out == nil {
		line.Dropped = true
		return line
	}
	if !out.Timestamp.IsZero() {
		line.Timestamp = out.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	line.Fields = normalise(out.Fields)
	return line
}

func decodeFields(t *testing.T, in inputLine) mapstr.M {
	t.Helper()
	if len(in.Fields) == 0 {
		return mapstr.M{}
	}
	dec := json.NewDecoder(bytes.NewReader(in.Fields))
	switch in.Numbers {
	case "":
	case "json.Number", "int":
		dec.UseNumber()
	default:
		t.Fatalf("numbers: %q is not \"\", \"json.Number\" or \"int\"", in.Numbers)
	}
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("fields: %v", err)
	}
	if in.Numbers == "int" {
		return mapstr.M(toInts(m).(map[string]any))
	}
	return mapstr.M(m)
}

// toInts turns whole json.Numbers into int64 and the rest into float64.
func toInts(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = toInts(e)
		}
	case []any:
		for i, e := range x {
			x[i] = toInts(e)
		}
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

// normalise makes fields JSON-comparable: times become RFC 3339 UTC
// strings whatever their zone, so a golden file does not depend on TZ.
func normalise(v any) any {
	switch x := v.(type) {
	case mapstr.M:
		return normalise(map[string]any(x))
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = normalise(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = normalise(e)
		}
		return s
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case *time.Time:
		if x == nil {
			return nil
		}
		return x.UTC().Format(time.RFC3339Nano)
	}
	// Named time types (such as libbeat's common.Time) convert to time.Time.
	rv := reflect.ValueOf(v)
	if rv.IsValid() && rv.Type() != reflect.TypeOf(time.Time{}) && rv.Type().ConvertibleTo(reflect.TypeOf(time.Time{})) {
		return rv.Convert(reflect.TypeOf(time.Time{})).Interface().(time.Time).UTC().Format(time.RFC3339Nano)
	}
	return v
}

// canonical renders v as JSON with sorted keys, numbers kept as written.
func canonical(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshalling %#v: %v", v, err)
	}
	return canonicalText(t, string(b))
}

func canonicalText(t *testing.T, s string) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("parsing %q: %v", s, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readInputs(t *testing.T, path string) []inputLine {
	t.Helper()
	var out []inputLine
	for i, l := range readLines(t, path) {
		var in inputLine
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			t.Fatalf("%s:%d: %v", path, i+1, err)
		}
		out = append(out, in)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no events", path)
	}
	return out
}

// readLines returns the non-blank lines of an ndjson file.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// checkRules enforces an input line's check and check_contains against the
// canonical output. Paths are dotted paths into "fields"; "error" is Run's
// error.
func checkRules(t *testing.T, lineNo int, in inputLine, gotJSON string) {
	t.Helper()
	flat := flatten(t, gotJSON)
	lookup := func(path string) (string, bool) {
		if path == "error" {
			v, ok := flat["error"]
			return v, ok
		}
		v, ok := flat["fields."+path]
		if !ok {
			// A whole subtree: present if any leaf is under it.
			for k := range flat {
				if strings.HasPrefix(k, "fields."+path+".") {
					return "{...}", true
				}
			}
		}
		return v, ok
	}
	paths := make([]string, 0, len(in.Check))
	for p := range in.Check {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, path := range paths {
		want := in.Check[path]
		got, ok := lookup(path)
		if want == nil {
			if ok {
				t.Errorf("input line %d: rule wants %s absent, got %s", lineNo, path, got)
			}
			continue
		}
		wantJSON := canonical(t, want)
		if !ok {
			t.Errorf("input line %d: rule wants %s = %s, but it is absent", lineNo, path, wantJSON)
		} else if got != wantJSON {
			t.Errorf("input line %d: rule wants %s = %s, got %s", lineNo, path, wantJSON, got)
		}
	}
	for path, sub := range in.CheckContains {
		got, ok := lookup(path)
		var s string
		if ok {
			if err := json.Unmarshal([]byte(got), &s); err != nil {
				s = got
			}
		}
		if !ok || !strings.Contains(s, sub) {
			t.Errorf("input line %d: rule wants %s to contain %q, got %q (present %v)", lineNo, path, sub, s, ok)
		}
	}
}

// flatten maps each leaf of a JSON document to its dotted path. Arrays are
// leaves, so a changed argument list shows as one line.
func flatten(t *testing.T, doc string) map[string]string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if m, ok := v.(map[string]any); ok && len(m) > 0 {
			for k, e := range m {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				walk(p, e)
			}
			return
		}
		b, _ := json.Marshal(v)
		out[prefix] = string(b)
	}
	walk("", v)
	return out
}

// diff lists the leaves that differ between two canonical documents.
func diff(t *testing.T, want, got string) string {
	t.Helper()
	w, g := flatten(t, want), flatten(t, got)
	keys := map[string]bool{}
	for k := range w {
		keys[k] = true
	}
	for k := range g {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	var b strings.Builder
	for _, k := range sorted {
		wv, wok := w[k]
		gv, gok := g[k]
		if wok && gok && wv == gv {
			continue
		}
		if wok {
			fmt.Fprintf(&b, "  - %s: %s\n", k, wv)
		}
		if gok {
			fmt.Fprintf(&b, "  + %s: %s\n", k, gv)
		}
	}
	return b.String()
}
