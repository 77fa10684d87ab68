//go:build linux

package procs

// Engine benchmarks on real sockets held by a fleet of helper processes
// (testing/bench): where a rescan's time goes, and the full walk against the
// incremental one. docs/benchmarks.md has the numbers.
//
//	go test -run '^$' -bench Engine -benchmem -count 3 ./internal/procs/
//
// Sizes with 50k sockets or 1000 processes run only with
// NETPROCBEAT_BENCH_LARGE=1.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/testing/bench"
	"golang.org/x/sys/unix"
)

func init() { bench.RunHolderIfRequested() }

type benchSize struct{ procs, sockets int }

var engineSizes = []benchSize{
	{100, 1000}, {266, 12000}, {100, 10000}, {1000, 10000}, {100, 50000}, {1000, 50000},
}

func (s benchSize) String() string { return fmt.Sprintf("procs=%d/sockets=%d", s.procs, s.sockets) }

func skipLargeSize(b *testing.B, s benchSize) {
	if (s.procs > 300 || s.sockets > 20000) && os.Getenv("NETPROCBEAT_BENCH_LARGE") == "" {
		b.Skipf("%v: set NETPROCBEAT_BENCH_LARGE=1 to run", s)
	}
}

// newLinuxEngine is the engine on this host's /proc.
func newLinuxEngine(tb testing.TB) *linuxEngine {
	tb.Helper()
	e, err := NewEngine("/")
	if err != nil {
		tb.Fatal(err)
	}
	return e.(*linuxEngine)
}

func reportEngine(b *testing.B, e *linuxEngine, before engineStats, n int) {
	d := float64(b.N)
	b.ReportMetric(float64(n), "sockets")
	b.ReportMetric(float64(e.stats.reread-before.reread)/d, "fdtables-read/op")
	b.ReportMetric(float64(e.stats.readlinks-before.readlinks)/d, "readlinks/op")
	b.ReportMetric(float64(e.stats.fullWalks-before.fullWalks)/d, "fullwalks/op")
}

// BenchmarkEngineTables: reading and parsing /proc/net/{tcp,tcp6,udp,udp6},
// the part of every rescan that does not depend on processes.
func BenchmarkEngineTables(b *testing.B) {
	for _, s := range engineSizes {
		b.Run(s.String(), func(b *testing.B) {
			skipLargeSize(b, s)
			bench.Shared(b, s.procs, s.sockets)
			e := newLinuxEngine(b)
			var dst []Socket
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dst = dst[:0]
				for _, f := range procNetFiles {
					data, err := e.readFile(filepath.Join(e.proc, "net", f.name))
					if err != nil {
						continue
					}
					dst, _ = ParseProcNet(data, f.t, dst)
				}
			}
			b.ReportMetric(float64(len(dst)), "sockets")
		})
	}
}

// BenchmarkEngineSockets: one whole Sockets call. walk=full re-reads every
// process's fd table (the old engine's only mode, minus its allocations);
// walk=incremental is the common rescan: one of the 16 highest-PID helpers opened one
// new connection since the last rescan (outside the timer), and the new
// socket must come back with its owner.
func BenchmarkEngineSockets(b *testing.B) {
	for _, s := range engineSizes {
		b.Run(s.String(), func(b *testing.B) {
			skipLargeSize(b, s)
			f := bench.Shared(b, s.procs, s.sockets)
			for _, mode := range []string{"full", "incremental"} {
				b.Run("walk="+mode, func(b *testing.B) {
					e := newLinuxEngine(b)
					if mode == "incremental" && !e.fdCounts {
						b.Skip("this kernel does not report fd counts: every walk is full")
					}
					ctx := context.Background()
					dst, err := e.Sockets(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					before := e.stats
					cpu0 := cpuTime()
					b.ReportAllocs()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						var local bench.Conn
						if mode == "full" {
							e.lastFull = time.Time{}
						} else {
							b.StopTimer()
							h := f.Dialer(i)
							target := f.Holders[i%len(f.Holders)].Listen
							ap, err := h.Dial(target)
							if err != nil {
								b.Fatal(err)
							}
							local = bench.Conn{Client: ap, Server: target, Owner: h.PID}
							b.StartTimer()
						}
						dst, err = e.Sockets(ctx, dst[:0])
						if err != nil {
							b.Fatal(err)
						}
						if mode == "incremental" {
							b.StopTimer()
							if pid := ownerOf(dst, local); pid != local.Owner {
								b.Fatalf("new connection %v owned by %d, want %d", local.Client, pid, local.Owner)
							}
							b.StartTimer()
						}
					}
					b.StopTimer()
					b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op(incl.setup)")
					reportEngine(b, e, before, len(dst))
				})
			}
		})
	}
}

