//go:build !windows

package winpeer

import (
	"io"
	"net"
)

// userSID is empty: only Windows identifies users by SID.
func userSID() string { return "" }

// bindUDP binds a UDP socket to addr and returns it with its local address.
func bindUDP(addr string) (io.Closer, string, error) {
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, "", err
	}
	return c, c.LocalAddr().String(), nil
}
