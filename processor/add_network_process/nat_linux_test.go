//go:build linux

package add_network_process

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/netprocbeat/netprocbeat/testing/helperproc"
)

// NAT test topology (203.0.113.64/26, all namespaces named n14-*):
//
//	n14-cl (outside)  203.0.113.66 ─ veth ─ 203.0.113.65  n14-rt (the NAT host)
//	n14-sv (container) 203.0.113.70 ─ veth ─ 203.0.113.69  n14-rt
//
// n14-rt forwards, DNATs 203.0.113.65:45080 to 203.0.113.70:45081 (a
// published port) and masquerades n14-sv's connections out of its n14-cl
// side; a placeholder process listens on 0.0.0.0:45080 in n14-rt, as dockerd
// does with --userland-proxy=false. The processor runs in n14-rt (the test
// binary re-executed there by ip netns exec), where the NAT's conntrack
// table is: that keeps the rules, the forwarding and the conntrack entries
// off the machine's own namespace (which Docker's FORWARD policy may drop).
const (
	natRouterEnv = "ANP_NAT_ROUTER_CASE"
	natRT        = "n14-rt"
	natCL        = "n14-cl"
	natSV        = "n14-sv"
)

// natCase is what the parent hands the processor run inside n14-rt.
type natCase struct {
	ClientPID, ServerPID, PlaceholderPID, MasqClientPID, OutsideServerPID int
	Client                                                                string // n14-cl's end of the DNATed connection
	MasqEdge                                                              string // the masqueraded connection's source as n14-cl sees it
	NATOff                                                                bool
}

func TestNATNetnsNftables(t *testing.T) {
	if os.Getenv(natRouterEnv) != "" {
		t.Skip("running as the router-side half")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and nftables")
	}
	for _, tool := range []string{"ip", "nft", "ss"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install iproute2 nftables)", tool)
		}
	}
	for _, ns := range []string{natRT, natCL, natSV} {
		_ = exec.Command("ip", "netns", "del", ns).Run() // a previous run killed midway
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Skipf("the kernel refused a network namespace: %v: %s", err, out)
		}
		ns := ns
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		runIP(t, "-n", ns, "link", "set", "lo", "up")
	}
	runIP(t, "-n", natRT, "link", "add", "n14rc0", "type", "veth", "peer", "name", "n14rc1", "netns", natCL)
	runIP(t, "-n", natRT, "link", "add", "n14rs0", "type", "veth", "peer", "name", "n14rs1", "netns", natSV)
	for _, a := range [][]string{
		{natRT, "n14rc0", "203.0.113.65/30"}, {natCL, "n14rc1", "203.0.113.66/30"},
		{natRT, "n14rs0", "203.0.113.69/30"}, {natSV, "n14rs1", "203.0.113.70/30"},
	} {
		runIP(t, "-n", a[0], "addr", "add", a[2], "dev", a[1])
		runIP(t, "-n", a[0], "link", "set", a[1], "up")
	}
	runIP(t, "-n", natSV, "route", "add", "default", "via", "203.0.113.69")
	nsRun(t, natRT, nil, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	rules := `table ip n14nat {
	chain pre {
		type nat hook prerouting priority dstnat;
		iifname "n14rc0" ip daddr 203.0.113.65 tcp dport 45080 dnat to 203.0.113.70:45081
	}
	chain post {
		type nat hook postrouting priority srcnat;
		oifname "n14rc0" ip saddr 203.0.113.70 masquerade
	}
}
`
	if out, err := nsCmd(natRT, strings.NewReader(rules), "nft", "-f", "-").CombinedOutput(); err != nil {
		t.Skipf("the kernel refused nftables NAT rules: %v: %s", err, out)
	}

	c := natCase{}
	c.PlaceholderPID, _ = startInNetns(t, natRT, "0.0.0.0:45080")
	c.ServerPID = startRole(t, natSV, "accept", "0.0.0.0:45081")
	c.OutsideServerPID = startRole(t, natCL, "accept", "203.0.113.66:45090")
	var client string
	c.ClientPID, client = startRoleLine(t, natCL, "dial", "tcp", "203.0.113.65:45080")
	c.Client = client
	c.MasqClientPID = startRole(t, natSV, "dial", "tcp", "203.0.113.66:45090")
	// The masqueraded source port is the kernel's choice: read it where
	// the edge sees it.
	out := nsRun(t, natCL, nil, "ss", "-Htn", "state", "established", "( sport = :45090 )")
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 4 && strings.HasPrefix(f[len(f)-1], "203.0.113.65:") {
			c.MasqEdge = f[len(f)-1]
		}
	}
	if c.MasqEdge == "" {
		t.Fatalf("n14-cl sees no masqueraded connection on :45090: %q", out)
	}
	t.Logf("conntrack in %s:\n%s", natRT, nsRun(t, natRT, nil, "sh", "-c", "conntrack -L 2>/dev/null || cat /proc/net/nf_conntrack 2>/dev/null || true"))

	for _, off := range []bool{false, true} {
		c.NATOff = off
		t.Run(map[bool]string{false: "nat_lookup=true", true: "nat_lookup=false"}[off], func(t *testing.T) {
			b, _ := json.Marshal(c)
			exe, _ := os.Executable()
			cmd := exec.Command("ip", "netns", "exec", natRT, exe, "-test.run", "^TestNATRouterSide$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), natRouterEnv+"="+string(b))
			out, err := cmd.CombinedOutput()
			t.Logf("router side:\n%s", out)
			if err != nil || !strings.Contains(string(out), "--- PASS: TestNATRouterSide") {
				t.Errorf("router side failed: %v", err)
			}
		})
	}
}

