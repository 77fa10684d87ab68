package procs

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

// gatedTables is a fake winTableReader: each call announces itself on
// started and returns the canned table only once the test closes release,
// standing in for a GetExtendedTcpTable call that takes longer than the
// rescan budget (as Wine's does on a host with many sockets).
type gatedTables struct {
	tables  map[winTable][]byte
	started chan winTable
	release chan struct{}
	calls   atomic.Int32
	running atomic.Int32
	maxRun  atomic.Int32
}

func newGatedTables(t *testing.T) *gatedTables {
	return &gatedTables{
		tables: map[winTable][]byte{
			winTCP4: table(1, tcp4Row(t, stateEstab, "127.0.0.1", 50000, "127.0.0.1", 80, 1200)),
			winTCP6: table(0),
			winUDP4: table(1, udp4Row(t, "127.0.0.1", 53, 1300)),
			winUDP6: table(1, udp6Row("::1", 5353, 1200)),
		},
		started: make(chan winTable, 16),
		release: make(chan struct{}),
	}
}

func (g *gatedTables) read(t winTable, buf []byte) ([]byte, []byte, error) {
	g.calls.Add(1)
	n := g.running.Add(1)
	defer g.running.Add(-1)
	for {
		m := g.maxRun.Load()
		if n <= m || g.maxRun.CompareAndSwap(m, n) {
			break
		}
	}
	g.started <- t
	<-g.release
	return g.tables[t], buf, nil
}

func startKeyPlus(pid int) uint64 { return uint64(pid) + 1_000_000 }

// TestWinScanBoundedByBudget: a table call that outlives the rescan budget
// must not hold the rescan past it (the engine used to check its deadline
// only between calls, so a 50 s scan under Wine ignored a 10 s budget).
func TestWinScanBoundedByBudget(t *testing.T) {
	g := newGatedTables(t)
	s := newWinScanner(g.read, startKeyPlus)

	ctx, cancel := context.WithCancel(context.Background())
	type res struct {
		socks []Socket
		err   error
	}
	done := make(chan res, 1)
	keep := []Socket{{PID: 7}}
	go func() {
		socks, err := s.scan(ctx, keep)
		done <- res{socks, err}
	}()
	if got := <-g.started; got != winTCP4 {
		t.Fatalf("first table read = %v, want %v", got, winTCP4)
	}
	// The budget ends while the call is in flight (it stays blocked until
	// release): the scan must return now, with the context's error.
	cancel()
	r := <-done
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("scan error = %v, want one wrapping context.Canceled", r.err)
	}
	if len(r.socks) != 1 || r.socks[0].PID != 7 {
		t.Fatalf("scan returned %+v, want dst unchanged", r.socks)
	}
	if g.running.Load() != 1 {
		t.Fatalf("%d table calls in flight, want the abandoned one still blocked", g.running.Load())
	}

	// A scan that starts while the abandoned call is still blocked must not
	// start a second call; with its own budget gone it gives up too.
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := s.scan(ctx2, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("second scan error = %v, want context.Canceled", err)
	}
	// And one with budget left waits for the abandoned read, then reads all
	// four tables afresh: the abandoned read's rows are never used.
	done2 := make(chan res, 1)
	go func() {
		socks, err := s.scan(context.Background(), nil)
		done2 <- res{socks, err}
	}()
	close(g.release)
	r = <-done2
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The abandoned read saw its context end and stopped after one table.
	if got, want := g.calls.Load(), int32(1+4); got != want {
		t.Errorf("%d table calls, want %d (1 abandoned, then 4)", got, want)
	}
	if got := g.maxRun.Load(); got != 1 {
		t.Errorf("%d table calls ran at once, want at most 1", got)
	}
	want := []Socket{
		{Transport: TCP, Local: ap("127.0.0.1:50000"), Remote: ap("127.0.0.1:80"), PID: 1200, StartKey: startKeyPlus(1200)},
		{Transport: UDP, Local: ap("127.0.0.1:53"), Listen: true, PID: 1300, StartKey: startKeyPlus(1300)},
		{Transport: UDP, Local: ap("[::1]:5353"), Listen: true, PID: 1200, StartKey: startKeyPlus(1200)},
	}
	if len(r.socks) != len(want) {
		t.Fatalf("scan = %+v, want %+v", r.socks, want)
	}
	for i := range want {
		if r.socks[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, r.socks[i], want[i])
		}
	}
}

// TestWinScanStartKeysBounded: the per-owner OpenProcess calls that follow
// the table reads stop at the budget too, and a scan cut short there
// appends nothing.
func TestWinScanStartKeysBounded(t *testing.T) {
	g := newGatedTables(t)
	close(g.release)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var keys int
	s := newWinScanner(g.read, func(pid int) uint64 {
		keys++
		cancel() // the budget ends during the first owner's lookup
		return startKeyPlus(pid)
	})
	socks, err := s.scan(ctx, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("scan error = %v, want context.Canceled", err)
	}
	if len(socks) != 0 {
		t.Errorf("scan appended %d rows, want none from a scan cut short", len(socks))
	}
	if keys != 1 {
		t.Errorf("%d start-key lookups, want 1 (the budget ended during the first)", keys)
	}
}

// TestWinScanSkipsMissingFamily: a host without IPv6 has no IPv6 tables;
// the IPv4 rows still count.
func TestWinScanSkipsMissingFamily(t *testing.T) {
	g := newGatedTables(t)
	close(g.release)
	read := func(tb winTable, buf []byte) ([]byte, []byte, error) {
		if tb == winTCP6 || tb == winUDP6 {
			return nil, buf, errNoFamily
		}
		return g.read(tb, buf)
	}
	socks, err := newWinScanner(read, startKeyPlus).scan(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != 2 || socks[0].PID != 1200 || socks[1].PID != 1300 {
		t.Errorf("scan = %+v, want the two IPv4 rows", socks)
	}
}

// TestWinScanReadError: a failing table call fails the scan with its error
// and appends nothing.
func TestWinScanReadError(t *testing.T) {
	boom := errors.New("read MIB_UDPTABLE_OWNER_PID: GetExtendedUdpTable failed")
	g := newGatedTables(t)
	close(g.release)
	read := func(tb winTable, buf []byte) ([]byte, []byte, error) {
		if tb == winUDP4 {
			return nil, buf, boom
		}
		return g.read(tb, buf)
	}
	socks, err := newWinScanner(read, startKeyPlus).scan(context.Background(), []Socket{{PID: 9}})
	if !errors.Is(err, boom) {
		t.Fatalf("scan error = %v, want %v", err, boom)
	}
	if len(socks) != 1 || socks[0].PID != 9 {
		t.Errorf("scan = %+v, want dst unchanged", socks)
	}
}
