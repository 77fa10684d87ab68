//go:build linux

package tracker

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The table logic, fed synthetic kernel events: runs without privileges.

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newTable(opts Options) (*Tracker, *fakeClock) {
	clk := &fakeClock{time.Unix(1_700_000_000, 0)}
	tr := &Tracker{
		opts:   opts.withDefaults(),
		table:  make(map[key][]Record),
		exits:  make(map[owner]time.Time),
		nsRefs: make(map[uint32]int),
		comms:  make(map[[16]int8]string),
		now:    clk.now,
	}
	tr.bootWall.Store(clk.t.Add(-time.Hour).UnixNano()) // booted an hour ago
	return tr, clk
}

// feed applies ev as the kernel would submit it now (fake clock).
func feed(tr *Tracker, ev *trackerEvent) {
	ev.TsNs = uint64(tr.now().UnixNano() - tr.bootWall.Load())
	tr.handle(ev)
}

func mkEvent(typ uint8, proto Proto, local, remote string, pid uint32, startNS uint64, comm string) *trackerEvent {
	l, r := netip.MustParseAddrPort(local), netip.MustParseAddrPort(remote)
	ev := &trackerEvent{
		Pid:     pid,
		StartNs: startNS,
		Type:    typ,
		Proto:   uint8(proto),
		Sport:   l.Port(),
		Dport:   r.Port(),
		Source:  1,
	}
	if l.Addr().Is4() {
		ev.Family = unix.AF_INET
		a, b := l.Addr().As4(), r.Addr().As4()
		copy(ev.Saddr[:], a[:])
		copy(ev.Daddr[:], b[:])
	} else {
		ev.Family = unix.AF_INET6
		ev.Saddr, ev.Daddr = l.Addr().As16(), r.Addr().As16()
	}
	for i := range min(len(comm), 15) {
		ev.Comm[i] = int8(comm[i])
	}
	return ev
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestTableConnectCloseRetention(t *testing.T) {
	tr, clk := newTable(Options{Retention: 10 * time.Second})
	feed(tr, mkEvent(evConnect, TCP, "10.0.0.1:40000", "10.0.0.2:443", 42, 123_450_000_000, "curl"))
	r, ok := tr.Lookup(TCP, ap("10.0.0.1:40000"), ap("10.0.0.2:443"))
	if !ok || r.PID != 42 || r.Comm != "curl" || r.Source != SourceConnect || !r.Closed.IsZero() {
		t.Fatalf("after connect: %+v %v", r, ok)
	}
	if r.StartTicks != 12345 || r.StartBoottime != 123_450*time.Millisecond {
		t.Errorf("start: ticks %d boottime %v, want 12345 and 123.45s", r.StartTicks, r.StartBoottime)
	}
	// The reverse direction is another socket.
	if _, ok := tr.Lookup(TCP, ap("10.0.0.2:443"), ap("10.0.0.1:40000")); ok {
		t.Error("reverse tuple matched")
	}
	if _, ok := tr.Lookup(UDP, ap("10.0.0.1:40000"), ap("10.0.0.2:443")); ok {
		t.Error("other transport matched")
	}

	clk.t = clk.t.Add(time.Second)
	feed(tr, mkEvent(evClose, TCP, "10.0.0.1:40000", "10.0.0.2:443", 42, 123_450_000_000, "curl"))
	r, ok = tr.Lookup(TCP, ap("10.0.0.1:40000"), ap("10.0.0.2:443"))
	if !ok || !r.Closed.Equal(clk.t) || r.Source != SourceConnect || !r.Opened.Equal(clk.t.Add(-time.Second)) {
		t.Fatalf("after close: %+v %v (source must stay connect, opened a second before)", r, ok)
	}
	during := clk.t.Add(-time.Second / 2) // an event of the connection
	clk.t = clk.t.Add(10 * time.Second)
	if _, ok := tr.LookupAt(TCP, ap("10.0.0.1:40000"), ap("10.0.0.2:443"), during); !ok {
		t.Error("expired at exactly the retention")
	}
	if _, ok := tr.Lookup(TCP, ap("10.0.0.1:40000"), ap("10.0.0.2:443")); ok {
		t.Error("closed record answered for an event after its close")
	}
	clk.t = clk.t.Add(time.Millisecond)
	if _, ok := tr.LookupAt(TCP, ap("10.0.0.1:40000"), ap("10.0.0.2:443"), during); ok {
		t.Error("found after the retention")
	}
	tr.expireLocked(clk.t)
	if len(tr.table) != 0 || tr.expired.Load() != 1 {
		t.Errorf("expire left %d entries, counted %d", len(tr.table), tr.expired.Load())
	}
}

func TestTablePIDReuse(t *testing.T) {
	tr, _ := newTable(Options{})
	feed(tr, mkEvent(evConnect, TCP, "127.0.0.1:5000", "127.0.0.1:80", 7, 1_000_000_000, "old"))
	feed(tr, mkEvent(evClose, TCP, "127.0.0.1:5000", "127.0.0.1:80", 7, 1_000_000_000, "old"))
	// Same PID, another process instance, same tuple later on.
	feed(tr, mkEvent(evConnect, TCP, "127.0.0.1:5000", "127.0.0.1:80", 7, 9_000_000_000, "new"))
	r, ok := tr.Lookup(TCP, ap("127.0.0.1:5000"), ap("127.0.0.1:80"))
	if !ok || r.Comm != "new" || r.StartTicks != 900 || !r.Closed.IsZero() {
		t.Fatalf("got %+v %v, want the new open instance (start 900 ticks)", r, ok)
	}
}

func TestTableAcceptThenWorker(t *testing.T) {
	tr, _ := newTable(Options{})
	feed(tr, mkEvent(evListen, TCP, "0.0.0.0:8080", "0.0.0.0:0", 100, 1, "nginx"))
	// A connection nobody has read from yet falls back to the listener.
	r, ok := tr.Lookup(TCP, ap("192.0.2.1:8080"), ap("192.0.2.9:5555"))
	if !ok || r.PID != 100 || r.Source != SourceListener {
		t.Fatalf("listener fallback: %+v %v", r, ok)
	}
	// The worker that accepted it owns it from then on.
	feed(tr, mkEvent(evAccept, TCP, "192.0.2.1:8080", "192.0.2.9:5555", 101, 2, "nginx-worker"))
	r, ok = tr.Lookup(TCP, ap("192.0.2.1:8080"), ap("192.0.2.9:5555"))
	if !ok || r.PID != 101 || r.Source != SourceAccept {
		t.Fatalf("worker: %+v %v", r, ok)
	}
	// The listener itself never answers for a UDP lookup.
	if _, ok := tr.Lookup(UDP, ap("192.0.2.1:8080"), ap("192.0.2.9:5555")); ok {
		t.Error("TCP listener matched a UDP lookup")
	}
}

func TestTableUDPWildcardAndIdle(t *testing.T) {
	tr, clk := newTable(Options{Retention: 5 * time.Second})
	// Unconnected socket bound to the wildcard: dport 0.
	feed(tr, mkEvent(evSendRecv, UDP, "0.0.0.0:53", "0.0.0.0:0", 53, 1, "dnsd"))
	feed(tr, mkEvent(evSendRecv, UDP, "[::]:5353", "[::]:0", 54, 1, "mdns"))
	feed(tr, mkEvent(evSendRecv, UDP, "[::ffff:10.1.1.1]:9999", "[::ffff:10.1.1.2]:7", 55, 1, "mapped"))
	cases := []struct {
		local, remote string
		pid           int
	}{
		{"10.0.0.5:53", "198.51.100.7:3333", 53},
		{"[2001:db8::1]:5353", "[2001:db8::2]:5353", 54},
		{"10.0.0.5:5353", "10.0.0.6:5353", 54}, // a dual-stack socket receiving IPv4
		{"10.1.1.1:9999", "10.1.1.2:7", 55},
		{"[::ffff:10.1.1.1]:9999", "[::ffff:10.1.1.2]:7", 55},
	}
	for _, c := range cases {
		r, ok := tr.Lookup(UDP, ap(c.local), ap(c.remote))
		if !ok || r.PID != c.pid {
			t.Errorf("%s -> %s: %+v %v, want pid %d", c.local, c.remote, r, ok, c.pid)
		}
	}
	// UDP has no close: a socket not announced for Retention plus the
	// refresh window is gone.
	clk.t = clk.t.Add(5*time.Second + udpRefresh + time.Millisecond)
	if _, ok := tr.Lookup(UDP, ap("10.0.0.5:53"), ap("198.51.100.7:3333")); ok {
		t.Error("idle UDP record still found")
	}
}

func TestTableCapEvictsOldest(t *testing.T) {
	tr, clk := newTable(Options{MaxEntries: 16})
	for i := range 40 {
		clk.t = clk.t.Add(time.Second)
		l := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(10000+i))
		feed(tr, mkEvent(evConnect, TCP, l.String(), "10.0.0.2:80", uint32(i+1), 1, "x"))
	}
	if len(tr.table) > 16 {
		t.Fatalf("table holds %d entries, cap 16", len(tr.table))
	}
	if _, ok := tr.Lookup(TCP, ap("10.0.0.1:10039"), ap("10.0.0.2:80")); !ok {
		t.Error("newest entry evicted")
	}
	if _, ok := tr.Lookup(TCP, ap("10.0.0.1:10000"), ap("10.0.0.2:80")); ok {
		t.Error("oldest entry kept")
	}
	if tr.evicted.Load() == 0 {
		t.Error("no eviction counted")
	}
}

