package procs

// Servers that hand connections off: a fork-per-connection server (sshd, a
// postmaster, inetd) accepts on a listener it alone holds and a child
// serves each connection. Neither its listener nor a record of what it
// accepted is proof of who served a connection, so the gate gives neither
// for an event that names a peer (gate.go, rule 1). A process is marked
// when a connection on its listener's endpoint is held by another process
// (seen by a rescan or by the exact lookup), or when the kernel shows a
// connection it accepted or opened held by another process (the resolve
// source's handedOff). Marks last while the process holds a socket the
// last rescan listed.

import (
	"net/netip"
	"sync"
)

// handsOffSet is the set of marked processes.
type handsOffSet struct {
	mu sync.RWMutex
	m  map[procKey]struct{}
}

// handsOffCap bounds the set; it is cleared when full.
const handsOffCap = 4096

// note marks process k.
func (h *handsOffSet) note(k procKey) {
	h.mu.Lock()
	if h.m == nil || len(h.m) >= handsOffCap {
		h.m = map[procKey]struct{}{}
	}
	h.m[k] = struct{}{}
	h.mu.Unlock()
}

// has reports whether process k is marked.
func (h *handsOffSet) has(k procKey) bool {
	h.mu.RLock()
	_, ok := h.m[k]
	h.mu.RUnlock()
	return ok
}

// served marks the holder of snap's TCP listener for local when the
// connection at local is held by pid, another process.
func (h *handsOffSet) served(snap *snapshot, local netip.AddrPort, pid int) {
	if r, res := snap.listenerFor(TCP, local); res == foundRow && r.p.PID != pid {
		h.note(procKey{r.p.PID, r.p.StartKey})
	}
}

// rescanned marks what a rescan shows (connections held by another process
// than their listener's) and forgets processes that hold none of its
// sockets (used: the owners of the rescan's sockets).
func (h *handsOffSet) rescanned(snap *snapshot, socks []Socket, used map[procKey]struct{}) {
	for i := range socks {
		if s := &socks[i]; s.Transport == TCP && !s.Listen && s.PID > 0 && !s.Foreign {
			h.served(snap, s.Local, s.PID)
		}
	}
	h.mu.Lock()
	for k := range h.m {
		if _, ok := used[k]; !ok {
			delete(h.m, k)
		}
	}
	h.mu.Unlock()
}
