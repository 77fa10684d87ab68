//go:build linux

package deploy_test

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/elastic/beats/v7/libbeat/beat"
	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/logp/logptest"
	"github.com/elastic/elastic-agent-libs/mapstr"

	"github.com/netprocbeat/netprocbeat/processor/add_network_process"
)

// natDockerSubnet is the published-port test's network: TEST-NET-3, inside
// the range of the NAT tests (203.0.113.64/26), apart from dockerSubnet.
const natDockerSubnet = "203.0.113.112/28"

// TestDockerPublishedPortNAT publishes a container's port 80 (as one of
// 45180-45189) and
// connects to it from this host. The event names the published port (the
// tuple outside the NAT); dockerd (with --userland-proxy=false, as go run
// mage.go test starts it) holds a placeholder listener on it, or docker-proxy does with
// the userland proxy on. The answer must be the container's server, found
// through conntrack, with the container's ID: never dockerd or
// docker-proxy. The processor runs in this test process, in the host's
// network namespace, where Docker's NAT rules are.
func TestDockerPublishedPortNAT(t *testing.T) {
	requireDocker(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to read conntrack (CAP_NET_ADMIN)")
	}
	image := "n14-busybox:nat"
	network := "n14-natnet"
	name := "n14-natsrv"
	buildBusyboxImage(t, image)
	t.Cleanup(func() { _, _ = dockerOut("rmi", "-f", image) })
	_, _ = dockerOut("network", "rm", network)
	docker(t, "network", "create", "--subnet", natDockerSubnet, network)
	t.Cleanup(func() { _, _ = dockerOut("network", "rm", network) })
	// nc holds the one connection it accepts while its stdin (sleep) lives.
	// The published port is the first of 45180-45189 that dockerd can
	// bind: they are in the kernel's ephemeral range, so another program's
	// connection may hold one.
	port := ""
	for p := 45180; p < 45190 && port == ""; p++ {
		_, _ = dockerOut("rm", "-f", name)
		out, err := dockerOut("run", "-d", "--name", name, "--network", network, "-p", strconv.Itoa(p)+":80", image, "sh", "-c", "sleep 3600 | nc -l -p 80")
		switch {
		case err == nil:
			port = strconv.Itoa(p)
		case !strings.Contains(out, "address already in use"):
			t.Fatalf("%v\n%s", err, out)
		}
	}
	t.Cleanup(func() { _, _ = dockerOut("rm", "-f", name) })
	if port == "" {
		t.Fatal("dockerd could bind none of the ports 45180-45189")
	}
	pubPort, _ := strconv.Atoi(port)
	c := inspect(t, name)
	gw := c.NetworkSettings.Networks[network].Gateway
	ctrIP := c.NetworkSettings.Networks[network].IPAddress
	if gw == "" || ctrIP == "" {
		t.Fatalf("container %s has no address on %s: %+v", name, network, c.NetworkSettings)
	}

	// The host's end of the published port: who holds 0.0.0.0:<port>.
	var holder string
	deadline := time.Now().Add(30 * time.Second)
	for holder == "" && time.Now().Before(deadline) {
		out, _ := exec.Command("ss", "-Htlnp", "sport = :"+port).CombinedOutput()
		holder = strings.TrimSpace(string(out))
		if holder == "" {
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Logf("listener on the published port: %q", holder)

	// Connect through the published port on the network's gateway address
	// (this host's own address on the bridge: no traffic leaves it).
	var conn net.Conn
	var err error
	for time.Now().Before(deadline) {
		if conn, err = net.DialTimeout("tcp4", net.JoinHostPort(gw, port), 5*time.Second); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("connecting to %s:%s: %v", gw, port, err)
	}
	defer conn.Close()
	local := conn.LocalAddr().(*net.TCPAddr)
	// The nc child that holds the accepted connection: the container's
	// processes, by host PID.
	var ncPID int
	for time.Now().Before(deadline) && ncPID == 0 {
		out, _ := exec.Command("nsenter", "-t", strconv.Itoa(c.State.Pid), "-n", "ss", "-Htnp", "state", "established", "( sport = :80 )").CombinedOutput()
		if i := strings.Index(string(out), "pid="); i >= 0 {
			ncPID, _ = strconv.Atoi(strings.FieldsFunc(string(out)[i+4:], func(r rune) bool { return r < '0' || r > '9' })[0])
		}
		if ncPID == 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if ncPID == 0 {
		t.Fatalf("no established connection to :80 inside %s", name)
	}
	out, _ := exec.Command("sh", "-c", "conntrack -L -p tcp --dport "+port+" 2>/dev/null || grep "+port+" /proc/net/nf_conntrack 2>/dev/null").CombinedOutput()
	t.Logf("conntrack: %s", out)

	cfg, err := conf.NewConfigFrom("tracker: procfs\nrescan_timeout: 60s\n")
	if err != nil {
		t.Fatal(err)
	}
	p, err := add_network_process.New(cfg, logptest.NewTestingLogger(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer p.(interface{ Close() error }).Close()
	ev, err := p.Run(&beat.Event{Timestamp: time.Now(), Fields: mapstr.M{
		"source":      mapstr.M{"ip": local.IP.String(), "port": local.Port},
		"destination": mapstr.M{"ip": gw, "port": pubPort},
		"network":     mapstr.M{"transport": "tcp"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("event: %s", ev.Fields.String())
	get := func(k string) any { v, _ := ev.GetValue(k); return v }
	if pid := get("destination.process.pid"); pid != ncPID {
		t.Errorf("destination.process.pid = %v (%v), want the container's nc %d (the port's listener: %s)", pid, get("destination.process.name"), ncPID, holder)
	}
	if id := get("container.id"); id != c.ID {
		t.Errorf("container.id = %v, want %s", id, c.ID)
	}
	if via := get("add_network_process.destination.found_by"); via != "nat" {
		t.Errorf("destination found_by = %v, want nat", via)
	}
	if pid := get("source.process.pid"); pid != os.Getpid() {
		t.Errorf("source.process.pid = %v, want this test %d", pid, os.Getpid())
	}

	// Without conntrack the port's listener answers: dockerd's placeholder
	// (or docker-proxy), the wrong answer nat_lookup exists to avoid.
	cfg, _ = conf.NewConfigFrom("tracker: procfs\nrescan_timeout: 60s\nnat_lookup: false\n")
	off, err := add_network_process.New(cfg, logptest.NewTestingLogger(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer off.(interface{ Close() error }).Close()
	ev, _ = off.Run(&beat.Event{Timestamp: time.Now(), Fields: mapstr.M{
		"source":      mapstr.M{"ip": local.IP.String(), "port": local.Port},
		"destination": mapstr.M{"ip": gw, "port": pubPort},
		"network":     mapstr.M{"transport": "tcp"},
	}})
	owner, _ := ev.GetValue("destination.process.name")
	t.Logf("nat_lookup: false names %v (%v)", owner, func() any { v, _ := ev.GetValue("add_network_process.destination.found_by"); return v }())
	if holder != "" && owner != "dockerd" && owner != "docker-proxy" {
		t.Errorf("nat_lookup: false: destination.process.name = %v, want the port's listener (%s): the case nat_lookup fixes", owner, holder)
	}
}

// TestDockerMasqueradeNAT: a container connects out to a listener in a
// network namespace behind a veth of this host, and Docker masquerades the
// connection to the veth's address. The event, logged at that edge, names
// this host's address and the masqueraded port; the answer must be the
// container's client with the container's ID.
func TestDockerMasqueradeNAT(t *testing.T) {
	requireDocker(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and conntrack")
	}
	const ns, hostAddr, peerAddr = "n14-dout", "203.0.113.73", "203.0.113.74"
	image, network, name := "n14-busybox:masq", "n14-masqnet", "n14-masqcli"
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox not found: install Debian's busybox-static (go run mage.go test does, as root): %v", err)
	}
	_ = exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("the kernel refused a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	for _, args := range [][]string{
		{"link", "add", "n14d0", "type", "veth", "peer", "name", "n14d1", "netns", ns},
		{"addr", "add", hostAddr + "/30", "dev", "n14d0"},
		{"link", "set", "n14d0", "up"},
		{"-n", ns, "addr", "add", peerAddr + "/30", "dev", "n14d1"},
		{"-n", ns, "link", "set", "n14d1", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", "n14d0").Run() })
	// The outside server: busybox nc holds the one connection while its
	// stdin stays open.
	srv := exec.Command("ip", "netns", "exec", ns, bb, "nc", "-l", "-p", "45190")
	stdin, err := srv.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = srv.Process.Kill(); _ = srv.Wait() })

	buildBusyboxImage(t, image)
	t.Cleanup(func() { _, _ = dockerOut("rmi", "-f", image) })
	_, _ = dockerOut("network", "rm", network)
	docker(t, "network", "create", "--subnet", "203.0.113.96/28", network)
	t.Cleanup(func() { _, _ = dockerOut("network", "rm", network) })
	// The client retries until the server listens, then holds the connection.
	runContainer(t, name, "--network", network, image, "sh", "-c",
		"while ! (sleep 3600 | nc "+peerAddr+" 45190); do sleep 0.2; done")
	c := inspect(t, name)

	// The edge sees the masqueraded source: this host's veth address.
	var edge string
	deadline := time.Now().Add(60 * time.Second)
	for edge == "" && time.Now().Before(deadline) {
		out, _ := exec.Command("ip", "netns", "exec", ns, "ss", "-Htn", "state", "established", "( sport = :45190 )").CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			// busybox nc listens dual-stack: ss shows [::ffff:a.b.c.d]:port.
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			if h, port, err := net.SplitHostPort(f[len(f)-1]); err == nil && strings.TrimPrefix(h, "::ffff:") == hostAddr {
				edge = hostAddr + ":" + port
			}
		}
		if edge == "" {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if edge == "" {
		logs, _ := dockerOut("logs", name)
		t.Fatalf("no masqueraded connection from %s reached %s:45190 (container log: %s)", hostAddr, peerAddr, logs)
	}
	edgePort, _ := strconv.Atoi(edge[strings.LastIndexByte(edge, ':')+1:])
	var ncPID int
	for time.Now().Before(deadline) && ncPID == 0 {
		out, _ := exec.Command("nsenter", "-t", strconv.Itoa(c.State.Pid), "-n", "ss", "-Htnp", "state", "established", "( dport = :45190 )").CombinedOutput()
		if i := strings.Index(string(out), "pid="); i >= 0 {
			ncPID, _ = strconv.Atoi(strings.FieldsFunc(string(out)[i+4:], func(r rune) bool { return r < '0' || r > '9' })[0])
		}
		if ncPID == 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	out, _ := exec.Command("sh", "-c", "conntrack -L -p tcp --dport 45190 2>/dev/null").CombinedOutput()
	t.Logf("edge tuple %s -> %s:45190; container nc pid %d; conntrack: %s", edge, peerAddr, ncPID, out)

	cfg, err := conf.NewConfigFrom("tracker: procfs\nrescan_timeout: 60s\n")
	if err != nil {
		t.Fatal(err)
	}
	p, err := add_network_process.New(cfg, logptest.NewTestingLogger(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer p.(interface{ Close() error }).Close()
	ev, err := p.Run(&beat.Event{Timestamp: time.Now(), Fields: mapstr.M{
		"source":      mapstr.M{"ip": hostAddr, "port": edgePort},
		"destination": mapstr.M{"ip": peerAddr, "port": 45190},
		"network":     mapstr.M{"transport": "tcp"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("event: %s", ev.Fields.String())
	get := func(k string) any { v, _ := ev.GetValue(k); return v }
	if pid := get("source.process.pid"); ncPID == 0 || pid != ncPID {
		t.Errorf("source.process.pid = %v (%v), want the container's nc %d", pid, get("source.process.name"), ncPID)
	}
	if via := get("add_network_process.source.found_by"); via != "nat" {
		t.Errorf("source found_by = %v, want nat", via)
	}
	// The outside server is this host's too (a namespace's process), found
	// by its own socket; container.id follows process.*, the destination.
	if via := get("add_network_process.destination.found_by"); via != "socket" {
		t.Errorf("destination found_by = %v, want socket", via)
	}
	if id := get("container.id"); id != nil {
		t.Errorf("container.id = %v, want none: process.* is the outside server's", id)
	}
}
