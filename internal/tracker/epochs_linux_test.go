//go:build linux

package tracker

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// epochHelperEnv makes the test binary an epoch helper: it performs one
// file-descriptor operation per stdin line and answers "ok" after it.
const epochHelperEnv = "NETPROCBEAT_TRACKER_EPOCH_HELPER"

func init() {
	if os.Getenv(epochHelperEnv) == "" {
		return
	}
	os.Exit(epochHelper())
}

func epochHelper() int {
	in := bufio.NewScanner(os.Stdin)
	// Descriptors opened before the first command, so the commands
	// themselves only close or replace.
	var fds []int
	for range 4 {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		fds = append(fds, fd)
	}
	udp, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	var keep []*os.File
	defer runtime.KeepAlive(&keep)
	fmt.Println("ok")
	for in.Scan() {
		f := strings.Fields(in.Text())
		var err error
		switch f[0] {
		case "nop":
		case "close":
			err = unix.Close(fds[0])
			fds = fds[1:]
		case "dup2":
			err = syscall.Dup2(fds[0], fds[1])
		case "dup3":
			err = unix.Dup3(fds[0], fds[1], unix.O_CLOEXEC)
		case "connect":
			err = unix.Connect(udp, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{127, 0, 0, 1}})
		case "fork":
			// A child that holds a copy of fds[0] (and waits for its
			// stdin to close, i.e. for this process to exit).
			// The files stay referenced (keep) so that no finalizer
			// closes a descriptor behind the test's back.
			f := os.NewFile(uintptr(fds[0]), "socket")
			pr, pw, perr := os.Pipe()
			if perr != nil {
				err = perr
				break
			}
			cmd := exec.Command("/bin/cat")
			cmd.ExtraFiles = []*os.File{f}
			cmd.Stdin = pr
			keep = append(keep, f, pr, pw)
			err = cmd.Start()
		case "uring-close":
			// Close fds[0] through io_uring, and check that it is gone.
			if err = uringClose(fds[0]); err == nil {
				if _, ferr := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFD, 0); ferr != unix.EBADF {
					err = fmt.Errorf("fd %d still open after IORING_OP_CLOSE (%v)", fds[0], ferr)
				}
				fds = fds[1:]
			}
		case "exec":
			// A program that waits for stdin to close.
			err = unix.Exec("/bin/cat", []string{"cat"}, os.Environ())
		}
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Println("ok")
	}
	return 0
}

// TestEpochs: the PID counter of a helper process moves when it closes,
// dup2s or dup3s a descriptor, connects, execs or exits, and not while it
// only reads and writes; its LastFork moves when it forks a process; a port's counter moves when a TCP socket on that
// port closes, and not for other ports.
func TestEpochs(t *testing.T) {
	tr := newTracker(t, Options{})
	e := tr.Epochs()
	if e == nil {
		t.Fatalf("change counters unavailable: %v", tr.EpochsErr())
	}

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), epochHelperEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	out := bufio.NewReader(stdout)
	expectOK := func(what string) {
		t.Helper()
		line, err := out.ReadString('\n')
		if err != nil || line != "ok\n" {
			t.Fatalf("helper after %s: %q %v", what, line, err)
		}
	}
	expectOK("start")
	pid := cmd.Process.Pid
	do := func(op string) {
		t.Helper()
		fmt.Fprintln(stdin, op)
		expectOK(op)
	}

	for i := range 3 {
		before := e.PID(pid)
		do("nop")
		do("nop")
		if after := e.PID(pid); after != before {
			t.Errorf("round %d: counter moved %d -> %d while the helper only read and wrote", i, before, after)
		}
	}
	// Forks: threads (the Go runtime starts them as it likes) and reads
	// leave the helper's LastFork alone; a new process moves the fork
	// clock, and the helper's LastFork past the clock read before it.
	lf := e.LastFork(pid)
	do("nop")
	if got := e.LastFork(pid); got != lf {
		t.Errorf("LastFork moved %d -> %d while the helper only read and wrote", lf, got)
	}
	seq := e.ForkSeq()
	do("fork")
	if got := e.LastFork(pid); int32(got-seq) <= 0 {
		t.Errorf("fork: LastFork %d is not newer than the fork clock read before it (%d)", got, seq)
	}
	if got := e.ForkSeq(); int32(got-seq) <= 0 {
		t.Errorf("fork: the fork clock did not move (%d)", got)
	}
	for _, op := range []string{"close", "dup2", "dup3", "connect", "close"} {
		before := e.PID(pid)
		do(op)
		if after := e.PID(pid); after == before {
			t.Errorf("%s: counter did not move (%d)", op, after)
		}
	}
	before := e.PID(pid)
	fmt.Fprintln(stdin, "exec")
	deadline := time.Now().Add(10 * time.Second)
	for e.PID(pid) == before {
		if time.Now().After(deadline) {
			t.Fatalf("exec: counter did not move (%d)", before)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// cat runs now; let it settle, then close its stdin: it exits.
	time.Sleep(200 * time.Millisecond)
	before = e.PID(pid)
	stdin.Close()
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	if after := e.PID(pid); after == before {
		t.Errorf("exit: counter did not move (%d)", after)
	}

	// Ports: a connection on a listener's port closes.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	other, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherPort := uint16(other.Addr().(*net.TCPAddr).Port)
	p0, o0 := e.Port(TCP, port), e.Port(TCP, otherPort)
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if p := e.Port(TCP, port); p != p0 {
		t.Errorf("port counter moved %d -> %d on connect", p0, p)
	}
	s.Close()
	c.Close()
	deadline = time.Now().Add(5 * time.Second)
	for e.Port(TCP, port) == p0 {
		if time.Now().After(deadline) {
			t.Fatalf("port %d: counter did not move when its connection closed", port)
		}
		time.Sleep(5 * time.Millisecond)
	}
	p1 := e.Port(TCP, port)
	ln.Close() // the listener closes
	if p := e.Port(TCP, port); p == p1 {
		t.Errorf("port %d: counter did not move when the listener closed", port)
	}
	if o := e.Port(TCP, otherPort); o != o0 {
		t.Errorf("port %d (untouched): counter moved %d -> %d", otherPort, o0, o)
	}

	// After Close nothing is proven any more.
	tr.Close()
	if a, b := e.PID(pid), e.PID(pid); a == b {
		t.Errorf("after Close two readings agree (%d)", a)
	}
}

// startEpochHelper starts the test binary as an epoch helper and returns
// its PID and a function that sends it one command and waits for its "ok".
func startEpochHelper(t *testing.T) (int, func(op string)) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), epochHelperEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	out := bufio.NewReader(stdout)
	do := func(op string) {
		t.Helper()
		if op != "" {
			fmt.Fprintln(stdin, op)
		}
		line, err := out.ReadString('\n')
		if err != nil || line != "ok\n" {
			t.Fatalf("helper after %q: %q %v", op, line, err)
		}
	}
	do("")
	return cmd.Process.Pid, do
}

