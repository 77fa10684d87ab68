//go:build linux

package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestChurnCost measures what the beat costs under connection churn
// (issue 12, goal 5; docs/tracker.md, "CPU under churn"): netprocbeat with
// a tcp input and add_network_process idles, then receives a stream of
// one-shot clients, each a new process that connects, sends one line and
// exits. It reports the beat's CPU (utime+stime from /proc/<pid>/stat) as a
// share of a core while idle and per event under churn, and how many
// events named their client. Nothing is asserted about speed; a wrong PID
// fails.
//
// Opt-in: NETPROCBEAT_BENCH_CHURN=1. NETPROCBEAT_BENCH_CHURN_IDLE (30s),
// _SECONDS (60s of churn), _RATE (50 clients/s), _TRACKER (ebpf; or
// procfs, auto).
func TestChurnCost(t *testing.T) {
	if os.Getenv("NETPROCBEAT_BENCH_CHURN") != "1" {
		t.Skip("opt-in measurement: set NETPROCBEAT_BENCH_CHURN=1")
	}
	idle := envDuration(t, "NETPROCBEAT_BENCH_CHURN_IDLE", 30*time.Second)
	churn := envDuration(t, "NETPROCBEAT_BENCH_CHURN_SECONDS", 60*time.Second)
	rate := 50
	if v, err := strconv.Atoi(os.Getenv("NETPROCBEAT_BENCH_CHURN_RATE")); err == nil && v > 0 {
		rate = v
	}
	mode := "ebpf"
	if v := os.Getenv("NETPROCBEAT_BENCH_CHURN_TRACKER"); v != "" {
		mode = v
	}

	port := freePort(t, "tcp", "127.0.0.1")
	b := startBeat(t, "netprocbeat.inputs:"+netInput("tcp", "127.0.0.1", port)+
		processorConfig("      tracker: "+mode+"\n"))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitTCP(t, addr)
	if strings.Contains(b.logs(), "ebpf was required but cannot be used") {
		t.Skipf("the eBPF tracker cannot load on this machine:\n%s", b.logTail(10))
	}
	// Let startup (the first rescan, the tracker's load) pass before the
	// idle window.
	time.Sleep(5 * time.Second)

	cpu0 := procCPU(t, b.pid)
	time.Sleep(idle)
	cpu1 := procCPU(t, b.pid)

	marker := fmt.Sprintf("churn-%d", os.Getpid())
	n := rate * int(churn/time.Second)
	pids := make([]int, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	tick := time.NewTicker(time.Second / time.Duration(rate))
	for i := 0; i < n; i++ {
		<-tick.C
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cmd := oneshotCmd(addr, fmt.Sprintf("%s %d", marker, i))
			if err := cmd.Start(); err != nil {
				mu.Lock()
				failures = append(failures, err.Error())
				mu.Unlock()
				return
			}
			pids[i] = cmd.Process.Pid
			_ = cmd.Wait()
		}(i)
	}
	tick.Stop()
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d clients failed to start, first: %s", len(failures), failures[0])
	}
	var events []event
	deadline := time.Now().Add(60 * time.Second)
	for {
		events = events[:0]
		for _, ev := range b.snapshot() {
			if strings.HasPrefix(ev.str("message"), marker+" ") {
				events = append(events, ev)
			}
		}
		if len(events) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cpu2 := procCPU(t, b.pid)
	right, none := 0, 0
	for _, ev := range events {
		i, err := strconv.Atoi(strings.TrimPrefix(ev.str("message"), marker+" "))
		if err != nil || i < 0 || i >= n {
			t.Fatalf("unexpected message %q", ev.str("message"))
		}
		switch got := ev.get("source.process.pid"); {
		case got == nil:
			none++
		case ev.num("source.process.pid") == pids[i]:
			right++
		default:
			t.Errorf("client %d (PID %d) attributed to PID %v", i, pids[i], got)
		}
	}
	t.Logf("tracker=%s: idle %.2f %% of a core over %v; churn %d clients/s for %v: %d of %d events arrived, %.2f ms CPU per event, %d attributed to their client, %d unattributed",
		mode, 100*cpu1.Sub(cpu0).Seconds()/idle.Seconds(), idle, rate, churn, len(events), n,
		float64(cpu2.Sub(cpu1).Microseconds())/1000/float64(max(len(events), 1)), right, none)
}

// procCPU returns the user+system CPU time pid has used, from
// /proc/<pid>/stat (fields 14 and 15, in clock ticks of 1/100 s).
func procCPU(t *testing.T, pid int) cpuTime {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("reading the beat's CPU time: %v", err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// f[0] is field 3 (state): utime is field 14, stime 15.
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("parsing /proc/%d/stat %q: %v %v", pid, s, err1, err2)
	}
	return cpuTime(time.Duration(u+st) * 10 * time.Millisecond)
}

type cpuTime time.Duration

func (c cpuTime) Sub(d cpuTime) time.Duration { return time.Duration(c - d) }

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 30s", name, v)
	}
	return d
}
