//go:build linux

package torture

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/elastic/beats/v7/libbeat/beat"
	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/logp/logptest"
	"github.com/elastic/elastic-agent-libs/mapstr"

	"github.com/netprocbeat/netprocbeat/processor/add_network_process"
)

// pending skips a case whose fix has not landed, unless
// NETPROCBEAT_TORTURE_ALL=1. Each fix removes its gate.
func pending(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("NETPROCBEAT_TORTURE_ALL") != "1" {
		t.Skipf("pending fix (%s); NETPROCBEAT_TORTURE_ALL=1 runs it", what)
	}
}

// trackers runs f once per tracker mode: procfs (never load eBPF) and auto
// (load it when the kernel allows, as it does on the CI machine as root).
func trackers(t *testing.T, f func(t *testing.T, tracker string)) {
	for _, tr := range []string{"procfs", "auto"} {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

// newProcessor builds the processor from YAML exactly as a beat would:
// "tracker: <mode>" plus extra lines. It is closed at cleanup.
func newProcessor(t *testing.T, tracker string, extra ...string) beat.Processor {
	t.Helper()
	yml := "tracker: " + tracker + "\n" + strings.Join(extra, "\n")
	c, err := conf.NewConfigFrom(yml)
	if err != nil {
		t.Fatalf("config %q: %v", yml, err)
	}
	p, err := add_network_process.New(c, logptest.NewTestingLogger(t, ""))
	if err != nil {
		t.Fatalf("add_network_process.New(%q): %v", yml, err)
	}
	t.Cleanup(func() { closeProcessor(p) })
	return p
}

func closeProcessor(p beat.Processor) {
	if c, ok := p.(interface{ Close() error }); ok {
		_ = c.Close()
	}
}

func ap(s string) netip.AddrPort {
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		panic(fmt.Sprintf("address %q: %v", s, err))
	}
	return a
}

func newEvent(src, dst netip.AddrPort, ts time.Time) *beat.Event {
	return newEventT(src, dst, ts, "tcp")
}

func newEventT(src, dst netip.AddrPort, ts time.Time, transport string) *beat.Event {
	return &beat.Event{Timestamp: ts, Fields: mapstr.M{
		"source":      mapstr.M{"ip": src.Addr().Unmap().String(), "port": int(src.Port())},
		"destination": mapstr.M{"ip": dst.Addr().Unmap().String(), "port": int(dst.Port())},
		"network":     mapstr.M{"transport": transport},
	}}
}

func pidAt(ev *beat.Event, key string) int {
	v, err := ev.GetValue(key)
	if err != nil {
		return 0
	}
	switch n := v.(type) {
	case int:
		return n
	case int64:
		return int(n)
	}
	return -1
}

// lookup runs one event now and returns the PIDs named for source and
// destination (0 = none) and how long Run took.
func lookup(t *testing.T, p beat.Processor, src, dst netip.AddrPort, ts time.Time) (srcPID, dstPID int, took time.Duration) {
	t.Helper()
	ev := newEvent(src, dst, ts)
	start := time.Now()
	out, err := p.Run(ev)
	took = time.Since(start)
	if err != nil || out == nil {
		t.Errorf("Run(%v -> %v) = %v, %v: the event must never be dropped", src, dst, out, err)
		return 0, 0, took
	}
	return pidAt(out, "source.process.pid"), pidAt(out, "destination.process.pid"), took
}

// side selects the endpoint of an event a check is about.
type side int

const (
	srcSide side = iota
	dstSide
)

func (s side) String() string {
	if s == srcSide {
		return "source"
	}
	return "destination"
}

// tally counts answers for one endpoint against the truth.
type tally struct {
	right, wrong, missed int
	wrongs               []string // first few, for the failure text
	firstRight           time.Duration
	start                time.Time
}

func newTally() *tally { return &tally{firstRight: -1, start: time.Now()} }

// add records one answer: 0 is missed, a PID in truth is right, any other
// PID is wrong (truth nil: every answer is wrong).
func (c *tally) add(got int, truth []int, what string) {
	if got == 0 {
		c.missed++
		return
	}
	for _, w := range truth {
		if got == w {
			c.right++
			if c.firstRight < 0 {
				c.firstRight = time.Since(c.start)
			}
			return
		}
	}
	c.wrong++
	if len(c.wrongs) < 8 {
		c.wrongs = append(c.wrongs, fmt.Sprintf("+%v %s: named pid %d, owner %v", time.Since(c.start).Round(time.Millisecond), what, got, truth))
	}
}

// addWrong records a wrong answer that is not a PID (a stale description).
func (c *tally) addWrong(what string) {
	c.wrong++
	if len(c.wrongs) < 8 {
		c.wrongs = append(c.wrongs, fmt.Sprintf("+%v %s", time.Since(c.start).Round(time.Millisecond), what))
	}
}

func (c *tally) String() string {
	return fmt.Sprintf("right=%d wrong=%d missed=%d firstRight=%v", c.right, c.wrong, c.missed, c.firstRight.Round(time.Millisecond))
}

// requireNoWrong fails the test when any answer named a non-owner.
func (c *tally) requireNoWrong(t *testing.T, what string) {
	t.Helper()
	t.Logf("%s: %s", what, c)
	if c.wrong > 0 {
		t.Errorf("%s: %d wrong answer(s) of %d:\n  %s", what, c.wrong, c.right+c.wrong+c.missed, strings.Join(c.wrongs, "\n  "))
	}
}

// watch runs the event every interval for d and tallies the answer for one
// side against truth.
func watch(t *testing.T, p beat.Processor, src, dst netip.AddrPort, s side, truth []int, d time.Duration) *tally {
	t.Helper()
	c := newTally()
	for time.Since(c.start) < d {
		sp, dp, _ := lookup(t, p, src, dst, time.Now())
		got := sp
		if s == dstSide {
			got = dp
		}
		c.add(got, truth, fmt.Sprintf("%v %v->%v", s, src, dst))
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

// eventually polls until the event names one of truth for side s, within
// bound; any wrong answer on the way is counted. It fails the test when
// the owner is not named in time.
func eventually(t *testing.T, p beat.Processor, src, dst netip.AddrPort, s side, truth []int, bound time.Duration, what string) *tally {
	t.Helper()
	c := newTally()
	for time.Since(c.start) < bound {
		sp, dp, _ := lookup(t, p, src, dst, time.Now())
		got := sp
		if s == dstSide {
			got = dp
		}
		c.add(got, truth, fmt.Sprintf("%v %v->%v", s, src, dst))
		if c.right > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.requireNoWrong(t, what)
	if c.right == 0 {
		t.Errorf("%s: owner %v of the %v end of %v->%v not named within %v (%s)", what, truth, s, src, dst, bound, c)
	}
	return c
}

// helper is a running helper process (see helperproc_linux_test.go).
type helper struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	pid   int
	mu    sync.Mutex
	done  bool
}

// startHelper starts a helper, in network namespace netns unless "".
func startHelper(t *testing.T, name, netns string) *helper {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	if netns != "" {
		cmd = exec.Command("ip", "netns", "exec", netns, self, "-test.run=^$")
	} else {
		cmd = exec.Command(self, "-test.run=^$")
	}
	cmd.Env = append(os.Environ(), helperEnv+"=sock")
	cmd.Stderr = os.Stderr
	h := &helper{t: t, name: name, cmd: cmd}
	if h.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.out = bufio.NewReaderSize(out, 1<<20)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper %s: %v", name, err)
	}
	t.Cleanup(h.stop)
	r := h.read("start")
	h.pid = r.PID
	if h.pid <= 0 {
		t.Fatalf("helper %s did not report its PID: %+v", name, r)
	}
	return h
}

func (h *helper) read(what string) reply {
	h.t.Helper()
	type res struct {
		line []byte
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		l, err := h.out.ReadBytes('\n')
		ch <- res{l, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			h.t.Fatalf("helper %s (%s): %v", h.name, what, r.err)
		}
		var rep reply
		if err := json.Unmarshal(r.line, &rep); err != nil {
			h.t.Fatalf("helper %s (%s): %q: %v", h.name, what, r.line, err)
		}
		return rep
	case <-time.After(2 * time.Minute):
		h.t.Fatalf("helper %s: no answer to %q within 2m", h.name, what)
	}
	return reply{}
}

// do sends one command and returns its answer; an error answer is fatal.
func (h *helper) do(format string, args ...any) reply {
	h.t.Helper()
	cmd := fmt.Sprintf(format, args...)
	if _, err := fmt.Fprintln(h.stdin, cmd); err != nil {
		h.t.Fatalf("helper %s: %s: %v", h.name, cmd, err)
	}
	r := h.read(cmd)
	if r.Err != "" {
		h.t.Fatalf("helper %s (pid %d): %s", h.name, h.pid, r.Err)
	}
	return r
}

// exit makes the helper exit and waits until it has been reaped, so its
// PID and sockets are gone.
func (h *helper) exit() {
	h.t.Helper()
	_, _ = fmt.Fprintln(h.stdin, "exit")
	h.stop()
}

func (h *helper) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return
	}
	h.done = true
	h.stdin.Close()
	ch := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-ch
	}
}

