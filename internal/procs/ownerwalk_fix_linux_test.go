//go:build linux

package procs

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWalkReplacedSocketDescriptor (scenario 4, rescan side): process X
// holds a socket that Y also holds; X replaces the descriptor with
// /dev/null in place, so its descriptor count does not change. The next
// incremental walk must name Y, not the trusted X.
func TestWalkReplacedSocketDescriptor(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	e := newLinuxEngine(t)
	if !e.fdCounts {
		t.Skip("this kernel does not report fd counts: every walk is full")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	remote := netip.MustParseAddrPort(c.RemoteAddr().String())
	sock, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// X: a shell holding the socket as fd 3 that, on a line on stdin,
	// replaces fd 3 with /dev/null (dup2: the count stays) and says so.
	x := exec.Command("sh", "-c", `read a; exec 3</dev/null; echo replaced; read b`)
	x.ExtraFiles = []*os.File{sock}
	xin, err := x.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	xout, err := x.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { xin.Close(); _ = x.Wait() }()
	y := exec.Command("sleep", "600")
	y.ExtraFiles = []*os.File{sock}
	if err := y.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = y.Process.Kill(); _ = y.Wait() }()
	var st unix.Stat_t
	if err := unix.Fstat(int(sock.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	sock.Close() // only X and Y hold it now
	link := "socket:[" + strconv.FormatUint(st.Ino, 10) + "]"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ents, _ := os.ReadDir("/proc/self/fd")
		held := false
		for _, d := range ents {
			if l, _ := os.Readlink("/proc/self/fd/" + d.Name()); l == link {
				held = true
			}
		}
		if !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("this test still holds %s", link)
		}
	}
	if x.Process.Pid > y.Process.Pid {
		t.Skip("PIDs wrapped between the two children")
	}

	ownerNow := func() int {
		t.Helper()
		socks, err := e.Sockets(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range socks {
			if s.Transport == TCP && s.Local == local && s.Remote == remote {
				return s.PID
			}
		}
		t.Fatalf("socket %v not in the table", local)
		return 0
	}
	if got := ownerNow(); got != x.Process.Pid {
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(got) + "/cmdline")
		t.Fatalf("before: owner %d (%q; this test is %d), want X=%d (the lower PID)", got, cmdline, os.Getpid(), x.Process.Pid)
	}
	// The next walk comes after verifyEvery, as rescans on a real host do:
	// a walk sooner may trust X's descriptors without re-checking them.
	later := time.Now().Add(verifyEvery + time.Second)
	e.now = func() time.Time { return later }
	if _, err := xin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(xout).ReadString('\n'); err != nil || strings.TrimSpace(line) != "replaced" {
		t.Fatalf("X: %q, %v", line, err)
	}
	failed := e.stats.verifyFailed
	if got := ownerNow(); got != y.Process.Pid {
		t.Fatalf("after X replaced its descriptor: owner %d, want Y=%d", got, y.Process.Pid)
	}
	if e.stats.verifyFailed == failed {
		t.Errorf("no verification failed: X was re-read for another reason, the test did not test the trust")
	}
}

// countdownCtx is a context whose Err turns to DeadlineExceeded after n
// calls: a rescan budget that runs out part way through the owner walk.
type countdownCtx struct {
	context.Context
	n int
}

func (c *countdownCtx) Err() error {
	if c.n <= 0 {
		return context.DeadlineExceeded
	}
	c.n--
	return nil
}

