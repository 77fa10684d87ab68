package procs

import (
	"net/netip"
	"sync/atomic"
)

// endKey names one local endpoint of one transport.
type endKey struct {
	t  Transport
	ap netip.AddrPort
}

// tupleKey names a connection as seen from its local end.
type tupleKey struct {
	t             Transport
	local, remote netip.AddrPort
}

var (
	anyV4 = netip.IPv4Unspecified()
	anyV6 = netip.IPv6Unspecified()
)

// snapshot is an immutable index of one rescan. Lookups read it without
// locks; a rescan builds a new one and swaps the pointer. A nil *Process in a
// map means "this row exists but no process holds it" (TIME_WAIT, orphaned),
// which answers a lookup without asking for another rescan.
type snapshot struct {
	gen uint64
	// exact: connected sockets by local+remote, so the worker holding an
	// accepted connection wins over whoever listens.
	exact map[tupleKey]*Process
	// listen: listeners and unconnected UDP sockets by local endpoint,
	// wildcard addresses included as 0.0.0.0 / ::.
	listen map[endKey]*Process
	// conn: connected sockets by local endpoint, the last resort when the
	// event's peer does not match the socket's (NAT, proxies).
	conn map[endKey]*Process
	// local holds every non-wildcard local address in the socket table.
	local map[netip.Addr]struct{}

	// stale is set once the snapshot is older than socket_cache_ttl; hits
	// are still answered from it while a rescan is requested.
	stale atomic.Bool
}

func newSnapshot(gen uint64, n int) *snapshot {
	return &snapshot{
		gen:    gen,
		exact:  make(map[tupleKey]*Process, n),
		listen: make(map[endKey]*Process, n/8+1),
		conn:   make(map[endKey]*Process, n),
		local:  make(map[netip.Addr]struct{}),
	}
}

// add indexes one socket whose owner is p (nil when unowned). When several
// rows compete for a key the owned one with the lowest PID wins, so a socket
// shared after fork resolves to the same process every time.
func (s *snapshot) add(sock *Socket, p *Process) {
	if a := sock.Local.Addr(); !a.IsUnspecified() {
		s.local[a] = struct{}{}
	}
	if sock.Listen {
		put(s.listen, endKey{sock.Transport, sock.Local}, p)
		return
	}
	put(s.conn, endKey{sock.Transport, sock.Local}, p)
	if sock.Remote.IsValid() && sock.Remote.Port() != 0 {
		put(s.exact, tupleKey{sock.Transport, sock.Local, sock.Remote}, p)
	}
}

func put[K comparable](m map[K]*Process, k K, p *Process) {
	old, ok := m[k]
	if !ok || old == nil || (p != nil && p.PID < old.PID) {
		m[k] = p
	}
}

// find resolves a local endpoint. known reports whether any row matched,
// owned or not: an unknown endpoint may be a socket born after the snapshot.
func (s *snapshot) find(t Transport, local, remote netip.AddrPort) (p *Process, known bool) {
	if remote.IsValid() {
		if p, ok := s.exact[tupleKey{t, local, remote}]; ok {
			if p != nil {
				return p, true
			}
			known = true
		}
	}
	if p, ok := s.listen[endKey{t, local}]; ok {
		if p != nil {
			return p, true
		}
		known = true
	}
	port := local.Port()
	if local.Addr().Is4() {
		if p, ok := s.listen[endKey{t, netip.AddrPortFrom(anyV4, port)}]; ok {
			if p != nil {
				return p, true
			}
			known = true
		}
	}
	// A dual-stack [::] socket also accepts IPv4 (net.ipv6.bindv6only=0,
	// the default); /proc does not show IPV6_V6ONLY, so this is assumed.
	if p, ok := s.listen[endKey{t, netip.AddrPortFrom(anyV6, port)}]; ok {
		if p != nil {
			return p, true
		}
		known = true
	}
	if p, ok := s.conn[endKey{t, local}]; ok {
		if p != nil {
			return p, true
		}
		known = true
	}
	return nil, known
}

func (s *snapshot) isLocal(a netip.Addr) bool {
	_, ok := s.local[a]
	return ok
}
