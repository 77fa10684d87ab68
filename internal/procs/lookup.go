package procs

// The watcher's lookup API. Every entry point builds one query and runs
// the pipeline (pipeline.go): the order of the answer sources, each answer
// admitted by the gate (gate.go).

import (
	"net/netip"
	"time"
)

// Lookup is LookupAt for an event happening now.
func (w *Watcher) Lookup(t Transport, local, remote netip.AddrPort) *Process {
	return w.LookupAt(time.Time{}, t, local, remote)
}

// LookupAt is LookupVia without saying how the answer was found.
func (w *Watcher) LookupAt(at time.Time, t Transport, local, remote netip.AddrPort) *Process {
	p, _ := w.LookupVia(at, t, local, remote)
	return p
}

// LookupVia returns the process that owns the local endpoint local talking
// to remote (remote may be the zero AddrPort when unknown) for an event
// that happened at at (zero for now), or nil, and how it was found. An
// answer is given only under the rules of docs/add_network_process.md,
// "When an answer is given" (gate.go). Remote endpoints and cached answers
// cost no allocation; a miss may wait for one coalesced, rate-limited
// rescan, at most RescanTimeout.
func (w *Watcher) LookupVia(at time.Time, t Transport, local, remote netip.AddrPort) (*Process, Via) {
	return w.LookupBy(time.Now(), at, t, local, remote)
}

// LookupBy is LookupVia for a lookup that started at start (the time the
// caller read from the clock), waiting no later than start plus
// RescanTimeout in all (for the exact lookup, the tracker and a rescan).
// The two lookups of one event share one start, so that an event waits no
// longer than RescanTimeout whatever each side needs, and the clock is read
// once per event.
func (w *Watcher) LookupBy(start, at time.Time, t Transport, local, remote netip.AddrPort) (*Process, Via) {
	var q query
	w.newQuery(&q, start, at, "", t, local, remote)
	return w.lookup(&q)
}

// LookupInContainer is LookupInContainerVia without saying how the answer
// was found.
func (w *Watcher) LookupInContainer(containerID string, at time.Time, t Transport, local, remote netip.AddrPort) *Process {
	p, _ := w.LookupInContainerVia(containerID, at, t, local, remote)
	return p
}

// LookupInContainerVia is LookupVia for an event that names the container
// it belongs to: the container's network namespace is searched first, so
// its 127.0.0.1 is not taken for the host's. Without an answer there (or
// for an unknown container) it goes on as LookupVia.
func (w *Watcher) LookupInContainerVia(containerID string, at time.Time, t Transport, local, remote netip.AddrPort) (*Process, Via) {
	return w.LookupInContainerBy(time.Now(), containerID, at, t, local, remote)
}

// LookupInContainerBy is LookupInContainerVia for a lookup that started at
// start (see LookupBy).
func (w *Watcher) LookupInContainerBy(start time.Time, containerID string, at time.Time, t Transport, local, remote netip.AddrPort) (*Process, Via) {
	var q query
	w.newQuery(&q, start, at, containerID, t, local, remote)
	return w.lookup(&q)
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
