//go:build linux

package e2e

import (
	"net"
	"net/netip"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/elastic/beats/v7/libbeat/processors"
)

// TestSharedLocalPortNotMisattributed: two processes hold TCP connections
// from the same local endpoint L to different peers A and B (the kernel
// shares an ephemeral port among connections to different peers when ports
// run short; here SO_REUSEADDR forces it). An event for L<->B must never be
// attributed to the process that holds L<->A: a connected socket is
// identified by both ends, and the docs promise the exact local/remote
// match. When L<->B is newer than the socket snapshot, the lookup may come
// back empty (rate-limited rescan), but once a rescan is allowed it must
// name B's process.
//
// This happens in real runs: with a loopback connection benchmark running
// on the same host, netprocbeat attributed TCP clients to the benchmark
// process, whose connection had the same local port.
func TestSharedLocalPortNotMisattributed(t *testing.T) {
	peerA, peerB := acceptingPeer(t), acceptingPeer(t)

	ha := startHelper(t, "dial-from", "127.0.0.1:0", peerA)
	local := ha.ready
	row := func(peer string) ssRow {
		return ssRow{transport: "tcp", local: netip.MustParseAddrPort(local), peer: netip.MustParseAddrPort(peer)}
	}

	p := newInProcessProcessor(t)
	t.Cleanup(func() { _ = processors.Close(p) })
	if got := pidAt(enrich(t, p, row(peerA)), "source.process.pid"); got != ha.pid {
		t.Fatalf("%s -> %s: source.process.pid = %d, want %d", local, peerA, got, ha.pid)
	}

	hb := startHelper(t, "dial-from", local, peerB)
	if hb.ready != local {
		t.Fatalf("second connection got local %s, want the shared %s", hb.ready, local)
	}
	if ss, err := exec.LookPath("ss"); err == nil {
		// Ground truth: the kernel lists both connections, each with its owner.
		owners := map[string][]int{}
		for _, r := range runSS(t, ss) {
			if r.local.String() == local {
				owners[r.peer.String()] = r.pids
			}
		}
		t.Logf("ss: %s -> %s owned by %v, %s -> %s owned by %v (helpers %d, %d)",
			local, peerA, owners[peerA], local, peerB, owners[peerB], ha.pid, hb.pid)
	}

	// Right after: B's connection is newer than the snapshot. Unresolved is
	// acceptable, A's process is not.
	got := pidAt(enrich(t, p, row(peerB)), "source.process.pid")
	if got == ha.pid {
		t.Errorf("%s -> %s (held by PID %d) attributed to PID %d, which holds %s -> %s",
			local, peerB, hb.pid, got, local, peerA)
	} else if got != 0 && got != hb.pid {
		t.Errorf("%s -> %s: source.process.pid = %d, want %d or none", local, peerB, got, hb.pid)
	}

	// After min_rescan_interval (250ms by default) a miss may rescan: B's
	// process must be found.
	time.Sleep(600 * time.Millisecond)
	if got := pidAt(enrich(t, p, row(peerB)), "source.process.pid"); got != hb.pid {
		t.Errorf("%s -> %s: source.process.pid = %d after %v, want the owner %d (PID %d holds %s -> %s)",
			local, peerB, got, 600*time.Millisecond, hb.pid, ha.pid, local, peerA)
	}
	// A's connection is still A's.
	if got := pidAt(enrich(t, p, row(peerA)), "source.process.pid"); got != ha.pid {
		t.Errorf("%s -> %s: source.process.pid = %d, want %d", local, peerA, got, ha.pid)
	}
}

// TestTimeWaitOnLocalPortDoesNotHideNewConnection: a connection from local
// endpoint L to peer A is closed by its process and lingers (FIN-WAIT-2 or
// TIME-WAIT: a socket-table row no process owns). A new connection from L to another peer
// B, opened after the processor's snapshot, must be found once a rescan is
// allowed: the ownerless L<->A row says nothing about L<->B.
func TestTimeWaitOnLocalPortDoesNotHideNewConnection(t *testing.T) {
	peerA, peerB := acceptingPeer(t), acceptingPeer(t)

	ha := startHelper(t, "dial-from", "127.0.0.1:0", peerA)
	local := ha.ready
	ha.stop() // active close: local -> peerA enters TIME-WAIT
	row := func(peer string) ssRow {
		return ssRow{transport: "tcp", local: netip.MustParseAddrPort(local), peer: netip.MustParseAddrPort(peer)}
	}
	// The closed end is an ownerless row (FIN-WAIT-2 or TIME-WAIT) on local.
	out, _ := exec.Command("sh", "-c", "ss -tanH | grep -F -- "+local).Output()
	t.Logf("ss rows on %s after the close: %q", local, out)

	p := newInProcessProcessor(t)
	t.Cleanup(func() { _ = processors.Close(p) })
	if got := pidAt(enrich(t, p, row(peerA)), "source.process.pid"); got != 0 {
		t.Errorf("%s -> %s (TIME-WAIT) attributed to PID %d", local, peerA, got)
	}

	hb := startHelper(t, "dial-from", local, peerB)
	if hb.ready != local {
		t.Fatalf("second connection got local %s, want %s", hb.ready, local)
	}
	time.Sleep(600 * time.Millisecond)
	if got := pidAt(enrich(t, p, row(peerB)), "source.process.pid"); got != hb.pid {
		t.Errorf("%s -> %s: source.process.pid = %d, want its owner %d; the ownerless row %s -> %s hides it",
			local, peerB, got, hb.pid, local, peerA)
	}
}

// acceptingPeer listens on a loopback port and holds every accepted
// connection open until the test ends; it returns the listening address.
func acceptingPeer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var accepted []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range accepted {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
		}
	}()
	return l.Addr().String()
}
