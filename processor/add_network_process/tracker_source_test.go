package add_network_process

import (
	"net/netip"
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
	want := procs.Socket{Transport: procs.TCP, Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: remote, PID: 42, StartKey: 12345}
	if s != want {
		t.Errorf("socket = %+v, want %+v", s, want)
	}
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
