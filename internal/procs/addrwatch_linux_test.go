//go:build linux

package procs

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// addrMsg builds one rtnetlink address message.
func addrMsg(typ uint16, family uint8, attrs map[uint16][]byte) []byte {
	b := make([]byte, unix.SizeofNlMsghdr+unix.SizeofIfAddrmsg)
	b[unix.SizeofNlMsghdr] = family
	for _, at := range []uint16{unix.IFA_ADDRESS, unix.IFA_LOCAL, unix.IFA_LABEL} {
		v, ok := attrs[at]
		if !ok {
			continue
		}
		a := make([]byte, 4, 4+len(v)+3)
		binary.NativeEndian.PutUint16(a[0:2], uint16(4+len(v)))
		binary.NativeEndian.PutUint16(a[2:4], at)
		a = append(a, v...)
		for len(a)%4 != 0 {
			a = append(a, 0)
		}
		b = append(b, a...)
	}
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	return b
}

func TestParseAddrEvents(t *testing.T) {
	v4 := netip.MustParseAddr("203.0.113.5")
	peer := netip.MustParseAddr("203.0.113.99")
	v6 := netip.MustParseAddr("2001:db8::5")
	a4, p4, a6 := v4.As4(), peer.As4(), v6.As16()
	var b []byte
	b = append(b, addrMsg(unix.RTM_NEWADDR, unix.AF_INET, map[uint16][]byte{unix.IFA_ADDRESS: a4[:], unix.IFA_LOCAL: a4[:], unix.IFA_LABEL: []byte("np11f3a0\x00")})...)
	// Point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours.
	b = append(b, addrMsg(unix.RTM_DELADDR, unix.AF_INET, map[uint16][]byte{unix.IFA_ADDRESS: p4[:], unix.IFA_LOCAL: a4[:]})...)
	b = append(b, addrMsg(unix.RTM_NEWADDR, unix.AF_INET6, map[uint16][]byte{unix.IFA_ADDRESS: a6[:]})...)
	b = append(b, addrMsg(unix.RTM_NEWLINK, unix.AF_INET, nil)...)
	type ev struct {
		add bool
		a   netip.Addr
	}
	var got []ev
	if err := parseAddrEvents(b, func(add bool, a netip.Addr) { got = append(got, ev{add, a}) }); err != nil {
		t.Fatal(err)
	}
	want := []ev{{true, v4}, {false, v4}, {true, v6}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d: got %v, want %v", i, got[i], want[i])
		}
	}
	// Truncated and malformed input is an error, never a panic.
	for n := 0; n < len(b); n++ {
		_ = parseAddrEvents(b[:n], func(bool, netip.Addr) {})
	}
	bad := addrMsg(unix.RTM_NEWADDR, unix.AF_INET, map[uint16][]byte{unix.IFA_LOCAL: a4[:]})
	binary.NativeEndian.PutUint16(bad[unix.SizeofNlMsghdr+unix.SizeofIfAddrmsg:], 200)
	if err := parseAddrEvents(bad, func(bool, netip.Addr) {}); err == nil {
		t.Error("an attribute longer than its message was accepted")
	}
}

func FuzzParseAddrEvents(f *testing.F) {
	a4 := [4]byte{203, 0, 113, 5}
	f.Add(addrMsg(unix.RTM_NEWADDR, unix.AF_INET, map[uint16][]byte{unix.IFA_LOCAL: a4[:]}))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = parseAddrEvents(b, func(_ bool, a netip.Addr) {
			if !a.IsValid() {
				t.Fatal("invalid address reported")
			}
		})
	})
}

// TestAddressEventsFollowed (scenario 5): with the address timer an hour
// away, an address added to an interface counts as local at once, and once
// deleted stops counting although a socket is still bound to it.
func TestAddressEventsFollowed(t *testing.T) {
	if testing.Short() {
		t.Skip("changes interfaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for ip link/addr")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command")
	}
	const veth = "np11f3w"
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	_ = exec.Command("ip", "link", "del", veth+"0").Run()
	ip("link", "add", veth+"0", "type", "veth", "peer", "name", veth+"1")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", veth+"0").Run() })
	ip("link", "set", veth+"0", "up")
	ip("link", "set", veth+"1", "up")
	x := netip.MustParseAddr("203.0.113.231")

	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	e := newLinuxEngine(t)
	w := New(e, Config{SocketTTL: time.Hour, MinRescanInterval: 10 * time.Millisecond}, nil)
	defer w.Close()
	dst := netip.AddrPortFrom(x, port)
	remote := netip.MustParseAddrPort("198.51.100.250:40000")
	me := os.Getpid()
	if p := w.Lookup(TCP, dst, remote); p != nil {
		t.Fatalf("%v answered %d before the address exists", dst, p.PID)
	}

	poll := func(what string, ok func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !ok() {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%s: not within 10s", what)
			}
			time.Sleep(2 * time.Millisecond)
		}
		return time.Since(start)
	}
	ip("addr", "add", x.String()+"/32", "dev", veth+"0")
	took := poll("added address local", func() bool {
		p := w.Lookup(TCP, dst, remote)
		return p != nil && p.PID == me
	})
	t.Logf("added address answered after %v", took)

	// A socket bound to the address puts it in the snapshot's socket
	// table, where it stays after the address is deleted.
	u, err := net.ListenPacket("udp4", netip.AddrPortFrom(x, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	poll("bound address in the snapshot", func() bool {
		w.Lookup(TCP, netip.MustParseAddrPort("127.0.0.1:1"), remote) // a miss: rescans
		_, ok := w.snap.Load().local[keyOf(x)]
		return ok
	})
	ip("addr", "del", x.String()+"/32", "dev", veth+"0")
	took = poll("deleted address not local", func() bool { return w.Lookup(TCP, dst, remote) == nil })
	t.Logf("deleted address unanswered after %v", took)
	for i := 0; i < 20; i++ {
		w.Lookup(TCP, netip.MustParseAddrPort("127.0.0.1:1"), remote) // more rescans
		if p := w.Lookup(TCP, dst, remote); p != nil {
			t.Fatalf("event to the deleted address %v answered %d (rescan %d)", x, p.PID, i)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := w.as.events.Load(); got < 2 {
		t.Errorf("%d address events received, want at least 2", got)
	}
}
