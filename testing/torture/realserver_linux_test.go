//go:build linux

package torture

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/elastic/beats/v7/libbeat/beat"

	"github.com/netprocbeat/netprocbeat/testing/realserver"
)

// Real server shapes: one listening socket held by several processes
// (pre-fork workers, a socket-activation parent and its service, a
// fork-per-connection server and its child). Truth comes from the servers:
// each process reports the connections it accepted or serves
// (testdata/realservers.py), nginx logs the serving worker's $pid. The
// destination must be the process that serves the connection, or nothing;
// the process that only holds the listener is wrong.

// realPorts is the TCP port range the real servers listen in
// (NETPROCBEAT_TEST_PORTS overrides it).
func realPorts(t *testing.T) (uint16, uint16) {
	t.Helper()
	lo, hi, err := realserver.PortRange(46000, 46999)
	if err != nil {
		t.Fatal(err)
	}
	return lo, hi
}

// lookupVia runs one event and returns the PIDs named for each side and
// the destination's found_by.
func lookupVia(t *testing.T, p beat.Processor, src, dst netip.AddrPort, ts time.Time) (srcPID, dstPID int, via string) {
	t.Helper()
	out, err := p.Run(newEvent(src, dst, ts))
	if err != nil || out == nil {
		t.Errorf("Run(%v -> %v) = %v, %v: the event must never be dropped", src, dst, out, err)
		return 0, 0, ""
	}
	v, _ := out.GetValue("add_network_process.destination.found_by")
	s, _ := v.(string)
	return pidAt(out, "source.process.pid"), pidAt(out, "destination.process.pid"), s
}

// judge tallies one kind of answer and remembers who was wrongly named,
// by role, so a failure says "the master, found_by listener".
type judge struct {
	name  string
	roles map[int]string
	*tally
	byWrong map[string]int // "role pid N found_by X" -> count
}

func newJudge(name string, roles map[int]string) *judge {
	return &judge{name: name, roles: roles, tally: newTally(), byWrong: map[string]int{}}
}

func (j *judge) add(got int, via string, truth []int, what string) {
	before := j.wrong
	j.tally.add(got, truth, fmt.Sprintf("%s (found_by %q)", what, via))
	if j.wrong > before {
		role := j.roles[got]
		if role == "" {
			role = "unrelated process"
		}
		j.byWrong[fmt.Sprintf("%s pid %d found_by %q", role, got, via)]++
	}
}

// check logs the counts and fails the test on any wrong answer.
func (j *judge) check(t *testing.T) {
	t.Helper()
	t.Logf("%-28s %s", j.name+":", j.summary())
	if j.wrong > 0 {
		t.Errorf("%s: %d wrong of %d (%s):\n  %s", j.name, j.wrong, j.right+j.wrong+j.missed,
			j.wrongNames(), strings.Join(j.wrongs, "\n  "))
	}
}

func (j *judge) summary() string {
	s := fmt.Sprintf("right=%d wrong=%d missed=%d", j.right, j.wrong, j.missed)
	if j.wrong > 0 {
		s += " named: " + j.wrongNames()
	}
	return s
}

func (j *judge) wrongNames() string {
	var ks []string
	for k, n := range j.byWrong {
		ks = append(ks, fmt.Sprintf("%s x%d", k, n))
	}
	sort.Strings(ks)
	return strings.Join(ks, "; ")
}

// pyLine is one line from testdata/realservers.py.
type pyLine struct {
	Ev     string `json:"ev"`
	PID    int    `json:"pid"`
	Port   uint16 `json:"port"`
	Local  string `json:"local"`
	Remote string `json:"remote"`
}

// pyServer is a running testdata/realservers.py.
type pyServer struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	pid    int // the listener's creator
	port   uint16
	mu     sync.Mutex
	lines  []pyLine
	closed bool
}

func needPython(t *testing.T) string {
	t.Helper()
	py, err := realserver.PythonPath()
	if err != nil {
		t.Skipf("%v", err)
	}
	return py
}

