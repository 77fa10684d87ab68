package procs

// The steps of the pipeline that ask outside the watcher's view: the
// fallback owner sources (the eBPF tracker's records and the kernel's
// exact lookup of one connection, resolvesource.go) and conntrack (nat.go).

// fromSources asks the owner sources for q's tuple. An owner read from the
// kernel's current socket table (live) is verified like a row and kept as
// a learned row; one from a record of the past is described as its
// program runs now, or as the record saw it when it has exited.
func (w *Watcher) fromSources(q *query) bool {
	if !w.hasSources() {
		return false
	}
	q.feedCovered = q.t == TCP && q.remote.IsValid() && w.feedCovers(q.snap)
	ended, vanished := w.fromSourcesOnce(q)
	if vanished {
		// The kernel named a holder that was gone (closed, exited) before
		// it could be described or verified: a one-shot client that
		// exits right after writing. Ask once more with the kernel first
		// (q.notHeld): it no longer has the socket, and the tracker's
		// record of it, closed by now, may answer.
		ended, _ = w.fromSourcesOnce(q)
	}
	return ended
}

// fromSourcesOnce is one round of fromSources; vanished reports that the
// kernel's current holder could not be described or failed its
// verification (q.notHeld is set then).
func (w *Watcher) fromSourcesOnce(q *query) (ended, vanished bool) {
	sock, minimal, live, ok, noRecord := w.ask(q)
	q.noRecord = noRecord
	if !ok || sock.PID <= 0 {
		return false, false
	}
	if !live && sock.Listen {
		// A record's owner found through a listener (the tracker's) is a
		// listener answer.
		p, v, decided := w.admitListenerRecord(q, &sock)
		switch {
		case !decided:
			return false, false
		case v != admitted:
			q.refuse(v)
			return false, false
		}
		return q.answer(p, recordVia(&sock), hitTracker), false
	}
	p := w.describe(sock, minimal)
	if p == nil {
		if live {
			// The kernel's holder is gone: its remembered answer too.
			w.resolve.forget(q.t, q.local, q.remote)
			if !q.notHeld {
				q.notHeld = true
				return false, true
			}
		}
		return false, false
	}
	if !live {
		p, v := w.admitRecord(q, &sock, p, minimal)
		if v != admitted {
			q.refuse(v)
			return false, false
		}
		return q.answer(p, recordVia(&sock), hitTracker), false
	}
	var ver uint64
	if c := w.cfg.Changes; c != nil {
		// Read before the verification, as heldNow does.
		ver = uint64(c.PortEpoch(q.t, q.local.Port()))<<32 | uint64(c.ProcEpoch(sock.PID))
	}
	p, v := w.admitSocket(q, &sock, p)
	if v != admitted {
		retry := false
		if v == refusedNotHeld || v == refusedForked {
			// Remembered, or found by a walk the owner has forked since:
			// walk again.
			w.resolve.forget(q.t, q.local, q.remote)
			retry = !q.notHeld
		}
		q.refuse(v)
		return false, retry
	}
	if q.remote.IsValid() && w.pins != nil {
		w.learn(&sock, p, q.t, q.local, q.remote, ver)
	}
	if q.t == TCP {
		w.handsOff.served(q.snap, q.local, sock.PID)
	}
	return q.answer(p, ViaResolve, hitResolve), false
}

// hasSources reports whether there is an owner source to ask.
func (w *Watcher) hasSources() bool { return w.resolve != nil || w.records != nil }

// recordVia is how a record's answer was found: a socket the tracker saw
// no close of, or one already closed.
func recordVia(s *Socket) Via {
	if s.Recorded {
		return ViaTracker
	}
	return ViaTrackerClosed
}

// ask puts q to the owner sources. With the exact lookup (the resolve
// source) the kernel's current holder of a socket that lives comes first
// (see resolveSource.recall); after a failed verification (q.notHeld) only
// the kernel may name a live socket's holder, so records alone are not
// asked then. A lookup with a listener held back (fromSnapshot) has an
// answer to fall back on: its exact lookup takes from half the budget.
// noRecord: the feed had caught up and has no record of the tuple.
func (w *Watcher) ask(q *query) (sock Socket, minimal *Process, live, ok, noRecord bool) {
	if w.resolve != nil {
		return w.resolve.recall(q.t, q.local, q.remote, q.at, q.notHeld, q.listener != nil, q.deadline())
	}
	if q.notHeld {
		return Socket{}, nil, false, false, false
	}
	var complete bool
	sock, minimal, ok, complete = recallFeed(w.records, q.t, q.local, q.remote, q.at, q.deadline())
	return sock, minimal, false, ok, !ok && complete
}

// fromConntrack answers a tuple that no socket has and that conntrack
// shows translated (a NAT's outside tuple) with the translated tuple's
// socket.
func (w *Watcher) fromConntrack(q *query) bool {
	if w.natGate(q) != refusedTranslated {
		return false
	}
	w.natAnswer(q)
	if q.out.p == nil {
		q.out.neg = w.negFor(w.snap.Load().gen, true)
	}
	return true
}
