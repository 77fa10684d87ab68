//go:build linux

// Package bench builds real socket populations for the procs benchmarks: a
// fleet of helper processes (the test binary re-executed in holder mode)
// that hold many loopback TCP/UDP sockets, so that /proc/net/* and
// /proc/<pid>/fd look like a busy host's. Everything is loopback-only and
// torn down at the end of the benchmark.
//
// The holders are testing/helperproc's "holder" role: a test binary that
// uses a Fleet must call helperproc.Main first thing (from an init function
// in a _test.go file, so that it runs before any TestMain).
package bench

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"time"

	"golang.org/x/sys/unix"

	"github.com/netprocbeat/netprocbeat/testing/helperproc"
)

// CPUTime is the CPU time (user+system, all threads) this process has
// used. On a shared, loaded machine ns/op is wall time including waits for
// a CPU; cpu-ns/op says how much work an op was.
func CPUTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Conn is one loopback TCP connection of the fleet: both ends are held by
// Owner.
type Conn struct {
	Client, Server netip.AddrPort
	Owner          int
}

// Holder is one helper process.
type Holder struct {
	PID     int
	Listen  netip.AddrPort // its TCP listener
	dialNet [2]byte
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stdout  *bufio.Reader
	mu      sync.Mutex
	sockets int
}

// Fleet is a set of holders and the sockets they hold.
type Fleet struct {
	Holders []*Holder
	Conns   []Conn
	Sockets int // sockets held by the fleet (each connection counts twice)
	// dialNet is the /16 that new connections (Dial) come from.
	dialNet [2]byte
}

// Placement puts a fleet's sockets on addresses and ports of the caller's
// own instead of 127.0.0.1 and kernel-chosen ports, so that a fleet of
// 100k connections neither shares 127.0.0.1 with other programs on the
// host nor takes their ephemeral ports. The zero value is Start's
// placement.
type Placement struct {
	// Net is the loopback /16 to use, as its first two bytes (127.12 for
	// 127.12.0.0/16). Listener h is 127.<n>.0.<h+1>:PortBase; the client
	// end of connection i is bound to port PortBase + i%Ports of its own
	// address, 127.<n>.<1+a/250>.<1+a%250> with a = i/Ports (so at most
	// 49 * 250 * Ports connections); Dial comes from 127.<n>.200-249.x.
	Net      [2]byte
	PortBase int
	Ports    int
}

// StartPlaced is Start with the sockets placed by pl; sockets per holder
// must stay under the hard open-files limit.
func StartPlaced(tb testing.TB, procs, sockets int, pl Placement) *Fleet {
	tb.Helper()
	f, err := startPlaced(procs, sockets, pl)
	if f != nil {
		tb.Cleanup(f.Close)
	}
	if err != nil {
		tb.Fatalf("starting a fleet of %d processes / %d sockets on %d.%d.0.0/16: %v", procs, sockets, pl.Net[0], pl.Net[1], err)
	}
	return f
}

// RaiseNoFile lifts RLIMIT_NOFILE (soft and, as root, hard) to at least n,
// so the fleet's helpers can hold their share and the kernel's tables grow.
func RaiseNoFile(n uint64) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= n {
		return nil
	}
	if lim.Max < n {
		lim.Max = n
	}
	lim.Cur = n
	return unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
}

// Start spawns procs holders sharing about sockets loopback sockets: each
// holds one TCP listener, one bound UDP socket, and connections to its own
// listener (both ends). The fleet is closed at tb's cleanup.
func Start(tb testing.TB, procs, sockets int) *Fleet {
	tb.Helper()
	f, err := start(procs, sockets)
	if f != nil {
		tb.Cleanup(f.Close)
	}
	if err != nil {
		tb.Fatalf("starting a fleet of %d processes / %d sockets: %v", procs, sockets, err)
	}
	return f
}

func start(procs, sockets int) (*Fleet, error) {
	return startPlaced(procs, sockets, Placement{})
}

