package procs

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/elastic/elastic-agent-libs/logp/logptest"
)

// nsEngine is fakeEngine on a host whose own namespace is host.
type nsEngine struct {
	*fakeEngine
	host uint64
}

func (e nsEngine) hostNetNS() uint64 { return e.host }

// TestGateOtherNamespaceLoopback: a record (the tracker's) carries only
// its socket's namespace. Another namespace's loopback socket answers only
// an event that its container places in that namespace; the host's, an
// unknown namespace's (taken for the host's) and another namespace's
// non-loopback socket answer as before.
func TestGateOtherNamespaceLoopback(t *testing.T) {
	const host, ctrNS, otherNS = 1, 7, 8
	ctrIP := netip.MustParseAddr("172.17.0.2")
	// The container's process and a socket of it that puts container
	// "abc" in namespace ctrNS.
	ctr := &Process{PID: 70, StartKey: 7, Name: "ctr", ContainerID: "abc", NetNS: ctrNS, Foreign: true}
	ctrListener := Socket{Transport: TCP, Local: addrPort(ctrIP, 9), Listen: true, Inode: 9, PID: 70, StartKey: 7, NetNS: ctrNS, Foreign: true}
	owner := &Process{PID: 300, StartKey: 5, Name: "curl"}
	cases := []struct {
		name      string
		local     netip.AddrPort
		netns     uint64
		container string
		want      int
	}{
		{"host's loopback", client, host, "", 300},
		{"unknown namespace's loopback (the host's)", client, 0, "", 300},
		{"another namespace's loopback", client, otherNS, "", 0},
		{"a container's loopback without its container", client, ctrNS, "", 0},
		{"a container's loopback for its container", client, ctrNS, "abc", 300},
		{"another namespace's loopback for a container elsewhere", client, otherNS, "abc", 0},
		{"another namespace's own address", addrPort(ctrIP, 40000), ctrNS, "", 300},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeEngine{addrs: []netip.Addr{ctrIP}}
			f.set([]Socket{ctrListener}, ctr, owner)
			rec := fakeSource{sock: Socket{Transport: TCP, Local: c.local, Remote: server, PID: 300, StartKey: 5, NetNS: c.netns}, proc: owner}
			w := New(nsEngine{f, host}, Config{Fallback: rec, MinRescanInterval: time.Hour}, logptest.NewTestingLogger(t, ""))
			t.Cleanup(func() { w.Close() })
			got := 0
			if p := w.LookupInContainer(c.container, time.Time{}, TCP, c.local, server); p != nil {
				got = p.PID
			}
			if got != c.want {
				t.Errorf("record of %v in namespace %d, event container %q: PID %d, want %d (%+v)", c.local, c.netns, c.container, got, c.want, w.Stats())
			}
		})
	}
}

// forkClock is fakeClock counting forks too (ForkClock).
type forkClock struct {
	fakeClock
	seq  atomic.Uint32
	last [65536]atomic.Uint32
}

func (c *forkClock) ForkSeq() uint32         { return c.seq.Load() }
func (c *forkClock) LastFork(pid int) uint32 { return c.last[uint16(pid)].Load() }

// fork is pid forking a new process now.
func (c *forkClock) fork(pid int) { c.last[uint16(pid)].Store(c.seq.Add(1)) }

// TestGateForkedOwner: an owner that forked since the walk that found it
// alone is not named: the child may hold the socket too, and verifying the
// parent cannot tell. A rescan (requested by the refusal) walks again; a
// fork before the walk, which the walk saw, refuses nothing. A fork of
// another process refuses nothing either.
func TestGateForkedOwner(t *testing.T) {
	for _, c := range []struct {
		name          string
		local, remote netip.AddrPort
	}{
		{"listener", server, remote1},
		{"connection", client, server},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := newVerifyingEngine()
			v.table([]Socket{
				{Transport: TCP, Local: server, Listen: true, Inode: 1, PID: 300, StartKey: 3},
				{Transport: TCP, Local: client, Remote: server, Inode: 2, PID: 300, StartKey: 3},
			}, procOld)
			clock := &forkClock{}
			clock.fork(300) // before the first walk: seen by it
			w := newVerifyingWatcher(t, v, Config{Changes: clock, MinRescanInterval: time.Millisecond, NegativeTTL: time.Nanosecond})
			look := func() int {
				if p := w.Lookup(TCP, c.local, c.remote); p != nil {
					return p.PID
				}
				return 0
			}
			if got := look(); got != 300 {
				t.Fatalf("before the fork: PID %d, want 300 (%+v)", got, w.Stats())
			}
			clock.fork(500)
			if got := look(); got != 300 {
				t.Fatalf("after another process forked: PID %d, want 300", got)
			}
			amb := w.Stats().UnansweredAmbiguous
			clock.fork(300)
			if got := look(); got != 0 {
				t.Fatalf("after the owner forked: PID %d, want none", got)
			}
			if n := w.Stats().UnansweredAmbiguous - amb; n != 1 {
				t.Errorf("refusals counted as ambiguous: %d, want 1", n)
			}
			// The engine's table still shows the owner alone: once a
			// rescan walked after the fork, it is named again.
			deadline := time.Now().Add(5 * time.Second)
			for look() != 300 {
				if time.Now().After(deadline) {
					t.Fatalf("the owner not named again after the fork (%+v)", w.Stats())
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}