func TestTableIgnoresPortlessClose(t *testing.T) {
	tr, _ := newTable(Options{})
	// connect() that failed before a port was chosen.
	feed(tr, mkEvent(evClose, TCP, "10.0.0.1:0", "10.0.0.2:80", 1, 1, "x"))
	if len(tr.table) != 0 {
		t.Errorf("portless close recorded: %v", tr.table)
	}
}

// TestTableKeepsNamespacesApart: identical loopback tuples in two network
// namespaces are two sockets. Neither overwrites the other; the tracker's
// own namespace answers for the tuple, and foreign namespaces that disagree
// answer nothing rather than a guess.
func TestTableKeepsNamespacesApart(t *testing.T) {
	inNS := func(ev *trackerEvent, ns uint32) *trackerEvent { ev.Netns = ns; return ev }
	const own, nsA, nsB = 4026531840, 4026532001, 4026532002
	tr, _ := newTable(Options{})
	tr.ownNS = own
	feed(tr, inNS(mkEvent(evConnect, TCP, "127.0.0.1:40000", "127.0.0.1:8080", 10, 1, "in-a"), nsA))
	feed(tr, inNS(mkEvent(evConnect, TCP, "127.0.0.1:40000", "127.0.0.1:8080", 20, 2, "in-b"), nsB))
	if len(tr.table) != 2 {
		t.Fatalf("table holds %d records, want one per namespace", len(tr.table))
	}
	if r, ok := tr.Lookup(TCP, ap("127.0.0.1:40000"), ap("127.0.0.1:8080")); ok {
		t.Errorf("two foreign owners for one tuple resolved to %+v, want no answer", r)
	}
	if n := tr.ambiguous.Load(); n != 1 {
		t.Errorf("ambiguous lookups = %d, want 1", n)
	}
	// The same owner in both (a process with a socket in each) is no doubt.
	feed(tr, inNS(mkEvent(evConnect, TCP, "127.0.0.1:40001", "127.0.0.1:8080", 30, 3, "both"), nsA))
	feed(tr, inNS(mkEvent(evConnect, TCP, "127.0.0.1:40001", "127.0.0.1:8080", 30, 3, "both"), nsB))
	if r, ok := tr.Lookup(TCP, ap("127.0.0.1:40001"), ap("127.0.0.1:8080")); !ok || r.PID != 30 {
		t.Errorf("one owner in two namespaces = %+v %v, want PID 30", r, ok)
	}
	// The tracker's own namespace wins over foreign ones.
	feed(tr, inNS(mkEvent(evConnect, TCP, "127.0.0.1:40000", "127.0.0.1:8080", 40, 4, "host"), own))
	if r, ok := tr.Lookup(TCP, ap("127.0.0.1:40000"), ap("127.0.0.1:8080")); !ok || r.PID != 40 || r.NetNS != own {
		t.Errorf("tuple also in the own namespace = %+v %v, want PID 40", r, ok)
	}
	// A close in one namespace leaves the other's record open.
	feed(tr, inNS(mkEvent(evClose, TCP, "127.0.0.1:40000", "127.0.0.1:8080", 10, 1, "in-a"), nsA))
	if h := tr.table[key{TCP, nsB, ap("127.0.0.1:40000"), ap("127.0.0.1:8080")}]; len(h) != 1 || h[0].PID != 20 || !h[0].Closed.IsZero() {
		r := h
		t.Errorf("namespace B's records after A's close = %+v, want PID 20, open", r)
	}
	// Expiry keeps the per-namespace counts in step with the table.
	tr.mu.Lock()
	for k := range tr.table {
		tr.deleteLocked(k)
	}
	tr.mu.Unlock()
	if len(tr.nsRefs) != 0 {
		t.Errorf("nsRefs = %v after emptying the table", tr.nsRefs)
	}
}

