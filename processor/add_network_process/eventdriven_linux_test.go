//go:build linux

package add_network_process

// Rescans and CPU per minute of a busy host, with the eBPF tracker, in the
// two modes (issue 12, goal 2): "rescan" (the tracker as a fallback source
// and change clock only: snapshots go stale after socket_cache_ttl and
// misses rescan) and "event-driven" (procs.Config.SafetyRescanInterval:
// the view is kept current from the tracker's records). Opt-in; it loads
// the tracker (root, BTF) and runs 2 x 30 s:
//
//	NETPROCBEAT_BENCH_EVENTS=1 go test -count=1 -run EventDrivenCost -v ./processor/add_network_process/
//
// The busy host: 10k held loopback connections (20k sockets, 50 holder
// processes on 127.12.0.0/16), 50 new connections per second (held), and
// a beat looking up ~1000 held-connection endpoints, 150 new-connection
// endpoints and 100 endpoints of connections that do not exist per
// second. CPU is this process's (watcher, tracker reader, the lookups and
// the driving of the holders); the holders' own is not counted. The test
// asserts only that no lookup names a wrong process; the numbers are
// logged for docs/benchmarks.md.

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/internal/procs"
	"github.com/netprocbeat/netprocbeat/internal/tracker"
	"github.com/netprocbeat/netprocbeat/testing/bench"
)

func TestEventDrivenCost(t *testing.T) {
	if os.Getenv("NETPROCBEAT_BENCH_EVENTS") == "" {
		t.Skip("set NETPROCBEAT_BENCH_EVENTS=1 to measure rescans and CPU per minute in both modes")
	}
	const dur = 30 * time.Second
	f := bench.StartPlaced(t, 50, 20000, largePlacement)
	for _, mode := range []string{"rescan", "event-driven"} {
		tr, err := tracker.New(tracker.Options{})
		if err != nil {
			t.Skipf("eBPF tracker unavailable here: %v", err)
		}
		src := newTrackerSource(tr)
		clock, ok := src.(procs.ChangeClock)
		if !ok {
			tr.Close()
			t.Skipf("the tracker's change counters are unavailable: %v", tr.EpochsErr())
		}
		engine, err := procs.NewEngine("/")
		if err != nil {
			t.Fatal(err)
		}
		cfg := procs.DefaultConfig()
		cfg.Changes = clock
		if mode == "rescan" {
			cfg.SafetyRescanInterval = -1
		}
		// As procs.Shared builds it.
		cfg.Fallback = procs.NewResolveSource(engine, src, 16, cfg.MinRescanInterval, cfg.RescanTimeout)
		w := procs.New(engine, cfg, nil)
		for c := f.Conns[0]; w.Lookup(procs.TCP, c.Client, c.Server) == nil; {
			time.Sleep(100 * time.Millisecond)
		}
		if got := w.Stats().EventDriven; got != (mode == "event-driven") {
			t.Fatalf("%s: EventDriven = %v", mode, got)
		}

		rng := rand.New(rand.NewPCG(1, 2))
		wrong := 0
		check := func(what string, p *procs.Process, want int) {
			if p != nil && p.PID != want {
				wrong++
				t.Errorf("%s: %s named PID %d, want %d", mode, what, p.PID, want)
			}
		}
		feed := src.(procs.SocketFeed)
		gaps0 := feed.FeedGaps()
		st0, cpu0, start := w.Stats(), bench.CPUTime(), time.Now()
		newConns, answeredNew := 0, 0
		for i := 0; time.Since(start) < dur; i++ {
			tick := time.Now()
			// One new connection (held), its client end looked up 3 times.
			h := f.Dialer(i)
			target := f.Holders[(i*7)%len(f.Holders)].Listen
			if local, err := h.Dial(target); err == nil {
				newConns++
				for k := 0; k < 3; k++ {
					p := w.Lookup(procs.TCP, local, target)
					check("new connection", p, h.PID)
					if p != nil && k == 2 {
						answeredNew++
					}
				}
			}
			// Held connections, both ends.
			for k := 0; k < 10; k++ {
				c := f.Conns[rng.IntN(len(f.Conns))]
				check("held client end", w.Lookup(procs.TCP, c.Client, c.Server), c.Owner)
				check("held server end", w.Lookup(procs.TCP, c.Server, c.Client), c.Owner)
			}
			// Endpoints of connections that do not exist (an event about
			// a connection refused, a scan): distinct tuples.
			for k := 0; k < 2; k++ {
				ghost := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 12, 251, byte(rng.IntN(250) + 1)}), uint16(42000+rng.IntN(20000)))
				if p := w.Lookup(procs.TCP, ghost, target); p != nil {
					wrong++
					t.Errorf("%s: a connection that does not exist named PID %d", mode, p.PID)
				}
			}
			time.Sleep(max(0, 20*time.Millisecond-time.Since(tick)))
		}
		el := time.Since(start)
		cpu := bench.CPUTime() - cpu0
		st := w.Stats()
		gaps := feed.FeedGaps() - gaps0
		trs := tr.Stats()
		perMin := func(v float64) float64 { return v * float64(time.Minute) / float64(el) }
		t.Logf("%s: %v, %d new connections (%d answered by the 3rd lookup); rescans %.1f/min (last %v, %d rows); CPU %.2f s/min (%.1f%% of a core); lookups %d, hits %d, misses %d, feed misses %d, resolve hits %d, learned hits %d, tracker hits %d, wait timeouts %d; tracker gaps %d (lost %d, missed %d, evicted %d); wrong answers %d",
			mode, el.Round(time.Second), newConns, answeredNew, perMin(float64(st.Rescans-st0.Rescans)), st.LastRescan.Round(time.Millisecond), st.Sockets,
			perMin(cpu.Seconds()), 100*cpu.Seconds()/el.Seconds(), st.Lookups-st0.Lookups, st.Hits-st0.Hits, st.Misses-st0.Misses,
			st.FeedMisses-st0.FeedMisses, st.ResolveHits-st0.ResolveHits, st.LearnedHits-st0.LearnedHits, st.TrackerHits-st0.TrackerHits, st.WaitTimeouts-st0.WaitTimeouts, gaps, trs.Lost, trs.Missed, trs.Evicted, wrong)
		w.Close() // closes the tracker too
	}
}
