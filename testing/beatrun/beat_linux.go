package beatrun

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

// Beat is a netprocbeat process writing its events to stdout.
type Beat struct {
	Cmd  *exec.Cmd
	PID  int
	Home string // path.home: netprocbeat.yml, data/, logs/

	stderr *LockedWriter
	errBuf *bytes.Buffer

	mu     sync.Mutex
	events []Event
	bad    []string // stdout lines that were not JSON events
	done   chan struct{}
}

// CommonConfig is appended to every generated configuration: console output
// of one JSON object per line, immediate publishing, nothing that needs a
// server.
const CommonConfig = `
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

// Start writes cfg (plus CommonConfig) to home/netprocbeat.yml, runs bin
// with home as path.home (so data, registry and logs stay in it), and waits
// until the beat reports that it runs. The beat is stopped with SIGINT when
// the test ends.
func Start(t testing.TB, bin, home, cfg string) *Beat {
	t.Helper()
	cfgPath := filepath.Join(home, "netprocbeat.yml")
	// The beat refuses configuration files writable by others (strict.perms).
	if err := os.WriteFile(cfgPath, []byte(cfg+CommonConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-e", "-c", cfgPath, "--path.home", home)
	cmd.Dir = home
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errBuf := &bytes.Buffer{}
	b := &Beat{Cmd: cmd, Home: home, errBuf: errBuf, stderr: &LockedWriter{W: errBuf}, done: make(chan struct{})}
	cmd.Stderr = b.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	b.PID = cmd.Process.Pid
	go b.read(stdout)
	t.Cleanup(func() { b.Stop(t) })

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(b.Logs(), "start running") {
		select {
		case <-b.done:
			t.Fatalf("netprocbeat exited before it started running:\n%s", b.LogTail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("netprocbeat did not start running within 30s:\n%s", b.LogTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return b
}

func (b *Beat) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev Event
		err := json.Unmarshal(line, &ev)
		b.mu.Lock()
		if err != nil {
			b.bad = append(b.bad, string(line))
		} else {
			b.events = append(b.events, ev)
		}
		b.mu.Unlock()
	}
	go func() { _ = b.Cmd.Wait(); close(b.done) }()
}

// Done is closed once the beat has exited.
func (b *Beat) Done() <-chan struct{} { return b.done }

// Logs returns everything the beat wrote to stderr so far.
func (b *Beat) Logs() string {
	b.stderr.mu.Lock()
	defer b.stderr.mu.Unlock()
	return b.errBuf.String()
}

// LogTail returns the last n lines of Logs.
func (b *Beat) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(b.Logs(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Snapshot returns the events received so far.
func (b *Beat) Snapshot() []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Event(nil), b.events...)
}

// WaitEvent waits for an event that satisfies match and fails the test
// after timeout.
func (b *Beat) WaitEvent(t testing.TB, timeout time.Duration, what string, match func(Event) bool) Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, ev := range b.Snapshot() {
			if match(ev) {
				return ev
			}
		}
		if time.Now().After(deadline) {
			evs := b.Snapshot()
			var sample []string
			for i, ev := range evs {
				if i >= 5 {
					break
				}
				sample = append(sample, ev.String())
			}
			t.Fatalf("no event %s within %v; %d events received, first ones:\n%s\nnetprocbeat log tail:\n%s",
				what, timeout, len(evs), strings.Join(sample, "\n"), b.LogTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitEvents waits until n events satisfy match or timeout passes, and
// returns those that do.
func (b *Beat) WaitEvents(n int, timeout time.Duration, match func(Event) bool) []Event {
	deadline := time.Now().Add(timeout)
	for {
		var got []Event
		for _, ev := range b.Snapshot() {
			if match(ev) {
				got = append(got, ev)
			}
		}
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop sends SIGINT and waits for a clean exit, killing the beat after 15s.
// It may be called more than once. Non-JSON lines on stdout fail the test.
func (b *Beat) Stop(t testing.TB) {
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.Cmd.Process.Signal(os.Interrupt)
	select {
	case <-b.done:
	case <-time.After(15 * time.Second):
		t.Errorf("netprocbeat did not stop within 15s of SIGINT; killing it")
		_ = b.Cmd.Process.Kill()
		<-b.done
	}
	if t.Failed() {
		t.Logf("netprocbeat log tail:\n%s", b.LogTail(30))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.bad) > 0 {
		t.Errorf("netprocbeat wrote %d non-JSON lines to stdout, first: %q", len(b.bad), b.bad[0])
	}
}

// FreePort returns a port that was free on host a moment ago ("tcp" or
// "udp").
func FreePort(t testing.TB, network, host string) int {
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

// NetInput is a tcp or udp input listening on host:port whose own
// processors turn log.source.address into source.ip/source.port and set the
// listening address as destination.ip/destination.port, as the shipped
// netprocbeat.yml does. IPv6 senders are "[::1]:port", hence the brackets.
func NetInput(typ, host string, port int) string {
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

// LockedWriter serialises writes to W.
type LockedWriter struct {
	mu sync.Mutex
	W  io.Writer
}

func (l *LockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.W.Write(p)
}
