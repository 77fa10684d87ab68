//go:build linux

package procs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/elastic/elastic-agent-libs/logp/logptest"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/netprocbeat/netprocbeat/testing/fakehost"
)

// Faults in /proc: every test builds a fake host, breaks one thing in its
// tree, and checks that the watcher answers "unknown" (nil) where it cannot
// know, keeps answering correctly elsewhere, and never names a process
// that does not hold the socket.

// faultHost: PID 100 holds 127.0.0.1:8080 (tcp), 0.0.0.0:53 (udp) and
// [::1]:8443 (tcp6); PID 200 holds 127.0.0.1:8081; PID 300 holds
// 10.0.0.5:22. 10.0.0.7 is an interface address with no socket of its own.
const faultHost = `
addresses: [10.0.0.5, 10.0.0.7]
sockets:
  - {proto: tcp, local: "127.0.0.1:8080", inode: 1001}
  - {proto: tcp, local: "127.0.0.1:8081", inode: 1002}
  - {proto: udp, local: "0.0.0.0:53", inode: 1003}
  - {proto: tcp6, local: "[::1]:8443", inode: 1004}
  - {proto: tcp, local: "10.0.0.5:22", inode: 1005}
  - {proto: udp6, local: "[::1]:5353", inode: 1006}
processes:
  - {pid: 100, ppid: 1, args: [/usr/sbin/httpd], exe: /usr/sbin/httpd, start_ticks: 500, sockets: [1001, 1003, 1004]}
  - {pid: 200, ppid: 1, args: [/usr/bin/victim], exe: /usr/bin/victim, start_ticks: 600, sockets: [1002]}
  - {pid: 300, ppid: 1, args: [/usr/sbin/sshd], exe: /usr/sbin/sshd, start_ticks: 700, sockets: [1005, 1006]}
`

var (
	apHTTP   = netip.MustParseAddrPort("127.0.0.1:8080")
	apVictim = netip.MustParseAddrPort("127.0.0.1:8081")
	apDNS    = netip.MustParseAddrPort("127.0.0.1:53")
	apDNS7   = netip.MustParseAddrPort("10.0.0.7:53")
	apHTTPS6 = netip.MustParseAddrPort("[::1]:8443")
	apSSH    = netip.MustParseAddrPort("10.0.0.5:22")
	apMDNS6  = netip.MustParseAddrPort("[::1]:5353")
)

func buildFaultHost(t *testing.T, yml string) string {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "host.yml")
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := fakehost.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	if err := h.Write(root); err != nil {
		t.Fatal(err)
	}
	return root
}

func faultConfig() Config {
	// A generous budget: these tests check answers, not speed, and CI
	// machines are slow.
	return Config{RescanTimeout: 10 * time.Second, MinRescanInterval: time.Millisecond}
}

// everyMissRescans is faultConfig with a 1ns MinRescanInterval: every miss
// of an unknown tuple gets a rescan of its own, however fast the lookups.
func everyMissRescans() Config {
	cfg := faultConfig()
	cfg.MinRescanInterval = time.Nanosecond
	return cfg
}

func newFaultWatcher(t *testing.T, root string, engineWrap func(Engine) Engine) (*Watcher, *observer.ObservedLogs) {
	t.Helper()
	return newFaultWatcherCfg(t, root, engineWrap, faultConfig())
}

func newFaultWatcherCfg(t *testing.T, root string, engineWrap func(Engine) Engine, cfg Config) (*Watcher, *observer.ObservedLogs) {
	t.Helper()
	e, err := NewEngine(root)
	if err != nil {
		t.Fatalf("NewEngine(%s): %v", root, err)
	}
	if engineWrap != nil {
		e = engineWrap(e)
	}
	log, obs := logptest.NewTestingLoggerWithObserver(t, "")
	w := New(e, cfg, log)
	t.Cleanup(func() { w.Close() })
	return w, obs
}

