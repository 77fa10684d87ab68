//go:build linux

package add_network_process

// Benchmarks of the processor and its watcher against the seed, packetbeat's
// procs.ProcessesWatcher, on the same real loopback sockets held by a fleet
// of helper processes (testing/bench). Nothing here asserts a duration:
// docs/benchmarks.md records the numbers and the ratios.
//
//	go test -run '^$' -bench . -benchmem -count 3 ./processor/add_network_process/
//
// Sizes with 50k sockets or 1000 processes run only with
// NETPROCBEAT_BENCH_LARGE=1, 200k sockets (100k connections held by 20
// processes) only with NETPROCBEAT_BENCH_200K=1.

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/elastic/beats/v7/libbeat/beat"
	"github.com/elastic/beats/v7/libbeat/common"
	"github.com/elastic/beats/v7/libbeat/ecs"
	"github.com/elastic/beats/v7/packetbeat/pb"
	seedprocs "github.com/elastic/beats/v7/packetbeat/procs"
	"github.com/elastic/elastic-agent-libs/logp"
	"github.com/elastic/elastic-agent-libs/mapstr"

	"github.com/netprocbeat/netprocbeat/internal/procs"
	"github.com/netprocbeat/netprocbeat/testing/bench"
	"github.com/netprocbeat/netprocbeat/testing/helperproc"
)

func init() { helperproc.Main() }

// The fleet most comparisons run on.
const (
	basicProcs   = 100
	basicSockets = 1000
)

type size struct{ procs, sockets int }

// scaleSizes: the 266 processes / 12k sockets, then the grid.
var scaleSizes = []size{
	{100, 1000}, {266, 12000}, {100, 10000}, {1000, 10000}, {100, 50000}, {1000, 50000}, {20, 200000},
}

func large(s size) bool { return s.procs > 300 || s.sockets > 20000 }

// largePlacement is this package's share of loopback for the 200k-socket
// fleet (100k connections) and the event-driven measurement: 127.12.0.0/16,
// ports 41500-41999 (internal/procs takes 41000-41499), so that they take
// no ephemeral port of 127.0.0.1 from other programs.
var largePlacement = bench.Placement{Net: [2]byte{127, 12}, PortBase: 41500, Ports: 500}

// fleetOf is the shared fleet of size s.
func fleetOf(b *testing.B, s size) *bench.Fleet {
	if s.sockets >= 200000 {
		return bench.SharedPlaced(b, s.procs, s.sockets, largePlacement)
	}
	return bench.Shared(b, s.procs, s.sockets)
}

func (s size) String() string { return fmt.Sprintf("procs=%d/sockets=%d", s.procs, s.sockets) }

func skipLarge(b *testing.B, s size) {
	if s.sockets >= 200000 {
		if os.Getenv("NETPROCBEAT_BENCH_200K") == "" {
			b.Skipf("%v: set NETPROCBEAT_BENCH_200K=1 to run", s)
		}
		return
	}
	if large(s) && os.Getenv("NETPROCBEAT_BENCH_LARGE") == "" {
		b.Skipf("%v: set NETPROCBEAT_BENCH_LARGE=1 to run", s)
	}
}

func newOurs(tb testing.TB, cfg procs.Config) *procs.Watcher {
	return newOursResolve(tb, cfg, 0, 0)
}

// newOursResolve is newOurs with NewResolveSource answering snapshot misses
// (at most per queries per interval) when per > 0.
func newOursResolve(tb testing.TB, cfg procs.Config, per int, interval time.Duration) *procs.Watcher {
	tb.Helper()
	e, err := procs.NewEngine("/")
	if err != nil {
		tb.Fatal(err)
	}
	if per > 0 {
		cfg.Fallback = procs.NewResolveSource(e, nil, per, interval, time.Second)
		if cfg.Fallback == nil {
			tb.Skip("this engine cannot resolve single connections")
		}
	}
	w := procs.New(e, cfg, logp.NewNopLogger())
	tb.Cleanup(func() { w.Close() })
	return w
}

func newSeed(tb testing.TB) *seedprocs.ProcessesWatcher {
	tb.Helper()
	var s seedprocs.ProcessesWatcher
	if err := s.Init(seedprocs.ProcsConfig{Enabled: true}); err != nil {
		tb.Fatal(err)
	}
	return &s
}

