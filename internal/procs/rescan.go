package procs

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// awaitRescan returns a snapshot newer than seen, starting a rescan if the
// rate limit allows or joining the one in flight. It returns nil when the
// rate limit defers the rescan; one is then scheduled in the background.
//
// A lookup waits at most until the rescan's own deadline (its start plus
// RescanTimeout), not RescanTimeout from when it joined: the two lookups of
// one event, and every event arriving while a rescan runs, together wait no
// longer than RescanTimeout for it. It also waits no later than until,
// the lookup's own bound (its start plus RescanTimeout), which the
// fallback sources may have used part of. Once Close has begun it returns
// nil at once.
func (w *Watcher) awaitRescan(seen *snapshot, now, until time.Time) *snapshot {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	if cur := w.snap.Load(); cur.gen != seen.gen {
		w.mu.Unlock()
		return cur
	}
	ch := w.running
	if ch == nil {
		next := w.nextRescanLocked()
		if now.Before(next) {
			w.scheduleLocked(next)
			w.mu.Unlock()
			return nil
		}
		ch = w.startRescanLocked(now)
	}
	end := w.runDeadline
	if until.Before(end) {
		end = until
	}
	// From the clock when it is later than now: the caller took now
	// before its fallback sources ran, which may have used most of its
	// bound.
	from := time.Now()
	if now.After(from) {
		from = now
	}
	wait := end.Sub(from)
	w.mu.Unlock()
	if wait <= 0 {
		// The rescan in flight has used its budget (it is finishing the
		// snapshot, or the walk overran): do not wait for it.
		w.stats.waitTimeouts.Add(1)
		return nil
	}

	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
		if cur := w.snap.Load(); cur.gen != seen.gen {
			return cur
		}
		return nil // the rescan failed; the old snapshot stands
	case <-t.C:
		w.stats.waitTimeouts.Add(1)
		return nil
	case <-w.ctx.Done():
		return nil
	}
}

// rescanSpacing keeps long rescans from taking more than a third of a CPU:
// after a rescan that took longer than longRescan, the next may start no
// sooner than twice its duration after it ended (three times its duration
// after it started), whatever MinRescanInterval says. A rescan is
// O(sockets): at 200k sockets one takes ~0.5 s here, and a miss storm that
// rescanned every min_rescan_interval would keep a core busy. Shorter
// rescans (up to ~100k sockets) keep the configured interval.
const (
	rescanSpacing = 3
	longRescan    = 100 * time.Millisecond
)

// nextRescanLocked is when the rate limit lets the next rescan start.
func (w *Watcher) nextRescanLocked() time.Time {
	return w.lastStart.Add(w.rescanIntervalLocked())
}

// rescanIntervalLocked is the rate limit's interval after the last rescan.
func (w *Watcher) rescanIntervalLocked() time.Duration {
	if w.lastDur > longRescan {
		return max(w.cfg.MinRescanInterval, rescanSpacing*w.lastDur)
	}
	return w.cfg.MinRescanInterval
}

// requestRescan asks for a background rescan as soon as the rate limit
// allows, without waiting for it.
func (w *Watcher) requestRescan() {
	w.mu.Lock()
	if w.running == nil && w.wantAt.IsZero() && !w.closed {
		w.scheduleLocked(w.nextRescanLocked())
	}
	w.mu.Unlock()
}

func (w *Watcher) scheduleLocked(at time.Time) {
	if w.wantAt.IsZero() || at.Before(w.wantAt) {
		w.wantAt = at
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// loop runs scheduled rescans and keeps the host's addresses current.
func (w *Watcher) loop() {
	defer w.wg.Done()
	addrTick := time.NewTicker(w.cfg.SocketTTL)
	defer addrTick.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		w.mu.Lock()
		wantAt := w.wantAt
		w.mu.Unlock()
		if !wantAt.IsZero() {
			timer.Reset(max(time.Until(wantAt), 0))
		}
		select {
		case <-w.ctx.Done():
			return
		case <-w.wake:
		case <-addrTick.C:
			w.refreshAddrs()
		case <-timer.C:
			now := time.Now()
			w.mu.Lock()
			if !w.wantAt.IsZero() && !now.Before(w.wantAt) && !w.closed {
				if w.running == nil {
					w.startRescanLocked(now)
				} else {
					// The rescan in flight may have read the tables before
					// the request: keep it, for one interval later.
					w.wantAt = now.Add(w.rescanIntervalLocked())
				}
			}
			w.mu.Unlock()
		}
	}
}

// startRescanLocked launches one rescan; w.mu must be held and w.closed
// false (Close waits for the goroutines it counts).
func (w *Watcher) startRescanLocked(now time.Time) chan struct{} {
	ch := make(chan struct{})
	w.running = ch
	w.lastStart = now
	w.runDeadline = now.Add(w.cfg.RescanTimeout)
	w.wantAt = time.Time{}
	w.gen++
	gen := w.gen
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.rescan(gen)
		w.mu.Lock()
		w.lastDur = time.Since(now)
		w.running = nil
		w.mu.Unlock()
		close(ch)
	}()
	return ch
}

