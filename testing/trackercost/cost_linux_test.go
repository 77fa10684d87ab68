//go:build linux

package trackercost

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netprocbeat/netprocbeat/internal/tracker"
)

// roleEnv makes the test binary run one workload (stream, connect, udp)
// of N operations and exit.
const roleEnv = "NETPROCBEAT_TRACKERCOST_ROLE"

// pinEnv names the CPU the workload runs on; empty, it runs on all.
const pinEnv = roleEnv + "_CPU"

func init() {
	role := os.Getenv(roleEnv)
	if role == "" {
		return
	}
	if cpu := os.Getenv(pinEnv); cpu != "" {
		// Pin every thread of the workload to one CPU: set the main
		// thread's affinity and exec again, so that all threads the Go
		// runtime starts inherit it.
		n, err := strconv.Atoi(cpu)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s=%q: not a CPU number\n", pinEnv, cpu)
			os.Exit(1)
		}
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(n)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			fmt.Fprintf(os.Stderr, "pinning the workload to CPU %d: %v\n", n, err)
			os.Exit(1)
		}
		os.Unsetenv(pinEnv)
		exe, _ := os.Executable()
		err = syscall.Exec(exe, os.Args, os.Environ())
		fmt.Fprintf(os.Stderr, "re-executing %s pinned: %v\n", exe, err)
		os.Exit(1)
	}
	n, _ := strconv.Atoi(os.Getenv(roleEnv + "_N"))
	if err := workloads[role](n); err != nil {
		fmt.Fprintln(os.Stderr, role+":", err)
		os.Exit(1)
	}
	os.Exit(0)
}

const msgSize = 64

