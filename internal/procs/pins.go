package procs

import (
	"sync"
	"sync/atomic"
	"time"
)

// Pinned process handles: the OwnerVerifier checks that a process still
// holds a socket through a handle on its /proc/<pid> directory, which fails
// once that process instance has exited even if its PID is reused. Handles
// are descriptors, and a beat needs descriptors for the files it harvests:
// the set keeps at most max of them (pinBudget) and verifies past that
// through a handle opened for the one check and closed after it.

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

// pinSet holds the pins of the processes recently verified, at most max.
type pinSet struct {
	v         OwnerVerifier
	max       int
	mu        sync.Mutex
	m         map[procKey]*pin
	lastPrune time.Time
	// unpinned counts checks made through a handle opened for that check
	// alone because the set was full.
	unpinned atomic.Uint64
}

// newPinSet returns a set of at most pinBudget(limit) pins, limit being the
// process's open-files limit (0: unknown).
func newPinSet(v OwnerVerifier, limit uint64) *pinSet {
	return &pinSet{v: v, max: pinBudget(limit), m: map[procKey]*pin{}}
}

// pinBudget is the number of pinned handles kept for an open-files limit:
// an eighth of it, between 16 and 4096 (4096 with no known limit). The rest
// is left to the beat: its harvested files, connections and its own
// monitoring.
func pinBudget(limit uint64) int {
	if limit == 0 || limit > 8*4096 {
		return 4096
	}
	return max(16, int(limit/8))
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
	p.lastUse.Store(now.UnixNano())
	old, had := s.m[k]
	if !had && len(s.m) >= s.max {
		// Full: a handle for this check alone, released with it.
		s.unpinned.Add(1)
		p.refs.Store(1)
		return p
	}
	p.refs.Store(2) // the set's and the caller's
	if had {
		s.release(old)
	}
	s.m[k] = p
	return p
}

// kept reports whether p is held by the set (not a one-check handle).
func (p *pin) kept() bool { return p.refs.Load() > 1 }

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
		if slot != nil && p.kept() {
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
