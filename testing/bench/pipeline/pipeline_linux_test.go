//go:build linux

package pipeline

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/testing/bench"
	"github.com/netprocbeat/netprocbeat/testing/helperproc"
)

func init() { helperproc.Main() }

const (
	// envEnable opts in to the measurement.
	envEnable = "NETPROCBEAT_BENCH_PIPELINE"
	// envEvents, envRounds and envProfile override the defaults below.
	envEvents = "NETPROCBEAT_BENCH_PIPELINE_EVENTS"
	envRounds = "NETPROCBEAT_BENCH_PIPELINE_ROUNDS"
	// envProfile: "0" skips the profiled B run; a file name keeps its
	// profile there (for go tool pprof).
	envProfile = "NETPROCBEAT_BENCH_PIPELINE_PROFILE"
	// envOptions: add_network_process options for B as a YAML flow map,
	// e.g. '{include_fields: [pid, name]}' (keep pid: the checks read it).
	envOptions = "NETPROCBEAT_BENCH_PIPELINE_OPTIONS"

	defaultEvents = 200_000
	defaultRounds = 3
	// The fleet: connections spread over holder processes. Every event
	// names one of them, round robin, so the processor answers from its
	// caches once each was looked up, as on a host with a steady set of
	// connections.
	holders     = 8
	connections = 1000
	// httpPort is the beat's monitoring endpoint, on listenAddr.
	httpPort = 44900
)

// placement keeps the fleet in this benchmark's own loopback range and
// ports, so that no other test's sockets share a tuple with it: holder h
// listens on 127.15.0.<h+1>:44000, client ends are 127.15.1.<k>:44000-44099
// (ports under httpPort).
var placement = bench.Placement{Net: [2]byte{127, 15}, PortBase: 44000, Ports: 100}

// listenAddr is the first holder's listener address; the beat's HTTP
// endpoint listens there too, on httpPort.
var listenAddr = netip.AddrFrom4([4]byte{127, 15, 0, 1})

// startFleet starts procs holders holding conns connections in all (each
// holder: a listener, a UDP socket, its share of the connections, both
// ends), stopped at the end of the test.
func startFleet(t *testing.T, procs, conns int) []bench.Conn {
	t.Helper()
	per := (conns + procs - 1) / procs
	f := bench.StartPlaced(t, procs, procs*(2+2*per), placement)
	if len(f.Conns) < conns {
		t.Fatalf("the fleet holds %d connections, want %d", len(f.Conns), conns)
	}
	return f.Conns
}

// The variants' processors sections. B's options are the defaults unless
// envOptions gives others; C's is made from B's first output.
const processorsA = ""

func processorsB(options string) string {
	return "processors:\n  - add_network_process: " + options + "\n"
}

