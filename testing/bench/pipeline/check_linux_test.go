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
// default target), as C must write them too.
var processFields = [][]string{
	{"source", "process"},
	{"destination", "process"},
	{"process"},
	{"container"},
}

// wantPIDs says, for one output event, which PID each of source.process,
// destination.process and process must hold (0: the field must be absent).
type wantPIDs func(ev *outEvent) (src, dst, proc int, err error)

// checkOutput reads every line of files, checks each event's process PIDs
// against want, and returns the number of lines and the first line.
func checkOutput(files []string, want wantPIDs) (lines int64, first []byte, err error) {
	var errs []error
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
			if len(errs) >= 5 {
				continue
			}
			var ev outEvent
			if err := json.Unmarshal(line, &ev); err != nil {
				errs = append(errs, fmt.Errorf("%s line %d: %v: %.300s", path, lines, err, line))
				continue
			}
			src, dst, proc, err := want(&ev)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s line %d: %v: %.300s", path, lines, err, line))
				continue
			}
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
					errs = append(errs, fmt.Errorf("%s line %d: %s is set, want none: %.300s", path, lines, c.field, line))
				case c.want != 0 && (c.got == nil || c.got.PID == nil):
					errs = append(errs, fmt.Errorf("%s line %d: %s.pid is missing, want %d: %.300s", path, lines, c.field, c.want, line))
				case c.want != 0 && *c.got.PID != c.want:
					errs = append(errs, fmt.Errorf("%s line %d: %s.pid = %d, want %d: %.300s", path, lines, c.field, *c.got.PID, c.want, line))
				}
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return lines, first, fmt.Errorf("reading %s: %w", path, err)
		}
	}
	return lines, first, errors.Join(errs...)
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