func startPlaced(procs, sockets int, pl Placement) (*Fleet, error) {
	if procs < 1 {
		procs = 1
	}
	per := sockets / procs
	if per < 2 {
		per = 2
	}
	if err := RaiseNoFile(uint64(per) + 4096); err != nil {
		return nil, fmt.Errorf("raising RLIMIT_NOFILE: %w", err)
	}
	f := &Fleet{dialNet: [2]byte{127, 1}}
	if pl.Net != ([2]byte{}) {
		f.dialNet = pl.Net
	}
	for i := 0; i < procs; i++ {
		h, conns, err := startHolder(per, pl, i, len(f.Conns))
		if err != nil {
			return f, err
		}
		h.dialNet = f.dialNet
		f.Holders = append(f.Holders, h)
		f.Conns = append(f.Conns, conns...)
		f.Sockets += h.sockets
	}
	return f, nil
}

// startHolder starts holder number idx, whose first connection is the
// fleet's connection number first.
func startHolder(sockets int, pl Placement, idx, first int) (*Holder, []Conn, error) {
	var fds []int
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	placed := pl.Net != ([2]byte{})
	listenAt := unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if placed {
		listenAt = unix.SockaddrInet4{Addr: [4]byte{pl.Net[0], pl.Net[1], 0, byte(idx + 1)}, Port: pl.PortBase}
	}
	lfd, laddr, err := tcpListener(&listenAt)
	if err != nil {
		return nil, nil, err
	}
	fds = append(fds, lfd)
	if sockets >= 3 {
		ufd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		fds = append(fds, ufd)
		if err := unix.Bind(ufd, &unix.SockaddrInet4{Addr: listenAt.Addr}); err != nil {
			closeAll()
			return nil, nil, err
		}
	}
	var clients []netip.AddrPort
	for n := len(fds); n+2 <= sockets; n += 2 {
		cfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		fds = append(fds, cfd)
		if placed {
			i := first + len(clients)
			a := i / pl.Ports
			from := unix.SockaddrInet4{Addr: [4]byte{pl.Net[0], pl.Net[1], byte(1 + a/250), byte(1 + a%250)}, Port: pl.PortBase + i%pl.Ports}
			if a >= 49*250 {
				closeAll()
				return nil, nil, fmt.Errorf("placement: connection %d does not fit %d ports per address", i, pl.Ports)
			}
			if err := unix.Bind(cfd, &from); err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("binding a client to %v:%d: %w", from.Addr, from.Port, err)
			}
		}
		if err := unix.Connect(cfd, &unix.SockaddrInet4{Port: int(laddr.Port()), Addr: laddr.Addr().As4()}); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("connect: %w", err)
		}
		afd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("accept: %w", err)
		}
		fds = append(fds, afd)
		// Close with RST, not FIN: a torn-down fleet leaves no TIME_WAIT
		// rows to inflate the next benchmark's socket table.
		for _, fd := range [2]int{cfd, afd} {
			_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		}
		sa, err := unix.Getsockname(cfd)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		s4 := sa.(*unix.SockaddrInet4)
		clients = append(clients, netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), uint16(s4.Port)))
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "sock"+strconv.Itoa(i))
	}
	defer func() {
		for _, fl := range files {
			fl.Close()
		}
	}()
	cmd := helperproc.Command("holder")
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	h := &Holder{PID: cmd.Process.Pid, Listen: laddr, cmd: cmd, stdin: stdin, stdout: bufio.NewReader(stdout), sockets: len(fds)}
	line, err := h.stdout.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "READY ") {
		h.close()
		return nil, nil, fmt.Errorf("holder did not start: %q %v", line, err)
	}
	conns := make([]Conn, len(clients))
	for i, c := range clients {
		conns[i] = Conn{Client: c, Server: laddr, Owner: h.PID}
	}
	return h, conns, nil
}

func tcpListener(at *unix.SockaddrInet4) (int, netip.AddrPort, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, netip.AddrPort{}, err
	}
	if err := unix.Bind(fd, at); err != nil {
		unix.Close(fd)
		return -1, netip.AddrPort{}, err
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, netip.AddrPort{}, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, netip.AddrPort{}, err
	}
	s4 := sa.(*unix.SockaddrInet4)
	return fd, netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), uint16(s4.Port)), nil
}