// TestWalkResumesAcrossBudgets (scenario 9): a full walk cut short by the
// budget keeps what it read; the next attempt does not read those
// processes again and completes the walk.
func TestWalkResumesAcrossBudgets(t *testing.T) {
	e := newLinuxEngine(t)
	if !e.fdCounts {
		t.Skip("this kernel does not report fd counts: every walk is full")
	}
	procfd, err := unix.Open("/proc", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	pids, err := e.listPIDs(procfd)
	unix.Close(procfd)
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) < 20 {
		t.Skipf("only %d processes", len(pids))
	}
	half := len(pids) / 2
	_, err = e.Sockets(&countdownCtx{Context: context.Background(), n: half}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first attempt: err %v, want the budget exhausted", err)
	}
	if e.stats.fullWalks != 0 {
		t.Fatalf("a cut walk counted as full")
	}
	read1 := e.stats.reread
	if _, err := e.Sockets(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	read2 := e.stats.reread - read1
	if e.stats.fullWalks != 1 {
		t.Errorf("fullWalks = %d after the second attempt, want 1", e.stats.fullWalks)
	}
	// Processes come and go on a shared machine: allow some slack.
	if max := uint64(len(pids) - half + len(pids)/10); read2 > max {
		t.Errorf("second attempt read %d fd tables of ~%d processes, want at most %d: the first attempt's work was thrown away", read2, len(pids), max)
	}
	t.Logf("%d processes: first attempt read %d, second %d", len(pids), read1, read2)
}

// TestWalkMainThreadExited (scenario 10) on a fake tree: PID 200's main
// thread has exited (state Z, fd/ empty); its thread 201 lists the socket.
func TestWalkMainThreadExited(t *testing.T) {
	root := buildFaultHost(t, faultHost)
	pdir := filepath.Join(root, "proc", "200")
	stat, err := os.ReadFile(filepath.Join(pdir, "stat"))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndexByte(string(stat), ')')
	stat[i+2] = 'Z'
	must(t, os.WriteFile(filepath.Join(pdir, "stat"), stat, 0o444))
	for _, d := range []string{"task/200/fd", "task/201"} {
		must(t, os.MkdirAll(filepath.Join(pdir, d), 0o755))
	}
	must(t, os.Rename(filepath.Join(pdir, "fd"), filepath.Join(pdir, "task", "201", "fd")))
	must(t, os.Mkdir(filepath.Join(pdir, "fd"), 0o755))
	w, _ := newFaultWatcher(t, root, nil)
	expect(t, w, map[netip.AddrPort]owner{
		apVictim: {TCP, 200},
		apHTTP:   {TCP, 100},
	})
}

// procEpochClock is a ChangeClock whose process epoch the test sets.
type procEpochClock struct{ epoch uint32 }

func (c *procEpochClock) PortEpoch(Transport, uint16) uint32 { return 0 }
func (c *procEpochClock) ProcEpoch(int) uint32               { return c.epoch }

// TestWalkChangeClock: with the tracker's change clock, a process whose
// epoch did not move needs no re-check of its socket descriptors, and one
// whose epoch moved is re-checked even within verifyEvery.
func TestWalkChangeClock(t *testing.T) {
	e := newLinuxEngine(t)
	if !e.fdCounts {
		t.Skip("this kernel does not report fd counts: every walk is full")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a socket of ours to check
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	clock := &procEpochClock{epoch: 1}
	e.setChangeClock(clock)
	now := time.Now()
	e.now = func() time.Time { return now }
	ctx := context.Background()
	if _, err := e.Sockets(ctx, nil); err != nil {
		t.Fatal(err)
	}
	verified := e.stats.verified
	if _, err := e.Sockets(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if e.stats.verified != verified {
		t.Errorf("unchanged epochs: %d descriptors re-checked, want 0", e.stats.verified-verified)
	}
	clock.epoch = 2 // every process closed something
	if _, err := e.Sockets(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if e.stats.verified == verified {
		t.Error("changed epochs: nothing re-checked within verifyEvery")
	}
}

// TestLookupAfterCloseRealEngine: after Close a lookup answers nil, also
// through the resolve source's single-connection query.
func TestLookupAfterCloseRealEngine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	remote := netip.MustParseAddrPort(c.RemoteAddr().String())
	e := newLinuxEngine(t)
	cfg := Config{MinRescanInterval: time.Hour}
	cfg.Fallback = NewResolveSource(e, nil, 100, time.Hour, time.Second)
	w := New(e, cfg, nil)
	if p := w.Lookup(TCP, local, remote); p == nil || p.PID != os.Getpid() {
		t.Fatalf("before Close: %+v", p)
	}
	w.Close()
	c2, err := net.Dial("tcp", ln.Addr().String()) // only Resolve could find it
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	for _, ap := range []netip.AddrPort{local, netip.MustParseAddrPort(c2.LocalAddr().String())} {
		if p := w.Lookup(TCP, ap, remote); p != nil {
			t.Errorf("after Close, %v answered %d", ap, p.PID)
		}
	}
}
