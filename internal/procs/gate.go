package procs

// The gate: every owner a source finds — a snapshot or learned row, the
// kernel's exact lookup, a tracker record, the socket behind a NAT —
// becomes an answer only through admitRow, admitSocket or admitRecord,
// which apply the rules of docs/add_network_process.md, "When an answer is
// given", in the docs' order:
//
//  1. One owner. A socket several processes hold (Socket.Shared: a
//     pre-forked server's listener, a connection inherited across fork),
//     a listener endpoint held by sockets of several processes, or a key
//     that several foreign namespaces share (row.multi) answers nothing;
//     nor does a TCP listener whose connections another process was seen
//     holding (handsoff.go: a fork-per-connection server) for an event
//     that names a peer; nor does a socket of another network namespace
//     on a loopback address, unless the event's container placed the
//     event in that namespace (otherLoopback); nor, with a fork clock, a
//     socket whose owner forked since the walk that found it alone
//     (forkedSince: the child may hold it too).
//  2. NAT. A listener or endpoint match is not given for a tuple that
//     conntrack shows translated (the translated tuple's socket is asked
//     instead), nor when conntrack could not be asked.
//  3. Event time. No process that started after the event (plus
//     EventTimeSlack) is named.
//  4. Held now. A socket-table owner still holds the socket when the
//     answer is given: verified through a pinned handle, or proven
//     unchanged by the change counters since it was. A record of a socket
//     still open yields to the kernel's current holder (sources.go).
//  5. Described now. The description is of the program the process runs
//     now and was read no longer than process_cache_ttl ago.

import (
	"time"
)

// EventTimeSlack allows for clock granularity when comparing a process's
// start with an event's time: no answer names a process that started later
// than the event plus this.
const EventTimeSlack = 100 * time.Millisecond

// verdict is the gate's word on one candidate.
type verdict uint8

const (
	admitted             verdict = iota
	refusedShared                // rule 1
	refusedOtherLoopback         // rule 1: another namespace's loopback
	refusedForked                // rule 1: the owner forked since its walk
	refusedTranslated            // rule 2: ask the socket of q.natLocal ↔ q.natRemote
	refusedNATUnchecked          // rule 2: conntrack could not be asked
	refusedStartedAfter          // rule 3
	refusedNotHeld               // rule 4 (or its description could not be read)
)

// why is the reason a refusal is counted under.
func (v verdict) why() unanswered {
	switch v {
	case refusedShared, refusedOtherLoopback, refusedForked:
		return unansweredAmbiguous
	case refusedTranslated:
		return unansweredNAT
	case refusedNATUnchecked:
		return unansweredNATUnchecked
	case refusedStartedAfter:
		return unansweredStartedAfter
	case refusedNotHeld:
		return unansweredVerifyFailed
	}
	return unansweredNone
}

// admitRow applies the rules to a row found for q's local port port (q's
// own, or the translated tuple's for a NAT answer) through via.
func (w *Watcher) admitRow(q *query, r *row, via Via, port uint16) (*Process, verdict) {
	if q.otherLoopback(r.netns, r.foreign) {
		return nil, refusedOtherLoopback
	}
	if w.forkedSince(r.p.PID, r.forkSeq) {
		return nil, refusedForked
	}
	if r.multi || via == ViaListener && q.t == TCP && q.remote.IsValid() && w.handsOff.has(procKey{r.p.PID, r.p.StartKey}) {
		return nil, refusedShared
	}
	if via == ViaListener || via == ViaEndpoint {
		if v := w.natGate(q); v != admitted {
			return nil, v
		}
	}
	if startedAfter(r.p, q.at) {
		return nil, refusedStartedAfter
	}
	p, ok := w.heldNow(r, q.t, port)
	if !ok {
		return nil, refusedNotHeld
	}
	if fresh := w.describedNow(q.now, p); fresh != p {
		if fresh == nil {
			return nil, refusedNotHeld
		}
		r.cur.Store(fresh)
		p = fresh
	}
	return p, admitted
}

