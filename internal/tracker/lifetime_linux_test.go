//go:build linux

package tracker

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/testing/helperproc"
)

// TestReusedTupleRealKernel: processes take turns connecting from one
// local address and port to one server (the 4-tuple is reused, as
// ephemeral ports are under churn). Asked right after each new connection
// is up, with the event time "now", the tracker names the new process,
// never the previous, exited one whose closed record it still holds, even
// though the new connect event may still be in the ring buffer. Asked for
// the time of an earlier connection (a late event), it names that one's
// owner.
func TestReusedTupleRealKernel(t *testing.T) {
	tr := newTracker(t, Options{})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	server := ln.Addr().(*net.TCPAddr).AddrPort()
	// A free local port to reuse.
	probe, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	local := probe.Addr().(*net.TCPAddr).AddrPort()
	probe.Close()

	type turn struct {
		pid int
		at  time.Time // a moment the connection was up
	}
	var turns []turn
	for i := range 6 {
		cmd := helperproc.Command("dial-from", local.String(), server.String())
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
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "ready ") {
			stdin.Close()
			cmd.Wait()
			t.Fatalf("turn %d: helper said %q %v", i, line, err)
		}
		at := time.Now()
		pid := cmd.Process.Pid
		r, ok := tr.LookupAt(TCP, local, server, at)
		if ok && r.PID != pid {
			t.Errorf("turn %d: named pid %d (closed %v), want the new owner %d", i, r.PID, r.Closed, pid)
		}
		if !ok {
			// Not wrong; but the connect event was in the ring, and
			// LookupAt drains it.
			t.Errorf("turn %d: no answer for pid %d; stats %+v", i, pid, tr.Stats())
		}
		turns = append(turns, turn{pid, at})
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("turn %d: helper: %v", i, err)
		}
		// The client closed first: its end waits in TIME_WAIT, which a
		// loopback connect may reuse (tcp_tw_reuse). Turns further apart
		// than EventTimeSlack, so each turn's time is unambiguous.
		time.Sleep(3 * EventTimeSlack)
	}
	// Late events: each turn's time names that turn's owner (the table
	// keeps the last historyLen connections of the tuple).
	for i, tu := range turns[len(turns)-historyLen:] {
		r, ok := tr.LookupAt(TCP, local, server, tu.at)
		if !ok || r.PID != tu.pid {
			t.Errorf("late event of turn %d: %+v %v, want pid %d", len(turns)-historyLen+i, r, ok, tu.pid)
		}
	}
	// After the last close, an event "now" is about no recorded connection.
	if r, ok := tr.LookupAt(TCP, local, server, time.Now()); ok {
		t.Errorf("event after every connection closed: named %+v", r)
	}
}

// BenchmarkLookupAt: a hit on a tuple with a full history (historyLen
// records), on a real tracker with an idle ring (so the catch-up check is
// the atomic loads, no wait), for an event now and a late one.
func BenchmarkLookupAt(b *testing.B) {
	tr := newTracker(b, Options{})
	l, r := ap("127.0.0.1:45000"), ap("127.0.0.1:8080")
	now := time.Now()
	tr.mu.Lock()
	for i := range historyLen {
		rec := Record{PID: 100 + i, Start: now.Add(-time.Hour), Opened: now.Add(time.Duration(i-historyLen) * time.Second), Seen: now, sk: uint64(i)}
		if i < historyLen-1 {
			rec.Closed = rec.Opened.Add(500 * time.Millisecond)
		}
		tr.pushLocked(key{proto: TCP, netns: tr.ownNS, local: l, remote: r}, rec, now)
	}
	tr.mu.Unlock()
	for _, c := range []struct {
		name string
		at   time.Time
		pid  int
	}{{"now", time.Time{}, 100 + historyLen - 1}, {"late", now.Add(time.Duration(-historyLen)*time.Second + 100*time.Millisecond), 100}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if rec, ok := tr.LookupAt(TCP, l, r, c.at); !ok || rec.PID != c.pid {
					b.Fatalf("got %+v %v, want pid %d", rec, ok, c.pid)
				}
			}
		})
	}
}

