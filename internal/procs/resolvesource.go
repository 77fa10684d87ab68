package procs

import (
	"context"
	"io"
	"net/netip"
	"sync"
	"time"
)

// NewResolveSource returns an OwnerSource for Config.Fallback that answers a
// snapshot miss for a connection with a known peer by asking the engine for
// that connection alone, after next (nil for none) has had its turn: a cold
// lookup then costs one exact query and an incremental owner walk instead of
// a rescan of every socket (docs/benchmarks.md). The watcher asks its
// Fallback on a snapshot miss that its negative cache does not answer, and
// the engine is asked at most perInterval times per interval (a rescan in
// flight does not hold it up: the Linux engine's Resolve has its own lock);
// beyond that the miss takes the usual rate-limited rescan path. It
// returns next when the engine cannot resolve single connections.
func NewResolveSource(e Engine, next OwnerSource, perInterval int, interval, timeout time.Duration) OwnerSource {
	r := probeEngine(e).resolver
	if r == nil || perInterval <= 0 || interval <= 0 {
		return next
	}
	return &resolveSource{r: r, next: next, per: perInterval, interval: interval, timeout: timeout}
}

type resolveSource struct {
	r    Resolver
	next OwnerSource
	// handedOff, if set, is told of a record's opener that the kernel
	// shows no longer the (only) holder of its socket.
	handedOff func(procKey)
	// forkSeq reads the watcher's fork clock (0 without one) before a walk.
	forkSeq  func() uint32
	per      int
	interval time.Duration
	timeout  time.Duration

	mu          sync.Mutex
	windowStart time.Time
	used        int
	// found remembers answers for 10 intervals, so that the events of a
	// new connection that follow the first do not each query the engine
	// before a rescan takes the socket into the snapshot. Each answer
	// carries the socket's inode and descriptor: the watcher verifies it
	// every time it is given (docs/add_network_process.md, "When an answer
	// is given").
	found map[connKey]foundEntry
}

type foundEntry struct {
	s     Socket
	until time.Time
}

const resolveCacheSize = 4096

// Recall asks next, then the engine for this one connection.
func (h *resolveSource) Recall(t Transport, local, remote netip.AddrPort, at time.Time) (Socket, *Process, bool) {
	s, p, _, ok, _ := h.recall(t, local, remote, at, false, false, time.Time{})
	return s, p, ok
}

// recall is Recall telling whether the answer is live: read from the
// engine's current socket table rather than from next's records. With
// liveFirst (the snapshot's owner of this socket just failed its
// verification) the engine is asked first, and next only when the kernel
// no longer has the connection (gone, or in TIME_WAIT): while the socket
// lives, only its current holder may be named, and a record of who opened
// it (next's) may be a process that has since passed it on; when the
// engine cannot be asked, only a record of a closed socket answers. noRecord
// reports that next, a SocketFeed, was asked and has no record of the
// tuple although it had caught up with the kernel (no socket with it was
// opened while it watched).
func (h *resolveSource) recall(t Transport, local, remote netip.AddrPort, at time.Time, liveFirst, optional bool, until time.Time) (sock Socket, minimal *Process, live, ok, noRecord bool) {
	if h.next != nil && !liveFirst {
		s, p, ok, complete := recallFeed(h.next, t, local, remote, at, until)
		if ok {
			if s.Recorded {
				// Open by next's record: the kernel names its current
				// holder, which next may not have seen take it over. The
				// record's owner is searched first.
				if got, st := h.live(t, local, remote, s.PID, optional, until); st == liveFound {
					if got.PID != s.PID && h.handedOff != nil {
						// The opener the record names passed the socket on
						// (a fork-per-connection server's parent).
						h.handedOff(procKey{s.PID, s.StartKey})
					}
					return got, nil, true, true, false
				}
			}
			return s, p, false, true, false
		}
		// A complete miss still asks the kernel: the feed may not record
		// every socket at once (an accepted connection before its first
		// I/O, one of a port several processes listen on), and the exact
		// lookup is one query.
		noRecord = complete
	}
	got, st := h.live(t, local, remote, 0, optional, until)
	switch {
	case st == liveFound:
		return got, nil, true, true, false
	case st == liveAbsent && liveFirst && h.next != nil:
		s, p, ok, complete := recallFeed(h.next, t, local, remote, at, until)
		if ok {
			return s, p, false, true, false
		}
		noRecord = complete
	case st == liveUnknown && liveFirst && h.next != nil:
		// The kernel could not be asked (budget spent, lookup failed). A
		// record of a socket next saw closed may still answer: that socket
		// lives no more, so no process can have taken it over since. A
		// record of an open socket may not.
		if s, p, ok, _ := recallFeed(h.next, t, local, remote, at, until); ok && !s.Recorded {
			return s, p, false, true, false
		}
	}
	return Socket{}, nil, false, false, noRecord
}

