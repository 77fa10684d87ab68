//go:build linux

package tracker

// The user-space table: records by protocol, namespace and tuple, their
// expiry and eviction, and lookups across namespaces.

import (
	"net/netip"
	"slices"
	"time"
)

// historyLen is how many records the table keeps per key: a reused tuple
// keeps its older connections, so that a late event finds its own.
const historyLen = 4

// EventTimeSlack is the tolerance of LookupAt's time comparisons: event
// times may come from another clock reading (a log's timestamp, a beat's
// read time) than the kernel's.
const EventTimeSlack = 100 * time.Millisecond

// exitCloseWindow: a TCP socket whose close follows its owner's exit by at
// most this was closed by the exit (a one-shot client that exits right
// after writing); a later close was someone else's who held it meanwhile.
const exitCloseWindow = 100 * time.Millisecond

// pushLocked appends r to the history of k, dropping the oldest record
// past historyLen and making room under MaxEntries.
func (t *Tracker) pushLocked(k key, r Record, now time.Time) {
	h, ok := t.table[k]
	if len(h) >= historyLen {
		copy(h, h[1:])
		h = h[:len(h)-1]
		t.nrec--
	} else if t.nrec >= t.opts.MaxEntries {
		t.expireLocked(now)
		if t.nrec >= t.opts.MaxEntries {
			t.evictLocked()
		}
		h, ok = t.table[k]
	}
	if !ok {
		t.nsRefs[k.netns]++
	}
	t.table[k] = append(h, r)
	t.nrec++
}

// deleteLocked removes the history of k.
func (t *Tracker) deleteLocked(k key) {
	t.nrec -= len(t.table[k])
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
			t.refreshBootWall()
			// A gap is dated by the first reading that shows it: read
			// the counter every tick, so that one dates it closely.
			t.gapMu.Lock()
			t.readGapsLocked()
			t.gapMu.Unlock()
			t.mu.Lock()
			t.applyExitsLocked()
			t.expireLocked(t.now())
			t.mu.Unlock()
		}
	}
}

// applyExitsLocked ends the open records of exited processes at their
// exit, and forgets exits older than Retention.
func (t *Tracker) applyExitsLocked() {
	if len(t.exits) == 0 {
		return
	}
	for _, h := range t.table {
		for i := range h {
			if r := &h[i]; r.Closed.IsZero() {
				if x, ok := t.exits[owner{r.PID, r.StartBoottime}]; ok {
					r.Closed = x
				}
			}
		}
	}
	now := t.now()
	for o, x := range t.exits {
		if now.Sub(x) > t.opts.Retention {
			delete(t.exits, o)
		}
	}
}

