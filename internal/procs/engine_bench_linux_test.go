//go:build linux

package procs

// Engine benchmarks on real sockets held by a fleet of helper processes
// (testing/bench): where a rescan's time goes, and the full walk against the
// incremental one. docs/benchmarks.md has the numbers.
//
//	go test -run '^$' -bench Engine -benchmem -count 3 ./internal/procs/
//
// Sizes with 50k sockets or 1000 processes run only with
// NETPROCBEAT_BENCH_LARGE=1, 200k sockets (20 processes, 100k connections)
// only with NETPROCBEAT_BENCH_200K=1.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/testing/bench"
)

type benchSize struct{ procs, sockets int }

var engineSizes = []benchSize{
	{100, 1000}, {266, 12000}, {100, 10000}, {1000, 10000}, {100, 50000}, {1000, 50000}, {20, 200000},
}

func (s benchSize) String() string { return fmt.Sprintf("procs=%d/sockets=%d", s.procs, s.sockets) }

func skipLargeSize(b *testing.B, s benchSize) {
	if s.sockets >= 200000 {
		skipUnless200k(b)
		return
	}
	if (s.procs > 300 || s.sockets > 20000) && os.Getenv("NETPROCBEAT_BENCH_LARGE") == "" {
		b.Skipf("%v: set NETPROCBEAT_BENCH_LARGE=1 to run", s)
	}
}

// fleetOf is the shared fleet of size s: at 200k sockets on this package's
// own loopback /16 (scalePlacement), so that 100k connections take no
// ephemeral port of 127.0.0.1 from other programs.
func fleetOf(b *testing.B, s benchSize) *bench.Fleet {
	if s.sockets >= 200000 {
		return bench.SharedPlaced(b, s.procs, s.sockets, scalePlacement)
	}
	return bench.Shared(b, s.procs, s.sockets)
}

func reportEngine(b *testing.B, e *linuxEngine, before engineStats, n int) {
	d := float64(b.N)
	b.ReportMetric(float64(n), "sockets")
	b.ReportMetric(float64(e.stats.reread-before.reread)/d, "fdtables-read/op")
	b.ReportMetric(float64(e.stats.readlinks-before.readlinks)/d, "readlinks/op")
	b.ReportMetric(float64(e.stats.fullWalks-before.fullWalks)/d, "fullwalks/op")
	b.ReportMetric(float64(e.stats.verified-before.verified)/d, "rechecks/op")
}

// BenchmarkEngineTables: reading and parsing /proc/net/{tcp,tcp6,udp,udp6},
// the part of every rescan that does not depend on processes.
func BenchmarkEngineTables(b *testing.B) {
	for _, s := range engineSizes {
		b.Run(s.String(), func(b *testing.B) {
			skipLargeSize(b, s)
			fleetOf(b, s)
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
// socket must come back with its owner. walk=incremental-recheck is that
// rescan when every trusted process's socket descriptors are due for their
// re-check (verifyEvery; without the tracker's change clock), its worst case.
func BenchmarkEngineSockets(b *testing.B) {
	for _, s := range engineSizes {
		b.Run(s.String(), func(b *testing.B) {
			skipLargeSize(b, s)
			f := fleetOf(b, s)
			for _, mode := range []string{"full", "incremental", "incremental-recheck"} {
				b.Run("walk="+mode, func(b *testing.B) {
					e := newLinuxEngine(b)
					if mode != "full" && !e.fdCounts {
						b.Skip("this kernel does not report fd counts: every walk is full")
					}
					ctx := context.Background()
					dst, err := e.Sockets(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					before := e.stats
					cpu0 := bench.CPUTime()
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
							if mode == "incremental-recheck" {
								for _, p := range e.fds {
									p.checkedAt = time.Time{}
								}
							}
							b.StartTimer()
						}
						dst, err = e.Sockets(ctx, dst[:0])
						if err != nil {
							b.Fatal(err)
						}
						if mode != "full" {
							b.StopTimer()
							if pid := ownerOf(dst, local); pid != local.Owner {
								b.Fatalf("new connection %v owned by %d, want %d", local.Client, pid, local.Owner)
							}
							b.StartTimer()
						}
					}
					b.StopTimer()
					b.ReportMetric(float64((bench.CPUTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op(incl.setup)")
					reportEngine(b, e, before, len(dst))
				})
			}
		})
	}
}

func BenchmarkEngineTablesDiag(b *testing.B) {
	for _, s := range engineSizes {
		b.Run(s.String(), func(b *testing.B) {
			skipLargeSize(b, s)
			fleetOf(b, s)
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

// BenchmarkEngineResolve: the targeted cold path the watcher takes for a
// miss through NewResolveSource (docs/benchmarks.md): a sock_diag exact lookup of
// the new connection plus the incremental owner walk for its inode only, no
// table dump. Setup as walk=incremental.
func BenchmarkEngineResolve(b *testing.B) {
	for _, s := range engineSizes {
		b.Run(s.String(), func(b *testing.B) {
			skipLargeSize(b, s)
			f := fleetOf(b, s)
			e := newLinuxEngine(b)
			if !e.useDiag || !e.fdCounts {
				b.Skip("needs sock_diag and fd counts")
			}
			ctx := context.Background()
			if _, err := e.Sockets(ctx, nil); err != nil {
				b.Fatal(err)
			}
			before := e.stats
			search0 := [3]uint64{e.search.fullReads, e.search.readlinks, e.search.unchanged}
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
				c0 := bench.CPUTime()
				b.StartTimer()
				sock, found, err := e.Resolve(ctx, TCP, local, target)
				b.StopTimer()
				cpu += bench.CPUTime() - c0
				if err != nil || !found || sock.PID != h.PID {
					b.Fatalf("Resolve(%v -> %v) = %+v, %v, %v; want PID %d", local, target, sock, found, err, h.PID)
				}
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			reportEngine(b, e, before, s.sockets)
			// The owner search's own work (Resolve does not walk).
			d := float64(b.N)
			b.ReportMetric(float64(e.search.fullReads-search0[0])/d, "fdtables-read/op")
			b.ReportMetric(float64(e.search.readlinks-search0[1])/d, "readlinks/op")
			b.ReportMetric(float64(e.search.unchanged-search0[2])/d, "procs-unchanged/op")
		})
	}
}
