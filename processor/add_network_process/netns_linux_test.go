//go:build linux

package add_network_process

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/netprocbeat/netprocbeat/testing/helperproc"
)

// runIP runs ip(8) with args, failing the test with its output.
func runIP(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// startInNetns runs the test binary as a TCP listener on addr inside
// network namespace ns (ip netns exec execs it, so the PID is the
// listener's) and returns its PID and bound address.
func startInNetns(t *testing.T, ns, addr string) (int, hostPort) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, helperproc.Argv("listen", addr)...)...)
	cmd.Env = helperproc.Env()
	cmd.Stderr = os.Stderr
	line := runHelper(t, cmd, "listen on "+addr+" in netns "+ns)
	host, port, _ := net.SplitHostPort(line)
	p, _ := strconv.Atoi(port)
	return cmd.Process.Pid, hostPort{host, p}
}

type hostPort struct {
	ip   string
	port int
}

// TestNetworkNamespaces resolves sockets that live in another network
// namespace, as a container's do: through its own IP (local only in its
// namespace), host-wins for an endpoint both namespaces bind, and the
// container's namespace first when the event names the container.
func TestNetworkNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8) from iproute2")
	}
	ns := fmt.Sprintf("anp-test-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("the kernel refused a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	runIP(t, "-n", ns, "link", "set", "lo", "up")
	// 192.0.2.77 (TEST-NET-1) exists only inside the namespace; no traffic
	// is sent anywhere: the test only binds sockets.
	runIP(t, "-n", ns, "addr", "add", "192.0.2.77/32", "dev", "lo")

	hostL, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostL.Close()
	shared := hostL.Addr().(*net.TCPAddr).Port

	pidA, a := startInNetns(t, ns, "192.0.2.77:0")
	pidB, _ := startInNetns(t, ns, "127.0.0.1:"+strconv.Itoa(shared))
	pidC, c := startInNetns(t, ns, "127.0.0.1:0") // a port only the namespace has

	// Make B look like a Docker container: its cgroup path ends in a
	// 64-hex ID, which is all container.id detection reads.
	const cid = "1111111111111111111111111111111111111111111111111111111111111111"
	inContainer := false
	for _, root := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		dir := filepath.Join(root, "docker-"+cid+".scope")
		if os.Mkdir(dir, 0o755) != nil {
			continue
		}
		if os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pidB)), 0) == nil {
			inContainer = true
			t.Cleanup(func() {
				// Move B back out so the cgroup can go.
				_ = os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(pidB)), 0)
				_ = os.Remove(dir)
			})
			break
		}
		_ = os.Remove(dir)
	}

	p := newFromYAML(t, "tracker: procfs\ncontainer_id_field: container.id\n")

	ev, _ := p.Run(event("198.51.100.9", 40000, a.ip, a.port, "tcp"))
	if got := getInt(t, ev, "destination.process.pid"); got != pidA {
		t.Errorf("%s:%d in netns %s resolved to PID %d, want %d", a.ip, a.port, ns, got, pidA)
	}

	ev, _ = p.Run(event("127.0.0.1", 40001, "127.0.0.1", shared, "tcp"))
	if got := getInt(t, ev, "destination.process.pid"); got != os.Getpid() {
		t.Errorf("127.0.0.1:%d bound in both namespaces resolved to PID %d, want the host's (this test, %d)", shared, got, os.Getpid())
	}
	// Every namespace has its own 127.0.0.1: without the event's container
	// the event is the host's, and the host has no socket on C's port.
	ev, _ = p.Run(event("127.0.0.1", 40003, c.ip, c.port, "tcp"))
	if v, err := ev.GetValue("destination.process.pid"); err == nil {
		t.Errorf("127.0.0.1:%d, bound only in netns %s (by PID %d), resolved without container context to PID %v, want none", c.port, ns, pidC, v)
	}
	if st := p.(*processor).watcher.Stats(); st.Namespaces < 1 {
		t.Errorf("stats: namespaces=%d, want ≥ 1", st.Namespaces)
	}

	if !inContainer {
		t.Log("cgroups not writable here: container-scoped lookup not checked")
		return
	}
	ev = event("127.0.0.1", 40002, "127.0.0.1", shared, "tcp")
	ev.Fields["container"] = map[string]any{"id": cid}
	ev, _ = p.Run(ev)
	if got := getInt(t, ev, "destination.process.pid"); got != pidB {
		t.Errorf("with container.id of B, 127.0.0.1:%d resolved to PID %d, want B %d", shared, got, pidB)
	}
	if got, _ := ev.GetValue("container.id"); got != cid {
		t.Errorf("container.id = %v, want %s", got, cid)
	}
	// B's container places the event in the namespace, where C's loopback
	// port is C's.
	ev = event("127.0.0.1", 40004, c.ip, c.port, "tcp")
	ev.Fields["container"] = map[string]any{"id": cid}
	ev, _ = p.Run(ev)
	if got := getInt(t, ev, "destination.process.pid"); got != pidC {
		t.Errorf("with container.id of B, 127.0.0.1:%d resolved to PID %d, want C %d (its namespace's)", c.port, got, pidC)
	}
}

// TestHostPathBindMount runs the processor the way a containerised beat
// does, with the host's /proc mounted elsewhere (here a bind mount of this
// host's /proc under a temporary host_path), and resolves a real socket.
func TestHostPathBindMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind-mount /proc")
	}
	root := t.TempDir()
	procDir := filepath.Join(root, "proc")
	if err := os.Mkdir(procDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "--bind", "/proc", procDir).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount /proc: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", procDir).Run() })

	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	p := newFromYAML(t, fmt.Sprintf("host_path: %q\n", root))
	ev, err := p.Run(event("198.51.100.9", 40000, "127.0.0.1", port, "tcp"))
	if err != nil {
		t.Fatal(err)
	}
	if got := getInt(t, ev, "destination.process.pid"); got != os.Getpid() {
		t.Errorf("with host_path %s: destination.process.pid = %d, want %d", root, got, os.Getpid())
	}
}
