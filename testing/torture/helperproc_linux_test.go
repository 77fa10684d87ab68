//go:build linux

package torture

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A helper is this test binary re-executed with helperEnv=sock. It prints
// {"pid":N} and then executes one command per stdin line, answering each
// with one JSON line. It exits when stdin closes (closing all its sockets)
// or on "exit". It works on raw file descriptors so that the test controls
// exactly which process holds which socket, and how many fds it has.
//
// Commands:
//
//	listen <addr> [reuseport] [v6only]   -> id, local
//	acceptloop <id>                      accept in the background, holding each connection
//	accepted <id>                        -> conns accepted so far
//	dial <addr> [local-addr]             -> id, local, remote (SO_REUSEADDR before bind)
//	dialmany <addr> <n>                  -> locals
//	close <id> | rst <id>                close (rst: SO_LINGER 0, sends RST)
//	recvfd <unix-path>                   listen for one SCM_RIGHTS fd in the background
//	recvd                                -> id, local, remote of the received socket
//	sendfd <id> <unix-path>              send the socket, close ours, open /dev/null (fd count unchanged)
//	forkhold <id>                        start a child sharing the socket -> child pid
//	nofile                               raise RLIMIT_NOFILE to its hard limit -> n
//	udp <addr>                           bind an unconnected UDP socket -> id, local
//	exec <id> <program> <args...>        keep socket id open across execve into program
//	exit                                 exit now
const helperEnv = "NETPROCBEAT_TORTURE_HELPER"

type reply struct {
	PID    int      `json:"pid,omitempty"`
	ID     int      `json:"id,omitempty"`
	Local  string   `json:"local,omitempty"`
	Remote string   `json:"remote,omitempty"`
	Locals []string `json:"locals,omitempty"`
	Conns  []conn   `json:"conns,omitempty"`
	N      int      `json:"n,omitempty"`
	Err    string   `json:"err,omitempty"`
}

type conn struct {
	ID     int    `json:"id"`
	Local  string `json:"local"`
	Remote string `json:"remote"`
}

type sockHelper struct {
	mu       sync.Mutex
	fds      map[int]int // id -> fd
	next     int
	accepted map[int][]conn // listener id -> accepted
	received chan int
	out      *json.Encoder
}

func helperMain(mode string) {
	switch mode {
	case "sock":
		h := &sockHelper{fds: map[int]int{}, accepted: map[int][]conn{}, received: make(chan int, 4), out: json.NewEncoder(os.Stdout)}
		h.run()
	case "inherit":
		// Child of forkhold: holds fd 3 until killed (its parent may be
		// gone, so stdin cannot be its lifeline); bounded so nothing leaks.
		fmt.Printf("{\"pid\":%d}\n", os.Getpid())
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		select {
		case <-sig:
		case <-time.After(10 * time.Minute):
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
		os.Exit(2)
	}
	os.Exit(0)
}

func (h *sockHelper) run() {
	_ = h.out.Encode(reply{PID: os.Getpid()})
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		r, err := h.do(f)
		if err != nil {
			r = reply{Err: fmt.Sprintf("%s: %v", f[0], err)}
		}
		_ = h.out.Encode(r)
	}
}

func (h *sockHelper) add(fd int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	h.fds[h.next] = fd
	return h.next
}

func (h *sockHelper) fd(s string) (int, int, error) {
	id, err := strconv.Atoi(s)
	if err != nil {
		return 0, 0, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	fd, ok := h.fds[id]
	if !ok {
		return 0, 0, fmt.Errorf("no socket %d", id)
	}
	return id, fd, nil
}

func (h *sockHelper) forget(id int) {
	h.mu.Lock()
	delete(h.fds, id)
	h.mu.Unlock()
}

func sockaddr(s string) (unix.Sockaddr, int, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, 0, err
	}
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}, unix.AF_INET, nil
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}, unix.AF_INET6, nil
}

func addrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return ""
}

func names(fd int) (local, remote string) {
	if sa, err := unix.Getsockname(fd); err == nil {
		local = addrString(sa)
	}
	if sa, err := unix.Getpeername(fd); err == nil {
		remote = addrString(sa)
	}
	return
}