func processorsC(fields map[string]any) (string, error) {
	// JSON is YAML: the sample's values keep their types (numbers, lists).
	b, err := json.Marshal(map[string]any{"target": "", "fields": fields})
	if err != nil {
		return "", err
	}
	return "processors:\n  - add_fields: " + string(b) + "\n", nil
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// TestPipelineCost measures netprocbeat reading an NDJSON file to
// output.file without the processor (A), with add_network_process (B) and
// with add_fields writing B's fields (C), in interleaved rounds, and prints
// the table docs/benchmarks.md shows. It asserts only that every output is
// right.
func TestPipelineCost(t *testing.T) {
	if os.Getenv(envEnable) != "1" {
		t.Skipf("set %s=1 to run the pipeline measurement (builds netprocbeat, ~10 runs of %d events)", envEnable, defaultEvents)
	}
	n := envInt(t, envEvents, defaultEvents)
	rounds := envInt(t, envRounds, defaultRounds)
	profile := os.Getenv(envProfile) != "0"
	options := "~"
	if v := os.Getenv(envOptions); v != "" {
		options = v
	}
	procsB := processorsB(options)
	profileOut := filepath.Join(t.TempDir(), "b.pprof")
	if v := os.Getenv(envProfile); v != "" && v != "0" && v != "1" {
		abs, err := filepath.Abs(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", envProfile, v, err)
		}
		profileOut = abs
	}

	bin := beatBinary(t)
	conns := startFleet(t, holders, connections)
	own := owners(conns)
	dir := t.TempDir()
	events := filepath.Join(dir, "events.ndjson")
	if err := writeEvents(events, conns, n); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(events)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("pipeline: %d events (%d bytes/line) naming %d live loopback connections held by %d processes; %d rounds A B C; B: add_network_process: %s\n",
		n, st.Size()/int64(n), len(conns), holders, rounds, options)

	var (
		sample     map[string]any
		sampleLine []byte
		samplePIDs [3]int
		procsC     string
		results    = map[string][]run{}
	)
	measure := func(variant, processors string, want wantPIDs, opt runOptions) run {
		r := runBeat(t, bin, dir, variant, events, processors, int64(n), opt)
		lines, first, err := checkOutput(r.outFiles, want)
		if err != nil {
			t.Fatalf("%s: wrong output: %v\nhost TCP sockets at the start (/proc/net/sockstat): %s\nthe beat's log lines about add_network_process (%s):\n%s",
				variant, err, r.hostTCP, r.log, grepLog(r.log, "add_network_process", 30))
		}
		if lines != int64(n) {
			t.Fatalf("%s: output has %d lines, want %d (one per input line)", variant, lines, n)
		}
		switch variant {
		case "B":
			if sample == nil {
				if sample, samplePIDs, err = sampleFields(first); err != nil {
					t.Fatal(err)
				}
				sampleLine = first
				if procsC, err = processorsC(sample); err != nil {
					t.Fatal(err)
				}
			}
		case "C":
			if err := sameFields(sample, first); err != nil {
				t.Fatalf("C's fields are not B's: %v", err)
			}
			if err := sameShape(sampleLine, first); err != nil {
				t.Fatalf("C's fields are not B's: %v", err)
			}
		}
		// The output is large (~0.5 GB for B); keep only the numbers.
		os.RemoveAll(filepath.Dir(filepath.Dir(r.outFiles[0])))
		fmt.Printf("  %s  %8.0f events/s  %6.2f µs CPU/event in the window (%v wall, %v CPU, %d events)  %6.2f µs CPU/event whole run  %5d bytes/event  host TCP: %s\n",
			variant, r.eventsPerSec(), r.cpuPerEvent(), r.window.Round(time.Millisecond), r.cpu, r.inWin, r.totalCPUPerEvent(), r.outBytes/r.events, r.hostTCP)
		return r
	}
	for round := 1; round <= rounds; round++ {
		fmt.Printf("round %d\n", round)
		results["A"] = append(results["A"], measure("A", processorsA, noProcess, runOptions{}))
		results["B"] = append(results["B"], measure("B", procsB, liveOwners(own), runOptions{}))
		results["C"] = append(results["C"], measure("C", procsC,
			constantPIDs(samplePIDs[0], samplePIDs[1], samplePIDs[2]), runOptions{}))
	}
	fmt.Print(table(results, rounds, options))
	fmt.Print(fieldSizes(sample, results))

	if profile {
		// Half of B's shortest window, so that the profile most likely
		// covers only the stream of events (CPU and events are counted over
		// the same period either way). runBeat waits for it.
		shortest := slices.MinFunc(results["B"], func(x, y run) int { return int(x.window - y.window) })
		secs := max(1, int(shortest.window.Seconds()/2))
		var prof profileResult
		measure("B", procsB, liveOwners(own), runOptions{pprof: true, onRunning: func() {
			prof = takeProfile(profileOut, secs)
		}})
		if prof.err != nil {
			t.Fatalf("profile of B: %v", prof.err)
		}
		fmt.Print(prof.report())
		fmt.Printf("profile: %s\n", profileOut)
	}
}

func median(rs []run, f func(run) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return medianOf(v)
}

func medianOf(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// ratios returns, per round, f(x)/f(y).
func ratios(xs, ys []run, f func(run) float64) []float64 {
	out := make([]float64, len(xs))
	for i := range xs {
		out[i] = f(xs[i]) / f(ys[i])
	}
	return out
}

func fmtRatios(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return fmt.Sprintf("%.2f (rounds: %s)", medianOf(v), strings.Join(s, " "))
}

// table is the result in docs/benchmarks.md's form: medians per variant,
// then ratios (the median of the per-round ratios: the runs of one round
// share the machine's load).
func table(res map[string][]run, rounds int, options string) string {
	evps := func(r run) float64 { return r.eventsPerSec() }
	cpu := func(r run) float64 { return r.cpuPerEvent() }
	var b strings.Builder
	fmt.Fprintf(&b, "\nmedians of %d interleaved rounds:\n\n", rounds)
	fmt.Fprintln(&b, "| run | events/s | CPU µs/event | CPU µs/event, whole run | output bytes/event |")
	fmt.Fprintln(&b, "|---|---:|---:|---:|---:|")
	for _, v := range []struct{ key, name string }{
		{"A", "A: no processor"},
		{"B", "B: add_network_process: " + options},
		{"C", "C: add_fields with B's fields"},
	} {
		rs := res[v.key]
		fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.2f | %.0f |\n", v.name, median(rs, evps), median(rs, cpu),
			median(rs, func(r run) float64 { return r.totalCPUPerEvent() }),
			median(rs, func(r run) float64 { return float64(r.outBytes) / float64(r.events) }))
	}
	inv := func(r run) float64 { return 1 / r.cpuPerEvent() }
	fmt.Fprintln(&b)
	fmt.Fprintf(&b, "throughput B/A: %s\n", fmtRatios(ratios(res["B"], res["A"], evps)))
	fmt.Fprintf(&b, "throughput B/C: %s\n", fmtRatios(ratios(res["B"], res["C"], evps)))
	fmt.Fprintf(&b, "throughput C/A: %s\n", fmtRatios(ratios(res["C"], res["A"], evps)))
	fmt.Fprintf(&b, "events per CPU-second B/A: %s\n", fmtRatios(ratios(res["B"], res["A"], inv)))
	fmt.Fprintf(&b, "events per CPU-second B/C: %s\n", fmtRatios(ratios(res["B"], res["C"], inv)))
	fmt.Fprintf(&b, "events per CPU-second C/A: %s\n", fmtRatios(ratios(res["C"], res["A"], inv)))
	fmt.Fprintf(&b, "processor's own CPU (B-C): %.2f µs/event\n", median(res["B"], cpu)-median(res["C"], cpu))
	return b.String()
}

// fieldSizes lists the output bytes each process field of B's sample adds
// to an event (over source.process, destination.process and process), and
// what carrying all of them cost C against A. The cost is not linear in
// bytes (every field and object has its own encoding cost), so it is not
// divided among the fields: measure a field set with envOptions.
func fieldSizes(sample map[string]any, res map[string][]run) string {
	cpu := func(r run) float64 { return r.cpuPerEvent() }
	size := func(r run) float64 { return float64(r.outBytes) / float64(r.events) }
	dCPU := median(res["C"], cpu) - median(res["A"], cpu)
	dBytes := median(res["C"], size) - median(res["A"], size)

	bytesOf := map[string]int{}
	var keys []string
	for _, path := range processFields {
		v, ok := lookup(sample, path)
		m, isMap := v.(map[string]any)
		if !ok || !isMap {
			continue
		}
		if path[0] == "add_network_process" {
			// Its keys are sides, not process fields: one row for all.
			const k = "add_network_process (found_by)"
			b, _ := json.Marshal(m)
			keys = append(keys, k)
			bytesOf[k] = len(path[0]) + 4 + len(b)
			continue
		}
		for k, fv := range m {
			b, _ := json.Marshal(fv)
			if _, seen := bytesOf[k]; !seen {
				keys = append(keys, k)
			}
			bytesOf[k] += len(k) + 4 + len(b) // "k":v,
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "\ncarrying B's fields (C against A): %.0f more output bytes/event, %.2f µs more CPU/event\n\n", dBytes, dCPU)
	fmt.Fprintln(&b, "| field (summed over source.process, destination.process, process; add_network_process: its whole object) | output bytes/event |")
	fmt.Fprintln(&b, "|---|---:|")
	for _, k := range keys {
		fmt.Fprintf(&b, "| %s | %d |\n", k, bytesOf[k])
	}
	return b.String()
}