// TestNATRouterSide is TestNATNetnsNftables's half that runs inside n14-rt.
func TestNATRouterSide(t *testing.T) {
	raw := os.Getenv(natRouterEnv)
	if raw == "" {
		t.Skip("runs only inside TestNATNetnsNftables's router namespace")
	}
	var c natCase
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatal(err)
	}
	// A generous rescan budget: the host may hold many sockets (other
	// tests), and -race slows the first rescan.
	p := newFromYAML(t, fmt.Sprintf("tracker: procfs\nrescan_timeout: 60s\nnat_lookup: %v\n", !c.NATOff))
	host, port := splitHostPort(t, c.Client)

	// DNAT: the edge event names the published port.
	ev, _ := p.Run(event(host, port, "203.0.113.65", 45080, "tcp"))
	t.Logf("DNAT event: %s", ev.Fields.String())
	dst, _ := ev.GetValue("destination.process.pid")
	via, _ := ev.GetValue("add_network_process.destination.found_by")
	if c.NATOff {
		// Without conntrack the placeholder listener answers: the wrong
		// process this feature exists to avoid.
		if dst != c.PlaceholderPID || via != "listener" {
			t.Errorf("nat_lookup: false: destination.process.pid = %v via %v, want the placeholder %d via listener", dst, via, c.PlaceholderPID)
		}
		return
	}
	if dst != c.ServerPID || via != "nat" {
		t.Errorf("DNAT: destination.process.pid = %v via %v, want the server in n14-sv %d via nat (placeholder is %d)", dst, via, c.ServerPID, c.PlaceholderPID)
	}
	if src, _ := ev.GetValue("source.process.pid"); src != c.ClientPID {
		t.Errorf("DNAT: source.process.pid = %v, want the client %d", src, c.ClientPID)
	}
	if v, _ := ev.GetValue("add_network_process.source.found_by"); v != "socket" {
		t.Errorf("DNAT: source found_by = %v, want socket", v)
	}

	// Masquerade: the edge event names the router's address and port.
	mh, mp := splitHostPort(t, c.MasqEdge)
	ev, _ = p.Run(event(mh, mp, "203.0.113.66", 45090, "tcp"))
	t.Logf("masquerade event: %s", ev.Fields.String())
	if src, _ := ev.GetValue("source.process.pid"); src != c.MasqClientPID {
		t.Errorf("masquerade: source.process.pid = %v, want the client in n14-sv %d", src, c.MasqClientPID)
	}
	if v, _ := ev.GetValue("add_network_process.source.found_by"); v != "nat" {
		t.Errorf("masquerade: source found_by = %v, want nat", v)
	}
	if d, _ := ev.GetValue("destination.process.pid"); d != c.OutsideServerPID {
		t.Errorf("masquerade: destination.process.pid = %v, want n14-cl's server %d", d, c.OutsideServerPID)
	}

	// A port nobody translated: the placeholder's own listener answers.
	ev, _ = p.Run(event("203.0.113.66", 45999, "203.0.113.65", 45080, "tcp"))
	if d, _ := ev.GetValue("destination.process.pid"); d != c.PlaceholderPID {
		t.Errorf("untranslated tuple: destination.process.pid = %v, want the listener %d", d, c.PlaceholderPID)
	}
	st := p.(*processor).watcher.Stats()
	t.Logf("stats: %+v", st)
	if st.NATHits < 2 || st.NATTranslated < 2 || st.NATUnavailable != 0 {
		t.Errorf("stats: nat hits %d translated %d unavailable %d, want ≥ 2, ≥ 2, 0", st.NATHits, st.NATTranslated, st.NATUnavailable)
	}
}

func splitHostPort(t *testing.T, s string) (string, int) {
	t.Helper()
	i := strings.LastIndexByte(s, ':')
	port, err := strconv.Atoi(s[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("bad address %q", s)
	}
	return s[:i], port
}

func nsCmd(ns string, stdin *strings.Reader, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	return cmd
}

func nsRun(t *testing.T, ns string, stdin *strings.Reader, args ...string) string {
	t.Helper()
	out, err := nsCmd(ns, stdin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns exec %s %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// startRole runs a helperproc role inside ns and returns its PID.
func startRole(t *testing.T, ns, role string, args ...string) int {
	pid, _ := startRoleLine(t, ns, role, args...)
	return pid
}

func startRoleLine(t *testing.T, ns, role string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, helperproc.Argv(role, args...)...)...)
	cmd.Env = helperproc.Env()
	cmd.Stderr = os.Stderr
	line := runHelper(t, cmd, role+" "+strings.Join(args, " ")+" in netns "+ns)
	return cmd.Process.Pid, line
}
