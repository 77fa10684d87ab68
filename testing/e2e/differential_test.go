//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/elastic/beats/v7/libbeat/beat"
	"github.com/elastic/beats/v7/libbeat/processors"
	conf "github.com/elastic/elastic-agent-libs/config"
	"github.com/elastic/elastic-agent-libs/mapstr"

	"github.com/netprocbeat/netprocbeat/processor/add_network_process"
)

// ssRow is one socket as `ss -tunapH` lists it.
type ssRow struct {
	line      string
	transport string // tcp or udp
	local     netip.AddrPort
	peer      netip.AddrPort // invalid for "*" peers (listeners, unconnected UDP)
	pids      []int          // sorted
}

func (r ssRow) key() string {
	return r.transport + " " + r.local.String() + " " + r.peer.String()
}

// owner is the PID the processor must name for the row: its one process,
// or 0 when several processes hold the socket (a shared socket answers
// nothing: docs/add_network_process.md, "When an answer is given").
func (r ssRow) owner() int {
	for _, pid := range r.pids[1:] {
		if pid != r.pids[0] {
			return 0
		}
	}
	return r.pids[0]
}

var ssPIDs = regexp.MustCompile(`pid=(\d+)`)

// parseSSAddr parses ss's address column: "127.0.0.1:80", "[::1]:80",
// "[::ffff:127.0.0.1]:80", "127.0.0.53%lo:53", "[fe80::1]%eth0:546",
// "*:80", "0.0.0.0:*". ok is false for a wildcard port; the address is
// the zero Addr for "*".
func parseSSAddr(s string) (ap netip.AddrPort, ok bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, false
	}
	host, port := s[:i], s[i+1:]
	if port == "*" {
		return netip.AddrPort{}, false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	if j := strings.IndexByte(host, '%'); j >= 0 {
		host = host[:j] // zone, inside or outside the brackets
	}
	host = strings.Trim(host, "[]")
	if host == "*" {
		return netip.AddrPortFrom(netip.Addr{}, uint16(p)), true
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), true
}

// runSS lists the host's TCP and UDP sockets that have an owning process.
func runSS(t *testing.T, ssPath string) []ssRow {
	t.Helper()
	out, err := exec.Command(ssPath, "-tunapH").Output()
	if err != nil {
		t.Fatalf("ss -tunapH: %v", err)
	}
	var rows []ssRow
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		// Netid State Recv-Q Send-Q Local Peer [Process]
		if len(f) < 7 || (f[0] != "tcp" && f[0] != "udp") {
			continue
		}
		local, ok := parseSSAddr(f[4])
		if !ok || !local.Addr().IsValid() || local.Addr().IsUnspecified() {
			// A wildcard local address never appears as an event endpoint.
			continue
		}
		peer, ok := parseSSAddr(f[5])
		if !ok || !peer.Addr().IsValid() || peer.Addr().IsUnspecified() {
			peer = netip.AddrPort{}
		}
		r := ssRow{line: line, transport: f[0], local: local, peer: peer}
		for _, m := range ssPIDs.FindAllStringSubmatch(strings.Join(f[6:], " "), -1) {
			pid, _ := strconv.Atoi(m[1])
			r.pids = append(r.pids, pid)
		}
		if len(r.pids) == 0 {
			continue
		}
		slices.Sort(r.pids)
		r.pids = slices.Compact(r.pids)
		rows = append(rows, r)
	}
	return rows
}

