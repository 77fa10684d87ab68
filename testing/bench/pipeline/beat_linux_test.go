//go:build linux

package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// beatBinary returns the netprocbeat to measure: $NETPROCBEAT_BIN if set,
// otherwise a fresh go build of ./cmd/netprocbeat in a temporary directory
// (never build/, which may hold an older binary).
func beatBinary(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if bin := os.Getenv("NETPROCBEAT_BIN"); bin != "" {
		if !filepath.IsAbs(bin) {
			bin = filepath.Join(root, bin)
		}
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("NETPROCBEAT_BIN: %v", err)
		}
		return bin
	}
	bin := filepath.Join(t.TempDir(), "netprocbeat")
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/netprocbeat")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/netprocbeat in %s: %v\n%s", root, err, out)
	}
	t.Logf("built %s in %v", bin, time.Since(start).Round(time.Millisecond))
	return bin
}

// moduleRoot asks the go command for the main module's directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the netprocbeat module (go env GOMOD is %q)", gomod)
	}
	return filepath.Dir(gomod), nil
}

// beatConfig is the configuration of every run; processors is the
// variant's global processors section ("" for none).
func beatConfig(events, outDir, processors string, pprof bool) string {
	return fmt.Sprintf(`
netprocbeat.inputs:
  - type: filestream
    id: pipeline-bench
    paths: [%q]
    prospector.scanner.check_interval: 100ms
    parsers:
      - ndjson:
          target: ""
%s
output.file:
  path: %q
  filename: out
  # One file for the whole run: never rotate (the default 10 MiB would).
  rotate_every_kb: 4194304
  number_of_files: 2
  rotate_on_startup: false
http.enabled: true
http.host: %s
http.port: %d
http.pprof.enabled: %t
setup.ilm.enabled: false
setup.template.enabled: false
monitoring.enabled: false
logging.level: info
logging.metrics.enabled: false
`, events, processors, outDir, listenAddr, httpPort, pprof)
}

// tailEvents are the last events of a run, left out of its window: the
// memory queue (default settings: 3200 events, batches of at least 1600)
// holds the last partial batch for its flush.timeout (10 s) before the
// output gets it, a wait that says nothing about the cost of an event.
const tailEvents = 3200

// sample is one observation of the running beat.
type sample struct {
	at    time.Time
	cpu   time.Duration // the beat's user+system time so far
	acked int64         // events the output acknowledged
}

// run is one measured run of the beat.
type run struct {
	variant string
	events  int64
	// The window from the first sample with acked > 0 to the first with
	// all but tailEvents acked: startup (config, the processor's first
	// scan), the queue's wait for the last partial batch and shutdown are
	// outside it.
	window time.Duration
	cpu    time.Duration
	inWin  int64 // events acked inside the window
	// totalCPU is the whole process's CPU time, startup and shutdown
	// included (rusage of the exited child).
	totalCPU time.Duration
	outBytes int64
	outFiles []string
	log      string // the beat's stderr
	// hostTCP is /proc/net/sockstat's TCP line at the start: the size of
	// the table a first rescan reads (other tests' sockets count too).
	hostTCP string
}

func (r run) eventsPerSec() float64 { return float64(r.inWin) / r.window.Seconds() }
func (r run) cpuPerEvent() float64 {
	return float64(r.cpu.Microseconds()) / float64(r.inWin)
}
func (r run) totalCPUPerEvent() float64 {
	return float64(r.totalCPU.Microseconds()) / float64(r.events)
}

// onRunning, if set, is called once, in its own goroutine, when the first
// events have been acknowledged; the beat is stopped only after it returned.
type runOptions struct {
	pprof     bool
	onRunning func()
}