// TestTableReusedTupleLifetimes: a tuple used by A, closed, then reused by
// B. An event after A's close never gets A (even while B's connection is
// not recorded yet); a late event of A's connection still gets A; B's
// events get B.
func TestTableReusedTupleLifetimes(t *testing.T) {
	tr, clk := newTable(Options{})
	l, r := ap("127.0.0.1:45000"), ap("127.0.0.1:8080")
	t0 := clk.t
	feed(tr, mkEvent(evConnect, TCP, l.String(), r.String(), 100, 1_000_000_000, "a"))
	clk.t = t0.Add(time.Second)
	feed(tr, mkEvent(evClose, TCP, l.String(), r.String(), 100, 1_000_000_000, "a"))
	duringA := t0.Add(500 * time.Millisecond)

	// B connects 5 s later; its event reaches the lookup before its
	// connect event reaches the table (still in the ring: the lookup
	// cannot show the table complete up to the event).
	clk.t = t0.Add(6 * time.Second)
	if got, ok := tr.lookupAt(TCP, l, r, clk.t, false); ok {
		t.Fatalf("event after A's close answered with %+v before B's record exists", got)
	}
	if got, ok := tr.Lookup(TCP, l, r); ok {
		t.Fatalf("Lookup (now) answered with A's closed record %+v", got)
	}
	feed(tr, mkEvent(evConnect, TCP, l.String(), r.String(), 200, 2_000_000_000, "b"))
	clk.t = t0.Add(7 * time.Second)
	if got, ok := tr.LookupAt(TCP, l, r, clk.t); !ok || got.PID != 200 {
		t.Errorf("B's event: %+v %v, want pid 200", got, ok)
	}
	// A late event (A's connection, processed now) gets its own record.
	if got, ok := tr.LookupAt(TCP, l, r, duringA); !ok || got.PID != 100 || got.Closed.IsZero() {
		t.Errorf("late event of A: %+v %v, want A's closed record (pid 100)", got, ok)
	}
	// Between A's close and B's connect nobody held the tuple.
	if got, ok := tr.LookupAt(TCP, l, r, t0.Add(3*time.Second)); ok {
		t.Errorf("event between the two connections: %+v, want no answer", got)
	}
	// Within the slack of A's close and B's open both cover; B (newer)
	// exactly covers a time after its open.
	clk.t = t0.Add(8 * time.Second)
	feed(tr, mkEvent(evClose, TCP, l.String(), r.String(), 200, 2_000_000_000, "b"))
	clk.t = t0.Add(8*time.Second + 50*time.Millisecond)
	feed(tr, mkEvent(evConnect, TCP, l.String(), r.String(), 300, 3_000_000_000, "c"))
	if got, ok := tr.LookupAt(TCP, l, r, t0.Add(8*time.Second+60*time.Millisecond)); !ok || got.PID != 300 {
		t.Errorf("event just after C's open, within B's close slack: %+v %v, want C", got, ok)
	}
	// Just before C's open, B held it (closed 30 ms before): toss-up
	// between B exactly and C through the slack: no answer.
	if got, ok := tr.LookupAt(TCP, l, r, t0.Add(8*time.Second-30*time.Millisecond)); ok {
		t.Errorf("event in B's last moments, within C's opening slack: %+v, want no answer", got)
	}
	// The history is capped.
	for i := range 6 {
		clk.t = clk.t.Add(time.Second)
		feed(tr, mkEvent(evClose, TCP, l.String(), r.String(), uint32(300+i), uint64(3+i)*1_000_000_000, "x"))
		feed(tr, mkEvent(evConnect, TCP, l.String(), r.String(), uint32(301+i), uint64(4+i)*1_000_000_000, "x"))
	}
	if h := tr.table[key{proto: TCP, local: l, remote: r}]; len(h) != historyLen || tr.nrec != historyLen {
		t.Errorf("history holds %d records (nrec %d), want %d", len(h), tr.nrec, historyLen)
	}
}

