package winpeer

import (
	"fmt"
	"io"
	"net/netip"

	"golang.org/x/sys/windows"
)

// userSID is the SID of the user this process runs as, "" if unreadable.
func userSID() string {
	tok, err := windows.OpenCurrentProcessToken()
	if err != nil {
		return ""
	}
	defer tok.Close()
	u, err := tok.GetTokenUser()
	if err != nil {
		return ""
	}
	return u.User.Sid.String()
}

// bindUDP binds a UDP socket to addr with plain Winsock calls and returns
// it with its local address. net.ListenPacket cannot be used: it sets
// SIO_UDP_CONNRESET, which Wine 8 does not implement (WSAEOPNOTSUPP), and
// fails; the socket the tests need is just a bound one.
func bindUDP(addr string) (io.Closer, string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, "", err
	}
	var family int
	var sa windows.Sockaddr
	if ap.Addr().Is4() {
		family, sa = windows.AF_INET, &windows.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		family, sa = windows.AF_INET6, &windows.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	h, err := windows.Socket(family, windows.SOCK_DGRAM, windows.IPPROTO_UDP)
	if err != nil {
		return nil, "", fmt.Errorf("socket: %w", err)
	}
	if err := windows.Bind(h, sa); err != nil {
		windows.Closesocket(h)
		return nil, "", fmt.Errorf("bind: %w", err)
	}
	got, err := windows.Getsockname(h)
	if err != nil {
		windows.Closesocket(h)
		return nil, "", fmt.Errorf("getsockname: %w", err)
	}
	var local netip.AddrPort
	switch s := got.(type) {
	case *windows.SockaddrInet4:
		local = netip.AddrPortFrom(netip.AddrFrom4(s.Addr), uint16(s.Port))
	case *windows.SockaddrInet6:
		local = netip.AddrPortFrom(netip.AddrFrom16(s.Addr), uint16(s.Port))
	default:
		windows.Closesocket(h)
		return nil, "", fmt.Errorf("getsockname returned %T", got)
	}
	// One datagram to itself: Wine hands a socket's Unix descriptor to
	// the process only when the process does I/O on it (bind and
	// getsockname run in wineserver), and Wine 8 finds a socket's owner by
	// that descriptor.
	if err := windows.Sendto(h, []byte("winpeer"), 0, got); err != nil {
		windows.Closesocket(h)
		return nil, "", fmt.Errorf("sendto %v: %w", local, err)
	}
	return socketCloser(h), local.String(), nil
}

type socketCloser windows.Handle

func (h socketCloser) Close() error { return windows.Closesocket(windows.Handle(h)) }