// startPyServer runs realservers.py MODE LO HI ARGS... in its own process
// group and returns once it listens. At cleanup its stdin is closed (the
// parent kills its children and exits), then the group is killed by its
// id.
func startPyServer(t *testing.T, mode string, args ...string) *pyServer {
	t.Helper()
	py := needPython(t)
	lo, hi := realPorts(t)
	argv := append([]string{"testdata/realservers.py", mode, strconv.Itoa(int(lo)), strconv.Itoa(int(hi))}, args...)
	s := &pyServer{t: t, cmd: exec.Command(py, argv...)}
	s.cmd.Stderr = os.Stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var err error
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s %v: %v", py, argv, err)
	}
	pgid := s.cmd.Process.Pid
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var l pyLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				fmt.Fprintf(os.Stderr, "realservers.py: %q: %v\n", sc.Text(), err)
				continue
			}
			s.mu.Lock()
			s.lines = append(s.lines, l)
			s.mu.Unlock()
		}
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
	}()
	t.Cleanup(func() {
		s.stdin.Close()
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
	l := s.wait(func(l pyLine) bool { return l.Ev == "listening" }, "listening")
	s.pid, s.port = l.PID, l.Port
	return s
}

// wait returns the first line that match accepts, waiting up to 30 s.
func (s *pyServer) wait(match func(pyLine) bool, what string) pyLine {
	s.t.Helper()
	end := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		for _, l := range s.lines {
			if match(l) {
				s.mu.Unlock()
				return l
			}
		}
		closed := s.closed
		s.mu.Unlock()
		if closed || time.Now().After(end) {
			s.t.Fatalf("realservers.py (pid %d): no %s line (exited: %v); lines: %+v", s.pid, what, closed, s.snapshot())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *pyServer) snapshot() []pyLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]pyLine(nil), s.lines...)
}

func (s *pyServer) seen(match func(pyLine) bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if match(l) {
			return true
		}
	}
	return false
}

// workers waits for n "worker" lines and returns their PIDs.
func (s *pyServer) workers(n int) []int {
	s.t.Helper()
	var pids []int
	s.wait(func(pyLine) bool {
		pids = pids[:0]
		for _, l := range s.lines {
			if l.Ev == "worker" {
				pids = append(pids, l.PID)
			}
		}
		return len(pids) >= n
	}, fmt.Sprintf("%d worker", n))
	return pids
}

func (s *pyServer) line(ev string, remote netip.AddrPort) pyLine {
	s.t.Helper()
	r := remote.String()
	return s.wait(func(l pyLine) bool { return l.Ev == ev && l.Remote == r }, ev+" "+r)
}

// realConn is one client connection of the test process to a real server
// and who serves it.
type realConn struct {
	c        net.Conn
	src, dst netip.AddrPort
	server   int       // the PID that serves it, from the server's own report
	during   time.Time // a time at which the connection was open
	echoed   bool      // the server has read and written on it
}

