package procs

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/elastic/elastic-agent-libs/logp/logptest"
	"go.uber.org/goleak"
)

// fakeEngine serves a socket table and processes set by the test, and
// counts how often the watcher asks.
type fakeEngine struct {
	mu       sync.Mutex
	socks    []Socket
	procs    map[procKey]*Process
	addrs    []netip.Addr
	delay    time.Duration
	err      error
	scans    atomic.Int32
	procRead atomic.Int32
}

func (f *fakeEngine) Sockets(ctx context.Context, dst []Socket) ([]Socket, error) {
	f.scans.Add(1)
	f.mu.Lock()
	delay, err := f.delay, f.err
	dst = append(dst, f.socks...)
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return dst, ctx.Err()
		}
	}
	return dst, err
}

func (f *fakeEngine) Process(pid int, start uint64) (*Process, error) {
	f.procRead.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.procs[procKey{pid, start}]; ok {
		cp := *p
		return &cp, nil
	}
	return nil, errors.New("no such process")
}

func (f *fakeEngine) LocalAddrs() ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addrs, nil
}

func (f *fakeEngine) set(socks []Socket, procs ...*Process) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.socks = socks
	f.procs = map[procKey]*Process{}
	for _, p := range procs {
		f.procs[procKey{p.PID, p.StartKey}] = p
	}
}

var (
	lo       = netip.MustParseAddr("127.0.0.1")
	addrPort = netip.AddrPortFrom
	server   = addrPort(lo, 8080)
	client   = addrPort(lo, 40000)
	procA    = &Process{PID: 100, StartKey: 1, Name: "server"}
	procB    = &Process{PID: 200, StartKey: 7, Name: "client"}
	listener = Socket{Transport: TCP, Local: server, Listen: true, Inode: 1, PID: 100, StartKey: 1}
	conn     = Socket{Transport: TCP, Local: client, Remote: server, Inode: 2, PID: 200, StartKey: 7}
)

func newTestWatcher(t *testing.T, f *fakeEngine, cfg Config) *Watcher {
	t.Helper()
	w := New(f, cfg, logptest.NewTestingLogger(t, ""))
	t.Cleanup(func() { w.Close() })
	return w
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("time.Sleep"))
}

func TestLookupResolvesAndMissStormIsRateLimited(t *testing.T) {
	f := &fakeEngine{}
	f.set([]Socket{listener, conn}, procA, procB)
	w := newTestWatcher(t, f, Config{MinRescanInterval: time.Hour, NegativeTTL: time.Hour})

	if p := w.Lookup(TCP, client, server); p == nil || p.PID != 200 {
		t.Fatalf("client side = %+v, want PID 200", p)
	}
	if p := w.Lookup(TCP, server, client); p == nil || p.PID != 100 {
		t.Fatalf("server side = %+v, want PID 100", p)
	}
	before := f.scans.Load()
	unknown := addrPort(lo, 9999)
	for i := 0; i < 100000; i++ {
		if p := w.Lookup(TCP, unknown, server); p != nil {
			t.Fatalf("unknown tuple resolved to %+v", p)
		}
	}
	// The rate limit is an hour: a storm of misses must not start a rescan.
	if got := f.scans.Load() - before; got != 0 {
		t.Errorf("%d rescans during the miss storm, want 0 within one min_rescan_interval", got)
	}
	st := w.Stats()
	if st.NegativeHits < 99999 {
		t.Errorf("NegativeHits = %d, want the storm answered from the negative cache", st.NegativeHits)
	}
}

