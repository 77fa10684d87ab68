//go:build linux

package tracker

// TEMPORARY instrumentation (issue 20 item 3): NETPROCBEAT_DEBUG_LOOKUP=1
// prints every TCP miss with what the table held.

import (
	"fmt"
	"net/netip"
	"os"
	"time"
)

var debugOut = func() *os.File {
	if p := os.Getenv("NETPROCBEAT_DEBUG_LOOKUP"); p != "" {
		f, _ := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		return f
	}
	return nil
}()

func (t *Tracker) debugMiss(proto Proto, local, remote netip.AddrPort, at, start time.Time, caught, complete bool, ok bool, r Record) {
	if debugOut == nil || proto != TCP {
		return
	}
	local, remote = unmap(local), unmap(remote)
	t.mu.RLock()
	var hs []string
	for ns := range t.nsRefs {
		for _, rec := range t.table[key{proto: proto, netns: ns, local: local, remote: remote}] {
			c := "open"
			if !rec.Closed.IsZero() {
				c = fmt.Sprintf("closed %+dms sock=%v", rec.Closed.Sub(at).Milliseconds(), rec.sockClosed)
			}
			hs = append(hs, fmt.Sprintf("{pid %d opened %+dms %s start %+dms}", rec.PID, rec.Opened.Sub(at).Milliseconds(), c, rec.Start.Sub(at).Milliseconds()))
		}
	}
	t.mu.RUnlock()
	fmt.Fprintf(debugOut, "TRKDBG miss %s->%s at=%s now-at=%dms wait=%v caught=%v complete=%v ok=%v closed=%v drainedAt-at=%dms avail=%d unsure=%d lost=%d hist=%v\n",
		local, remote, at.Format("15:04:05.000"), time.Since(at).Milliseconds(), time.Since(start).Round(time.Microsecond), caught, complete, ok, !r.Closed.IsZero(),
		(t.drainedAt.Load()-at.UnixNano())/1e6, t.rd.AvailableBytes(), t.unsure.Load(), t.Gaps(), hs)
}
