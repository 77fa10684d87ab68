//go:build linux

package procs

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/elastic/elastic-agent-libs/logp"
	"github.com/elastic/elastic-agent-libs/logp/logptest"
)

// realConn opens a loopback connection held by this process and returns
// its two ends.
func realConn(tb testing.TB) (client, server netip.AddrPort, cc net.Conn) {
	tb.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err == nil {
			tb.Cleanup(func() { c.Close() })
		}
	}()
	cc, err = net.Dial("tcp4", l.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return netip.MustParseAddrPort(cc.LocalAddr().String()), netip.MustParseAddrPort(l.Addr().String()), cc
}

// TestRealSocketVerification: the Linux engine records the descriptor of
// each socket and verifies it; after the socket is closed, the snapshot's
// row (still listing it) answers nothing.
func TestRealSocketVerification(t *testing.T) {
	e, err := NewEngine("/")
	if err != nil {
		t.Fatal(err)
	}
	client, server, cc := realConn(t)
	w := New(e, Config{MinRescanInterval: time.Hour, SocketTTL: time.Hour}, logptest.NewTestingLogger(t, ""))
	t.Cleanup(func() { w.Close() })
	if p := w.Lookup(TCP, client, server); p == nil || p.PID != os.Getpid() {
		t.Fatalf("client end = %+v, want this process %d", p, os.Getpid())
	}
	if st := w.Stats(); st.Verifications == 0 {
		t.Fatalf("answer given without a verification: %+v", st)
	}
	// Rows of a snapshot that still lists the socket, its owner having
	// closed it: a rescan is rate-limited for an hour.
	cc.Close()
	time.Sleep(50 * time.Millisecond)
	if p := w.Lookup(TCP, client, server); p != nil {
		t.Fatalf("closed socket answered %+v from the snapshot", p)
	}
	if st := w.Stats(); st.VerifyFailures == 0 || st.UnansweredVerify == 0 {
		t.Errorf("failed verification not counted: %+v", st)
	}
}

// BenchmarkLookupVerified: a cached hit on both ends of one real
// connection, every answer verified (procfs) or the verification reused
// through a ChangeClock whose counters do not move, counting forks too or
// not (the tracker's does).
func BenchmarkLookupVerified(b *testing.B) {
	for _, clock := range []string{"none", "still", "still+forks"} {
		b.Run("clock="+clock, func(b *testing.B) {
			e, err := NewEngine("/")
			if err != nil {
				b.Fatal(err)
			}
			client, server, _ := realConn(b)
			cfg := Config{MinRescanInterval: time.Hour, SocketTTL: time.Hour}
			switch clock {
			case "still":
				cfg.Changes = &fakeClock{}
			case "still+forks":
				cfg.Changes = &forkClock{}
			}
			w := New(e, cfg, logp.NewNopLogger())
			b.Cleanup(func() { w.Close() })
			if w.Lookup(TCP, client, server) == nil || w.Lookup(TCP, server, client) == nil {
				b.Fatal("warm-up lookups found nothing")
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if w.Lookup(TCP, client, server) == nil || w.Lookup(TCP, server, client) == nil {
					b.Fatal("lookup lost")
				}
			}
		})
	}
}

