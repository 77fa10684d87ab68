//go:build linux

package procs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Resolve finds the socket of one connection, local to remote, without
// listing every socket: one sock_diag exact lookup (no dump) gives its
// inode, and findOwner searches its holder against what the last walk knew
// of each process (a process whose descriptor count did not change is not
// read, one whose count changed has only its new descriptors read). found
// is false when the kernel has no such socket. It serves a cold lookup in a
// few milliseconds where a rescan has to dump the whole table first (~1 µs
// of kernel time per socket); the watcher asks it on a snapshot miss
// through NewResolveSource (docs/benchmarks.md). It has its own lock and
// buffers, so it runs while a rescan is in flight: on a host where a
// rescan takes most of rescan_timeout, new connections still resolve.
// host_path "/" only.
func (e *linuxEngine) Resolve(ctx context.Context, t Transport, local, remote netip.AddrPort) (s Socket, found bool, err error) {
	return e.ResolveHinted(ctx, t, local, remote, 0)
}

// ResolveHinted is Resolve searching process pid (when not 0) first, whole
// fd table if need be: the opener that an eBPF record names, which most
// likely still holds the socket. The search goes on past it to find
// whether another process holds the socket too (Socket.Shared); the answer
// is verified when given either way.
func (e *linuxEngine) ResolveHinted(ctx context.Context, t Transport, local, remote netip.AddrPort, pid int) (s Socket, found bool, err error) {
	if !e.useDiag {
		return s, false, ErrUnsupported
	}
	sr := &e.search
	sr.mu.Lock()
	defer sr.mu.Unlock()
	proto := uint8(unix.IPPROTO_TCP)
	if t == UDP {
		proto = unix.IPPROTO_UDP
	}
	l, r := local.Addr().Unmap(), remote.Addr().Unmap()
	id := diagID{a16: l.As16(), aport: local.Port(), b16: r.As16(), bport: remote.Port()}
	if t == UDP {
		// The kernel's UDP exact lookup is the receive path's: it finds
		// the socket a datagram from idiag_src to idiag_dst would reach,
		// so the local end goes in idiag_dst (TCP's takes it in idiag_src).
		id = diagID{a16: r.As16(), aport: remote.Port(), b16: l.As16(), bport: local.Port()}
	}
	var one []Socket
	if l.Is4() && r.Is4() {
		one, err = diagExact(&sr.diag, unix.AF_INET, proto, t, id)
		if err == nil && len(one) == 0 {
			// An IPv4 peer of a dual-stack IPv6 socket.
			one, err = diagExact(&sr.diag, unix.AF_INET6, proto, t, id)
		}
	} else {
		one, err = diagExact(&sr.diag, unix.AF_INET6, proto, t, id)
	}
	if err != nil || len(one) == 0 {
		return s, false, err
	}
	if !resolvedIs(one[0], t, local, remote) {
		// The kernel's lookup falls back to a listener (TCP) or to the
		// socket that would receive from remote (UDP): another socket
		// than the connection asked for.
		return s, false, nil
	}
	s = one[0]
	// The caller's namespace, which the netlink socket reads.
	s.NetNS = e.ns.ownAt.Load()
	s.Foreign = s.NetNS != e.ns.hostAt.Load()
	if s.Inode != 0 {
		h, shared, err := e.findOwner(ctx, sr, s.Inode, pid)
		if err != nil {
			return s, true, err
		}
		s.PID, s.StartKey, s.FD, s.Task, s.Shared = h.pid, h.start, h.fd, h.task, shared
	}
	return s, true, nil
}

// resolvedIs tells whether the socket an exact lookup returned is the
// connection local-remote: the same tuple, or for UDP an unconnected
// socket bound to local's port at local's address or the wildcard, which
// owns local for any peer.
func resolvedIs(s Socket, t Transport, local, remote netip.AddrPort) bool {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if s.Local == local && s.Remote == remote {
		return true
	}
	if t != UDP || s.Local.Port() != local.Port() || (s.Remote.IsValid() && s.Remote.Port() != 0) {
		return false
	}
	return s.Local.Addr() == local.Addr() || s.Local.Addr().IsUnspecified()
}

// NETLINK_SOCK_DIAG gives the same rows as /proc/net/{tcp,tcp6,udp,udp6}
// in binary, without the kernel formatting ~150 bytes of hex per socket or
// us parsing it back: on a 12k-socket host a dump costs a fraction of the
// text tables (docs/benchmarks.md). It reads the caller's network namespace,
// which is what /proc/net shows for host_path "/", so the engine uses it only
// then, and falls back to the text tables when the kernel refuses (no
// sock_diag, no udp_diag module, seccomp).

const (
	sizeofNlMsghdr      = 16
	sizeofInetDiagReqV2 = 56
	sizeofInetDiagMsg   = 72
)

// diagID is the part of struct inet_diag_sockid an exact lookup fills: the
// 4-tuple. Addresses are 16 bytes; for AF_INET only the last 4 are sent.
type diagID struct {
	a16, b16     [16]byte
	aport, bport uint16
}

