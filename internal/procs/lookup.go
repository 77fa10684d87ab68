package procs

// Answering a lookup, in this order: the snapshot under the answer rules
// (verify.go), the negative cache, the fallback owner sources, then one
// coalesced, rate-limited rescan.

import (
	"net/netip"
	"time"
)

// Lookup is LookupAt for an event happening now.
func (w *Watcher) Lookup(t Transport, local, remote netip.AddrPort) *Process {
	return w.LookupAt(time.Time{}, t, local, remote)
}

// LookupAt is LookupVia without saying how the answer was found.
func (w *Watcher) LookupAt(at time.Time, t Transport, local, remote netip.AddrPort) *Process {
	p, _ := w.LookupVia(at, t, local, remote)
	return p
}

// LookupVia returns the process that owns the local endpoint local talking
// to remote (remote may be the zero AddrPort when unknown) for an event
// that happened at at (zero for now), or nil, and how it was found. An
// answer is given only under the rules of docs/add_network_process.md,
// "When an answer is given": a socket-table answer is verified (or its
// verification reused while Config.Changes proves nothing changed), a
// listener shared by several processes answers nothing, a listener or
// endpoint match is not given for a tuple that conntrack shows translated
// (the translated tuple's socket answers instead: nat.go), and no process
// that started after at is named. Remote endpoints and cached answers cost
// no allocation; a miss may wait for one coalesced, rate-limited rescan, at
// most RescanTimeout.
func (w *Watcher) LookupVia(at time.Time, t Transport, local, remote netip.AddrPort) (*Process, Via) {
	return w.LookupBy(time.Now().Add(w.cfg.RescanTimeout), at, t, local, remote)
}

