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
	sock, minimal, live, ok, noRecord := w.ask(q)
	q.noRecord = noRecord
	if !ok || sock.PID <= 0 {
		return false
	}
	if !live && sock.Listen {
		// A record's owner found through a listener (the tracker's) is a
		// listener answer.
		p, v, decided := w.admitListenerRecord(q, &sock)
		switch {
		case !decided:
			return false
		case v != admitted:
			q.refuse(v)
			return false
		}
		return q.answer(p, recordVia(&sock), hitTracker)
	}
	p := w.describe(sock, minimal)
	if p == nil {
		return false
	}
	if !live {
		p, v := w.admitRecord(q, &sock, p, minimal)
		if v != admitted {
			q.refuse(v)
			return false
		}
		return q.answer(p, recordVia(&sock), hitTracker)
	}
	var ver uint64
	if c := w.cfg.Changes; c != nil {
		// Read before the verification, as heldNow does.
		ver = uint64(c.PortEpoch(q.t, q.local.Port()))<<32 | uint64(c.ProcEpoch(sock.PID))
	}
	p, v := w.admitSocket(q, &sock, p)
	if v != admitted {
		if v == refusedNotHeld {
			w.resolve.forget(q.t, q.local, q.remote)
		}
		q.refuse(v)
		return false
	}
	if q.remote.IsValid() && w.pins != nil {
		w.learn(&sock, p, q.t, q.local, q.remote, ver)
	}
	if q.t == TCP {
		w.handsOff.served(q.snap, q.local, sock.PID)
	}
	return q.answer(p, ViaResolve, hitResolve)
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
