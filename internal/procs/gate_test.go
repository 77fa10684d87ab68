package procs

import (
	"net/netip"
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
