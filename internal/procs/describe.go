package procs

// Process descriptions: read through the engine (read), stamped with when
// they were read so that the gate can bound their age, and cached by
// process instance. The rescan keeps its own cache of the owners of the
// sockets it lists (rescan.go); descriptions read on the lookup path (the
// owners that sources other than the snapshot name, and descriptions read
// again after an exec or for age) share the recalled cache below.

import (
	"time"
)

// recalledCacheSize caps descriptions read on the lookup path; short-lived
// clients come and go, so the cache is simply dropped when full.
const recalledCacheSize = 4096

// read describes process k through the engine, stamped with the time it
// was read. The engine's *Process is copied: a fake engine may hand out
// one it keeps.
func (w *Watcher) read(k procKey) (*Process, error) {
	p, err := w.engine.Process(k.pid, k.start)
	if err != nil {
		return nil, err
	}
	c := *p
	c.described = time.Now().UnixNano()
	return &c, nil
}

// cached returns the recalled cache's entry for k.
func (w *Watcher) cached(k procKey) (*cachedProc, bool) {
	w.recalledMu.Lock()
	c, ok := w.recalled[k]
	w.recalledMu.Unlock()
	return c, ok
}

// keep stores an entry in the recalled cache; a description read again
// after an exec (execChanged) is also handed to the next rescan.
func (w *Watcher) keep(k procKey, c *cachedProc, execChanged bool) {
	w.recalledMu.Lock()
	if len(w.recalled) >= recalledCacheSize {
		clear(w.recalled)
	}
	w.recalled[k] = c
	if execChanged && len(w.execChanged) < recalledCacheSize {
		w.execChanged[k] = c.p
	}
	w.recalledMu.Unlock()
}

// describe returns the cached or freshly read description of sock's owner,
// or minimal when it has exited (nil if there is none).
func (w *Watcher) describe(sock Socket, minimal *Process) *Process {
	k := procKey{sock.PID, sock.StartKey}
	now := time.Now()
	if c, ok := w.cached(k); ok && c.p != nil && now.Sub(c.loaded) < w.cfg.ProcessTTL {
		return c.p
	}
	p, err := w.read(k)
	if err != nil {
		if minimal == nil {
			return nil
		}
		p = minimal // exited (or recycled): what the record saw is all there is
	}
	w.keep(k, &cachedProc{p: p, loaded: now, exec: p.exec}, false)
	return p
}

// redescribe returns a description of process k read while it runs the
// program exec, or nil if none can be read (it exited, or exec'd yet
// again). Verifications found k's earlier description stale, so the
// description replaces it in the recalled cache and, at the next rescan,
// in the rescan's process cache; a failure is remembered for one
// MinRescanInterval so that a storm of lookups does not re-read /proc.
func (w *Watcher) redescribe(k procKey, exec ExecID) *Process {
	now := time.Now()
	if c, ok := w.cached(k); ok && c.exec == exec {
		if c.p != nil && now.Sub(c.loaded) < w.cfg.ProcessTTL {
			return c.p
		}
		if c.p == nil && now.Sub(c.loaded) < w.cfg.MinRescanInterval {
			return nil
		}
	}
	w.stats.execChanges.Add(1)
	p, err := w.read(k)
	if err != nil || p.exec != exec {
		p = nil
	}
	w.keep(k, &cachedProc{p: p, loaded: now, exec: exec}, true)
	return p
}

// reread returns a description of process k no older than ProcessTTL, for
// a description that has aged past it (gate.go, rule 5); nil if the
// process cannot be described any more.
func (w *Watcher) reread(k procKey, now time.Time) *Process {
	if c, ok := w.cached(k); ok && c.p != nil && now.UnixNano()-c.p.described < int64(w.cfg.ProcessTTL) {
		return c.p
	}
	w.stats.rereads.Add(1)
	p, err := w.read(k)
	if err != nil {
		return nil
	}
	w.keep(k, &cachedProc{p: p, loaded: now, exec: p.exec}, false)
	return p
}
