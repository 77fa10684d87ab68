package procs

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// closeTrackingSource is a fallback that fails the test if it is asked
// after (or while) it is closed, as the eBPF tracker would crash.
type closeTrackingSource struct {
	t        *testing.T
	closed   atomic.Bool
	inRecall atomic.Int32
	asked    atomic.Int64
	late     atomic.Int64
}

func (s *closeTrackingSource) Recall(Transport, netip.AddrPort, netip.AddrPort, time.Time) (Socket, *Process, bool) {
	s.inRecall.Add(1)
	defer s.inRecall.Add(-1)
	s.asked.Add(1)
	if s.closed.Load() {
		s.late.Add(1)
	}
	time.Sleep(50 * time.Microsecond) // widen the window a Close could hit
	return Socket{}, nil, false
}

func (s *closeTrackingSource) Close() error {
	if s.inRecall.Load() != 0 {
		s.late.Add(1)
	}
	s.closed.Store(true)
	return nil
}

// TestLookupRacingClose: lookups running while the watcher closes never
// use the fallback after or during its Close, never start a rescan after
// Close (the WaitGroup panic), and after Close answer nil at once.
func TestLookupRacingClose(t *testing.T) {
	for it := 0; it < 30; it++ {
		f := &fakeEngine{}
		f.set([]Socket{listener, conn}, procA, procB)
		src := &closeTrackingSource{t: t}
		// Every miss may start a rescan: many start while Close waits.
		w := New(f, Config{MinRescanInterval: time.Nanosecond, Fallback: src}, nil)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					miss := addrPort(lo, uint16(1000+(g*1000+i)%20000))
					w.Lookup(TCP, miss, server)
					w.Lookup(TCP, client, server)
				}
			}(g)
		}
		time.Sleep(time.Duration(it%5) * time.Millisecond)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		asked := src.asked.Load()
		if p := w.Lookup(TCP, client, server); p != nil {
			t.Fatalf("iteration %d: lookup after Close answered %d", it, p.PID)
		}
		close(stop)
		wg.Wait()
		if n := src.late.Load(); n != 0 {
			t.Fatalf("iteration %d: fallback asked %d times during or after its Close", it, n)
		}
		if got := src.asked.Load(); got != asked {
			t.Fatalf("iteration %d: fallback asked %d times after Close returned", it, got-asked)
		}
		if err := w.Close(); err != nil { // twice is fine
			t.Fatal(err)
		}
	}
}

// TestAwaitRescanStopsAtRescanDeadline: a lookup joining a rescan waits at
// most until that rescan's start plus RescanTimeout, not RescanTimeout from
// when it joined, so the lookups of one event (and of every event during a
// long rescan) together wait no longer than RescanTimeout.
func TestAwaitRescanStopsAtRescanDeadline(t *testing.T) {
	f := &fakeEngine{delay: time.Hour} // a rescan that never ends in time
	w := newTestWatcher(t, f, Config{RescanTimeout: time.Hour, MinRescanInterval: time.Nanosecond})
	seen := w.snap.Load()
	w.mu.Lock()
	deadline := w.runDeadline
	running := w.running != nil
	w.mu.Unlock()
	if !running {
		t.Fatal("the first rescan is not running")
	}
	// A lookup arriving after the rescan's deadline does not wait (with
	// the old rule it waited RescanTimeout, an hour, from now).
	if s := w.awaitRescan(seen, deadline.Add(time.Millisecond), deadline.Add(time.Hour)); s != nil {
		t.Fatalf("awaitRescan after the deadline returned snapshot %d", s.gen)
	}
	if got := w.Stats().WaitTimeouts; got != 1 {
		t.Errorf("WaitTimeouts = %d, want 1", got)
	}
}