// kill ends the helper (for one that no longer reads its stdin).
func (h *helper) kill() {
	_ = h.cmd.Process.Kill()
	h.stop()
}

// killPID ends a process this test started indirectly (a forkhold child).
func killPID(pid int) {
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// run executes a command (ip ...), failing the test on error.
func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// unknownPort returns a loopback tuple nobody owns: events for it are
// misses that make the watcher rescan.
func missTuple(i int) (netip.AddrPort, netip.AddrPort) {
	return ap(fmt.Sprintf("127.0.0.1:%d", 1024+i%1000)), ap(fmt.Sprintf("127.11.%d.%d:9", i/250%250, 1+i%250))
}

// quiet runs a cleanup command, ignoring its result.
func quiet(name string, args ...string) error { return exec.Command(name, args...).Run() }

// peerNet is a veth pair to a namespace that plays a remote host. The
// product counts the addresses of every namespace some process lives in as
// local, so a client there would not be remote; instead a helper there
// dials, hands the connected socket to a holder in the host namespace
// (SCM_RIGHTS) and exits. The socket stays in the peer namespace, no
// process does: its address is as remote as another machine's.
type peerNet struct {
	ns             string
	hostIP, peerIP netip.Addr
	holder         *helper
}

// newPeerNet creates veth np11v<tag><block>h on the host (198.51.100.8*block+1/29,
// the first free block) and its peer …p in netns np11-peer-<tag>-<block>
// (+2).
func newPeerNet(t *testing.T) *peerNet {
	t.Helper()
	block, hostIP := freeAddr(t, 1, 30, func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(8*i + 1)}) })
	n := &peerNet{
		ns:     fmt.Sprintf("np11-peer-%s-%d", runTag, block),
		hostIP: hostIP,
		peerIP: netip.AddrFrom4([4]byte{198, 51, 100, byte(8*block + 2)}),
	}
	host, peer := fmt.Sprintf("np11v%s%dh", runTag, block), fmt.Sprintf("np11v%s%dp", runTag, block)
	run(t, "ip", "netns", "add", n.ns)
	t.Cleanup(func() { _ = quiet("ip", "netns", "del", n.ns) })
	run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { _ = quiet("ip", "link", "del", host) })
	run(t, "ip", "link", "set", peer, "netns", n.ns)
	run(t, "ip", "addr", "add", n.hostIP.String()+"/29", "dev", host)
	run(t, "ip", "link", "set", host, "up")
	run(t, "ip", "-n", n.ns, "addr", "add", n.peerIP.String()+"/29", "dev", peer)
	run(t, "ip", "-n", n.ns, "link", "set", peer, "up")
	run(t, "ip", "-n", n.ns, "link", "set", "lo", "up")
	n.holder = startHelper(t, "remote-holder", "")
	return n
}