// expect checks the owner of each endpoint: a PID, or 0 for unknown.
func expect(t *testing.T, w *Watcher, want map[netip.AddrPort]struct {
	t   Transport
	pid int
}) {
	t.Helper()
	for ap, wnt := range want {
		p := w.Lookup(wnt.t, ap, netip.AddrPort{})
		got := 0
		if p != nil {
			got = p.PID
		}
		if got != wnt.pid {
			if wnt.pid == 0 {
				t.Errorf("%v %v: got PID %d (%s), want unknown: a WRONG process", wnt.t, ap, got, p.Name)
			} else {
				t.Errorf("%v %v: got PID %d, want %d", wnt.t, ap, got, wnt.pid)
			}
		}
	}
}

type owner = struct {
	t   Transport
	pid int
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func countLogs(obs *observer.ObservedLogs, substr string) int {
	n := 0
	for _, e := range obs.All() {
		if strings.Contains(e.Message, substr) {
			n++
		}
	}
	return n
}

func TestFaultProcessDirVanishes(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(t *testing.T, pidDir string)
	}{
		{"stat removed", func(t *testing.T, d string) { must(t, os.Remove(filepath.Join(d, "stat"))) }},
		{"directory emptied", func(t *testing.T, d string) {
			must(t, os.RemoveAll(d))
			must(t, os.Mkdir(d, 0o555))
		}},
		{"entry dangles", func(t *testing.T, d string) {
			must(t, os.RemoveAll(d))
			must(t, os.Symlink("/nonexistent/pid", d))
		}},
		{"entry is a file", func(t *testing.T, d string) {
			must(t, os.RemoveAll(d))
			must(t, os.WriteFile(d, []byte("x"), 0o444))
		}},
		{"stat garbage", func(t *testing.T, d string) {
			must(t, os.WriteFile(filepath.Join(d, "stat"), []byte("garbage\x00\xff"), 0o444))
		}},
		{"stat truncated", func(t *testing.T, d string) {
			must(t, os.WriteFile(filepath.Join(d, "stat"), []byte("200 (victim) S 1 200 200 0 -1"), 0o444))
		}},
		{"stat empty", func(t *testing.T, d string) {
			must(t, os.WriteFile(filepath.Join(d, "stat"), nil, 0o444))
		}},
		{"stat is a directory", func(t *testing.T, d string) {
			must(t, os.Remove(filepath.Join(d, "stat")))
			must(t, os.Mkdir(filepath.Join(d, "stat"), 0o555))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := buildFaultHost(t, faultHost)
			tc.break_(t, filepath.Join(root, "proc", "200"))
			w, _ := newFaultWatcher(t, root, nil)
			expect(t, w, map[netip.AddrPort]owner{
				apVictim: {TCP, 0},
				apHTTP:   {TCP, 100},
				apSSH:    {TCP, 300},
			})
		})
	}
}

// A broken process with a lower PID that also lists the socket must not
// stop the real holder from being found, nor be reported itself.
func TestFaultBrokenLowerPIDDoesNotStealSocket(t *testing.T) {
	root := buildFaultHost(t, faultHost+`
  - {pid: 150, ppid: 1, args: [/usr/bin/broken], exe: /usr/bin/broken, start_ticks: 550, sockets: [1002]}
`)
	must(t, os.WriteFile(filepath.Join(root, "proc", "150", "stat"), []byte("150 (broken) S"), 0o444))
	w, _ := newFaultWatcher(t, root, nil)
	expect(t, w, map[netip.AddrPort]owner{apVictim: {TCP, 200}, apHTTP: {TCP, 100}})
}

