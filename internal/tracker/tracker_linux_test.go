//go:build linux

package tracker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/netprocbeat/netprocbeat/internal/procs"
	"github.com/netprocbeat/netprocbeat/testing/helperproc"
)

// The helpers are testing/helperproc's "report" role: short-lived clients
// and a worker that send "<pid> <starttime>" once.
func init() { helperproc.Main() }

// selfStart returns this process's /proc/self/stat starttime (clock ticks).
func selfStart() (uint64, error) {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	return procs.ParseStatStart(data)
}

// spawn runs one helper to completion and returns its PID.
func spawn(t testing.TB, mode, addr string) int {
	t.Helper()
	cmd := helperproc.Command("report", mode, addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Errorf("helper %s: %v", mode, err)
		return -1
	}
	return cmd.Process.Pid
}

// skipOrFail skips a test the machine cannot run (not root, no kernel
// BTF) and fails it when the tracker does not load where it should: a
// program the verifier rejects is a defect, not a missing feature.
func skipOrFail(t testing.TB, err error) {
	t.Helper()
	var ve *ebpf.VerifierError
	if _, statErr := os.Stat(btfPath); os.Geteuid() != 0 || statErr != nil {
		t.Skipf("eBPF tracker unavailable here (needs root and BTF): %v", err)
	}
	if errors.As(err, &ve) {
		t.Fatalf("the verifier rejected a program: %+v", ve)
	}
	t.Fatalf("the tracker does not load as root with BTF: %v", err)
}

func newTracker(t testing.TB, opts Options) *Tracker {
	t.Helper()
	tr, err := New(opts)
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tr
}

// waitLookup polls Lookup until it finds a record or a deadline passes:
// the kernel's events reach the table asynchronously.
// at is the time of the event looked up (zero: now).
func waitLookup(tr *Tracker, proto Proto, local, remote netip.AddrPort, at time.Time, want func(Record) bool) (Record, bool) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		r, ok := tr.LookupAt(proto, local, remote, at)
		if ok && (want == nil || want(r)) {
			return r, true
		}
		if time.Now().After(deadline) {
			return r, ok
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hello is what the server side learned from one helper.
type hello struct {
	client     netip.AddrPort
	pid        int
	startTicks uint64
	at         time.Time // when the line was read: the event's time
}

func parseHello(client netip.AddrPort, line string) (hello, error) {
	f := strings.Fields(line)
	if len(f) != 2 {
		return hello{}, fmt.Errorf("bad line %q", line)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return hello{}, err
	}
	st, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return hello{}, err
	}
	return hello{client: unmap(client), pid: pid, startTicks: st}, nil
}

// tcpServer accepts connections and reports each client's line.
func tcpServer(t *testing.T, network, addr string) (net.Listener, <-chan hello) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	out := make(chan hello, 4096)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					t.Errorf("read from %v: %v", c.RemoteAddr(), err)
					return
				}
				h, err := parseHello(c.RemoteAddr().(*net.TCPAddr).AddrPort(), line)
				if err != nil {
					t.Error(err)
					return
				}
				h.at = time.Now()
				out <- h
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln, out
}

