//go:build linux

package procs

// The 200k-socket host (issue 12, goal 1): 100k loopback connections, both
// ends held by 20 helper processes, on 127.12.0.0/16 with ports
// 41000-41499 (bench.Placement) so that the fleet takes no ephemeral port
// of 127.0.0.1 from other programs. Opt-in, it takes a minute or two and
// ~1 GB of kernel memory:
//
//	NETPROCBEAT_BENCH_200K=1 go test -count=1 -run Scale200k -v ./internal/procs/
//
// It asserts correctness only: every held connection sampled resolves, both
// ends, to the process that holds it, and every new connection to its
// dialer; never another process. The timings it logs (wait per lookup, cold
// resolution, rescans) and the watcher's memory per 100k sockets are
// reported in docs/benchmarks.md, not asserted.

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/testing/bench"
)

// scalePlacement is this package's share of loopback for large fleets:
// ports 41000-41499 (processor/add_network_process's benchmarks take
// 41500-41999, so the two packages' fleets can run at once).
var scalePlacement = bench.Placement{Net: [2]byte{127, 12}, PortBase: 41000, Ports: 500}

func skipUnless200k(tb testing.TB) {
	if os.Getenv("NETPROCBEAT_BENCH_200K") == "" {
		tb.Skip("200k sockets: set NETPROCBEAT_BENCH_200K=1 to run")
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func TestScale200k(t *testing.T) {
	skipUnless200k(t)
	t0 := time.Now()
	f := bench.StartPlaced(t, 20, 200000, scalePlacement)
	t.Logf("fleet: %d holders, %d connections, %d sockets, started in %v", len(f.Holders), len(f.Conns), f.Sockets, time.Since(t0).Round(time.Millisecond))

	heap0 := heapInUse()
	engine := newLinuxEngine(t)
	cfg := DefaultConfig() // rescan_timeout 1s, as shipped
	cfg.Fallback = NewResolveSource(engine, nil, 16, cfg.MinRescanInterval, cfg.RescanTimeout)
	w := New(engine, cfg, nil)
	t.Cleanup(func() { w.Close() })

	// The first snapshot: the first walk reads every fd table (200k
	// readlinks) and may need more than one rescan budget (it resumes).
	t1 := time.Now()
	deadline := time.Now().Add(5 * time.Minute)
	for w.snap.Load().gen == 0 || w.Stats().Sockets == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot after 5 minutes: %+v", w.Stats())
		}
		// A lookup asks for the rescan (and waits at most rescan_timeout).
		w.Lookup(TCP, f.Conns[0].Client, f.Conns[0].Server)
		time.Sleep(50 * time.Millisecond)
	}
	st := w.Stats()
	heap1 := heapInUse()
	engine.mu.Lock()
	es := engine.stats
	engine.mu.Unlock()
	t.Logf("first snapshot after %v: %d rows, %d rescans (%d cut short by rescan_timeout), last rescan %v",
		time.Since(t1).Round(time.Millisecond), st.Sockets, st.Rescans, es.cutShort, st.LastRescan.Round(time.Millisecond))
	perHundredK := float64(heap1-heap0) / (float64(st.Sockets) / 100000)
	t.Logf("watcher heap: %.1f MiB for %d rows = %.1f MiB per 100k sockets", float64(heap1-heap0)/(1<<20), st.Sockets, perHundredK/(1<<20))

	var maxWait atomic.Int64
	timed := func(local, remote netip.AddrPort) *Process {
		s := time.Now()
		p := w.Lookup(TCP, local, remote)
		if d := int64(time.Since(s)); d > maxWait.Load() {
			maxWait.Store(d) // racy max, good enough for a report
		}
		return p
	}

	// Held connections, both ends, while a goroutine keeps rescans coming
	// (as misses on a busy host do): lookups answer from the snapshot in
	// hand.
	rng := rand.New(rand.NewPCG(12, 12))
	sample := make([]bench.Conn, 5000)
	for i := range sample {
		sample[i] = f.Conns[rng.IntN(len(f.Conns))]
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				w.requestRescan()
			}
		}
	}()
	rescans0 := w.Stats().Rescans
	t2 := time.Now()
	type end struct {
		local, remote netip.AddrPort
		owner         int
	}
	var pending []end
	for _, c := range sample {
		pending = append(pending, end{c.Client, c.Server, c.Owner}, end{c.Server, c.Client, c.Owner})
	}
	total := len(pending)
	firstPass := 0
	for round := 0; len(pending) > 0; round++ {
		var left []end
		for _, e := range pending {
			p := timed(e.local, e.remote)
			switch {
			case p == nil:
				left = append(left, e)
			case p.PID != e.owner:
				t.Errorf("%v -> %v: PID %d, want %d", e.local, e.remote, p.PID, e.owner)
			}
		}
		if round == 0 {
			firstPass = total - len(left)
		}
		pending = left
		if len(pending) > 0 {
			if round > 60 {
				t.Fatalf("%d of %d held connection ends never resolved; stats %+v", len(pending), total, w.Stats())
			}
			time.Sleep(time.Second)
		}
	}
	heldTime := time.Since(t2)
	t.Logf("held: %d ends looked up, %d resolved on the first pass, all resolved in %v with %d rescans meanwhile; max wait of a lookup %v",
		total, firstPass, heldTime.Round(time.Millisecond), w.Stats().Rescans-rescans0, time.Duration(maxWait.Load()).Round(time.Microsecond))
	// Then 10 s of lookups of the same ends while rescans keep coming: each
	// is answered from the snapshot in hand, never waiting for one.
	t3, looked, unresolved := time.Now(), 0, 0
	rescans0 = w.Stats().Rescans
	for time.Since(t3) < 10*time.Second {
		for _, c := range sample[:500] {
			for _, e := range [2]end{{c.Client, c.Server, c.Owner}, {c.Server, c.Client, c.Owner}} {
				looked++
				switch p := timed(e.local, e.remote); {
				case p == nil:
					unresolved++
				case p.PID != e.owner:
					t.Errorf("%v -> %v: PID %d, want %d", e.local, e.remote, p.PID, e.owner)
				}
			}
		}
	}
	close(stop)
	wg.Wait()
	if unresolved > 0 {
		t.Errorf("%d of %d lookups of held connections unresolved while rescans ran", unresolved, looked)
	}
	t.Logf("held, during rescans: %d lookups in %v, %d unresolved, %d rescans (last %v); max wait of a lookup %v",
		looked, time.Since(t3).Round(time.Millisecond), unresolved, w.Stats().Rescans-rescans0, w.Stats().LastRescan.Round(time.Millisecond), time.Duration(maxWait.Load()).Round(time.Microsecond))

	// New connections: each dialled by a holder after the snapshot; the
	// first lookup is cold.
	var cold []time.Duration
	resolveHits0 := w.Stats().ResolveHits
	for i := 0; i < 20; i++ {
		h := f.Dialer(i)
		target := f.Holders[(i*7)%len(f.Holders)].Listen
		local, err := h.Dial(target)
		if err != nil {
			t.Fatal(err)
		}
		s := time.Now()
		p := timed(local, target)
		cold = append(cold, time.Since(s))
		for tries := 0; p == nil && tries < 60; tries++ {
			time.Sleep(time.Second)
			p = w.Lookup(TCP, local, target)
		}
		if p == nil || p.PID != h.PID {
			t.Fatalf("new connection %v -> %v: got %+v, want PID %d", local, target, p, h.PID)
		}
	}
	slices.Sort(cold)
	st = w.Stats()
	engine.search.mu.Lock()
	fullReads, readlinks, unchanged := engine.search.fullReads, engine.search.readlinks, engine.search.unchanged
	engine.search.mu.Unlock()
	t.Logf("cold: 20 new connections, first lookup median %v, max %v; %d answered by the exact lookup; owner search: %d fd tables read whole, %d readlinks, %d processes skipped unchanged",
		cold[len(cold)/2].Round(time.Microsecond), cold[len(cold)-1].Round(time.Microsecond), st.ResolveHits-resolveHits0, fullReads, readlinks, unchanged)
	t.Logf("max wait of any lookup: %v (rescan_timeout %v); stats %+v", time.Duration(maxWait.Load()).Round(time.Microsecond), cfg.RescanTimeout, st)
}