func ipSlice(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

func seedTuple(local, remote netip.AddrPort) *common.IPPortTuple {
	t := common.NewIPPortTuple(4, ipSlice(local.Addr()), local.Port(), ipSlice(remote.Addr()), remote.Port())
	return &t
}

// pick returns a connection of the fleet whose client port no other fleet
// connection uses. Linux reuses an ephemeral port for connections to
// different peers; the seed keys its cache by local endpoint only and would
// name the wrong process for such a port (ours keys connections by both
// ends), which is a correctness difference, not a speed one.
func pick(f *bench.Fleet) bench.Conn {
	uses := map[netip.AddrPort]int{}
	for _, c := range f.Conns {
		uses[c.Client]++
	}
	for i := len(f.Conns) / 2; i < len(f.Conns); i++ {
		if uses[f.Conns[i].Client] == 1 {
			return f.Conns[i]
		}
	}
	return f.Conns[len(f.Conns)/2]
}

// BenchmarkCachedLookup: both endpoints of an event whose sockets are in the
// snapshot. ours = two Watcher.Lookup calls, seed = FindProcessesTupleTCP.
func BenchmarkCachedLookup(b *testing.B) {
	for _, s := range scaleSizes {
		b.Run(s.String(), func(b *testing.B) {
			skipLarge(b, s)
			f := fleetOf(b, s)
			c := pick(f)
			// impl=ours: procfs mode, every answer verified with one
			// readlinkat; impl=ours+clock: a ChangeClock whose counters do
			// not move (as the tracker's do not for an idle connection), so
			// the first verification is reused.
			for _, clock := range []bool{false, true} {
				name := map[bool]string{false: "impl=ours", true: "impl=ours+clock"}[clock]
				b.Run(name, func(b *testing.B) {
					cfg := procs.Config{}
					if clock {
						cfg.Changes = stillClock{}
					}
					w := newOurs(b, cfg)
					if p := warmUp(w, c); p == nil || p.PID != c.Owner {
						b.Fatalf("warm-up lookup = %+v, want PID %d", p, c.Owner)
					}
					b.ReportAllocs()
					before := w.Stats().Verifications
					b.ResetTimer()
					var src, dst *procs.Process
					for i := 0; i < b.N; i++ {
						src = w.Lookup(procs.TCP, c.Client, c.Server)
						dst = w.Lookup(procs.TCP, c.Server, c.Client)
					}
					b.StopTimer()
					if src == nil || dst == nil || src.PID != c.Owner || dst.PID != c.Owner {
						b.Fatalf("lookups = %+v, %+v, want PID %d", src, dst, c.Owner)
					}
					b.ReportMetric(float64(w.Stats().Verifications-before)/float64(b.N), "verifications/op")
				})
			}
			b.Run("impl=seed", func(b *testing.B) {
				sw := newSeed(b)
				t := seedTuple(c.Client, c.Server)
				if r := sw.FindProcessesTupleTCP(t); r.Src.PID != c.Owner || r.Dst.PID != c.Owner {
					b.Fatalf("seed warm-up = %+v, want PID %d", r, c.Owner)
				}
				b.ReportAllocs()
				b.ResetTimer()
				var r *common.ProcessTuple
				for i := 0; i < b.N; i++ {
					r = sw.FindProcessesTupleTCP(t)
				}
				b.StopTimer()
				if r.Src.PID != c.Owner || r.Dst.PID != c.Owner {
					b.Fatalf("seed = %+v, want PID %d", r, c.Owner)
				}
			})
		})
	}
}

// warmUp looks c up until the watcher's first snapshot has landed and
// answers it: at 200k sockets the first owner walk takes more than one
// rescan_timeout (it resumes on the next rescan), and a lookup stops
// waiting at the budget (or is answered by the exact lookup meanwhile).
func warmUp(w *procs.Watcher, c bench.Conn) *procs.Process {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		p := w.Lookup(procs.TCP, c.Client, c.Server)
		if p != nil && w.Stats().Sockets > 0 || time.Now().After(deadline) {
			return p
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stillClock is a procs.ChangeClock whose counters never move.
type stillClock struct{}

func (stillClock) PortEpoch(procs.Transport, uint16) uint32 { return 7 }
func (stillClock) ProcEpoch(int) uint32                     { return 9 }

func netEvent(src, dst netip.AddrPort) *beat.Event {
	return &beat.Event{Fields: mapstr.M{
		"source":      mapstr.M{"ip": src.Addr().String(), "port": int(src.Port())},
		"destination": mapstr.M{"ip": dst.Addr().String(), "port": int(dst.Port())},
		"network":     mapstr.M{"transport": "tcp"},
	}}
}

func newBenchProcessor(tb testing.TB, w *procs.Watcher) *processor {
	return newBenchProcessorFields(tb, w, nil)
}

// newBenchProcessorFields is newBenchProcessor with include_fields set
// (nil: the defaults).
func newBenchProcessorFields(tb testing.TB, w *procs.Watcher, fields []string) *processor {
	tb.Helper()
	acquire := func(string, procs.Config, *logp.Logger) (*procs.Watcher, func(), error) {
		return w, func() {}, nil
	}
	cfg := defaultConfig()
	cfg.IncludeFields = fields
	p, err := newProcessor(cfg, logp.NewNopLogger(), acquire)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// BenchmarkRunCached: the whole processor on an event whose sockets are
// cached, default include_fields. Events are built in batches outside the
// timer; Run writes three process objects into each.
//
// impl=ours: procfs mode, both answers verified with a readlinkat and a
// statx each (the verification dominates); impl=ours+clock: a ChangeClock
// whose counters do not move, as the tracker's do not for an idle
// connection, so what is measured is the processor's own work (reading the
// fields, two cached lookups, writing the objects); impl=seed: what
// packetbeat does per event with its procs, in the same run:
// FindProcessesTupleTCP and its pb.Fields marshalling of source.process,
// destination.process and process (makeProcess + MarshalStruct).
func BenchmarkRunCached(b *testing.B) {
	f := bench.Shared(b, basicProcs, basicSockets)
	c := pick(f)
	for _, clock := range []bool{false, true} {
		name := map[bool]string{false: "impl=ours", true: "impl=ours+clock"}[clock]
		b.Run(name, func(b *testing.B) {
			cfg := procs.Config{}
			if clock {
				cfg.Changes = stillClock{}
			}
			p := newBenchProcessor(b, newOurs(b, cfg))
			runEvents(b, p, c, nil)
		})
	}
	b.Run("impl=seed", func(b *testing.B) {
		sw := newSeed(b)
		t := seedTuple(c.Client, c.Server)
		run := func(ev *beat.Event) {
			r := sw.FindProcessesTupleTCP(t)
			var src, dst *ecs.Process
			if r.Src.PID > 0 {
				src = seedProcess(&r.Src)
				_ = pb.MarshalStruct(ev.Fields, "source.process", src)
			}
			if r.Dst.PID > 0 {
				dst = seedProcess(&r.Dst)
				_ = pb.MarshalStruct(ev.Fields, "destination.process", dst)
			}
			// packetbeat's rule: process is the destination's, else the source's.
			if dst == nil {
				dst = src
			}
			_ = pb.MarshalStruct(ev.Fields, "process", dst)
		}
		ev := netEvent(c.Client, c.Server)
		run(ev)
		if pid, _ := ev.GetValue("source.process.pid"); pid != int64(c.Owner) {
			b.Fatalf("seed source.process.pid = %v, want %d: %s", pid, c.Owner, ev.Fields.StringToPrint())
		}
		timeEvents(b, c, run)
	})
}

// timeEvents times run over events of connection c built in batches
// outside the timer, and reports the process's CPU time per op while the
// timer ran (cpu-ns/op: on this shared machine less disturbed by other
// processes than wall time; it includes the GC's work in the background).
func timeEvents(b *testing.B, c bench.Conn, run func(*beat.Event)) {
	const batch = 4096
	evs := make([]*beat.Event, batch)
	var cpu time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	c0 := bench.CPUTime()
	for i := 0; i < b.N; i++ {
		j := i % batch
		if j == 0 {
			b.StopTimer()
			cpu += bench.CPUTime() - c0
			for k := range evs {
				evs[k] = netEvent(c.Client, c.Server)
			}
			c0 = bench.CPUTime()
			b.StartTimer()
		}
		run(evs[j])
	}
	b.StopTimer()
	cpu += bench.CPUTime() - c0
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// seedProcess is packetbeat/pb's makeProcess (unexported), as of the pinned
// beats: the ECS process packetbeat writes for each side.
func seedProcess(p *common.Process) *ecs.Process {
	return &ecs.Process{
		Name:             p.Name,
		Args:             p.Args,
		Executable:       p.Exe,
		PID:              int64(p.PID),
		Parent:           &ecs.Process{PID: int64(p.PPID)},
		Start:            p.StartTime,
		WorkingDirectory: p.CWD,
	}
}

// runEvents times p.Run over events of connection c built in batches
// outside the timer, after checking one event's source.process.pid. check,
// if set, is called with that first enriched event. It reports the size of
// that event encoded as JSON (json-B/event), which is what every later
// stage of the pipeline carries.
func runEvents(b *testing.B, p *processor, c bench.Conn, check func(*beat.Event)) {
	b.Helper()
	// Warm-up: on a loaded machine the first rescan may outlast
	// rescan_timeout; retry (the snapshot then holds the fleet).
	var ev *beat.Event
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ev, _ = p.Run(netEvent(c.Client, c.Server))
		if ev == nil {
			b.Fatal("nil event")
		}
		if _, err := ev.GetValue("source.process"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if pid, err := ev.GetValue("source.process.pid"); pid != c.Owner && (err == nil || p.mask&fPID != 0) {
		b.Fatalf("source.process.pid = %v, want %d: %s", pid, c.Owner, ev.Fields.StringToPrint())
	}
	if _, err := ev.GetValue("source.process"); err != nil {
		b.Fatalf("no source.process: %s", ev.Fields.StringToPrint())
	}
	if check != nil {
		check(ev)
	}
	js, err := json.Marshal(ev.Fields)
	if err != nil {
		b.Fatal(err)
	}
	timeEvents(b, c, func(ev *beat.Event) {
		if _, err := p.Run(ev); err != nil {
			b.Fatal(err)
		}
	})
	b.ReportMetric(float64(len(js)), "json-B/event")
}

// BenchmarkRunFields: what each include_fields entry costs per event,
// against the defaults in the same run: fields=default, then for each
// default field the defaults without it (-name) and for each opt-in field
// the defaults with it (+name). A field's cost is the difference to
// fields=default in ns/op, B/op, allocs/op and json-B/event (the event's
// encoded size, which every later stage of the pipeline carries). Cached
// lookups with a still ChangeClock, as RunCached/impl=ours+clock, so the
// difference is the processor's own work. The parent.* fields describe the
// parent the first time the process is described, not per event: that cost
// is in BenchmarkDescribeProcess (internal/procs).
func BenchmarkRunFields(b *testing.B) {
	f := bench.Shared(b, basicProcs, basicSockets)
	c := pick(f)
	// DescribeParents, so that the +parent.* cases have parents to write.
	w := newOurs(b, procs.Config{Changes: stillClock{}, DescribeParents: true})
	var defaults []string
	for _, f := range includeFields {
		if f.def {
			defaults = append(defaults, f.name)
		}
	}
	run := func(name string, fields []string) {
		b.Run("fields="+name, func(b *testing.B) {
			p := newBenchProcessorFields(b, w, fields)
			runEvents(b, p, c, nil)
		})
	}
	run("default", nil)
	// Not an include_fields entry, but the largest single saving: the
	// third process object (process.*).
	b.Run("fields=default,set_process=false", func(b *testing.B) {
		p := newBenchProcessorFields(b, w, nil)
		p.cfg.SetProcess = false
		runEvents(b, p, c, nil)
	})
	for _, f := range includeFields {
		if f.def {
			run("-"+f.name, slices.DeleteFunc(slices.Clone(defaults), func(s string) bool { return s == f.name }))
		} else {
			run("+"+f.name, append(slices.Clone(defaults), f.name))
		}
	}
}

// BenchmarkMissStorm: every event names a local endpoint (127.0.0.1:1) no
// process owns, each with a different peer, so every tuple is new to the
// negative cache. ours: one Lookup per op, rescans bounded by
// min_rescan_interval (default 250ms); seed: FindProcessesTupleTCP rescans
// /proc/net/tcp and every /proc/<pid>/fd per event.
func BenchmarkMissStorm(b *testing.B) {
	bench.Shared(b, basicProcs, basicSockets)
	local := netip.MustParseAddrPort("127.0.0.1:1")
	remote := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), uint16(1024+i%60000))
	}
	for _, resolve := range []bool{false, true} {
		name := "impl=ours"
		if resolve {
			name = "impl=ours+resolve"
		}
		b.Run(name, func(b *testing.B) {
			cfg := procs.DefaultConfig()
			w := newOurs(b, cfg)
			if resolve {
				w = newOursResolve(b, cfg, 16, cfg.MinRescanInterval)
			}
			w.Lookup(procs.TCP, local, remote(0)) // the first miss waits for a rescan
			before := w.Stats().Rescans
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if w.Lookup(procs.TCP, local, remote(i+1)) != nil {
					b.Fatal("unowned endpoint resolved")
				}
			}
			el := time.Since(start)
			b.StopTimer()
			rescans := w.Stats().Rescans - before
			b.ReportMetric(float64(b.N)/el.Seconds(), "lookups/s")
			b.ReportMetric(float64(rescans)/max(el.Seconds()/cfg.MinRescanInterval.Seconds(), 1), "rescans/interval")
		})
	}
	b.Run("impl=seed", func(b *testing.B) {
		sw := newSeed(b)
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			r := sw.FindProcessesTupleTCP(seedTuple(local, remote(i+1)))
			if r.Src.PID != 0 {
				b.Fatal("unowned endpoint resolved")
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
		b.ReportMetric(1, "rescans/lookup")
	})
}

// BenchmarkColdResolve: each op, one of the fleet's 16 highest-PID helpers opens a new
// connection (outside the timer); the timed part is resolving its local end,
// which is in no snapshot yet: ours waits for one rescan (min_rescan_interval
// set to 1ns so that no op is rate-limited), the seed rescans on the miss.
func BenchmarkColdResolve(b *testing.B) {
	for _, s := range scaleSizes {
		b.Run(s.String(), func(b *testing.B) {
			skipLarge(b, s)
			f := fleetOf(b, s)
			targets := f.Holders
			for _, resolve := range []bool{false, true} {
				name := "impl=ours"
				if resolve {
					name = "impl=ours+resolve"
				}
				b.Run(name, func(b *testing.B) {
					if !resolve && s.sockets >= 200000 {
						// A rescan takes ~0.5-1 s here and long rescans
						// space themselves (procs: rescanSpacing): the
						// rescan path is not a cold path at this size.
						b.Skip("200k sockets: cold lookups take the resolve path")
					}
					w := newOurs(b, procs.Config{MinRescanInterval: time.Nanosecond})
					if resolve {
						// A budget no op of this benchmark reaches: this
						// measures the path, not the rate limit.
						w = newOursResolve(b, procs.Config{MinRescanInterval: time.Nanosecond}, 1<<20, time.Second)
					}
					c := pick(f)
					if p := warmUp(w, c); p == nil || p.PID != c.Owner {
						b.Fatalf("warm-up lookup = %+v, want PID %d", p, c.Owner)
					}
					before := w.Stats()
					var settle func()
					if !resolve {
						// A rescan longer than 100 ms spaces the next one to
						// three times its duration after its start, whatever
						// min_rescan_interval says (procs: rescanSpacing): at
						// 12k sockets here a rescan takes ~115 ms, and a miss
						// sooner than that is deferred, not answered. Wait it
						// out, untimed: this measures the rescan path, not
						// the rate limit.
						settle = func() {
							if d := w.Stats().LastRescan; d > 100*time.Millisecond {
								time.Sleep(3 * d)
							}
						}
					}
					coldLoop(b, f, targets, settle, func(local, target netip.AddrPort) int {
						if p := w.Lookup(procs.TCP, local, target); p != nil {
							return p.PID
						}
						return 0
					})
					st := w.Stats()
					b.ReportMetric(float64(st.Rescans-before.Rescans)/float64(b.N), "rescans/op")
					b.ReportMetric(float64(st.Sockets), "sockets")
				})
			}
			b.Run("impl=seed", func(b *testing.B) {
				sw := newSeed(b)
				coldLoop(b, f, targets, nil, func(local, target netip.AddrPort) int {
					return sw.FindProcessesTupleTCP(seedTuple(local, target)).Src.PID
				})
			})
		})
	}
}

// coldLoop times lookup on a connection dialled, outside the timer, from
// a holder that has not dialled before, and reports CPU time per op. The
// tuple conversion the seed needs is inside the timer, as it is part of its
// call. settle, if not nil, runs before each op, untimed. It stops the
// benchmark's timer when done.
func coldLoop(b *testing.B, f *bench.Fleet, targets []*bench.Holder, settle func(), lookup func(local, target netip.AddrPort) int) {
	var cpu time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if settle != nil {
			settle()
		}
		h := f.Dialer(i)
		target := targets[i%len(targets)].Listen
		local, err := h.Dial(target)
		if err != nil {
			b.Fatal(err)
		}
		c0 := bench.CPUTime()
		b.StartTimer()
		got := lookup(local, target)
		b.StopTimer()
		if got != h.PID {
			b.Fatalf("new connection %v -> %v resolved to PID %d, want %d", local, target, got, h.PID)
		}
		cpu += bench.CPUTime() - c0
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// BenchmarkParallelRun: the processor from 8 goroutines (SetParallelism on
// GOMAXPROCS) on cached events, alone and while another goroutine forces a
// rescan every 1ms with misses (rescans=busy): cached lookups read the
// snapshot without locks and never wait for a rescan.
func BenchmarkParallelRun(b *testing.B) {
	f := bench.Shared(b, basicProcs, basicSockets)
	c := pick(f)
	for _, busy := range []bool{false, true} {
		b.Run(fmt.Sprintf("rescans=%v", map[bool]string{false: "idle", true: "busy"}[busy]), func(b *testing.B) {
			w := newOurs(b, procs.Config{MinRescanInterval: time.Millisecond})
			p := newBenchProcessor(b, w)
			if w.Lookup(procs.TCP, c.Client, c.Server) == nil {
				b.Fatal("warm-up lookup missed")
			}
			stop := make(chan struct{})
			done := make(chan struct{})
			before := w.Stats().Rescans
			go func() {
				defer close(done)
				if !busy {
					return
				}
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					w.Lookup(procs.TCP, netip.MustParseAddrPort("127.0.0.1:1"), netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, 1}), uint16(1024+i%60000)))
					time.Sleep(time.Millisecond)
				}
			}()
			var misses atomic.Int64
			b.SetParallelism(8 / max(runtime.GOMAXPROCS(0), 1))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					ev := netEvent(c.Client, c.Server)
					if _, err := p.Run(ev); err != nil {
						b.Error(err)
					}
					if _, ok := ev.Fields["process"]; !ok {
						misses.Add(1)
					}
				}
			})
			b.StopTimer()
			close(stop)
			<-done
			if n := misses.Load(); n > 0 {
				b.Fatalf("%d cached events were not enriched", n)
			}
			b.ReportMetric(float64(w.Stats().Rescans-before), "rescans")
		})
	}
}

