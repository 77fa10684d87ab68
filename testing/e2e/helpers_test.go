//go:build linux

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Helper processes are the test binary re-executed with helperEnv set:
//
//	<test binary> netprocbeat-e2e-helper send <tcp|udp> <addr> <marker>
//	<test binary> netprocbeat-e2e-helper hold <prev tcp addrs|-> <prev udp addrs|-> <v6: 0|1>
//	<test binary> netprocbeat-e2e-helper dial-from <local addr> <remote addr>
//
// Each prints one line on stdout once its sockets are open, then runs until
// its stdin is closed. Only the helper itself holds its sockets (no
// children), so the helper's PID is the only right answer for them.

func helperMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "helper: no mode")
		return 2
	}
	var err error
	switch args[0] {
	case "send":
		err = helperSend(args[1:])
	case "hold":
		err = helperHold(args[1:])
	case "dial-from":
		err = helperDialFrom(args[1:])
	case "oneshot":
		err = helperOneshot(args[1:])
	default:
		err = fmt.Errorf("unknown mode %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

// stdinClosed is closed when the parent closes the helper's stdin.
func stdinClosed() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(ch)
	}()
	return ch
}

// helperSend connects (TCP) or connects a UDP socket to addr and writes
// "<marker> <n>" lines every 100ms until stdin closes, keeping one socket
// for its whole life.
func helperSend(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("send: want <tcp|udp> <addr> <marker>")
	}
	network, addr, marker := args[0], args[1], args[2]
	done := stdinClosed()
	c, err := net.Dial(network, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Printf("ready %s\n", c.LocalAddr())
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		if _, err := fmt.Fprintf(c, "%s %d\n", marker, n); err != nil && network == "tcp" {
			return err
		}
		select {
		case <-done:
			return nil
		case <-tick.C:
		}
	}
}

// helperDialFrom opens one TCP connection from a given local address to
// remote, with SO_REUSEADDR and SO_REUSEPORT set before bind so that
// several connections (to different remotes) can share one local port, as
// the kernel also does for ephemeral ports when they run short.
func helperDialFrom(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("dial-from: want <local addr> <remote addr>")
	}
	local, err := net.ResolveTCPAddr("tcp", args[0])
	if err != nil {
		return err
	}
	done := stdinClosed()
	d := net.Dialer{
		LocalAddr: local,
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); serr != nil {
					return
				}
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	c, err := d.Dial("tcp", args[1])
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Printf("ready %s\n", c.LocalAddr())
	<-done
	return nil
}

// holdReady is what a hold helper reports once its sockets are open.
type holdReady struct {
	TCPListen    []string `json:"tcp_listen"`
	TCPDialed    []string `json:"tcp_dialed"`    // local ends of outgoing connections
	UDPBound     []string `json:"udp_bound"`     // unconnected
	UDPConnected []string `json:"udp_connected"` // local ends of connected UDP sockets
}

// helperHold opens 4 TCP listeners, 4 outgoing TCP connections (to the
// previous helper's listeners, or its own for the first), 4 unconnected UDP
// sockets and 3 connected UDP sockets (to the previous helper's, or its
// own): 15 sockets, plus the connections it accepts from the next helper.
func helperHold(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("hold: want <prev tcp addrs|-> <prev udp addrs|-> <v6 0|1>")
	}
	split := func(s string) []string {
		if s == "-" || s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	prevTCP, prevUDP, v6 := split(args[0]), split(args[1]), args[2] == "1"
	done := stdinClosed()

	var (
		mu       sync.Mutex
		keep     []io.Closer
		ready    holdReady
		accepted sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range keep {
			c.Close()
		}
	}()
	hold := func(c io.Closer) { mu.Lock(); keep = append(keep, c); mu.Unlock() }
	host := func(i int) string {
		if v6 && i == 3 {
			return "[::1]"
		}
		return "127.0.0.1"
	}

	for i := 0; i < 4; i++ {
		l, err := net.Listen("tcp", host(i)+":0")
		if err != nil {
			return err
		}
		hold(l)
		ready.TCPListen = append(ready.TCPListen, l.Addr().String())
		accepted.Add(1)
		go func() {
			defer accepted.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				hold(c)
			}
		}()
	}
	if len(prevTCP) == 0 {
		prevTCP = ready.TCPListen
	}
	for i := 0; i < 4; i++ {
		c, err := net.Dial("tcp", prevTCP[i%len(prevTCP)])
		if err != nil {
			return err
		}
		hold(c)
		ready.TCPDialed = append(ready.TCPDialed, c.LocalAddr().String())
	}
	for i := 0; i < 4; i++ {
		c, err := net.ListenPacket("udp", host(i)+":0")
		if err != nil {
			return err
		}
		hold(c)
		ready.UDPBound = append(ready.UDPBound, c.LocalAddr().String())
	}
	if len(prevUDP) == 0 {
		prevUDP = ready.UDPBound
	}
	for i := 0; i < 3; i++ {
		c, err := net.Dial("udp", prevUDP[i%len(prevUDP)])
		if err != nil {
			return err
		}
		hold(c)
		ready.UDPConnected = append(ready.UDPConnected, c.LocalAddr().String())
	}
	b, err := json.Marshal(ready)
	if err != nil {
		return err
	}
	fmt.Printf("ready %s\n", b)
	<-done
	return nil
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	pid   int
	args  []string // its argv, as /proc/<pid>/cmdline shows it
	ready string   // the text after "ready " on its first line
	errs  *strings.Builder
}

// startHelper starts a helper and waits for its ready line. The helper is
// stopped (stdin closed, then killed if it lingers) when the test ends.
func startHelper(t testing.TB, args ...string) *helper {
	t.Helper()
	argv := append([]string{selfExe, helperArg}, args...)
	cmd := exec.Command(selfExe, argv[1:]...)
	cmd.Args = argv
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	// Never outlive the test binary, even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errs := &strings.Builder{}
	cmd.Stderr = &lockedWriter{w: errs}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper %v: %v", args, err)
	}
	h := &helper{cmd: cmd, stdin: stdin, pid: cmd.Process.Pid, args: argv, errs: errs}
	t.Cleanup(h.stop)

	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l, ok := <-line:
		if !ok || !strings.HasPrefix(l, "ready ") {
			t.Fatalf("helper %v did not get ready (first line %q); stderr: %s", args, l, errs.String())
		}
		h.ready = strings.TrimPrefix(l, "ready ")
	case <-time.After(10 * time.Second):
		t.Fatalf("helper %v: no ready line after 10s", args)
	}
	return h
}

// stop closes the helper's stdin, which makes it exit, and kills it if it
// has not exited within 5 seconds.
func (h *helper) stop() {
	_ = h.stdin.Close()
	exited := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = h.cmd.Process.Kill()
		<-exited
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// helperOneshot is a one-shot client (curl, a cron job, a health check):
// connect, write one line, close, exit. Its socket is gone before the beat
// processes the line, so only the eBPF tracker can attribute it.
func helperOneshot(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("oneshot: want <addr> <line>")
	}
	c, err := net.Dial("tcp", args[0])
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(c, "%s\n", args[1]); err != nil {
		return err
	}
	return c.Close()
}
