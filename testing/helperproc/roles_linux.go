//go:build linux

package helperproc

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// dial connects to addr, sends one datagram on UDP (so the peer sees the
// socket), prints its local address and holds the socket.
func dial(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("dial: want <network> <addr>")
	}
	network, addr := args[0], args[1]
	done := stdinClosed()
	c, err := net.Dial(network, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if network == "udp" || network == "udp6" {
		_, _ = c.Write([]byte("hello"))
	}
	fmt.Printf("ready %s\n", c.LocalAddr())
	<-done
	return nil
}

// listen listens on TCP addr, prints the bound address and holds it.
func listen(args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("listen: want <addr>")
	}
	done := stdinClosed()
	l, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Printf("ready %s\n", l.Addr())
	<-done
	return nil
}

// accept listens on TCP addr, prints the bound address, and accepts and
// holds every connection (a server: its accepted sockets are its own).
func accept(args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("accept: want <addr>")
	}
	done := stdinClosed()
	l, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	defer l.Close()
	var mu sync.Mutex
	var conns []net.Conn
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	fmt.Printf("ready %s\n", l.Addr())
	<-done
	return nil
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

// send connects (TCP) or connects a UDP socket to addr and writes
// "<marker> <n>" lines every 100ms until stdin closes, keeping one socket
// for its whole life.
func send(args []string) error {
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

// dialFrom opens one TCP connection from a given local address to
// remote, with SO_REUSEADDR and SO_REUSEPORT set before bind so that
// several connections (to different remotes) can share one local port, as
// the kernel also does for ephemeral ports when they run short.
func dialFrom(args []string) error {
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

// HoldReady is what a hold helper reports (as JSON after "ready ") once its sockets are open.
type HoldReady struct {
	TCPListen    []string `json:"tcp_listen"`
	TCPDialed    []string `json:"tcp_dialed"`    // local ends of outgoing connections
	UDPBound     []string `json:"udp_bound"`     // unconnected
	UDPConnected []string `json:"udp_connected"` // local ends of connected UDP sockets
}

// hold opens 4 TCP listeners, 4 outgoing TCP connections (to the
// previous helper's listeners, or its own for the first), 4 unconnected UDP
// sockets and 3 connected UDP sockets (to the previous helper's, or its
// own): 15 sockets, plus the connections it accepts from the next helper.
func hold(args []string) error {
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
		ready    HoldReady
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

// oneshot is a one-shot client (curl, a cron job, a health check):
// connect, write one line, close, exit. Its socket is gone before the beat
// processes the line, so only the eBPF tracker can attribute it.
func oneshot(args []string) error {
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

// report sends "<pid> <starttime>" once and exits at once: a short-lived
// client (tcp, udp: connected; udp-unconnected: sendto) or, for serve, a
// worker that answers one connection accepted on the listener inherited as
// fd 3, after reading the client's line.
func report(args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("report: want <tcp|udp|udp-unconnected|serve> [addr]")
	}
	mode, addr := args[0], ""
	if len(args) > 1 {
		addr = args[1]
	}
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return err
	}
	// starttime is field 22; fields are counted after comm's last ')'
	// (this package cannot use procs.ParseStatStart: procs's tests use it).
	after := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(after) < 20 {
		return fmt.Errorf("short /proc/self/stat: %q", stat)
	}
	line := fmt.Sprintf("%d %s\n", os.Getpid(), after[19])
	switch mode {
	case "tcp", "udp":
		c, err := net.Dial(mode, addr)
		if err != nil {
			return err
		}
		_, err = io.WriteString(c, line)
		c.Close()
		return err
	case "serve":
		ln, err := net.FileListener(os.NewFile(3, "listener"))
		if err != nil {
			return err
		}
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			return err
		}
		_, err = io.WriteString(c, line)
		return err
	case "udp-unconnected":
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer pc.Close()
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		_, err = pc.WriteTo([]byte(line), ua)
		return err
	}
	return fmt.Errorf("unknown report mode %q", mode)
}

// holder is testing/bench's socket holder: it keeps the sockets the fleet
// passed it (inherited descriptors), prints "READY <pid>", and answers
// commands on stdin until it closes:
//
//	dial <ip:port> <local ip>   open a new TCP connection from local ip,
//	                            print its local address
func holder([]string) error {
	fmt.Printf("READY %d\n", os.Getpid())
	var conns []net.Conn
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "dial" {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(f[2])}}
			c, err := d.Dial("tcp", f[1])
			if err != nil {
				fmt.Printf("ERR %v\n", err)
				continue
			}
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			conns = append(conns, c)
			fmt.Println(c.LocalAddr().String())
		}
	}
	return nil
}
