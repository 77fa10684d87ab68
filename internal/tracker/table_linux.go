//go:build linux

package tracker

// The user-space table: records by protocol, namespace and tuple, their
// expiry and eviction, and lookups across namespaces.

import (
	"net/netip"
	"slices"
	"time"
)

// deleteLocked removes the record of k.
func (t *Tracker) deleteLocked(k key) {
	delete(t.table, k)
	if t.nsRefs[k.netns]--; t.nsRefs[k.netns] <= 0 {
		delete(t.nsRefs, k.netns)
	}
}

func (t *Tracker) expireLoop() {
	defer t.wg.Done()
	period := min(max(t.opts.Retention/4, 50*time.Millisecond), 5*time.Second)
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.mu.Lock()
			t.expireLocked(t.now())
			t.mu.Unlock()
		}
	}
}

// expireLocked removes closed TCP records older than Retention and UDP
// records not announced for Retention past the refresh window.
func (t *Tracker) expireLocked(now time.Time) {
	for k, r := range t.table {
		if t.expiredAt(k, &r, now) {
			t.deleteLocked(k)
			t.expired.Add(1)
		}
	}
}

func (t *Tracker) expiredAt(k key, r *Record, now time.Time) bool {
	if !r.Closed.IsZero() {
		return now.Sub(r.Closed) > t.opts.Retention
	}
	if k.proto == UDP {
		return now.Sub(r.Seen) > t.opts.Retention+udpRefresh
	}
	return false
}

// evictLocked drops the least recently seen eighth of the table.
func (t *Tracker) evictLocked() {
	type aged struct {
		k    key
		seen time.Time
	}
	all := make([]aged, 0, len(t.table))
	for k, r := range t.table {
		all = append(all, aged{k, r.Seen})
	}
	slices.SortFunc(all, func(a, b aged) int { return a.seen.Compare(b.seen) })
	n := max(len(all)/8, 1)
	for _, a := range all[:n] {
		t.deleteLocked(a.k)
	}
	t.evicted.Add(uint64(n))
}

// Lookup returns the owner of the socket with the given transport, local and
// remote endpoints, as seen from this host. Addresses may be IPv4-mapped.
// It tries the exact tuple, then the local endpoint alone (an unconnected
// UDP socket or a TCP listener), then the wildcard address at the local
// port. Records of closed connections are returned until their retention
// expires; Record.Closed tells them apart. A tuple recorded in several
// network namespaces resolves to the tracker's own namespace's record, else
// to the one owner all the others agree on, else to nothing (counted in
// Stats.Ambiguous): a wrong owner is worse than none.
func (t *Tracker) Lookup(proto Proto, local, remote netip.AddrPort) (Record, bool) {
	local = unmap(local)
	remote = unmap(remote)
	now := t.now()
	t.mu.RLock()
	defer t.mu.RUnlock()
	try := func(k key) (Record, bool) {
		var found Record
		n := 0
		for ns := range t.nsRefs {
			k.netns = ns
			r, ok := t.table[k]
			if !ok || t.expiredAt(k, &r, now) {
				continue
			}
			if ns == t.ownNS && t.ownNS != 0 {
				return r, true
			}
			switch {
			case n == 0:
				found, n = r, 1
			case n > 0 && (r.PID != found.PID || r.StartBoottime != found.StartBoottime):
				n = -1 // owners disagree; the own namespace may still answer
			}
		}
		if n < 0 {
			t.ambiguous.Add(1)
			return Record{}, false
		}
		return found, n > 0
	}
	if r, ok := try(key{proto: proto, local: local, remote: remote}); ok {
		return r, true
	}
	if proto == TCP {
		// Only a connection-less record (a listener) may answer for a
		// TCP connection, and only while it listens: once closed, its port
		// is free for any process's ephemeral connections, and a retained
		// listener record would name the old owner for them.
		if r, ok := t.listenerLocked(proto, local, try); ok && r.Source == SourceListen && r.Closed.IsZero() {
			r.Source = SourceListener
			return r, true
		}
		return Record{}, false
	}
	return t.listenerLocked(proto, local, try)
}

func (t *Tracker) listenerLocked(proto Proto, local netip.AddrPort, try func(key) (Record, bool)) (Record, bool) {
	if r, ok := try(key{proto: proto, local: local}); ok {
		return r, true
	}
	for _, any := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		if local.Addr().Is6() && any.Is4() {
			continue
		}
		if r, ok := try(key{proto: proto, local: netip.AddrPortFrom(any, local.Port())}); ok {
			return r, true
		}
	}
	return Record{}, false
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}