func TestFaultFdLinks(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(t *testing.T, fdDir string)
	}{
		{"fd dir missing (unreadable)", func(t *testing.T, d string) { must(t, os.RemoveAll(d)) }},
		{"fd dir is a file", func(t *testing.T, d string) {
			must(t, os.RemoveAll(d))
			must(t, os.WriteFile(d, nil, 0o444))
		}},
		{"socket link vanished", func(t *testing.T, d string) { must(t, os.Remove(filepath.Join(d, "3"))) }},
		{"links dangling or not sockets", func(t *testing.T, d string) {
			must(t, os.Remove(filepath.Join(d, "3")))
			for i, target := range []string{
				"socket:[abc]", "socket:[]", "socket:[1002", "socket:1002]", "socket:[-1002]",
				"socket:[10020]", "socket:[100]", "socket:[ 1002]", "socket:[1002 ]",
				"socket:[99999999999999999999]", "/nonexistent", "pipe:[1002]", "anon_inode:[1002]",
				"/proc/net/tcp", strings.Repeat("socket:[", 100),
			} {
				must(t, os.Symlink(target, filepath.Join(d, strconv.Itoa(10+i))))
			}
			// A regular file and a directory where links belong.
			must(t, os.WriteFile(filepath.Join(d, "40"), []byte("socket:[1002]"), 0o444))
			must(t, os.Mkdir(filepath.Join(d, "41"), 0o555))
		}},
		{"link target too long", func(t *testing.T, d string) {
			must(t, os.Remove(filepath.Join(d, "3")))
			// Longer than the engine's link buffer, ending like the link.
			must(t, os.Symlink(strings.Repeat("x", 300)+"socket:[1002]", filepath.Join(d, "3")))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := buildFaultHost(t, faultHost)
			tc.break_(t, filepath.Join(root, "proc", "200", "fd"))
			w, _ := newFaultWatcher(t, root, nil)
			expect(t, w, map[netip.AddrPort]owner{
				apVictim: {TCP, 0},
				apHTTP:   {TCP, 100},
				apDNS:    {UDP, 100},
			})
		})
	}
}

func TestFaultGarbageProcNetRows(t *testing.T) {
	root := buildFaultHost(t, faultHost)
	tcp := filepath.Join(root, "proc", "net", "tcp")
	good, err := os.ReadFile(tcp)
	must(t, err)
	lines := strings.SplitAfter(string(good), "\n")
	// The first data row, cut in half: what a reader sees if the file is
	// truncated mid-row.
	half := lines[1][:len(lines[1])/2] + "\n"
	garbage := []string{
		"garbage\n",
		half,
		"   9: ZZZZZZZZ:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1007 1\n",
		"   9: 0100007F:11F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1007 1\n",
		"   9: 0100007F:1F90 00000000:0000 1FF 00000000:00000000 00:00000000 00000000     0        0 1007 1\n",
		"   9: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 -7 1\n",
		"   9: 0100007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1007 1\n",
		"\x00\x01\x02\xff binary junk \x7f\n",
		"\n", "   \n", // blank lines are not rows
	}
	// Interleave the garbage with the good rows, and end with a row cut
	// off without its newline.
	var b strings.Builder
	b.WriteString(lines[0])
	for i, l := range lines[1:] {
		b.WriteString(l)
		if i < len(garbage) {
			b.WriteString(garbage[i])
		}
	}
	for _, g := range garbage[len(lines)-1:] {
		b.WriteString(g)
	}
	b.WriteString(half[:len(half)-1])
	must(t, os.WriteFile(tcp, []byte(b.String()), 0o444))
	const wantBad = 9 // 8 garbage rows + the unterminated one

	e, err := NewEngine(root)
	must(t, err)
	socks, err := e.Sockets(context.Background(), nil)
	var partial *PartialError
	if !errors.As(err, &partial) {
		t.Fatalf("Sockets error = %v, want a *PartialError", err)
	}
	if !strings.Contains(partial.Msg, fmt.Sprintf("%d malformed rows", wantBad)) {
		t.Errorf("PartialError %q, want %d malformed rows counted", partial.Msg, wantBad)
	}
	if len(socks) != 6 {
		t.Errorf("Sockets returned %d rows, want the 6 good ones", len(socks))
	}

	w, obs := newFaultWatcher(t, root, nil)
	expect(t, w, map[netip.AddrPort]owner{
		apHTTP:   {TCP, 100},
		apVictim: {TCP, 200},
		apSSH:    {TCP, 300},
		apDNS:    {UDP, 100},
		apHTTPS6: {TCP, 100},
	})
	if st := w.Stats(); st.Errors == 0 {
		t.Errorf("Stats().Errors = 0, want the partial rescan counted")
	}
	if n := countLogs(obs, "malformed rows"); n != 1 {
		t.Errorf("%d log lines about malformed rows, want 1", n)
	}
}