// admitSocket applies the rules to an owner the kernel's exact lookup
// found (no row: every such answer costs one verification); p describes
// s's owner.
func (w *Watcher) admitSocket(q *query, s *Socket, p *Process) (*Process, verdict) {
	if s.Shared {
		return nil, refusedShared
	}
	if q.otherLoopback(s.NetNS, w.foreignNS(s)) {
		return nil, refusedOtherLoopback
	}
	if w.forkedSince(s.PID, s.forkSeq) {
		return nil, refusedForked
	}
	if startedAfter(p, q.at) {
		return nil, refusedStartedAfter
	}
	if w.pins != nil {
		w.stats.verifications.Add(1)
		ok, exec := w.pins.holds(nil, procKey{s.PID, s.StartKey}, s.Task, s.FD, s.Inode)
		if !ok {
			w.stats.verifyFailures.Add(1)
			return nil, refusedNotHeld
		}
		if exec != p.exec {
			p = w.redescribe(procKey{s.PID, s.StartKey}, exec)
		}
	}
	if p != nil {
		p = w.describedNow(q.now, p)
	}
	if p == nil {
		return nil, refusedNotHeld
	}
	return p, admitted
}

// admitRecord applies the rules to an owner from a record of the past (the
// tracker's) of a socket that is closed or that the kernel could not be
// asked about: p describes it (minimal, when it has exited). A record of
// a listener is a listener answer and is given only as the snapshot's own
// would be (admitListenerRecord).
func (w *Watcher) admitRecord(q *query, s *Socket, p, minimal *Process) (*Process, verdict) {
	if q.otherLoopback(s.NetNS, w.foreignNS(s)) {
		return nil, refusedOtherLoopback
	}
	if q.t == TCP && q.remote.IsValid() {
		// The accepter of a fork-per-connection server is not who served
		// the connection (rule 1, handsoff.go).
		if w.handsOff.has(procKey{s.PID, s.StartKey}) {
			return nil, refusedShared
		}
	}
	if startedAfter(p, q.at) {
		return nil, refusedStartedAfter
	}
	if p == minimal || w.pins == nil {
		return p, admitted // exited: what the record saw is all there is
	}
	// A process that still runs is described as the program it runs now
	// (one statx), not as it ran when described. An exe that does not
	// read (the main thread exited; the record names no thread) leaves
	// the description as it is.
	k := procKey{s.PID, s.StartKey}
	if exec, alive := w.pins.execOf(k); alive && exec != (ExecID{}) && exec != p.exec {
		if p = w.redescribe(k, exec); p == nil {
			return nil, refusedNotHeld
		}
	}
	if p = w.describedNow(q.now, p); p == nil {
		return nil, refusedNotHeld
	}
	return p, admitted
}

// admitListenerRecord admits a record whose owner was found through a
// listener (the tracker's): only when the snapshot's listener for q is one
// socket of that same process, admitted like any listener row. A listener
// the snapshot does not know yet is found by a rescan.
func (w *Watcher) admitListenerRecord(q *query, s *Socket) (*Process, verdict, bool) {
	r, res := q.snap.listenerFor(q.t, q.local)
	switch {
	case res == foundAmbiguous:
		return nil, refusedShared, true
	case res != foundRow || r.p.PID != s.PID || r.p.StartKey != s.StartKey:
		return nil, admitted, false
	}
	p, v := w.admitRow(q, r, ViaListener, q.local.Port())
	return p, v, true
}

// otherLoopback is rule 1 for namespaces: every network namespace has its
// own loopback, so an event the lookup did not place in a namespace (no
// container context) is taken for the host's, and a loopback socket of
// another namespace is not its socket. A namespace the watcher has not
// read yet may hold the same endpoint; which one was meant is unknown.
func (q *query) otherLoopback(netns uint64, foreign bool) bool {
	return foreign && q.local.Addr().IsLoopback() && (q.netns == 0 || q.netns != netns)
}