// BenchmarkEventConstruction is the share of BenchmarkParallelRun that is
// building the event, not processing it.
func BenchmarkEventConstruction(b *testing.B) {
	c := bench.Conn{Client: netip.MustParseAddrPort("127.0.0.1:40000"), Server: netip.MustParseAddrPort("127.0.0.1:80")}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = netEvent(c.Client, c.Server)
	}
}

// BenchmarkRandomTuples: lookups of random local loopback tuples (all
// misses, all distinct) mixed with cached hits; reports the heap in use
// after a GC before and after, which stays flat because the negative cache
// is capped and the snapshot is bounded by the socket table. Run with
// -benchtime=10000000x for the 10M lookups.
func BenchmarkRandomTuples(b *testing.B) {
	f := bench.Shared(b, basicProcs, basicSockets)
	c := pick(f)
	w := newOurs(b, procs.Config{})
	w.Lookup(procs.TCP, c.Client, c.Server)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	rng := rand.New(rand.NewPCG(1, 2))
	before := heap()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i&1 == 0 {
			w.Lookup(procs.TCP, c.Client, c.Server)
			continue
		}
		r := rng.Uint64()
		local := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(r), byte(r >> 8), byte(r >> 16)}), uint16(r>>24))
		remote := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(r >> 40), byte(r >> 48), byte(r >> 56)}), uint16(r>>32))
		w.Lookup(procs.TCP, local, remote)
	}
	b.StopTimer()
	after := heap()
	b.ReportMetric(float64(before)/(1<<20), "heapMB-before")
	b.ReportMetric(float64(after)/(1<<20), "heapMB-after")
	if after > before+256<<20 {
		b.Fatalf("heap grew from %d to %d bytes over %d lookups", before, after, b.N)
	}
}
