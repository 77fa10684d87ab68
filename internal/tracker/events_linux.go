//go:build linux

package tracker

// Applying the kernel's events to the table: who held which socket, and when.

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// handle applies one kernel event to the table.
func (t *Tracker) handle(ev *trackerEvent) {
	t.events.Add(1)
	if ev.Type == evExit {
		t.mu.Lock()
		t.exits[owner{int(ev.Pid), time.Duration(ev.StartNs)}] = t.wallOf(ev.TsNs)
		t.mu.Unlock()
		return
	}
	proto := Proto(ev.Proto)
	if proto != TCP && proto != UDP {
		return
	}
	local := netip.AddrPortFrom(eventAddr(ev.Family, &ev.Saddr), ev.Sport)
	remote := netip.AddrPortFrom(eventAddr(ev.Family, &ev.Daddr), ev.Dport)
	if !local.Addr().IsValid() {
		return
	}
	if ev.Dport == 0 {
		// An unconnected UDP socket or a listener: it owns Local for any peer.
		remote = netip.AddrPort{}
	}
	now := t.now()
	ts := t.wallOf(ev.TsNs)
	r := Record{
		PID:           int(ev.Pid),
		StartTicks:    ev.StartNs / (1e9 / userHZ),
		StartBoottime: time.Duration(ev.StartNs),
		Start:         t.wallOf(ev.StartNs),
		Comm:          t.comm(&ev.Comm),
		NetNS:         ev.Netns,
		Opened:        ts,
		Seen:          now,
		sk:            ev.Sk,
	}
	switch ev.Type {
	case evConnect, evUDPConnect:
		r.Source = SourceConnect
	case evAccept:
		r.Source = SourceAccept
	case evSendRecv:
		r.Source = SourceIO
	case evListen:
		r.Source = SourceListen
	case evClose:
		r.Closed = ts
		r.Source = SourceIO
	default:
		return
	}
	k := key{proto, ev.Netns, local, remote}

	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.table[k]
	if n := len(h); n > 0 {
		last := &h[n-1]
		if last.sk == r.sk && ev.Type == evClose && sameOwner(last, &r) && last.sockClosed {
			// Closed already (its FIN); this is its final state change.
			return
		}
		if last.sk == r.sk && ev.Type == evClose && sameOwner(last, &r) {
			end := last.Closed
			if x, ok := t.exits[owner{last.PID, last.StartBoottime}]; end.IsZero() && ok && !x.After(ts) {
				end = x
			}
			if !end.IsZero() {
				// The owner was gone before the close. Right after its
				// exit, the exit closed it (the socket's own close, which
				// may answer a later-stamped event: quietSince); later,
				// someone else held it meanwhile (a child, a receiver) and
				// the kernel still names the old owner: nothing new.
				last.Closed = end
				last.sockClosed = ts.Sub(end) <= exitCloseWindow
				return
			}
		}
		if last.sk == r.sk && !last.Closed.IsZero() && !last.sockClosed && ev.Type == evClose {
			// The close of a socket whose owner's tenure already ended
			// (the socket changed hands unseen): nothing new about who
			// held it. Once the socket itself closed (sockClosed), a
			// close at its address is another socket's (the kernel reuses
			// a freed socket's memory: a connect() refused before it was
			// announced), recorded below.
			return
		}
		if last.sk == r.sk && last.Closed.IsZero() {
			// The socket of the newest record: its close, a refresh, or
			// a new owner (an accepted connection served by a worker, a
			// UDP socket used by another process).
			switch {
			case ev.Type == evClose && sameOwner(last, &r):
				last.Closed, last.Seen, last.sockClosed = ts, now, true
				return
			case ev.Type == evClose:
				// Closed by an owner whose first use was not seen (lost
				// event): the old owner's tenure ended at some unknown
				// time, so neither may answer for before the close.
				last.Closed = ts
				r.Opened = ts
			case sameOwner(last, &r):
				last.Seen, last.Source = now, r.Source
				return
			default:
				last.Closed = ts // the old owner's tenure ends here
			}
			t.pushLocked(k, r, now)
			return
		}
	}
	if ev.Type == evClose {
		if ev.Sport == 0 {
			return // a connect that failed before it had a port
		}
		// Its opening was not seen (a lost event, or a connect() that
		// failed before it was announced): it was open at most since its
		// owner started, and not while another socket had the tuple (the
		// kernel gives a 4-tuple to one socket at a time).
		r.Opened = r.Start
		if n := len(h); n > 0 && h[n-1].Closed.After(r.Opened) {
			r.Opened = h[n-1].Closed
		}
	}
	t.pushLocked(k, r, now)
}

func sameOwner(a, b *Record) bool { return a.PID == b.PID && a.StartBoottime == b.StartBoottime }

// owner identifies a process instance.
type owner struct {
	pid   int
	start time.Duration // StartBoottime
}

// wallOf converts a kernel CLOCK_BOOTTIME reading to wall-clock time.
func (t *Tracker) wallOf(ns uint64) time.Time {
	return time.Unix(0, t.bootWall.Load()+int64(ns))
}

// refreshBootWall recomputes the wall-clock time of boot.
func (t *Tracker) refreshBootWall() {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err == nil {
		t.bootWall.Store(time.Now().UnixNano() - ts.Nano())
	}
}

// ownNetNS is the inode of this process's network namespace, 0 if unknown.
func ownNetNS() uint32 {
	var st unix.Stat_t
	if unix.Stat("/proc/self/ns/net", &st) != nil {
		return 0
	}
	return uint32(st.Ino)
}

func eventAddr(family uint16, b *[16]uint8) netip.Addr {
	switch family {
	case unix.AF_INET:
		return netip.AddrFrom4([4]byte(b[:4]))
	case unix.AF_INET6:
		return netip.AddrFrom16(*b).Unmap()
	}
	return netip.Addr{}
}

// comm returns the interned string of a kernel command name.
func (t *Tracker) comm(c *[16]int8) string {
	if s, ok := t.comms[*c]; ok {
		return s
	}
	if len(t.comms) > 4096 {
		clear(t.comms)
	}
	s := commString(c)
	t.comms[*c] = s
	return s
}

func commString(c *[16]int8) string {
	b := make([]byte, 0, len(c))
	for _, ch := range c {
		if ch == 0 {
			break
		}
		b = append(b, byte(ch))
	}
	return string(b)
}