// diagRequest builds an inet_diag_req_v2 for family and proto, every state;
// with id it asks for that one socket, without it for a dump.
func diagRequest(family, proto uint8, id *diagID) []byte {
	req := make([]byte, sizeofNlMsghdr+sizeofInetDiagReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	flags := uint16(unix.NLM_F_REQUEST)
	if id == nil {
		flags |= unix.NLM_F_DUMP
	}
	ne.PutUint16(req[6:], flags)
	ne.PutUint32(req[8:], 1) // seq
	req[16], req[17] = family, proto
	ne.PutUint32(req[20:], 0xffffffff) // every state
	if id != nil {
		sid := req[24:]
		binary.BigEndian.PutUint16(sid[0:], id.aport)
		binary.BigEndian.PutUint16(sid[2:], id.bport)
		if family == unix.AF_INET {
			copy(sid[4:8], id.a16[12:])
			copy(sid[20:24], id.b16[12:])
		} else {
			copy(sid[4:20], id.a16[:])
			copy(sid[20:36], id.b16[:])
		}
		ne.PutUint32(sid[40:], 0xffffffff) // INET_DIAG_NOCOOKIE
		ne.PutUint32(sid[44:], 0xffffffff)
	}
	return req
}

// errDiagNotFound is the kernel's ENOENT for an exact lookup: no such socket.
var errDiagNotFound = errors.New("sock_diag: no such socket")

// diagQuery sends req on a new NETLINK_SOCK_DIAG socket and calls f with
// each inet_diag_msg of the reply until the kernel says done or f returns
// false (an exact lookup's reply is one message, with no NLMSG_DONE).
// buf is the receive buffer to use (allocated on first use), so that a
// rescan and Resolve each have their own.
func diagQuery(buf *[]byte, req []byte, f func(msg []byte) (more bool)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	if cap(*buf) == 0 {
		*buf = make([]byte, 256<<10)
	}
	b0 := (*buf)[:cap(*buf)]
	ne := binary.NativeEndian
	for {
		n, _, err := unix.Recvfrom(fd, b0, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		for b := b0[:n]; len(b) >= sizeofNlMsghdr; {
			l := int(ne.Uint32(b[0:]))
			typ := ne.Uint16(b[4:])
			if l < sizeofNlMsghdr || l > len(b) {
				return errors.New("sock_diag: truncated message")
			}
			msg := b[sizeofNlMsghdr:l]
			// The kernel pads every message to 4 bytes; a last message
			// without its padding must not slice past the buffer.
			b = b[min((l+3)&^3, len(b)):]
			switch typ {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(msg) < 4 {
					return errors.New("sock_diag: error")
				}
				switch errno := unix.Errno(-int32(ne.Uint32(msg))); errno {
				case 0:
					return nil
				case unix.ENOENT:
					return errDiagNotFound
				default:
					return fmt.Errorf("sock_diag: %w", errno)
				}
			case unix.SOCK_DIAG_BY_FAMILY:
				if !f(msg) {
					return nil
				}
			}
		}
	}
}

// diagExact asks sock_diag for the one socket with this 4-tuple; it returns
// none when the kernel has no such socket. For AF_INET6, IPv4 addresses are
// sent in their mapped form.
func diagExact(buf *[]byte, family, proto uint8, t Transport, id diagID) ([]Socket, error) {
	var out []Socket
	err := diagQuery(buf, diagRequest(family, proto, &id), func(msg []byte) bool {
		if len(msg) >= sizeofInetDiagMsg {
			out = append(out, diagSocket(msg, t))
		}
		return false
	})
	if errors.Is(err, errDiagNotFound) {
		return nil, nil
	}
	if err == nil && out == nil {
		return nil, errors.New("sock_diag: short reply")
	}
	return out, err
}

// diagDump appends the sockets of one family and protocol to dst.
func (e *linuxEngine) diagDump(family uint8, proto uint8, t Transport, dst []Socket) ([]Socket, error) {
	err := diagQuery(&e.diagBuf, diagRequest(family, proto, nil), func(msg []byte) bool {
		if len(msg) >= sizeofInetDiagMsg {
			dst = append(dst, diagSocket(msg, t))
		}
		return true
	})
	return dst, err
}

// diagSocket decodes a struct inet_diag_msg with the same rules as
// parseProcNetLine.
func diagSocket(m []byte, t Transport) Socket {
	family, state := m[0], m[1]
	sport := binary.BigEndian.Uint16(m[4:])
	dport := binary.BigEndian.Uint16(m[6:])
	var src, dst netip.Addr
	if family == unix.AF_INET {
		src = netip.AddrFrom4([4]byte(m[8:12]))
		dst = netip.AddrFrom4([4]byte(m[24:28]))
	} else {
		src = netip.AddrFrom16([16]byte(m[8:24])).Unmap()
		dst = netip.AddrFrom16([16]byte(m[24:40])).Unmap()
	}
	s := Socket{
		Transport: t,
		Local:     netip.AddrPortFrom(src, sport),
		Remote:    netip.AddrPortFrom(dst, dport),
		Inode:     uint64(binary.NativeEndian.Uint32(m[68:])),
	}
	switch t {
	case TCP:
		s.Listen = state == tcpListen
	case UDP:
		s.Listen = state != tcpEstablished
	}
	if family == unix.AF_INET6 {
		s.V6Only = diagV6Only(m[sizeofInetDiagMsg:])
	}
	return s
}

// inetDiagSKV6ONLY is INET_DIAG_SKV6ONLY: the kernel adds it, unasked, to
// every AF_INET6 socket in LISTEN or CLOSE state (listeners and unbound or
// unconnected UDP sockets), the ones a wildcard lookup can match.
const inetDiagSKV6ONLY = 11

// diagV6Only finds INET_DIAG_SKV6ONLY among the attributes that follow an
// inet_diag_msg.
func diagV6Only(attrs []byte) V6Only {
	ne := binary.NativeEndian
	for len(attrs) >= 4 {
		l, typ := int(ne.Uint16(attrs[0:])), ne.Uint16(attrs[2:])
		if l < 4 || l > len(attrs) {
			break
		}
		if typ&0x3fff == inetDiagSKV6ONLY && l >= 5 {
			if attrs[4] != 0 {
				return V6OnlyOn
			}
			return V6OnlyOff
		}
		attrs = attrs[min((l+3)&^3, len(attrs)):]
	}
	return V6OnlyUnknown
}