func (n *peerNet) host(port uint16) netip.AddrPort { return netip.AddrPortFrom(n.hostIP, port) }

// dial makes one connection from the remote namespace to dst and returns
// the client's address.
func (n *peerNet) dial(t *testing.T, dst netip.AddrPort) netip.AddrPort {
	t.Helper()
	path := filepath.Join(t.TempDir(), "np11-remote.sock")
	n.holder.do("recvfd %s", path)
	c := startHelper(t, "remote-client", n.ns)
	d := c.do("dial %s", dst)
	c.do("sendfd %d %s", d.ID, path)
	n.holder.do("recvd")
	c.exit()
	return ap(d.Local)
}

// settle makes the watcher rescan now (a miss for a tuple nobody owns) and
// lets any rescan it scheduled land, so the next answers come from a
// snapshot of the present state.
func settle(t *testing.T, p beat.Processor) {
	t.Helper()
	for i := 0; i < 2; i++ {
		s, d := missTuple(int(time.Now().UnixNano() % 100000))
		lookup(t, p, s, d, time.Now())
		time.Sleep(600 * time.Millisecond)
	}
}

// runTag keeps this test process's namespaces and links apart from those of
// another run of the suite on the same machine.
var runTag = fmt.Sprintf("%04x", os.Getpid()&0xffff)

// handedOut holds addresses this process gave to a fixture.
var handedOut = struct {
	sync.Mutex
	m map[netip.Addr]bool
}{m: map[netip.Addr]bool{}}

// freeAddr returns the first i in [lo, hi] whose address cand(i) is on no
// interface of the host and not handed out by this process, so concurrent
// runs of the suite do not put one address on two links.
func freeAddr(t *testing.T, lo, hi int, cand func(int) netip.Addr) (int, netip.Addr) {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	have := map[netip.Addr]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			have[p.Addr()] = true
		}
	}
	for i := lo; i <= hi; i++ {
		if a := cand(i); !have[a] && !handedOut.m[a] {
			handedOut.m[a] = true
			return i, a
		}
	}
	t.Fatalf("no free test address in %v..%v", cand(lo), cand(hi))
	return 0, netip.Addr{}
}
