//go:build linux

package recipes

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/netprocbeat/netprocbeat/testing/beatrun"
	"github.com/netprocbeat/netprocbeat/testing/realserver"
)

// needRoot skips unless the test runs as root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("recipes need root (the eBPF tracker, nftables, the kernel log): run go test as root")
	}
}

// needProgram skips unless path (or name in PATH) exists, naming the
// package to install.
func needProgram(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found: install it (apt-get install %s)", name, pkg)
	}
	return p
}

// clientCount is how many one-shot clients each recipe runs.
func clientCount() int {
	if n, err := strconv.Atoi(os.Getenv("RECIPES_CLIENTS")); err == nil && n > 0 {
		return n
	}
	return 60
}

var recipeBlock = regexp.MustCompile("(?s)<!-- recipe: ([a-z-]+) -->\n```yaml\n(.*?)```")

// recipeConfigs returns recipe name's YAML block from docs/recipes.md with
// each old→new replacement of repl applied (each must occur), as written
// (logTime) and without its timestamp and syslog processors (readTime:
// @timestamp stays the time the beat read the line).
func recipeConfigs(t *testing.T, name string, repl ...string) (logTime, readTime string) {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(moduleRoot, "docs", "recipes.md"))
	if err != nil {
		t.Fatal(err)
	}
	var block string
	for _, m := range recipeBlock.FindAllStringSubmatch(string(doc), -1) {
		if m[1] == name {
			block = m[2]
		}
	}
	if block == "" {
		t.Fatalf("docs/recipes.md has no block <!-- recipe: %s --> followed by ```yaml", name)
	}
	for i := 0; i+1 < len(repl); i += 2 {
		if !strings.Contains(block, repl[i]) {
			t.Fatalf("recipe %s does not contain %q, which the test replaces with %q", name, repl[i], repl[i+1])
		}
		block = strings.ReplaceAll(block, repl[i], repl[i+1])
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(block), &cfg); err != nil {
		t.Fatalf("recipe %s is not YAML: %v", name, err)
	}
	removed := stripEventTime(cfg)
	if removed == 0 {
		t.Fatalf("recipe %s has no timestamp or syslog processor", name)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return block, string(out)
}

// stripEventTime removes the timestamp and syslog processors from the
// global processors and the inputs' processors, and returns how many.
func stripEventTime(cfg map[string]any) int {
	n := 0
	strip := func(m map[string]any) {
		list, _ := m["processors"].([]any)
		var kept []any
		for _, p := range list {
			pm, _ := p.(map[string]any)
			if _, ok := pm["timestamp"]; ok {
				n++
				continue
			}
			if _, ok := pm["syslog"]; ok {
				n++
				continue
			}
			kept = append(kept, p)
		}
		if list != nil {
			m["processors"] = kept
		}
	}
	strip(cfg)
	inputs, _ := cfg["netprocbeat.inputs"].([]any)
	for _, in := range inputs {
		if m, ok := in.(map[string]any); ok {
			strip(m)
		}
	}
	return n
}

// pair is the same recipe run twice at once: as written (@timestamp from
// the log) and without its event-time processor (@timestamp = read time).
type pair struct {
	logTime, readTime *beatrun.Beat
}

