package procs

// Event-driven mode: with a Fallback that sees every socket being opened
// as it happens (the eBPF tracker) and a ChangeClock, the watcher keeps its
// view current from them instead of rescanning. See Config.SafetyRescanInterval.

import (
	"net/netip"
	"sync"
	"time"
)

// recallFeed asks src, telling whether a miss is complete (src, or the
// source a guard keeps, is a SocketFeed that had caught up).
func recallFeed(src OwnerSource, t Transport, local, remote netip.AddrPort, at, deadline time.Time) (Socket, *Process, bool, bool) {
	switch f := src.(type) {
	case *guardedSource:
		return f.recallComplete(t, local, remote, at, deadline)
	case SocketFeed:
		return f.RecallComplete(t, local, remote, at, deadline)
	}
	s, p, ok := src.Recall(t, local, remote, at)
	return s, p, ok, false
}

// feedOf returns the SocketFeed behind a Fallback (through a resolve
// source), or nil.
func feedOf(f OwnerSource) SocketFeed {
	if rs, ok := f.(*resolveSource); ok {
		f = rs.next
	}
	sf, _ := f.(SocketFeed)
	return sf
}

// feedGaps reads the feed's gap counter unless the fallback is closing.
func (w *Watcher) feedGaps() (uint64, bool) {
	if w.feed == nil || !w.fallback.mu.TryRLock() {
		return 0, false
	}
	defer w.fallback.mu.RUnlock()
	if w.fallback.closed {
		return 0, false
	}
	return w.feed.FeedGaps(), true
}

// feedCovers tells whether the feed has missed nothing since snap's rescan
// began reading the socket tables: a socket not in snap and not in the
// feed's records does not exist (or was never used, for UDP).
func (w *Watcher) feedCovers(snap *snapshot) bool {
	if !w.eventDriven || !snap.fed {
		return false
	}
	g, ok := w.feedGaps()
	return ok && g == snap.gaps
}

// learnedRows are the rows of connections that the exact lookup (the
// resolve source) found since the last rescan: the part of the view that
// is not in the snapshot. A row is verified like a snapshot row, so with a
// ChangeClock its later lookups cost two counter reads instead of another
// exact lookup; it is dropped when its verification fails (its socket
// closed or changed hands), and all are dropped when a rescan publishes
// (the snapshot has them then) or when the cap is reached.
type learnedRows struct {
	mu sync.RWMutex
	m  map[connKey]*row
}

// learnedCap bounds learnedRows; a busy host's new connections between two
// rescans (in event-driven mode, minutes apart) fill it at most this far.
const learnedCap = 65536

func (l *learnedRows) get(k connKey) *row {
	l.mu.RLock()
	r := l.m[k]
	l.mu.RUnlock()
	return r
}

func (l *learnedRows) put(k connKey, r *row) {
	l.mu.Lock()
	if l.m == nil || len(l.m) >= learnedCap {
		l.m = make(map[connKey]*row)
	}
	l.m[k] = r
	l.mu.Unlock()
}

func (l *learnedRows) drop(k connKey, r *row) {
	l.mu.Lock()
	if l.m[k] == r {
		delete(l.m, k)
	}
	l.mu.Unlock()
}

func (l *learnedRows) reset() {
	l.mu.Lock()
	l.m = nil
	l.mu.Unlock()
}

func (l *learnedRows) len() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.m)
}

// learn keeps a verified live answer as a row; ver is the ChangeClock
// reading taken before the verification (0 without a clock).
func (w *Watcher) learn(s *Socket, p *Process, t Transport, local, remote netip.AddrPort, ver uint64) {
	r := &row{p: p, inode: s.Inode, fd: s.FD, task: s.Task, v6only: s.V6Only, netns: s.NetNS, foreign: s.Foreign, forkSeq: s.forkSeq}
	if w.cfg.Changes != nil {
		r.ver.Store(ver)
		r.state.Store(rowVerified)
	}
	w.learned.put(connKeyOf(t, local, remote), r)
}
