package procs

import (
	"sync"
	"sync/atomic"
	"time"
)

// Verification (docs/add_network_process.md, "When an answer is given"):
// an answer read from a socket table is given only if its owner still holds
// the socket when the lookup runs. The engine's OwnerVerifier checks that
// with one system call through a pinned process handle; Config.Changes,
// when present, lets a verification be reused without one for as long as
// the kernel's change counters for the port and the process stay equal.

// eventTimeSlack allows for clock granularity when comparing a process's
// start with an event's time: no answer names a process that started later
// than the event plus this.
const eventTimeSlack = 100 * time.Millisecond

// pin is a pinned process handle shared by every row and cached answer of
// that process instance. refs counts the set's own reference and each
// check in flight; the handle is released when the last one goes, so a
// check never reads through a handle closed (and its number reused) under
// it.
type pin struct {
	handle int
	refs   atomic.Int64
	// lastUse is when a check last used it (unix nanoseconds), for pruning.
	lastUse atomic.Int64
}

func (p *pin) acquire() bool {
	for {
		r := p.refs.Load()
		if r <= 0 {
			return false
		}
		if p.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// pinSet holds the pins of the processes recently verified.
type pinSet struct {
	v         OwnerVerifier
	mu        sync.Mutex
	m         map[procKey]*pin
	lastPrune time.Time
}

// pinIdle is how long a pin no check used is kept. A process verified
// through the change counters only is re-pinned when a check needs it.
const pinIdle = 10 * time.Second

func (s *pinSet) release(p *pin) {
	if p.refs.Add(-1) == 0 {
		s.v.UnpinProcess(p.handle)
	}
}

// get returns k's pin with a reference the caller releases, pinning the
// process if needed; nil if it no longer runs as that instance.
func (s *pinSet) get(k procKey, now time.Time) *pin {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.lastPrune) > pinIdle/2 {
		s.lastPrune = now
		for key, p := range s.m {
			if now.UnixNano()-p.lastUse.Load() > int64(pinIdle) {
				delete(s.m, key)
				s.release(p)
			}
		}
	}
	if p, ok := s.m[k]; ok && p.acquire() {
		return p
	}
	h, err := s.v.PinProcess(k.pid, k.start)
	if err != nil {
		return nil
	}
	p := &pin{handle: h}
	p.refs.Store(2) // the set's and the caller's
	p.lastUse.Store(now.UnixNano())
	if old, ok := s.m[k]; ok {
		s.release(old)
	}
	s.m[k] = p
	return p
}

// closeAll drops the set's references (Close).
func (s *pinSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, p := range s.m {
		delete(s.m, k)
		s.release(p)
	}
}

// holds checks that process k holds socket inode at fd (task), through the
// row's cached pin when it has one, and returns the identity of the
// program it runs now (read only when it holds the socket).
func (s *pinSet) holds(slot *atomic.Pointer[pin], k procKey, task, fd int32, inode uint64) (bool, ExecID) {
	now := time.Now()
	var p *pin
	if slot != nil {
		if p = slot.Load(); p != nil && !p.acquire() {
			p = nil
		}
	}
	if p == nil {
		if p = s.get(k, now); p == nil {
			return false, ExecID{}
		}
		if slot != nil {
			slot.Store(p)
		}
	}
	var exec ExecID
	ok := s.v.HoldsSocket(p.handle, task, fd, inode)
	if ok {
		exec = s.v.ExecOf(p.handle, task)
	}
	p.lastUse.Store(now.UnixNano())
	s.release(p)
	return ok, exec
}

// execOf returns the identity of the program process k runs now; ok is
// false if it no longer runs as that instance.
func (s *pinSet) execOf(k procKey) (ExecID, bool) {
	now := time.Now()
	p := s.get(k, now)
	if p == nil {
		return ExecID{}, false
	}
	exec := s.v.ExecOf(p.handle, 0)
	p.lastUse.Store(now.UnixNano())
	s.release(p)
	return exec, true
}

// answerResult is why check answered or did not.
type answerResult uint8

const (
	answerOK answerResult = iota
	answerVerifyFailed
	answerStartedAfter
)

// check applies the answer rules to a row found for local port port of
// transport t, for an event at at (zero: now), and returns the description
// to answer with: the row's, or a fresh one when the process has exec'd
// another program since it was described.
func (w *Watcher) check(r *row, at time.Time, t Transport, port uint16) (*Process, answerResult) {
	// Every description of the row is of the same process instance: r.p's
	// PID and start serve for all of them.
	if startedAfter(r.p, at) {
		return nil, answerStartedAfter
	}
	if w.pins == nil {
		return r.p, answerOK // the engine cannot verify (Windows): its table is the answer
	}
	st := r.state.Load()
	if st == rowFailed {
		return nil, answerVerifyFailed
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
			return r.desc(), answerOK
		}
	}
	p := r.desc()
	w.stats.verifications.Add(1)
	ok, exec := w.pins.holds(&r.pin, procKey{p.PID, p.StartKey}, r.task, r.fd, r.inode)
	if !ok {
		r.state.Store(rowFailed)
		w.stats.verifyFailures.Add(1)
		if !w.eventDriven {
			// In event-driven mode the feed's records and the exact
			// lookup find the socket's new holder, if any.
			w.requestRescan()
		}
		return nil, answerVerifyFailed
	}
	if exec != p.exec {
		// Same process instance, another program: the row's description
		// is stale. The socket is still held: answer with the program's
		// description as it is now, or not at all.
		fresh := w.redescribe(procKey{p.PID, p.StartKey}, exec)
		if fresh == nil {
			return nil, answerVerifyFailed
		}
		r.cur.Store(fresh)
		p = fresh
	}
	if c != nil {
		r.ver.Store(ver)
		r.state.CompareAndSwap(rowUnverified, rowVerified)
	}
	return p, answerOK
}

