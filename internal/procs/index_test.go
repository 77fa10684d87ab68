package procs

import (
	"net/netip"
	"testing"
)

// TestSnapshotFindPrecedence is the snapshot's answer table, in the spirit
// of packetbeat's TestFindProcessTuple: an exact tuple beats a specific
// listener, which beats 0.0.0.0, which beats ::, which beats the
// by-endpoint fallback (only for an unknown peer); ambiguous endpoints and
// competing namespaces answer by rule, never by map order.
func TestSnapshotFindPrecedence(t *testing.T) {
	ap := netip.MustParseAddrPort
	pr := func(pid int) *Process { return &Process{PID: pid} }
	foreign := func(pid int, ns uint64) *Process { return &Process{PID: pid, NetNS: ns, Foreign: true} }
	type row struct {
		sock Socket
		p    *Process
	}
	listen := func(local string, p *Process) row {
		return row{Socket{Transport: TCP, Local: ap(local), Listen: true, NetNS: p.NetNS, Foreign: p.Foreign}, p}
	}
	inode := func(r row, i uint64) row { r.sock.Inode = i; return r }
	dual := func(r row) row { r.sock.V6Only = V6OnlyOff; return r }
	shared := func(r row) row { r.sock.Shared = true; return r }
	v6only := func(r row) row { r.sock.V6Only = V6OnlyOn; return r }
	conn := func(local, remote string, p *Process) row {
		s := Socket{Transport: TCP, Local: ap(local), Remote: ap(remote)}
		if p != nil {
			s.NetNS, s.Foreign = p.NetNS, p.Foreign
		}
		return row{s, p}
	}
	cases := []struct {
		name          string
		rows          []row
		local, remote string // remote "" = unknown peer
		wantPID       int    // 0 = no answer
		wantKnown     bool
		wantAmbiguous int
		wantShared    bool // a listener held by several processes: no answer
	}{
		{"exact tuple over its listener",
			[]row{listen("10.0.0.1:80", pr(10)), conn("10.0.0.1:80", "10.0.0.9:5555", pr(20))},
			"10.0.0.1:80", "10.0.0.9:5555", 20, true, 0, false},
		{"listener for another peer of the same port",
			[]row{listen("10.0.0.1:80", pr(10)), conn("10.0.0.1:80", "10.0.0.9:5555", pr(20))},
			"10.0.0.1:80", "10.0.0.9:6666", 10, true, 0, false},
		{"specific listener over 0.0.0.0",
			[]row{listen("0.0.0.0:80", pr(31)), listen("127.0.0.1:80", pr(30))},
			"127.0.0.1:80", "127.0.0.1:4000", 30, true, 0, false},
		{"0.0.0.0 for another local address",
			[]row{listen("0.0.0.0:80", pr(31)), listen("127.0.0.1:80", pr(30))},
			"10.0.0.1:80", "10.0.0.9:4000", 31, true, 0, false},
		{"0.0.0.0 over :: for IPv4",
			[]row{listen("[::]:81", pr(41)), listen("0.0.0.0:81", pr(40))},
			"10.0.0.1:81", "10.0.0.9:4000", 40, true, 0, false},
		{":: for IPv6",
			[]row{listen("[::]:81", pr(41)), listen("0.0.0.0:81", pr(40))},
			"[::1]:81", "[::1]:4000", 41, true, 0, false},
		{":: answers IPv4 when nothing else listens (dual stack known)",
			[]row{dual(listen("[::]:82", pr(42)))},
			"10.0.0.1:82", "10.0.0.9:4000", 42, true, 0, false},
		{":: with IPV6_V6ONLY unknown (text table) does not answer IPv4",
			[]row{listen("[::]:82", pr(42))},
			"10.0.0.1:82", "10.0.0.9:4000", 0, false, 0, false},
		{"0.0.0.0 does not answer IPv6",
			[]row{listen("0.0.0.0:83", pr(43))},
			"[::1]:83", "[::1]:4000", 0, false, 0, false},
		{"by endpoint for an unknown peer",
			[]row{conn("10.0.0.1:40000", "10.0.0.9:443", pr(50))},
			"10.0.0.1:40000", "", 50, true, 0, false},
		{"never by endpoint for a known, different peer",
			[]row{conn("10.0.0.1:40000", "10.0.0.9:443", pr(50))},
			"10.0.0.1:40000", "10.0.0.8:443", 0, false, 0, false},
		{"an endpoint two processes share by port reuse answers nothing",
			[]row{conn("10.0.0.1:40000", "10.0.0.9:443", pr(50)), conn("10.0.0.1:40000", "10.0.0.8:443", pr(51))},
			"10.0.0.1:40000", "", 0, false, 0, false},
		{"an unowned row is known, without an owner",
			[]row{conn("10.0.0.1:40001", "10.0.0.9:443", nil)},
			"10.0.0.1:40001", "10.0.0.9:443", 0, true, 0, false},
		{"an owned connection row wins over an unowned one (TIME_WAIT)",
			[]row{conn("10.0.0.1:84", "10.0.0.9:4000", nil), conn("10.0.0.1:84", "10.0.0.9:4000", pr(44))},
			"10.0.0.1:84", "10.0.0.9:4000", 44, true, 0, false},
		{"a listener endpoint with an owned and an unowned socket answers nothing",
			[]row{listen("10.0.0.1:84", &Process{PID: 0}), listen("10.0.0.1:84", pr(44))},
			"10.0.0.1:84", "10.0.0.9:4000", 0, true, 0, true},
		{"SO_REUSEPORT group of two processes answers nothing",
			[]row{listen("10.0.0.1:90", pr(92)), listen("10.0.0.1:90", pr(91))},
			"10.0.0.1:90", "10.0.0.9:4000", 0, true, 0, true},
		{"a shared specific listener does not fall through to 0.0.0.0",
			[]row{listen("0.0.0.0:90", pr(93)), listen("10.0.0.1:90", pr(92)), listen("10.0.0.1:90", pr(91))},
			"10.0.0.1:90", "10.0.0.9:4000", 0, true, 0, true},
		{"a shared 0.0.0.0 group answers nothing",
			[]row{listen("0.0.0.0:91", pr(94)), listen("0.0.0.0:91", pr(95))},
			"10.0.0.1:91", "10.0.0.9:4000", 0, true, 0, true},
		{"two sockets of one process on one endpoint still answer",
			[]row{listen("10.0.0.1:92", pr(96)), listen("10.0.0.1:92", pr(96))},
			"10.0.0.1:92", "10.0.0.9:4000", 96, true, 0, false},
		{"0.0.0.0 and a dual-stack [::] of different processes: IPv4 answers nothing",
			[]row{listen("0.0.0.0:93", pr(97)), dual(listen("[::]:93", pr(98)))},
			"10.0.0.1:93", "10.0.0.9:4000", 0, true, 0, true},
		{"0.0.0.0 and a dual-stack [::] of different processes: IPv6 goes to [::]",
			[]row{listen("0.0.0.0:93", pr(97)), dual(listen("[::]:93", pr(98)))},
			"[::1]:93", "[::1]:4000", 98, true, 0, false},
		{"a v6only [::] next to 0.0.0.0 leaves IPv4 to 0.0.0.0",
			[]row{listen("0.0.0.0:94", pr(97)), v6only(listen("[::]:94", pr(98)))},
			"10.0.0.1:94", "10.0.0.9:4000", 97, true, 0, false},
		{"a v6only [::] alone does not answer IPv4",
			[]row{v6only(listen("[::]:95", pr(99)))},
			"10.0.0.1:95", "10.0.0.9:4000", 0, false, 0, false},
		{"one listening socket listed for two holders (pre-fork) answers nothing",
			[]row{inode(listen("10.0.0.1:85", pr(46)), 7), inode(listen("10.0.0.1:85", pr(45)), 7)},
			"10.0.0.1:85", "10.0.0.9:4000", 0, true, 0, true},
		{"a listener the walk found shared (pre-fork master and workers) answers nothing",
			[]row{shared(inode(listen("10.0.0.1:85", pr(45)), 7))},
			"10.0.0.1:85", "10.0.0.9:4000", 0, true, 0, true},
		{"a shared listener does not fall through to 0.0.0.0",
			[]row{listen("0.0.0.0:85", pr(47)), shared(inode(listen("10.0.0.1:85", pr(45)), 7))},
			"10.0.0.1:85", "10.0.0.9:4000", 0, true, 0, true},
		{"a connection several processes hold (fork) answers nothing",
			[]row{listen("10.0.0.1:85", pr(45)), shared(conn("10.0.0.1:85", "10.0.0.9:4000", pr(46)))},
			"10.0.0.1:85", "10.0.0.9:4000", 0, true, 0, true},
		{"a shared connection does not answer by endpoint",
			[]row{shared(conn("10.0.0.1:40002", "10.0.0.9:443", pr(46)))},
			"10.0.0.1:40002", "", 0, false, 0, false},
		{"one tuple held by sockets of two processes answers nothing",
			[]row{conn("10.0.0.1:85", "10.0.0.9:4001", pr(46)), conn("10.0.0.1:85", "10.0.0.9:4001", pr(47))},
			"10.0.0.1:85", "10.0.0.9:4001", 0, true, 0, true},
		{"the host's socket over a foreign namespace's",
			[]row{listen("10.0.0.1:86", foreign(61, 7)), listen("10.0.0.1:86", pr(60))},
			"10.0.0.1:86", "10.0.0.9:4000", 60, true, 1, false},
		{"the host's socket even when the foreign PID is lower",
			[]row{listen("10.0.0.1:87", pr(70)), listen("10.0.0.1:87", foreign(2, 7))},
			"10.0.0.1:87", "10.0.0.9:4000", 70, true, 1, false},
		{"a foreign namespace alone answers",
			[]row{listen("172.17.0.2:88", foreign(80, 7))},
			"172.17.0.2:88", "172.17.0.1:4000", 80, true, 0, false},
		{"two foreign namespaces without the host's: nothing, counted ambiguous",
			[]row{listen("10.0.0.1:89", foreign(91, 8)), listen("10.0.0.1:89", foreign(90, 7))},
			"10.0.0.1:89", "10.0.0.9:4000", 0, true, 1, true},
		{"three foreign namespaces, then the host's: the host's",
			[]row{listen("10.0.0.1:89", foreign(91, 8)), listen("10.0.0.1:89", foreign(90, 7)), listen("10.0.0.1:89", foreign(92, 9)), listen("10.0.0.1:89", pr(93))},
			"10.0.0.1:89", "10.0.0.9:4000", 93, true, 3, false},
		{"a connection tuple in two foreign namespaces answers nothing",
			[]row{conn("10.0.0.1:89", "10.0.0.9:4002", foreign(91, 8)), conn("10.0.0.1:89", "10.0.0.9:4002", foreign(90, 7))},
			"10.0.0.1:89", "10.0.0.9:4002", 0, true, 1, true},
		{"another namespace's loopback is not the host's",
			[]row{listen("127.0.0.1:90", foreign(94, 7)), conn("127.0.0.1:90", "127.0.0.1:4003", foreign(94, 7))},
			"127.0.0.1:90", "127.0.0.1:4003", 0, false, 0, false},
		{"the host's wildcard over another namespace's loopback listener",
			[]row{listen("127.0.0.1:91", foreign(96, 7)), listen("0.0.0.0:91", pr(95))},
			"127.0.0.1:91", "127.0.0.1:4000", 95, true, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSnapshot(1, len(c.rows))
			for i := range c.rows {
				p := c.rows[i].p
				if p != nil && p.PID == 0 {
					p = nil
				}
				s.add(&c.rows[i].sock, p)
			}
			var remote netip.AddrPort
			if c.remote != "" {
				remote = ap(c.remote)
			}
			r, res, _ := s.find(TCP, ap(c.local), remote)
			pid, known := 0, res != foundNone
			if res == foundRow {
				pid = r.p.PID
			}
			if (res == foundAmbiguous) != c.wantShared {
				t.Errorf("find(%s, %q) = result %d, want shared listener %v", c.local, c.remote, res, c.wantShared)
			}
			if pid != c.wantPID || known != c.wantKnown {
				t.Errorf("find(%s, %q) = PID %d known %v, want PID %d known %v", c.local, c.remote, pid, known, c.wantPID, c.wantKnown)
			}
			if s.ambiguous != c.wantAmbiguous {
				t.Errorf("ambiguous = %d, want %d", s.ambiguous, c.wantAmbiguous)
			}
			if r, res, _ := s.find(UDP, ap(c.local), remote); res != foundNone {
				t.Errorf("UDP lookup matched a TCP socket: %+v", r)
			}
		})
	}
}

