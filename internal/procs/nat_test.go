package procs

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeConntrack answers Get from a list of entries, by either tuple, as
// the kernel's ctnetlink get does.
type fakeConntrack struct {
	mu      sync.Mutex
	entries []ConntrackEntry
	err     error
	gets    atomic.Int32
}

func (f *fakeConntrack) Get(_ Transport, src, dst netip.AddrPort) (ConntrackEntry, bool, error) {
	f.gets.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return ConntrackEntry{}, false, f.err
	}
	for _, e := range f.entries {
		if e.OrigSrc == src && e.OrigDst == dst || e.ReplySrc == src && e.ReplyDst == dst {
			return e, true, nil
		}
	}
	return ConntrackEntry{}, false, nil
}

func (f *fakeConntrack) Close() error { return nil }

var (
	hostIP   = netip.MustParseAddr("203.0.113.65")
	ctrIP    = netip.MustParseAddr("172.17.0.2")
	outside  = netip.MustParseAddr("198.51.100.2")
	edgePeer = addrPort(outside, 34420)
	pubPort  = addrPort(hostIP, 8080)
	ctrSrv   = addrPort(ctrIP, 80)
	// dockerd's placeholder listener on the published port.
	placeholder = Socket{Transport: TCP, Local: addrPort(netip.IPv4Unspecified(), 8080), Listen: true, Inode: 10, PID: 50, StartKey: 1}
	dockerd     = &Process{PID: 50, StartKey: 1, Name: "dockerd"}
	// The container's accepted connection, in its own namespace.
	ctrConn = Socket{Transport: TCP, Local: ctrSrv, Remote: edgePeer, Inode: 11, PID: 60, StartKey: 2, NetNS: 4026532000, Foreign: true}
	ctrProc = &Process{PID: 60, StartKey: 2, Name: "nginx", ContainerID: "c0ffee", NetNS: 4026532000, Foreign: true}
	dnat    = ConntrackEntry{OrigSrc: edgePeer, OrigDst: pubPort, ReplySrc: ctrSrv, ReplyDst: edgePeer}
)

func natWatcher(t *testing.T, ct Conntrack, socks []Socket, procs ...*Process) (*Watcher, *fakeEngine) {
	t.Helper()
	f := &fakeEngine{addrs: []netip.Addr{hostIP}}
	f.set(socks, procs...)
	return newTestWatcher(t, f, Config{NATLookup: ct != nil, NAT: ct, MinRescanInterval: time.Hour}), f
}

func TestConntrackEntrySocketSide(t *testing.T) {
	masq := ConntrackEntry{OrigSrc: addrPort(ctrIP, 53844), OrigDst: edgePeer, ReplySrc: edgePeer, ReplyDst: addrPort(hostIP, 53844)}
	for _, c := range []struct {
		name          string
		e             ConntrackEntry
		local, remote netip.AddrPort
		wantL, wantR  netip.AddrPort
		ok            bool
	}{
		{"dnat inbound", dnat, pubPort, edgePeer, ctrSrv, edgePeer, true},
		{"masquerade outbound", masq, addrPort(hostIP, 53844), edgePeer, addrPort(ctrIP, 53844), edgePeer, true},
		{"untranslated outbound", ConntrackEntry{OrigSrc: pubPort, OrigDst: edgePeer, ReplySrc: edgePeer, ReplyDst: pubPort}, pubPort, edgePeer, pubPort, edgePeer, true},
		{"other tuple", dnat, addrPort(hostIP, 9), edgePeer, netip.AddrPort{}, netip.AddrPort{}, false},
	} {
		l, r, ok := c.e.socketSide(c.local, c.remote)
		if l != c.wantL || r != c.wantR || ok != c.ok {
			t.Errorf("%s: socketSide = %v %v %v, want %v %v %v", c.name, l, r, ok, c.wantL, c.wantR, c.ok)
		}
	}
}