// TestTableProcessStartedAfterEvent: a record of a process that started
// after the event time is never the answer, even when it is the only one.
func TestTableProcessStartedAfterEvent(t *testing.T) {
	tr, clk := newTable(Options{})
	// Boot an hour ago (newTable); this process started 10 s ago.
	start := uint64((time.Hour - 10*time.Second).Nanoseconds())
	feed(tr, mkEvent(evListen, TCP, "0.0.0.0:9000", "0.0.0.0:0", 77, start, "late"))
	feed(tr, mkEvent(evSendRecv, UDP, "0.0.0.0:9001", "0.0.0.0:0", 77, start, "late"))
	event := clk.t.Add(-time.Minute) // an event read from a log, a minute old
	for _, c := range []struct {
		p   Proto
		l   string
		rem string
	}{{TCP, "127.0.0.1:9000", "127.0.0.1:50000"}, {UDP, "127.0.0.1:9001", "127.0.0.1:50001"}} {
		if got, ok := tr.LookupAt(c.p, ap(c.l), ap(c.rem), event); ok {
			t.Errorf("%v %s: a minute-old event answered by a process started 10 s ago: %+v", c.p, c.l, got)
		}
		if got, ok := tr.LookupAt(c.p, ap(c.l), ap(c.rem), clk.t); !ok || got.PID != 77 {
			t.Errorf("%v %s: event now: %+v %v, want pid 77", c.p, c.l, got, ok)
		}
	}
}