func TestFaultIPv6Disabled(t *testing.T) {
	root := buildFaultHost(t, faultHost)
	for _, f := range []string{"tcp6", "udp6", "if_inet6"} {
		must(t, os.Remove(filepath.Join(root, "proc", "net", f)))
	}
	e, err := NewEngine(root)
	must(t, err)
	if _, err := e.Sockets(context.Background(), nil); err != nil {
		t.Errorf("Sockets with IPv6 disabled: %v, want no error", err)
	}
	if _, err := e.LocalAddrs(); err != nil {
		t.Errorf("LocalAddrs with IPv6 disabled: %v, want no error", err)
	}
	w, obs := newFaultWatcher(t, root, nil)
	expect(t, w, map[netip.AddrPort]owner{
		apHTTP:   {TCP, 100},
		apVictim: {TCP, 200},
		apSSH:    {TCP, 300},
		apDNS:    {UDP, 100},
		apDNS7:   {UDP, 100},
		apHTTPS6: {TCP, 0},
		apMDNS6:  {UDP, 0},
	})
	if st := w.Stats(); st.Errors != 0 {
		t.Errorf("Stats().Errors = %d, want 0: IPv6 disabled is not a fault", st.Errors)
	}
	if n := obs.Filter(func(e observer.LoggedEntry) bool { return e.Level >= zapcore.WarnLevel }).Len(); n != 0 {
		t.Errorf("%d warnings/errors logged for a host without IPv6: %v", n, obs.All())
	}
}

func TestFaultMissingFibTrie(t *testing.T) {
	root := buildFaultHost(t, faultHost)
	must(t, os.Remove(filepath.Join(root, "proc", "net", "fib_trie")))
	e, err := NewEngine(root)
	must(t, err)
	if _, err := e.LocalAddrs(); err == nil {
		t.Errorf("LocalAddrs without fib_trie: no error")
	}
	w, obs := newFaultWatcherCfg(t, root, nil, everyMissRescans())
	expect(t, w, map[netip.AddrPort]owner{
		apHTTP:   {TCP, 100}, // loopback is always local
		apSSH:    {TCP, 300}, // 10.0.0.5 is in the socket table
		apHTTPS6: {TCP, 100},
		// 10.0.0.7 is known only from fib_trie: without it the wildcard
		// listener cannot be attributed, and the answer is unknown.
		apDNS7: {UDP, 0},
	})
	// Force a few more rescans: the address fault is logged once.
	for i := 0; i < 20; i++ {
		w.Lookup(TCP, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(30000+i)), netip.AddrPort{})
	}
	if st := w.Stats(); st.Rescans < 10 {
		t.Errorf("only %d rescans: the fault was not repeated", st.Rescans)
	}
	if n := countLogs(obs, "listing the host's addresses failed"); n != 1 {
		t.Errorf("%d log lines about the missing fib_trie, want 1", n)
	}
}

func TestFaultSocketTableVanishesAfterStart(t *testing.T) {
	root := buildFaultHost(t, faultHost)
	w, obs := newFaultWatcherCfg(t, root, nil, everyMissRescans())
	expect(t, w, map[netip.AddrPort]owner{apHTTP: {TCP, 100}})
	must(t, os.Remove(filepath.Join(root, "proc", "net", "tcp")))
	// Misses force rescans; each fails, and the old snapshot stands.
	for i := 0; i < 50; i++ {
		if p := w.Lookup(TCP, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(30000+i)), netip.AddrPort{}); p != nil {
			t.Fatalf("unknown port resolved to %d", p.PID)
		}
	}
	expect(t, w, map[netip.AddrPort]owner{apHTTP: {TCP, 100}, apVictim: {TCP, 200}})
	if st := w.Stats(); st.Errors < 10 {
		t.Errorf("failed rescans not counted: %+v", st)
	}
	if n := countLogs(obs, "listing sockets failed"); n != 1 {
		t.Errorf("%d log lines about failed rescans, want 1", n)
	}

	if _, err := NewEngine(root); err == nil || !strings.Contains(err.Error(), root) {
		t.Errorf("NewEngine on a root without proc/net/tcp: %v, want an error naming %s", err, root)
	}
}

