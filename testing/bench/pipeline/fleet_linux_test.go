//go:build linux

package pipeline

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netprocbeat/netprocbeat/testing/helperproc"
)

// The addresses and ports of this benchmark (its own loopback range, so no
// other test's sockets share a tuple with it).
var (
	listenAddr = netip.AddrFrom4([4]byte{127, 15, 0, 1}) // holders' listeners
	clientAddr = netip.AddrFrom4([4]byte{127, 15, 1, 1}) // holders' client ends
)

const (
	firstListenPort = 44000 // holder i listens on firstListenPort+i
	httpPort        = 44900 // the beat's monitoring endpoint
)

// conn is one loopback TCP connection; both ends belong to owner.
type conn struct {
	client, server netip.AddrPort
	owner          int
}

// holder is a helper process (testing/helperproc's "holder" role) that
// owns a listener and connections to it, both ends.
type holder struct {
	pid   int
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startFleet starts procs holders holding conns connections in all, and
// stops them at the end of the test.
func startFleet(t *testing.T, procs, conns int) []conn {
	t.Helper()
	var all []conn
	var holders []*holder
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, h := range holders {
			wg.Add(1)
			go func() { defer wg.Done(); h.stop() }()
		}
		wg.Wait()
	})
	per := (conns + procs - 1) / procs
	for i := 0; i < procs && len(all) < conns; i++ {
		n := min(per, conns-len(all))
		h, cs, err := startHolder(firstListenPort+i, n)
		if err != nil {
			t.Fatalf("starting holder %d of %d (%d connections on %s:%d): %v", i+1, procs, n, listenAddr, firstListenPort+i, err)
		}
		holders = append(holders, h)
		all = append(all, cs...)
	}
	return all
}

// startHolder creates a listener on port and n connections to it, hands
// every socket to a new helper process and closes this process's copies,
// so that the helper is their only owner.
func startHolder(port, n int) (*holder, []conn, error) {
	var fds []int
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	fds = append(fds, lfd)
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Port: port, Addr: listenAddr.As4()}); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("bind %s:%d: %w", listenAddr, port, err)
	}
	if err := unix.Listen(lfd, 4096); err != nil {
		closeAll()
		return nil, nil, err
	}
	server := netip.AddrPortFrom(listenAddr, uint16(port))
	var clients []netip.AddrPort
	for range n {
		cfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		fds = append(fds, cfd)
		// A client address of this benchmark's own: its ephemeral port is
		// then in no other test's tuple.
		if err := unix.Bind(cfd, &unix.SockaddrInet4{Addr: clientAddr.As4()}); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("bind %s:0: %w", clientAddr, err)
		}
		if err := unix.Connect(cfd, &unix.SockaddrInet4{Port: port, Addr: listenAddr.As4()}); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("connect %s: %w", server, err)
		}
		afd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("accept on %s: %w", server, err)
		}
		fds = append(fds, afd)
		// RST on close: no TIME_WAIT rows left for the next test.
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
		for _, f := range files {
			f.Close()
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
	h := &holder{pid: cmd.Process.Pid, cmd: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "READY ") {
		h.stop()
		return nil, nil, fmt.Errorf("holder did not start: %q %v", line, err)
	}
	cs := make([]conn, len(clients))
	for i, c := range clients {
		cs[i] = conn{client: c, server: server, owner: h.pid}
	}
	return h, cs, nil
}

// stop closes the holder's stdin (it exits, its sockets close with it).
func (h *holder) stop() {
	h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		_ = h.cmd.Process.Kill()
	}
}
