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

// row is one socket of a snapshot as the lookup path uses it: its owner,
// what re-checks that owner (inode, descriptor, the owner's pin) and that
// check's state. Rows are shared by a snapshot and its per-namespace
// indexes, so a verification serves both.
type row struct {
	p     *Process // nil: the row exists but no process holds it
	inode uint64
	fd    int32
	task  int32
	// multi marks a row that more than one process could be meant by: a
	// socket several processes hold (Socket.Shared: a pre-forked server's
	// listener, an inherited connection), or a listener endpoint held by
	// sockets of more than one process (an SO_REUSEPORT group, or any
	// duplicate). It never answers (find reports foundAmbiguous): which
	// of them accepted or used a connection is unknown.
	multi bool
	// v6only is the socket's IPV6_V6ONLY flag (V6OnlyUnknown for IPv4).
	v6only V6Only
	// netns and foreign are the socket's namespace, as in Socket.
	netns   uint64
	foreign bool
	// forkSeq is the fork clock's reading before the walk that found the
	// row's holders (Socket.forkSeq).
	forkSeq uint32
	// cur, when set, replaces p as the owner's description: a verification
	// found that the process (same PID and start) had exec'd another
	// program since p was read.
	cur atomic.Pointer[Process]
	// pin is the owner's pinned process handle, taken at its first
	// verification.
	pin atomic.Pointer[pin]
	// state is rowUnverified, rowVerified or rowFailed; ver holds the
	// ChangeClock readings (port<<32 | process) taken before the last
	// successful verification.
	state atomic.Uint32
	ver   atomic.Uint64
}

// desc is the row owner's current description.
func (r *row) desc() *Process {
	if p := r.cur.Load(); p != nil {
		return p
	}
	return r.p
}

const (
	rowUnverified uint32 = iota
	rowVerified
	rowFailed
)

// ambiguousRow marks a local endpoint that connected sockets of different
// processes share (Linux reuses an ephemeral port for connections to
// different peers). The by-endpoint fallback then has no answer: guessing
// one of the owners would name the wrong process for the others, and for a
// connection born after the snapshot, so find reports the endpoint unknown
// and the watcher rescans to find the exact tuple instead.
var ambiguousRow = &row{p: &Process{PID: -1}, multi: true}

// nsAmbiguousRow marks a key that sockets of two or more foreign network
// namespaces share with different owners and the host's namespace does not
// have (two bridges reusing one container address): without the event's
// container which one is meant is unknown. A host socket on the key still
// replaces it (keepBetterOwner). Never written after init: rows of every
// snapshot point to it.
var nsAmbiguousRow = &row{p: &Process{PID: -1, Foreign: true, NetNS: ^uint64(0)}, multi: true, foreign: true, netns: ^uint64(0)}

// snapshot is an immutable index of one rescan. Lookups read it without
// locks; a rescan builds a new one and swaps the pointer. A row without a
// process means "this row exists but no process holds it" (TIME_WAIT,
// orphaned), which answers a lookup without asking for another rescan.
type snapshot struct {
	gen uint64
	// forkSeq is the fork clock's reading before the rescan's walk: its
	// rows' holders are proven alone only for owners that have not forked
	// since (ForkClock).
	forkSeq uint32
	// exact: connected sockets by local+remote, so the worker holding an
	// accepted connection wins over whoever listens.
	exact map[connKey]*row
	// listen: listeners and unconnected UDP sockets by local endpoint,
	// wildcard addresses included as 0.0.0.0 / ::.
	listen map[endKey]*row
	// conn: connected sockets by local endpoint, the last resort when the
	// event's peer does not match the socket's (NAT, proxies).
	conn map[endKey]*row
	// local holds every non-wildcard local address in the socket table.
	local map[addrKey]struct{}

	// rows backs the maps' values, allocated in blocks.
	rows []row

	// byNS indexes each foreign network namespace's sockets on their own,
	// for lookups the event ties to a container; containers maps container
	// IDs to their namespace. Both are nil on hosts with one namespace.
	byNS       map[uint64]*snapshot
	containers map[string]uint64
	// ambiguous counts endpoints that sockets of different namespaces
	// share with different owners (the host's won).
	ambiguous int

	// stale is set once the snapshot is older than socket_cache_ttl; hits
	// are still answered from it (verified) while a rescan is requested.
	stale atomic.Bool

	// gaps is the SocketFeed's gap counter read before the rescan read
	// the tables; fed: it was read (event-driven mode, feed.go).
	gaps uint64
	fed  bool
}

func newSnapshot(gen uint64, n int) *snapshot {
	return &snapshot{
		gen:    gen,
		exact:  make(map[connKey]*row, n),
		listen: make(map[endKey]*row, n/8+1),
		conn:   make(map[endKey]*row, n),
		local:  make(map[addrKey]struct{}),
		rows:   make([]row, 0, max(n, 16)),
	}
}

