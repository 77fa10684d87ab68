package procs

// This file parses the buffers that the Windows IP Helper API fills in. It has
// no build tag on purpose: the layout is plain little-endian bytes, so it is
// tested and fuzzed on every platform, and the Windows engine keeps only the
// syscalls.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
)

// winTable names one of the four tables the Windows engine reads: the table
// class (TCP_TABLE_OWNER_PID_ALL or UDP_TABLE_OWNER_PID) crossed with the
// address family, which together fix the row layout.
type winTable uint8

// The tables GetExtendedTcpTable and GetExtendedUdpTable return for the
// classes the engine asks for.
const (
	winTCP4 winTable = iota // MIB_TCPTABLE_OWNER_PID
	winTCP6                 // MIB_TCP6TABLE_OWNER_PID
	winUDP4                 // MIB_UDPTABLE_OWNER_PID
	winUDP6                 // MIB_UDP6TABLE_OWNER_PID
)

// Row sizes from tcpmib.h and udpmib.h; packetbeat's procs pins them with the same
// compile-time checks on its unsafe struct mirrors.
const (
	winCountSize   = 4  // the leading dwNumEntries DWORD
	winTCP4RowSize = 24 // MIB_TCPROW_OWNER_PID
	winTCP6RowSize = 56 // MIB_TCP6ROW_OWNER_PID
	winUDP4RowSize = 12 // MIB_UDPROW_OWNER_PID
	winUDP6RowSize = 28 // MIB_UDP6ROW_OWNER_PID

	// winTCPStateListen is MIB_TCP_STATE_LISTEN.
	winTCPStateListen = 2
)

// String names the table as the Windows headers do, for error messages.
func (t winTable) String() string {
	switch t {
	case winTCP4:
		return "MIB_TCPTABLE_OWNER_PID"
	case winTCP6:
		return "MIB_TCP6TABLE_OWNER_PID"
	case winUDP4:
		return "MIB_UDPTABLE_OWNER_PID"
	case winUDP6:
		return "MIB_UDP6TABLE_OWNER_PID"
	}
	return fmt.Sprintf("winTable(%d)", uint8(t))
}

// rowSize is the size of one row of t, 0 for an unknown table.
func (t winTable) rowSize() int {
	switch t {
	case winTCP4:
		return winTCP4RowSize
	case winTCP6:
		return winTCP6RowSize
	case winUDP4:
		return winUDP4RowSize
	case winUDP6:
		return winUDP6RowSize
	}
	return 0
}

// parseWinTable appends one Socket per row of buf, a table of kind t as
// GetExtendedTcpTable or GetExtendedUdpTable wrote it, to dst.
//
// The whole buffer is validated before the first append, so on error dst is
// returned unchanged. Bytes past the last row are ignored: the API may hand
// back a buffer larger than the rows it filled. Scope IDs are dropped because
// the addresses are matched against packet headers, which carry none, and a
// zone would cost an allocation per row.
func parseWinTable(t winTable, buf []byte, dst []Socket) ([]Socket, error) {
	rowSize := t.rowSize()
	if rowSize == 0 {
		return dst, fmt.Errorf("parse %v: unknown table kind; only the TCP/UDP owner-PID tables for IPv4 and IPv6 are supported", t)
	}
	if len(buf) < winCountSize {
		return dst, fmt.Errorf("parse %v: buffer is %d bytes, need at least %d for the row count; the IP Helper call returned a truncated table, retry the scan", t, len(buf), winCountSize)
	}
	count := binary.LittleEndian.Uint32(buf)
	// 64-bit arithmetic so that a hostile count cannot wrap on 32-bit Windows.
	need := uint64(winCountSize) + uint64(count)*uint64(rowSize)
	if uint64(len(buf)) < need {
		return dst, fmt.Errorf("parse %v: buffer is %d bytes, but its row count %d needs %d (%d-byte rows); the table is truncated or corrupt, retry the scan", t, len(buf), count, need, rowSize)
	}
	n := int(count)
	rows := buf[winCountSize : winCountSize+n*rowSize]
	// One growth up front keeps the per-row cost at zero allocations.
	dst = slices.Grow(dst, n)
	for off := 0; off < len(rows); off += rowSize {
		dst = append(dst, parseWinRow(t, rows[off:off+rowSize]))
	}
	return dst, nil
}

// parseWinRow decodes one row; r is exactly t.rowSize() bytes.
func parseWinRow(t winTable, r []byte) Socket {
	le := binary.LittleEndian
	switch t {
	case winTCP4:
		// state, localAddr, localPort, remoteAddr, remotePort, owningPid.
		return Socket{
			Transport: TCP,
			Local:     netip.AddrPortFrom(winAddr4(r[4:8]), winPort(r[8:12])),
			Remote:    netip.AddrPortFrom(winAddr4(r[12:16]), winPort(r[16:20])),
			Listen:    le.Uint32(r[0:4]) == winTCPStateListen,
			PID:       int(le.Uint32(r[20:24])),
		}
	case winTCP6:
		// localAddr, localScopeId, localPort, remoteAddr, remoteScopeId,
		// remotePort, state, owningPid.
		return Socket{
			Transport: TCP,
			Local:     netip.AddrPortFrom(winAddr16(r[0:16]), winPort(r[20:24])),
			Remote:    netip.AddrPortFrom(winAddr16(r[24:40]), winPort(r[44:48])),
			Listen:    le.Uint32(r[48:52]) == winTCPStateListen,
			PID:       int(le.Uint32(r[52:56])),
		}
	case winUDP4:
		// localAddr, localPort, owningPid. A UDP row has no peer, so every
		// UDP socket owns its local address for any peer.
		return Socket{
			Transport: UDP,
			Local:     netip.AddrPortFrom(winAddr4(r[0:4]), winPort(r[4:8])),
			Listen:    true,
			PID:       int(le.Uint32(r[8:12])),
		}
	default: // winUDP6; parseWinTable rejected unknown kinds.
		// localAddr, localScopeId, localPort, owningPid.
		return Socket{
			Transport: UDP,
			Local:     netip.AddrPortFrom(winAddr16(r[0:16]), winPort(r[20:24])),
			Listen:    true,
			PID:       int(le.Uint32(r[24:28])),
		}
	}
}

// winAddr4 reads an in_addr DWORD: its bytes are already in network order.
func winAddr4(b []byte) netip.Addr {
	return netip.AddrFrom4([4]byte(b))
}

// winAddr16 reads an IN6_ADDR, unmapped so that dual-stack sockets match
// IPv4 packets.
func winAddr16(b []byte) netip.Addr {
	return netip.AddrFrom16([16]byte(b)).Unmap()
}

// winPort reads a port DWORD: the port sits in network byte order in its low
// 16 bits, which little-endian storage puts in the first two bytes; the upper
// half is undefined and ignored.
func winPort(b []byte) uint16 {
	return binary.BigEndian.Uint16(b[0:2])
}
