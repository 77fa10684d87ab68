package procs

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"unsafe"
)

// tupleKey names a connection as seen from its local end.
type tupleKey struct {
	t             Transport
	local, remote netip.AddrPort
}

// The snapshot's maps are keyed by plain integers, not by netip values:
// netip.Addr holds a pointer (its zone), so a map keyed by it hashes field by
// field, which cost ~50 ns per probe; a key of padding-free uint64s is hashed
// as one block of memory (~10 ns). Addresses are stored as their 16-byte
// form: callers pass unmapped addresses, so an IPv4 address and its
// IPv4-mapped IPv6 form, which are the same endpoint, share a key, while
// 0.0.0.0 (::ffff:0:0) and :: stay distinct. Zones are not part of the key;
// socket tables carry none.
type addrKey struct{ hi, lo uint64 }

// endKey names one local endpoint of one transport.
type endKey struct {
	a  addrKey
	tp uint64 // transport<<16 | port
}

// connKey names a connection as seen from its local end.
type connKey struct {
	l, r addrKey
	tp   uint64 // transport<<32 | local port<<16 | remote port
}

func keyOf(a netip.Addr) addrKey {
	if rawAddrLayout {
		// netip.Addr starts with its address as a uint128{hi, lo}: read
		// it in place instead of serialising it through As16.
		u := (*[2]uint64)(unsafe.Pointer(&a))
		return addrKey{u[0], u[1]}
	}
	b := a.As16()
	return addrKey{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// rawAddrLayout reports whether netip.Addr's first 16 bytes are the
// address's high and low halves, as in every Go release so far; if a
// release changes that, keyOf falls back to As16.
var rawAddrLayout = func() bool {
	for _, s := range []string{"102:304:506:708:90a:b0c:d0e:f10", "127.0.0.1", "::"} {
		a := netip.MustParseAddr(s)
		b := a.As16()
		u := (*[2]uint64)(unsafe.Pointer(&a))
		if unsafe.Sizeof(a) < 16 || u[0] != binary.BigEndian.Uint64(b[:8]) || u[1] != binary.BigEndian.Uint64(b[8:]) {
			return false
		}
	}
	return true
}()

func endKeyOf(t Transport, a netip.Addr, port uint16) endKey {
	return endKey{keyOf(a), uint64(t)<<16 | uint64(port)}
}

func connKeyOf(t Transport, local, remote netip.AddrPort) connKey {
	return connKey{keyOf(local.Addr()), keyOf(remote.Addr()), uint64(t)<<32 | uint64(local.Port())<<16 | uint64(remote.Port())}
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
	exact map[connKey]*Process
	// listen: listeners and unconnected UDP sockets by local endpoint,
	// wildcard addresses included as 0.0.0.0 / ::.
	listen map[endKey]*Process
	// conn: connected sockets by local endpoint, the last resort when the
	// event's peer does not match the socket's (NAT, proxies).
	conn map[endKey]*Process
	// local holds every non-wildcard local address in the socket table.
	local map[addrKey]struct{}

	// byNS indexes each foreign network namespace's sockets on their own,
	// for lookups the event ties to a container; containers maps container
	// IDs to their namespace. Both are nil on hosts with one namespace.
	byNS       map[uint64]*snapshot
	containers map[string]uint64
	// ambiguous counts endpoints that sockets of different namespaces
	// share with different owners (the host's won).
	ambiguous int

	// stale is set once the snapshot is older than socket_cache_ttl; hits
	// are still answered from it while a rescan is requested.
	stale atomic.Bool
}

func newSnapshot(gen uint64, n int) *snapshot {
	return &snapshot{
		gen:    gen,
		exact:  make(map[connKey]*Process, n),
		listen: make(map[endKey]*Process, n/8+1),
		conn:   make(map[endKey]*Process, n),
		local:  make(map[addrKey]struct{}),
	}
}

// add indexes one socket whose owner is p (nil when unowned). When several
// rows compete for a key the owned one with the lowest PID wins, so a socket
// shared after fork resolves to the same process every time.
func (s *snapshot) add(sock *Socket, p *Process) {
	if sock.Foreign {
		if s.byNS == nil {
			s.byNS = map[uint64]*snapshot{}
			s.containers = map[string]uint64{}
		}
		sub := s.byNS[sock.NetNS]
		if sub == nil {
			sub = newSnapshot(s.gen, 16)
			s.byNS[sock.NetNS] = sub
		}
		sub.indexSocket(sock, p)
		if p != nil && p.ContainerID != "" {
			s.containers[p.ContainerID] = sock.NetNS
		}
	}
	s.indexSocket(sock, p)
}

// indexSocket indexes sock in s itself (add also indexes a foreign socket in
// its namespace's own snapshot).
func (s *snapshot) indexSocket(sock *Socket, p *Process) {
	if a := sock.Local.Addr(); !a.IsUnspecified() {
		s.local[keyOf(a)] = struct{}{}
	}
	local := endKeyOf(sock.Transport, sock.Local.Addr(), sock.Local.Port())
	if sock.Listen {
		s.ambiguous += keepBetterOwner(s.listen, local, p)
		return
	}
	keepConnOwner(s.conn, local, p)
	if sock.Remote.IsValid() && sock.Remote.Port() != 0 {
		s.ambiguous += keepBetterOwner(s.exact, connKeyOf(sock.Transport, sock.Local, sock.Remote), p)
	}
}

// ambiguous marks a local endpoint that connected sockets of different
// processes share (Linux reuses an ephemeral port for connections to
// different peers). The by-endpoint fallback then has no answer: guessing
// one of the owners would name the wrong process for the others, and for a
// connection born after the snapshot, so find reports the endpoint unknown
// and the watcher rescans to find the exact tuple instead.
var ambiguous = &Process{PID: -1}

// keepConnOwner records p as the owner of connected sockets at endpoint k,
// or ambiguous when another process already holds one there.
func keepConnOwner(m map[endKey]*Process, k endKey, p *Process) {
	old, ok := m[k]
	switch {
	case !ok:
		m[k] = p
	case old == ambiguous || old == p:
	case old == nil || p == nil || old.PID != p.PID:
		m[k] = ambiguous
	}
}

// keepBetterOwner keeps the better owner for k: an owned socket over an unowned one,
// the host namespace's over another namespace's (every container has its
// own 127.0.0.1), then the lowest PID. It returns 1 when owners from
// different namespaces competed for k, for the ambiguity count.
func keepBetterOwner[K comparable](m map[K]*Process, k K, p *Process) int {
	old, ok := m[k]
	switch {
	case !ok || old == nil:
		m[k] = p
	case p == nil:
	case old.Foreign != p.Foreign || old.NetNS != p.NetNS:
		if old.Foreign && !p.Foreign {
			m[k] = p
		}
		return 1
	case p.PID < old.PID:
		m[k] = p
	}
	return 0
}

// inContainer returns the index of the container's namespace, or nil.
func (s *snapshot) inContainer(id string) *snapshot {
	if s.containers == nil || id == "" {
		return nil
	}
	if ns, ok := s.containers[id]; ok {
		return s.byNS[ns]
	}
	return nil
}

// find resolves a local endpoint. known reports whether any row matched,
// owned or not: an unknown endpoint may be a socket born after the snapshot.
func (s *snapshot) find(t Transport, local, remote netip.AddrPort) (p *Process, known bool) {
	if remote.IsValid() {
		if p, ok := s.exact[connKeyOf(t, local, remote)]; ok {
			if p != nil {
				return p, true
			}
			known = true
		}
	}
	lk := endKeyOf(t, local.Addr(), local.Port())
	if p, ok := s.listen[lk]; ok {
		if p != nil {
			return p, true
		}
		known = true
	}
	port := local.Port()
	if local.Addr().Is4() {
		if p, ok := s.listen[endKeyOf(t, anyV4, port)]; ok {
			if p != nil {
				return p, true
			}
			known = true
		}
	}
	// A dual-stack [::] socket also accepts IPv4 (net.ipv6.bindv6only=0,
	// the default); /proc does not show IPV6_V6ONLY, so this is assumed.
	if p, ok := s.listen[endKeyOf(t, anyV6, port)]; ok {
		if p != nil {
			return p, true
		}
		known = true
	}
	// The by-endpoint fallback serves only events whose peer is unknown. A
	// connected socket talks to one peer, and Linux reuses an ephemeral
	// port for connections to different peers: with a known peer that
	// missed the exact map, the socket found by endpoint is another
	// connection (seen live with a benchmark churning loopback connections:
	// a closed client's port was answered with the benchmark's PID), so
	// answering its owner would name the wrong process.
	if !remote.IsValid() {
		if p, ok := s.conn[lk]; ok && p != ambiguous {
			if p != nil {
				return p, true
			}
			known = true
		}
	}
	return nil, known
}

func (s *snapshot) isLocal(a netip.Addr) bool {
	_, ok := s.local[keyOf(a)]
	return ok
}