// TestOwnerExitRealKernel: bash connects, leaves the socket to a
// background sleep and exits. The tracker names bash for the time it held
// the socket and nobody afterwards (the sleep never used the socket, so
// the tracker cannot know it), never the exited bash.
func TestOwnerExitRealKernel(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("needs bash (/dev/tcp)")
	}
	tr := newTracker(t, Options{})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	// bash stays half a second after saying the sleep's PID, so that the
	// moment taken below is one while bash still holds the socket (an
	// event stamped after its exit gets no answer: the socket lived on).
	cmd := exec.Command(bash, "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d; sleep 60 </dev/null >/dev/null & echo $!; sleep 0.5", port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out, _ := bufio.NewReader(stdout).ReadString('\n')
	held := time.Now() // bash has connected and still holds the socket
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	sleepPID, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("bash said %q", out)
	}
	if err := syscall.Kill(sleepPID, 0); err != nil {
		t.Fatalf("the sleep holding the socket is gone: %v", err)
	}
	defer syscall.Kill(sleepPID, syscall.SIGKILL)
	var c net.Conn
	select {
	case c = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("no connection")
	}
	defer c.Close()
	client := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	server := ln.Addr().(*net.TCPAddr).AddrPort()
	// While bash held it (it is gone now, so /proc cannot say): bash.
	r, ok := waitLookup(tr, TCP, client, server, held, nil)
	if !ok || r.PID != cmd.Process.Pid {
		t.Errorf("while bash held the socket: %+v %v, want bash (pid %d)", r, ok, cmd.Process.Pid)
	}
	time.Sleep(2 * EventTimeSlack)
	if r, ok := tr.LookupAt(TCP, client, server, time.Time{}); ok && r.PID != sleepPID {
		t.Errorf("after bash exited (the socket is the sleep's): named pid %d (bash %d)", r.PID, cmd.Process.Pid)
	}
	if err := syscall.Kill(sleepPID, 0); err != nil {
		t.Fatalf("the sleep holding the socket ended early: %v", err)
	}
}

// TestFailedConnectRealKernel: a refused connect() used its tuple, so the
// tracker records it. From a port the process bound itself, the kernel
// keeps the port until the close; from an ephemeral port it releases the
// port before the close, whose event then takes it from the socket's
// inet_sport. In both cases a connection closed before on the tuple no
// longer answers for an event stamped after the attempt.
func TestFailedConnectRealKernel(t *testing.T) {
	tr := newTracker(t, Options{})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	server := ln.Addr().(*net.TCPAddr).AddrPort()
	probe, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	local := probe.Addr().(*net.TCPAddr).AddrPort()
	probe.Close()

	run := func(wantOK bool, args ...string) int {
		cmd := helperproc.Command(args[0], args[1:]...)
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
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		stdin.Close()
		err = cmd.Wait()
		if ok := strings.HasPrefix(line, "ready ") && err == nil; ok != wantOK {
			t.Fatalf("%v: said %q, %v; want success %v", args, line, err, wantOK)
		}
		return cmd.Process.Pid
	}
	a := run(true, "dial-from", local.String(), server.String())
	time.Sleep(200 * time.Millisecond)
	if r, ok := tr.LookupAt(TCP, local, server, time.Now()); !ok || r.PID != a {
		t.Fatalf("after A's connection: %+v %v, want pid %d", r, ok, a)
	}
	ln.Close()

	t.Run("bound port", func(t *testing.T) {
		b := run(false, "dial-from", local.String(), server.String())
		time.Sleep(300 * time.Millisecond)
		if r, ok := tr.LookupAt(TCP, local, server, time.Now()); ok && r.PID == a {
			t.Errorf("event after B's (pid %d) refused attempt named A (pid %d): %+v", b, a, r)
		}
	})
	t.Run("ephemeral port", func(t *testing.T) {
		b := run(false, "dial", "tcp4", server.String())
		tr.LookupAt(TCP, local, server, time.Now()) // catch up with the reader
		tr.mu.RLock()
		defer tr.mu.RUnlock()
		for k, h := range tr.table {
			for _, r := range h {
				if k.remote == server && r.PID == b && k.local.Port() != 0 {
					return
				}
			}
		}
		t.Errorf("no record of pid %d's refused connect to %s", b, server)
	})
}