var dialSeq atomic.Uint32

// Dial makes the holder open a new TCP connection to addr (the connection
// then exists only in the holder) and returns its local address. Each dial
// comes from a loopback address of its own (127.1.0.0/16, round robin), so
// its local endpoint was in no earlier socket table: Linux would otherwise
// reuse an ephemeral port already connected elsewhere.
func (h *Holder) Dial(addr netip.AddrPort) (netip.AddrPort, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := dialSeq.Add(1)
	src := netip.AddrFrom4([4]byte{127, 1, byte(n >> 8), byte(n)})
	if h.dialNet != ([2]byte{127, 1}) && h.dialNet != ([2]byte{}) {
		src = netip.AddrFrom4([4]byte{h.dialNet[0], h.dialNet[1], byte(200 + (n/250)%50), byte(1 + n%250)})
	}
	if _, err := fmt.Fprintf(h.stdin, "dial %s %s\n", addr, src); err != nil {
		return netip.AddrPort{}, err
	}
	line, err := h.stdout.ReadString('\n')
	if err != nil {
		return netip.AddrPort{}, err
	}
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "ERR") {
		return netip.AddrPort{}, fmt.Errorf("holder %d: %s", h.PID, line)
	}
	return netip.ParseAddrPort(line)
}

func (h *Holder) close() {
	h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		_ = h.cmd.Process.Kill()
	}
}

// Close stops every holder; their sockets close with them.
func (f *Fleet) Close() {
	var wg sync.WaitGroup
	for _, h := range f.Holders {
		wg.Add(1)
		go func() { defer wg.Done(); h.close() }()
	}
	wg.Wait()
	f.Holders = nil
}

var shared struct {
	sync.Mutex
	key [2]int
	f   *Fleet
}

// Shared returns a fleet of procs holders and about sockets sockets, reusing
// the one a previous benchmark asked for with the same size (benchmark
// functions run several times; rebuilding 50k sockets each time would
// dominate the run). A fleet of another size replaces it. The last fleet is
// left to die with the test binary: holders exit when their stdin closes.
func Shared(tb testing.TB, procs, sockets int) *Fleet {
	tb.Helper()
	return SharedPlaced(tb, procs, sockets, Placement{})
}

// SharedPlaced is Shared with the sockets placed by pl (a fleet is reused
// only for the same size).
func SharedPlaced(tb testing.TB, procs, sockets int, pl Placement) *Fleet {
	tb.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.f != nil && shared.key == [2]int{procs, sockets} {
		return shared.f
	}
	if shared.f != nil {
		shared.f.Close()
		shared.f = nil
	}
	f, err := startPlaced(procs, sockets, pl)
	if err != nil {
		if f != nil {
			f.Close()
		}
		tb.Fatalf("starting a fleet of %d processes / %d sockets: %v", procs, sockets, err)
	}
	shared.key, shared.f = [2]int{procs, sockets}, f
	return f
}

// CloseShared stops the shared fleet, if any.
func CloseShared() {
	shared.Lock()
	defer shared.Unlock()
	if shared.f != nil {
		shared.f.Close()
		shared.f = nil
	}
}

// Dialer returns the holder that opens the i-th new connection of a
// benchmark: the 16 highest PIDs in turn (late in an ascending /proc walk),
// so that no one holder's fd table grows with b.N.
func (f *Fleet) Dialer(i int) *Holder {
	hs := slices.Clone(f.Holders)
	slices.SortFunc(hs, func(a, b *Holder) int { return b.PID - a.PID })
	return hs[i%min(16, len(hs))]
}

// Last returns the holder with the highest PID, the worst case for a walk
// of /proc in ascending PID order.
func (f *Fleet) Last() *Holder {
	var best *Holder
	for _, h := range f.Holders {
		if best == nil || h.PID > best.PID {
			best = h
		}
	}
	return best
}