func (w *Watcher) rescan(gen uint64) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.RescanTimeout)
	defer cancel()
	w.stats.rescans.Add(1)
	// Read before the tables: a gap from here on makes the snapshot's
	// feed coverage void (feedCovers).
	gaps, fed := w.feedGaps()
	forkSeq := w.forkSeq()
	socks, err := w.engine.Sockets(ctx, w.sockBuf[:0])
	w.sockBuf = socks
	var partial *PartialError
	if errors.As(err, &partial) {
		w.stats.errors.Add(1)
		w.warn.log("rescan-partial", fmt.Errorf("socket tables read with faults: %w", err))
	} else if err != nil {
		if w.ctx.Err() != nil {
			return // closing: not a fault worth a warning
		}
		w.stats.errors.Add(1)
		w.warn.log("rescan", fmt.Errorf("listing sockets failed after %v: %w; lookups keep the previous snapshot", time.Since(start).Round(time.Millisecond), err))
		return
	}
	w.refreshAddrs()

	// Processes that lookups found running another program than their
	// cached description: take the description read since, or read again.
	w.recalledMu.Lock()
	for k, p := range w.execChanged {
		if p != nil {
			w.procs[k] = &cachedProc{p: p, loaded: start}
		} else {
			delete(w.procs, k)
		}
		delete(w.execChanged, k)
	}
	w.recalledMu.Unlock()

	snap := newSnapshot(gen, len(socks))
	snap.gaps, snap.fed, snap.forkSeq = gaps, fed, forkSeq
	used := make(map[procKey]struct{}, len(w.procs))
	for i := range socks {
		s := &socks[i]
		var p *Process
		if s.PID > 0 {
			k := procKey{s.PID, s.StartKey}
			p = w.process(k, start)
			if p != nil {
				used[k] = struct{}{}
			}
		}
		snap.add(s, p)
	}
	w.handsOff.rescanned(snap, socks, used)
	// The process cache holds only owners of current sockets, so it is
	// bounded by the socket table and a dead PID never lingers.
	for k := range w.procs {
		if _, ok := used[k]; !ok {
			delete(w.procs, k)
		}
	}
	w.publishSnapshot(snap)
	// The snapshot has what the exact lookups found before it.
	w.learned.reset()
	ttl := w.cfg.SocketTTL
	if w.eventDriven {
		ttl = w.cfg.SafetyRescanInterval
	}
	// Stop the previous snapshot's timer: its closure would keep that
	// snapshot (and its maps) alive for socket_cache_ttl after it is gone.
	if w.staleTimer != nil {
		w.staleTimer.Stop()
	}
	w.staleTimer = time.AfterFunc(ttl, func() { snap.stale.Store(true) })
	w.stats.lastRescanNanos.Store(int64(time.Since(start)))
	w.stats.sockets.Store(int64(len(socks)))
	w.stats.ambiguous.Store(int64(snap.ambiguous))
	w.stats.namespaces.Store(int64(len(snap.byNS)))
	w.stats.processes.Store(int64(len(w.procs)))
}

// process returns the cached details of k, reading them through the engine
// when absent or older than ProcessTTL. Errors (the process exited, or the
// PID now names another process) leave the socket unowned.
func (w *Watcher) process(k procKey, now time.Time) *Process {
	if c, ok := w.procs[k]; ok && now.Sub(c.loaded) < w.cfg.ProcessTTL {
		return c.p
	}
	p, err := w.read(k)
	if err != nil {
		w.stats.errors.Add(1)
		w.warn.log("process", fmt.Errorf("reading process %d failed: %w", k.pid, err))
		delete(w.procs, k)
		return nil
	}
	w.procs[k] = &cachedProc{p: p, loaded: now}
	return p
}
