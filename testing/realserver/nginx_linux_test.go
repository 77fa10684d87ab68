package realserver

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestNginxFixture: every client's request is logged once, by one of the
// master's workers, with the client end the client itself reports (curl,
// the keep-alive client) and the address it dialled.
func TestNginxFixture(t *testing.T) {
	if err := NginxAvailable(); err != nil {
		t.Skip(err)
	}
	lo, hi, err := PortRange(46000, 46999)
	if err != nil {
		t.Fatal(err)
	}
	n := StartNginx(t, NginxConfig{Workers: 2, PortLo: lo, PortHi: hi})
	if len(n.Workers) != 2 || slices.Contains(n.Workers, n.MasterPID) {
		t.Fatalf("workers %v of master %d, want 2 others", n.Workers, n.MasterPID)
	}
	runs := map[string]ClientRun{}
	for _, ip := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")} {
		for _, c := range AllClients {
			if _, err := c.Path(); err != nil {
				t.Logf("skipping client: %v", err)
				continue
			}
			uri := fmt.Sprintf("/%s?ip=%s", c, ip)
			r, err := RunClient(context.Background(), c, n.URL(ip, uri))
			if err != nil {
				t.Fatal(err)
			}
			runs[uri] = r
		}
	}
	k, err := StartKeepAlive(netip.MustParseAddr("::1"), n.Port)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := k.Get(fmt.Sprintf("/keepalive?i=%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	k.Close()

	want := len(runs) + 3
	var lines []LogLine
	for end := time.Now().Add(10 * time.Second); len(lines) < want && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if lines, err = n.ReadLog(); err != nil {
			t.Fatal(err)
		}
	}
	if len(lines) != want {
		t.Fatalf("access log has %d lines, want %d: %+v", len(lines), want, lines)
	}
	var kaPID int
	for _, l := range lines {
		if !slices.Contains(n.Workers, l.PID) {
			t.Errorf("%+v: $pid %d is not a worker of master %d (%v)", l, l.PID, n.MasterPID, n.Workers)
		}
		if l.Status != 200 || l.Server.Port() != n.Port || l.Remote.Addr() != l.Server.Addr() {
			t.Errorf("%+v: want status 200, server port %d, a loopback client of the same family", l, n.Port)
		}
		if time.Since(l.Time) > time.Minute || time.Until(l.Time) > time.Second {
			t.Errorf("%+v: $msec %v is not now", l, l.Time)
		}
		if r, ok := runs[l.URI]; ok {
			if r.LocalPort != 0 && r.LocalPort != l.Remote.Port() {
				t.Errorf("%+v: %s reported local port %d", l, r.Client, r.LocalPort)
			}
			delete(runs, l.URI)
			continue
		}
		if l.Remote != k.Local {
			t.Errorf("%+v: not from a one-shot client nor from the keep-alive client %v", l, k.Local)
		}
		if kaPID != 0 && l.PID != kaPID {
			t.Errorf("%+v: one keep-alive connection served by workers %d and %d", l, kaPID, l.PID)
		}
		kaPID = l.PID
	}
	if len(runs) > 0 {
		t.Errorf("requests missing from the log: %v", runs)
	}
}
