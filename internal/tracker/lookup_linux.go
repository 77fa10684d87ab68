//go:build linux

package tracker

// Answering for an event: catch up with the kernel's events before the
// event's time, then pick the record that covers it (table_linux.go).

import (
	"net/netip"
	"time"
)

// LookupSync is LookupAt for an event happening now.
func (t *Tracker) LookupSync(proto Proto, local, remote netip.AddrPort) (Record, bool) {
	return t.LookupAt(proto, local, remote, time.Time{})
}

// LookupAt returns the owner, at time at, of the socket with the given
// transport and endpoints (zero at: now): the record whose lifetime
// [Opened, Closed] covers at, give or take EventTimeSlack. Before it
// decides, every event the kernel submitted before at (or before the call,
// if that is earlier) is applied to the table: a newer connection on the
// tuple may still be in the ring buffer. If the reader cannot catch up
// within syncTimeout, only an open record may answer (a closed one is
// counted in Stats.Unsure). It never returns
//   - a record opened after at + slack, or closed before at - slack (the
//     event is about a connection not recorded: nothing is returned),
//     except the tuple's newest record, closed by its owner, while the
//     records prove that nobody used the tuple since (quietSince): a beat
//     stamps an event when it reads it, after a one-shot client closed;
//   - a closed record when a newer record of the tuple covers at;
//   - a record whose process started after at + slack.
func (t *Tracker) LookupAt(proto Proto, local, remote netip.AddrPort, at time.Time) (Record, bool) {
	return t.LookupBy(time.Time{}, proto, local, remote, at)
}

// LookupBy is LookupAt waiting for the reader no later than deadline (zero:
// the default wait, syncTimeout).
func (t *Tracker) LookupBy(deadline time.Time, proto Proto, local, remote netip.AddrPort, at time.Time) (Record, bool) {
	t.life.RLock()
	defer t.life.RUnlock()
	if t.closed.Load() {
		return Record{}, false
	}
	now := t.now()
	if at.IsZero() || at.After(now) {
		at = now
	}
	complete := t.caughtUp(at) || t.sync(at, waitFor(deadline))
	r, ok := t.lookupAt(proto, local, remote, at, complete)
	if ok && !complete && !r.Closed.IsZero() {
		t.unsure.Add(1)
		return Record{}, false
	}
	return r, ok
}

// syncTimeout bounds how long a lookup waits for the reader. The reader
// catches up within a millisecond on an idle machine; on one whose cores
// are busy with other work it may not run for tens of milliseconds (a
// one-shot client test beside two CPU-bound processes saw waits of 20 to
// 150 ms). A lookup the tracker cannot answer goes on to a rescan, which
// costs an event far longer, so the wait is generous; the caller's
// deadline still bounds it.
const syncTimeout = 250 * time.Millisecond

// waitFor is how long a lookup with deadline may wait for the reader: until
// the deadline, never longer than syncTimeout; nothing once it has passed.
func waitFor(deadline time.Time) time.Duration {
	if deadline.IsZero() {
		return syncTimeout
	}
	return max(0, min(syncTimeout, time.Until(deadline)))
}

// caughtUp tells whether every event submitted before at has been applied
// to the table: the reader emptied the ring after at, or the ring is empty
// now and the reader is not applying an event. Two or three atomic loads.
func (t *Tracker) caughtUp(at time.Time) bool {
	if t.rd == nil {
		return true // a table without a kernel (tests)
	}
	if t.drainedAt.Load() > at.UnixNano() {
		return true
	}
	return t.rd.AvailableBytes() == 0 && !t.handling.Load()
}

// sync makes the reader consume the events already in the ring and waits
// until it has applied everything submitted before at (at most the call's
// time), at most timeout. It reports whether it got there. A reader pass
// that began after at suffices, even one that began before the call.
func (t *Tracker) sync(at time.Time, timeout time.Duration) bool {
	if now := time.Now(); at.After(now) {
		at = now
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		if t.caughtUp(at) {
			return true
		}
		t.drainMu.Lock()
		ch := t.drained
		t.drainMu.Unlock()
		if t.drainedAt.Load() > at.UnixNano() {
			return true
		}
		if err := t.rd.Flush(); err != nil {
			return false
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		case <-t.stop:
			return false
		}
	}
}
