package procs

import (
	"net/netip"
	"time"
)

// query is one lookup: what the event names, the bounds it runs under, and
// what the steps of the pipeline (pipeline.go) have learnt on the way.
type query struct {
	t             Transport
	local, remote netip.AddrPort // unmapped; remote invalid when unknown
	container     string         // the event's container, "" for none
	// netns is the network namespace of the event's container, once the
	// snapshot has placed it (0: not placed; the event is the host's).
	netns uint64
	// at is the event's time (zero: now); now is when the lookup began
	// (the caller's reading of the clock, shared by an event's two sides).
	// No source waits past now + rescanTimeout (deadline).
	at, now       time.Time
	rescanTimeout time.Duration

	snap *snapshot // the snapshot the lookup reads

	// res is what the snapshot said of the tuple; why is the rule that
	// refused an owner found so far (unansweredNone: none did).
	res findResult
	why unanswered
	// notHeld: the snapshot's or a learned row's owner no longer holds the
	// socket, so while the socket lives only the kernel's exact lookup may
	// name its holder (sources.go).
	notHeld bool
	// noRecord: the feed has no record of the tuple although it had caught
	// up (feedCovered: while it missed nothing since the snapshot), so no
	// socket with it was opened since the snapshot.
	noRecord, feedCovered bool
	// forked: an owner was refused because it forked since its walk; the
	// snapshot's rows of it stay refused until a rescan.
	forked bool
	// listener: the snapshot's listener for a TCP connection, held back
	// until the sources that know the connection itself have been asked.
	listener *row
	// natLocal, natRemote: the translated tuple, when the NAT gate refused
	// a match for q's own (refusedTranslated).
	natLocal, natRemote netip.AddrPort

	// out is how the step that ended the lookup ended it (finish).
	out outcome
}

// newQuery is the query of a lookup that started at now; it unmaps the
// event's endpoints (an IPv4-mapped IPv6 address and its IPv4 form are one
// endpoint).
func (w *Watcher) newQuery(q *query, now, at time.Time, container string, t Transport, local, remote netip.AddrPort) {
	q.t, q.container, q.at, q.now, q.rescanTimeout = t, container, at, now, w.cfg.RescanTimeout
	q.local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	if remote.IsValid() {
		q.remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	}
}

// deadline bounds every wait of every source (the tracker's catch-up, the
// exact lookup, conntrack's rescan, a rescan).
func (q *query) deadline() time.Time { return q.now.Add(q.rescanTimeout) }

// tuple is the negative cache's key.
func (q *query) tuple() tupleKey { return tupleKey{q.t, q.local, q.remote} }

// refuse records why an owner found was not given; the last refusal is
// the one counted if the lookup ends without an answer.
func (q *query) refuse(v verdict) {
	q.why = v.why()
	switch v {
	case refusedNotHeld:
		q.notHeld = true
	case refusedForked:
		// While the socket lives only a new walk (the kernel's exact
		// lookup, a rescan) tells who holds it now.
		q.notHeld, q.forked = true, true
	}
}

// outcome is how a step ended a lookup: an answer (p, via, hit: the counter
// of its source), or a miss with its reason and what the negative cache
// keeps of it.
type outcome struct {
	p   *Process
	via Via
	why unanswered
	hit hitSource
	neg negWrite
}

// hitSource names the counter an answer is counted under, besides hits.
type hitSource uint8

const (
	hitSnapshot hitSource = iota
	hitLearned
	hitResolve
	hitTracker
	hitNAT
)

// negWrite is what the negative cache keeps of a miss: nothing (ttl 0), or
// the tuple until now+ttl, valid for snapshot generation gen only unless
// confirmed (a fresh rescan did not find it).
type negWrite struct {
	ttl       time.Duration
	gen       uint64
	confirmed bool
}

// answer ends the lookup naming p; it returns true (a step's "ended").
func (q *query) answer(p *Process, via Via, hit hitSource) bool {
	q.out = outcome{p: p, via: via, hit: hit}
	return true
}

// miss ends the lookup without an answer, for reason why.
func (q *query) miss(why unanswered, neg negWrite) bool {
	q.out = outcome{why: why, neg: neg}
	return true
}
