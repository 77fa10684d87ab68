//go:build linux

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestShortLivedClientAttribution measures what the eBPF tracker is for:
// N one-shot client processes each connect to netprocbeat's tcp input, send
// one line and exit, so their sockets are gone before the events are
// processed. It runs the beat with tracker: procfs and tracker: ebpf and
// reports the share of events whose source.process.pid is the client's
// PID; with the tracker at least 99 % must be. A wrong PID fails either way.
// SHORTLIVED_CLIENTS sets N (default 500).
func TestShortLivedClientAttribution(t *testing.T) {
	n := 500
	if v, err := strconv.Atoi(os.Getenv("SHORTLIVED_CLIENTS")); err == nil && v > 0 {
		n = v
	}
	for _, mode := range []string{"procfs", "ebpf"} {
		t.Run(mode, func(t *testing.T) {
			port := freePort(t, "tcp", "127.0.0.1")
			b := startBeat(t, "netprocbeat.inputs:"+netInput("tcp", "127.0.0.1", port)+
				processorConfig("      tracker: "+mode+"\n"))
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			waitTCP(t, addr)
			if mode == "ebpf" {
				if strings.Contains(b.logs(), "ebpf was required but cannot be used") {
					t.Skipf("the eBPF tracker cannot load on this machine:\n%s", b.logTail(10))
				}
			}

			marker := fmt.Sprintf("oneshot-%s-%d", mode, os.Getpid())
			pids := runOneshots(t, addr, marker, n)

			deadline := time.Now().Add(60 * time.Second)
			var events []event
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
			if len(events) < n {
				t.Fatalf("%d of %d events arrived within 60s", len(events), n)
			}
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
					t.Errorf("client %d (PID %d) attributed to PID %v: %s", i, pids[i], got, ev)
				}
			}
			pct := 100 * float64(right) / float64(n)
			t.Logf("tracker=%s: %d of %d short-lived clients attributed to their PID (%.1f %%), %d unattributed", mode, right, n, pct, none)
			if mode == "ebpf" && pct < 99 {
				t.Errorf("with the eBPF tracker %.1f %% of short-lived clients were attributed, want ≥ 99 %%", pct)
			}
		})
	}
}

// runOneshots starts n one-shot clients, eight at a time, and returns their
// PIDs by index. Every client has exited and been reaped when it returns.
func runOneshots(t *testing.T, addr, marker string, n int) []int {
	t.Helper()
	pids := make([]int, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	var mu sync.Mutex
	var failures []string
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			cmd := oneshotCmd(addr, fmt.Sprintf("%s %d", marker, i))
			if err := cmd.Start(); err != nil {
				mu.Lock()
				failures = append(failures, err.Error())
				mu.Unlock()
				return
			}
			pids[i] = cmd.Process.Pid
			if err := cmd.Wait(); err != nil {
				mu.Lock()
				failures = append(failures, fmt.Sprintf("client %d: %v", i, err))
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d clients failed, first: %s", len(failures), failures[0])
	}
	return pids
}

// oneshotCmd is a one-shot client: the test binary re-executed to connect
// to addr, send msg and exit.
func oneshotCmd(addr, msg string) *exec.Cmd {
	argv := []string{selfExe, helperArg, "oneshot", addr, msg}
	cmd := exec.Command(selfExe, argv[1:]...)
	cmd.Args = argv
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}