func testShortLivedTCP(t *testing.T, network, addr string, n int) {
	tr := newTracker(t, Options{})
	ln, hellos := tcpServer(t, network, addr)
	server := unmap(ln.Addr().(*net.TCPAddr).AddrPort())

	// Four helpers at a time, so that connects interleave.
	pids := make(map[int]bool)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			pid := spawn(t, "tcp", ln.Addr().String())
			mu.Lock()
			pids[pid] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	// Every helper has exited and been reaped: /proc no longer knows
	// them or their sockets, which is the case the tracker is for.
	for pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Logf("pid %d already reused", pid)
		}
	}
	myStart, err := selfStart()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		var h hello
		select {
		case h = <-hellos:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d helpers were heard", i, n)
		}
		if !pids[h.pid] {
			t.Fatalf("hello from unexpected pid %d", h.pid)
		}
		r, ok := waitLookup(tr, TCP, h.client, server, h.at, func(r Record) bool { return !r.Closed.IsZero() })
		if !ok {
			t.Fatalf("client %v (pid %d): no record; stats %+v", h.client, h.pid, tr.Stats())
		}
		if r.PID != h.pid || r.StartTicks != h.startTicks || r.Source != SourceConnect {
			t.Errorf("client %v: got pid %d start %d source %v, want pid %d start %d source connect",
				h.client, r.PID, r.StartTicks, r.Source, h.pid, h.startTicks)
		}
		if r.Closed.IsZero() {
			t.Errorf("client %v: record not marked closed after the helper exited", h.client)
		}
		if age := time.Since(r.Start); age < 0 || age > time.Minute {
			t.Errorf("client %v: start %v is not within the last minute", h.client, r.Start)
		}
		if rs, ok := tr.LookupAt(TCP, h.client, server, h.at); !ok || rs.PID != h.pid || rs.StartTicks != h.startTicks {
			t.Errorf("client %v: LookupAt = %+v, %v", h.client, rs, ok)
		}
		if want := "tracker.test"; !strings.HasPrefix(want, r.Comm) || r.Comm == "" {
			t.Errorf("client %v: comm %q, want a prefix of %q", h.client, r.Comm, want)
		}
		// The accepting side is this test process: attributed when its
		// accept returned the connection.
		sr, ok := waitLookup(tr, TCP, server, h.client, h.at, func(r Record) bool { return r.Source == SourceAccept })
		if !ok || sr.PID != os.Getpid() || sr.StartTicks != myStart || sr.Source != SourceAccept {
			t.Errorf("server side of %v: got %+v ok=%v, want pid %d start %d source accept", h.client, sr, ok, os.Getpid(), myStart)
		}
	}
	t.Logf("%d short-lived %s clients attributed after exit; stats %+v", n, network, tr.Stats())
}

func TestShortLivedTCPClients(t *testing.T) {
	n := 20
	// TRACKER_TEST_CLIENTS=500 for a longer run.
	if v, err := strconv.Atoi(os.Getenv("TRACKER_TEST_CLIENTS")); err == nil && v > 0 {
		n = v
	}
	testShortLivedTCP(t, "tcp4", "127.0.0.1:0", n)
}

func TestShortLivedTCPClientsIPv6(t *testing.T) {
	testShortLivedTCP(t, "tcp6", "[::1]:0", 5)
}

