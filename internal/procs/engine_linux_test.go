//go:build linux

package procs

// Correctness tests of the Linux engine on real sockets held by a fleet of
// helper processes (testing/bench).

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/testing/bench"
	"github.com/netprocbeat/netprocbeat/testing/helperproc"
)

func init() { helperproc.Main() }

// newLinuxEngine is the engine on this host's /proc.
func newLinuxEngine(tb testing.TB) *linuxEngine {
	tb.Helper()
	e, err := NewEngine("/")
	if err != nil {
		tb.Fatal(err)
	}
	return e.(*linuxEngine)
}

func ownerOf(socks []Socket, c bench.Conn) int {
	for i := range socks {
		if socks[i].Local == c.Client && socks[i].Remote == c.Server {
			return socks[i].PID
		}
	}
	return -1
}

// TestEngineIncrementalMatchesFullWalk: on real sockets, an incremental
// walk after connections come and go gives every socket the same owner as a
// full walk of the same moment.
func TestEngineIncrementalMatchesFullWalk(t *testing.T) {
	if testing.Short() {
		t.Skip("starts helper processes")
	}
	f := bench.Start(t, 8, 200)
	e := newLinuxEngine(t)
	if !e.fdCounts {
		t.Skip("this kernel does not report fd counts: every walk is full")
	}
	// A pinned clock: under -race on a loaded machine the test may take
	// long enough for fullWalkEvery to re-read everything.
	now := time.Now()
	e.now = func() time.Time { return now }
	ctx := context.Background()
	if _, err := e.Sockets(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 5; round++ {
		h := f.Holders[round%len(f.Holders)]
		ap, err := h.Dial(f.Holders[(round+1)%len(f.Holders)].Listen)
		if err != nil {
			t.Fatal(err)
		}
		walks, trusted := e.stats.fullWalks, e.stats.trusted
		got, err := e.Sockets(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if e.stats.trusted == trusted {
			t.Fatalf("round %d: nothing trusted: the walk was not incremental", round)
		}
		if pid := ownerOf(got, bench.Conn{Client: ap, Server: f.Holders[(round+1)%len(f.Holders)].Listen}); pid != h.PID {
			t.Fatalf("round %d: new connection owned by %d, want %d", round, pid, h.PID)
		}
		full, _ := NewEngine("/")
		want, err := full.Sockets(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		owners := map[uint64]int{}
		for _, s := range want {
			owners[s.Inode] = s.PID
		}
		if e.stats.fullWalks != walks {
			// The incremental walk fell back to a full one. That is right
			// when a socket of another process on this shared machine
			// appeared in the table and lost its owner before the walk
			// (it closed or exited in between): a flake of the old test.
			// It is a bug when the unexplained socket is the fleet's.
			for _, ino := range e.fallbackInodes {
				if pid, ok := owners[ino]; ok && isFleet(f, pid) {
					t.Fatalf("round %d: the incremental walk missed fleet socket %d (owner %d) and fell back to a full walk", round, ino, pid)
				}
			}
			t.Logf("round %d: fallback to a full walk caused by sockets outside the fleet (inodes %v)", round, e.fallbackInodes)
		}
		for _, s := range got {
			// Sockets of processes outside the fleet (this test, other
			// tests on the host) may come and go between the two reads.
			if w, ok := owners[s.Inode]; ok && s.Inode != 0 && s.PID != w && isFleet(f, s.PID, w) {
				t.Errorf("round %d: inode %d: incremental owner %d, full walk %d", round, s.Inode, s.PID, w)
			}
		}
	}
}

func isFleet(f *bench.Fleet, pids ...int) bool {
	for _, pid := range pids {
		for _, h := range f.Holders {
			if h.PID == pid {
				return true
			}
		}
	}
	return false
}

// BenchmarkEngineTablesDiag: the same tables through NETLINK_SOCK_DIAG.

func TestEngineResolveFindsNewConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("starts helper processes")
	}
	f := bench.Start(t, 4, 40)
	e := newLinuxEngine(t)
	if !e.useDiag {
		t.Skip("sock_diag disabled")
	}
	ctx := context.Background()
	if _, err := e.Sockets(ctx, nil); err != nil {
		t.Fatal(err)
	}
	h := f.Holders[1]
	target := f.Holders[2].Listen
	local, err := h.Dial(target)
	if err != nil {
		t.Fatal(err)
	}
	s, found, err := e.Resolve(ctx, TCP, local, target)
	if err != nil || !found || s.PID != h.PID || s.Local != local || s.Remote != target {
		t.Fatalf("Resolve = %+v, %v, %v; want %v -> %v owned by %d", s, found, err, local, target, h.PID)
	}
	// A tuple that does not exist.
	if _, found, err := e.Resolve(ctx, TCP, netip.MustParseAddrPort("127.0.0.1:1"), target); err != nil || found {
		t.Fatalf("Resolve of a nonexistent tuple: found=%v err=%v", found, err)
	}
	// The listener side of a fleet connection (the accepted socket).
	c := f.Conns[0]
	s, found, err = e.Resolve(ctx, TCP, c.Server, c.Client)
	if err != nil || !found || s.PID != c.Owner {
		t.Fatalf("Resolve(accepted %v <- %v) = %+v, %v, %v; want PID %d", c.Server, c.Client, s, found, err, c.Owner)
	}
}

// TestResolveSourceAnswersNewConnection: a watcher with NewResolveSource
// resolves a connection born after its snapshot without a rescan, and the
// query budget sends misses beyond it down the usual path.
func TestResolveSourceAnswersNewConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("starts helper processes")
	}
	f := bench.Start(t, 4, 40)
	eng := newLinuxEngine(t)
	if !eng.useDiag {
		t.Skip("sock_diag disabled")
	}
	cfg := Config{MinRescanInterval: time.Hour, SocketTTL: time.Hour}
	cfg.Fallback = NewResolveSource(eng, nil, 2, time.Hour, time.Second)
	w := New(eng, cfg, nil)
	defer w.Close()
	c := f.Conns[0]
	if p := w.Lookup(TCP, c.Client, c.Server); p == nil || p.PID != c.Owner {
		t.Fatalf("fleet connection resolved to %+v, want %d", p, c.Owner)
	}
	rescans, resolved := w.Stats().Rescans, w.Stats().ResolveHits
	h, target := f.Holders[3], f.Holders[0].Listen
	local, err := h.Dial(target)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // the repeats come from the learned row
		if p := w.Lookup(TCP, local, target); p == nil || p.PID != h.PID {
			t.Fatalf("lookup %d of a new connection = %+v, want PID %d", i, p, h.PID)
		}
	}
	if st := w.Stats(); st.Rescans != rescans {
		t.Errorf("%d rescans for a connection the resolve source answered", st.Rescans-rescans)
	}
	if st := w.Stats(); st.ResolveHits-resolved != 1 || st.LearnedHits != 2 || st.TrackerHits != 0 || st.Learned != 1 {
		t.Errorf("ResolveHits, LearnedHits, TrackerHits, Learned = +%d, %d, %d, %d; want +1, 2, 0, 1", st.ResolveHits-resolved, st.LearnedHits, st.TrackerHits, st.Learned)
	}
	// The budget (2 per hour) is spent after one more query: a tuple that
	// does not exist, then a new connection, which now waits for the
	// rate-limited rescan path and is not answered within the hour.
	w.Lookup(TCP, netip.MustParseAddrPort("127.0.0.1:1"), target)
	local2, err := h.Dial(target)
	if err != nil {
		t.Fatal(err)
	}
	if p := w.Lookup(TCP, local2, target); p != nil {
		t.Errorf("over budget, a new connection was resolved to %d without a rescan", p.PID)
	}
}