// newInProcessProcessor builds add_network_process as a beat would, from
// its configuration.
func newInProcessProcessor(t *testing.T) beat.Processor {
	t.Helper()
	c, err := conf.NewConfigFrom(map[string]any{"set_process": false})
	if err != nil {
		t.Fatal(err)
	}
	p, err := add_network_process.New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// enrich runs one event built from an ss row through p: the local end as
// source, the peer (if any) as destination.
func enrich(t *testing.T, p beat.Processor, r ssRow) *beat.Event {
	t.Helper()
	f := mapstr.M{
		"source":  mapstr.M{"ip": r.local.Addr().String(), "port": int(r.local.Port())},
		"network": mapstr.M{"transport": r.transport},
	}
	if r.peer.IsValid() {
		f["destination"] = mapstr.M{"ip": r.peer.Addr().String(), "port": int(r.peer.Port())}
	}
	ev, err := p.Run(&beat.Event{Timestamp: time.Now(), Fields: f})
	if err != nil {
		t.Fatalf("processor error for %s: %v", r.key(), err)
	}
	return ev
}

func pidAt(ev *beat.Event, key string) int {
	v, err := ev.GetValue(key)
	if err != nil {
		return 0
	}
	n, _ := v.(int)
	return n
}

// TestDifferentialAgainstSS opens a few hundred sockets across 20 helper
// processes (TCP listeners, TCP connections between helpers, bound and
// connected UDP sockets, on 127.0.0.1 and ::1), lists every TCP and UDP
// socket of the host with iproute2's ss, and requires the in-process
// processor to name the same owner for each.
//
// Shared sockets: ss lists every PID holding a socket; a socket several
// processes hold (an inherited one: another test's forked child) must be
// answered with no process at all. Sockets listed more than once under the
// same tuple with different owners (SO_REUSEPORT groups) are ambiguous and
// skipped.
//
// Every helper socket must match. Other sockets on the host (other tests,
// system daemons) are compared too, but a mismatch there only counts if it
// persists: after a fresh processor (a new watcher) is built and ss is run
// again, a row that is still listed with the same owners must match.
func TestDifferentialAgainstSS(t *testing.T) {
	ssPath, err := exec.LookPath("ss")
	if err != nil {
		t.Skip("ss (iproute2) is not installed; install iproute2 to run the differential test")
	}
	start := time.Now()

	const helpers = 20
	v6 := "0"
	if ipv6Loopback() {
		v6 = "1"
	}
	helperPIDs := map[int]bool{}
	prevTCP, prevUDP := "-", "-"
	for i := 0; i < helpers; i++ {
		h := startHelper(t, "hold", prevTCP, prevUDP, v6)
		var r holdReady
		if err := json.Unmarshal([]byte(h.ready), &r); err != nil {
			t.Fatalf("helper %d: %v", i, err)
		}
		helperPIDs[h.pid] = true
		prevTCP, prevUDP = strings.Join(r.TCPListen, ","), strings.Join(r.UDPBound, ",")
	}
	// Let the helpers accept the connections queued on their listeners.
	time.Sleep(300 * time.Millisecond)

	rows := runSS(t, ssPath)
	byKey := map[string][]ssRow{}
	for _, r := range rows {
		byKey[r.key()] = append(byKey[r.key()], r)
	}
	ownerOf := func(r ssRow) (int, bool) {
		same := byKey[r.key()]
		for _, o := range same {
			if !slices.Equal(o.pids, same[0].pids) {
				return 0, false
			}
		}
		return r.owner(), true
	}
	isHelper := func(r ssRow) bool {
		for _, pid := range r.pids {
			if helperPIDs[pid] {
				return true
			}
		}
		return false
	}

	p := newInProcessProcessor(t)
	var (
		compared, comparedHelper, comparedDst, ambiguous, comparedV6 int
		suspects                                                     []ssRow
	)
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.key()] {
			continue
		}
		seen[r.key()] = true
		want, ok := ownerOf(r)
		if !ok {
			ambiguous++
			continue
		}
		ev := enrich(t, p, r)
		compared++
		if r.local.Addr().Is6() {
			comparedV6++
		}
		if isHelper(r) {
			comparedHelper++
		}
		got := pidAt(ev, "source.process.pid")
		if got != want {
			if isHelper(r) {
				t.Errorf("helper socket %s: processor says PID %d, ss says %v\n  ss: %s", r.key(), got, r.pids, r.line)
			} else {
				suspects = append(suspects, r)
			}
			continue
		}
		// The peer end, when it is a socket of this host listed by ss under
		// the reverse tuple, must be attributed to its own owner.
		if !r.peer.IsValid() {
			continue
		}
		rev := ssRow{transport: r.transport, local: r.peer, peer: r.local}
		peers := byKey[rev.key()]
		if len(peers) == 0 || !isHelper(r) || !isHelper(peers[0]) {
			continue
		}
		wantDst, ok := ownerOf(peers[0])
		if !ok {
			continue
		}
		comparedDst++
		if gotDst := pidAt(ev, "destination.process.pid"); gotDst != wantDst {
			t.Errorf("helper socket %s: destination.process.pid %d, ss says the peer %s is owned by %v",
				r.key(), gotDst, r.peer, peers[0].pids)
		}
	}
	if err := processors.Close(p); err != nil {
		t.Errorf("close processor: %v", err)
	}

	// Re-check other processes' mismatches with a fresh watcher and a fresh
	// ss listing: sockets that came or went in between are not mismatches.
	persisting := 0
	if len(suspects) > 0 {
		time.Sleep(300 * time.Millisecond)
		again := map[string]ssRow{}
		for _, r := range runSS(t, ssPath) {
			again[r.key()] = r
		}
		p2 := newInProcessProcessor(t)
		for _, r := range suspects {
			now, ok := again[r.key()]
			if !ok || !slices.Equal(now.pids, r.pids) {
				continue
			}
			if got := pidAt(enrich(t, p2, r), "source.process.pid"); got != r.owner() {
				persisting++
				t.Errorf("socket %s: processor says PID %d, ss says %v (twice)\n  ss: %s", r.key(), got, r.pids, r.line)
			}
		}
		if err := processors.Close(p2); err != nil {
			t.Errorf("close processor: %v", err)
		}
	}

	t.Logf("ss listed %d TCP/UDP sockets with an owner on specific local addresses; compared %d (%d IPv6; %d of the %d helpers' sockets), plus %d peer ends; %d ambiguous skipped; %d other-process mismatches re-checked, %d persisted; %v",
		len(rows), compared, comparedV6, comparedHelper, helpers, comparedDst, ambiguous, len(suspects), persisting, time.Since(start).Round(time.Millisecond))
	if comparedHelper == 0 {
		t.Fatal("compared no helper socket: the ss parsing or the helpers are broken")
	}
	if want := helpers * 15; comparedHelper < want {
		t.Errorf("compared %d helper sockets, want at least %d (15 per helper)", comparedHelper, want)
	}
}

// ipv6Loopback reports whether ::1 is configured.
func ipv6Loopback() bool {
	out, err := os.ReadFile("/proc/net/if_inet6")
	return err == nil && strings.Contains(string(out), fmt.Sprintf("%032x", 1))
}
