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

	// recalled caches owners described for Fallback answers, by identity.
	recalledMu sync.Mutex
	recalled   map[procKey]*cachedProc

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
		engine:   engine,
		cfg:      cfg,
		log:      log,
		warn:     newRateLimitedLog(log, time.Minute),
		procs:    map[procKey]*cachedProc{},
		recalled: map[procKey]*cachedProc{},
		neg:      newNegCache(cfg.NegativeCacheSize),
		ctx:      ctx,
		cancel:   cancel,
		wake:     make(chan struct{}, 1),
		fallback: guard,
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
// happened at at (zero for now), or nil. Remote endpoints and cached answers
// cost no allocation; a miss may wait for one coalesced, rate-limited
// rescan, at most RescanTimeout.
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
	p, known := snap.find(t, local, remote)
	if p != nil {
		w.stats.hits.Add(1)
		if snap.stale.Load() {
			w.requestRescan()
		}
		return p
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
		if p, live := w.recall(t, local, remote, at); p != nil {
			w.stats.hits.Add(1)
			if live {
				w.stats.resolveHits.Add(1)
			} else {
				w.stats.trackerHits.Add(1)
			}
			return p
		}
	}
	if known && !snap.stale.Load() {
		// The row exists and nobody holds it (TIME_WAIT, orphaned); a
		// rescan would not change that.
		w.neg.put(key, now.Add(w.cfg.NegativeTTL), snap.gen, true)
		w.stats.misses.Add(1)
		return nil
	}
	fresh := w.awaitRescan(snap, now)
	if fresh == nil {
		// Rate-limited: remember the miss until the scheduled rescan lands.
		w.neg.put(key, now.Add(w.cfg.NegativeTTL), snap.gen, false)
		w.stats.misses.Add(1)
		return nil
	}
	if w.isLocal(fresh, local.Addr()) {
		if p, _ = fresh.find(t, local, remote); p != nil {
			w.stats.hits.Add(1)
			return p
		}
	}
	w.neg.put(key, now.Add(w.cfg.NegativeTTL), fresh.gen, true)
	w.stats.misses.Add(1)
	return nil
}

// recall asks Fallback for an owner the snapshot does not know, describing
// it through the engine while it lives and from Fallback's minimal record
// once it has exited. Descriptions are cached by identity (PID + start).
// live reports an answer read from the kernel's current socket table (the
// resolve source) rather than from a record of the past.
func (w *Watcher) recall(t Transport, local, remote netip.AddrPort, at time.Time) (p *Process, live bool) {
	var sock Socket
	var minimal *Process
	var ok bool
	if rs, isResolve := w.cfg.Fallback.(*resolveSource); isResolve {
		sock, minimal, live, ok = rs.recall(t, local, remote, at)
	} else {
		sock, minimal, ok = w.cfg.Fallback.Recall(t, local, remote, at)
	}
	if !ok || sock.PID <= 0 {
		return nil, false
	}
	k := procKey{sock.PID, sock.StartKey}
	now := time.Now()
	w.recalledMu.Lock()
	c, ok := w.recalled[k]
	w.recalledMu.Unlock()
	if ok && now.Sub(c.loaded) < w.cfg.ProcessTTL {
		return c.p, live
	}
	p, err := w.engine.Process(sock.PID, sock.StartKey)
	if err != nil {
		if minimal == nil {
			return nil, false
		}
		p = minimal // exited (or recycled): what Fallback saw is all there is
	}
	w.recalledMu.Lock()
	if len(w.recalled) >= recalledCacheSize {
		clear(w.recalled)
	}
	w.recalled[k] = &cachedProc{p: p, loaded: now}
	w.recalledMu.Unlock()
	return p, live
}

// recalledCacheSize caps descriptions of Fallback owners; short-lived clients
// come and go, so the cache is simply dropped when full.
const recalledCacheSize = 4096

// LookupInContainer is LookupAt for an event that names the container it
// belongs to: the container's network namespace is searched first, so its
// 127.0.0.1 is not taken for the host's. Without a match there (or for an
// unknown container) it is LookupAt.
func (w *Watcher) LookupInContainer(containerID string, at time.Time, t Transport, local, remote netip.AddrPort) *Process {
	if sub := w.snap.Load().inContainer(containerID); sub != nil {
		l := netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		r := remote
		if r.IsValid() {
			r = netip.AddrPortFrom(r.Addr().Unmap(), r.Port())
		}
		if l.Addr().IsLoopback() || sub.isLocal(l.Addr()) {
			if p, _ := sub.find(t, l, r); p != nil {
				w.stats.hits.Add(1)
				return p
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