// reuseEngine simulates a PID being recycled between the fd scan and the
// read of the process's details: after Sockets, /proc/200 describes a new
// process with another start time.
type reuseEngine struct {
	Engine
	root string
	done bool
}

func (r *reuseEngine) Sockets(ctx context.Context, dst []Socket) ([]Socket, error) {
	dst, err := r.Engine.Sockets(ctx, dst)
	if !r.done {
		r.done = true
		dir := filepath.Join(r.root, "proc", "200")
		stat, _ := os.ReadFile(filepath.Join(dir, "stat"))
		f := strings.Fields(string(stat))
		f[1] = "(impostor)"
		f[21] = "999999" // starttime
		_ = os.WriteFile(filepath.Join(dir, "stat"), []byte(strings.Join(f, " ")+"\n"), 0o444)
		_ = os.WriteFile(filepath.Join(dir, "comm"), []byte("impostor\n"), 0o444)
		_ = os.WriteFile(filepath.Join(dir, "cmdline"), []byte("/usr/bin/impostor\x00"), 0o444)
	}
	return dst, err
}

func TestFaultPIDReusedDuringRescan(t *testing.T) {
	root := buildFaultHost(t, faultHost)
	w, _ := newFaultWatcher(t, root, func(e Engine) Engine { return &reuseEngine{Engine: e, root: root} })
	expect(t, w, map[netip.AddrPort]owner{apVictim: {TCP, 0}, apHTTP: {TCP, 100}})
}

// TestFaultRepeatedThousandTimesLogsOnce: a fault that recurs on every one
// of 1000 rescans within a minute is logged once.
func TestFaultRepeatedThousandTimesLogsOnce(t *testing.T) {
	t.Run("rateLimitedLog", func(t *testing.T) {
		log, obs := logptest.NewTestingLoggerWithObserver(t, "")
		r := newRateLimitedLog(log, time.Minute)
		for i := 0; i < 1000; i++ {
			r.log("rescan", fmt.Errorf("boom %d", i))
		}
		if n := obs.Len(); n != 1 {
			t.Fatalf("1000 faults in a minute logged %d times, want 1", n)
		}
		// Another kind is not hidden by the first.
		r.log("process", errors.New("other"))
		if n := obs.Len(); n != 2 {
			t.Fatalf("a different fault kind was suppressed: %d lines", n)
		}
	})
	t.Run("suppressed count reported", func(t *testing.T) {
		log, obs := logptest.NewTestingLoggerWithObserver(t, "")
		r := newRateLimitedLog(log, 50*time.Millisecond)
		for i := 0; i < 1000; i++ {
			r.log("rescan", errors.New("boom"))
		}
		time.Sleep(60 * time.Millisecond)
		r.log("rescan", errors.New("boom"))
		all := obs.All()
		if len(all) != 2 || !strings.Contains(all[1].Message, "999 similar errors suppressed") {
			t.Fatalf("log lines %v, want the second to report 999 suppressed", all)
		}
	})
	t.Run("watcher over garbage /proc/net", func(t *testing.T) {
		root := buildFaultHost(t, faultHost)
		tcp := filepath.Join(root, "proc", "net", "tcp")
		f, err := os.OpenFile(tcp, os.O_APPEND|os.O_WRONLY, 0)
		must(t, err)
		_, err = f.WriteString("garbage row that is not a socket\n")
		must(t, err)
		f.Close()
		w, obs := newFaultWatcherCfg(t, root, nil, everyMissRescans())
		lo := netip.MustParseAddr("127.0.0.1")
		start := time.Now()
		for i := 0; i < 1000; i++ {
			// Each distinct unknown tuple misses and asks for a rescan.
			if p := w.Lookup(TCP, netip.AddrPortFrom(lo, uint16(20000+i)), netip.AddrPort{}); p != nil {
				t.Fatalf("unknown port resolved to %d", p.PID)
			}
		}
		st := w.Stats()
		if time.Since(start) > time.Minute {
			t.Skipf("1000 lookups took %v: not within a minute", time.Since(start))
		}
		if st.Rescans < 900 {
			t.Fatalf("only %d rescans: the fault did not repeat", st.Rescans)
		}
		if n := countLogs(obs, "malformed rows"); n != 1 {
			t.Fatalf("fault repeated on %d rescans logged %d times, want 1", st.Rescans, n)
		}
		t.Logf("%d rescans, %d errors counted, 1 log line", st.Rescans, st.Errors)
	})
}

