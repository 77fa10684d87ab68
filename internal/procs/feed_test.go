package procs

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// fakeFeed is a SocketFeed with no records: every Recall misses.
type fakeFeed struct {
	gaps    atomic.Uint64
	recalls atomic.Int32
	behind  atomic.Bool // its misses are not complete
}

func (f *fakeFeed) Recall(Transport, netip.AddrPort, netip.AddrPort, time.Time) (Socket, *Process, bool) {
	f.recalls.Add(1)
	return Socket{}, nil, false
}

func (f *fakeFeed) FeedGaps() uint64 { return f.gaps.Load() }

func (f *fakeFeed) RecallComplete(t Transport, local, remote netip.AddrPort, at, _ time.Time) (Socket, *Process, bool, bool) {
	s, p, ok := f.Recall(t, local, remote, at)
	return s, p, ok, !f.behind.Load()
}

// TestEventDrivenMissNeedsNoRescan: with a feed and a change clock, a miss
// whose tuple the feed has no record of is answered without a rescan while
// the feed has missed nothing since the snapshot; after a gap, or with the
// mode off, it rescans as before.
func TestEventDrivenMissNeedsNoRescan(t *testing.T) {
	missing := netip.MustParseAddrPort("127.0.0.1:40001")
	for _, tc := range []struct {
		name        string
		safety      time.Duration
		gapAfter    bool // a gap between the snapshot and the miss
		behind      bool // the feed's miss is not complete
		wantRescan  bool
		eventDriven bool
	}{
		{name: "event-driven", wantRescan: false, eventDriven: true},
		{name: "event-driven after a gap", gapAfter: true, wantRescan: true, eventDriven: true},
		{name: "mode off", safety: -1, wantRescan: true},
		{name: "event-driven, feed behind the kernel", behind: true, wantRescan: true, eventDriven: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifyingEngine()
			v.table([]Socket{listener, conn}, procA, procB)
			feed := &fakeFeed{}
			w := New(v, Config{MinRescanInterval: time.Millisecond, Fallback: feed, Changes: &fakeClock{}, SafetyRescanInterval: tc.safety}, nil)
			t.Cleanup(func() { w.Close() })
			if p := w.Lookup(TCP, client, server); p == nil || p.PID != 200 {
				t.Fatalf("held connection = %+v, want PID 200", p)
			}
			if got := w.Stats().EventDriven; got != tc.eventDriven {
				t.Fatalf("EventDriven = %v, want %v", got, tc.eventDriven)
			}
			if tc.gapAfter {
				feed.gaps.Add(1)
			}
			feed.behind.Store(tc.behind)
			time.Sleep(5 * time.Millisecond) // past min_rescan_interval
			before := v.scans.Load()
			if p := w.Lookup(TCP, missing, server); p != nil {
				t.Fatalf("a tuple nobody holds = %+v", p)
			}
			rescanned := v.scans.Load() > before
			if rescanned != tc.wantRescan {
				t.Errorf("rescanned = %v, want %v (stats %+v)", rescanned, tc.wantRescan, w.Stats())
			}
			if st := w.Stats(); (st.FeedMisses == 1) == tc.wantRescan {
				t.Errorf("FeedMisses = %d with rescan %v", st.FeedMisses, tc.wantRescan)
			}
			if feed.recalls.Load() == 0 {
				t.Error("the feed was not asked")
			}
		})
	}
}

// TestEventDrivenSnapshotStaysFresh: in event-driven mode a snapshot goes
// stale after SafetyRescanInterval, not socket_cache_ttl, so hits ask for
// no rescan; with the mode off they do.
func TestEventDrivenSnapshotStaysFresh(t *testing.T) {
	for _, safety := range []time.Duration{time.Hour, -1} {
		v := newVerifyingEngine()
		v.table([]Socket{listener, conn}, procA, procB)
		w := New(v, Config{SocketTTL: 10 * time.Millisecond, MinRescanInterval: time.Millisecond, Fallback: &fakeFeed{}, Changes: &fakeClock{}, SafetyRescanInterval: safety}, nil)
		if p := w.Lookup(TCP, client, server); p == nil || p.PID != 200 {
			t.Fatalf("held connection = %+v, want PID 200", p)
		}
		before := v.scans.Load()
		for i := 0; i < 20; i++ {
			time.Sleep(5 * time.Millisecond)
			if p := w.Lookup(TCP, client, server); p == nil || p.PID != 200 {
				t.Fatalf("held connection = %+v, want PID 200", p)
			}
		}
		// Let a requested rescan run.
		time.Sleep(20 * time.Millisecond)
		rescans := v.scans.Load() - before
		if safety > 0 && rescans != 0 {
			t.Errorf("event-driven: %d rescans for hits on a snapshot younger than the safety interval", rescans)
		}
		if safety < 0 && rescans == 0 {
			t.Error("mode off: no rescan for hits on a stale snapshot")
		}
		w.Close()
	}
}

// TestLearnedRowDroppedWhenItFails: a connection the exact lookup found is
// answered from its learned row until its owner no longer holds it; then
// the row is dropped and the connection is not named for its old owner.
func TestLearnedRowDroppedWhenItFails(t *testing.T) {
	v := newVerifyingEngine()
	v.table([]Socket{listener}, procA, procB)
	r := &fakeResolver{verifyingEngine: v}
	v.hold(2, procKey{procB.PID, procB.StartKey}, 12)
	r.sock = Socket{Transport: TCP, Local: client, Remote: server, Inode: 2, FD: 12, PID: procB.PID, StartKey: procB.StartKey}
	w := newVerifyingWatcher(t, v, Config{MinRescanInterval: time.Hour, NegativeTTL: time.Millisecond,
		Fallback: NewResolveSource(r, nil, 100, time.Hour, time.Second)})
	for i := 0; i < 3; i++ {
		if p := w.Lookup(TCP, client, server); p == nil || p.PID != 200 {
			t.Fatalf("lookup %d = %+v, want PID 200", i, p)
		}
	}
	if st := w.Stats(); st.LearnedHits != 2 || st.Learned != 1 || r.calls.Load() != 1 {
		t.Fatalf("LearnedHits %d, Learned %d, exact lookups %d; want 2, 1, 1", st.LearnedHits, st.Learned, r.calls.Load())
	}
	// The client closes the socket: its descriptor no longer holds it, and
	// the kernel's exact lookup no longer has it.
	v.hold(2, procKey{0, 0}, 0)
	r.gone = true
	time.Sleep(2 * time.Millisecond)
	if p := w.Lookup(TCP, client, server); p != nil {
		t.Fatalf("after the close = %+v, want no answer", p)
	}
	if st := w.Stats(); st.Learned != 0 {
		t.Errorf("Learned = %d after the failed verification, want 0", st.Learned)
	}
}