// TestEngineResolveIsTheAskedSocket: the kernel's exact lookup answers
// with another socket than the one asked for in two cases — TCP falls back
// to the listener on the local port when the connection does not exist,
// and UDP's is the receive path's lookup (the socket a datagram from the
// first address to the second would reach). Resolve must return the asked
// connection or nothing: before, a UDP client's own endpoint resolved to
// the server it sent to, and the server's owner was named for the client.
func TestEngineResolveIsTheAskedSocket(t *testing.T) {
	e := newLinuxEngine(t)
	if !e.useDiag {
		t.Skip("sock_diag disabled")
	}
	ctx := context.Background()
	srv, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	server := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	cl, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	client := cl.LocalAddr().(*net.UDPAddr).AddrPort()

	s, found, err := e.Resolve(ctx, UDP, client, server)
	if err != nil || !found || s.Local != client || s.Remote != server {
		t.Errorf("Resolve(udp client %v -> %v) = %+v, %v, %v; want the client's connected socket", client, server, s, found, err)
	}
	s, found, err = e.Resolve(ctx, UDP, server, client)
	if err != nil || !found || s.Local != server || (s.Remote.IsValid() && s.Remote.Port() != 0) {
		t.Errorf("Resolve(udp server %v <- %v) = %+v, %v, %v; want the server's unconnected socket", server, client, s, found, err)
	}

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	listen := ln.Addr().(*net.TCPAddr).AddrPort()
	nobody := netip.MustParseAddrPort("127.0.0.1:1")
	if s, found, err := e.Resolve(ctx, TCP, listen, nobody); err != nil || found {
		t.Errorf("Resolve(tcp %v <- %v), no such connection = %+v, %v, %v; want not found (not the listener)", listen, nobody, s, found, err)
	}
}

// TestEngineResolveBesideRescans: Resolve does not wait for a rescan in
// flight (it has its own lock and buffers and reads the last walk's
// published view), and the two running at once share no buffer (run with
// -race). A new connection resolves to its dialer every time.
func TestEngineResolveBesideRescans(t *testing.T) {
	if testing.Short() {
		t.Skip("starts helper processes")
	}
	f := bench.Start(t, 4, 400)
	e := newLinuxEngine(t)
	if !e.useDiag {
		t.Skip("sock_diag disabled")
	}
	ctx := context.Background()
	if _, err := e.Sockets(ctx, nil); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var dst []Socket
		for {
			select {
			case <-stop:
				return
			default:
			}
			dst, _ = e.Sockets(ctx, dst[:0])
		}
	}()
	for i := 0; i < 20; i++ {
		h := f.Holders[i%len(f.Holders)]
		target := f.Holders[(i+1)%len(f.Holders)].Listen
		local, err := h.Dial(target)
		if err != nil {
			t.Fatal(err)
		}
		s, found, err := e.Resolve(ctx, TCP, local, target)
		if err != nil || !found || s.PID != h.PID {
			t.Errorf("Resolve(%v -> %v) beside rescans = %+v, %v, %v; want PID %d", local, target, s, found, err, h.PID)
		}
		// The accepted end, which no process has accepted: no owner, never another's.
		if s, _, err := e.Resolve(ctx, TCP, target, local); err != nil || s.PID != 0 {
			t.Errorf("Resolve(unaccepted %v <- %v) = %+v, %v; want no owner", target, local, s, err)
		}
	}
	close(stop)
	<-done
}