// LookupBy is LookupVia waiting no later than deadline in all (for the
// exact lookup, the tracker and a rescan). The two lookups of one event
// share one deadline, their start plus RescanTimeout, so that an event
// waits no longer than RescanTimeout whatever each side needs.
func (w *Watcher) LookupBy(deadline, at time.Time, t Transport, local, remote netip.AddrPort) (*Process, Via) {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	if remote.IsValid() {
		remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	}
	snap := w.snap.Load()
	if snap.gen == 0 {
		// Before the first rescan lands, addresses bound only in the socket
		// table are not known to be local yet: wait for it like a miss.
		if fresh := w.awaitRescan(snap, time.Now(), deadline); fresh != nil {
			snap = fresh
		}
	}
	if !w.isLocal(snap, local.Addr()) {
		w.stats.notLocal.Add(1)
		return nil, ViaNone
	}
	var why unanswered
	r, res, via := snap.find(t, local, remote)
	if res == foundRow && via != ViaSocket && w.nat != nil {
		// A listener (or endpoint) match is no proof for a translated
		// tuple: with dockerd --userland-proxy=false, dockerd holds a
		// placeholder listener on a published port whose connections are
		// DNATed to a container. The translated tuple's socket wins.
		switch tl, tr, st := w.nat.translate(t, local, remote); st {
		case natTranslated:
			return w.natAnswer(snap, at, t, tl, tr, deadline)
		case natUnchecked:
			return w.unanswered(unansweredNATUnchecked), ViaNone
		}
	}
	if res == foundNone && remote.IsValid() {
		// A connection the exact lookup found since the snapshot.
		if lr := w.learned.get(connKeyOf(t, local, remote)); lr != nil {
			switch p, ok := w.check(lr, at, t, local.Port()); ok {
			case answerOK:
				w.stats.hits.Add(1)
				w.stats.learnedHits.Add(1)
				return p, ViaResolve
			case answerStartedAfter:
				why, res = unansweredStartedAfter, foundUnowned
			default:
				// As for a snapshot row: while the socket lives only the
				// exact lookup may name its holder (recall's afterFailure).
				w.learned.drop(connKeyOf(t, local, remote), lr)
				if rs, isResolve := w.cfg.Fallback.(*resolveSource); isResolve {
					rs.forget(t, local, remote)
				}
				why = unansweredVerifyFailed
			}
		}
	}
	if res == foundRow {
		switch p, ok := w.check(r, at, t, local.Port()); ok {
		case answerOK:
			w.stats.hits.Add(1)
			if snap.stale.Load() {
				w.requestRescan()
			}
			return p, via
		case answerStartedAfter:
			// The socket's owner started after the event: the socket is
			// not the event's. A record of an older connection on this
			// tuple (the tracker's) may still answer; a rescan would not.
			why, res = unansweredStartedAfter, foundUnowned
		default:
			// Dropped from use: the exact paths below may still answer.
			why, res = unansweredVerifyFailed, foundNone
		}
	}
	if res == foundAmbiguous {
		why = unansweredAmbiguous
	}
	// The negative cache comes first: a tuple in it was already put to
	// Fallback (which may cost a sock_diag query or a wait for the tracker's
	// ring), so a storm of misses for it costs a map probe each.
	key := tupleKey{t, local, remote}
	now := time.Now()
	// The slow path below (the fallback sources, then a rescan) waits no
	// later than the deadline in all.
	until := deadline
	if w.neg.valid(key, now, snap.gen) {
		w.stats.negativeHits.Add(1)
		return nil, ViaNone
	}
	feedMiss := false
	if w.cfg.Fallback != nil {
		// Event-driven mode: while the feed has missed nothing since the
		// snapshot, a TCP tuple it has no record of had no socket opened
		// since, so the kernel's exact lookup is not asked for it. Not
		// UDP: the tracker records a UDP socket at its first send or
		// receive, and an event may be about a datagram its socket has
		// not read yet (or about a socket that is only bound).
		covered := t == TCP && remote.IsValid() && w.feedCovers(snap)
		p, v, rwhy, noRecord := w.recall(snap, t, local, remote, at, why == unansweredVerifyFailed, covered, until)
		// No socket with this tuple was opened since the snapshot (the
		// feed would have a record of it) and the snapshot has none that
		// answers: a rescan would find nothing more. Conntrack is still
		// asked below: the tuple may be a NAT's outside, which no socket
		// and no record has.
		feedMiss = p == nil && noRecord && covered
		if p != nil {
			w.stats.hits.Add(1)
			if v == ViaResolve {
				w.stats.resolveHits.Add(1)
			} else {
				w.stats.trackerHits.Add(1)
			}
			return p, v
		}
		if rwhy != 0 {
			why = rwhy
		}
	}
	if w.nat != nil {
		// No socket has the event's tuple: it may be a NAT's outside.
		if tl, tr, st := w.nat.translate(t, local, remote); st == natTranslated {
			p, v := w.natAnswer(snap, at, t, tl, tr, until)
			if p == nil {
				w.neg.put(key, now.Add(w.cfg.NegativeTTL), w.snap.Load().gen, true)
			}
			return p, v
		}
	}
	if feedMiss {
		// Remembered for one min_rescan_interval, as a miss deferred by
		// the rate limit is in rescan mode: the tracker may have been
		// behind the kernel (its lookup waits a bounded time), and a
		// connection it records next must not stay hidden.
		w.stats.feedMisses.Add(1)
		w.neg.put(key, now.Add(min(w.cfg.NegativeTTL, w.cfg.MinRescanInterval)), snap.gen, true)
		return w.unanswered(why), ViaNone
	}
	if res == foundUnowned && !snap.stale.Load() {
		// The row exists and nobody holds it (TIME_WAIT, orphaned); a
		// rescan would not change that.
		w.neg.put(key, now.Add(w.cfg.NegativeTTL), snap.gen, true)
		return w.unanswered(why), ViaNone
	}
	fresh := w.awaitRescan(snap, now, until)
	if fresh == nil {
		// Rate-limited: remember the miss until the scheduled rescan lands.
		w.neg.put(key, now.Add(w.cfg.NegativeTTL), snap.gen, false)
		return w.unanswered(why), ViaNone
	}
	if w.isLocal(fresh, local.Addr()) {
		r, res, via = fresh.find(t, local, remote)
		switch res {
		case foundRow:
			if via != ViaSocket && w.nat != nil {
				// As above: a listener or endpoint match is not given for
				// a tuple conntrack shows translated, nor when conntrack
				// could not be asked (a translated tuple was answered, or
				// not, on the miss path above; this is a cached ask).
				if _, _, st := w.nat.translate(t, local, remote); st == natTranslated {
					why = unansweredNAT
					break
				} else if st == natUnchecked {
					why = unansweredNATUnchecked
					break
				}
			}
			switch p, ok := w.check(r, at, t, local.Port()); ok {
			case answerOK:
				w.stats.hits.Add(1)
				return p, via
			case answerStartedAfter:
				why = unansweredStartedAfter
			default:
				why = unansweredVerifyFailed
			}
		case foundAmbiguous:
			why = unansweredAmbiguous
		}
	}
	w.neg.put(key, now.Add(w.cfg.NegativeTTL), fresh.gen, true)
	return w.unanswered(why), ViaNone
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

// unanswered counts a miss and its reason, and returns nil.
func (w *Watcher) unanswered(why unanswered) *Process {
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
	return nil
}

// recall asks Fallback for an owner the snapshot does not know, describing
// it through the engine while it lives and from Fallback's minimal record
// once it has exited. Descriptions are cached by identity (PID + start).
// via is ViaResolve for an answer read from the kernel's current socket
// table (the resolve source), verified like a snapshot row, and ViaTracker
// or ViaTrackerClosed for one from a record of the past. why says why an owner found was not given.
// afterFailure: the snapshot's owner of this socket failed its verification,
// so while the socket lives only the exact lookup may answer (MODEL rule 1).
func (w *Watcher) recall(snap *snapshot, t Transport, local, remote netip.AddrPort, at time.Time, afterFailure, recordsOnly bool, until time.Time) (*Process, Via, unanswered, bool) {
	p, live, closed, why, noRecord := w.recallOwner(snap, t, local, remote, at, afterFailure, recordsOnly, until)
	switch {
	case p == nil:
		return nil, ViaNone, why, noRecord
	case live:
		return p, ViaResolve, 0, false
	case closed:
		return p, ViaTrackerClosed, 0, false
	}
	return p, ViaTracker, 0, false
}

// recallOwner is recall's search; live reports an answer read from the
// kernel's current socket table, closed one from a record of a socket
// already closed. A live answer is kept as a learned row (feed.go).
//
// noRecord reports that Fallback's records (the feed's) have nothing for
// the tuple; the other results are then zero. recordsOnly: the engine is
// not asked for a tuple the records do not have (feedCovers).
func (w *Watcher) recallOwner(snap *snapshot, t Transport, local, remote netip.AddrPort, at time.Time, afterFailure, recordsOnly bool, until time.Time) (p *Process, live, closed bool, why unanswered, noRecord bool) {
	var sock Socket
	var minimal *Process
	var ok bool
	if rs, isResolve := w.cfg.Fallback.(*resolveSource); isResolve {
		sock, minimal, live, ok, noRecord = rs.recall(t, local, remote, at, afterFailure, recordsOnly, until)
	} else if !afterFailure {
		var complete bool
		sock, minimal, ok, complete = recallFeed(w.cfg.Fallback, t, local, remote, at)
		noRecord = !ok && complete
	}
	if !ok || sock.PID <= 0 {
		return nil, false, false, 0, noRecord
	}
	if !live && sock.Listen {
		// A record's owner found through a listener (the tracker's) is a
		// listener answer: it is given only as the socket table's own
		// listener answer would be (rule 2), one owner, IPV6_V6ONLY
		// respected, and verified. A record cannot tell those; a listener
		// the snapshot does not know yet is found by the rescan below.
		r, res := snap.listenerFor(t, local)
		switch {
		case res == foundAmbiguous:
			return nil, false, false, unansweredAmbiguous, false
		case res != foundRow || r.p.PID != sock.PID || r.p.StartKey != sock.StartKey:
			return nil, false, false, 0, false
		}
		switch p, ok := w.check(r, at, t, local.Port()); ok {
		case answerOK:
			return p, false, !sock.Recorded, 0, false
		case answerStartedAfter:
			return nil, false, false, unansweredStartedAfter, false
		default:
			return nil, false, false, unansweredVerifyFailed, false
		}
	}
	p = w.describe(sock, minimal)
	if p == nil {
		return nil, false, false, 0, false
	}
	if live {
		var ver uint64
		if c := w.cfg.Changes; c != nil {
			// Read before the verification, as check does.
			ver = uint64(c.PortEpoch(t, local.Port()))<<32 | uint64(c.ProcEpoch(sock.PID))
		}
		var res answerResult
		switch p, res = w.checkSocket(&sock, p, at); res {
		case answerStartedAfter:
			return nil, false, false, unansweredStartedAfter, false
		case answerVerifyFailed:
			if rs, isResolve := w.cfg.Fallback.(*resolveSource); isResolve {
				rs.forget(t, local, remote)
			}
			return nil, false, false, unansweredVerifyFailed, false
		}
		if remote.IsValid() && w.pins != nil {
			w.learn(&sock, p, t, local, remote, ver)
		}
	} else if startedAfter(p, at) {
		return nil, false, false, unansweredStartedAfter, false
	} else if p != minimal && w.pins != nil {
		// A record of a process that still runs: it is described as the
		// program it runs now (one statx), not as it ran when described.
		// An exe that does not read (the main thread exited; the record
		// names no thread) leaves the description as it is.
		if exec, alive := w.pins.execOf(procKey{sock.PID, sock.StartKey}); alive && exec != (ExecID{}) && exec != p.exec {
			if p = w.redescribe(procKey{sock.PID, sock.StartKey}, exec); p == nil {
				return nil, false, false, unansweredVerifyFailed, false
			}
		}
	}
	return p, live, !live && !sock.Recorded, 0, false
}

// describe returns the cached or freshly read description of sock's owner,
// or minimal when it has exited (nil if there is none).
func (w *Watcher) describe(sock Socket, minimal *Process) *Process {
	k := procKey{sock.PID, sock.StartKey}
	now := time.Now()
	w.recalledMu.Lock()
	c, ok := w.recalled[k]
	w.recalledMu.Unlock()
	if ok && c.p != nil && now.Sub(c.loaded) < w.cfg.ProcessTTL {
		return c.p
	}
	p, err := w.engine.Process(sock.PID, sock.StartKey)
	if err != nil {
		if minimal == nil {
			return nil
		}
		p = minimal // exited (or recycled): what Fallback saw is all there is
	}
	w.recalledMu.Lock()
	if len(w.recalled) >= recalledCacheSize {
		clear(w.recalled)
	}
	w.recalled[k] = &cachedProc{p: p, loaded: now, exec: p.exec}
	w.recalledMu.Unlock()
	return p
}

// recalledCacheSize caps descriptions of Fallback owners; short-lived clients
// come and go, so the cache is simply dropped when full.
const recalledCacheSize = 4096

// LookupInContainer is LookupInContainerVia without saying how the answer
// was found.
func (w *Watcher) LookupInContainer(containerID string, at time.Time, t Transport, local, remote netip.AddrPort) *Process {
	p, _ := w.LookupInContainerVia(containerID, at, t, local, remote)
	return p
}

// LookupInContainerVia is LookupVia for an event that names the container
// it belongs to: the container's network namespace is searched first, so
// its 127.0.0.1 is not taken for the host's. Without an answer there (or
// for an unknown container) it is LookupVia.
func (w *Watcher) LookupInContainerVia(containerID string, at time.Time, t Transport, local, remote netip.AddrPort) (*Process, Via) {
	return w.LookupInContainerBy(time.Now().Add(w.cfg.RescanTimeout), containerID, at, t, local, remote)
}

// LookupInContainerBy is LookupInContainerVia waiting no later than
// deadline (see LookupBy).
func (w *Watcher) LookupInContainerBy(deadline time.Time, containerID string, at time.Time, t Transport, local, remote netip.AddrPort) (*Process, Via) {
	if sub := w.snap.Load().inContainer(containerID); sub != nil {
		l := netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		r := remote
		if r.IsValid() {
			r = netip.AddrPortFrom(r.Addr().Unmap(), r.Port())
		}
		if l.Addr().IsLoopback() || sub.isLocal(l.Addr()) {
			if row, res, via := sub.find(t, l, r); res == foundRow {
				if p, ok := w.check(row, at, t, l.Port()); ok == answerOK {
					w.stats.hits.Add(1)
					return p, via
				}
			}
		}
	}
	return w.LookupBy(deadline, at, t, local, remote)
}

func (w *Watcher) isLocal(s *snapshot, a netip.Addr) bool {
	if a.IsLoopback() || s.isLocal(a) {
		return true
	}
	if m := w.addrs.Load(); m != nil {
		_, ok := (*m)[a]
		return ok
	}
	return false
}