var workloads = map[string]func(n int) error{
	// One TCP connection on loopback, n writes of 64 bytes, the reader
	// taking one message per read.
	"stream": func(n int) error {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		done := make(chan error, 1)
		go func() {
			s, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			defer s.Close()
			buf := make([]byte, msgSize)
			for range n {
				if _, err := io.ReadFull(s, buf); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		msg := make([]byte, msgSize)
		for range n {
			if _, err := c.Write(msg); err != nil {
				return err
			}
		}
		return <-done
	},
	// n cycles of connect, the server accepting, writing one byte and
	// closing, the client reading it and closing.
	"connect": func(n int) error {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		go func() {
			for {
				s, err := ln.Accept()
				if err != nil {
					return
				}
				s.Write([]byte{1})
				s.Close()
			}
		}()
		buf := make([]byte, 1)
		for range n {
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				return err
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				return err
			}
			c.Close()
		}
		return nil
	},
	// n datagrams of 64 bytes from an unconnected sender (sendto) to a
	// receiver asking for the sender's address (recvfrom).
	"udp": func(n int) error {
		rx, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer rx.Close()
		tx, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer tx.Close()
		got := make(chan int, 1)
		go func() {
			buf := make([]byte, 2*msgSize)
			k := 0
			for {
				rx.SetReadDeadline(time.Now().Add(time.Second))
				if _, _, err := rx.ReadFrom(buf); err != nil {
					got <- k
					return
				}
				if k++; k == n {
					got <- k
					return
				}
			}
		}()
		msg := make([]byte, msgSize)
		to := rx.LocalAddr()
		for i := range n {
			if _, err := tx.WriteTo(msg, to); err != nil {
				return err
			}
			if i%64 == 63 {
				// Let the receiver keep up: a full receive buffer drops
				// datagrams, and the block would measure fewer.
				time.Sleep(20 * time.Microsecond)
			}
		}
		if k := <-got; k < n*9/10 {
			return fmt.Errorf("received %d of %d datagrams", k, n)
		}
		return nil
	},
}

// runChild runs workload role with n operations in a child process and
// returns the child's CPU time (user + system).
func runChild(t *testing.T, role string, n, cpu int) time.Duration {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"="+role, roleEnv+"_N="+strconv.Itoa(n))
	if cpu >= 0 {
		cmd.Env = append(cmd.Env, pinEnv+"="+strconv.Itoa(cpu))
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("workload %s: %v", role, err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestTrackerCost runs each workload in blocks, without and with the
// tracker loaded (order off/on, on/off, ... so that drift favours neither),
// and reports per workload: the median of the per-block differences in CPU
// time per operation, the median relative difference, and the mean of each
// mode. It asserts nothing about speed; a workload that fails, fails.
//
// NETPROCBEAT_TRACKERCOST_BLOCKS (default 8 pairs), _STREAM (messages per
// block, default 1000000), _CONNECT (connections, 20000), _UDP (datagrams,
// 500000), _PROGRAM_STATS=1 (the tracker with the kernel's BPF run-time
// statistics on, which prints each program's runs; they cost time
// themselves), _SPREAD=1 (the workload on all CPUs instead of the last one),
// _ONLY (the workloads to run, comma-separated: stream,connect,udp).
func TestTrackerCost(t *testing.T) {
	if os.Getenv("NETPROCBEAT_TRACKERCOST") == "" {
		t.Skip("opt-in: set NETPROCBEAT_TRACKERCOST=1")
	}
	blocks := envInt("NETPROCBEAT_TRACKERCOST_BLOCKS", 8)
	// The workload runs on one CPU (the last) unless
	// NETPROCBEAT_TRACKERCOST_SPREAD=1: spread over CPUs, its two sides
	// wake each other across CPUs, which on a small VM costs more than
	// the work itself and varies from block to block by more than the
	// tracker's cost.
	pin := runtime.NumCPU() - 1
	if os.Getenv("NETPROCBEAT_TRACKERCOST_SPREAD") == "1" {
		pin = -1
	}
	for _, w := range []struct {
		role, unit string
		n          int
	}{
		{"stream", "message", envInt("NETPROCBEAT_TRACKERCOST_STREAM", 1000000)},
		{"connect", "connection", envInt("NETPROCBEAT_TRACKERCOST_CONNECT", 20000)},
		{"udp", "datagram", envInt("NETPROCBEAT_TRACKERCOST_UDP", 500000)},
	} {
		if only := os.Getenv("NETPROCBEAT_TRACKERCOST_ONLY"); only != "" && !slices.Contains(strings.Split(only, ","), w.role) {
			continue
		}
		var deltas, rel []float64
		var offSum, onSum time.Duration
		var progs []tracker.ProgramStats
		for i := range 2 * blocks {
			on := i%4 == 1 || i%4 == 2 // off, on, on, off, ...
			var tr *tracker.Tracker
			if on {
				var err error
				if tr, err = tracker.New(tracker.Options{ProgramStats: os.Getenv("NETPROCBEAT_TRACKERCOST_PROGRAM_STATS") == "1"}); err != nil {
					t.Skipf("the tracker does not load here: %v", err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			cpu := runChild(t, w.role, w.n, pin)
			if on {
				st := tr.Stats()
				progs = st.Programs
				if st.Lost > 0 {
					t.Logf("%s: %d events lost in a block", w.role, st.Lost)
				}
				tr.Close()
				onSum += cpu
			} else {
				offSum += cpu
			}
			if i%2 == 1 {
				// The block pair (i-1, i).
				var off, onc time.Duration
				if on {
					off, onc = prev, cpu
				} else {
					off, onc = cpu, prev
				}
				deltas = append(deltas, float64(onc-off)/float64(w.n))
				rel = append(rel, 100*float64(onc-off)/float64(off))
			}
			prev = cpu
		}
		slices.Sort(deltas)
		slices.Sort(rel)
		t.Logf("%-7s %d blocks of %d: off %.0f ns/%s, on %.0f ns/%s; added per %s: median %+.0f ns (%+.1f %%), block deltas %s",
			w.role, 2*blocks, w.n,
			float64(offSum)/float64(blocks*w.n), w.unit, float64(onSum)/float64(blocks*w.n), w.unit, w.unit,
			deltas[len(deltas)/2], rel[len(rel)/2], fmtDeltas(deltas))
		for _, p := range progs {
			if p.RunCount > 0 {
				t.Logf("        last on-block tracker lifetime: %-36s %9d runs %8.2f runs/%s %6.0f ns/run", p.Name, p.RunCount, float64(p.RunCount)/float64(w.n), w.unit, float64(p.RunTime)/float64(p.RunCount))
			}
		}
	}
}

var prev time.Duration

func fmtDeltas(d []float64) string {
	s := ""
	for i, v := range d {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%+.0f", v)
	}
	return s
}
