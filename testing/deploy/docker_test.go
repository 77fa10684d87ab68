//go:build linux

package deploy_test

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netprocbeat/netprocbeat/deploy"
)

// dockerSubnet is the test network's subnet: part of TEST-NET-3, so no
// traffic leaves the machine (the guide's range for test interfaces).
const dockerSubnet = "203.0.113.208/28"

// requireDocker skips the test if this kernel cannot run containers, or if
// the test command could not have docker here (it sets
// NETPROCBEAT_SKIP_DOCKER to the line it printed, naming what to install),
// and fails it if docker is missing or not running otherwise.
func requireDocker(t *testing.T) {
	t.Helper()
	if why := os.Getenv("NETPROCBEAT_SKIP_DOCKER"); why != "" {
		t.Skip(why)
	}
	for _, ns := range []string{"mnt", "pid", "net", "uts", "ipc"} {
		if _, err := os.Stat("/proc/self/ns/" + ns); err != nil {
			t.Skipf("this kernel cannot run containers: no %s namespace (%v)", ns, err)
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup"); err != nil {
		t.Skipf("this kernel cannot run containers: no cgroup filesystem at /sys/fs/cgroup (%v)", err)
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("docker not found: install Debian's docker.io and start dockerd in the background (go run mage.go test does both, as root): %v", err)
	}
	if out, err := dockerOut("info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Fatalf("dockerd is not reachable (start it: dockerd & then wait for docker info; go run mage.go test does, as root): %v\n%s", err, out)
	}
}

// dockerOut runs the docker CLI and returns its trimmed standard output, or
// its combined output with the error.
func dockerOut(args ...string) (string, error) {
	cmd := exec.Command("docker", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String() + stderr.String()), fmt.Errorf("docker %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(stdout.String()), nil
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := dockerOut(args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// buildBusyboxImage imports a root filesystem of the host's static busybox
// with its applets installed as symlinks: an image built without a registry.
func buildBusyboxImage(t *testing.T, tag string) {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox not found: install Debian's busybox-static (go run mage.go test does, as root): %v", err)
	}
	if f, err := elf.Open(bb); err != nil {
		t.Fatalf("%s: %v", bb, err)
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Fatalf("%s is dynamically linked; the peer image needs busybox-static", bb)
			}
		}
		f.Close()
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chroot", rootfs, "/bin/busybox", "--install", "-s", "/bin").CombinedOutput(); err != nil {
		t.Fatalf("chroot %s /bin/busybox --install -s /bin: %v\n%s", rootfs, err, out)
	}
	tarCmd := exec.Command("tar", "-C", rootfs, "-c", ".")
	imp := exec.Command("docker", "import", "-", tag)
	pipe, err := tarCmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	imp.Stdin = pipe
	var impOut bytes.Buffer
	imp.Stdout, imp.Stderr = &impOut, &impOut
	if err := imp.Start(); err != nil {
		t.Fatal(err)
	}
	if err := tarCmd.Run(); err != nil {
		t.Fatalf("tar of %s: %v", rootfs, err)
	}
	if err := imp.Wait(); err != nil {
		t.Fatalf("docker import %s: %v\n%s", tag, err, impOut.String())
	}
}

// container is what the test needs from `docker inspect`.
type container struct {
	ID    string `json:"Id"`
	Path  string `json:"Path"`
	Args  []string
	State struct {
		Pid     int
		Running bool
	}
	NetworkSettings struct {
		Networks map[string]struct {
			IPAddress string
			Gateway   string
		}
	}
}

func inspect(t *testing.T, name string) container {
	t.Helper()
	var cs []container
	if err := json.Unmarshal([]byte(docker(t, "inspect", name)), &cs); err != nil || len(cs) != 1 {
		t.Fatalf("docker inspect %s: %v (%d results)", name, err, len(cs))
	}
	if !cs[0].State.Running || cs[0].State.Pid <= 0 {
		logs, _ := dockerOut("logs", name)
		t.Fatalf("container %s is not running (pid %d):\n%s", name, cs[0].State.Pid, logs)
	}
	return cs[0]
}

// runContainer starts a detached container and removes it when the test ends.
func runContainer(t *testing.T, name string, args ...string) {
	t.Helper()
	_, _ = dockerOut("rm", "-f", name) // left over from an interrupted run
	docker(t, append([]string{"run", "-d", "--name", name}, args...)...)
	t.Cleanup(func() { _, _ = dockerOut("rm", "-f", name) })
}

// capabilitiesFor returns deploy.Capabilities(), or, on a dockerd that
// rejects one of them as unknown (Docker before 23.0 and CAP_BPF), the
// replacements the capabilities file names.
func capabilitiesFor(t *testing.T, image string) []string {
	t.Helper()
	caps := deploy.Capabilities()
	args := []string{"run", "--rm", "--network=none"}
	for _, c := range caps {
		args = append(args, "--cap-add="+c)
	}
	out, err := dockerOut(append(args, image, "true")...)
	if err == nil {
		return caps
	}
	if !strings.Contains(out, "unknown capability") {
		t.Fatalf("a container with the documented capabilities does not start: %v\n%s", err, out)
	}
	old := deploy.CapabilitiesForOldRuntimes()
	v, _ := dockerOut("version", "--format", "{{.Server.Version}}")
	t.Logf("dockerd %s rejects %v (%s); using the documented replacement %v", v, caps, out, old)
	return old
}

// TestDockerImageAsDaemonSet runs the image under dockerd the way the docs
// and the DaemonSet run it (host PID namespace, the capabilities file, the
// host's /proc and /etc/passwd under /hostfs, BTF; the image's own
// configuration, with the console as output) and feeds it events about two
// open connections: this host process to a listener in another container,
// and a client in a third container to a listener of this host process. The
// pids, names and container.id it writes must be those docker inspect and
// the kernel give.
func TestDockerImageAsDaemonSet(t *testing.T) {
	requireDocker(t)
	src := sources(t)

	beatImage := prefix + "-netprocbeat:test"
	peerImage := prefix + "-busybox:test"
	network := prefix + "-net"
	if err := src.ImportImage(t.Context(), beatImage); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = dockerOut("rmi", "-f", beatImage) })
	buildBusyboxImage(t, peerImage)
	t.Cleanup(func() { _, _ = dockerOut("rmi", "-f", peerImage) })

	_, _ = dockerOut("network", "rm", network)
	docker(t, "network", "create", "--subnet", dockerSubnet, network)
	// Registered before the containers' cleanups, so it runs after them.
	t.Cleanup(func() { _, _ = dockerOut("network", "rm", network) })

	// Case a: a listener in another container; this process connects to it.
	// -i keeps nc's standard input open, so it holds the connection.
	server := prefix + "-server"
	runContainer(t, server, "-i", "--network", network, peerImage, "nc", "-l", "-p", "8080")
	srv := inspect(t, server)
	srvIP := srv.NetworkSettings.Networks[network].IPAddress
	gateway := srv.NetworkSettings.Networks[network].Gateway
	var connA net.Conn
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(srvIP, "8080"), 5*time.Second)
		if err == nil {
			connA = c
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cannot connect to nc in %s at %s:8080: %v", server, srvIP, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer connA.Close()
	localA := connA.LocalAddr().(*net.TCPAddr)

	// Case b: this process listens on the network's gateway (the host's
	// address on it); nc in a third container connects.
	ln, err := net.Listen("tcp", net.JoinHostPort(gateway, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lport := ln.Addr().(*net.TCPAddr).Port
	client := prefix + "-client"
	runContainer(t, client, "-i", "--network", network, peerImage, "nc", gateway, strconv.Itoa(lport))
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	var connB net.Conn
	select {
	case connB = <-accepted:
	case <-time.After(60 * time.Second):
		t.Fatalf("nc in %s did not connect to %s:%d", client, gateway, lport)
	}
	defer connB.Close()
	remoteB := connB.RemoteAddr().(*net.TCPAddr)
	cli := inspect(t, client)

	// The events, as NDJSON in the directory the image's configuration reads.
	// The events, as NDJSON in the directory the image's configuration
	// reads. Each is written as "<case>/<attempt>".
	events := t.TempDir()
	eventsFile := filepath.Join(events, "connections.ndjson")
	if err := os.WriteFile(eventsFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	connEvents := map[string]map[string]any{
		"case-a": {"source": map[string]any{"ip": localA.IP.String(), "port": localA.Port},
			"destination": map[string]any{"ip": srvIP, "port": 8080}, "network": map[string]any{"transport": "tcp"}},
		"case-b": {"source": map[string]any{"ip": remoteB.IP.String(), "port": remoteB.Port},
			"destination": map[string]any{"ip": gateway, "port": lport}, "network": map[string]any{"transport": "tcp"}},
	}
	attempts := map[string]int{}
	send := func(c string) {
		attempts[c]++
		ev := connEvents[c]
		ev["message"] = fmt.Sprintf("%s/%d", c, attempts[c])
		b, _ := json.Marshal(ev)
		f, err := os.OpenFile(eventsFile, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(append(b, '\n')); err != nil {
			t.Fatal(err)
		}
	}
	send("case-a")
	send("case-b")

	beat := prefix + "-beat"
	args := []string{"--network=none"}
	args = append(args, deploy.DockerRunArgs(capabilitiesFor(t, peerImage))...)
	args = append(args, "--volume="+events+":"+deploy.ImageConnections+":ro", beatImage,
		"-E", "output.elasticsearch.enabled=false", "-E", "output.console.enabled=true")
	runContainer(t, beat, args...)

	// An event is complete when both ends have a process. Under load the
	// beat's first rescan of every namespace through /hostfs can outlast
	// rescan_timeout (1s); such an event passes unenriched, by design (no
	// answer rather than a late or wrong one). Then the same connection is
	// sent again, as a later event of it would be, until an answer comes.
	got := map[string]map[string]any{}
	var logs string
	deadline = time.Now().Add(120 * time.Second)
	for len(got) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the containerised beat wrote %d of 2 complete events in 120s (attempts %v); its log:\n%s", len(got), attempts, tail(logs, 40))
		}
		time.Sleep(500 * time.Millisecond)
		cmd := exec.Command("docker", "logs", beat)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("docker logs %s: %v\n%s", beat, err, stderr.String())
		}
		logs = stderr.String()
		sc := bufio.NewScanner(&stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var ev event
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			msg, _ := ev["message"].(string)
			c, n, ok := strings.Cut(msg, "/")
			if !ok || got[c] != nil {
				continue
			}
			if ev.get("source.process") != nil && ev.get("destination.process") != nil {
				got[c] = ev
				if attempts[c] > 1 {
					t.Logf("%s: complete at attempt %s", c, n)
				}
			} else if n == strconv.Itoa(attempts[c]) {
				t.Logf("%s: attempt %s passed with source.process %v, destination.process %v; sending it again", c, n, ev.get("source.process") != nil, ev.get("destination.process") != nil)
				send(c)
			}
		}
		if st := inspectState(beat); st != "running" {
			t.Fatalf("the beat container is %s; its log:\n%s", st, tail(logs, 40))
		}
	}
	b, _ := json.MarshalIndent(got["case-a"], "", "  ")
	t.Logf("event from the containerised beat (case a):\n%s", b)

	self := os.Getpid()
	selfName := comm(t, self)
	a, bEv := event(got["case-a"]), event(got["case-b"])
	checks := []check{
		{a, "source.process.pid", self},
		{a, "source.process.name", selfName},
		{a, "destination.process.pid", srv.State.Pid},
		{a, "destination.process.name", filepath.Base(srv.Path)},
		{a, "destination.process.args", append([]string{srv.Path}, srv.Args...)},
		{a, "process.pid", srv.State.Pid},
		{a, "container.id", srv.ID},
		{bEv, "source.process.pid", cli.State.Pid},
		{bEv, "source.process.name", filepath.Base(cli.Path)},
		{bEv, "destination.process.pid", self},
		{bEv, "destination.process.name", selfName},
		{bEv, "process.pid", self},
		// process.* is this host process: not in a container.
		{bEv, "container.id", nil},
	}
	if os.Getuid() == 0 {
		// Resolved through /hostfs/etc/passwd.
		checks = append(checks, check{a, "source.process.user.name", "root"}, check{a, "destination.process.user.name", "root"})
	}
	for _, c := range checks {
		if got, want := jsonString(c.ev.get(c.field)), jsonString(c.want); got != want {
			t.Errorf("%s: %s = %s, want %s", c.ev.get("message"), c.field, got, want)
		}
	}
	if !strings.Contains(logs, "eBPF connection tracker loaded") {
		t.Errorf("the eBPF tracker did not load with the documented capabilities and mounts; the beat's log:\n%s", tail(logs, 30))
	}
}

// check is one expected field of an event.
type check struct {
	ev    event
	field string
	want  any
}

// event is a decoded output event.
type event map[string]any

// get returns the value at a dotted path, or nil.
func (e event) get(path string) any {
	var cur any = map[string]any(e)
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// jsonString renders a value as JSON, so numbers decoded as float64 compare
// equal to ints and missing fields show as null.
func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func inspectState(name string) string {
	out, err := dockerOut("inspect", "-f", "{{.State.Status}}", name)
	if err != nil {
		return "gone (" + out + ")"
	}
	return out
}

// comm is a process's name as the kernel reports it.
func comm(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