// TestTableOwnerChangeOnOneSocket: an accepted connection is the
// listener owner's until the worker's first I/O, then the worker's.
func TestTableOwnerChangeOnOneSocket(t *testing.T) {
	tr, clk := newTable(Options{})
	l, r := ap("192.0.2.1:8080"), ap("192.0.2.9:5555")
	t0 := clk.t
	feed(tr, mkEvent(evAccept, TCP, l.String(), r.String(), 100, 1, "master"))
	clk.t = t0.Add(time.Second)
	feed(tr, mkEvent(evSendRecv, TCP, l.String(), r.String(), 101, 2, "worker"))
	clk.t = t0.Add(2 * time.Second)
	feed(tr, mkEvent(evSendRecv, TCP, l.String(), r.String(), 101, 2, "worker")) // a refresh
	if got, ok := tr.LookupAt(TCP, l, r, t0.Add(300*time.Millisecond)); !ok || got.PID != 100 {
		t.Errorf("before the worker's first I/O: %+v %v, want the listener owner", got, ok)
	}
	if got, ok := tr.LookupAt(TCP, l, r, clk.t); !ok || got.PID != 101 || !got.Opened.Equal(t0.Add(time.Second)) {
		t.Errorf("after: %+v %v, want the worker since its first I/O", got, ok)
	}
	if n := len(tr.table[key{proto: TCP, local: l, remote: r}]); n != 2 {
		t.Errorf("%d records, want 2 (refresh updates in place)", n)
	}
}

// TestTableOwnerExit: a process connects, hands the socket to a child and
// exits. Its open record ends at its exit: events after it get nothing
// (the child, whom the tracker has not seen use the socket, is unknown),
// events before it get the parent; a later close changes nothing.
func TestTableOwnerExit(t *testing.T) {
	tr, clk := newTable(Options{})
	l, r := ap("127.0.0.1:48750"), ap("127.0.0.1:40759")
	t0 := clk.t
	feed(tr, mkEvent(evConnect, TCP, l.String(), r.String(), 100, 1_000_000_000, "parent"))
	clk.t = t0.Add(time.Second)
	exit := mkEvent(evExit, 0, "0.0.0.0:0", "0.0.0.0:0", 100, 1_000_000_000, "")
	feed(tr, exit)
	clk.t = t0.Add(2 * time.Second)
	if got, ok := tr.LookupAt(TCP, l, r, clk.t); ok {
		t.Errorf("after the owner exited: %+v, want no answer", got)
	}
	// The TCP socket lived on (no close event): even just after the exit,
	// within the event-time slack, the dead owner is not named.
	if got, ok := tr.LookupAt(TCP, l, r, t0.Add(time.Second+50*time.Millisecond)); ok {
		t.Errorf("50 ms after the owner exited: %+v, want no answer", got)
	}
	if got, ok := tr.LookupAt(TCP, l, r, t0.Add(500*time.Millisecond)); !ok || got.PID != 100 || !got.Closed.Equal(t0.Add(time.Second)) {
		t.Errorf("before the exit: %+v %v, want pid 100, ended at the exit", got, ok)
	}
	tr.mu.Lock()
	tr.applyExitsLocked()
	tr.mu.Unlock()
	if h := tr.table[key{proto: TCP, local: l, remote: r}]; len(h) != 1 || !h[0].Closed.Equal(t0.Add(time.Second)) {
		t.Errorf("after applying exits: %+v, want one record closed at the exit", h)
	}
	// The child closes the socket; the kernel still names the parent.
	clk.t = t0.Add(3 * time.Second)
	feed(tr, mkEvent(evClose, TCP, l.String(), r.String(), 100, 1_000_000_000, "parent"))
	if got, ok := tr.LookupAt(TCP, l, r, t0.Add(2500*time.Millisecond)); ok {
		t.Errorf("after the child's close: %+v, want no answer for a time after the parent's exit", got)
	}
	// Another instance with the same PID is not affected.
	feed(tr, mkEvent(evSendRecv, UDP, "0.0.0.0:53", "0.0.0.0:0", 100, 5_000_000_000, "other"))
	if got, ok := tr.LookupAt(UDP, ap("127.0.0.1:53"), ap("127.0.0.1:9"), clk.t); !ok || got.PID != 100 {
		t.Errorf("a recycled PID's own socket: %+v %v", got, ok)
	}
}