func dialReal(t *testing.T, s *pyServer, ev string) *realConn {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port))
	if err != nil {
		t.Fatalf("dial the real server on port %d: %v", s.port, err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &realConn{c: c, src: ap(c.LocalAddr().String()), dst: ap(c.RemoteAddr().String())}
	l := s.line(ev, rc.src)
	rc.server, rc.during = l.PID, time.Now()
	if ap(l.Local) != rc.dst {
		t.Fatalf("server reports %+v for the connection %v -> %v", l, rc.src, rc.dst)
	}
	return rc
}

// echo sends a line on the connection and reads it back: the server
// process has then done I/O on it (an idle connection has not).
func (c *realConn) echo(t *testing.T) {
	t.Helper()
	_ = c.c.SetDeadline(time.Now().Add(30 * time.Second))
	msg := []byte("ping\n")
	if _, err := c.c.Write(msg); err != nil {
		t.Fatalf("echo on %v: %v", c.src, err)
	}
	if _, err := io.ReadFull(c.c, make([]byte, len(msg))); err != nil {
		t.Fatalf("echo on %v: %v", c.src, err)
	}
	_ = c.c.SetDeadline(time.Time{})
	c.echoed = true
}

// closeAll closes the client ends and waits until every server process has
// closed its end.
func closeAll(t *testing.T, s *pyServer, conns []*realConn) {
	t.Helper()
	for _, c := range conns {
		c.c.Close()
	}
	for _, c := range conns {
		s.line("closed", c.src)
	}
}

// judgeConns runs one event per connection every interval for d (at least
// once), with @timestamp ts(c), and tallies both sides: the destination
// (in dst(c)) against the serving process, the source against this test
// process.
func judgeConns(t *testing.T, p beat.Processor, conns []*realConn, dst func(*realConn) *judge, src *judge, d time.Duration, ts func(*realConn) time.Time) {
	t.Helper()
	self := os.Getpid()
	for start := time.Now(); ; {
		for _, c := range conns {
			sp, dp, via := lookupVia(t, p, c.src, c.dst, ts(c))
			what := fmt.Sprintf("%v->%v", c.src, c.dst)
			dst(c).add(dp, via, []int{c.server}, what)
			src.add(sp, "", []int{self}, what)
		}
		if time.Since(start) >= d {
			return
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// byIO splits a destination tally by whether the server did I/O on the
// connection (the eBPF tracker learns an accepted connection's worker
// from its first send or receive).
func byIO(phase string, roles map[int]string) (func(*realConn) *judge, []*judge) {
	idle, echoed := newJudge(phase+", idle: destination", roles), newJudge(phase+", echoed: destination", roles)
	return func(c *realConn) *judge {
		if c.echoed {
			return echoed
		}
		return idle
	}, []*judge{idle, echoed}
}

// sharedListenerCase checks a server whose listener several processes
// hold: conns open (half of them echoed), events to the port with no
// connection behind them, then the same connections after they closed.
func sharedListenerCase(t *testing.T, p beat.Processor, s *pyServer, conns []*realConn, roles map[int]string) {
	t.Helper()
	openDst, openJ := byIO("open", roles)
	openSrc := newJudge("open: source", roles)
	judgeConns(t, p, conns, openDst, openSrc, 3*time.Second, func(*realConn) time.Time { return time.Now() })
	noConn := newJudge("no connection: destination", roles)
	judgeNoConn(t, p, s.port, noConn, 2*time.Second)
	closeAll(t, s, conns)
	lateDst, lateJ := byIO("late", roles)
	lateSrc := newJudge("late: source", roles)
	judgeConns(t, p, conns, lateDst, lateSrc, 2*time.Second, func(c *realConn) time.Time { return c.during })
	all := append(append(openJ, openSrc, noConn), append(lateJ, lateSrc)...)
	for _, j := range all {
		j.check(t)
	}
}

// judgeNoConn runs events to the listening port from source ports with no
// connection behind them for d: several processes hold the listener, so
// any destination answer is wrong.
func judgeNoConn(t *testing.T, p beat.Processor, port uint16, j *judge, d time.Duration) {
	t.Helper()
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	for i, start := 0, time.Now(); time.Since(start) < d; i++ {
		// Ports 1..200: privileged, no client of this test uses them.
		src := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1+i%200))
		_, dp, via := lookupVia(t, p, src, dst, time.Now())
		j.add(dp, via, nil, fmt.Sprintf("%v->%v (no connection)", src, dst))
		time.Sleep(100 * time.Millisecond)
	}
}

func roleMap(kv ...any) map[int]string {
	m := map[int]string{os.Getpid(): "the test process (client)"}
	for i := 0; i < len(kv); i += 2 {
		switch pids := kv[i].(type) {
		case int:
			m[pids] = kv[i+1].(string)
		case []int:
			for _, p := range pids {
				m[p] = kv[i+1].(string)
			}
		}
	}
	return m
}

// TestRealPrefork: a Python pre-fork server, the parent binds and listens
// and forks 3 workers that accept on the inherited listener; the parent
// only waits. Each of 12 held connections must be credited to the worker
// that accepted it (half of them have echoed a line, half are idle), or
// to nobody: naming the parent (the lowest-PID holder of the listener) is
// wrong. Events to the port with no connection behind
// them must name nobody. Events run while the connections are open and
// again, with @timestamp inside the connection, after they closed.
func TestRealPrefork(t *testing.T) {
	needPython(t)
	trackers(t, func(t *testing.T, tracker string) {
		p := newProcessor(t, tracker)
		s := startPyServer(t, "prefork", "3")
		workers := s.workers(3)
		roles := roleMap(s.pid, "the pre-fork parent", workers, "a worker")
		var conns []*realConn
		for i := 0; i < 12; i++ {
			c := dialReal(t, s, "accept")
			if i%2 == 0 {
				c.echo(t)
			}
			conns = append(conns, c)
		}
		t.Logf("parent %d, workers %v", s.pid, workers)
		sharedListenerCase(t, p, s, conns, roles)
	})
}

// TestRealSocketActivation: a parent creates the listener, starts a child
// service with it as fd 3 and keeps its own copy; the child accepts. The
// 8 connections (half echoed) are the child's or nobody's; the parent is
// wrong, and events to the port with no connection behind them name
// nobody.
func TestRealSocketActivation(t *testing.T) {
	needPython(t)
	trackers(t, func(t *testing.T, tracker string) {
		p := newProcessor(t, tracker)
		s := startPyServer(t, "activate")
		child := s.workers(1)
		roles := roleMap(s.pid, "the activating parent", child, "the service")
		var conns []*realConn
		for i := 0; i < 8; i++ {
			c := dialReal(t, s, "accept")
			if i%2 == 0 {
				c.echo(t)
			}
			conns = append(conns, c)
		}
		t.Logf("parent %d, service %v", s.pid, child)
		sharedListenerCase(t, p, s, conns, roles)
	})
}

// TestRealForkPerConnection: the server accepts, forks a child that serves
// the connection (and closes the listener), and closes its own copy at
// once ("closes-at-once") or after 1 s ("holds-1s"; both hold the
// connection meanwhile). The destination is the child or nobody, never
// the parent: while both hold it, and after the parent closed its copy.
// Late events (after the connection closed, @timestamp inside it) too.
func TestRealForkPerConnection(t *testing.T) {
	needPython(t)
	for _, v := range []struct {
		name string
		hold string
	}{{"closes-at-once", "0"}, {"holds-1s", "1"}} {
		t.Run(v.name, func(t *testing.T) {
			trackers(t, func(t *testing.T, tracker string) {
				p := newProcessor(t, tracker)
				s := startPyServer(t, "forkconn", v.hold)
				roles := roleMap(s.pid, "the accepting parent")
				both, alone := newJudge("open, both hold: destination", roles), newJudge("open, child alone: destination", roles)
				openSrc := newJudge("open: source", roles)
				var conns []*realConn
				for i := 0; i < 6; i++ {
					c := dialReal(t, s, "serve")
					if i%2 == 0 {
						c.echo(t)
					}
					roles[c.server] = "another connection's child"
					conns = append(conns, c)
					// Promptly, then for 1.5 s: across the parent's close.
					for start := time.Now(); time.Since(start) < 1500*time.Millisecond; time.Sleep(100 * time.Millisecond) {
						parentClosed := s.seen(func(l pyLine) bool { return l.Ev == "parent_closed" && l.Remote == c.src.String() })
						sp, dp, via := lookupVia(t, p, c.src, c.dst, time.Now())
						j := both
						if parentClosed {
							j = alone
						}
						what := fmt.Sprintf("%v->%v", c.src, c.dst)
						j.add(dp, via, []int{c.server}, what)
						openSrc.add(sp, "", []int{os.Getpid()}, what)
					}
				}
				for _, c := range conns {
					s.line("parent_closed", c.src)
				}
				closeAll(t, s, conns)
				lateDst, lateJ := byIO("late", roles)
				lateSrc := newJudge("late: source", roles)
				judgeConns(t, p, conns, lateDst, lateSrc, 2*time.Second, func(c *realConn) time.Time { return c.during })
				var kids []int
				for _, c := range conns {
					kids = append(kids, c.server)
				}
				t.Logf("parent %d, children %v", s.pid, kids)
				for _, j := range append([]*judge{both, alone, openSrc}, append(lateJ, lateSrc)...) {
					j.check(t)
				}
			})
		})
	}
}

// nginxFixture starts the distro nginx with 4 workers, or skips saying
// what to install.
func nginxFixture(t *testing.T) (*realserver.Nginx, map[int]string) {
	t.Helper()
	lo, hi := realPorts(t)
	n := realserver.StartNginx(t, realserver.NginxConfig{Workers: 4, PortLo: lo, PortHi: hi})
	roles := roleMap(n.MasterPID, "the nginx master", n.Workers, "an nginx worker")
	t.Logf("nginx master %d, workers %v, port %d", n.MasterPID, n.Workers, n.Port)
	return n, roles
}

func needNginx(t *testing.T) {
	t.Helper()
	if err := realserver.NginxAvailable(); err != nil {
		t.Skipf("%v", err)
	}
}

// nginxJudges tallies the destination for one way of stamping events:
// @timestamp = when the event is read, or the log's $msec.
type nginxJudges struct{ now, msec *judge }

func newNginxJudges(phase string, roles map[int]string) nginxJudges {
	return nginxJudges{newJudge(phase+", @timestamp=read time", roles), newJudge(phase+", @timestamp=$msec", roles)}
}

// run processes the log line on pNow (read time) and pMsec ($msec) and
// returns the source answers for a later check.
func (j nginxJudges) run(t *testing.T, pNow, pMsec beat.Processor, l realserver.LogLine) (srcNow, srcMsec int) {
	t.Helper()
	what := fmt.Sprintf("%v->%v %s", l.Remote, l.Server, l.URI)
	sp, dp, via := lookupVia(t, pNow, l.Remote, l.Server, time.Now())
	j.now.add(dp, via, []int{l.PID}, what)
	sm, dm, viaM := lookupVia(t, pMsec, l.Remote, l.Server, l.Time)
	j.msec.add(dm, viaM, []int{l.PID}, what)
	return sp, sm
}

// strict95 requires >= 95 % right where the gate is on (tracker auto and
// NETPROCBEAT_NGINX_STRICT=1); the numbers are printed in any case.
func strict95(t *testing.T, tracker string, js ...*judge) {
	t.Helper()
	if tracker != "auto" || os.Getenv("NETPROCBEAT_NGINX_STRICT") != "1" {
		return
	}
	for _, j := range js {
		if n := j.right + j.wrong + j.missed; n > 0 && j.right*100 < 95*n {
			t.Errorf("%s: %d of %d right, want >= 95%% (NETPROCBEAT_NGINX_STRICT=1)", j.name, j.right, n)
		}
	}
}

// TestRealNginx: the distro nginx (master + 4 workers on one inherited
// listener, 127.0.0.1 and [::1]) serves NETPROCBEAT_NGINX_REQUESTS (100)
// one-shot requests from curl, wget, python3 and bash /dev/tcp in turn, two
// at a time. The test tails the access log as a beat would and runs each
// line as an event (source = $remote_addr:$remote_port, destination =
// $server_addr:$server_port) at once ("tail") and again after all requests
// ended ("late"), with @timestamp = read time and = $msec, on two
// processors. The destination must be the log's $pid or nothing (any
// other, the master above all, is wrong); the source must be the client
// process or nothing.
func TestRealNginx(t *testing.T) {
	needNginx(t)
	needPython(t)
	var clients []realserver.Client
	for _, c := range realserver.AllClients {
		if _, err := c.Path(); err != nil {
			t.Logf("client left out: %v", err)
			continue
		}
		clients = append(clients, c)
	}
	if len(clients) == 0 {
		t.Skip("no HTTP client: install curl or wget")
	}
	requests := envInt("NETPROCBEAT_NGINX_REQUESTS", 100)
	trackers(t, func(t *testing.T, tracker string) {
		pNow, pMsec := newProcessor(t, tracker), newProcessor(t, tracker)
		n, roles := nginxFixture(t)
		tail, err := n.TailLog()
		if err != nil {
			t.Fatal(err)
		}
		defer tail.Close()

		var (
			mu      sync.Mutex
			clientP = map[string]int{} // URI -> client PID
			errs    []error
			next    int
			wg      sync.WaitGroup
		)
		ips := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}
		for g := 0; g < 2; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if i >= requests {
						return
					}
					c := clients[i%len(clients)]
					uri := fmt.Sprintf("/r?i=%d&c=%s", i, c)
					r, err := realserver.RunClient(context.Background(), c, n.URL(ips[i/len(clients)%2], uri))
					mu.Lock()
					clientP[uri] = r.PID
					if err != nil {
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			}()
		}

		tailJ := newNginxJudges("tail", roles)
		type srcAns struct {
			l         realserver.LogLine
			now, msec int
		}
		var srcs []srcAns
		var lines []realserver.LogLine
		for len(lines) < requests {
			l, ok, err := tail.Next(30 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				t.Fatalf("access log: %d of %d lines within 30s after the last one", len(lines), requests)
			}
			lines = append(lines, l)
			sn, sm := tailJ.run(t, pNow, pMsec, l)
			srcs = append(srcs, srcAns{l, sn, sm})
		}
		wg.Wait()
		for _, err := range errs {
			t.Errorf("client: %v", err)
		}
		lateJ := newNginxJudges("late", roles)
		for _, l := range lines {
			sn, sm := lateJ.run(t, pNow, pMsec, l)
			srcs = append(srcs, srcAns{l, sn, sm})
		}
		srcJ := newJudge("source (all phases)", roles)
		for _, s := range srcs {
			pid := clientP[s.l.URI]
			if pid == 0 {
				t.Errorf("log line %+v: no client made this request", s.l)
				continue
			}
			roles[pid] = "the client"
			srcJ.add(s.now, "", []int{pid}, s.l.URI)
			srcJ.add(s.msec, "", []int{pid}, s.l.URI)
		}
		served := map[int]int{}
		for _, l := range lines {
			served[l.PID]++
		}
		t.Logf("requests per $pid: %v", served)
		for _, j := range []*judge{tailJ.now, tailJ.msec, lateJ.now, lateJ.msec, srcJ} {
			j.check(t)
		}
		strict95(t, tracker, tailJ.now, tailJ.msec, lateJ.now, lateJ.msec)
	})
}