// checkSocket verifies an answer that comes with its socket but no row (the
// resolve source's): every such answer costs one check. It returns p, or a
// fresh description if the process has exec'd since p was read.
func (w *Watcher) checkSocket(s *Socket, p *Process, at time.Time) (*Process, answerResult) {
	if startedAfter(p, at) {
		return nil, answerStartedAfter
	}
	if w.pins == nil {
		return p, answerOK
	}
	w.stats.verifications.Add(1)
	ok, exec := w.pins.holds(nil, procKey{s.PID, s.StartKey}, s.Task, s.FD, s.Inode)
	if !ok {
		w.stats.verifyFailures.Add(1)
		return nil, answerVerifyFailed
	}
	if exec != p.exec {
		if p = w.redescribe(procKey{s.PID, s.StartKey}, exec); p == nil {
			return nil, answerVerifyFailed
		}
	}
	return p, answerOK
}

// redescribe returns a description of process k read while it runs the
// program exec, or nil if none can be read (it exited, or exec'd yet
// again). Verifications found k's earlier description stale, so the
// description replaces it in the recalled-owner cache and, at the next
// rescan, in the rescan's process cache; a failure is remembered for one
// MinRescanInterval so that a storm of lookups does not re-read /proc.
func (w *Watcher) redescribe(k procKey, exec ExecID) *Process {
	now := time.Now()
	w.recalledMu.Lock()
	c, ok := w.recalled[k]
	w.recalledMu.Unlock()
	if ok && c.exec == exec {
		if c.p != nil && now.Sub(c.loaded) < w.cfg.ProcessTTL {
			return c.p
		}
		if c.p == nil && now.Sub(c.loaded) < w.cfg.MinRescanInterval {
			return nil
		}
	}
	w.stats.execChanges.Add(1)
	p, err := w.engine.Process(k.pid, k.start)
	if err != nil || p.exec != exec {
		p = nil
	}
	w.recalledMu.Lock()
	if len(w.recalled) >= recalledCacheSize {
		clear(w.recalled)
	}
	w.recalled[k] = &cachedProc{p: p, loaded: now, exec: exec}
	if len(w.execChanged) < recalledCacheSize {
		w.execChanged[k] = p
	}
	w.recalledMu.Unlock()
	return p
}

// startedAfter reports whether p started after an event at at (plus
// slack). A zero at is now, which every running process started before;
// a zero start is unknown.
func startedAfter(p *Process, at time.Time) bool {
	return !at.IsZero() && !p.Start.IsZero() && p.Start.After(at.Add(eventTimeSlack))
}
