//go:build linux

package add_network_process

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/elastic/beats/v7/libbeat/beat"
	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/logp/logptest"
	"github.com/elastic/elastic-agent-libs/mapstr"
	"github.com/elastic/elastic-agent-libs/monitoring"

	"github.com/netprocbeat/netprocbeat/internal/procs"
	"github.com/netprocbeat/netprocbeat/testing/helperproc"
)

// runHelper starts cmd (this test binary in a testing/helperproc role),
// returns the address it reports once its socket is open, and stops it (by
// closing its stdin) at test cleanup. The helpers are started by the init
// function in bench_test.go.
func runHelper(t *testing.T, cmd *exec.Cmd, what string) string {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("helper failed to %s: %q %v", what, line, err)
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "ready "))
}

// startClient runs a helper process that dials addr and returns its PID and
// local address; the process exits at test cleanup.
func startClient(t *testing.T, network, addr string) (int, *net.UDPAddr) {
	t.Helper()
	cmd := helperproc.Command("dial", network, addr)
	cmd.Stderr = os.Stderr
	line := runHelper(t, cmd, "dial "+network+" "+addr)
	local, err := net.ResolveUDPAddr("udp", line)
	if err != nil {
		t.Fatalf("helper printed %q: %v", line, err)
	}
	return cmd.Process.Pid, local
}

func newFromYAML(t *testing.T, yml string) beat.Processor {
	t.Helper()
	c, err := conf.NewConfigFrom(yml)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(c, logptest.NewTestingLogger(t, ""))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.(interface{ Close() error }).Close() })
	return p
}

func event(srcIP string, srcPort int, dstIP string, dstPort int, transport string) *beat.Event {
	f := mapstr.M{
		"source":      mapstr.M{"ip": srcIP, "port": srcPort},
		"destination": mapstr.M{"ip": dstIP, "port": dstPort},
	}
	if transport != "" {
		f["network"] = mapstr.M{"transport": transport}
	}
	return &beat.Event{Timestamp: time.Now(), Fields: f}
}

func getInt(t *testing.T, ev *beat.Event, key string) int {
	t.Helper()
	v, err := ev.GetValue(key)
	if err != nil {
		t.Fatalf("%s missing: %v\nevent: %s", key, err, ev.Fields.StringToPrint())
	}
	n, ok := v.(int)
	if !ok {
		t.Fatalf("%s = %#v, want int", key, v)
	}
	return n
}

func TestRealSocketsResolveToTheirProcesses(t *testing.T) {
	self := os.Getpid()
	exe, _ := os.Executable()
	cases := []struct {
		name, network, listen, transport string
	}{
		{"tcp4", "tcp4", "127.0.0.1:0", "tcp"},
		{"tcp6", "tcp6", "[::1]:0", "tcp"},
		{"udp4", "udp4", "127.0.0.1:0", "udp"},
		{"udp6", "udp6", "[::1]:0", "udp"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var server net.Addr
			if strings.HasPrefix(tc.network, "tcp") {
				l, err := net.Listen(tc.network, tc.listen)
				if err != nil {
					t.Skipf("cannot listen on %s: %v", tc.listen, err)
				}
				defer l.Close()
				go func() {
					for {
						c, err := l.Accept()
						if err != nil {
							return
						}
						defer c.Close()
					}
				}()
				server = l.Addr()
			} else {
				pc, err := net.ListenPacket(tc.network, tc.listen)
				if err != nil {
					t.Skipf("cannot listen on %s: %v", tc.listen, err)
				}
				defer pc.Close()
				server = pc.LocalAddr()
			}
			pid, client := startClient(t, tc.network, server.String())
			srvIP, srvPortS, _ := net.SplitHostPort(server.String())
			srvPort, _ := strconv.Atoi(srvPortS)

			p := newFromYAML(t, "include_fields: [pid, name, executable, args, parent.pid]\n")
			ev, err := p.Run(event(client.IP.String(), client.Port, srvIP, srvPort, tc.transport))
			if err != nil {
				t.Fatal(err)
			}
			if got := getInt(t, ev, "source.process.pid"); got != pid {
				t.Errorf("source.process.pid = %d, want client helper %d", got, pid)
			}
			if got := getInt(t, ev, "destination.process.pid"); got != self {
				t.Errorf("destination.process.pid = %d, want the test process %d", got, self)
			}
			if got := getInt(t, ev, "process.pid"); got != self {
				t.Errorf("process.pid = %d, want destination side %d", got, self)
			}
			if got := getInt(t, ev, "source.process.parent.pid"); got != self {
				t.Errorf("source.process.parent.pid = %d, want %d", got, self)
			}
			if got, _ := ev.GetValue("source.process.executable"); got != exe {
				t.Errorf("source.process.executable = %v, want %s", got, exe)
			}
			if msg, err := ev.GetValue("error.message"); err == nil {
				t.Errorf("unexpected error.message %v", msg)
			}
		})
	}
}

