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
	// NATLookup makes lookups NAT-aware (nat.go): a tuple that no socket
	// has exactly is looked up in the kernel's conntrack table, and when it
	// was translated (DNAT, SNAT, masquerade) the translated tuple's socket
	// answers, not a listener of the event's tuple. Reading conntrack needs
	// CAP_NET_ADMIN; without it the lookup logs once and turns itself off.
	NATLookup bool
	// NAT is the conntrack reader NATLookup uses; nil for this kernel's
	// (NewConntrack). The watcher closes it on Close.
	NAT Conntrack
	// DescribeParents: describe each process's parent with it
	// (Process.Parent), for the parent.* fields; off, Parent stays nil and
	// describing a process costs no reads of its parent.
	DescribeParents bool
	// SafetyRescanInterval turns on event-driven mode when Fallback is a
	// SocketFeed (the eBPF tracker, also through NewResolveSource) and
	// Changes is set: after the first rescan the view is kept current from
	// the feed's records (a new connection is found through its record and
	// one exact lookup, and kept as a verified row; a closed one fails its
	// verification), so the snapshot goes stale only after this interval
	// (a safety net), a failed verification requests no rescan, and a TCP
	// miss whose tuple the feed has no record of (a complete miss: see
	// SocketFeed), while the feed has missed nothing since the snapshot, is
	// answered "unknown" once the kernel's exact lookup has not found it
	// either, without a rescan, and remembered for one MinRescanInterval.
	// Zero selects the default (5 minutes); a negative value turns the
	// mode off (rescans as without a feed).
	SafetyRescanInterval time.Duration
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		ProcessTTL:           30 * time.Second,
		SocketTTL:            10 * time.Second,
		NegativeTTL:          5 * time.Second,
		MinRescanInterval:    250 * time.Millisecond,
		RescanTimeout:        time.Second,
		NegativeCacheSize:    65536,
		SafetyRescanInterval: 5 * time.Minute,
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
	if c.SafetyRescanInterval == 0 {
		c.SafetyRescanInterval = d.SafetyRescanInterval
	}
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
	lastDur   time.Duration // the last rescan's duration (rescanSpacing)
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

	// nat translates tuples through conntrack (nil: NATLookup off).
	nat *natSource

	// forks is the change clock's fork count, nil without one.
	forks ForkClock
	// hostNS names the host's network namespace (nil: the engine knows of
	// one namespace only).
	hostNS hostNamespacer
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

	// handsOff: processes that hand the connections they accept to other
	// processes (handsoff.go).
	// held by another process (sources.go).
	handsOff handsOffSet

	// fallback guards Config.Fallback's owner source against Close.
	// resolve is Fallback when it is the kernel's exact lookup (the
	// records it falls back to are inside it); records is Fallback
	// otherwise (nil for none). Exactly one is set when there is a
	// Fallback.
	fallback *guardedSource
	resolve  *resolveSource
	records  OwnerSource
	// feed is Fallback's SocketFeed (nil if none); eventDriven: the mode
	// of Config.SafetyRescanInterval is on. learned: the view's rows
	// beyond the snapshot (feed.go).
	feed        SocketFeed
	eventDriven bool
	learned     learnedRows
	aw          addrWatch // rtnetlink address events: addrwatch_linux.go
	as          addrState // addresses: addrs.go

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
	feed := feedOf(cfg.Fallback) // before the guard wraps it
	guard := guardFallback(&cfg)
	caps := probeEngine(engine)
	if caps.clock != nil && cfg.Changes != nil {
		caps.clock.setChangeClock(cfg.Changes)
	}
	if caps.parents != nil {
		caps.parents.setDescribeParents(cfg.DescribeParents)
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
		feed:        feed,
		eventDriven: feed != nil && cfg.Changes != nil && cfg.SafetyRescanInterval > 0,
	}
	if cfg.NATLookup {
		ct := cfg.NAT
		if ct == nil {
			ct = NewConntrack()
		}
		w.nat = newNATSource(ct, natPerInterval, cfg.MinRescanInterval, w.natWarn)
	}
	if rs, ok := cfg.Fallback.(*resolveSource); ok {
		w.resolve = rs
		rs.handedOff = w.handsOff.note
		rs.forkSeq = w.forkSeq
	} else {
		w.records = cfg.Fallback
	}
	if caps.verifier != nil {
		w.pins = newPinSet(caps.verifier, openFilesLimit())
	}
	w.hostNS = caps.hostNS
	if cfg.Changes != nil {
		w.forks = probeForks(cfg.Changes)
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
		if w.nat != nil {
			if e := w.nat.close(); err == nil {
				err = e
			}
		}
	})
	return err
}