func TestConcurrentMissesShareOneRescan(t *testing.T) {
	f := &fakeEngine{delay: 50 * time.Millisecond}
	w := newTestWatcher(t, f, Config{MinRescanInterval: time.Millisecond})
	// Let the initial rescan finish on an empty table.
	waitFor(t, func() bool { return w.Stats().Rescans == 1 && w.snap.Load().gen == 1 })
	time.Sleep(5 * time.Millisecond)
	f.set([]Socket{listener, conn}, procA, procB)
	before := f.scans.Load()

	var wg sync.WaitGroup
	var resolved atomic.Int32
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p := w.Lookup(TCP, client, server); p != nil && p.PID == 200 {
				resolved.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := f.scans.Load() - before; got != 1 {
		t.Errorf("%d rescans for 16 concurrent misses, want 1 coalesced rescan", got)
	}
	if resolved.Load() != 16 {
		t.Errorf("%d of 16 lookups resolved after the shared rescan", resolved.Load())
	}
}

func TestDeferredMissResolvesAfterScheduledRescan(t *testing.T) {
	f := &fakeEngine{}
	w := newTestWatcher(t, f, Config{MinRescanInterval: 200 * time.Millisecond})
	waitFor(t, func() bool { return w.snap.Load().gen == 1 })
	f.set([]Socket{listener, conn}, procA, procB)
	// Inside the rate limit window: answered "unknown" at once, rescan scheduled.
	if p := w.Lookup(TCP, client, server); p != nil {
		t.Fatalf("resolved %+v before any rescan could see the socket", p)
	}
	waitFor(t, func() bool { return w.snap.Load().gen >= 2 })
	if p := w.Lookup(TCP, client, server); p == nil || p.PID != 200 {
		t.Fatalf("after the scheduled rescan: %+v, want PID 200", p)
	}
}

func TestRecycledPIDIsNeverReportedAsTheOldProcess(t *testing.T) {
	f := &fakeEngine{}
	f.set([]Socket{listener}, procA)
	w := newTestWatcher(t, f, Config{MinRescanInterval: time.Millisecond, ProcessTTL: time.Hour})
	if p := w.Lookup(TCP, server, client); p == nil || p.Name != "server" {
		t.Fatalf("got %+v, want server", p)
	}
	// PID 100 exits; a new process gets PID 100 (new start time) and binds
	// the same port. The process cache TTL is an hour, but identity differs.
	reborn := &Process{PID: 100, StartKey: 99, Name: "impostor"}
	l2 := listener
	l2.StartKey = 99
	f.set([]Socket{l2}, reborn)
	time.Sleep(2 * time.Millisecond)
	w.mu.Lock()
	ch := w.startRescanLocked(time.Now())
	w.mu.Unlock()
	<-ch
	if p := w.Lookup(TCP, server, client); p == nil || p.Name != "impostor" || p.StartKey != 99 {
		t.Fatalf("after PID reuse got %+v, want the new process (start 99)", p)
	}
}

func TestSlowRescanDoesNotBlockCachedLookups(t *testing.T) {
	f := &fakeEngine{}
	f.set([]Socket{listener, conn}, procA, procB)
	w := newTestWatcher(t, f, Config{MinRescanInterval: time.Millisecond, RescanTimeout: 5 * time.Second})
	if p := w.Lookup(TCP, client, server); p == nil {
		t.Fatal("not resolved")
	}
	f.mu.Lock()
	f.delay = 2 * time.Second
	f.mu.Unlock()
	w.mu.Lock()
	w.startRescanLocked(time.Now())
	w.mu.Unlock()
	done := make(chan struct{})
	go func() {
		for i := 0; i < 1000; i++ {
			if w.Lookup(TCP, client, server) == nil {
				t.Error("cached lookup failed during a rescan")
				break
			}
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("cached lookups blocked behind a 2 s rescan")
	}
}

func TestRescanFailureKeepsPreviousSnapshot(t *testing.T) {
	f := &fakeEngine{}
	f.set([]Socket{listener, conn}, procA, procB)
	w := newTestWatcher(t, f, Config{MinRescanInterval: time.Millisecond})
	if p := w.Lookup(TCP, client, server); p == nil {
		t.Fatal("not resolved")
	}
	f.mu.Lock()
	f.err = errors.New("proc is gone")
	f.mu.Unlock()
	time.Sleep(2 * time.Millisecond)
	w.mu.Lock()
	ch := w.startRescanLocked(time.Now())
	w.mu.Unlock()
	<-ch
	if p := w.Lookup(TCP, client, server); p == nil || p.PID != 200 {
		t.Fatalf("after a failed rescan got %+v, want the previous answer", p)
	}
	if w.Stats().Errors == 0 {
		t.Error("the failed rescan was not counted")
	}
}

func TestNegativeCacheIsBounded(t *testing.T) {
	f := &fakeEngine{}
	w := newTestWatcher(t, f, Config{NegativeCacheSize: 100, MinRescanInterval: time.Hour})
	waitFor(t, func() bool { return w.snap.Load().gen == 1 })
	for i := 1; i <= 10000; i++ {
		w.Lookup(UDP, addrPort(lo, uint16(i)), netip.AddrPort{})
	}
	if n := w.Stats().NegativeCache; n > 100 {
		t.Errorf("negative cache holds %d entries, cap is 100", n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// fakeSource answers like the eBPF tracker for one closed connection.
type fakeSource struct {
	sock Socket
	proc *Process
}

func (h fakeSource) Recall(t Transport, local, remote netip.AddrPort, _ time.Time) (Socket, *Process, bool) {
	if t == h.sock.Transport && local == h.sock.Local && remote == h.sock.Remote {
		return h.sock, h.proc, true
	}
	return Socket{}, nil, false
}

func TestFallbackResolvesClosedConnections(t *testing.T) {
	f := &fakeEngine{}
	f.set([]Socket{listener}, procA) // the client's socket is already gone
	gone := &Process{PID: 300, StartKey: 5, Name: "curl"}
	h := fakeSource{sock: Socket{Transport: TCP, Local: client, Remote: server, PID: 300, StartKey: 5}, proc: gone}
	w := newTestWatcher(t, f, Config{Fallback: h, MinRescanInterval: time.Hour})

	// The process has exited too: the engine cannot describe it, so the
	// minimal record the source kept is reported.
	if p := w.Lookup(TCP, client, server); p == nil || p.PID != 300 || p.Name != "curl" {
		t.Fatalf("closed client = %+v, want the source's PID 300", p)
	}
	// While the process lives, the engine's full description wins.
	alive := &Process{PID: 300, StartKey: 5, Name: "curl", Executable: "/usr/bin/curl"}
	f.set([]Socket{listener}, procA, alive)
	w.recalledMu.Lock()
	clear(w.recalled)
	w.recalledMu.Unlock()
	if p := w.Lookup(TCP, client, server); p == nil || p.Executable != "/usr/bin/curl" {
		t.Fatalf("live client = %+v, want the engine's description", p)
	}
	if st := w.Stats(); st.TrackerHits != 2 || st.ResolveHits != 0 {
		t.Errorf("TrackerHits, ResolveHits = %d, %d, want 2, 0", st.TrackerHits, st.ResolveHits)
	}
	// An unknown tuple is not invented by the source.
	if p := w.Lookup(TCP, addrPort(lo, 40001), server); p != nil {
		t.Errorf("unknown tuple resolved to %+v", p)
	}
}

func TestRescanOverBudgetMissesInsteadOfStalling(t *testing.T) {
	f := &fakeEngine{}
	f.set([]Socket{listener, conn}, procA, procB)
	w := newTestWatcher(t, f, Config{MinRescanInterval: time.Nanosecond, RescanTimeout: 50 * time.Millisecond})
	waitFor(t, func() bool { return w.snap.Load().gen == 1 && w.Stats().Rescans == 1 })
	// A /proc so large that a rescan cannot finish within its budget.
	f.mu.Lock()
	f.delay = time.Hour
	f.mu.Unlock()
	time.Sleep(time.Millisecond)
	start := time.Now()
	if p := w.Lookup(TCP, addrPort(lo, 40999), server); p != nil {
		t.Fatalf("resolved %+v while no rescan could finish", p)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Errorf("the lookup waited %v for a rescan with a 50ms budget", waited)
	}
	waitFor(t, func() bool { return w.Stats().Errors >= 1 })
	// The abandoned rescan kept the previous snapshot: known tuples resolve.
	if p := w.Lookup(TCP, client, server); p == nil || p.PID != 200 {
		t.Errorf("after an abandoned rescan got %+v, want the previous answer", p)
	}
}