// liveState is what the engine said of one connection.
type liveState uint8

const (
	liveUnknown liveState = iota // not asked (budget, no peer), failed, or no owner readable
	liveFound                    // an owned socket
	liveAbsent                   // no such socket, or one no file refers to (TIME_WAIT)
)

// live asks the engine (or its remembered answers) for one connection;
// hint is a PID to search first (0: none). The engine's search stops at
// the lookup's deadline until (zero: none) or after the source's timeout,
// whichever comes first.
func (h *resolveSource) live(t Transport, local, remote netip.AddrPort, hint int, optional bool, until time.Time) (Socket, liveState) {
	if !remote.IsValid() || remote.Port() == 0 || local.Port() == 0 {
		return Socket{}, liveUnknown
	}
	k := connKeyOf(t, local, remote)
	now := time.Now()
	h.mu.Lock()
	if f, ok := h.found[k]; ok && now.Before(f.until) {
		h.mu.Unlock()
		return f.s, liveFound
	}
	h.mu.Unlock()
	if !h.take(now, optional) {
		return Socket{}, liveUnknown
	}
	end := until
	if h.timeout > 0 && (end.IsZero() || now.Add(h.timeout).Before(end)) {
		end = now.Add(h.timeout)
	}
	ctx := context.Background()
	if !end.IsZero() {
		if !now.Before(end) {
			return Socket{}, liveUnknown
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, end)
		defer cancel()
	}
	var got Socket
	var found bool
	var err error
	var seq uint32
	if h.forkSeq != nil {
		seq = h.forkSeq()
	}
	if hint > 0 {
		got, found, err = h.r.ResolveHinted(ctx, t, local, remote, hint)
	} else {
		got, found, err = h.r.Resolve(ctx, t, local, remote)
	}
	switch {
	case err != nil:
		return Socket{}, liveUnknown
	case !found || got.Inode == 0 && got.PID <= 0:
		return Socket{}, liveAbsent
	case got.PID <= 0:
		return Socket{}, liveUnknown
	}
	got.forkSeq = seq
	if got.Shared {
		// Not remembered: a fork's parent may close its copy at once, and
		// the next event's lookup should find the one holder left.
		return got, liveFound
	}
	h.mu.Lock()
	if h.found == nil || len(h.found) >= resolveCacheSize {
		h.found = make(map[connKey]foundEntry)
	}
	h.found[k] = foundEntry{got, now.Add(10 * h.interval)}
	h.mu.Unlock()
	return got, liveFound
}

// forget drops a cached answer that failed its verification.
func (h *resolveSource) forget(t Transport, local, remote netip.AddrPort) {
	h.mu.Lock()
	delete(h.found, connKeyOf(t, local, remote))
	h.mu.Unlock()
}

// take spends one of the interval's queries. An optional query (one whose
// event has another answer to fall back on: a listener) takes only from
// the first half, so that a storm of them leaves the rest to lookups that
// have none.
func (h *resolveSource) take(now time.Time, optional bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.windowStart) >= h.interval {
		h.windowStart, h.used = now, 0
	}
	limit := h.per
	if optional {
		limit = (h.per + 1) / 2
	}
	if h.used >= limit {
		return false
	}
	h.used++
	return true
}

// Close closes next, which the watcher would otherwise not see.
func (h *resolveSource) Close() error {
	if c, ok := h.next.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
