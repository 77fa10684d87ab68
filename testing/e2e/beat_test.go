//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// event is one output event, decoded from the console output's JSON lines.
type event map[string]any

// get returns the value at a dotted path, or nil.
func (e event) get(path string) any {
	var cur any = map[string]any(e)
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// num returns the number at path, or -1.
func (e event) num(path string) int {
	switch v := e.get(path).(type) {
	case float64:
		return int(v)
	case json.Number:
		n, err := v.Int64()
		if err == nil {
			return int(n)
		}
	}
	return -1
}

func (e event) str(path string) string {
	s, _ := e.get(path).(string)
	return s
}

func (e event) String() string {
	b, _ := json.Marshal(e)
	return string(b)
}

// runningBeat is a netprocbeat process writing its events to stdout.
type runningBeat struct {
	cmd    *exec.Cmd
	pid    int
	home   string
	stderr *lockedWriter
	errBuf *bytes.Buffer

	mu     sync.Mutex
	events []event
	bad    []string // stdout lines that were not JSON events
	done   chan struct{}
}

// commonConfig is appended to every generated configuration: console output
// of one JSON object per line, immediate publishing, nothing that needs a
// server.
const commonConfig = `
output.console:
  pretty: false
queue.mem:
  flush.timeout: 0s
setup.ilm.enabled: false
setup.template.enabled: false
setup.dashboards.enabled: false
monitoring.enabled: false
http.enabled: false
logging.level: info
logging.metrics.enabled: false
`

// startBeat writes cfg (plus commonConfig) to a temporary netprocbeat.yml,
// runs the binary with that directory as path.home (so data, registry and
// logs stay in it), and waits until the beat reports that it runs. The beat
// is stopped with SIGINT when the test ends.
func startBeat(t *testing.T, cfg string) *runningBeat {
	t.Helper()
	return startBeatIn(t, t.TempDir(), cfg)
}

// startBeatIn is startBeat with a given path.home.
func startBeatIn(t *testing.T, home, cfg string) *runningBeat {
	t.Helper()
	cfgPath := filepath.Join(home, "netprocbeat.yml")
	// The beat refuses configuration files writable by others (strict.perms).
	if err := os.WriteFile(cfgPath, []byte(cfg+commonConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(beatBin, "-e", "-c", cfgPath, "--path.home", home)
	cmd.Dir = home
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errBuf := &bytes.Buffer{}
	b := &runningBeat{cmd: cmd, home: home, errBuf: errBuf, stderr: &lockedWriter{w: errBuf}, done: make(chan struct{})}
	cmd.Stderr = b.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", beatBin, err)
	}
	b.pid = cmd.Process.Pid
	go b.read(stdout)
	t.Cleanup(func() { b.stop(t) })

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(b.logs(), "start running") {
		select {
		case <-b.done:
			t.Fatalf("netprocbeat exited before it started running:\n%s", b.logTail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("netprocbeat did not start running within 30s:\n%s", b.logTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return b
}

func (b *runningBeat) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		err := json.Unmarshal(line, &ev)
		b.mu.Lock()
		if err != nil {
			b.bad = append(b.bad, string(line))
		} else {
			b.events = append(b.events, ev)
		}
		b.mu.Unlock()
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
}

func (b *runningBeat) logs() string {
	b.stderr.mu.Lock()
	defer b.stderr.mu.Unlock()
	return b.errBuf.String()
}

func (b *runningBeat) logTail(n int) string {
	lines := strings.Split(strings.TrimRight(b.logs(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// snapshot returns the events received so far.
func (b *runningBeat) snapshot() []event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]event(nil), b.events...)
}

// waitEvent waits for an event that satisfies match.
func (b *runningBeat) waitEvent(t *testing.T, timeout time.Duration, what string, match func(event) bool) event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, ev := range b.snapshot() {
			if match(ev) {
				return ev
			}
		}
		if time.Now().After(deadline) {
			evs := b.snapshot()
			var sample []string
			for i, ev := range evs {
				if i >= 5 {
					break
				}
				sample = append(sample, ev.String())
			}
			t.Fatalf("no event %s within %v; %d events received, first ones:\n%s\nnetprocbeat log tail:\n%s",
				what, timeout, len(evs), strings.Join(sample, "\n"), b.logTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGINT and waits for a clean exit, killing the beat after 15s.
// It may be called more than once.
func (b *runningBeat) stop(t *testing.T) {
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Signal(os.Interrupt)
	select {
	case <-b.done:
	case <-time.After(15 * time.Second):
		t.Errorf("netprocbeat did not stop within 15s of SIGINT; killing it")
		_ = b.cmd.Process.Kill()
		<-b.done
	}
	if t.Failed() {
		t.Logf("netprocbeat log tail:\n%s", b.logTail(30))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.bad) > 0 {
		t.Errorf("netprocbeat wrote %d non-JSON lines to stdout, first: %q", len(b.bad), b.bad[0])
	}
}

// freePort returns a port that was free on host a moment ago.
func freePort(t *testing.T, network, host string) int {
	t.Helper()
	switch network {
	case "tcp":
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	default:
		c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
}

// netInput is a tcp or udp input listening on host:port whose own
// processors turn log.source.address into source.ip/source.port and set the
// listening address as destination.ip/destination.port, as the shipped
// netprocbeat.yml does. IPv6 senders are "[::1]:port", hence the brackets.
func netInput(typ, host string, port int) string {
	tokenizer := "%{source.ip}:%{source.port}"
	if strings.Contains(host, ":") {
		tokenizer = "[%{source.ip}]:%{source.port}"
	}
	return fmt.Sprintf(`
  - type: %[1]s
    id: e2e-%[1]s-%[3]d
    host: %[4]q
    processors:
      - dissect:
          field: log.source.address
          tokenizer: %[5]q
          target_prefix: ""
      - convert:
          fields:
            - {from: source.port, type: long}
      - add_fields:
          target: ""
          fields:
            destination.ip: %[2]q
            destination.port: %[3]d
            network.transport: %[1]s
`, typ, host, port, net.JoinHostPort(host, fmt.Sprint(port)), tokenizer)
}
