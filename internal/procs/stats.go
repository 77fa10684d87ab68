package procs

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elastic/elastic-agent-libs/logp"
)

// counters are updated with atomics on the lookup path.
type counters struct {
	notLocal, hits, misses, negativeHits  atomic.Uint64
	rescans, errors, waitTimeouts         atomic.Uint64
	trackerHits, resolveHits              atomic.Uint64
	lastRescanNanos, sockets, processes   atomic.Int64
	ambiguous, namespaces                 atomic.Int64
	verifications, verifyFailures         atomic.Uint64
	execChanges, rereads                  atomic.Uint64
	unansweredVerify                      atomic.Uint64
	unansweredAmbiguous                   atomic.Uint64
	unansweredStartedAfter                atomic.Uint64
	unansweredNAT, unansweredNATUnchecked atomic.Uint64
	natHits                               atomic.Uint64
	learnedHits, feedMisses               atomic.Uint64
}

// Stats is a point-in-time copy of a watcher's counters.
type Stats struct {
	Lookups      uint64 // every Lookup call
	NotLocal     uint64 // endpoints whose IP is not this host's
	Hits         uint64 // resolved to a process
	Misses       uint64 // local, but no owner found
	NegativeHits uint64 // misses answered from the unknown-tuple cache
	Rescans      uint64 // socket-table rescans started
	Errors       uint64 // engine errors (rescans or process reads that failed)
	WaitTimeouts uint64 // lookups that gave up waiting for a rescan
	// TrackerHits: hits answered by Config.Fallback's own records (the
	// eBPF tracker, for connections gone from the socket table).
	TrackerHits uint64
	// ResolveHits: hits answered by NewResolveSource's live sock_diag
	// lookup of the one connection, before the snapshot had it.
	ResolveHits uint64
	// Verifications: owner checks made with a system call (one readlinkat);
	// VerifyFailures: those that found the owner no longer holding the
	// socket (the row or cached answer is dropped and a rescan requested).
	Verifications  uint64
	VerifyFailures uint64
	// ExecChanges: verifications that found the owner still holding the
	// socket but running another program than its description (it
	// exec'd): the process was described again before answering.
	ExecChanges uint64
	// Misses left unanswered by rule rather than for want of data (each
	// also counts in Misses): the only owner found failed its verification
	// (UnansweredVerify), only a listener shared by several processes
	// matched (UnansweredAmbiguous), or the owner started after the event
	// (UnansweredStartedAfter).
	UnansweredVerify       uint64
	UnansweredAmbiguous    uint64
	UnansweredStartedAfter uint64
	// UnansweredNAT: conntrack showed the tuple translated and no owner of
	// the translated tuple's socket was found. UnansweredNATUnchecked: a
	// listener (or endpoint) matched, but conntrack could not be asked
	// whether the tuple was translated (query budget spent, or a query
	// failed), so the match was not given.
	UnansweredNAT          uint64
	UnansweredNATUnchecked uint64

	// NAT lookups (Config.NATLookup): conntrack queries made, tuples they
	// found translated, answers given through a translation (each also a
	// Hit), queries that failed, asks refused by the query budget, and
	// whether conntrack turned out unreadable (1: the lookup is off).
	NATQueries, NATTranslated, NATHits uint64
	NATErrors, NATBudgetExhausted      uint64
	NATUnavailable                     int64

	// LearnedHits: hits answered by a row the exact lookup found since
	// the last rescan (Learned rows are held now). FeedMisses: misses
	// answered "unknown" without a rescan because the SocketFeed had no
	// record of the tuple (EventDriven: the mode is on; feed.go).
	LearnedHits uint64
	FeedMisses  uint64
	Learned     int
	EventDriven bool

	LastRescan    time.Duration // duration of the last successful rescan
	Sockets       int64         // rows in the current snapshot
	Processes     int64         // processes cached (owners of current sockets)
	NegativeCache int           // entries in the unknown-tuple cache
	Ambiguous     int64         // endpoints shared across network namespaces with different owners (host won)
	Namespaces    int64         // network namespaces other than the host's with sockets
}