// TestTableStampedAfterClose: a one-shot client's event is stamped when
// the beat reads it, after the client closed. The newest record of the
// tuple answers when the table is complete and the tuple had no other
// owner in the records kept; not otherwise.
func TestTableStampedAfterClose(t *testing.T) {
	l, r := ap("127.0.0.1:45001"), ap("127.0.0.1:8080")
	oneShot := func(tr *Tracker, clk *fakeClock, pid uint32, start uint64) time.Time {
		feed(tr, mkEvent(evConnect, TCP, l.String(), r.String(), pid, start, "c"))
		clk.t = clk.t.Add(5 * time.Millisecond)
		feed(tr, mkEvent(evClose, TCP, l.String(), r.String(), pid, start, "c"))
		return clk.t
	}
	for _, c := range []struct {
		name     string
		earlier  uint32 // an earlier connection's owner on the tuple, 0 for none
		after    time.Duration
		complete bool
		want     bool
	}{
		{"read 500ms after close", 0, 500 * time.Millisecond, true, true},
		{"read 500ms after close, same earlier owner", 100, 500 * time.Millisecond, true, true},
		{"read 500ms after close, table not complete", 0, 500 * time.Millisecond, false, false},
		{"read 500ms after close, earlier connection of another owner", 99, 500 * time.Millisecond, true, false},
		{"read 2s after close", 0, 2 * time.Second, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, clk := newTable(Options{})
			if c.earlier != 0 {
				oneShot(tr, clk, c.earlier, uint64(c.earlier)*1_000_000)
				clk.t = clk.t.Add(3 * time.Second)
			}
			closed := oneShot(tr, clk, 100, 100_000_000)
			at := closed.Add(c.after)
			clk.t = at
			got, ok := tr.lookupAt(TCP, l, r, at, c.complete)
			if ok != c.want || (ok && got.PID != 100) {
				t.Errorf("got %+v %v, want answer %v (pid 100)", got, ok, c.want)
			}
		})
	}
}

// TestTableCloseAfterExit: a TCP socket closed right after its owner's exit
// was closed by the exit (a one-shot client that exits after writing): its
// record answers an event stamped shortly after, like any closed record.
// One closed long after the exit was held by someone else meanwhile (a
// child), so the dead owner is not named for times after its exit.
func TestTableCloseAfterExit(t *testing.T) {
	l, r := ap("127.0.0.1:45002"), ap("127.0.0.1:8080")
	for _, c := range []struct {
		name       string
		closeAfter time.Duration
		want       bool
	}{{"closed by the exit", 5 * time.Millisecond, true}, {"closed 5 s later by another holder", 5 * time.Second, false}} {
		t.Run(c.name, func(t *testing.T) {
			tr, clk := newTable(Options{})
			feed(tr, mkEvent(evConnect, TCP, l.String(), r.String(), 100, 1_000_000_000, "client"))
			clk.t = clk.t.Add(time.Second)
			exit := clk.t
			feed(tr, mkEvent(evExit, 0, "0.0.0.0:0", "0.0.0.0:0", 100, 1_000_000_000, ""))
			clk.t = exit.Add(c.closeAfter)
			feed(tr, mkEvent(evClose, TCP, l.String(), r.String(), 100, 1_000_000_000, "client"))
			at := exit.Add(300 * time.Millisecond)
			got, ok := tr.lookupAt(TCP, l, r, at, true)
			if ok != c.want || (ok && got.PID != 100) {
				t.Errorf("event 300 ms after the exit: %+v %v, want answer %v", got, ok, c.want)
			}
		})
	}
}