// TestSnapshotInContainer: a container's namespace is indexed on its own,
// so its 127.0.0.1 resolves to its own process, not the host's.
func TestSnapshotInContainer(t *testing.T) {
	host := &Process{PID: 1}
	ctr := &Process{PID: 2, NetNS: 7, Foreign: true, ContainerID: "abc"}
	s := newSnapshot(1, 2)
	lo := netip.MustParseAddrPort("127.0.0.1:80")
	s.add(&Socket{Transport: TCP, Local: lo, Listen: true}, host)
	s.add(&Socket{Transport: TCP, Local: lo, Listen: true, NetNS: 7, Foreign: true}, ctr)
	if r, _, _ := s.find(TCP, lo, netip.AddrPort{}); r == nil || r.p != host {
		t.Errorf("host lookup = %+v, want the host's process", r)
	}
	sub, _ := s.inContainer("abc")
	if sub == nil {
		t.Fatal("no index for container abc")
	}
	if r, _, _ := sub.find(TCP, lo, netip.AddrPort{}); r == nil || r.p != ctr {
		t.Errorf("container lookup = %+v, want the container's process", r)
	}
	if o, _ := s.inContainer("other"); o != nil {
		t.Error("an unknown container has an index")
	}
	if e, _ := s.inContainer(""); e != nil {
		t.Error("an unknown container has an index")
	}
}