func dialFD(addr, local string) (int, error) {
	sa, dom, err := sockaddr(addr)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Socket(dom, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if local != "" {
		lsa, _, err := sockaddr(local)
		if err == nil {
			err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}
		if err == nil {
			err = unix.Bind(fd, lsa)
		}
		if err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	for {
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (h *sockHelper) do(f []string) (reply, error) {
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	has := func(opt string) bool {
		for _, s := range f[1:] {
			if s == opt {
				return true
			}
		}
		return false
	}
	switch f[0] {
	case "listen":
		sa, dom, err := sockaddr(arg(1))
		if err != nil {
			return reply{}, err
		}
		fd, err := unix.Socket(dom, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return reply{}, err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if has("reuseport") {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
		if dom == unix.AF_INET6 {
			v := 0
			if has("v6only") {
				v = 1
			}
			_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v)
		}
		if err := unix.Bind(fd, sa); err != nil {
			unix.Close(fd)
			return reply{}, err
		}
		if err := unix.Listen(fd, 4096); err != nil {
			unix.Close(fd)
			return reply{}, err
		}
		l, _ := names(fd)
		return reply{ID: h.add(fd), Local: l}, nil
	case "acceptloop":
		id, lfd, err := h.fd(arg(1))
		if err != nil {
			return reply{}, err
		}
		go func() {
			for {
				nfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
				if err == unix.EINTR || err == unix.ECONNABORTED {
					continue
				}
				if err != nil {
					return
				}
				l, r := names(nfd)
				cid := h.add(nfd)
				h.mu.Lock()
				h.accepted[id] = append(h.accepted[id], conn{ID: cid, Local: l, Remote: r})
				h.mu.Unlock()
			}
		}()
		return reply{ID: id}, nil
	case "accepted":
		id, _, err := h.fd(arg(1))
		if err != nil {
			return reply{}, err
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		return reply{ID: id, Conns: append([]conn(nil), h.accepted[id]...), N: len(h.accepted[id])}, nil
	case "dial":
		fd, err := dialFD(arg(1), arg(2))
		if err != nil {
			return reply{}, err
		}
		l, r := names(fd)
		return reply{ID: h.add(fd), Local: l, Remote: r}, nil
	case "dialmany":
		n, err := strconv.Atoi(arg(2))
		if err != nil {
			return reply{}, err
		}
		var r reply
		for i := 0; i < n; i++ {
			fd, err := dialFD(arg(1), "")
			if err != nil {
				return reply{}, fmt.Errorf("after %d connections: %w", i, err)
			}
			l, _ := names(fd)
			h.add(fd)
			r.Locals = append(r.Locals, l)
		}
		return r, nil
	case "close", "rst":
		id, fd, err := h.fd(arg(1))
		if err != nil {
			return reply{}, err
		}
		if f[0] == "rst" {
			if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
				return reply{}, err
			}
		} else {
			_ = unix.Shutdown(fd, unix.SHUT_RDWR) // wakes a blocked accept
		}
		h.forget(id)
		return reply{ID: id}, unix.Close(fd)
	case "recvfd":
		path := arg(1)
		s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return reply{}, err
		}
		if err := unix.Bind(s, &unix.SockaddrUnix{Name: path}); err != nil {
			return reply{}, err
		}
		if err := unix.Listen(s, 1); err != nil {
			return reply{}, err
		}
		go func() {
			defer unix.Close(s)
			c, _, err := unix.Accept4(s, unix.SOCK_CLOEXEC)
			if err != nil {
				return
			}
			defer unix.Close(c)
			buf, oob := make([]byte, 16), make([]byte, unix.CmsgSpace(4))
			_, oobn, _, _, err := unix.Recvmsg(c, buf, oob, unix.MSG_CMSG_CLOEXEC)
			if err != nil {
				return
			}
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil || len(msgs) == 0 {
				return
			}
			fds, err := unix.ParseUnixRights(&msgs[0])
			if err != nil || len(fds) == 0 {
				return
			}
			h.received <- h.add(fds[0])
		}()
		return reply{}, nil
	case "recvd":
		select {
		case id := <-h.received:
			_, fd, _ := h.fd(strconv.Itoa(id))
			l, r := names(fd)
			return reply{ID: id, Local: l, Remote: r}, nil
		case <-time.After(10 * time.Second):
			return reply{}, fmt.Errorf("no fd received")
		}
	case "sendfd":
		id, fd, err := h.fd(arg(1))
		if err != nil {
			return reply{}, err
		}
		s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return reply{}, err
		}
		defer unix.Close(s)
		if err := unix.Connect(s, &unix.SockaddrUnix{Name: arg(2)}); err != nil {
			return reply{}, err
		}
		if err := unix.Sendmsg(s, []byte("x"), unix.UnixRights(fd), nil, 0); err != nil {
			return reply{}, err
		}
		h.forget(id)
		unix.Close(fd)
		// Keep the fd count: the lowest free fd, most likely the same
		// number the socket had.
		nfd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return reply{}, err
		}
		return reply{ID: id, N: nfd}, nil
	case "forkhold":
		_, fd, err := h.fd(arg(1))
		if err != nil {
			return reply{}, err
		}
		d, err := unix.Dup(fd)
		if err != nil {
			return reply{}, err
		}
		file := os.NewFile(uintptr(d), "socket")
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=inherit")
		cmd.ExtraFiles = []*os.File{file}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return reply{}, err
		}
		err = cmd.Start()
		file.Close()
		if err != nil {
			return reply{}, err
		}
		var r reply
		if err := json.NewDecoder(out).Decode(&r); err != nil {
			return reply{}, err
		}
		go func() { _ = cmd.Wait() }()
		return reply{PID: r.PID}, nil
	case "nofile":
		var rl unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			return reply{}, err
		}
		rl.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			return reply{}, err
		}
		return reply{N: int(rl.Cur)}, nil
	case "udp":
		sa, dom, err := sockaddr(arg(1))
		if err != nil {
			return reply{}, err
		}
		fd, err := unix.Socket(dom, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return reply{}, err
		}
		if err := unix.Bind(fd, sa); err != nil {
			unix.Close(fd)
			return reply{}, err
		}
		l, _ := names(fd)
		return reply{ID: h.add(fd), Local: l}, nil
	case "exec":
		_, fd, err := h.fd(arg(1))
		if err != nil {
			return reply{}, err
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return reply{}, err
		}
		_ = h.out.Encode(reply{PID: os.Getpid()}) // the answer comes before execve
		err = syscall.Exec(arg(2), f[3:], os.Environ())
		return reply{}, err // only on failure; the parent has already read its answer
	case "exit":
		os.Exit(0)
	}
	return reply{}, fmt.Errorf("unknown command")
}
