package procs

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// addrState is the host's set of local addresses: the last list read
// through the engine (this namespace's interfaces and every other
// namespace's), with the address events received since (addrwatch_linux.go)
// applied on top until a list taken after them has them.
type addrState struct {
	mu     sync.Mutex
	listed map[netip.Addr]struct{}
	over   map[netip.Addr]addrOverride
	// removed holds addresses an event deleted and none re-added. A socket
	// may still be bound to one (an established connection survives its
	// address, a TIME_WAIT row lingers); such an address is taken out of
	// the snapshot's socket-table addresses, so that it stops counting as
	// local, until no socket has it.
	removed map[netip.Addr]struct{}

	events, resyncs atomic.Uint64
}

type addrOverride struct {
	add bool
	at  time.Time
}

// addrEventSettle: a list started this long after an event is trusted to
// include it (the kernel sends RTM_NEWADDR/RTM_DELADDR just before it
// updates the local routes that /proc/net/fib_trie shows).
const addrEventSettle = 100 * time.Millisecond

// refreshAddrs lists the host's addresses through the engine.
func (w *Watcher) refreshAddrs() {
	started := time.Now()
	addrs, err := w.engine.LocalAddrs()
	if err != nil {
		w.warn.log("addrs", fmt.Errorf("listing the host's addresses failed: %w; only loopback and socket-table addresses count as local", err))
	}
	m := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		m[a.Unmap()] = struct{}{}
	}
	as := &w.as
	as.mu.Lock()
	defer as.mu.Unlock()
	as.listed = m
	for a, o := range as.over {
		if started.Sub(o.at) >= addrEventSettle {
			delete(as.over, a)
		}
	}
	for a := range as.removed {
		if _, listed := m[a]; listed {
			if o, ok := as.over[a]; !ok || o.add {
				delete(as.removed, a) // local again (another interface, namespace)
			}
		}
	}
	w.publishAddrsLocked()
}

// addrEvent applies one address event of this namespace at once.
func (w *Watcher) addrEvent(add bool, a netip.Addr, now time.Time) {
	a = a.Unmap()
	as := &w.as
	as.events.Add(1)
	as.mu.Lock()
	if as.over == nil {
		as.over = map[netip.Addr]addrOverride{}
		as.removed = map[netip.Addr]struct{}{}
	}
	as.over[a] = addrOverride{add, now}
	inSnapshot := false
	if add {
		delete(as.removed, a)
	} else {
		as.removed[a] = struct{}{}
		_, inSnapshot = w.snap.Load().local[keyOf(a)]
	}
	w.publishAddrsLocked()
	as.mu.Unlock()
	if inSnapshot {
		// A socket still has the address: the next snapshot leaves it out.
		w.requestRescan()
	}
}

// publishAddrsLocked stores the list with the recent events applied; as.mu
// must be held.
func (w *Watcher) publishAddrsLocked() {
	as := &w.as
	m := make(map[netip.Addr]struct{}, len(as.listed)+len(as.over))
	for a := range as.listed {
		m[a] = struct{}{}
	}
	for a, o := range as.over {
		if o.add {
			m[a] = struct{}{}
		} else {
			delete(m, a)
		}
	}
	w.addrs.Store(&m)
}

// publishSnapshot makes snap the current snapshot, without the addresses
// an event removed from the host.
func (w *Watcher) publishSnapshot(snap *snapshot) {
	as := &w.as
	as.mu.Lock()
	defer as.mu.Unlock()
	for a := range as.removed {
		k := keyOf(a)
		if _, ok := snap.local[k]; ok {
			delete(snap.local, k)
		} else {
			delete(as.removed, a) // no socket has it any more
		}
	}
	w.snap.Store(snap)
}