// TestDiagV6Only: sock_diag reports IPV6_V6ONLY for [::] listeners (Go's
// "tcp6" sets it, "tcp" leaves the socket dual-stack), and the watcher
// gives IPv4 events only to the dual-stack one.
func TestDiagV6Only(t *testing.T) {
	e, err := NewEngine("/")
	if err != nil {
		t.Fatal(err)
	}
	if !e.(*linuxEngine).useDiag {
		t.Skip("sock_diag not used")
	}
	only, err := net.Listen("tcp6", "[::]:0")
	if err != nil {
		t.Skipf("no IPv6: %v", err)
	}
	defer only.Close()
	dual, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dual.Close()
	port := func(l net.Listener) uint16 { return uint16(l.Addr().(*net.TCPAddr).Port) }
	socks, err := e.Sockets(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint16]V6Only{port(only): V6OnlyOn, port(dual): V6OnlyOff}
	for _, s := range socks {
		if w, ok := want[s.Local.Port()]; ok && s.Listen && s.Local.Addr().IsUnspecified() {
			if s.V6Only != w {
				t.Errorf("%v: V6Only = %d, want %d", s.Local, s.V6Only, w)
			}
			delete(want, s.Local.Port())
		}
	}
	if len(want) > 0 {
		t.Fatalf("listeners not listed: %v", want)
	}
	w := New(e, Config{MinRescanInterval: time.Hour}, logptest.NewTestingLogger(t, ""))
	defer w.Close()
	peer := netip.MustParseAddrPort("127.0.0.1:1")
	v4 := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p) }
	if p := w.Lookup(TCP, v4(port(dual)), peer); p == nil || p.PID != os.Getpid() {
		t.Errorf("IPv4 event to the dual-stack listener = %+v, want this process", p)
	}
	if p := w.Lookup(TCP, v4(port(only)), peer); p != nil {
		t.Errorf("IPv4 event to the v6only listener = %+v, want none", p)
	}
	v6 := netip.AddrPortFrom(netip.IPv6Loopback(), port(only))
	if p := w.Lookup(TCP, v6, netip.MustParseAddrPort("[::1]:1")); p == nil || p.PID != os.Getpid() {
		t.Errorf("IPv6 event to the v6only listener = %+v, want this process", p)
	}
}

// TestRealExecKeepsSocket: a real process (sh) holds a connection and execs
// sleep, keeping it. The watcher names sleep afterwards, not sh: in procfs
// mode every answer checks the program; with a change clock (bumped here as
// the tracker's sched_process_exec hook does) the check follows the bump.
func TestRealExecKeepsSocket(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	for _, withClock := range []bool{false, true} {
		t.Run(map[bool]string{false: "procfs", true: "clock"}[withClock], func(t *testing.T) {
			client, server, cc := realConn(t)
			f, err := cc.(*net.TCPConn).File()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("/bin/sh", "-c", "read x; exec "+sleep+" 600")
			cmd.ExtraFiles = []*os.File{f} // fd 3, kept across the exec
			in, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			// Only the child holds the socket now.
			f.Close()
			cc.Close()
			pid := cmd.Process.Pid
			exe := func() string {
				l, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
				return l
			}
			shExe := exe()

			e, err := NewEngine("/")
			if err != nil {
				t.Fatal(err)
			}
			clock := &fakeClock{}
			cfg := Config{MinRescanInterval: 10 * time.Millisecond}
			if withClock {
				cfg.Changes = clock
			}
			w := New(e, cfg, logptest.NewTestingLogger(t, ""))
			defer w.Close()
			var p *Process
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if p = w.Lookup(TCP, client, server); p != nil && p.PID == pid {
					break
				}
			}
			if p == nil || p.PID != pid || p.Executable != shExe {
				t.Fatalf("before exec: %+v, want PID %d running %s", p, pid, shExe)
			}

			if _, err := in.Write([]byte("go\n")); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(10 * time.Second); filepath.Base(exe()) != "sleep"; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("pid %d did not exec %s", pid, sleep)
				}
			}
			clock.proc[uint16(pid)].Add(1)
			for i := 0; i < 3; i++ {
				p = w.Lookup(TCP, client, server)
				if p == nil || p.PID != pid || p.Executable != exe() || p.Name != "sleep" {
					t.Fatalf("after exec, lookup %d: %+v, want PID %d running %s (%+v)", i, p, pid, exe(), w.Stats())
				}
			}
			if st := w.Stats(); st.ExecChanges != 1 {
				t.Errorf("ExecChanges %d, want 1 (%+v)", st.ExecChanges, st)
			}
		})
	}
}