func TestRemoteEndpointIsNotLookedUp(t *testing.T) {
	p := newFromYAML(t, "{}")
	// 192.0.2.0/24 is TEST-NET-1: never an address of this host.
	ev, err := p.Run(event("192.0.2.10", 40000, "192.0.2.11", 80, "tcp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"source.process", "destination.process", "process", "error"} {
		if ok, _ := ev.Fields.HasKey(k); ok {
			t.Errorf("%s written for a remote-only event: %s", k, ev.Fields.StringToPrint())
		}
	}
	st := p.(*processor).watcher.Stats()
	if st.NotLocal < 2 {
		t.Errorf("NotLocal = %d, want 2 lookups answered without a scan", st.NotLocal)
	}
}

func TestMetricsArePublished(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	p := newFromYAML(t, "{}")
	if _, err := p.Run(event("192.0.2.1", 5000, "127.0.0.1", port, "tcp")); err != nil {
		t.Fatal(err)
	}
	snap := monitoring.CollectFlatSnapshot(monitoring.Default, monitoring.Full, false)
	if got := snap.Ints["add_network_process.hits"]; got < 1 {
		t.Errorf("add_network_process.hits = %d, want ≥ 1 after a resolved lookup; snapshot: %v", got, snap.Ints)
	}
	if got := snap.Ints["add_network_process.rescans"]; got < 1 {
		t.Errorf("add_network_process.rescans = %d, want ≥ 1", got)
	}
	if got := snap.Ints["add_network_process.cache.sockets"]; got < 1 {
		t.Errorf("add_network_process.cache.sockets = %d, want the listener counted", got)
	}
	for _, k := range []string{"learned_hits", "feed_misses", "event_driven", "cache.learned"} {
		if _, ok := snap.Ints["add_network_process."+k]; !ok {
			t.Errorf("add_network_process.%s is not published", k)
		}
	}
}

func TestProcessorsShareOneWatcherAndCloseIt(t *testing.T) {
	c, err := conf.NewConfigFrom("tracker: procfs\nhost_path: /\n")
	if err != nil {
		t.Fatal(err)
	}
	log := logptest.NewTestingLogger(t, "")
	a, err := New(c, log)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(c, log)
	if err != nil {
		t.Fatal(err)
	}
	wa, wb := a.(*processor).watcher, b.(*processor).watcher
	if wa == nil || wa != wb {
		t.Fatalf("two processors with the same host_path got watchers %p and %p, want one shared", wa, wb)
	}
	count := func() int {
		n := 0
		procs.EachShared(func(string, procs.Stats, procs.OwnerSource) { n++ })
		return n
	}
	a.(interface{ Close() error }).Close()
	if count() != 1 {
		t.Errorf("the shared watcher went away while a processor still used it")
	}
	b.(interface{ Close() error }).Close()
	if n := count(); n != 0 {
		t.Errorf("%d shared watchers left after the last processor closed", n)
	}
}

// TestTrackerAnswersAreCountedApart: a connection that closed before its
// event resolves through the eBPF tracker, which the metrics count as
// tracker_hits (not resolve_hits) next to the tracker's own counters.
func TestTrackerAnswersAreCountedApart(t *testing.T) {
	c, err := conf.NewConfigFrom("tracker: ebpf\n")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(c, logptest.NewTestingLogger(t, ""))
	if err != nil {
		t.Skipf("eBPF tracker unavailable here: %v", err)
	}
	defer p.(interface{ Close() error }).Close()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Wait for the watcher's first snapshot, so the connection below is
	// born after it and cannot be answered from it.
	server := l.Addr().(*net.TCPAddr)
	if _, err := p.Run(event("192.0.2.1", 5000, server.IP.String(), server.Port, "tcp")); err != nil {
		t.Fatal(err)
	}
	trackerHits := func() int64 {
		return monitoring.CollectFlatSnapshot(monitoring.Default, monitoring.Full, false).Ints["add_network_process.tracker_hits"]
	}
	before := trackerHits()
	conn, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client := conn.LocalAddr().(*net.TCPAddr)
	conn.Close() // gone from /proc before the event is processed
	ev, err := p.Run(event(client.IP.String(), client.Port, server.IP.String(), server.Port, "tcp"))
	if err != nil {
		t.Fatal(err)
	}
	if got := getInt(t, ev, "source.process.pid"); got != os.Getpid() {
		t.Errorf("closed client resolved to PID %d, want this process %d", got, os.Getpid())
	}
	if got := trackerHits(); got <= before {
		t.Errorf("add_network_process.tracker_hits = %d, want more than %d after a closed connection resolved", got, before)
	}
	snap := monitoring.CollectFlatSnapshot(monitoring.Default, monitoring.Full, false)
	for _, k := range []string{"tracker.loaded", "tracker.events"} {
		if got := snap.Ints["add_network_process."+k]; got < 1 {
			t.Errorf("add_network_process.%s = %d, want ≥ 1; snapshot: %v", k, got, snap.Ints)
		}
	}
}

// TestEventTimeBoundsTheAnswer: an event stamped before this process
// started is never credited to it; the same event stamped now is, and an
// event without a @timestamp counts as now.
func TestEventTimeBoundsTheAnswer(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	p := newFromYAML(t, "tracker: procfs\ninclude_fields: [pid]\n")
	pidOf := func(ts time.Time) int {
		ev := event("198.51.100.7", 40000, "127.0.0.1", port, "tcp")
		ev.Timestamp = ts
		out, err := p.Run(ev)
		if err != nil || out == nil {
			t.Fatalf("Run: %v", err)
		}
		v, _ := out.GetValue("destination.process.pid")
		n, _ := v.(int)
		return n
	}
	self := os.Getpid()
	if got := pidOf(time.Now()); got != self {
		t.Fatalf("event stamped now: pid %d, want %d", got, self)
	}
	if got := pidOf(time.Now().Add(-24 * time.Hour)); got != 0 {
		t.Errorf("event stamped a day ago (before this process started): pid %d, want none", got)
	}
	if got := pidOf(time.Time{}); got != self {
		t.Errorf("event without @timestamp: pid %d, want %d", got, self)
	}
}
