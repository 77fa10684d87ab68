//go:build linux

package packetbeat

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

const (
	// nginxWorkers is the pre-fork server's worker count: several workers
	// share one listening socket, inherited from the master.
	nginxWorkers = 4
	// oneShots and keepAlives are per address family; each keep-alive
	// client makes keepAliveRequests requests on one connection.
	oneShots          = 100
	keepAlives        = 10
	keepAliveRequests = 5
	parallelClients   = 4
)

// tally counts one product's answers for one event type and side.
type tally struct {
	right, wrong, missing int
	wrongMaster           int      // wrong answers that named nginx's master
	examples              []string // the first wrong answers
}

func (c *tally) add(got, want int, desc string, master int) {
	switch {
	case got == 0:
		c.missing++
	case got == want:
		c.right++
	default:
		c.wrong++
		if got == master {
			c.wrongMaster++
		}
		if len(c.examples) < 5 {
			c.examples = append(c.examples, fmt.Sprintf("%s: pid %d, want %d", desc, got, want))
		}
	}
}

func (c tally) String() string {
	n := c.right + c.wrong + c.missing
	pct := func(k int) string {
		if n == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f %%", 100*float64(k)/float64(n))
	}
	s := fmt.Sprintf("%d / %d / %d (%s / %s / %s)", c.right, c.wrong, c.missing, pct(c.right), pct(c.wrong), pct(c.missing))
	if c.wrongMaster > 0 {
		s += fmt.Sprintf(", %d wrong = master", c.wrongMaster)
	}
	return s
}

// result is one product's counts.
type result struct {
	events map[string]int               // counted events by type
	sides  map[string]map[string]*tally // type -> side -> tally
}

// TestPacketbeatProcsVersusAddNetworkProcess runs Packetbeat with procs and
// Packetbeat with add_network_process (netprocbeat-packet.yml's processors)
// on the same nginx traffic and compares both with the ground truth.
func TestPacketbeatProcsVersusAddNetworkProcess(t *testing.T) {
	if os.Getenv("NETPROCBEAT_PACKET") == "" {
		t.Skip("opt-in: NETPROCBEAT_PACKET=1 (go run mage.go packetbeatTest; needs root, libpcap-dev, nginx-light, curl, python3)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("NETPROCBEAT_PACKET is set but this is not root: packet capture and both process attributions need root")
	}
	for _, tool := range []string{"curl", python3()} {
		if _, err := lookPath(tool); err != nil {
			t.Fatalf("%s not found: apt-get install -y --no-install-recommends curl python3 (go run mage.go setup does): %v", tool, err)
		}
	}
	root := moduleRoot(t)
	bin := packetBinary(t, root)
	processors := referenceProcessors(t, root)
	port, err := freePort(48080, 48179)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	srv := startNginx(t, filepath.Join(dir, "nginx"), port, nginxWorkers)
	master := srv.cmd.Process.Pid

	procsCfg := beatConfig(filepath.Join(dir, "procs"), port)
	procsCfg["packetbeat.procs.enabled"] = true
	oursCfg := beatConfig(filepath.Join(dir, "anp"), port)
	oursCfg["packetbeat.procs.enabled"] = false
	oursCfg["processors"] = processors
	beats := []*beat{
		startBeat(t, bin, filepath.Join(dir, "procs"), "packetbeat procs", procsCfg),
		startBeat(t, bin, filepath.Join(dir, "anp"), "add_network_process", oursCfg),
	}
	warmups := waitCapturing(t, beats, port)

	var jobs []job
	for _, ip := range []string{"127.0.0.1", "::1"} {
		ip := ip
		for i := 0; i < oneShots; i++ {
			jobs = append(jobs, func() (clientConn, error) { return curlOnce(ip, port, "/oneshot") })
		}
		for i := 0; i < keepAlives; i++ {
			jobs = append(jobs, func() (clientConn, error) { return keepAlive(ip, port, keepAliveRequests) })
		}
	}
	rand.Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })
	start := time.Now()
	conns, reused, errs := runClients(jobs, parallelClients)
	for _, err := range errs {
		t.Errorf("client: %v", err)
	}
	for _, r := range reused {
		t.Logf("%s: not counted", r)
	}
	// A client port a warm-up request used too: which connection an event
	// is about cannot be told, so neither is counted.
	for _, w := range warmups {
		if c, ok := conns[w.local]; ok && c.pid > 0 {
			t.Logf("client endpoint %v used by warm-up pid %d and client pid %d: not counted", w.local, w.pid, c.pid)
			c.pid = -1
			conns[w.local] = c
		}
	}
	requests := 0
	for _, c := range conns {
		requests += c.requests
	}
	t.Logf("%d client connections, %d requests in %v (nginx: %d workers, port %d)", len(conns), requests, time.Since(start).Round(time.Millisecond), nginxWorkers, port)

	// Flows are published flows.timeout (5s) after their last packet.
	waitFlows(t, beats, conns, port, 60*time.Second)
	for _, b := range beats {
		b.stop()
	}

	servedBy := map[endpoint]int{}
	for _, s := range srv.readAccessLog(t) {
		servedBy[s.client] = s.workerPID
	}
	results := map[string]result{}
	for _, b := range beats {
		results[b.name] = classify(b.events(t), conns, servedBy, port, master)
	}
	report(t, beats, results, len(conns), requests)

	ours := results["add_network_process"]
	for _, typ := range []string{"flow", "http"} {
		for _, side := range []string{"client", "server"} {
			c := ours.sides[typ][side]
			if c.wrong > 0 {
				t.Errorf("add_network_process named the wrong process on the %s side of %d %s events: %s",
					side, c.wrong, typ, strings.Join(c.examples, "; "))
			}
		}
		if ours.events[typ] == 0 {
			t.Errorf("add_network_process: no %s events about the test's clients; its log:\n%s", typ, beats[1].logTail(30))
		}
	}
}

