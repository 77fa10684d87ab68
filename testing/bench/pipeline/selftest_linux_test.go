//go:build linux

package pipeline

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The measurement is opt-in; these tests show, always and in milliseconds,
// that its output checks fail on wrong output.

func writeLines(t *testing.T, lines ...string) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "out.ndjson")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{path}
}

func TestCheckOutput(t *testing.T) {
	own := map[netip.AddrPort]int{netip.MustParseAddrPort("127.15.1.1:40000"): 42}
	const (
		right    = `{"source":{"ip":"127.15.1.1","port":40000,"process":{"pid":42}},"destination":{"ip":"127.15.0.1","port":44000,"process":{"pid":42}},"process":{"pid":42}}`
		wrongPID = `{"source":{"ip":"127.15.1.1","port":40000,"process":{"pid":43}},"destination":{"ip":"127.15.0.1","port":44000,"process":{"pid":42}},"process":{"pid":42}}`
		noDst    = `{"source":{"ip":"127.15.1.1","port":40000,"process":{"pid":42}},"destination":{"ip":"127.15.0.1","port":44000},"process":{"pid":42}}`
		unknown  = `{"source":{"ip":"127.15.1.1","port":40001,"process":{"pid":42}},"destination":{"ip":"127.15.0.1","port":44000,"process":{"pid":42}},"process":{"pid":42}}`
		bare     = `{"source":{"ip":"127.15.1.1","port":40000},"destination":{"ip":"127.15.0.1","port":44000}}`
	)
	for _, tc := range []struct {
		name    string
		want    wantPIDs
		lines   []string
		wantErr string
	}{
		{"B right", liveOwners(own), []string{right, right}, ""},
		{"B wrong pid", liveOwners(own), []string{right, wrongPID}, "source.process.pid = 43, want 42"},
		{"B missing destination", liveOwners(own), []string{noDst}, "destination.process.pid is missing"},
		{"B tuple not in the fleet", liveOwners(own), []string{unknown}, "no connection of the fleet"},
		{"B bad JSON", liveOwners(own), []string{right, `{"source":`}, "line 2"},
		{"A right", noProcess, []string{bare}, ""},
		{"A with process fields", noProcess, []string{right}, "source.process is set"},
		{"C right", constantPIDs(42, 42, 42), []string{right}, ""},
		{"C wrong", constantPIDs(42, 42, 42), []string{wrongPID}, "want 42"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, first, err := checkOutput(writeLines(t, tc.lines...), tc.want)
			if n != int64(len(tc.lines)) {
				t.Errorf("counted %d lines, want %d", n, len(tc.lines))
			}
			if string(first) != tc.lines[0] {
				t.Errorf("first line %q, want %q", first, tc.lines[0])
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestSampleFields(t *testing.T) {
	b := `{"message":"m","source":{"ip":"127.15.1.1","port":40000,"process":{"pid":42,"name":"h","args":["h","x"]}},"destination":{"ip":"127.15.0.1","port":44000,"process":{"pid":42,"name":"h","args":["h","x"]}},"process":{"pid":42,"name":"h","args":["h","x"]}}`
	fields, pids, err := sampleFields([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	if pids != [3]int{42, 42, 42} {
		t.Errorf("pids %v, want 42s", pids)
	}
	if _, ok := lookup(fields, []string{"source", "ip"}); ok {
		t.Error("the sample carries source.ip; add_fields must write only the process fields")
	}
	if err := sameFields(fields, []byte(b)); err != nil {
		t.Errorf("B's own line differs from its sample: %v", err)
	}
	c := strings.Replace(b, `"args":["h","x"]}},"destination"`, `"args":["h"]}},"destination"`, 1)
	if c == b {
		t.Fatal("the test did not change the line")
	}
	if err := sameFields(fields, []byte(c)); err == nil || !strings.Contains(err.Error(), "[source process]") {
		t.Errorf("a changed source.process.args: error %v, want one naming [source process]", err)
	}
	if _, _, err := sampleFields([]byte(`{"source":{"ip":"127.15.1.1","port":1}}`)); err == nil {
		t.Error("a sample without process fields was accepted")
	}
	if _, err := processorsC(fields); err != nil {
		t.Error(err)
	}
}

func TestProcCPU(t *testing.T) {
	before, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn at least 50 ms of CPU: the count must move (10 ms ticks). The
	// deadline only bounds a broken reading; a loaded machine needs longer.
	for start := time.Now(); time.Since(start) < 20*time.Second; {
		if after, _ := procCPU(os.Getpid()); after-before >= 50*time.Millisecond {
			return
		}
		for i := 0; i < 1e6; i++ {
			_ = i * i
		}
	}
	after, _ := procCPU(os.Getpid())
	t.Errorf("CPU time moved %v while spinning for 20 s", after-before)
}

func TestParseTop(t *testing.T) {
	out := `File: netprocbeat
Type: cpu
Duration: 10.02s, Total samples = 9.76s (97.40%)
Showing nodes accounting for 9.76s, 100% of 9.76s total
      flat  flat%   sum%        cum   cum%
         0     0%     0%      3.93s 40.27%  github.com/elastic/beats/v7/filebeat/input/filestream.(*filestream).readFromSource
     0.01s   0.1%   0.1%      0.79s  8.09%  github.com/netprocbeat/netprocbeat/processor/add_network_process.(*processor).Run
`
	total, cum, err := parseTop(out)
	if err != nil {
		t.Fatal(err)
	}
	if total != 9760*time.Millisecond {
		t.Errorf("total %v, want 9.76s", total)
	}
	if got := cum["github.com/netprocbeat/netprocbeat/processor/add_network_process.(*processor).Run"]; got != 8.09 {
		t.Errorf("Run cum %v, want 8.09", got)
	}
	if _, _, err := parseTop("no profile here"); err == nil {
		t.Error("output without a total was accepted")
	}
}

func TestSameShape(t *testing.T) {
	b := `{"@timestamp":"t1","message":"m1","source":{"ip":"127.15.1.1","port":44000,"process":{"pid":42,"name":"h"}},"process":{"pid":42},"add_network_process":{"source":{"found_by":"socket_table"}}}`
	c := `{"@timestamp":"t2","message":"m2","source":{"ip":"127.15.1.2","port":44001,"process":{"pid":42,"name":"h"}},"process":{"pid":42},"add_network_process":{"source":{"found_by":"socket_table"}}}`
	if err := sameShape([]byte(b), []byte(c)); err != nil {
		t.Errorf("lines with the same fields (other values): %v", err)
	}
	// C without the processor's own object: what an add_fields copying
	// only the process objects would write.
	noObj := `{"@timestamp":"t2","message":"m2","source":{"ip":"127.15.1.2","port":44001,"process":{"pid":42,"name":"h"}},"process":{"pid":42}}`
	if err := sameShape([]byte(b), []byte(noObj)); err == nil || !strings.Contains(err.Error(), "add_network_process.source.found_by") {
		t.Errorf("C lacking add_network_process: error %v, want one naming add_network_process.source.found_by", err)
	}
	extra := strings.Replace(c, `"name":"h"}`, `"name":"h","x":1}`, 1)
	if err := sameShape([]byte(b), []byte(extra)); err == nil || !strings.Contains(err.Error(), "only in C's: [source.process.x]") {
		t.Errorf("C with an extra field: error %v, want one naming source.process.x", err)
	}
	// sampleFields carries the processor's object into C's add_fields.
	withDst := strings.Replace(b, `"process":{"pid":42},`, `"destination":{"process":{"pid":42}},"process":{"pid":42},`, 1)
	fields, _, err := sampleFields([]byte(withDst))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := lookup(fields, []string{"add_network_process", "source", "found_by"}); !ok || v != "socket_table" {
		t.Errorf("the sample's add_network_process.source.found_by = %v (%t), want socket_table", v, ok)
	}
}