// The rule of issue 14: a placeholder listener of the published port is no
// proof for a DNATed tuple; the container's socket answers.
func TestNATTranslatedTupleBeatsListener(t *testing.T) {
	ct := &fakeConntrack{entries: []ConntrackEntry{dnat}}
	w, _ := natWatcher(t, ct, []Socket{placeholder, ctrConn}, dockerd, ctrProc)
	p, via := w.LookupVia(time.Time{}, TCP, pubPort, edgePeer)
	if p == nil || p.PID != 60 || p.ContainerID != "c0ffee" || via != ViaNAT {
		t.Fatalf("DNATed tuple = %+v via %v, want the container's nginx (60) via nat", p, via)
	}
	// Cached per tuple: a second event costs no query.
	if p, _ := w.LookupVia(time.Time{}, TCP, pubPort, edgePeer); p == nil || p.PID != 60 {
		t.Fatalf("second lookup = %+v", p)
	}
	if n := ct.gets.Load(); n != 1 {
		t.Errorf("conntrack queried %d times, want 1 (cached per tuple)", n)
	}
	// A peer conntrack knows nothing of: the listener answers, as before.
	if p, via := w.LookupVia(time.Time{}, TCP, pubPort, addrPort(outside, 1)); p == nil || p.PID != 50 || via != ViaListener {
		t.Errorf("untranslated tuple = %+v via %v, want the listener 50", p, via)
	}
	st := w.Stats()
	if st.NATHits != 2 || st.NATTranslated != 1 || st.NATQueries != 2 {
		t.Errorf("stats nat hits/translated/queries = %d/%d/%d, want 2/1/2", st.NATHits, st.NATTranslated, st.NATQueries)
	}
}

// Without the NAT lookup the listener answers: the wrong process the rule
// above exists for (what TestNATTranslatedTupleBeatsListener fails on
// without it).
func TestNATOffNamesThePlaceholder(t *testing.T) {
	w, _ := natWatcher(t, nil, []Socket{placeholder, ctrConn}, dockerd, ctrProc)
	if p, via := w.LookupVia(time.Time{}, TCP, pubPort, edgePeer); p == nil || p.PID != 50 || via != ViaListener {
		t.Fatalf("without NAT lookup = %+v via %v, want the placeholder 50 via listener", p, via)
	}
}

// A translated tuple whose socket nobody holds answers nothing, never the
// listener of the untranslated port.
func TestNATTranslatedWithoutOwnerAnswersNothing(t *testing.T) {
	ct := &fakeConntrack{entries: []ConntrackEntry{dnat}}
	w, _ := natWatcher(t, ct, []Socket{placeholder}, dockerd)
	if p, via := w.LookupVia(time.Time{}, TCP, pubPort, edgePeer); p != nil {
		t.Fatalf("= %+v via %v, want nothing", p, via)
	}
	if st := w.Stats(); st.UnansweredNAT != 1 {
		t.Errorf("UnansweredNAT = %d, want 1", st.UnansweredNAT)
	}
}

// Masquerade: the event's source is the host's address and port; the
// container's client answers. No socket at all has the event's tuple.
func TestNATMasqueradeOnMiss(t *testing.T) {
	cli := Socket{Transport: TCP, Local: addrPort(ctrIP, 53844), Remote: edgePeer, Inode: 12, PID: 61, StartKey: 3, NetNS: 4026532000, Foreign: true}
	cliP := &Process{PID: 61, StartKey: 3, Name: "curl", ContainerID: "c0ffee", Foreign: true}
	masq := ConntrackEntry{OrigSrc: cli.Local, OrigDst: edgePeer, ReplySrc: edgePeer, ReplyDst: addrPort(hostIP, 53844)}
	ct := &fakeConntrack{entries: []ConntrackEntry{masq}}
	w, _ := natWatcher(t, ct, []Socket{cli}, cliP)
	if p, via := w.LookupVia(time.Time{}, TCP, addrPort(hostIP, 53844), edgePeer); p == nil || p.PID != 61 || via != ViaNAT {
		t.Fatalf("masqueraded source = %+v via %v, want curl (61) via nat", p, via)
	}
}

// An exact socket of the event's tuple is proof: conntrack is not asked.
func TestNATExactSocketNeedsNoConntrack(t *testing.T) {
	ct := &fakeConntrack{entries: []ConntrackEntry{dnat}}
	local := Socket{Transport: TCP, Local: pubPort, Remote: edgePeer, Inode: 13, PID: 70, StartKey: 4}
	w, _ := natWatcher(t, ct, []Socket{placeholder, local}, dockerd, &Process{PID: 70, StartKey: 4})
	if p, via := w.LookupVia(time.Time{}, TCP, pubPort, edgePeer); p == nil || p.PID != 70 || via != ViaSocket {
		t.Fatalf("= %+v via %v, want 70 via socket", p, via)
	}
	if n := ct.gets.Load(); n != 0 {
		t.Errorf("conntrack queried %d times for an exact socket", n)
	}
}

