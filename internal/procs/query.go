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
	// at is the event's time (zero: now); now is when the lookup began;
	// deadline bounds every wait of every source (the tracker's catch-up,
	// the exact lookup, conntrack's rescan, a rescan).
	at, now, deadline time.Time

	snap *snapshot // the snapshot the lookup reads
	key  tupleKey  // the negative cache's key

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
	// listener: the snapshot's listener for a TCP connection, held back
	// until the sources that know the connection itself have been asked.
	listener *row
	// natLocal, natRemote: the translated tuple, when the NAT gate refused
	// a match for q's own (refusedTranslated).
	natLocal, natRemote netip.AddrPort
}

// newQuery unmaps the event's endpoints (an IPv4-mapped IPv6 address and
// its IPv4 form are one endpoint).
func newQuery(deadline, at time.Time, container string, t Transport, local, remote netip.AddrPort) query {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	if remote.IsValid() {
		remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	}
	return query{
		t: t, local: local, remote: remote, container: container,
		at: at, now: time.Now(), deadline: deadline,
		key: tupleKey{t, local, remote},
	}
}

// refuse records why an owner found was not given; the last refusal is
// the one counted if the lookup ends without an answer.
func (q *query) refuse(v verdict) {
	q.why = v.why()
	if v == refusedNotHeld {
		q.notHeld = true
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

// answer is an outcome that names p.
func answer(p *Process, via Via, hit hitSource) outcome {
	return outcome{p: p, via: via, hit: hit}
}

// miss is an outcome without an answer, for reason why.
func miss(why unanswered, neg negWrite) outcome {
	return outcome{why: why, neg: neg}
}
