//go:build linux

package pipeline

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
)

// outProcess is the part of a *.process object the checks read.
type outProcess struct {
	PID *int `json:"pid"`
}

type outEndpoint struct {
	IP      string      `json:"ip"`
	Port    uint16      `json:"port"`
	Process *outProcess `json:"process"`
}

// outEvent is the part of an output line the checks read.
type outEvent struct {
	Source      outEndpoint `json:"source"`
	Destination outEndpoint `json:"destination"`
	Process     *outProcess `json:"process"`
}

// processFields are the fields add_network_process writes (with its
// default target), as C must write them too: the process objects,
// container and the processor's own object (add_network_process.<side>.
// found_by).
var processFields = [][]string{
	{"source", "process"},
	{"destination", "process"},
	{"process"},
	{"container"},
	{"add_network_process"},
}

// wantPIDs says, for one output event, which PID each of source.process,
// destination.process and process must hold (0: the field must be absent).
type wantPIDs func(ev *outEvent) (src, dst, proc int, err error)

// checkOutput reads every line of files, checks each event's process PIDs
// against want, and returns the number of lines and the first line. The
// error counts the wrong lines by kind, gives the range of their line
// numbers and quotes the first few.
func checkOutput(files []string, want wantPIDs) (lines int64, first []byte, err error) {
	var (
		examples      []error
		bad           int64
		kinds         = map[string]int64{}
		firstB, lastB int64
	)
	note := func(path string, kind string, err error, line []byte) {
		kinds[kind]++
		if len(examples) < 5 {
			examples = append(examples, fmt.Errorf("%s line %d: %v: %.300s", path, lines, err, line))
		}
	}
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return lines, first, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if first == nil {
				first = append([]byte(nil), line...)
			}
			lines++
			total := sum(kinds)
			var ev outEvent
			if err := json.Unmarshal(line, &ev); err != nil {
				note(path, "not a JSON event", err, line)
			} else if src, dst, proc, err := want(&ev); err != nil {
				note(path, "unexpected endpoint", err, line)
			} else {
				for _, c := range []struct {
					field string
					got   *outProcess
					want  int
				}{
					{"source.process", ev.Source.Process, src},
					{"destination.process", ev.Destination.Process, dst},
					{"process", ev.Process, proc},
				} {
					switch {
					case c.want == 0 && c.got != nil:
						note(path, c.field+" set", fmt.Errorf("%s is set, want none", c.field), line)
					case c.want != 0 && (c.got == nil || c.got.PID == nil):
						note(path, c.field+" missing", fmt.Errorf("%s.pid is missing, want %d", c.field, c.want), line)
					case c.want != 0 && *c.got.PID != c.want:
						note(path, c.field+" wrong", fmt.Errorf("%s.pid = %d, want %d", c.field, *c.got.PID, c.want), line)
					}
				}
			}
			if sum(kinds) > total {
				bad++
				if firstB == 0 {
					firstB = lines
				}
				lastB = lines
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return lines, first, fmt.Errorf("reading %s: %w", path, err)
		}
	}
	if bad == 0 {
		return lines, first, nil
	}
	var counts []string
	for k, n := range kinds {
		counts = append(counts, fmt.Sprintf("%s: %d", k, n))
	}
	slices.Sort(counts)
	return lines, first, fmt.Errorf("%d of %d lines wrong, lines %d to %d (%s); first ones:\n%w",
		bad, lines, firstB, lastB, strings.Join(counts, ", "), errors.Join(examples...))
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// noProcess is A's expectation: no process fields.
func noProcess(*outEvent) (int, int, int, error) { return 0, 0, 0, nil }

// liveOwners is B's expectation: both ends and process resolve to the
// holder of the connection named by source.
func liveOwners(own map[netip.AddrPort]int) wantPIDs {
	return func(ev *outEvent) (int, int, int, error) {
		ip, err := netip.ParseAddr(ev.Source.IP)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("source.ip %q: %v", ev.Source.IP, err)
		}
		pid, ok := own[netip.AddrPortFrom(ip, ev.Source.Port)]
		if !ok {
			return 0, 0, 0, fmt.Errorf("source %s:%d is no connection of the fleet", ev.Source.IP, ev.Source.Port)
		}
		return pid, pid, pid, nil
	}
}

// constantPIDs is C's expectation: the sample's PIDs on every event.
func constantPIDs(src, dst, proc int) wantPIDs {
	return func(*outEvent) (int, int, int, error) { return src, dst, proc, nil }
}

// sampleFields returns the process fields of one output line (B's), as the
// fields of an add_fields with target "", and their PIDs.
func sampleFields(line []byte) (map[string]any, [3]int, error) {
	var ev map[string]any
	if err := json.Unmarshal(line, &ev); err != nil {
		return nil, [3]int{}, err
	}
	fields := map[string]any{}
	for _, path := range processFields {
		v, ok := lookup(ev, path)
		if !ok {
			continue
		}
		m := fields
		for _, k := range path[:len(path)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[path[len(path)-1]] = v
	}
	var pids [3]int
	for i, path := range [][]string{{"source", "process", "pid"}, {"destination", "process", "pid"}, {"process", "pid"}} {
		v, ok := lookup(ev, path)
		n, isNum := v.(float64)
		if !ok || !isNum {
			return nil, pids, fmt.Errorf("sample event lacks %v: %.500s", path, line)
		}
		pids[i] = int(n)
	}
	return fields, pids, nil
}

// sameFields reports which process fields of line differ from the sample's.
func sameFields(sample map[string]any, line []byte) error {
	var ev map[string]any
	if err := json.Unmarshal(line, &ev); err != nil {
		return err
	}
	var errs []error
	for _, path := range processFields {
		want, wok := lookup(sample, path)
		got, gok := lookup(ev, path)
		if wok != gok || !reflect.DeepEqual(want, got) {
			errs = append(errs, fmt.Errorf("%v = %v, B's sample has %v", path, got, want))
		}
	}
	return errors.Join(errs...)
}

// sameShape reports the field paths one of B's and C's output lines has
// and the other lacks: C must carry exactly B's fields, so a field that B
// writes and processFields does not name (a new default field) fails the
// run instead of making C cheaper than it should be.
func sameShape(b, c []byte) error {
	paths := func(line []byte) (map[string]bool, error) {
		var ev map[string]any
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, err
		}
		out := map[string]bool{}
		var walk func(prefix string, v any)
		walk = func(prefix string, v any) {
			m, ok := v.(map[string]any)
			if !ok || len(m) == 0 {
				out[prefix] = true
				return
			}
			for k, fv := range m {
				walk(strings.TrimPrefix(prefix+"."+k, "."), fv)
			}
		}
		walk("", ev)
		return out, nil
	}
	pb, err := paths(b)
	if err != nil {
		return fmt.Errorf("B's line: %w", err)
	}
	pc, err := paths(c)
	if err != nil {
		return fmt.Errorf("C's line: %w", err)
	}
	var onlyB, onlyC []string
	for p := range pb {
		if !pc[p] {
			onlyB = append(onlyB, p)
		}
	}
	for p := range pc {
		if !pb[p] {
			onlyC = append(onlyC, p)
		}
	}
	if len(onlyB)+len(onlyC) == 0 {
		return nil
	}
	slices.Sort(onlyB)
	slices.Sort(onlyC)
	return fmt.Errorf("fields only in B's output: %v; only in C's: %v (add what B writes to processFields)", onlyB, onlyC)
}

func lookup(m map[string]any, path []string) (any, bool) {
	var cur any = m
	for _, k := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}