// newRow returns a zeroed row from the snapshot's current block. Rows are
// never copied once handed out (they hold atomics), so a full block is
// replaced, not grown.
func (s *snapshot) newRow() *row {
	if len(s.rows) == cap(s.rows) {
		s.rows = make([]row, 0, max(cap(s.rows), 16))
	}
	s.rows = s.rows[:len(s.rows)+1]
	return &s.rows[len(s.rows)-1]
}

// add indexes one socket whose owner is p (nil when unowned). A socket that
// several processes hold (sock.Shared) is indexed as multi: it answers
// nothing. Where rows compete for a key, see keepBetterOwner.
func (s *snapshot) add(sock *Socket, p *Process) {
	r := s.newRow()
	r.p, r.inode, r.fd, r.task, r.v6only = p, sock.Inode, sock.FD, sock.Task, sock.V6Only
	r.multi = sock.Shared && p != nil
	r.netns, r.foreign = sock.NetNS, sock.Foreign
	r.forkSeq = s.forkSeq
	if sock.Foreign {
		if s.byNS == nil {
			s.byNS = map[uint64]*snapshot{}
			s.containers = map[string]uint64{}
		}
		sub := s.byNS[sock.NetNS]
		if sub == nil {
			sub = newSnapshot(s.gen, 0)
			s.byNS[sock.NetNS] = sub
		}
		sub.indexSocket(sock, r)
		if p != nil && p.ContainerID != "" {
			s.containers[p.ContainerID] = sock.NetNS
		}
		if sock.Local.Addr().Unmap().IsLoopback() {
			// Every namespace has its own loopback: the host's view does
			// not list another namespace's, which only an event placed in
			// that namespace (its container) may be answered from. Listed,
			// it would also hide a host wildcard socket that does own the
			// endpoint for the host.
			return
		}
	}
	s.indexSocket(sock, r)
}

// indexSocket indexes sock in s itself (add also indexes a foreign socket in
// its namespace's own snapshot).
func (s *snapshot) indexSocket(sock *Socket, r *row) {
	if a := sock.Local.Addr(); !a.IsUnspecified() {
		s.local[keyOf(a)] = struct{}{}
	}
	local := endKeyOf(sock.Transport, sock.Local.Addr(), sock.Local.Port())
	if sock.Listen {
		s.ambiguous += keepListener(s.listen, local, r)
		return
	}
	keepConnOwner(s.conn, local, r)
	if sock.Remote.IsValid() && sock.Remote.Port() != 0 {
		s.ambiguous += keepBetterOwner(s.exact, connKeyOf(sock.Transport, sock.Local, sock.Remote), r)
	}
}

// keepConnOwner records r as the row of connected sockets at endpoint k,
// or ambiguousRow when another process already holds one there or r's
// socket is shared.
func keepConnOwner(m map[endKey]*row, k endKey, r *row) {
	old, ok := m[k]
	switch {
	case !ok && r.multi:
		m[k] = ambiguousRow
	case !ok:
		m[k] = r
	case old == ambiguousRow || old.p == r.p:
	case r.multi || old.p == nil || r.p == nil || old.p.PID != r.p.PID:
		m[k] = ambiguousRow
	}
}

// keepBetterOwner keeps the better row for k: an owned socket over an
// unowned one, the host namespace's over another namespace's (an event
// without container context is taken for the host's; other namespaces'
// loopback sockets are not indexed here at all, see add). Owners that
// cannot be told apart make k ambiguous: two processes of one namespace (ambiguousRow), or two foreign
// namespaces without a host socket (nsAmbiguousRow). It returns 1 when
// owners from different namespaces competed for k, for the ambiguity
// count.
func keepBetterOwner[K comparable](m map[K]*row, k K, r *row) int {
	old, ok := m[k]
	switch {
	case !ok || old.p == nil:
		m[k] = r
	case r.p == nil:
	case old.p.Foreign != r.p.Foreign || old.p.NetNS != r.p.NetNS:
		switch {
		case !r.p.Foreign:
			m[k] = r // the host's wins
		case old.p.Foreign:
			m[k] = nsAmbiguousRow
		}
		return 1
	case old == ambiguousRow:
	case old.p.PID != r.p.PID:
		m[k] = ambiguousRow
	}
	return 0
}

// keepListener is keepBetterOwner for listeners, except that sockets of one
// namespace held by different processes (or one of them by none) mark the
// endpoint multi: its listener answers nothing.
func keepListener(m map[endKey]*row, k endKey, r *row) int {
	old, ok := m[k]
	sameSocket := ok && old.inode != 0 && old.inode == r.inode
	if ok && !sameSocket && old.p != r.p && sameNamespace(old, r) && (old.p == nil || r.p == nil || old.p.PID != r.p.PID) {
		if r.p != nil && (old.p == nil || r.p.PID < old.p.PID) {
			m[k] = r
		}
		if !m[k].multi {
			m[k].multi = true
		}
		return 0
	}
	return keepBetterOwner(m, k, r)
}