// expireLocked removes closed records older than Retention and UDP records
// not announced for Retention past the refresh window.
func (t *Tracker) expireLocked(now time.Time) {
	for k, h := range t.table {
		kept := h[:0]
		for i := range h {
			if !t.expiredAt(k, &h[i], now) {
				kept = append(kept, h[i])
			}
		}
		if n := len(h) - len(kept); n > 0 {
			t.expired.Add(uint64(n))
			if len(kept) == 0 {
				t.deleteLocked(k)
				continue
			}
			clear(h[len(kept):])
			t.table[k] = kept
			t.nrec -= n
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

// evictLocked drops the histories seen least recently until an eighth of
// the records are gone.
func (t *Tracker) evictLocked() {
	type aged struct {
		k    key
		seen time.Time
	}
	all := make([]aged, 0, len(t.table))
	for k, h := range t.table {
		all = append(all, aged{k, h[len(h)-1].Seen})
	}
	slices.SortFunc(all, func(a, b aged) int { return a.seen.Compare(b.seen) })
	goal := t.nrec - max(t.nrec/8, 1)
	n := 0
	for _, a := range all {
		if t.nrec <= goal {
			break
		}
		n += len(t.table[a.k])
		t.deleteLocked(a.k)
	}
	t.evicted.Add(uint64(n))
}

// pick returns the record of history h that covers time at (see LookupAt),
// newest first. complete tells that every event submitted before at has
// been applied to the table.
func (t *Tracker) pick(k key, h []Record, at, now time.Time, complete bool) (Record, bool) {
	late := at.Add(EventTimeSlack)
	for i := len(h) - 1; i >= 0; i-- {
		r := &h[i]
		if r.Closed.IsZero() && len(t.exits) > 0 {
			// Its owner may have exited since (applyExitsLocked has not
			// run yet): the tenure ended then.
			if x, ok := t.exits[owner{r.PID, r.StartBoottime}]; ok {
				c := *r
				c.Closed = x
				r = &c
			}
		}
		if t.expiredAt(k, r, now) || r.Start.After(late) || r.Opened.After(late) {
			// Gone, or a process or connection newer than the event: an
			// older record may be the event's.
			continue
		}
		if k.proto == TCP && !r.Closed.IsZero() && !r.sockClosed && at.After(r.Closed) {
			// The owner's tenure ended before the event (it exited, or
			// the socket changed hands) while the TCP socket lived on (its
			// close is an event of its own): the event may be about the
			// next holder's use, so no slack. A UDP socket has no close
			// event, so its owner's exit is the best sign of its close.
			return Record{}, false
		}
		if !r.Closed.IsZero() && at.After(r.Closed.Add(EventTimeSlack)) {
			// Closed before the event, and every older record earlier
			// still: the event's connection is not recorded, unless the
			// event was stamped after its data arrived (a beat stamps an
			// event when it reads it) and the records prove that nobody
			// used the tuple since the close (quietSince).
			if r.sockClosed && complete && i == len(h)-1 && t.soleOwner(k, h, r, now) && t.quietSince(k, r, at, now) {
				return *r, true
			}
			return Record{}, false
		}
		if at.Before(r.Opened) && i > 0 {
			// Covered only through the slack: if the previous record, of
			// another owner, covers the event exactly, it is a toss-up.
			o := &h[i-1]
			if !sameOwner(o, r) && !t.expiredAt(k, o, now) && !o.Opened.After(at) && !o.Start.After(late) &&
				(o.Closed.IsZero() || !at.After(o.Closed)) {
				return Record{}, false
			}
		}
		return *r, true
	}
	return Record{}, false
}

// quietSince tells whether the records prove that no socket used tuple k
// between since, the close of its newest record, and at, the event's time;
// the caller has shown that the table holds every event submitted before
// at and that k's closed record r is its newest (since is r.Closed). Every
// TCP connect of the tuple and every accept() that returned it would have
// left a record on k (in whichever namespace), and a local peer's connect
// to an accepted tuple a record on the mirrored tuple, kept at least as
// long as the closed record itself: so there must be no connection of the
// tuple in another namespace open in [since, at], for an accepted r none
// of the mirrored tuple opened after since, and no event
// may have been lost, skipped or evicted since (gapFreeSince). A listener
// on the local endpoint opened after since means the port changed hands:
// nothing is proven. One open before (the server that accepted r) accepts
// through accept(), which records, unless the host accepts through
// io_uring, which leaves no record: once an io_uring accept was seen, any
// listener open in [since, at] leaves nothing proven. The caller holds
// t.mu.
func (t *Tracker) quietSince(k key, r *Record, at, now time.Time) bool {
	since := r.Closed
	usedIn := func(kk key) bool {
		for i := range t.table[kk] {
			o := &t.table[kk][i]
			if !t.expiredAt(kk, o, now) && !o.Opened.After(at.Add(EventTimeSlack)) && (o.Closed.IsZero() || !o.Closed.Before(since)) {
				return true
			}
		}
		return false
	}
	openedAfter := func(kk key) bool {
		for i := range t.table[kk] {
			if o := &t.table[kk][i]; !t.expiredAt(kk, o, now) && o.Opened.After(since) {
				return true
			}
		}
		return false
	}
	uring := t.uringAccepts()
	ends := []netip.AddrPort{k.local, netip.AddrPortFrom(netip.IPv6Unspecified(), k.local.Port())}
	if k.local.Addr().Is4() {
		ends = append(ends, netip.AddrPortFrom(netip.IPv4Unspecified(), k.local.Port()))
	}
	for ns := range t.nsRefs {
		if ns != k.netns && usedIn(key{k.proto, ns, k.local, k.remote}) {
			return false
		}
		if r.Source == SourceAccept && openedAfter(key{k.proto, ns, k.remote, k.local}) {
			return false
		}
		for _, e := range ends {
			le := key{proto: k.proto, netns: ns, local: e}
			if uring && usedIn(le) || openedAfter(le) {
				return false
			}
		}
	}
	return t.gapFreeSince(since, at)
}

// uringAccepts reports whether an accept through io_uring has been seen
// since the tracker started (sticky: read from the kernel until it is).
func (t *Tracker) uringAccepts() bool {
	if t.uringAccepted.Load() {
		return true
	}
	if t.objs.UringAccepts == nil {
		return false // a table without a kernel (tests)
	}
	var n uint64
	if err := t.objs.UringAccepts.Lookup(uint32(0), &n); err != nil || n > 0 {
		// Unreadable: assume the worst.
		t.uringAccepted.Store(true)
		return true
	}
	return false
}

// gapFreeSince tells whether the feed's gap counter (Gaps: events dropped,
// socket-state program runs skipped, records evicted) cannot have moved
// between since and at. A change is only seen when the counter is read:
// gapAt is the reading that first showed the current value, so every gap
// counted happened before it. Reading the counter costs two system calls,
// so a reading taken after at is reused.
func (t *Tracker) gapFreeSince(since, at time.Time) bool {
	t.gapMu.Lock()
	defer t.gapMu.Unlock()
	if t.gapReadAt.IsZero() || t.gapReadAt.Before(at) {
		t.readGapsLocked()
	}
	return t.gapAt.Before(since)
}

// readGapsLocked reads the gap counter now; the caller holds gapMu.
func (t *Tracker) readGapsLocked() {
	now := t.now()
	if g := t.gapsNow(); g != t.gapVal || t.gapReadAt.IsZero() {
		if g != t.gapVal {
			t.gapAt = now
		}
		t.gapVal = g
	}
	t.gapReadAt = now
}

// gapsNow is Gaps, or for a table without a kernel (tests) its evictions.
func (t *Tracker) gapsNow() uint64 {
	if t.objs.Stats == nil {
		return t.evicted.Load()
	}
	return t.Gaps()
}

// soleOwner tells whether every unexpired record of history h has r's owner.
func (t *Tracker) soleOwner(k key, h []Record, r *Record, now time.Time) bool {
	for i := range h {
		if !t.expiredAt(k, &h[i], now) && !sameOwner(&h[i], r) {
			return false
		}
	}
	return true
}

// Lookup is LookupAt at the current time without waiting for the reader:
// what the table says now.
func (t *Tracker) Lookup(proto Proto, local, remote netip.AddrPort) (Record, bool) {
	return t.lookupAt(proto, local, remote, t.now(), false)
}

// lookupAt returns the owner at time at of the socket with the given
// transport, local and remote endpoints, as seen from this host. Addresses
// may be IPv4-mapped. It tries the exact tuple, then the local endpoint
// alone (an unconnected UDP socket or a TCP listener), then the wildcard
// address at the local port; in each, the record whose lifetime covers at
// (pick). A tuple recorded in several network namespaces resolves to the
// tracker's own namespace's record, else to the one owner all the others
// agree on, else to nothing (counted in Stats.Ambiguous): a wrong owner is
// worse than none.
func (t *Tracker) lookupAt(proto Proto, local, remote netip.AddrPort, at time.Time, complete bool) (Record, bool) {
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
			r, ok := t.pick(k, t.table[k], at, now, complete)
			if !ok {
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
