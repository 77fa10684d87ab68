package add_network_process

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/internal/procs"
	"github.com/netprocbeat/netprocbeat/internal/tracker"
)

// TestTrackerRecordAsOwner: the adapter turns a tracker record into the
// watcher's socket row and minimal process, with StartKey in the Linux
// engine's unit (the tracker's StartTicks) and unmapped endpoints.
func TestTrackerRecordAsOwner(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	r := tracker.Record{PID: 42, StartTicks: 12345, Start: start, Comm: "curl", Source: tracker.SourceConnect}
	local := netip.MustParseAddrPort("[::ffff:10.0.0.1]:40000")
	remote := netip.MustParseAddrPort("10.0.0.2:443")
	s := recordSocket(r, procs.TCP, local, remote)
	want := procs.Socket{Transport: procs.TCP, Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: remote, PID: 42, StartKey: 12345, Recorded: true}
	if s != want {
		t.Errorf("socket = %+v, want %+v", s, want)
	}
	// A closed connection's record is a record of the past: the kernel
	// need not be asked who holds the socket now.
	r.Closed = start.Add(time.Hour)
	if recordSocket(r, procs.TCP, local, remote).Recorded {
		t.Error("a closed record is marked as a still-open socket's")
	}
	r.Closed = time.Time{}
	p := recordProcess(r)
	if p.PID != 42 || p.Name != "curl" || !p.Start.Equal(start) || p.StartKey != 12345 {
		t.Errorf("process = %+v", p)
	}
	r.Source = tracker.SourceListen
	if !recordSocket(r, procs.TCP, local, netip.AddrPort{}).Listen {
		t.Error("a listener record is not a listening socket")
	}
	if tracker.Proto(procs.TCP) != tracker.TCP || tracker.Proto(procs.UDP) != tracker.UDP {
		t.Error("tracker and procs number the transports differently")
	}
}

// TestTrackerSourceIsChangeClockExactlyWithEpochs: the watcher must see a
// procs.ChangeClock only when the tracker's change counters exist;
// without them it must verify every answer.
func TestTrackerSourceIsChangeClockExactlyWithEpochs(t *testing.T) {
	// A tracker without counters (the zero value has none).
	if _, ok := newTrackerSource(&tracker.Tracker{}).(procs.ChangeClock); ok {
		t.Error("a tracker without change counters is offered as a ChangeClock")
	}
	tr, err := tracker.New(tracker.Options{})
	if err != nil {
		t.Skipf("eBPF tracker unavailable here: %v", err)
	}
	defer tr.Close()
	src := newTrackerSource(tr)
	clock, ok := src.(procs.ChangeClock)
	if e := tr.Epochs(); (e != nil) != ok {
		t.Fatalf("Epochs() = %v, source is a ChangeClock: %v", e, ok)
	}
	if !ok {
		t.Skipf("change counters unavailable here: %v", tr.EpochsErr())
	}
	if _, ok := src.(interface{ Stats() tracker.Stats }); !ok {
		t.Error("the clock source lost the tracker's Stats (metrics)")
	}
	e := tr.Epochs()
	before := clock.ProcEpoch(os.Getpid())
	if before != e.PID(os.Getpid()) {
		t.Errorf("ProcEpoch differs from the tracker's reading")
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if clock.ProcEpoch(os.Getpid()) == before {
		t.Error("ProcEpoch did not move when this process closed a file")
	}
	if clock.PortEpoch(procs.TCP, 1) != e.Port(tracker.TCP, 1) {
		t.Error("PortEpoch differs from the tracker's reading")
	}
}
