package procs

// The steps of the pipeline that read the watcher's own view: the
// snapshot (its container namespaces included), the learned rows, and a
// fresh snapshot after a rescan. Each returns true when it ended the
// lookup (q.out holds the outcome), or records in q why it found nothing
// to give.

// fromContainer answers from the event's container's own namespace, so
// that its 127.0.0.1 is not taken for the host's. A row there that several
// processes could be meant by ends the lookup without an answer: the
// host's view cannot tell either.
func (w *Watcher) fromContainer(q *query) bool {
	if q.container == "" {
		return false
	}
	sub, ns := q.snap.inContainer(q.container)
	if sub == nil {
		return false
	}
	q.netns = ns
	if !q.local.Addr().IsLoopback() && !sub.isLocal(q.local.Addr()) {
		return false
	}
	r, res, via := sub.find(q.t, q.local, q.remote)
	switch res {
	case foundAmbiguous:
		return q.miss(unansweredAmbiguous, negWrite{})
	case foundRow:
		p, v := w.admitRow(q, r, via, q.local.Port())
		if v == admitted {
			return q.answer(p, via, hitSnapshot)
		}
		q.refuse(v)
	}
	return false
}

// fromSnapshot answers from the snapshot's row for q: the connected socket
// of the exact tuple, else the listener of the local endpoint, else (for
// an unknown peer) the one connected socket at it.
func (w *Watcher) fromSnapshot(q *query) bool {
	r, res, via := q.snap.find(q.t, q.local, q.remote)
	q.res = res
	switch res {
	case foundAmbiguous:
		// The connection's own socket (exact lookup, records) may still
		// answer.
		q.why = unansweredAmbiguous
		return false
	case foundRow:
	default:
		return false
	}
	if via == ViaListener && q.t == TCP && q.remote.IsValid() && w.hasSources() {
		// A TCP connection is its own socket's: the listener that could
		// have accepted it is asked only after the sources that know the
		// connection itself (fromListener). A fork-per-connection server's
		// parent holds the listener alone; its children serve.
		q.listener, q.res = r, foundNone
		return false
	}
	return w.admitSnapshotRow(q, r, via)
}

// fromListener answers a TCP connection that no source knows with the
// listener fromSnapshot held back.
func (w *Watcher) fromListener(q *query) bool {
	if q.listener == nil {
		return false
	}
	return w.admitSnapshotRow(q, q.listener, ViaListener)
}

// admitSnapshotRow is fromSnapshot's admission of the row r found through
// via.
func (w *Watcher) admitSnapshotRow(q *query, r *row, via Via) bool {
	p, v := w.admitRow(q, r, via, q.local.Port())
	switch v {
	case admitted:
		return q.answer(p, via, hitSnapshot)
	case refusedTranslated:
		return w.natAnswer(q)
	case refusedNATUnchecked:
		return q.miss(unansweredNATUnchecked, negWrite{})
	case refusedStartedAfter:
		// The socket's owner started after the event: the socket is not
		// the event's. A record of an older connection on this tuple (the
		// tracker's) may still answer; a rescan would not.
		q.res = foundUnowned
	case refusedNotHeld:
		q.res = foundNone
	}
	q.refuse(v)
	return false
}

// fromLearned answers from a connection the exact lookup found since the
// snapshot; one whose owner no longer holds it is dropped.
func (w *Watcher) fromLearned(q *query) bool {
	if q.res != foundNone || !q.remote.IsValid() {
		return false
	}
	k := connKeyOf(q.t, q.local, q.remote)
	lr := w.learned.get(k)
	if lr == nil {
		return false
	}
	p, v := w.admitRow(q, lr, ViaResolve, q.local.Port())
	switch v {
	case admitted:
		return q.answer(p, ViaResolve, hitLearned)
	case refusedStartedAfter:
		q.res = foundUnowned
	case refusedOtherLoopback:
		// Another namespace's: kept for events placed in it.
	default:
		w.learned.drop(k, lr)
		if w.resolve != nil {
			w.resolve.forget(q.t, q.local, q.remote)
		}
	}
	q.refuse(v)
	return false
}

// settledMiss ends a lookup that a rescan could not help: the feed had no
// record of the tuple while it missed nothing since the snapshot (no
// socket with it was opened since), or the snapshot's row for it exists
// and nobody holds it (TIME_WAIT, orphaned).
func (w *Watcher) settledMiss(q *query) bool {
	if q.feedCovered && q.noRecord {
		w.stats.feedMisses.Add(1)
		return q.miss(q.why, negWrite{ttl: w.feedMissTTL(), gen: q.snap.gen, confirmed: true})
	}
	if q.res == foundUnowned && !q.snap.stale.Load() {
		return q.miss(q.why, w.negFor(q.snap.gen, true))
	}
	return false
}

// afterRescan waits for one coalesced, rate-limited rescan (no later than
// q's deadline) and answers from it; a miss deferred by the rate limit is
// remembered until the scheduled rescan lands.
func (w *Watcher) afterRescan(q *query) bool {
	fresh := w.awaitRescan(q.snap, q.now, q.deadline())
	if fresh == nil {
		return q.miss(q.why, w.negFor(q.snap.gen, false))
	}
	q.snap = fresh
	if q.netns == 0 && w.fromContainer(q) {
		// The event's container, placed by this rescan.
		return true
	}
	if w.isLocal(fresh, q.local.Addr()) {
		r, res, via := fresh.find(q.t, q.local, q.remote)
		switch res {
		case foundRow:
			// A translated tuple was answered, or not, on the way here:
			// the NAT gate's refusal is final now.
			p, v := w.admitRow(q, r, via, q.local.Port())
			if v == admitted {
				return q.answer(p, via, hitSnapshot)
			}
			q.refuse(v)
		case foundAmbiguous:
			q.why = unansweredAmbiguous
		}
	}
	return q.miss(q.why, w.negFor(fresh.gen, true))
}