// startPair starts both beats and waits until each has loaded the eBPF
// tracker (a beat without it skips the test: closed connections would
// never be attributed, which is not what the recipes measure).
func startPair(t *testing.T, logCfg, readCfg string) pair {
	t.Helper()
	p := pair{
		logTime:  beatrun.Start(t, beatBin, t.TempDir(), logCfg),
		readTime: beatrun.Start(t, beatBin, t.TempDir(), readCfg),
	}
	for _, b := range []*beatrun.Beat{p.logTime, p.readTime} {
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(b.Logs(), "eBPF connection tracker loaded") {
			if strings.Contains(b.Logs(), "eBPF connection tracker not used") {
				t.Skipf("the eBPF tracker cannot load on this machine:\n%s", b.LogTail(10))
			}
			if time.Now().After(deadline) {
				t.Fatalf("netprocbeat did not report the eBPF tracker within 20s:\n%s", b.LogTail(20))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return p
}

// truth is what is known, from outside the processor, about an event:
// the PIDs that owned its source and destination ends (0: not judged).
type truth struct {
	src, dst int
}

// sideCount tallies one side of the events.
type sideCount struct {
	right, wrong, missing int
}

func (s sideCount) String() string {
	n := s.right + s.wrong + s.missing
	if n == 0 {
		return "not judged"
	}
	return fmt.Sprintf("%d/%d right (%.0f %%), %d wrong, %d missing", s.right, n, 100*float64(s.right)/float64(n), s.wrong, s.missing)
}

// result is one beat's tally.
type result struct {
	events   int
	src, dst sideCount
	// srcBy is the source side by network.transport.
	srcBy map[string]*sideCount
}

// judge counts ev's sides against tr; a wrong PID fails the test.
func (r *result) judge(t *testing.T, label string, ev beatrun.Event, tr truth) {
	t.Helper()
	r.events++
	if r.srcBy == nil {
		r.srcBy = map[string]*sideCount{}
	}
	tp := ev.Str("network.transport")
	if r.srcBy[tp] == nil {
		r.srcBy[tp] = &sideCount{}
	}
	before := r.src
	defer func() {
		c := r.srcBy[tp]
		c.right += r.src.right - before.right
		c.wrong += r.src.wrong - before.wrong
		c.missing += r.src.missing - before.missing
	}()
	for _, s := range []struct {
		name  string
		want  int
		count *sideCount
	}{{"source", tr.src, &r.src}, {"destination", tr.dst, &r.dst}} {
		if s.want == 0 {
			continue
		}
		got := ev.Num(s.name + ".process.pid")
		switch {
		case ev.Get(s.name+".process.pid") == nil:
			s.count.missing++
		case got == s.want:
			s.count.right++
		default:
			s.count.wrong++
			t.Errorf("%s: %s.process.pid = %d, want %d: %s", label, s.name, got, s.want, ev)
		}
	}
}

// collect waits until each beat has n events that match (or 60 s pass),
// judges them with truthOf (ok false: the event is not the test's, which
// fails it) and logs the tallies.
func (p pair) collect(t *testing.T, recipe string, n int, match func(beatrun.Event) bool, truthOf func(beatrun.Event) (truth, bool)) (logTime, readTime result) {
	t.Helper()
	var wg sync.WaitGroup
	evs := make([][]beatrun.Event, 2)
	for i, b := range []*beatrun.Beat{p.logTime, p.readTime} {
		wg.Add(1)
		go func() { defer wg.Done(); evs[i] = b.WaitEvents(n, 60*time.Second, match) }()
	}
	wg.Wait()
	res := []*result{&logTime, &readTime}
	for i, label := range []string{"@timestamp=log time", "@timestamp=read time"} {
		if len(evs[i]) < n {
			t.Errorf("%s, %s: %d of %d events arrived within 60s", recipe, label, len(evs[i]), n)
		}
		for _, ev := range evs[i] {
			tr, ok := truthOf(ev)
			if !ok {
				t.Errorf("%s, %s: an event the test cannot place: %s", recipe, label, ev)
				continue
			}
			res[i].judge(t, recipe+", "+label, ev, tr)
		}
		t.Logf("%s, %s: %d events; source: %v; destination: %v", recipe, label, res[i].events, res[i].src, res[i].dst)
		if len(res[i].srcBy) > 1 {
			for _, tp := range slices.Sorted(maps.Keys(res[i].srcBy)) {
				t.Logf("    source, %s: %v", tp, *res[i].srcBy[tp])
			}
		}
	}
	return logTime, readTime
}

// freeTCPPortIn returns a port in lo-hi that can be bound on host now, for
// protocols network ("tcp", "udp", or both as "tcp+udp").
func freeTCPPortIn(t *testing.T, host string, lo, hi int, network string) int {
	t.Helper()
	for port := lo; port <= hi; port++ {
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		ok := true
		if strings.Contains(network, "tcp") {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				ok = false
			} else {
				l.Close()
			}
		}
		if ok && strings.Contains(network, "udp") {
			c, err := net.ListenPacket("udp", addr)
			if err != nil {
				ok = false
			} else {
				c.Close()
			}
		}
		if ok {
			return port
		}
	}
	t.Fatalf("no free %s port on %s in %d-%d", network, host, lo, hi)
	return 0
}

// portRange is the test's TCP port range (NETPROCBEAT_TEST_PORTS).
func portRange(t *testing.T) (int, int) {
	t.Helper()
	lo, hi, err := realserver.PortRange(49500, 49999)
	if err != nil {
		t.Fatal(err)
	}
	return int(lo), int(hi)
}

// startNginx starts the realserver nginx fixture in the lower part of the
// port range (the upper 100 ports are left to the inputs).
func startNginx(t *testing.T) *realserver.Nginx {
	t.Helper()
	if err := realserver.NginxAvailable(); err != nil {
		t.Skip(err)
	}
	lo, hi := portRange(t)
	if hi-lo >= 200 {
		hi -= 100
	}
	return realserver.StartNginx(t, realserver.NginxConfig{Workers: 4, PortLo: uint16(lo), PortHi: uint16(hi)})
}

// clientRuns are the one-shot requests made by driveNginx, by URI.
type clientRuns map[string]realserver.ClientRun

// driveNginx makes n one-shot requests to nginx, four at a time, with
// curl, wget, python3 and bash in turn (those installed), alternately to
// 127.0.0.1 and ::1, each with a URI of its own (/tag?n=i).
func driveNginx(t *testing.T, ngx *realserver.Nginx, tag string, n int) clientRuns {
	t.Helper()
	var clients []realserver.Client
	for _, c := range realserver.AllClients {
		if _, err := c.Path(); err != nil {
			t.Logf("client left out: %v", err)
			continue
		}
		clients = append(clients, c)
	}
	if len(clients) == 0 {
		t.Skip("no HTTP client found: install curl, wget or python3")
	}
	ips := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}
	runs := clientRuns{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failures []string
	sem := make(chan struct{}, 4)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		uri := fmt.Sprintf("/%s?n=%d", tag, i)
		c, ip := clients[i%len(clients)], ips[(i/len(clients))%2]
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, err := realserver.RunClient(context.Background(), c, ngx.URL(ip, uri))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures = append(failures, err.Error())
				return
			}
			runs[uri] = r
		}()
		// Spread the requests over a few seconds, as a log fills.
		time.Sleep(30 * time.Millisecond)
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d clients failed, first: %s", len(failures), n, failures[0])
	}
	return runs
}