// Stats returns the current counters.
func (w *Watcher) Stats() Stats {
	st := Stats{
		// Every Lookup ends in exactly one of these; not counting lookups
		// separately saves an atomic add per lookup.
		Lookups:      w.stats.notLocal.Load() + w.stats.hits.Load() + w.stats.misses.Load() + w.stats.negativeHits.Load(),
		NotLocal:     w.stats.notLocal.Load(),
		Hits:         w.stats.hits.Load(),
		Misses:       w.stats.misses.Load(),
		NegativeHits: w.stats.negativeHits.Load(),
		Rescans:      w.stats.rescans.Load(),
		Errors:       w.stats.errors.Load(),
		WaitTimeouts: w.stats.waitTimeouts.Load(),
		TrackerHits:  w.stats.trackerHits.Load(),
		ResolveHits:  w.stats.resolveHits.Load(),

		Verifications:          w.stats.verifications.Load(),
		VerifyFailures:         w.stats.verifyFailures.Load(),
		ExecChanges:            w.stats.execChanges.Load(),
		UnansweredVerify:       w.stats.unansweredVerify.Load(),
		UnansweredAmbiguous:    w.stats.unansweredAmbiguous.Load(),
		UnansweredStartedAfter: w.stats.unansweredStartedAfter.Load(),
		UnansweredNAT:          w.stats.unansweredNAT.Load(),
		UnansweredNATUnchecked: w.stats.unansweredNATUnchecked.Load(),
		NATHits:                w.stats.natHits.Load(),
		LearnedHits:            w.stats.learnedHits.Load(),
		FeedMisses:             w.stats.feedMisses.Load(),
		Learned:                w.learned.len(),
		EventDriven:            w.eventDriven,

		LastRescan:    time.Duration(w.stats.lastRescanNanos.Load()),
		Sockets:       w.stats.sockets.Load(),
		Processes:     w.stats.processes.Load(),
		NegativeCache: w.neg.len(),
		Ambiguous:     w.stats.ambiguous.Load(),
		Namespaces:    w.stats.namespaces.Load(),
	}
	w.natStats(&st)
	return st
}

// natStats adds the NAT lookup's counters to st.
func (w *Watcher) natStats(st *Stats) {
	if w.nat == nil {
		return
	}
	st.NATQueries = w.nat.queries.Load()
	st.NATTranslated = w.nat.translated.Load()
	st.NATErrors = w.nat.errs.Load()
	st.NATBudgetExhausted = w.nat.budget.Load()
	if w.nat.off.Load() {
		st.NATUnavailable = 1
	}
}

// natWarn logs a conntrack failure: the one that turns the NAT lookup off
// once, others rate-limited.
func (w *Watcher) natWarn(err error) {
	if errors.Is(err, ErrConntrackUnavailable) {
		w.log.Warnf("NAT-aware lookups are off: %v. Events whose tuple was translated (published container ports, masqueraded connections) may be answered by a listener of the untranslated port or not at all; run with CAP_NET_ADMIN, or set nat_lookup: false to silence this", err)
		return
	}
	w.warn.log("conntrack", err)
}

// rateLimitedLog logs each kind of failure at most once per interval, and
// says how many were suppressed, so a broken /proc cannot flood the log.
type rateLimitedLog struct {
	logger   *logp.Logger
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
	dropped  map[string]int
}

func newRateLimitedLog(log *logp.Logger, interval time.Duration) *rateLimitedLog {
	return &rateLimitedLog{logger: log, interval: interval, last: map[string]time.Time{}, dropped: map[string]int{}}
}

func (r *rateLimitedLog) log(kind string, err error) {
	now := time.Now()
	r.mu.Lock()
	if last, ok := r.last[kind]; ok && now.Sub(last) < r.interval {
		r.dropped[kind]++
		r.mu.Unlock()
		return
	}
	n := r.dropped[kind]
	r.last[kind] = now
	r.dropped[kind] = 0
	r.mu.Unlock()
	if n > 0 {
		r.logger.Warnf("%v (%d similar errors suppressed in the last %v)", err, n, r.interval)
		return
	}
	r.logger.Warnf("%v", err)
}
