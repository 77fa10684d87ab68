//go:build linux

package torture

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Scenario 10: a process whose main thread exited (pthread_exit while
// other threads live) still owns its sockets.
func TestS10MainThreadExited(t *testing.T) {
	bin := compileC(t, "np11-pthread-exit", pthreadExitC)
	trackers(t, func(t *testing.T, tracker string) {
		p := newProcessor(t, tracker)
		s := startHelper(t, "S", "")
		ls := s.do("listen 127.0.0.1:0")
		s.do("acceptloop %d", ls.ID)
		srv := ap(ls.Local)

		cmd := exec.Command(bin, srv.Addr().String(), fmt.Sprint(srv.Port()))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
		var pid, port int
		if _, err := fmt.Fscan(bufio.NewReader(out), &pid, &port); err != nil {
			t.Fatalf("pthread_exit helper: %v", err)
		}
		// Wait until the main thread is gone: /proc/<pid>/fd reads empty.
		deadline := time.Now().Add(10 * time.Second)
		for {
			ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
			if len(ents) == 0 {
				tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
				for _, tk := range tasks {
					fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task/%s/fd", pid, tk.Name()))
					t.Logf("pid %d: /proc/%d/fd is empty; /proc/%d/task/%s/fd has %d entries", pid, pid, pid, tk.Name(), len(fds))
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d: main thread did not exit", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
		local := netip.AddrPortFrom(srv.Addr(), uint16(port))
		eventually(t, p, local, srv, srcSide, []int{pid}, attributeBound, "socket of a process whose main thread exited")
	})
}