// servedBy waits for nginx's access log to have a line for every run and
// returns them by the client's end of the connection.
func servedBy(t *testing.T, ngx *realserver.Nginx, runs clientRuns) map[netip.AddrPort]realserver.LogLine {
	t.Helper()
	out := map[netip.AddrPort]realserver.LogLine{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines, err := ngx.ReadLog()
		if err != nil {
			t.Fatal(err)
		}
		clear(out)
		for _, l := range lines {
			if _, ok := runs[l.URI]; ok {
				out[l.Remote] = l
			}
		}
		if len(out) == len(runs) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx logged %d of %d requests within 10s", len(out), len(runs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// byClientEnd returns the truth for an event whose source is a client end
// that nginx logged: the client's PID and the worker's.
func byClientEnd(runs clientRuns, served map[netip.AddrPort]realserver.LogLine) func(beatrun.Event) (truth, bool) {
	return func(ev beatrun.Event) (truth, bool) {
		ip, err := netip.ParseAddr(ev.Str("source.ip"))
		if err != nil {
			return truth{}, false
		}
		l, ok := served[netip.AddrPortFrom(ip.Unmap(), uint16(ev.Num("source.port")))]
		if !ok {
			return truth{}, false
		}
		return truth{src: runs[l.URI].PID, dst: l.PID}, true
	}
}

// waitTCP waits until addr accepts connections.
func waitTCP(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not accepting connections: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lockedBuf is a strings.Builder safe for a command's stdout and stderr.
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
