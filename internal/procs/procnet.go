package procs

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
)

// Parsers for the Linux /proc text files the engine reads. They take an
// io.Reader or a byte slice (one parser per file, as prometheus/procfs does)
// and live outside the _linux file so that fuzz tests run anywhere. They do
// not use procfs itself because its NetTCP allocates a net.IP per row, and a
// rescan of a 50 k-socket table must not allocate per line.

// TCP states from include/net/tcp_states.h that matter here.
const (
	tcpEstablished = 0x01
	tcpTimeWait    = 0x06
	tcpClose       = 0x07
	tcpListen      = 0x0A
)

// ParseProcNet appends the sockets of one /proc/net/{tcp,tcp6,udp,udp6} file
// to dst. Malformed rows are skipped and counted in bad, so a single garbage
// line cannot hide the rest of the table.
func ParseProcNet(data []byte, t Transport, dst []Socket) (out []Socket, bad int) {
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		s, ok, isRow := parseProcNetLine(line, t)
		if ok {
			dst = append(dst, s)
		} else if isRow {
			bad++
		}
	}
	return dst, bad
}

// parseProcNetLine parses one row. isRow is false for blank and header lines,
// which are not errors.
func parseProcNetLine(line []byte, t Transport) (s Socket, ok, isRow bool) {
	var f [10][]byte
	n := 0
	for i := 0; i < len(line) && n < len(f); {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\t' {
			j++
		}
		if j > i {
			f[n] = line[i:j]
			n++
		}
		i = j
	}
	if n == 0 || (n > 0 && string(f[0]) == "sl") {
		return s, false, false
	}
	if n < 10 {
		return s, false, true
	}
	local, ok1 := parseHexAddrPort(f[1])
	remote, ok2 := parseHexAddrPort(f[2])
	state, ok3 := parseHexUint(f[3])
	inode, ok4 := parseDecUint(f[9])
	if !ok1 || !ok2 || !ok3 || !ok4 || state > 0xff {
		return s, false, true
	}
	s.Transport = t
	s.Local = local
	s.Remote = remote
	s.Inode = inode
	switch t {
	case TCP:
		s.Listen = state == tcpListen
	case UDP:
		// An unconnected UDP socket receives from any peer; a connected one
		// (state ESTABLISHED) only from its peer.
		s.Listen = state != tcpEstablished
	}
	return s, true, true
}

// parseHexAddrPort decodes "0100007F:0050" (IPv4, one little-endian u32) or
// the IPv6 form (four little-endian u32 words), returning the unmapped
// address.
func parseHexAddrPort(b []byte) (netip.AddrPort, bool) {
	colon := bytes.IndexByte(b, ':')
	if colon < 0 {
		return netip.AddrPort{}, false
	}
	hexAddr, hexPort := b[:colon], b[colon+1:]
	port, ok := parseHexUint(hexPort)
	if !ok || port > 0xffff || len(hexPort) > 4 {
		return netip.AddrPort{}, false
	}
	var addr netip.Addr
	switch len(hexAddr) {
	case 8:
		w, ok := parseHexUint(hexAddr)
		if !ok {
			return netip.AddrPort{}, false
		}
		addr = netip.AddrFrom4([4]byte{byte(w), byte(w >> 8), byte(w >> 16), byte(w >> 24)})
	case 32:
		var a [16]byte
		for i := 0; i < 4; i++ {
			w, ok := parseHexUint(hexAddr[i*8 : i*8+8])
			if !ok {
				return netip.AddrPort{}, false
			}
			a[i*4], a[i*4+1], a[i*4+2], a[i*4+3] = byte(w), byte(w>>8), byte(w>>16), byte(w>>24)
		}
		addr = netip.AddrFrom16(a).Unmap()
	default:
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(addr, uint16(port)), true
}

func parseHexUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(c)
	}
	return v, true
}

func parseDecUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// ParseStatStart returns the starttime field (clock ticks after boot, field
// 22) of a /proc/<pid>/stat line: with the PID, the identity of a process
// instance. comm (field 2) may contain spaces and parentheses, so the fields
// are counted from the last ')'.
func ParseStatStart(data []byte) (start uint64, err error) {
	open := bytes.IndexByte(data, '(')
	closeParen := bytes.LastIndexByte(data, ')')
	if open < 0 || closeParen < open {
		return 0, fmt.Errorf("stat line %q has no (comm)", truncate(data, 64))
	}
	rest := data[closeParen+1:]
	// Fields after comm: state(3) ppid(4) ... starttime(22).
	field := 2
	for i := 0; i < len(rest); {
		for i < len(rest) && rest[i] == ' ' {
			i++
		}
		j := i
		for j < len(rest) && rest[j] != ' ' && rest[j] != '\n' {
			j++
		}
		if j == i {
			break
		}
		field++
		if field == 22 {
			v, ok := parseDecUint(rest[i:j])
			if !ok {
				return 0, fmt.Errorf("stat starttime %q is not a number", truncate(rest[i:j], 64))
			}
			return v, nil
		}
		i = j
	}
	return 0, fmt.Errorf("stat line %q has fewer than 22 fields", truncate(data, 64))
}

// parseStatPPID returns the ppid field (field 4) of a /proc/<pid>/stat
// line, counted from the last ')' as ParseStatStart does.
func parseStatPPID(data []byte) (int, error) {
	closeParen := bytes.LastIndexByte(data, ')')
	if closeParen < 0 {
		return 0, fmt.Errorf("stat line %q has no (comm)", truncate(data, 64))
	}
	f := bytes.Fields(data[closeParen+1:])
	if len(f) < 2 {
		return 0, fmt.Errorf("stat line %q has no ppid field", truncate(data, 64))
	}
	v, ok := parseDecUint(f[1])
	if !ok || v > 1<<31 {
		return 0, fmt.Errorf("stat ppid %q is not a PID", truncate(f[1], 64))
	}
	return int(v), nil
}

// statComm returns comm (field 2) of a /proc/<pid>/stat line: between the
// first '(' and the last ')', as it may hold both.
func statComm(stat []byte) string {
	open := bytes.IndexByte(stat, '(')
	closeParen := bytes.LastIndexByte(stat, ')')
	if open < 0 || closeParen < open {
		return ""
	}
	return string(stat[open+1 : closeParen])
}

// splitCmdline splits /proc/<pid>/cmdline at its NUL terminators.
func splitCmdline(b []byte) []string {
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil
	}
	parts := bytes.Split(b, []byte{0})
	args := make([]string, len(parts))
	for i, p := range parts {
		args[i] = string(p)
	}
	return args
}

// ParseFibTrie returns the addresses marked "/32 host LOCAL" in
// /proc/net/fib_trie: the IPv4 addresses assigned to this host's interfaces.
func ParseFibTrie(r io.Reader) ([]netip.Addr, error) {
	var (
		out  []netip.Addr
		last netip.Addr
		seen = map[netip.Addr]bool{}
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if rest, ok := bytes.CutPrefix(line, []byte("|-- ")); ok {
			a, err := netip.ParseAddr(string(rest))
			if err == nil {
				last = a
			} else {
				last = netip.Addr{}
			}
			continue
		}
		// fib_trie is IPv4 only: anything else on a leaf line is garbage.
		if bytes.HasPrefix(line, []byte("/32 host LOCAL")) && last.IsValid() && last.Is4() && !seen[last] {
			seen[last] = true
			out = append(out, last)
		}
	}
	return out, sc.Err()
}

// ParseIfInet6 returns the addresses listed in /proc/net/if_inet6.
func ParseIfInet6(r io.Reader) ([]netip.Addr, error) {
	var out []netip.Addr
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 || len(f[0]) != 32 {
			continue
		}
		var a [16]byte
		ok := true
		for i := 0; i < 16; i++ {
			v, good := parseHexUint(f[0][i*2 : i*2+2])
			if !good {
				ok = false
				break
			}
			a[i] = byte(v)
		}
		if ok {
			out = append(out, netip.AddrFrom16(a).Unmap())
		}
	}
	return out, sc.Err()
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
