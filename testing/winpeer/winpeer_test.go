package winpeer

import (
	"net"
	"os"
	"slices"
	"testing"
)

func init() { MainIfPeer() }

// TestPeerHoldsWhatItReports: the peer's report matches the sockets the
// test sees from its side, and the peer is a child of this test.
func TestPeerHoldsWhatItReports(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c
		}
	}()
	dir := t.TempDir()
	r := Start(t, dir, Spec{DialTCP: []string{l.Addr().String()}, BindUDP: []string{"127.0.0.1:0"}})
	c := <-accepted
	defer c.Close()
	if len(r.TCP) != 1 || r.TCP[0].Local != c.RemoteAddr().String() || r.TCP[0].Remote != l.Addr().String() {
		t.Errorf("TCP = %+v, want one connection %s -> %s", r.TCP, c.RemoteAddr(), l.Addr())
	}
	if len(r.UDP) != 1 {
		t.Fatalf("UDP = %v, want one socket", r.UDP)
	}
	// The UDP port is taken while the peer lives.
	if pc, err := net.ListenPacket("udp", r.UDP[0]); err == nil {
		pc.Close()
		t.Errorf("bound %s again: the peer does not hold it", r.UDP[0])
	}
	if r.PID == os.Getpid() || r.Dir != dir || !slices.Contains(r.Args, PeerArg()) {
		t.Errorf("report = %+v, want another PID, dir %s, args holding %q", r, dir, PeerArg())
	}
}
