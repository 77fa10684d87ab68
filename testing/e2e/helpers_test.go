//go:build linux

package e2e

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/testing/helperproc"
)

// Helper processes are the test binary re-executed in a role of
// testing/helperproc (send, hold, dial-from, oneshot); startHelper starts
// one and waits for its ready line.

// holdReady is what a hold helper reports once its sockets are open.
type holdReady = helperproc.HoldReady

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	pid   int
	args  []string // its argv, as /proc/<pid>/cmdline shows it
	ready string   // the text after "ready " on its first line
	errs  *strings.Builder
}

// startHelper starts a helper and waits for its ready line. The helper is
// stopped (stdin closed, then killed if it lingers) when the test ends.
func startHelper(t testing.TB, args ...string) *helper {
	t.Helper()
	argv := append([]string{selfExe, helperArg}, args...)
	cmd := exec.Command(selfExe, argv[1:]...)
	cmd.Args = argv
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	// Never outlive the test binary, even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errs := &strings.Builder{}
	cmd.Stderr = &lockedWriter{w: errs}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper %v: %v", args, err)
	}
	h := &helper{cmd: cmd, stdin: stdin, pid: cmd.Process.Pid, args: argv, errs: errs}
	t.Cleanup(h.stop)

	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l, ok := <-line:
		if !ok || !strings.HasPrefix(l, "ready ") {
			t.Fatalf("helper %v did not get ready (first line %q); stderr: %s", args, l, errs.String())
		}
		h.ready = strings.TrimPrefix(l, "ready ")
	case <-time.After(10 * time.Second):
		t.Fatalf("helper %v: no ready line after 10s", args)
	}
	return h
}

// stop closes the helper's stdin, which makes it exit, and kills it if it
// has not exited within 5 seconds.
func (h *helper) stop() {
	_ = h.stdin.Close()
	exited := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = h.cmd.Process.Kill()
		<-exited
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
