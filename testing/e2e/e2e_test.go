//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// processorConfig is the global processor chain of the generated
// configurations; extra is appended to add_network_process's options.
//
// rescan_timeout is raised from 1s to 5s: these tests check which process
// is reported, and a rescan reads every socket of the host, which takes
// longer than 1s when other test suites or benchmarks hold tens of thousands
// of sockets on the same machine (a timed-out rescan leaves the event
// unenriched, as documented). The differential test uses the defaults.
func processorConfig(extra string) string {
	return `
processors:
  - add_network_process:
      set_process: true
      rescan_timeout: 5s
` + extra
}

// waitTCP waits until addr accepts connections. The probe connection sends
// nothing, so it produces no event.
func waitTCP(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not accepting connections: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLog waits until the beat has logged msg.
func waitLog(t *testing.T, b *runningBeat, msg string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(b.logs(), msg) {
		if time.Now().After(deadline) {
			t.Fatalf("netprocbeat did not log %q within 20s:\n%s", msg, b.logTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hasMarker reports whether ev is one of the lines a send helper wrote.
func hasMarker(marker string) func(event) bool {
	return func(ev event) bool { return strings.HasPrefix(ev.str("message"), marker+" ") }
}

// resolvedFrom matches an event of the helper whose source.process was
// resolved. The watcher rate-limits rescans (min_rescan_interval), so the
// first line of a brand-new connection may pass through unresolved; the
// helpers keep sending, and a later line must be attributed.
func resolvedFrom(marker string) func(event) bool {
	m := hasMarker(marker)
	return func(ev event) bool { return m(ev) && ev.get("source.process.pid") != nil }
}

// checkSender asserts that ev's source.process describes helper h and that
// its destination.process and process are the beat itself, which owns the
// listening socket.
func checkSender(t *testing.T, ev event, h *helper, b *runningBeat, wantName string) {
	t.Helper()
	if got := ev.num("source.process.pid"); got != h.pid {
		t.Errorf("source.process.pid = %d, want the sender's PID %d; event: %s", got, h.pid, ev)
	}
	if got := ev.str("source.process.name"); got != wantName {
		t.Errorf("source.process.name = %q, want %q", got, wantName)
	}
	var args []string
	if raw, ok := ev.get("source.process.args").([]any); ok {
		for _, a := range raw {
			s, _ := a.(string)
			args = append(args, s)
		}
	}
	if !reflect.DeepEqual(args, h.args) {
		t.Errorf("source.process.args = %q, want %q", args, h.args)
	}
	if got := ev.str("source.process.executable"); got != selfExe {
		t.Errorf("source.process.executable = %q, want %q", got, selfExe)
	}
	if got := ev.num("source.process.parent.pid"); got != os.Getpid() {
		t.Errorf("source.process.parent.pid = %d, want the test's PID %d", got, os.Getpid())
	}
	if got := ev.num("destination.process.pid"); got != b.pid {
		t.Errorf("destination.process.pid = %d, want netprocbeat's PID %d; event: %s", got, b.pid, ev)
	}
	if got := ev.str("destination.process.executable"); got != beatBin {
		t.Errorf("destination.process.executable = %q, want %q", got, beatBin)
	}
	// set_process: the destination (the server) wins, as in packetbeat.
	if got := ev.num("process.pid"); got != b.pid {
		t.Errorf("process.pid = %d, want netprocbeat's PID %d (destination first)", got, b.pid)
	}
}

// checkNoWrongOwner fails if any event of the helper names another process
// as its source: an unresolved line is allowed, a wrong PID never is.
func checkNoWrongOwner(t *testing.T, b *runningBeat, marker string, h *helper) {
	t.Helper()
	n, resolved := 0, 0
	for _, ev := range b.snapshot() {
		if !hasMarker(marker)(ev) {
			continue
		}
		n++
		if ev.get("source.process.pid") == nil {
			continue
		}
		resolved++
		if got := ev.num("source.process.pid"); got != h.pid {
			t.Errorf("event %q attributed to PID %d, want %d", ev.str("message"), got, h.pid)
		}
	}
	t.Logf("%d events from the helper, %d with source.process", n, resolved)
}

// helperName is the process name of the helpers.
func helperName() string { return commName(selfExe) }

// commName is the name the kernel gives a process started from exe:
// /proc/<pid>/comm, the base name cut to 15 bytes. (For names that long the
// processor prefers argv[0]'s base name; ours are shorter.)
func commName(exe string) string {
	name := filepath.Base(exe)
	if len(name) > 15 {
		name = name[:15]
	}
	return name
}

func TestTCPClientProcess(t *testing.T) {
	port := freePort(t, "tcp", "127.0.0.1")
	b := startBeat(t, "netprocbeat.inputs:"+netInput("tcp", "127.0.0.1", port)+processorConfig(""))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitTCP(t, addr)

	marker := "tcp-client-" + strconv.Itoa(os.Getpid())
	h := startHelper(t, "send", "tcp", addr, marker)
	ev := b.waitEvent(t, 15*time.Second, "from the TCP client with source.process", resolvedFrom(marker))
	checkSender(t, ev, h, b, helperName())
	if got := ev.str("source.ip"); got != "127.0.0.1" {
		t.Errorf("source.ip = %q", got)
	}
	if got, want := fmt.Sprintf("%s:%d", ev.str("source.ip"), ev.num("source.port")), h.ready; got != want {
		t.Errorf("source endpoint %s, want the helper's local address %s", got, want)
	}
	checkNoWrongOwner(t, b, marker, h)

	// Once no rescan has run for longer than min_rescan_interval (250ms by
	// default), a miss rescans synchronously, so the very first line of a
	// new connection is normally attributed. That is logged, not required:
	// on a loaded host (tens of thousands of sockets) it was seen unattributed; every
	// attributed line must name the right process.
	time.Sleep(600 * time.Millisecond)
	marker2 := marker + "-second"
	h2 := startHelper(t, "send", "tcp", addr, marker2)
	first := b.waitEvent(t, 15*time.Second, "with the second client's first line", func(ev event) bool { return ev.str("message") == marker2+" 0" })
	if first.get("source.process.pid") == nil {
		t.Logf("the second client's first line was not attributed: %s", first)
	} else {
		t.Logf("the second client's first line was attributed")
	}
	ev2 := b.waitEvent(t, 15*time.Second, "from the second TCP client with source.process", resolvedFrom(marker2))
	checkSender(t, ev2, h2, b, helperName())
	checkNoWrongOwner(t, b, marker2, h2)
}

func TestUDPSenderProcess(t *testing.T) {
	port := freePort(t, "udp", "127.0.0.1")
	b := startBeat(t, "netprocbeat.inputs:"+netInput("udp", "127.0.0.1", port)+processorConfig(""))
	waitLog(t, b, "Started listening for UDP connection")

	marker := "udp-sender-" + strconv.Itoa(os.Getpid())
	h := startHelper(t, "send", "udp", fmt.Sprintf("127.0.0.1:%d", port), marker)
	ev := b.waitEvent(t, 15*time.Second, "from the UDP sender with source.process", resolvedFrom(marker))
	checkSender(t, ev, h, b, helperName())
	if got := ev.str("network.transport"); got != "udp" {
		t.Errorf("network.transport = %q", got)
	}
	checkNoWrongOwner(t, b, marker, h)
}

func TestIPv6LoopbackListener(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this host: %v", err)
	}
	l.Close()
	port := freePort(t, "tcp", "::1")
	b := startBeat(t, "netprocbeat.inputs:"+netInput("tcp", "::1", port)+processorConfig(""))
	addr := fmt.Sprintf("[::1]:%d", port)
	waitTCP(t, addr)

	marker := "tcp6-client-" + strconv.Itoa(os.Getpid())
	h := startHelper(t, "send", "tcp", addr, marker)
	ev := b.waitEvent(t, 15*time.Second, "from the IPv6 client with source.process", resolvedFrom(marker))
	checkSender(t, ev, h, b, helperName())
	if got := ev.str("source.ip"); got != "::1" {
		t.Errorf("source.ip = %q, want ::1", got)
	}
	if got := ev.str("destination.ip"); got != "::1" {
		t.Errorf("destination.ip = %q, want ::1", got)
	}
	checkNoWrongOwner(t, b, marker, h)
}

func TestMonitoredAlias(t *testing.T) {
	port := freePort(t, "tcp", "127.0.0.1")
	marker := "aliased-client-" + strconv.Itoa(os.Getpid())
	// The helper's command line contains the marker; monitored renames it.
	// The first entry that matches wins, so the second never applies.
	b := startBeat(t, "netprocbeat.inputs:"+netInput("tcp", "127.0.0.1", port)+processorConfig(`
      monitored:
        - process: my-aliased-client
          cmdline_grep: "`+marker+`"
        - process: never-used
          cmdline_grep: "`+helperArg+`"
`))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitTCP(t, addr)
	h := startHelper(t, "send", "tcp", addr, marker)
	ev := b.waitEvent(t, 15*time.Second, "from the aliased client with source.process", resolvedFrom(marker))
	checkSender(t, ev, h, b, "my-aliased-client")
	// The beat itself matches no cmdline_grep: its real name stays.
	if got, want := ev.str("destination.process.name"), commName(beatBin); got != want {
		t.Errorf("destination.process.name = %q, want %q", got, want)
	}
}

// TestFilestreamNDJSON feeds events from an NDJSON file, not from a socket:
// each line names endpoints of sockets that helper processes hold open, and
// the processor must attribute them to those helpers.
func TestFilestreamNDJSON(t *testing.T) {
	a := startHelper(t, "hold", "-", "-", "0")
	var ra holdReady
	if err := json.Unmarshal([]byte(a.ready), &ra); err != nil {
		t.Fatal(err)
	}
	bh := startHelper(t, "hold", strings.Join(ra.TCPListen, ","), strings.Join(ra.UDPBound, ","), "0")
	var rb holdReady
	if err := json.Unmarshal([]byte(bh.ready), &rb); err != nil {
		t.Fatal(err)
	}

	type want struct{ src, dst int }
	var lines []string
	wants := map[string]want{}
	add := func(id, transport, src, dst string, w want) {
		rec := map[string]any{"message": id, "network": map[string]any{"transport": transport}}
		for side, ep := range map[string]string{"source": src, "destination": dst} {
			if ep == "" {
				continue
			}
			host, port, err := net.SplitHostPort(ep)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := strconv.Atoi(port)
			rec[side] = map[string]any{"ip": host, "port": p}
		}
		line, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(line))
		wants[id] = w
	}
	// b dialed a's listeners: b's end as source, a's listener as destination.
	for i, local := range rb.TCPDialed {
		add(fmt.Sprintf("tcp-established-%d", i), "tcp", local, ra.TCPListen[i%len(ra.TCPListen)], want{bh.pid, a.pid})
	}
	// Listeners alone (no peer): the listener's owner.
	add("tcp-listener-a", "tcp", ra.TCPListen[0], "", want{a.pid, 0})
	add("tcp-listener-b", "tcp", rb.TCPListen[1], "", want{bh.pid, 0})
	// b's connected UDP sockets talk to a's bound ones.
	for i, local := range rb.UDPConnected {
		add(fmt.Sprintf("udp-connected-%d", i), "udp", local, ra.UDPBound[i%len(ra.UDPBound)], want{bh.pid, a.pid})
	}
	// Transport as an IANA number, source port as a string: both decoded.
	host, port, _ := net.SplitHostPort(ra.UDPBound[2])
	lines = append(lines, fmt.Sprintf(`{"message":"udp-bound-number","network":{"transport":17},"source":{"ip":%q,"port":%q}}`, host, port))
	wants["udp-bound-number"] = want{a.pid, 0}

	dir := t.TempDir()
	file := filepath.Join(dir, "events.ndjson")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := startBeat(t, fmt.Sprintf(`
netprocbeat.inputs:
  - type: filestream
    id: e2e-ndjson
    paths: [%q]
    # Files under 1024 bytes have no fingerprint yet; use inode identity.
    prospector.scanner.fingerprint.enabled: false
    file_identity.native: ~
    prospector.scanner.check_interval: 100ms
    parsers:
      - ndjson:
          target: ""
          add_error_key: true
`, file)+processorConfig(""))

	for id, w := range wants {
		ev := b.waitEvent(t, 20*time.Second, "for NDJSON line "+id, func(ev event) bool { return ev.str("message") == id })
		if got := ev.num("source.process.pid"); got != w.src {
			t.Errorf("%s: source.process.pid = %d, want %d; event: %s", id, got, w.src, ev)
		}
		if w.dst != 0 {
			if got := ev.num("destination.process.pid"); got != w.dst {
				t.Errorf("%s: destination.process.pid = %d, want %d; event: %s", id, got, w.dst, ev)
			}
		} else if ev.get("destination.process") != nil {
			t.Errorf("%s: destination.process set without a destination: %s", id, ev)
		}
		if ev.get("error") != nil {
			t.Errorf("%s: unexpected error field: %s", id, ev)
		}
	}
	t.Logf("%d NDJSON events attributed", len(wants))
}

func TestTestConfig(t *testing.T) {
	home := t.TempDir()
	shipped := filepath.Join(moduleRoot, "netprocbeat.yml")
	out, err := exec.Command(beatBin, "test", "config", "-c", shipped, "--path.home", home).CombinedOutput()
	if err != nil {
		t.Fatalf("netprocbeat test config -c %s: %v\n%s", shipped, err, out)
	}
	if !strings.Contains(string(out), "Config OK") {
		t.Errorf("test config output %q lacks Config OK", out)
	}

	bad := filepath.Join(moduleRoot, "testing", "e2e", "testdata", "bad.yml")
	out, err = exec.Command(beatBin, "test", "config", "-c", bad, "--path.home", home).CombinedOutput()
	if err == nil {
		t.Fatalf("netprocbeat test config -c %s succeeded, want a failure:\n%s", bad, out)
	}
	for _, want := range []string{"add_network_process", "monitored[0].cmdline_grep is empty"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("test config output does not name the bad option (want %q):\n%s", want, out)
		}
	}
	t.Logf("bad.yml rejected: %s", strings.TrimSpace(string(out)))
}

// TestRestartAndLock: a second netprocbeat on the same path.data is refused
// while the first runs, and a restart after a clean stop or after SIGKILL
// (which leaves the lock file behind) starts normally.
func TestRestartAndLock(t *testing.T) {
	home := t.TempDir()
	port := freePort(t, "tcp", "127.0.0.1")
	cfg := "netprocbeat.inputs:" + netInput("tcp", "127.0.0.1", port) + processorConfig("")

	first := startBeatIn(t, home, cfg)
	cfgPath := filepath.Join(home, "netprocbeat.yml")
	out, err := exec.Command(beatBin, "-e", "-c", cfgPath, "--path.home", home).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "data path already locked") {
		t.Errorf("second netprocbeat on the same path.data: err=%v, want a lock error; output tail:\n%s", err, tail(string(out), 5))
	}
	first.stop(t)

	second := startBeatIn(t, home, cfg)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))
	if err := second.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-second.done
	if _, err := os.Stat(filepath.Join(home, "data", "netprocbeat.lock")); err != nil {
		t.Logf("no lock file left after SIGKILL (%v)", err)
	}
	third := startBeatIn(t, home, cfg)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))
	third.stop(t)
}

// TestCommands checks the subcommands a user runs first.
func TestCommands(t *testing.T) {
	home := t.TempDir()
	shipped := filepath.Join(moduleRoot, "netprocbeat.yml")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"version"}, "netprocbeat version"},
		{[]string{"export", "config", "-c", shipped}, "add_network_process"},
		{[]string{"run", "--help"}, "Run netprocbeat"},
	} {
		out, err := exec.Command(beatBin, append(c.args, "--path.home", home)...).CombinedOutput()
		if err != nil {
			t.Errorf("netprocbeat %s: %v\n%s", strings.Join(c.args, " "), err, tail(string(out), 10))
			continue
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("netprocbeat %s: output lacks %q:\n%s", strings.Join(c.args, " "), c.want, tail(string(out), 10))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
