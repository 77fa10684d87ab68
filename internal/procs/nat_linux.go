//go:build linux

package procs

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// NewConntrack returns a reader of this network namespace's conntrack
// table over netlink (ctnetlink), through github.com/ti-mo/conntrack: a
// maintained library that builds and parses ctnetlink messages, so no
// netlink attribute is hand-written here. The socket is opened on first
// use. Reading needs CAP_NET_ADMIN.
func NewConntrack() Conntrack { return &linuxConntrack{} }

type linuxConntrack struct {
	once sync.Once
	c    *conntrack.Conn
	err  error
}

func (l *linuxConntrack) dial() error {
	l.once.Do(func() {
		l.c, l.err = conntrack.Dial(nil)
		if l.err != nil {
			l.err = fmt.Errorf("%w: opening a ctnetlink socket: %v", ErrConntrackUnavailable, l.err)
		}
	})
	return l.err
}

// Get asks the kernel for the entry with the tuple src → dst in either
// direction (ctnetlink's get looks the tuple up in the table that holds
// both).
func (l *linuxConntrack) Get(t Transport, src, dst netip.AddrPort) (ConntrackEntry, bool, error) {
	if err := l.dial(); err != nil {
		return ConntrackEntry{}, false, err
	}
	var q conntrack.Flow
	q.TupleOrig.IP.SourceAddress = src.Addr().Unmap()
	q.TupleOrig.IP.DestinationAddress = dst.Addr().Unmap()
	q.TupleOrig.Proto.Protocol = uint8(t)
	q.TupleOrig.Proto.SourcePort = src.Port()
	q.TupleOrig.Proto.DestinationPort = dst.Port()
	f, err := l.c.Get(q)
	switch {
	case errors.Is(err, unix.ENOENT):
		return ConntrackEntry{}, false, nil
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EPROTONOSUPPORT):
		return ConntrackEntry{}, false, fmt.Errorf("%w: ctnetlink get: %v (the NAT lookup needs CAP_NET_ADMIN and the nf_conntrack module)", ErrConntrackUnavailable, err)
	case err != nil:
		return ConntrackEntry{}, false, fmt.Errorf("conntrack lookup of %v %v -> %v: %w", t, src, dst, err)
	}
	return ConntrackEntry{
		OrigSrc:  netip.AddrPortFrom(f.TupleOrig.IP.SourceAddress.Unmap(), f.TupleOrig.Proto.SourcePort),
		OrigDst:  netip.AddrPortFrom(f.TupleOrig.IP.DestinationAddress.Unmap(), f.TupleOrig.Proto.DestinationPort),
		ReplySrc: netip.AddrPortFrom(f.TupleReply.IP.SourceAddress.Unmap(), f.TupleReply.Proto.SourcePort),
		ReplyDst: netip.AddrPortFrom(f.TupleReply.IP.DestinationAddress.Unmap(), f.TupleReply.Proto.DestinationPort),
	}, true, nil
}

func (l *linuxConntrack) Close() error {
	l.once.Do(func() { l.err = fmt.Errorf("%w: closed", ErrConntrackUnavailable) }) // no dial after Close
	if l.c != nil {
		return l.c.Close()
	}
	return nil
}
