// Package procs answers "which local process owns this socket?" for network
// events. It descends from packetbeat's procs package: an OS engine behind an
// interface, wildcard-bind fallback, IPv4/IPv6. Unlike packetbeat's procs it never
// rescans /proc once per event: lookups read an immutable snapshot without
// locks, unknown tuples are cached as unknown, and rescans are coalesced and
// rate-limited; process identity is PID + start time, so a recycled PID is
// never reported.
package procs

import (
	"context"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elastic/elastic-agent-libs/logp"
)

// Config is the watcher's cache and refresh policy. Zero fields take the
// defaults of DefaultConfig.
type Config struct {
	// ProcessTTL is how long a process's details (args, cwd, user) are
	// reused before they are read again. Identity never expires: it is
	// checked on every rescan.
	ProcessTTL time.Duration
	// SocketTTL is the age after which a snapshot is stale: hits are still
	// answered from it, and a rescan is requested in the background.
	SocketTTL time.Duration
	// NegativeTTL is how long a local tuple that a fresh rescan did not find
	// is answered "unknown" without asking for another rescan.
	NegativeTTL time.Duration
	// MinRescanInterval bounds rescans to one per interval, whatever the
	// event rate (beats issues 25027, 37266).
	MinRescanInterval time.Duration
	// RescanTimeout is the budget of one rescan attempt; lookups waiting
	// for a rescan give up at its start plus RescanTimeout. An owner walk
	// cut short by it is resumed by the next rescan.
	RescanTimeout time.Duration
	// NegativeCacheSize caps the unknown-tuple cache.
	NegativeCacheSize int
	// Fallback, if set, is asked when the snapshot has no answer and the
	// negative cache does not hold the tuple, before a rescan. The watcher
	// closes it (if it is an io.Closer) on Close.
	Fallback OwnerSource
	// Changes, if set, tells without a system call whether anything that
	// could change a socket's owner happened since an owner was verified
	// (the eBPF tracker's change counters). Nil means no such proof exists.
	Changes ChangeClock
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		ProcessTTL:        30 * time.Second,
		SocketTTL:         10 * time.Second,
		NegativeTTL:       5 * time.Second,
		MinRescanInterval: 250 * time.Millisecond,
		RescanTimeout:     time.Second,
		NegativeCacheSize: 65536,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	orDefault(&c.ProcessTTL, d.ProcessTTL)
	orDefault(&c.SocketTTL, d.SocketTTL)
	orDefault(&c.NegativeTTL, d.NegativeTTL)
	orDefault(&c.MinRescanInterval, d.MinRescanInterval)
	orDefault(&c.RescanTimeout, d.RescanTimeout)
	orDefault(&c.NegativeCacheSize, d.NegativeCacheSize)
	return c
}

