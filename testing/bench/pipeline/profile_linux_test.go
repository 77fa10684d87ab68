//go:build linux

package pipeline

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// stages are the parts of a B event's CPU the profile reports: the
// cumulative share of the function that is each stage's entry point.
var stages = []struct{ name, fn string }{
	{"input goroutine: filestream read, parse, processors, queue", "filestream.(*filestream).readFromSource"},
	{"↳ NDJSON read + parse", "readjson.(*JSONParser).Next"},
	{"↳ processors + queue (pipeline client Publish)", "pipeline.(*client).Publish"},
	{"↳↳ add_network_process Run", "add_network_process.(*processor).Run"},
	{"↳↳↳ lookups (internal/procs Watcher)", "procs.(*Watcher).LookupInContainerVia"},
	{"↳↳↳ writing the process fields (processor write)", "add_network_process.(*processor).write"},
	{"↳↳↳ writing found_by (processor writeVia)", "add_network_process.(*processor).writeVia"},
	{"output goroutine: file output Publish", "fileout.(*fileOutput).Publish"},
	{"↳ JSON encoding", "codec/json.(*Encoder).Encode"},
	{"↳ file write", "file.(*Rotator).Write"},
	{"tracker ring buffer (every connection on the host)", "tracker.(*Tracker).readLoop"},
	{"GC (background workers)", "runtime.gcBgMarkWorker"},
}

// runStage is the stage whose callees the report lists.
const runStage = "add_network_process.(*processor).Run"

type profileResult struct {
	err     error
	secs    int
	events  int64         // acknowledged during the profile
	total   time.Duration // CPU samples
	cum     map[string]float64
	focused string // top of the stacks through Run
}

// takeProfile fetches a CPU profile of secs seconds from the running beat
// into path and reads it with go tool pprof.
func takeProfile(path string, secs int) (p profileResult) {
	p.secs = secs
	before, err := ackedEvents()
	if err != nil {
		p.err = err
		return p
	}
	body, err := httpGet(fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), time.Duration(secs+60)*time.Second)
	if err != nil {
		p.err = err
		return p
	}
	after, err := ackedEvents()
	if err != nil {
		p.err = err
		return p
	}
	p.events = after - before
	if err := os.WriteFile(path, body, 0o644); err != nil {
		p.err = err
		return p
	}
	out, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=100000", path).CombinedOutput()
	if err != nil {
		p.err = fmt.Errorf("go tool pprof -top %s: %v\n%s", path, err, out)
		return p
	}
	p.total, p.cum, err = parseTop(string(out))
	if err != nil {
		p.err = err
		return p
	}
	out, err = exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=25",
		"-focus", regexp.QuoteMeta(runStage), "-show_from", regexp.QuoteMeta(runStage), path).CombinedOutput()
	if err != nil {
		p.err = fmt.Errorf("go tool pprof -focus %s: %v\n%s", path, err, out)
		return p
	}
	p.focused = string(out)
	return p
}

var totalRe = regexp.MustCompile(`Total samples = ([0-9.]+[a-zµ]*s)`)

// parseTop reads go tool pprof -top -cum output: the total CPU and, per
// function, its cumulative share of it.
func parseTop(out string) (time.Duration, map[string]float64, error) {
	m := totalRe.FindStringSubmatch(out)
	if m == nil {
		return 0, nil, fmt.Errorf("no total in pprof output:\n%s", out)
	}
	total, err := time.ParseDuration(m[1])
	if err != nil {
		return 0, nil, fmt.Errorf("pprof total %q: %v", m[1], err)
	}
	cum := map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		// flat flat% sum% cum cum% name
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[4], "%") {
			continue
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(f[4], "%"), 64)
		if err != nil {
			continue
		}
		cum[strings.Join(f[5:], " ")] = pct
	}
	return total, cum, nil
}

func (p profileResult) report() string {
	var b strings.Builder
	perEvent := float64(p.total.Microseconds()) / float64(p.events)
	fmt.Fprintf(&b, "\nCPU profile of one more B run: %ds, %v of CPU samples, %d events: %.2f µs CPU/event\n\n", p.secs, p.total, p.events, perEvent)
	fmt.Fprintln(&b, "| stage (cumulative; ↳: part of the stage above it) | share of the beat's CPU | µs/event |")
	fmt.Fprintln(&b, "|---|---:|---:|")
	for _, s := range stages {
		pct, ok := 0.0, false
		for name, v := range p.cum {
			if strings.HasSuffix(name, s.fn) && v > pct {
				pct, ok = v, true
			}
		}
		if !ok {
			fmt.Fprintf(&b, "| %s | not in the profile | |\n", s.name)
			continue
		}
		fmt.Fprintf(&b, "| %s | %.1f %% | %.2f |\n", s.name, pct, pct/100*perEvent)
	}
	fmt.Fprintf(&b, "\nfunctions under %s (cumulative):\n%s", runStage, p.focused)
	return b.String()
}