// TestTableHistoryAfterClose: a beat stamps an event when it reads it,
// seconds after a one-shot client closed. The client's record answers for
// as long as the table keeps it, when the records prove that nobody used
// the tuple between the close and the event: the table is complete up to
// the event, nothing was lost meanwhile, no newer connection on the tuple
// (in any namespace) and no listener on its local endpoint. Otherwise
// nothing.
func TestTableHistoryAfterClose(t *testing.T) {
	l, r := ap("127.0.0.1:45003"), ap("127.0.0.1:8080")
	const pid, start = 100, 100_000_000
	for _, c := range []struct {
		name     string
		after    time.Duration // event time after the close
		complete bool
		between  func(tr *Tracker, clk *fakeClock) // what happens between the close and the event
		want     int                               // the PID named, 0 for none
	}{
		{"read 3s after close", 3 * time.Second, true, nil, pid},
		{"read 25s after close", 25 * time.Second, true, nil, pid},
		{"read after the retention", 31 * time.Second, true, nil, 0},
		{"read 3s after close, table not complete", 3 * time.Second, false, nil, 0},
		{"tuple reused by another process", 3 * time.Second, true, func(tr *Tracker, clk *fakeClock) {
			feed(tr, mkEvent(evConnect, TCP, l.String(), r.String(), 200, 200_000_000, "other"))
			clk.t = clk.t.Add(10 * time.Millisecond)
			feed(tr, mkEvent(evClose, TCP, l.String(), r.String(), 200, 200_000_000, "other"))
		}, 0},
		{"tuple in use in another namespace", 3 * time.Second, true, func(tr *Tracker, clk *fakeClock) {
			ev := mkEvent(evConnect, TCP, l.String(), r.String(), 300, 300_000_000, "container")
			ev.Netns = 4026532999
			feed(tr, ev)
		}, 300}, // the one recorded owner at the event's time
		{"local endpoint listened on", 3 * time.Second, true, func(tr *Tracker, clk *fakeClock) {
			feed(tr, mkEvent(evListen, TCP, "0.0.0.0:45003", "0.0.0.0:0", 400, 400_000_000, "server"))
		}, 400}, // a listener answer, as for any unrecorded connection to it
		{"local endpoint listened on, listener closed again", 3 * time.Second, true, func(tr *Tracker, clk *fakeClock) {
			feed(tr, mkEvent(evListen, TCP, "0.0.0.0:45003", "0.0.0.0:0", 400, 400_000_000, "server"))
			clk.t = clk.t.Add(100 * time.Millisecond)
			feed(tr, mkEvent(evClose, TCP, "0.0.0.0:45003", "0.0.0.0:0", 400, 400_000_000, "server"))
		}, 0},
		{"events lost after the close", 3 * time.Second, true, func(tr *Tracker, clk *fakeClock) {
			tr.evicted.Add(1) // any gap: a dropped event, a skipped program run, an eviction
		}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, clk := newTable(Options{Retention: 30 * time.Second})
			tr.ownNS = 0
			feed(tr, mkEvent(evConnect, TCP, l.String(), r.String(), pid, start, "curl"))
			clk.t = clk.t.Add(5 * time.Millisecond)
			feed(tr, mkEvent(evClose, TCP, l.String(), r.String(), pid, start, "curl"))
			closed := clk.t
			clk.t = clk.t.Add(time.Second)
			if c.between != nil {
				c.between(tr, clk)
			}
			at := closed.Add(c.after)
			clk.t = at.Add(50 * time.Millisecond) // the lookup runs just after the read
			got, ok := tr.lookupAt(TCP, l, r, at, c.complete)
			if ok != (c.want != 0) || ok && got.PID != int(c.want) {
				t.Errorf("got %+v %v, want pid %d (0: no answer)", got, ok, c.want)
			}
		})
	}
}

// TestTableHistoryGapBeforeClose: a gap counted before the record's close
// (and seen by a check before it) does not stop the record answering a
// later-stamped event; one first seen after the close does.
func TestTableHistoryGapBeforeClose(t *testing.T) {
	l, r := ap("127.0.0.1:45004"), ap("127.0.0.1:8080")
	tr, clk := newTable(Options{})
	tr.evicted.Add(3) // an old gap
	tr.gapFreeSince(clk.t, clk.t)
	clk.t = clk.t.Add(time.Second)
	feed(tr, mkEvent(evConnect, TCP, l.String(), r.String(), 100, 1, "curl"))
	clk.t = clk.t.Add(5 * time.Millisecond)
	feed(tr, mkEvent(evClose, TCP, l.String(), r.String(), 100, 1, "curl"))
	at := clk.t.Add(3 * time.Second)
	clk.t = at
	if got, ok := tr.lookupAt(TCP, l, r, at, true); !ok || got.PID != 100 {
		t.Errorf("gap before the close: %+v %v, want pid 100", got, ok)
	}
	tr.evicted.Add(1)
	if got, ok := tr.lookupAt(TCP, l, r, at.Add(time.Second), true); ok {
		t.Errorf("gap seen after the close: %+v, want no answer", got)
	}
}