// foreignNS tells whether s is in a namespace other than the host's: as
// its source says, or from its namespace when the source gave only that
// (the tracker's records).
func (w *Watcher) foreignNS(s *Socket) bool {
	if s.Foreign || s.NetNS == 0 || w.hostNS == nil {
		return s.Foreign
	}
	host := w.hostNS.hostNetNS()
	return host != 0 && s.NetNS != host
}

// forkSeq reads the fork clock (0 without one), before a walk.
func (w *Watcher) forkSeq() uint32 {
	if w.forks == nil {
		return 0
	}
	return w.forks.ForkSeq()
}

// forkedSince is rule 1 for forks: pid forked a new process after the walk
// that read the fork clock as seq, so its child may hold the socket the
// walk found pid alone holding. Without a fork clock nothing is known
// (docs/add_network_process.md, "Limits").
func (w *Watcher) forkedSince(pid int, seq uint32) bool {
	if w.forks == nil {
		return false
	}
	return int32(w.forks.LastFork(pid)-seq) > 0
}

// natGate is rule 2 for q's own tuple.
func (w *Watcher) natGate(q *query) verdict {
	if w.nat == nil {
		return admitted
	}
	switch l, r, st := w.nat.translate(q.t, q.local, q.remote); st {
	case natTranslated:
		q.natLocal, q.natRemote = l, r
		return refusedTranslated
	case natUnchecked:
		return refusedNATUnchecked
	}
	return admitted
}

// heldNow is rule 4 for a row: it returns the description to answer with
// (the row's, or a fresh one when the process has exec'd another program
// since it was described), and false when the owner no longer holds the
// socket.
func (w *Watcher) heldNow(r *row, t Transport, port uint16) (*Process, bool) {
	if w.pins == nil {
		return r.desc(), true // the engine cannot verify (Windows): its table is the answer
	}
	st := r.state.Load()
	if st == rowFailed {
		return nil, false
	}
	var ver uint64
	c := w.cfg.Changes
	if c != nil {
		// An exec bumps ProcEpoch: an unchanged reading also proves the
		// description is still the program's. The description is loaded
		// after ver: a verification stores its description before its
		// reading, so a reading that matches comes with that description.
		ver = uint64(c.PortEpoch(t, port))<<32 | uint64(c.ProcEpoch(r.p.PID))
		if st == rowVerified && r.ver.Load() == ver {
			return r.desc(), true
		}
	}
	p := r.desc()
	w.stats.verifications.Add(1)
	ok, exec := w.pins.holds(&r.pin, procKey{p.PID, p.StartKey}, r.task, r.fd, r.inode)
	if !ok {
		r.state.Store(rowFailed)
		w.stats.verifyFailures.Add(1)
		return nil, false
	}
	if exec != p.exec {
		// Same process instance, another program: the row's description
		// is stale. The socket is still held: answer with the program's
		// description as it is now, or not at all.
		fresh := w.redescribe(procKey{p.PID, p.StartKey}, exec)
		if fresh == nil {
			return nil, false
		}
		r.cur.Store(fresh)
		p = fresh
	}
	if c != nil {
		r.ver.Store(ver)
		r.state.CompareAndSwap(rowUnverified, rowVerified)
	}
	return p, true
}

// describedNow is rule 5's age bound: p itself while it was read less than
// ProcessTTL before now, else a description read again (shared through the
// recalled-owner cache), nil if the process cannot be described any more.
// A process changes its user (setuid), name (prctl) and arguments without
// an exec, which nothing else shows.
func (w *Watcher) describedNow(now time.Time, p *Process) *Process {
	if p.described == 0 || now.UnixNano()-p.described < int64(w.cfg.ProcessTTL) {
		// Fresh, or no engine read it (a record's minimal description of
		// a process that has exited: there is nothing to read again).
		return p
	}
	return w.reread(procKey{p.PID, p.StartKey}, now)
}

// startedAfter reports whether p started after an event at at (plus
// slack). A zero at is now, which every running process started before;
// a zero start is unknown.
func startedAfter(p *Process, at time.Time) bool {
	return !at.IsZero() && !p.Start.IsZero() && p.Start.After(at.Add(EventTimeSlack))
}
