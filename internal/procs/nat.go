package procs

// NAT-aware lookups. An event logged at the host's edge (a firewall log,
// netflow, a reverse proxy) carries the tuple as seen outside the NAT: a
// published port's DNAT, or a container's masqueraded connection, gives the
// event a tuple no socket has. The kernel's connection tracking holds both
// the original and the reply tuple of each translated connection; the
// socket's own tuple is read from there and looked up instead.

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Conntrack reads the kernel's connection tracking table.
type Conntrack interface {
	// Get returns the entry whose original or reply tuple is src → dst
	// (the kernel finds either), found false when there is none.
	Get(t Transport, src, dst netip.AddrPort) (e ConntrackEntry, found bool, err error)
	Close() error
}

// ConntrackEntry is one tracked connection: the tuple of its first packet
// (Orig) and the tuple its replies are expected on (Reply), both as the
// kernel holds them after translation.
type ConntrackEntry struct {
	OrigSrc, OrigDst   netip.AddrPort
	ReplySrc, ReplyDst netip.AddrPort
}

// ErrConntrackUnavailable wraps errors that mean conntrack cannot be read
// at all (no CAP_NET_ADMIN, nf_conntrack not loaded, not Linux): the NAT
// lookup turns itself off.
var ErrConntrackUnavailable = errors.New("conntrack unavailable")

// socketSide returns the tuple of the local socket behind the event tuple
// local ↔ remote: an inbound connection (its original tuple is remote →
// local) is received by a socket at the reply's source talking to the
// reply's destination; an outbound one (its reply tuple is remote → local)
// was sent by a socket at the original's source.
func (e ConntrackEntry) socketSide(local, remote netip.AddrPort) (netip.AddrPort, netip.AddrPort, bool) {
	switch {
	case e.OrigSrc == remote && e.OrigDst == local:
		return e.ReplySrc, e.ReplyDst, true
	case e.ReplySrc == remote && e.ReplyDst == local:
		return e.OrigSrc, e.OrigDst, true
	}
	return netip.AddrPort{}, netip.AddrPort{}, false
}

// natState is what the NAT lookup learnt of one event tuple.
type natState uint8

const (
	natUnchecked    natState = iota // not asked: budget spent, or a query failed
	natUnavailable                  // conntrack cannot be read; lookups go on as without it
	natUntranslated                 // no entry, or one whose socket has the event's tuple
	natTranslated                   // the socket's tuple differs: use the one returned
)

// natSource budgets and caches conntrack queries like the resolve source:
// at most per queries per interval, and each answer (translated or not)
// remembered per tuple for ttl.
type natSource struct {
	ct       Conntrack
	per      int
	interval time.Duration
	ttl      time.Duration
	warn     func(error)

	off atomic.Bool // ErrConntrackUnavailable seen: never asked again

	mu          sync.Mutex
	windowStart time.Time
	used        int
	cache       map[connKey]natEntry

	queries, translated, errs, budget atomic.Uint64
}

type natEntry struct {
	local, remote netip.AddrPort
	translated    bool
	until         time.Time
}

const natCacheSize = 4096

func newNATSource(ct Conntrack, per int, interval time.Duration, warn func(error)) *natSource {
	return &natSource{ct: ct, per: per, interval: interval, ttl: 10 * interval, warn: warn, cache: map[connKey]natEntry{}}
}

// translate returns the tuple of the socket behind the event tuple local ↔
// remote when conntrack shows it translated.
func (n *natSource) translate(t Transport, local, remote netip.AddrPort) (netip.AddrPort, netip.AddrPort, natState) {
	if n.off.Load() {
		return netip.AddrPort{}, netip.AddrPort{}, natUnavailable
	}
	if !remote.IsValid() || remote.Port() == 0 || local.Port() == 0 || local.Addr().Is4() != remote.Addr().Is4() {
		// conntrack is keyed by the whole tuple: without a peer there is
		// nothing to ask, and nothing says the endpoint was translated.
		return netip.AddrPort{}, netip.AddrPort{}, natUntranslated
	}
	k := connKeyOf(t, local, remote)
	now := time.Now()
	n.mu.Lock()
	if e, ok := n.cache[k]; ok && now.Before(e.until) {
		n.mu.Unlock()
		if e.translated {
			return e.local, e.remote, natTranslated
		}
		return netip.AddrPort{}, netip.AddrPort{}, natUntranslated
	}
	if now.Sub(n.windowStart) >= n.interval {
		n.windowStart, n.used = now, 0
	}
	if n.used >= n.per {
		n.mu.Unlock()
		n.budget.Add(1)
		return netip.AddrPort{}, netip.AddrPort{}, natUnchecked
	}
	n.used++
	n.mu.Unlock()

	n.queries.Add(1)
	e, found, err := n.ct.Get(t, remote, local)
	if err != nil {
		if errors.Is(err, ErrConntrackUnavailable) {
			if !n.off.Swap(true) && n.warn != nil {
				n.warn(err)
			}
			return netip.AddrPort{}, netip.AddrPort{}, natUnavailable
		}
		n.errs.Add(1)
		if n.warn != nil {
			n.warn(err)
		}
		return netip.AddrPort{}, netip.AddrPort{}, natUnchecked
	}
	ent := natEntry{until: now.Add(n.ttl)}
	if found {
		if l, r, ok := e.socketSide(local, remote); ok && (l != local || r != remote) {
			ent.translated = true
			ent.local = netip.AddrPortFrom(l.Addr().Unmap(), l.Port())
			ent.remote = netip.AddrPortFrom(r.Addr().Unmap(), r.Port())
			n.translated.Add(1)
		}
	}
	n.mu.Lock()
	if len(n.cache) >= natCacheSize {
		clear(n.cache)
	}
	n.cache[k] = ent
	n.mu.Unlock()
	if ent.translated {
		return ent.local, ent.remote, natTranslated
	}
	return netip.AddrPort{}, netip.AddrPort{}, natUntranslated
}

func (n *natSource) close() error {
	return n.ct.Close()
}

// natPerInterval is the conntrack query budget per MinRescanInterval
// (1024 a second at the default 250ms); each answer is cached per tuple for
// ten intervals.
const natPerInterval = 256

// natAnswer answers a tuple that conntrack showed translated to the socket
// tuple q.natLocal ↔ q.natRemote, with the owner of that socket: the
// connected socket of that exact tuple, or a listener bound to that exact
// address (a wildcard listener is no proof: which namespace holds the
// translated address is not known from it). A snapshot without it waits
// for one rescan, no later than q's deadline. Nothing else answers: the
// event's own tuple belongs to no socket.
func (w *Watcher) natAnswer(q *query) bool {
	why := unansweredNAT
	for s, rescanned := q.snap, false; ; rescanned = true {
		r, ok := s.exact[connKeyOf(q.t, q.natLocal, q.natRemote)]
		if !ok || r.p == nil {
			r, ok = s.listen[endKeyOf(q.t, q.natLocal.Addr(), q.natLocal.Port())]
		}
		if ok && r.p != nil {
			switch p, v := w.admitRow(q, r, ViaNAT, q.natLocal.Port()); v {
			case admitted:
				return q.answer(p, ViaNAT, hitNAT)
			case refusedShared, refusedStartedAfter:
				return q.miss(v.why(), negWrite{})
			}
			why = unansweredVerifyFailed
		}
		if rescanned {
			break
		}
		fresh := w.awaitRescan(s, time.Now(), q.deadline())
		if fresh == nil {
			break
		}
		s = fresh
	}
	return q.miss(why, negWrite{})
}