// TestTableFailedConnectAfterClose: a connect() on a tuple after its last
// connection closed, refused before it was announced, is recorded by its
// close alone. It is no owner for the earlier connection's events, and the
// earlier connection's record no longer answers for events after it. The
// new socket may sit at the freed one's address (the kernel reuses the
// memory): its close is still the other process's use of the tuple.
func TestTableFailedConnectAfterClose(t *testing.T) {
	for _, c := range []struct {
		name  string
		sk    uint64 // the refused socket's address
		start uint64 // its process's start (boot time ns)
	}{{"another socket address", 2, 2}, {"the freed socket's address", 1, 2}, {"a process started after the close", 1, uint64(3600*time.Second + 1500*time.Millisecond)}} {
		t.Run(c.name, func(t *testing.T) {
			l, r := ap("127.0.0.1:45005"), ap("127.0.0.1:8080")
			tr, clk := newTable(Options{})
			t0 := clk.t
			conn := mkEvent(evConnect, TCP, l.String(), r.String(), 100, 1, "curl")
			conn.Sk = 1
			feed(tr, conn)
			clk.t = t0.Add(time.Second)
			cl := mkEvent(evClose, TCP, l.String(), r.String(), 100, 1, "curl")
			cl.Sk = 1
			feed(tr, cl)
			clk.t = t0.Add(2 * time.Second)
			refused := mkEvent(evClose, TCP, l.String(), r.String(), 200, c.start, "other")
			refused.Sk = c.sk
			feed(tr, refused)
			if got, ok := tr.lookupAt(TCP, l, r, t0.Add(500*time.Millisecond), true); !ok || got.PID != 100 {
				t.Errorf("event of the first connection: %+v %v, want pid 100", got, ok)
			}
			at := t0.Add(4 * time.Second)
			clk.t = at
			if got, ok := tr.lookupAt(TCP, l, r, at, true); ok {
				t.Errorf("event stamped after the refused attempt: %+v, want no answer", got)
			}
		})
	}
}

// TestTableHistoryAcceptedBehindListener: a pre-forked server's worker
// accepted a connection on a listener the master opened long before; the
// access-log line is read seconds after the close. Connections the server
// accepts leave accept records, so the open listener hides nothing and the
// worker is named; not when the host accepts through io_uring (no record),
// nor when a local peer connected from the tuple again after the close.
func TestTableHistoryAcceptedBehindListener(t *testing.T) {
	l, r := ap("127.0.0.1:8080"), ap("127.0.0.1:45010")
	for _, c := range []struct {
		name    string
		between func(tr *Tracker)
		want    uint32
	}{
		{"listener open since before", nil, 201},
		{"an io_uring accept was seen", func(tr *Tracker) { tr.uringAccepted.Store(true) }, 0},
		{"the local peer connected from the tuple again", func(tr *Tracker) {
			feed(tr, mkEvent(evConnect, TCP, r.String(), l.String(), 300, 300_000_000, "curl"))
		}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, clk := newTable(Options{Retention: 30 * time.Second})
			tr.ownNS = 0
			feed(tr, mkEvent(evListen, TCP, "0.0.0.0:8080", "0.0.0.0:0", 200, 200_000_000, "nginx"))
			clk.t = clk.t.Add(time.Second)
			feed(tr, mkEvent(evAccept, TCP, l.String(), r.String(), 201, 201_000_000, "nginx"))
			clk.t = clk.t.Add(5 * time.Millisecond)
			feed(tr, mkEvent(evClose, TCP, l.String(), r.String(), 201, 201_000_000, "nginx"))
			closed := clk.t
			clk.t = clk.t.Add(time.Second)
			if c.between != nil {
				c.between(tr)
			}
			at := closed.Add(3 * time.Second)
			clk.t = at.Add(50 * time.Millisecond)
			got, ok := tr.lookupAt(TCP, l, r, at, true)
			if c.want == 0 {
				// Not the worker's record: at most the listener's own
				// record (a listener answer, which the watcher gives only
				// for a listener one process holds).
				if ok && got.Source != SourceListener {
					t.Errorf("got %+v, want no record of the connection", got)
				}
				return
			}
			if !ok || got.PID != int(c.want) {
				t.Errorf("got %+v %v, want pid %d", got, ok, c.want)
			}
		})
	}
}