// TestServerWorkerAttribution: the listener belongs to this process, but a
// child that inherited it accepts and serves the connection. The accepted
// socket must be attributed to the child (its accept), not to the
// listener's owner, from the accept on.
func TestServerWorkerAttribution(t *testing.T) {
	tr := newTracker(t, Options{})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := helperproc.Command("report", "serve")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client := c.LocalAddr().(*net.TCPAddr).AddrPort()
	server := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	io.WriteString(c, "hello\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	at := time.Now()
	c.Close()
	if err != nil {
		t.Fatalf("no answer from the worker: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("worker: %v", err)
	}
	h, err := parseHello(server, line)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := waitLookup(tr, TCP, server, client, at, func(r Record) bool { return r.PID == h.pid && !r.Closed.IsZero() })
	if !ok || r.PID != h.pid || r.StartTicks != h.startTicks || r.Source != SourceAccept {
		t.Errorf("server side: got %+v ok=%v, want the worker pid %d start %d source accept", r, ok, h.pid, h.startTicks)
	}
	// The client side is this process.
	if r, ok := waitLookup(tr, TCP, client, server, at, nil); !ok || r.PID != os.Getpid() || r.Source != SourceConnect {
		t.Errorf("client side: got %+v ok=%v, want pid %d source connect", r, ok, os.Getpid())
	}
}

func testUDP(t *testing.T, mode string, source Source) {
	tr := newTracker(t, Options{})
	t.Logf("UDP recorded by %s", tr.UDPMode())
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	server := pc.LocalAddr().(*net.UDPAddr).AddrPort()

	const n = 5
	for range n {
		pid := spawn(t, mode, server.String())
		buf := make([]byte, 128)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		h, err := parseHello(from.(*net.UDPAddr).AddrPort(), string(buf[:m]))
		if err != nil {
			t.Fatal(err)
		}
		if h.pid != pid {
			t.Fatalf("datagram from pid %d, want %d", h.pid, pid)
		}
		r, ok := waitLookup(tr, UDP, h.client, server, time.Time{}, func(r Record) bool { return r.PID == pid })
		if !ok || r.PID != pid || r.StartTicks != h.startTicks || r.Source != source {
			t.Errorf("udp client %v: got %+v ok=%v, want pid %d start %d source %v", h.client, r, ok, pid, h.startTicks, source)
		}
	}
	// The receiving socket belongs to this process.
	r, ok := waitLookup(tr, UDP, server, netip.MustParseAddrPort("127.0.0.1:9"), time.Time{}, func(r Record) bool { return r.PID == os.Getpid() })
	if !ok || r.PID != os.Getpid() {
		t.Errorf("udp server %v: got %+v ok=%v, want pid %d", server, r, ok, os.Getpid())
	}
}

// A bound UDP socket is recorded at bind() as a listener (it names the
// binder only while the binder holds it, since whoever it was handed to
// receives unseen), and as used once the binder sends from it. Nothing is
// recorded per datagram received.
func TestUDPBoundReceiver(t *testing.T) {
	tr := newTracker(t, Options{})
	if tr.UDPMode() != udpCgroup {
		t.Skipf("UDP recorded by %s, not at bind", tr.UDPMode())
	}
	rx, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	local := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	peer := netip.MustParseAddrPort("127.0.0.1:9")
	r, ok := waitLookup(tr, UDP, local, peer, time.Time{}, func(r Record) bool { return r.PID == os.Getpid() })
	if !ok || r.PID != os.Getpid() || r.Source != SourceListen {
		t.Fatalf("after bind: got %+v ok=%v, want pid %d source listen", r, ok, os.Getpid())
	}

	// A datagram received changes nothing.
	tx, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if _, err := tx.WriteTo([]byte("x"), rx.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 8)
	if _, _, err := rx.ReadFrom(buf); err != nil {
		t.Fatal(err)
	}
	events := tr.Stats().Events
	time.Sleep(50 * time.Millisecond)
	if r, ok := tr.LookupAt(UDP, local, peer, time.Time{}); !ok || r.Source != SourceListen {
		t.Errorf("after a datagram received: got %+v ok=%v, want the bind record (source listen)", r, ok)
	}

	// The binder's first datagram sent makes it a use.
	if _, err := rx.WriteTo([]byte("y"), tx.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	r, ok = waitLookup(tr, UDP, local, peer, time.Time{}, func(r Record) bool { return r.Source == SourceIO })
	if !ok || r.PID != os.Getpid() || r.Source != SourceIO {
		t.Errorf("after the binder sent: got %+v ok=%v, want pid %d source io", r, ok, os.Getpid())
	}
	if tr.Stats().Events == events {
		t.Errorf("no event for the binder's first datagram sent")
	}
}

// A connected UDP socket is recorded when connect returns; an unconnected
// one at its first datagram.
func TestUDPConnectedSender(t *testing.T)   { testUDP(t, "udp", SourceConnect) }
func TestUDPUnconnectedSender(t *testing.T) { testUDP(t, "udp-unconnected", SourceIO) }

func TestRetentionExpiry(t *testing.T) {
	const retention = 2 * time.Second
	tr := newTracker(t, Options{Retention: retention})
	ln, hellos := tcpServer(t, "tcp4", "127.0.0.1:0")
	server := ln.Addr().(*net.TCPAddr).AddrPort()
	pid := spawn(t, "tcp", server.String())
	h := <-hellos
	r, ok := waitLookup(tr, TCP, h.client, server, h.at, func(r Record) bool { return !r.Closed.IsZero() })
	if !ok || r.PID != pid || r.Closed.IsZero() {
		t.Fatalf("got %+v ok=%v, want a closed record of pid %d", r, ok, pid)
	}
	time.Sleep(retention + 600*time.Millisecond)
	if r, ok := tr.LookupAt(TCP, h.client, server, h.at); ok {
		t.Errorf("record outlived its retention: %+v", r)
	}
	if s := tr.Stats(); s.Expired == 0 {
		t.Errorf("no expiry counted: %+v", s)
	}
}

func TestCloseIsIdempotentAndStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	tr, err := New(Options{})
	if err != nil {
		skipOrFail(t, err)
	}
	done := make(chan struct{})
	go func() {
		tr.Close()
		tr.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	// After Close the tracker's goroutines are gone (wg.Wait returned inside
	// Close); the goroutine that called Close may still be on its way out
	// after close(done), so give it a moment.
	deadline := time.Now().Add(time.Second)
	n := runtime.NumGoroutine()
	for n > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	if n > before {
		t.Errorf("%d goroutines after Close, %d before New", n, before)
	}
	if _, ok := tr.Lookup(TCP, netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")); ok {
		t.Error("lookup on an empty closed tracker found something")
	}
}