// cpuTime is the CPU time (user+system, all threads) this process used.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
		got, err := e.Sockets(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if e.stats.fullWalks != 1 {
			t.Fatalf("round %d: %d full walks, want only the first", round, e.stats.fullWalks)
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
func BenchmarkEngineTablesDiag(b *testing.B) {
	for _, s := range engineSizes {
		b.Run(s.String(), func(b *testing.B) {
			skipLargeSize(b, s)
			bench.Shared(b, s.procs, s.sockets)
			e := newLinuxEngine(b)
			var dst []Socket
			var err error
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dst = dst[:0]
				for _, f := range []struct {
					fam, proto uint8
					t          Transport
				}{{2, 6, TCP}, {10, 6, TCP}, {2, 17, UDP}, {10, 17, UDP}} {
					if dst, err = e.diagDump(f.fam, f.proto, f.t, dst); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(len(dst)), "sockets")
		})
	}
}

// BenchmarkEngineResolve: the targeted cold path the watcher could use for a
// miss (not wired yet, see docs/benchmarks.md): a sock_diag exact lookup of
// the new connection plus the incremental owner walk for its inode only, no
// table dump. Setup as walk=incremental.
func BenchmarkEngineResolve(b *testing.B) {
	for _, s := range engineSizes {
		b.Run(s.String(), func(b *testing.B) {
			skipLargeSize(b, s)
			f := bench.Shared(b, s.procs, s.sockets)
			e := newLinuxEngine(b)
			if !e.useDiag || !e.fdCounts {
				b.Skip("needs sock_diag and fd counts")
			}
			ctx := context.Background()
			if _, err := e.Sockets(ctx, nil); err != nil {
				b.Fatal(err)
			}
			before := e.stats
			var cpu time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				h := f.Dialer(i)
				target := f.Holders[i%len(f.Holders)].Listen
				local, err := h.Dial(target)
				if err != nil {
					b.Fatal(err)
				}
				c0 := cpuTime()
				b.StartTimer()
				sock, found, err := e.Resolve(ctx, TCP, local, target)
				b.StopTimer()
				cpu += cpuTime() - c0
				if err != nil || !found || sock.PID != h.PID {
					b.Fatalf("Resolve(%v -> %v) = %+v, %v, %v; want PID %d", local, target, sock, found, err, h.PID)
				}
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			reportEngine(b, e, before, s.sockets)
		})
	}
}

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

// TestResolveHistoryAnswersNewConnection: a watcher with NewResolveHistory
// resolves a connection born after its snapshot without a rescan, and the
// query budget sends misses beyond it down the usual path.
func TestResolveHistoryAnswersNewConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("starts helper processes")
	}
	f := bench.Start(t, 4, 40)
	eng := newLinuxEngine(t)
	if !eng.useDiag {
		t.Skip("sock_diag disabled")
	}
	cfg := Config{MinRescanInterval: time.Hour, SocketTTL: time.Hour}
	cfg.History = NewResolveHistory(eng, nil, 2, time.Hour, time.Second)
	w := New(eng, cfg, nil)
	defer w.Close()
	c := f.Conns[0]
	if p := w.Lookup(TCP, c.Client, c.Server); p == nil || p.PID != c.Owner {
		t.Fatalf("fleet connection resolved to %+v, want %d", p, c.Owner)
	}
	rescans := w.Stats().Rescans
	h, target := f.Holders[3], f.Holders[0].Listen
	local, err := h.Dial(target)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // the repeats come from the answer cache
		if p := w.Lookup(TCP, local, target); p == nil || p.PID != h.PID {
			t.Fatalf("lookup %d of a new connection = %+v, want PID %d", i, p, h.PID)
		}
	}
	if st := w.Stats(); st.Rescans != rescans {
		t.Errorf("%d rescans for a connection History resolved", st.Rescans-rescans)
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
