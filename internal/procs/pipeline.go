package procs

// The order of the answer sources (docs/add_network_process.md, "How
// sockets are resolved"), as one function. Every step that finds an owner
// puts it through the gate (gate.go); finish is the only place that counts
// a lookup's end, writes the negative cache and requests a rescan.

import (
	"time"
)

// lookup answers q: the owner of its local endpoint, or nil, and how it
// was found.
func (w *Watcher) lookup(q *query) (*Process, Via) {
	q.snap = w.firstSnapshot(q)
	if !w.isLocal(q.snap, q.local.Addr()) {
		w.stats.notLocal.Add(1)
		return nil, ViaNone
	}
	if w.fromContainer(q) { // the event's container's namespace
		return w.finish(q)
	}
	if w.fromSnapshot(q) { // exact tuple, listener, endpoint
		return w.finish(q)
	}
	if w.fromLearned(q) { // connections the exact lookup found since
		return w.finish(q)
	}
	if w.neg.valid(q.tuple(), q.now, q.snap.gen) { // a miss not worth asking again
		w.stats.negativeHits.Add(1)
		return nil, ViaNone
	}
	if w.fromSources(q) { // tracker records, the kernel's exact lookup
		return w.finish(q)
	}
	if w.fromListener(q) { // the listener, for a connection no source knows
		return w.finish(q)
	}
	if w.fromConntrack(q) { // the socket behind a NAT
		return w.finish(q)
	}
	if w.settledMiss(q) { // nothing a rescan could add
		return w.finish(q)
	}
	w.afterRescan(q) // one coalesced, rate-limited rescan
	return w.finish(q)
}

// finish ends a lookup: it counts the answer or the miss (and its reason),
// keeps a miss in the negative cache as the outcome says, and asks for a
// rescan when the answer came from a stale snapshot, an owner failed its
// verification (outside event-driven mode, where the feed and the exact
// lookup find a socket's new holder), or a miss refused an owner that
// forked since the walk that found it (its snapshot rows answer nothing
// until a rescan; an answer found another way needs none).
func (w *Watcher) finish(q *query) (*Process, Via) {
	o := &q.out
	if o.p != nil {
		w.stats.hits.Add(1)
		switch o.hit {
		case hitLearned:
			w.stats.learnedHits.Add(1)
		case hitResolve:
			w.stats.resolveHits.Add(1)
		case hitTracker:
			w.stats.trackerHits.Add(1)
		case hitNAT:
			w.stats.natHits.Add(1)
		}
		if q.snap.stale.Load() || q.notHeld && !w.eventDriven {
			w.requestRescan()
		}
		return o.p, o.via
	}
	if o.neg.ttl > 0 && q.why != unansweredStartedAfter {
		// A refusal by event time is about this event, not the tuple:
		// the negative cache, keyed by tuple, does not keep it.
		w.neg.put(q.tuple(), q.now.Add(o.neg.ttl), o.neg.gen, o.neg.confirmed)
	}
	if q.forked || q.notHeld && !w.eventDriven {
		w.requestRescan()
	}
	w.unanswered(o.why)
	return nil, ViaNone
}

// firstSnapshot is the snapshot to read: before the first rescan lands,
// addresses bound only in the socket table are not known to be local yet,
// so the lookup waits for it like a miss.
func (w *Watcher) firstSnapshot(q *query) *snapshot {
	snap := w.snap.Load()
	if snap.gen == 0 {
		if fresh := w.awaitRescan(snap, q.now, q.deadline()); fresh != nil {
			return fresh
		}
	}
	return snap
}

// unanswered is why a local lookup ended without an answer by rule rather
// than for want of data.
type unanswered uint8

const (
	unansweredNone unanswered = iota
	unansweredVerifyFailed
	unansweredAmbiguous
	unansweredStartedAfter
	unansweredNAT          // conntrack showed the tuple translated; no owner of the translated tuple was found
	unansweredNATUnchecked // a listener matched, but conntrack could not be asked whether the tuple was translated
)

// unanswered counts a miss and its reason.
func (w *Watcher) unanswered(why unanswered) {
	w.stats.misses.Add(1)
	switch why {
	case unansweredVerifyFailed:
		w.stats.unansweredVerify.Add(1)
	case unansweredAmbiguous:
		w.stats.unansweredAmbiguous.Add(1)
	case unansweredStartedAfter:
		w.stats.unansweredStartedAfter.Add(1)
	case unansweredNAT:
		w.stats.unansweredNAT.Add(1)
	case unansweredNATUnchecked:
		w.stats.unansweredNATUnchecked.Add(1)
	}
}

// negFor is the usual negative-cache entry for a miss: NegativeTTL, bound
// to snapshot gen unless confirmed.
func (w *Watcher) negFor(gen uint64, confirmed bool) negWrite {
	return negWrite{ttl: w.cfg.NegativeTTL, gen: gen, confirmed: confirmed}
}

// feedMissTTL is how long a complete feed miss is remembered: one
// min_rescan_interval, as a miss deferred by the rate limit is in rescan
// mode. The tracker may have been behind the kernel (its lookup waits a
// bounded time), and a connection it records next must not stay hidden.
func (w *Watcher) feedMissTTL() time.Duration {
	return min(w.cfg.NegativeTTL, w.cfg.MinRescanInterval)
}