// TestNonRootLookupIsUnknown runs a copy of this test binary as nobody on
// the real /proc: it cannot read root's fds, so root's socket must come
// back unknown, while its own socket still resolves.
func TestNonRootLookupIsUnknown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to nobody")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv not installed")
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	defer l.Close()

	self, err := os.Executable()
	must(t, err)
	dir, err := os.MkdirTemp("", "npb-nonroot-")
	must(t, err)
	defer os.RemoveAll(dir)
	must(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "procs.test")
	must(t, copyFile(self, bin))

	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		bin, "-test.run=^TestNonRootHelper$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NPB_NONROOT_ROOT_ADDR="+l.Addr().String(), "NPB_NONROOT_ROOT_PID="+strconv.Itoa(os.Getpid()))
	out, err := cmd.CombinedOutput()
	t.Logf("helper as nobody:\n%s", out)
	if err != nil && strings.Contains(string(out), "setpriv:") {
		t.Skipf("setpriv refused to switch user: %v", err)
	}
	if err != nil {
		t.Fatalf("helper failed: %v", err)
	}
	for _, want := range []string{"UID 65534", "ROOT-SOCKET unknown", "OWN-SOCKET own", "--- PASS: TestNonRootHelper"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("helper output lacks %q", want)
		}
	}
}

// TestNonRootHelper is the unprivileged side of TestNonRootLookupIsUnknown.
func TestNonRootHelper(t *testing.T) {
	addr := os.Getenv("NPB_NONROOT_ROOT_ADDR")
	if addr == "" {
		t.Skip("helper for TestNonRootLookupIsUnknown")
	}
	fmt.Printf("UID %d\n", os.Geteuid())
	if os.Geteuid() == 0 {
		t.Fatal("helper runs as root")
	}
	rootAP := netip.MustParseAddrPort(addr)
	own, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	defer own.Close()
	ownAP := netip.MustParseAddrPort(own.Addr().String())

	e, err := NewEngine("/")
	if err != nil {
		t.Fatalf("NewEngine as nobody: %v", err)
	}
	log, _ := logptest.NewTestingLoggerWithObserver(t, "")
	w := New(e, faultConfig(), log)
	defer w.Close()

	switch p := w.Lookup(TCP, rootAP, netip.AddrPort{}); {
	case p == nil:
		fmt.Println("ROOT-SOCKET unknown")
	default:
		rootPID, _ := strconv.Atoi(os.Getenv("NPB_NONROOT_ROOT_PID"))
		fmt.Printf("ROOT-SOCKET pid=%d (root test is %d)\n", p.PID, rootPID)
		t.Errorf("root's socket resolved to PID %d as nobody", p.PID)
	}
	switch p := w.Lookup(TCP, ownAP, netip.AddrPort{}); {
	case p != nil && p.PID == os.Getpid():
		fmt.Println("OWN-SOCKET own")
	case p == nil:
		t.Errorf("own socket unknown as nobody")
	default:
		t.Errorf("own socket resolved to PID %d, want %d", p.PID, os.Getpid())
	}
	st := w.Stats()
	fmt.Printf("STATS rescans=%d errors=%d sockets=%d processes=%d\n", st.Rescans, st.Errors, st.Sockets, st.Processes)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