// runBeat runs the beat with cfg (home: a new directory under dir) until
// its output acknowledged want events, then stops it with SIGINT.
func runBeat(t *testing.T, bin, dir, variant, events, processors string, want int64, opt runOptions) run {
	t.Helper()
	hostTCP := sockstatTCP()
	home, err := os.MkdirTemp(dir, "home-"+variant+"-")
	if err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(home, "out")
	cfgPath := filepath.Join(home, "netprocbeat.yml")
	// The beat refuses configuration files writable by others (strict.perms).
	if err := os.WriteFile(cfgPath, []byte(beatConfig(events, outDir, processors, opt.pprof)), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(home, "stderr.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "-e", "-c", cfgPath, "--path.home", home)
	cmd.Dir = home
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fail := func(format string, args ...any) {
		t.Helper()
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("%s run: %s\nbeat log tail (%s):\n%s", variant, fmt.Sprintf(format, args...), logPath, tail(logPath, 30))
	}

	running := make(chan struct{})
	if opt.onRunning == nil {
		close(running)
	}
	var first, end, last sample
	lastProgress := time.Now()
	started, ended := false, false
	for {
		select {
		case err := <-exited:
			exited <- err
			fail("netprocbeat exited before its output acknowledged %d events: %v", want, err)
		default:
		}
		acked, err := ackedEvents()
		if err != nil {
			// Not listening yet, or busy: the stall check below bounds it.
			acked = last.acked
		}
		cpu, err := procCPU(cmd.Process.Pid)
		if err != nil {
			fail("reading its CPU time: %v", err)
		}
		s := sample{at: time.Now(), cpu: cpu, acked: acked}
		if s.acked > last.acked {
			lastProgress = s.at
		}
		if s.acked > 0 && !started {
			started, first = true, s
			if opt.onRunning != nil {
				go func() { defer close(running); opt.onRunning() }()
			}
		}
		if s.acked >= want-tailEvents && started && !ended {
			ended, end = true, s
		}
		last = s
		if s.acked >= want {
			break
		}
		// Generous: the machine is shared; this only catches a stuck beat.
		if time.Since(lastProgress) > 2*time.Minute {
			fail("no progress for 2 minutes at %d of %d events acknowledged", s.acked, want)
		}
		time.Sleep(100 * time.Millisecond)
	}

	<-running
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(time.Minute):
		fail("did not stop within a minute of SIGINT")
	}
	r := run{
		variant: variant,
		events:  last.acked,
		window:  end.at.Sub(first.at),
		cpu:     end.cpu - first.cpu,
		inWin:   end.acked - first.acked,
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.totalCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if r.inWin <= 0 || r.window <= 0 {
		fail("the window is empty (%d events acknowledged at its start, %d at its end); use more events", first.acked, end.acked)
	}
	r.log, r.hostTCP = logPath, hostTCP
	r.outFiles, _ = filepath.Glob(filepath.Join(outDir, "out*"))
	if len(r.outFiles) == 0 {
		fail("no output file in %s", outDir)
	}
	for _, f := range r.outFiles {
		if st, err := os.Stat(f); err == nil {
			r.outBytes += st.Size()
		}
	}
	return r
}

// ackedEvents reads libbeat.output.events.acked from the beat's /stats.
func ackedEvents() (int64, error) {
	body, err := httpGet("/stats", 2*time.Second)
	if err != nil {
		return 0, err
	}
	var st struct {
		Libbeat struct {
			Output struct {
				Events struct {
					Acked int64 `json:"acked"`
				} `json:"events"`
			} `json:"output"`
		} `json:"libbeat"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return 0, fmt.Errorf("decoding /stats: %w", err)
	}
	return st.Libbeat.Output.Events.Acked, nil
}

func httpGet(path string, timeout time.Duration) ([]byte, error) {
	c := http.Client{Timeout: timeout}
	resp, err := c.Get(fmt.Sprintf("http://%s:%d%s", listenAddr, httpPort, path))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procCPU is pid's user+system time (all its threads, live or exited) from
// /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("no ')' in /proc/pid/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat has %d fields after comm", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat utime/stime: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// grepLog returns the lines of the file at path that contain s, at most n
// (the last ones).
func grepLog(path, s string, n int) string {
	b, _ := os.ReadFile(path)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "\n")
}

// sockstatTCP returns the TCP line of /proc/net/sockstat ("inuse N ... tw N").
func sockstatTCP() string {
	b, _ := os.ReadFile("/proc/net/sockstat")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "TCP: "); ok {
			return rest
		}
	}
	return "?"
}
