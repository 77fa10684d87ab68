//go:build linux

package procs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// addrWatch follows the reader's network namespace's address changes
// through rtnetlink (RTM_NEWADDR/RTM_DELADDR on the IPv4 and IPv6 address
// groups), so that an address added or removed (a virtual IP failing over)
// counts as local, or stops counting, within milliseconds instead of at the
// next address timer. The timer stays as the safety net, and for the other
// namespaces' addresses, which no event reports here.
type addrWatch struct {
	f *os.File // nil when not watching
}

// ownNamespaceAddrs is implemented by engines whose LocalAddrs reads the
// watcher's own network namespace (host_path "/"): only then do this
// process's rtnetlink events describe the engine's addresses.
type ownNamespaceAddrs interface{ readsOwnNamespace() bool }

func (e *linuxEngine) readsOwnNamespace() bool { return filepath.Clean(e.root) == "/" }

func (w *Watcher) startAddrWatch() {
	if e, ok := w.engine.(ownNamespaceAddrs); !ok || !e.readsOwnNamespace() {
		return
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		w.warn.log("addrwatch", fmt.Errorf("opening an rtnetlink socket for address changes failed: %w; addresses are re-listed every socket_cache_ttl only", err))
		return
	}
	sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		w.warn.log("addrwatch", fmt.Errorf("subscribing to rtnetlink address events failed: %w; addresses are re-listed every socket_cache_ttl only", err))
		return
	}
	// A non-blocking descriptor joins Go's poller, so Close wakes the
	// reader.
	w.aw.f = os.NewFile(uintptr(fd), "rtnetlink")
	w.wg.Add(1)
	go w.addrLoop(w.aw.f)
}

func (w *Watcher) stopAddrWatch() {
	if w.aw.f != nil {
		w.aw.f.Close()
	}
}

// addrLoop applies address events as they come; on ENOBUFS (events were
// lost) it lists the addresses again.
func (w *Watcher) addrLoop(f *os.File) {
	defer w.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		switch {
		case errors.Is(err, unix.ENOBUFS):
			w.as.resyncs.Add(1)
			w.refreshAddrs()
			continue
		case errors.Is(err, os.ErrClosed) || w.ctx.Err() != nil:
			return
		case err != nil:
			w.warn.log("addrwatch", fmt.Errorf("reading rtnetlink address events failed: %w; addresses are re-listed every socket_cache_ttl only", err))
			return
		}
		now := time.Now()
		if err := parseAddrEvents(buf[:n], func(add bool, a netip.Addr) { w.addrEvent(add, a, now) }); err != nil {
			w.warn.log("addrwatch-parse", fmt.Errorf("malformed rtnetlink address event: %w; listing addresses again", err))
			w.refreshAddrs()
		}
	}
}

// parseAddrEvents calls f for each RTM_NEWADDR (add) and RTM_DELADDR
// message in b: the interface's local address (IFA_LOCAL, else
// IFA_ADDRESS). Other messages are skipped.
func parseAddrEvents(b []byte, f func(add bool, a netip.Addr)) error {
	const hdr = unix.SizeofNlMsghdr
	for len(b) >= hdr {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if l < hdr || l > len(b) {
			return fmt.Errorf("netlink message length %d with %d bytes left", l, len(b))
		}
		msg := b[hdr:l]
		if next := (l + 3) &^ 3; next < len(b) {
			b = b[next:]
		} else {
			b = nil
		}
		if typ != unix.RTM_NEWADDR && typ != unix.RTM_DELADDR {
			continue
		}
		if len(msg) < unix.SizeofIfAddrmsg {
			return fmt.Errorf("address message of %d bytes", len(msg))
		}
		family := msg[0]
		var local, address netip.Addr
		for attrs := msg[unix.SizeofIfAddrmsg:]; len(attrs) >= 4; {
			al := int(binary.NativeEndian.Uint16(attrs[0:2]))
			at := binary.NativeEndian.Uint16(attrs[2:4])
			if al < 4 || al > len(attrs) {
				return fmt.Errorf("address attribute length %d with %d bytes left", al, len(attrs))
			}
			v := attrs[4:al]
			var a netip.Addr
			switch {
			case family == unix.AF_INET && len(v) == 4:
				a = netip.AddrFrom4([4]byte(v))
			case family == unix.AF_INET6 && len(v) == 16:
				a = netip.AddrFrom16([16]byte(v))
			}
			switch at {
			case unix.IFA_LOCAL:
				local = a
			case unix.IFA_ADDRESS:
				address = a
			}
			if next := (al + 3) &^ 3; next < len(attrs) {
				attrs = attrs[next:]
			} else {
				attrs = nil
			}
		}
		if !local.IsValid() {
			local = address
		}
		if local.IsValid() {
			f(typ == unix.RTM_NEWADDR, local)
		}
	}
	return nil
}
