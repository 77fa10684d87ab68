//go:build linux

package tracker

import (
	"net/netip"
	"time"
)

// Gaps counts what the tracker may have missed of sockets being opened and
// closed, for a consumer that keeps a view of the host's sockets from the
// tracker's records instead of rescanning (procs' event-driven mode): while
// it does not change, every TCP connect, accept, listen and close since the
// tracker started is in the table (or expired from it after Retention). It
// adds events the kernel dropped because the ring buffer was full, runs of
// the socket-state program (inet_sock_set_state) the kernel skipped because
// another BPF program was running on the CPU, and records evicted by
// MaxEntries. Skipped runs of the send and receive programs are not
// counted: they run on every message, are skipped far more often on a busy
// host, and cost at most a first-I/O attribution (a UDP socket's owner, an
// accepted connection's worker), which leaves a lookup unanswered or
// answered from the kernel's current holder, never wrong. Two system calls.
func (t *Tracker) Gaps() uint64 {
	var n uint64
	var lost []uint64
	if err := t.objs.Stats.Lookup(uint32(0), &lost); err == nil {
		for _, v := range lost {
			n += v
		}
	}
	if ps, err := t.objs.InetSockSetState.Stats(); err == nil {
		n += ps.RecursionMisses
	}
	return n + t.evicted.Load()
}

// LookupComplete is LookupAt (and must stay so) that also reports whether
// a miss is complete: every event the kernel submitted before at (or
// before the call) had been applied to the table when it answered, and the
// table holds no record of the tuple, nor of its local endpoint alone, at
// any time. A miss that is not complete is no proof that no socket had the
// tuple: the reader was behind the kernel by more than LookupAt waits for
// it, or a record exists that did not cover at (an event time read from
// another clock, a retention boundary).
func (t *Tracker) LookupComplete(proto Proto, local, remote netip.AddrPort, at time.Time) (r Record, ok, complete bool) {
	return t.LookupCompleteBy(time.Time{}, proto, local, remote, at)
}

// LookupCompleteBy is LookupComplete waiting for the reader no later than
// deadline (zero: the default wait, syncTimeout), so that the caller's
// bound on one event's lookups holds here too.
func (t *Tracker) LookupCompleteBy(deadline time.Time, proto Proto, local, remote netip.AddrPort, at time.Time) (r Record, ok, complete bool) {
	t.life.RLock()
	defer t.life.RUnlock()
	if t.closed.Load() {
		return Record{}, false, false
	}
	now := t.now()
	if at.IsZero() || at.After(now) {
		at = now
	}
	complete = t.caughtUp(at) || t.sync(at, waitFor(deadline))
	r, ok = t.lookupAt(proto, local, remote, at, complete)
	if ok && !complete && !r.Closed.IsZero() {
		t.unsure.Add(1)
		return Record{}, false, false
	}
	if !ok && complete {
		complete = !t.anyRecord(proto, local, remote)
	}
	return r, ok, complete
}

// anyRecord tells whether the table holds a record, of any time and in any
// namespace, of the tuple or of its local endpoint (a listener or an
// unconnected UDP socket), specific or wildcard.
func (t *Tracker) anyRecord(proto Proto, local, remote netip.AddrPort) bool {
	local, remote = unmap(local), unmap(remote)
	t.mu.RLock()
	defer t.mu.RUnlock()
	keys := []key{
		{proto: proto, local: local, remote: remote},
		{proto: proto, local: local},
		{proto: proto, local: netip.AddrPortFrom(netip.IPv6Unspecified(), local.Port())},
	}
	if local.Addr().Is4() {
		keys = append(keys, key{proto: proto, local: netip.AddrPortFrom(netip.IPv4Unspecified(), local.Port())})
	}
	for ns := range t.nsRefs {
		for _, k := range keys {
			k.netns = ns
			if len(t.table[k]) > 0 {
				return true
			}
		}
	}
	return false
}
