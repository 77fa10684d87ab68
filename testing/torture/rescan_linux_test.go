//go:build linux

package torture

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"
)

// envInt reads a positive integer from the environment, else def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// envDuration reads a duration from the environment, else def.
func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

// Scenario 9: a rescan that cannot finish within rescan_timeout. Many held
// connections (NETPROCBEAT_TORTURE_CONNS, default 16000, i.e. 32000
// sockets across four helpers whose fd limit is raised to the hard limit)
// and rescan_timeout: 150ms. No Run may block longer than rescan_timeout
// plus a slack for this shared machine (NETPROCBEAT_TORTURE_SLACK, default
// 350ms), and every sampled connection must resolve eventually.
func TestS09RescanTimeout(t *testing.T) {
	conns := envInt("NETPROCBEAT_TORTURE_CONNS", 16000)
	const budget = 150 * time.Millisecond
	slack := envDuration("NETPROCBEAT_TORTURE_SLACK", 350*time.Millisecond)
	trackers(t, func(t *testing.T, tracker string) {
		type pair struct {
			client, server int
			local, remote  netip.AddrPort
		}
		var pairs []pair
		setup := time.Now()
		for i := 0; i < 2; i++ {
			s := startHelper(t, fmt.Sprintf("server%d", i), "")
			s.do("nofile")
			ls := s.do("listen 127.0.0.1:0")
			s.do("acceptloop %d", ls.ID)
			c := startHelper(t, fmt.Sprintf("client%d", i), "")
			if lim := c.do("nofile").N; lim < conns/2+100 {
				t.Skipf("open-files hard limit %d is too low for %d connections per helper", lim, conns/2)
			}
			for _, l := range c.do("dialmany %s %d", ls.Local, conns/2).Locals {
				pairs = append(pairs, pair{c.pid, s.pid, ap(l), ap(ls.Local)})
			}
			waitAccepted(t, s, ls.ID, conns/2)
		}
		t.Logf("%d connections (%d sockets) held after %v", len(pairs), 2*len(pairs), time.Since(setup).Round(time.Millisecond))

		p := newProcessor(t, tracker, "rescan_timeout: 150ms")
		sample := make([]pair, 0, 50)
		for _, i := range rand.Perm(len(pairs))[:50] {
			sample = append(sample, pairs[i])
		}
		var maxTook time.Duration
		var slow []string
		srcT, dstT := newTally(), newTally()
		resolved := make([]bool, len(sample))
		left := len(sample)
		start := time.Now()
		deadline := start.Add(60 * time.Second)
		runs := 0
		for left > 0 && time.Now().Before(deadline) {
			for i, s := range sample {
				if resolved[i] || time.Now().After(deadline) {
					continue
				}
				sp, dp, took := lookup(t, p, s.local, s.remote, time.Now())
				runs++
				if took > maxTook {
					maxTook = took
				}
				if took > budget+slack && len(slow) < 10 {
					slow = append(slow, fmt.Sprintf("+%v Run took %v", time.Since(start).Round(time.Millisecond), took.Round(time.Millisecond)))
				}
				srcT.add(sp, []int{s.client}, "client end")
				dstT.add(dp, []int{s.server}, "server end")
				if sp == s.client && dp == s.server {
					resolved[i] = true
					left--
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("%d Runs, slowest %v (budget %v + slack %v); %d of %d sampled connections resolved in %v",
			runs, maxTook.Round(time.Millisecond), budget, slack, len(sample)-left, len(sample), time.Since(start).Round(time.Millisecond))
		srcT.requireNoWrong(t, "client ends")
		dstT.requireNoWrong(t, "server ends")
		if len(slow) > 0 {
			t.Errorf("Runs blocked longer than rescan_timeout %v + %v slack:\n  %s", budget, slack, fmt.Sprint(slow))
		}
		if left > 0 {
			t.Errorf("%d of %d sampled connections never resolved within 60s", left, len(sample))
		}
	})
}