// orDefault sets a setting that is not positive to its default.
func orDefault[T time.Duration | int](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Watcher resolves local socket endpoints to processes. It is safe for
// concurrent use; Close stops its goroutines.
type Watcher struct {
	engine Engine
	cfg    Config
	log    *logp.Logger
	warn   *rateLimitedLog

	snap  atomic.Pointer[snapshot]
	addrs atomic.Pointer[map[netip.Addr]struct{}]

	mu        sync.Mutex    // guards the rescan state below
	running   chan struct{} // closed when the rescan in flight ends; nil if none
	lastStart time.Time
	// runDeadline is when lookups stop waiting for the rescan in flight:
	// its start plus RescanTimeout, whoever joined it when.
	runDeadline time.Time
	closed      bool      // Close has begun: no rescan starts any more
	wantAt      time.Time // a background rescan is wanted at this time; zero if none
	gen         uint64

	// Owned by the rescan goroutine; only one rescan runs at a time.
	procs   map[procKey]*cachedProc
	sockBuf []Socket
	// staleTimer marks the current snapshot stale; owned by the rescan.
	staleTimer *time.Timer

	neg negCache

	// pins verifies owners (nil when the engine cannot: see OwnerVerifier).
	pins *pinSet

	// recalled caches owners described for Fallback answers, by identity,
	// and descriptions read again after an exec (redescribe). execChanged
	// hands the latter to the next rescan's process cache (nil: the
	// process could not be described as it runs now). Both under recalledMu.
	recalledMu  sync.Mutex
	recalled    map[procKey]*cachedProc
	execChanged map[procKey]*Process

	stats counters

	// fallback guards Config.Fallback's owner source against Close.
	fallback *guardedSource
	aw       addrWatch // rtnetlink address events: addrwatch_linux.go
	as       addrState // addresses: addrs.go

	ctx       context.Context
	cancel    context.CancelFunc
	wake      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type procKey struct {
	pid   int
	start uint64
}

type cachedProc struct {
	p      *Process
	loaded time.Time
	// exec is the program identity a redescribe entry was read for (p is
	// nil when it could not be described as running it).
	exec ExecID
}

// New starts a watcher over engine. The first rescan runs in the background;
// lookups before it completes wait for it like any miss.
func New(engine Engine, cfg Config, log *logp.Logger) *Watcher {
	if log == nil {
		log = logp.NewLogger("add_network_process")
	}
	cfg = cfg.withDefaults()
	guard := guardFallback(&cfg)
	if c, ok := engine.(interface{ setChangeClock(ChangeClock) }); ok && cfg.Changes != nil {
		c.setChangeClock(cfg.Changes)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{
		engine:      engine,
		cfg:         cfg,
		log:         log,
		warn:        newRateLimitedLog(log, time.Minute),
		procs:       map[procKey]*cachedProc{},
		recalled:    map[procKey]*cachedProc{},
		execChanged: map[procKey]*Process{},
		neg:         newNegCache(cfg.NegativeCacheSize),
		ctx:         ctx,
		cancel:      cancel,
		wake:        make(chan struct{}, 1),
		fallback:    guard,
	}
	if v, ok := engine.(OwnerVerifier); ok {
		w.pins = &pinSet{v: v, m: map[procKey]*pin{}}
	}
	empty := newSnapshot(0, 0)
	empty.stale.Store(true)
	w.snap.Store(empty)
	// Subscribe before listing, so that no change falls between the two.
	w.startAddrWatch()
	w.refreshAddrs()
	w.mu.Lock()
	w.startRescanLocked(time.Now())
	w.mu.Unlock()
	w.wg.Add(1)
	go w.loop()
	return w
}

// Close stops the background goroutines and waits for them, including a
// rescan in flight (which stops at its budget or sooner), then closes the
// fallback owner source. It is safe to call while lookups run and more than
// once: from when Close begins no rescan starts and no lookup waits, lookups
// that Close overlaps may still answer, and lookups after it answer nil at
// once (the fallback is not asked any more).
func (w *Watcher) Close() error {
	var err error
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closed = true
		gen := w.gen + 1
		w.mu.Unlock()
		w.cancel()
		w.stopAddrWatch()
		w.wg.Wait()
		if w.pins != nil {
			w.pins.closeAll()
		}
		if w.staleTimer != nil {
			w.staleTimer.Stop()
		}
		// An empty, fresh snapshot: a lookup finds nothing, the fallback
		// refuses, and awaitRescan returns at once.
		w.snap.Store(newSnapshot(gen, 0))
		if c, ok := w.cfg.Fallback.(io.Closer); ok {
			err = c.Close()
		}
		if e := w.fallback.Close(); err == nil {
			err = e
		}
	})
	return err
}

// Lookup is LookupAt for an event happening now.
func (w *Watcher) Lookup(t Transport, local, remote netip.AddrPort) *Process {
	return w.LookupAt(time.Time{}, t, local, remote)
}

// LookupAt returns the process that owns the local endpoint local talking to
// remote (remote may be the zero AddrPort when unknown) for an event that
// happened at at (zero for now), or nil. An answer is given only under the
// rules of docs/add_network_process.md, "When an answer is given": a
// socket-table answer is verified (or its verification reused while
// Config.Changes proves nothing changed), a listener shared by several
// processes answers nothing, and no process that started after at is
// named. Remote endpoints and cached answers cost no allocation; a miss may
// wait for one coalesced, rate-limited rescan, at most RescanTimeout.
func (w *Watcher) LookupAt(at time.Time, t Transport, local, remote netip.AddrPort) *Process {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	if remote.IsValid() {
		remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	}
	snap := w.snap.Load()
	if snap.gen == 0 {
		// Before the first rescan lands, addresses bound only in the socket
		// table are not known to be local yet: wait for it like a miss.
		if fresh := w.awaitRescan(snap, time.Now()); fresh != nil {
			snap = fresh
		}
	}
	if !w.isLocal(snap, local.Addr()) {
		w.stats.notLocal.Add(1)
		return nil
	}
	var why unanswered
	r, res := snap.find(t, local, remote)
	if res == foundRow {
		switch p, ok := w.check(r, at, t, local.Port()); ok {
		case answerOK:
			w.stats.hits.Add(1)
			if snap.stale.Load() {
				w.requestRescan()
			}
			return p
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
	if w.neg.valid(key, now, snap.gen) {
		w.stats.negativeHits.Add(1)
		return nil
	}
	if w.cfg.Fallback != nil {
		p, live, rwhy := w.recall(snap, t, local, remote, at, why == unansweredVerifyFailed)
		if p != nil {
			w.stats.hits.Add(1)
			if live {
				w.stats.resolveHits.Add(1)
			} else {
				w.stats.trackerHits.Add(1)
			}
			return p
		}
		if rwhy != 0 {
			why = rwhy
		}
	}
	if res == foundUnowned && !snap.stale.Load() {
		// The row exists and nobody holds it (TIME_WAIT, orphaned); a
		// rescan would not change that.
		w.neg.put(key, now.Add(w.cfg.NegativeTTL), snap.gen, true)
		return w.unanswered(why)
	}
	fresh := w.awaitRescan(snap, now)
	if fresh == nil {
		// Rate-limited: remember the miss until the scheduled rescan lands.
		w.neg.put(key, now.Add(w.cfg.NegativeTTL), snap.gen, false)
		return w.unanswered(why)
	}
	if w.isLocal(fresh, local.Addr()) {
		r, res = fresh.find(t, local, remote)
		switch res {
		case foundRow:
			switch p, ok := w.check(r, at, t, local.Port()); ok {
			case answerOK:
				w.stats.hits.Add(1)
				return p
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
	return w.unanswered(why)
}

// unanswered is why a local lookup ended without an answer by rule rather
// than for want of data.
type unanswered uint8

const (
	unansweredNone unanswered = iota
	unansweredVerifyFailed
	unansweredAmbiguous
	unansweredStartedAfter
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
	}
	return nil
}

// recall asks Fallback for an owner the snapshot does not know, describing
// it through the engine while it lives and from Fallback's minimal record
// once it has exited. Descriptions are cached by identity (PID + start).
// live reports an answer read from the kernel's current socket table (the
// resolve source) rather than from a record of the past; such an answer is
// verified like a snapshot row. why says why an owner found was not given.
// afterFailure: the snapshot's owner of this socket failed its verification,
// so while the socket lives only the exact lookup may answer (MODEL rule 1).
func (w *Watcher) recall(snap *snapshot, t Transport, local, remote netip.AddrPort, at time.Time, afterFailure bool) (p *Process, live bool, why unanswered) {
	var sock Socket
	var minimal *Process
	var ok bool
	if rs, isResolve := w.cfg.Fallback.(*resolveSource); isResolve {
		sock, minimal, live, ok = rs.recall(t, local, remote, at, afterFailure)
	} else if !afterFailure {
		sock, minimal, ok = w.cfg.Fallback.Recall(t, local, remote, at)
	}
	if !ok || sock.PID <= 0 {
		return nil, false, 0
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
			return nil, false, unansweredAmbiguous
		case res != foundRow || r.p.PID != sock.PID || r.p.StartKey != sock.StartKey:
			return nil, false, 0
		}
		switch p, ok := w.check(r, at, t, local.Port()); ok {
		case answerOK:
			return p, false, 0
		case answerStartedAfter:
			return nil, false, unansweredStartedAfter
		default:
			return nil, false, unansweredVerifyFailed
		}
	}
	p = w.describe(sock, minimal)
	if p == nil {
		return nil, false, 0
	}
	if live {
		var res answerResult
		switch p, res = w.checkSocket(&sock, p, at); res {
		case answerStartedAfter:
			return nil, false, unansweredStartedAfter
		case answerVerifyFailed:
			if rs, isResolve := w.cfg.Fallback.(*resolveSource); isResolve {
				rs.forget(t, local, remote)
			}
			return nil, false, unansweredVerifyFailed
		}
	} else if startedAfter(p, at) {
		return nil, false, unansweredStartedAfter
	} else if p != minimal && w.pins != nil {
		// A record of a process that still runs: it is described as the
		// program it runs now (one statx), not as it ran when described.
		// An exe that does not read (the main thread exited; the record
		// names no thread) leaves the description as it is.
		if exec, alive := w.pins.execOf(procKey{sock.PID, sock.StartKey}); alive && exec != (ExecID{}) && exec != p.exec {
			if p = w.redescribe(procKey{sock.PID, sock.StartKey}, exec); p == nil {
				return nil, false, unansweredVerifyFailed
			}
		}
	}
	return p, live, 0
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

// LookupInContainer is LookupAt for an event that names the container it
// belongs to: the container's network namespace is searched first, so its
// 127.0.0.1 is not taken for the host's. Without an answer there (or for an
// unknown container) it is LookupAt.
func (w *Watcher) LookupInContainer(containerID string, at time.Time, t Transport, local, remote netip.AddrPort) *Process {
	if sub := w.snap.Load().inContainer(containerID); sub != nil {
		l := netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		r := remote
		if r.IsValid() {
			r = netip.AddrPortFrom(r.Addr().Unmap(), r.Port())
		}
		if l.Addr().IsLoopback() || sub.isLocal(l.Addr()) {
			if row, res := sub.find(t, l, r); res == foundRow {
				if p, ok := w.check(row, at, t, l.Port()); ok == answerOK {
					w.stats.hits.Add(1)
					return p
				}
			}
		}
	}
	return w.LookupAt(at, t, local, remote)
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