// TestRealNginxKeepAlive: four python3 http.client connections to nginx
// (two over 127.0.0.1, two over [::1]), each held open for 5 requests.
// After each request the test reads its log line and runs the event while
// the connection lives (read time and $msec); after the clients closed,
// again (late). The destination must be the log's $pid or nothing; the
// source must be the python3 client or nothing.
func TestRealNginxKeepAlive(t *testing.T) {
	needNginx(t)
	needPython(t)
	trackers(t, func(t *testing.T, tracker string) {
		pNow, pMsec := newProcessor(t, tracker), newProcessor(t, tracker)
		n, roles := nginxFixture(t)
		tail, err := n.TailLog()
		if err != nil {
			t.Fatal(err)
		}
		defer tail.Close()
		var ks []*realserver.KeepAlive
		for i, ip := range []string{"127.0.0.1", "::1", "127.0.0.1", "::1"} {
			k, err := realserver.StartKeepAlive(netip.MustParseAddr(ip), n.Port)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(k.Close)
			roles[k.PID] = fmt.Sprintf("keep-alive client %d", i)
			ks = append(ks, k)
		}
		openJ := newNginxJudges("open", roles)
		srcJ := newJudge("source (all phases)", roles)
		var lines []realserver.LogLine
		for r := 0; r < 5; r++ {
			for i, k := range ks {
				uri := fmt.Sprintf("/ka?k=%d&r=%d", i, r)
				if err := k.Get(uri); err != nil {
					t.Fatal(err)
				}
				l, ok, err := tail.Next(30 * time.Second)
				if err != nil || !ok || l.URI != uri || l.Remote != k.Local {
					t.Fatalf("access log after GET %s from %v: %+v, %v, %v", uri, k.Local, l, ok, err)
				}
				lines = append(lines, l)
				sn, sm := openJ.run(t, pNow, pMsec, l)
				srcJ.add(sn, "", []int{k.PID}, uri)
				srcJ.add(sm, "", []int{k.PID}, uri)
			}
		}
		for _, k := range ks {
			k.Close()
		}
		lateJ := newNginxJudges("late", roles)
		for i, l := range lines {
			sn, sm := lateJ.run(t, pNow, pMsec, l)
			k := ks[i%len(ks)]
			srcJ.add(sn, "", []int{k.PID}, l.URI)
			srcJ.add(sm, "", []int{k.PID}, l.URI)
		}
		for _, j := range []*judge{openJ.now, openJ.msec, lateJ.now, lateJ.msec, srcJ} {
			j.check(t)
		}
		strict95(t, tracker, openJ.now, openJ.msec)
	})
}