// TestEpochsIOURingClose: a socket is held by a process and by its child
// (inherited); the process closes its copy through io_uring
// (IORING_OP_CLOSE), which no close system call reports. Its counter must
// not read the same before and after: an unchanged reading would let a
// reader keep naming it as a holder of the socket the child now holds
// alone.
func TestEpochsIOURingClose(t *testing.T) {
	tr := newTracker(t, Options{})
	e := tr.Epochs()
	if e == nil {
		t.Fatalf("change counters unavailable: %v", tr.EpochsErr())
	}
	pid, do := startEpochHelper(t)
	do("fork")
	time.Sleep(50 * time.Millisecond)
	before := e.PID(pid)
	do("nop")
	if after := e.PID(pid); after != before {
		t.Logf("counter moved without a descriptor change (%d -> %d): the helper's runtime closed something", before, after)
		before = after
	}
	do("uring-close")
	if after := e.PID(pid); after == before {
		t.Errorf("IORING_OP_CLOSE: counter of pid %d did not move (%d)", pid, after)
	}
	// From now on no reading of the process proves anything.
	if a, b := e.PID(pid), e.PID(pid); a == b {
		t.Errorf("after an io_uring close two readings agree (%d)", a)
	}
}

// BenchmarkEpochsRead: the cost of one counter reading.
func BenchmarkEpochsRead(b *testing.B) {
	tr := newTracker(b, Options{})
	e := tr.Epochs()
	if e == nil {
		b.Skipf("change counters unavailable: %v", tr.EpochsErr())
	}
	var sum uint32
	for i := 0; b.Loop(); i++ {
		sum += e.Port(TCP, uint16(i)) + e.PID(i)
	}
	_ = sum
}

// BenchmarkCloseSyscall: an eventfd(2) + close(2) loop with the tracker
// loaded (Tracked) and not (Untracked): the difference is the cost of the
// sys_enter_close tracepoint and its program.
func BenchmarkCloseSyscall(b *testing.B) {
	loop := func(b *testing.B) {
		for b.Loop() {
			fd, err := unix.Eventfd(0, 0)
			if err != nil {
				b.Fatal(err)
			}
			unix.Close(fd)
		}
	}
	b.Run("Untracked", loop)
	b.Run("Tracked", func(b *testing.B) {
		tr := newTracker(b, Options{})
		if tr.Epochs() == nil {
			b.Skipf("change counters unavailable: %v", tr.EpochsErr())
		}
		// The program's own run time, as the kernel measures it (while
		// the returned closer is open).
		if st, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME); err == nil {
			defer st.Close()
		}
		s0, err0 := tr.objs.SysExitClose.Stats()
		loop(b)
		s1, err1 := tr.objs.SysExitClose.Stats()
		if err0 == nil && err1 == nil && s1.RunCount > s0.RunCount {
			b.ReportMetric(float64(s1.Runtime-s0.Runtime)/float64(s1.RunCount-s0.RunCount), "prog-ns/run")
		}
	})
}