// sameNamespace reports whether two rows' sockets share a network
// namespace.
func sameNamespace(a, b *row) bool {
	return a.foreign == b.foreign && a.netns == b.netns
}

// inContainer returns the index of the container's namespace and the
// namespace, or nil.
func (s *snapshot) inContainer(id string) (*snapshot, uint64) {
	if s.containers == nil || id == "" {
		return nil, 0
	}
	if ns, ok := s.containers[id]; ok {
		return s.byNS[ns], ns
	}
	return nil, 0
}

// findResult qualifies a snapshot row found for a lookup.
type findResult uint8

const (
	foundNone      findResult = iota // no row matched
	foundUnowned                     // a row matched; no process holds it
	foundRow                         // r names the owner
	foundAmbiguous                   // the row that matched could mean several processes (row.multi)
)

// find resolves a local endpoint; via says which kind of row answered
// (ViaSocket, ViaListener or ViaEndpoint) when res is foundRow. An unknown
// endpoint (foundNone) may be a socket born after the snapshot; so may a
// connection to an ambiguous listener (foundAmbiguous), which only the
// exact tuple resolves.
func (s *snapshot) find(t Transport, local, remote netip.AddrPort) (*row, findResult, Via) {
	known := false
	if remote.IsValid() {
		if r, ok := s.exact[connKeyOf(t, local, remote)]; ok {
			if r.multi {
				return nil, foundAmbiguous, ViaNone
			}
			if r.p != nil {
				return r, foundRow, ViaSocket
			}
			known = true
		}
	}
	if r, res := s.listenerFor(t, local); res == foundRow || res == foundAmbiguous {
		return r, res, ViaListener
	} else if res == foundUnowned {
		known = true
	}
	port := local.Port()
	// The by-endpoint fallback serves only events whose peer is unknown. A
	// connected socket talks to one peer, and Linux reuses an ephemeral
	// port for connections to different peers: with a known peer that
	// missed the exact map, the socket found by endpoint is another
	// connection (seen live with a benchmark churning loopback connections:
	// a closed client's port was answered with the benchmark's PID), so
	// answering its owner would name the wrong process.
	if !remote.IsValid() {
		if r, ok := s.conn[endKeyOf(t, local.Addr(), port)]; ok && !r.multi {
			if r.p != nil {
				return r, foundRow, ViaEndpoint
			}
			known = true
		}
	}
	if known {
		return nil, foundUnowned, ViaNone
	}
	return nil, foundNone, ViaNone
}

// listenerFor finds the listener (or unconnected UDP socket) that owns a
// local endpoint: the specific address, then the wildcards. The first
// endpoint that exists decides (the kernel prefers the most specific bind);
// if several processes hold it, no listener answers (foundAmbiguous).
func (s *snapshot) listenerFor(t Transport, local netip.AddrPort) (*row, findResult) {
	known := false
	port := local.Port()
	if r, ok := s.listen[endKeyOf(t, local.Addr(), port)]; ok {
		if res, done := listenerResult(r); done {
			return r, res
		}
		known = true
	}
	v4 := local.Addr().Is4()
	var any4 *row
	if v4 {
		if r, ok := s.listen[endKeyOf(t, anyV4, port)]; ok {
			any4 = r
		}
	}
	if r, ok := s.listen[endKeyOf(t, anyV6, port)]; ok && (!v4 || r.v6only == V6OnlyOff) {
		// A [::] socket accepts IPv4 only when IPV6_V6ONLY is known to be
		// off (sock_diag says; the text tables do not). Next to a 0.0.0.0
		// listener of another process, which of them an IPv4 connection
		// reached is not known.
		if any4 != nil && (any4.p == nil || r.p == nil || any4.p.PID != r.p.PID) && sameNamespace(any4, r) {
			return nil, foundAmbiguous
		}
		if any4 == nil {
			if res, done := listenerResult(r); done {
				return r, res
			}
			known = true
		}
	}
	if any4 != nil {
		if res, done := listenerResult(any4); done {
			return any4, res
		}
		known = true
	}
	if known {
		return nil, foundUnowned
	}
	return nil, foundNone
}

// listenerResult qualifies a listener row; done is false for an unowned
// one, which lets a wildcard still answer.
func listenerResult(r *row) (findResult, bool) {
	switch {
	case r.multi:
		return foundAmbiguous, true
	case r.p != nil:
		return foundRow, true
	}
	return foundUnowned, false
}

func (s *snapshot) isLocal(a netip.Addr) bool {
	_, ok := s.local[keyOf(a)]
	return ok
}