// waitCapturing sends warm-up requests until every beat has written an
// http event for one: then both capture. It returns the warm-up clients
// (their ports may come back in the measured run).
func waitCapturing(t *testing.T, beats []*beat, port int) (warmups []clientConn) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		c, err := curlOnce("127.0.0.1", port, "/warmup")
		if err != nil {
			t.Fatal(err)
		}
		warmups = append(warmups, c)
		ready := 0
		for _, b := range beats {
			if b.exited() {
				t.Fatalf("%s exited; its log:\n%s", b.name, b.logTail(40))
			}
			for _, ev := range b.events(t) {
				if strField(ev, "type") == "http" && strField(ev, "url.path") == "/warmup" {
					ready++
					break
				}
			}
		}
		if ready == len(beats) {
			return warmups
		}
		if time.Now().After(deadline) {
			for _, b := range beats {
				t.Logf("%s log:\n%s", b.name, b.logTail(30))
			}
			t.Fatal("the beats did not report a warm-up request within 90s")
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitFlows waits until each beat has published a flow for every client
// connection, or until the deadline (a capture on lo loses packets under
// load, so some flows may never come).
func waitFlows(t *testing.T, beats []*beat, conns map[endpoint]clientConn, port int, max time.Duration) {
	t.Helper()
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		all := true
		for _, b := range beats {
			seen := map[endpoint]bool{}
			for _, ev := range b.events(t) {
				if strField(ev, "type") != "flow" {
					continue
				}
				if cl, _, ok := ends(ev, port); ok {
					if _, known := conns[cl]; known {
						seen[cl] = true
					}
				}
			}
			if len(seen) < len(conns) {
				all = false
			}
		}
		if all {
			return
		}
		time.Sleep(time.Second)
	}
}

// ends returns the client endpoint of an event about the test's server,
// and whether the client is the event's source.
func ends(ev map[string]any, port int) (client endpoint, clientIsSource, ok bool) {
	src := endpoint{strField(ev, "source.ip"), intField(ev, "source.port")}
	dst := endpoint{strField(ev, "destination.ip"), intField(ev, "destination.port")}
	isServer := func(e endpoint) bool { return e.port == port && (e.ip == "127.0.0.1" || e.ip == "::1") }
	switch {
	case isServer(dst) && !isServer(src):
		return src, true, true
	case isServer(src) && !isServer(dst):
		return dst, false, true
	}
	return endpoint{}, false, false
}

// classify counts, per event type and side, the right, wrong and missing
// answers of one product's events about the test's client connections.
func classify(evs []map[string]any, conns map[endpoint]clientConn, servedBy map[endpoint]int, port, master int) result {
	r := result{events: map[string]int{}, sides: map[string]map[string]*tally{}}
	for _, typ := range []string{"flow", "http"} {
		r.sides[typ] = map[string]*tally{"client": {}, "server": {}}
	}
	for _, ev := range evs {
		typ := strField(ev, "type")
		if typ != "flow" && typ != "http" {
			continue
		}
		cl, clientIsSource, ok := ends(ev, port)
		if !ok {
			continue
		}
		c, known := conns[cl]
		if !known || c.pid <= 0 {
			continue // a warm-up request, or an ambiguous endpoint
		}
		r.events[typ]++
		clientField, serverField := "source.process.pid", "destination.process.pid"
		if !clientIsSource {
			clientField, serverField = serverField, clientField
		}
		desc := fmt.Sprintf("%s %s from %s (%v)", typ, c.prog, cl, field(ev, "@timestamp"))
		r.sides[typ]["client"].add(intField(ev, clientField), c.pid, desc, master)
		if worker, ok := servedBy[cl]; ok {
			r.sides[typ]["server"].add(intField(ev, serverField), worker, desc, master)
		}
	}
	return r
}

// report logs the comparison as a table.
func report(t *testing.T, beats []*beat, results map[string]result, conns, requests int) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "right / wrong / missing, per event about the test's %d connections (%d requests):\n", conns, requests)
	fmt.Fprintln(&b, "| product | events | client side | server side |")
	fmt.Fprintln(&b, "|---|---|---|---|")
	names := make([]string, 0, len(beats))
	for _, bt := range beats {
		names = append(names, bt.name)
	}
	for _, typ := range []string{"flow", "http"} {
		want := conns
		if typ == "http" {
			want = requests
		}
		for _, n := range names {
			r := results[n]
			fmt.Fprintf(&b, "| %s, %s | %d of %d | %s | %s |\n", n, typ, r.events[typ], want,
				r.sides[typ]["client"], r.sides[typ]["server"])
		}
	}
	for _, n := range names {
		for _, typ := range []string{"flow", "http"} {
			for _, side := range []string{"client", "server"} {
				if ex := results[n].sides[typ][side].examples; len(ex) > 0 {
					sort.Strings(ex)
					fmt.Fprintf(&b, "%s, %s, %s side, wrong: %s\n", n, typ, side, strings.Join(ex, "; "))
				}
			}
		}
	}
	t.Log("\n" + b.String())
}