// Without CAP_NET_ADMIN: one log line, counted, and lookups go on as
// without NAT (the listener answers).
func TestNATUnavailableDegrades(t *testing.T) {
	ct := &fakeConntrack{err: fmt.Errorf("%w: ctnetlink get: operation not permitted", ErrConntrackUnavailable)}
	w, _ := natWatcher(t, ct, []Socket{placeholder, ctrConn}, dockerd, ctrProc)
	for i := 0; i < 3; i++ {
		if p, _ := w.LookupVia(time.Time{}, TCP, pubPort, addrPort(outside, uint16(1000+i))); p == nil || p.PID != 50 {
			t.Fatalf("lookup %d = %+v, want the listener", i, p)
		}
	}
	if n := ct.gets.Load(); n != 1 {
		t.Errorf("conntrack asked %d times after it was unavailable, want 1", n)
	}
	if st := w.Stats(); st.NATUnavailable != 1 {
		t.Errorf("NATUnavailable = %d, want 1", st.NATUnavailable)
	}
}

// A failed query or a spent budget: a listener match cannot be told from
// a translated tuple's, so it is not given (and counted).
func TestNATUncheckedListenerIsNotGiven(t *testing.T) {
	ct := &fakeConntrack{err: errors.New("netlink: no buffer space")}
	w, _ := natWatcher(t, ct, []Socket{placeholder}, dockerd)
	if p, _ := w.LookupVia(time.Time{}, TCP, pubPort, edgePeer); p != nil {
		t.Fatalf("= %+v, want nothing", p)
	}
	st := w.Stats()
	if st.UnansweredNATUnchecked != 1 || st.NATErrors != 1 {
		t.Errorf("UnansweredNATUnchecked, NATErrors = %d, %d, want 1, 1", st.UnansweredNATUnchecked, st.NATErrors)
	}

	ct2 := &fakeConntrack{}
	n := newNATSource(ct2, 2, time.Hour, nil)
	for i := 0; i < 5; i++ {
		n.translate(TCP, pubPort, addrPort(outside, uint16(2000+i)))
	}
	if got := ct2.gets.Load(); got != 2 || n.budget.Load() != 3 {
		t.Errorf("budget 2: %d queries, %d refused, want 2, 3", got, n.budget.Load())
	}
}

func TestNATConcurrentLookups(t *testing.T) {
	ct := &fakeConntrack{entries: []ConntrackEntry{dnat}}
	w, _ := natWatcher(t, ct, []Socket{placeholder, ctrConn}, dockerd, ctrProc)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if p, _ := w.LookupVia(time.Time{}, TCP, pubPort, edgePeer); p == nil || p.PID != 60 {
					t.Errorf("concurrent lookup = %+v", p)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// In event-driven mode a miss the feed has no record of is answered
// "unknown" without a rescan; a NAT's outside tuple is such a miss (no
// socket and no record has it), so conntrack must be asked before.
func TestNATMasqueradeOnEventDrivenMiss(t *testing.T) {
	cli := Socket{Transport: TCP, Local: addrPort(ctrIP, 53844), Remote: edgePeer, Inode: 12, PID: 61, StartKey: 3, NetNS: 4026532000, Foreign: true}
	cliP := &Process{PID: 61, StartKey: 3, Name: "curl", ContainerID: "c0ffee", Foreign: true}
	masq := ConntrackEntry{OrigSrc: cli.Local, OrigDst: edgePeer, ReplySrc: edgePeer, ReplyDst: addrPort(hostIP, 53844)}
	ct := &fakeConntrack{entries: []ConntrackEntry{masq}}
	f := &fakeEngine{addrs: []netip.Addr{hostIP}}
	f.set([]Socket{cli}, cliP)
	feed := &fakeFeed{}
	w := newTestWatcher(t, f, Config{NATLookup: true, NAT: ct, MinRescanInterval: time.Hour, Fallback: feed, Changes: &fakeClock{}})
	if !w.Stats().EventDriven {
		t.Fatal("watcher is not in event-driven mode")
	}
	if p, via := w.LookupVia(time.Time{}, TCP, addrPort(hostIP, 53844), edgePeer); p == nil || p.PID != 61 || via != ViaNAT {
		t.Fatalf("masqueraded source = %+v via %v, want curl (61) via nat (stats %+v)", p, via, w.Stats())
	}
	if feed.recalls.Load() == 0 {
		t.Error("the feed was not asked")
	}
}
