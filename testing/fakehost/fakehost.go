// Package fakehost describes a Linux host in YAML and materialises it as a
// directory tree that looks like that host's /proc and /etc, so that code
// reading a host through a configurable root (the processor's host_path,
// go-sysinfo's WithHostFS, procfs.NewFS) can be tested without root
// privileges, namespaces or real sockets.
//
// Every file is written in the kernel's own text format, byte for byte where
// readers care (column order, hex byte order, padding), so that a reader that
// passes against a fake host also parses the real one.
package fakehost

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// DefaultBootTime is the boot time (unix seconds) of a Host that sets none.
// go-sysinfo caches the first boot time it reads in a package variable, so
// every fake host used in one test binary should keep this default.
const DefaultBootTime int64 = 1700000000

// UserHZ is the clock-tick rate of /proc/<pid>/stat's starttime field: the
// kernel always reports USER_HZ = 100 to user space.
const UserHZ = 100

// commLen is the longest comm the kernel keeps (TASK_COMM_LEN - 1).
const commLen = 15

// Host describes the parts of a Linux host that socket-to-process lookup
// reads: the socket tables, the interface addresses, the processes with
// their open file descriptors, and the user database.
type Host struct {
	// BootTime is the boot time in unix seconds (/proc/stat btime).
	// Zero means DefaultBootTime.
	BootTime int64 `yaml:"boot_time"`
	// Addresses are the interface addresses, IPv4 or IPv6. Loopback
	// (127.0.0.1 and ::1) is always present and need not be listed.
	Addresses []string `yaml:"addresses"`
	// NetNSAddresses are the interface addresses of other network
	// namespaces (netns number → addresses), written under the namespace's
	// lowest PID as proc/<pid>/net/{fib_trie,if_inet6}.
	NetNSAddresses map[uint64][]string `yaml:"netns_addresses"`
	// Sockets are the rows of /proc/net/{tcp,tcp6,udp,udp6}.
	Sockets []Socket `yaml:"sockets"`
	// Processes become /proc/<pid> directories.
	Processes []Process `yaml:"processes"`
	// Users maps uid to user name for /etc/passwd. Uid 0 is "root" unless
	// the map names it otherwise.
	Users map[int]string `yaml:"users"`
	// MachineID is written to etc/machine-id, the host's unique ID that
	// entity IDs are computed from; empty writes no such file.
	MachineID string `yaml:"machine_id"`
}

// Socket is one row of a socket table.
type Socket struct {
	// Proto is tcp, tcp6, udp or udp6. An IPv6 Local address always goes
	// to the IPv6 table; an IPv4 one goes to the IPv4 table unless Proto
	// asks for the IPv6 one, where it is written IPv4-mapped (a dual-stack
	// socket that accepted an IPv4 peer looks like that).
	Proto string `yaml:"proto"`
	// Local is the bound address: "127.0.0.1:80", "[::1]:80",
	// "[::ffff:10.0.0.1]:80", "0.0.0.0:53", "[::]:22".
	Local string `yaml:"local"`
	// Remote is the peer; empty means 0.0.0.0:0 or [::]:0.
	Remote string `yaml:"remote"`
	// State is a TCP state name (LISTEN, ESTABLISHED, TIME_WAIT, CLOSE,
	// ...) or its two-digit hex code. Empty means LISTEN for a TCP socket
	// without a peer, ESTABLISHED for a TCP or UDP socket with one (the
	// kernel marks a connect()ed UDP socket established) and CLOSE for an
	// unconnected UDP socket.
	State string `yaml:"state"`
	// NetNS is the network namespace the socket lives in (0: the host's).
	// Its table is written under the lowest PID of that namespace,
	// proc/<pid>/net/, where a reader of another namespace finds it.
	NetNS uint64 `yaml:"netns"`
	// Inode is the socket's inode number, the link between the table and
	// the socket:[inode] fd links of the processes holding it.
	Inode uint64 `yaml:"inode"`
	// UID is the socket owner's uid column.
	UID int `yaml:"uid"`
}

// Process is one /proc/<pid> directory.
type Process struct {
	PID  int `yaml:"pid"`
	PPID int `yaml:"ppid"`
	// Comm is the kernel's task name. Like the kernel, Write keeps at most
	// 15 bytes of it. Empty means the base name of Exe, else of Args[0].
	Comm string   `yaml:"comm"`
	Args []string `yaml:"args"`
	// Exe and Cwd become the exe and cwd symlinks; empty omits the link
	// (a kernel thread has none). The target need not exist.
	Exe string `yaml:"exe"`
	Cwd string `yaml:"cwd"`
	// StartTicks is the start time in clock ticks (UserHZ) since boot.
	StartTicks uint64 `yaml:"start_ticks"`
	UID        int    `yaml:"uid"`
	// Sockets are the inodes the process holds open, one fd each.
	Sockets []uint64 `yaml:"sockets"`
	// Unreadable leaves out the fd directory, as when the reader may not
	// look into another user's process. (A mode-000 directory would not
	// do: the tests run as root, which ignores modes.)
	Unreadable bool `yaml:"unreadable_fd"`
	// NetNS puts the process in a network namespace other than the host's
	// (ns/net links to net:[NetNS]); 0 is the host's, with no link.
	NetNS uint64 `yaml:"netns"`
	// Cgroup is the cgroup path written to proc/<pid>/cgroup (cgroup v2
	// form "0::<path>"), e.g. /system.slice/docker-<64 hex>.scope.
	Cgroup string `yaml:"cgroup"`
}

// Load reads a Host from a YAML file. Unknown keys are errors so that a
// misspelt option cannot silently fall back to a default. Load fills in the
// BootTime and Users defaults.
func Load(path string) (*Host, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var h Host
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty file is an empty host: yaml.v3 reports it as io.EOF.
	if err := dec.Decode(&h); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("fakehost: %s: %w", path, err)
	}
	if h.BootTime == 0 {
		h.BootTime = DefaultBootTime
	}
	h.Users = h.users()
	return &h, nil
}

func (h *Host) bootTime() int64 {
	if h.BootTime == 0 {
		return DefaultBootTime
	}
	return h.BootTime
}

func (h *Host) users() map[int]string {
	u := make(map[int]string, len(h.Users)+1)
	for uid, name := range h.Users {
		u[uid] = name
	}
	if _, ok := u[0]; !ok {
		u[0] = "root"
	}
	return u
}

// Write materialises the host under root, creating root if needed:
// root/proc/net/{tcp,tcp6,udp,udp6,fib_trie,if_inet6}, root/proc/stat,
// root/proc/<pid>/..., root/etc/passwd, root/etc/group and, if set,
// root/etc/machine-id.
func (h *Host) Write(root string) error {
	if err := h.writeSockets(root); err != nil {
		return err
	}
	if err := h.writeAddrs(root); err != nil {
		return err
	}
	if err := h.writeStat(root); err != nil {
		return err
	}
	seen := map[int]bool{}
	for i := range h.Processes {
		p := &h.Processes[i]
		if p.PID <= 0 {
			return fmt.Errorf("fakehost: process %d: pid must be positive", p.PID)
		}
		if seen[p.PID] {
			return fmt.Errorf("fakehost: pid %d listed twice", p.PID)
		}
		seen[p.PID] = true
		if err := writeProcess(filepath.Join(root, "proc", strconv.Itoa(p.PID)), p); err != nil {
			return err
		}
	}
	return h.writeEtc(root)
}

// tcpStates are the kernel's TCP states (include/net/tcp_states.h); UDP
// sockets use the same codes.
var tcpStates = map[string]uint8{
	"ESTABLISHED":  0x01,
	"SYN_SENT":     0x02,
	"SYN_RECV":     0x03,
	"FIN_WAIT1":    0x04,
	"FIN_WAIT2":    0x05,
	"TIME_WAIT":    0x06,
	"CLOSE":        0x07,
	"CLOSE_WAIT":   0x08,
	"LAST_ACK":     0x09,
	"LISTEN":       0x0A,
	"CLOSING":      0x0B,
	"NEW_SYN_RECV": 0x0C,
}

// row is a socket resolved to its table and kernel values.
type row struct {
	local, remote netip.AddrPort
	state         uint8
	inode         uint64
	uid           int
}

func (h *Host) writeSockets(root string) error {
	byNS := map[uint64]map[string][]row{0: {"tcp": nil, "tcp6": nil, "udp": nil, "udp6": nil}}
	for _, p := range h.Processes {
		if p.NetNS != 0 && byNS[p.NetNS] == nil {
			byNS[p.NetNS] = map[string][]row{"tcp": nil, "tcp6": nil, "udp": nil, "udp6": nil}
		}
	}
	for i, s := range h.Sockets {
		table, r, err := s.resolve()
		if err != nil {
			return fmt.Errorf("fakehost: socket %d (%s %s): %w", i, s.Proto, s.Local, err)
		}
		tables, ok := byNS[s.NetNS]
		if !ok {
			return fmt.Errorf("fakehost: socket %d (%s %s): no process is in netns %d", i, s.Proto, s.Local, s.NetNS)
		}
		tables[table] = append(tables[table], r)
	}
	for ns, tables := range byNS {
		dir := filepath.Join(root, "proc", "net")
		if ns != 0 {
			dir = filepath.Join(root, "proc", strconv.Itoa(h.nsLeader(ns)), "net")
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for name, rows := range tables {
			if err := os.WriteFile(filepath.Join(dir, name), formatTable(name, rows), 0o444); err != nil {
				return err
			}
		}
	}
	return nil
}

// nsLeader is the lowest PID in network namespace ns.
func (h *Host) nsLeader(ns uint64) int {
	pid := 0
	for _, p := range h.Processes {
		if p.NetNS == ns && (pid == 0 || p.PID < pid) {
			pid = p.PID
		}
	}
	return pid
}

// resolve picks the table for s and fills in its defaults.
func (s Socket) resolve() (string, row, error) {
	proto := strings.ToLower(s.Proto)
	var udp, want6 bool
	switch proto {
	case "tcp":
	case "tcp6":
		want6 = true
	case "udp":
		udp = true
	case "udp6":
		udp, want6 = true, true
	default:
		return "", row{}, fmt.Errorf("proto %q is not tcp, tcp6, udp or udp6", s.Proto)
	}
	local, err := netip.ParseAddrPort(s.Local)
	if err != nil {
		return "", row{}, fmt.Errorf("local: %w", err)
	}
	remote := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if s.Remote != "" {
		if remote, err = netip.ParseAddrPort(s.Remote); err != nil {
			return "", row{}, fmt.Errorf("remote: %w", err)
		}
	}
	// The table follows the local address's family: an IPv6 (or
	// IPv4-mapped) local address only exists on an AF_INET6 socket.
	v6 := want6 || local.Addr().Is6()
	if v6 {
		local = to16(local)
		remote = to16(remote)
		// An AF_INET6 socket without a peer shows all zeros, not
		// ::ffff:0.0.0.0.
		if !connectedTo(remote) {
			remote = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
		}
	} else {
		if remote.Addr().Is4In6() {
			remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
		}
		if !remote.Addr().Is4() {
			return "", row{}, fmt.Errorf("IPv6 remote %s on an IPv4 socket", remote)
		}
	}
	table := "tcp"
	if udp {
		table = "udp"
	}
	if v6 {
		table += "6"
	}

	connected := connectedTo(remote)
	var state uint8
	switch st := strings.ToUpper(strings.TrimPrefix(strings.ToUpper(s.State), "TCP_")); {
	case st == "" && udp && !connected:
		state = tcpStates["CLOSE"]
	case st == "" && !udp && !connected:
		state = tcpStates["LISTEN"]
	case st == "":
		state = tcpStates["ESTABLISHED"]
	default:
		code, ok := tcpStates[st]
		if !ok {
			n, err := strconv.ParseUint(st, 16, 8)
			if err != nil || n == 0 || n > 0x0C {
				return "", row{}, fmt.Errorf("unknown state %q", s.State)
			}
			code = uint8(n)
		}
		state = code
	}
	return table, row{local: local, remote: remote, state: state, inode: s.Inode, uid: s.UID}, nil
}

// connectedTo tells whether remote names a peer rather than "none".
func connectedTo(remote netip.AddrPort) bool {
	return remote.Port() != 0 || !remote.Addr().Unmap().IsUnspecified()
}

// to16 returns ap with an IPv4 address in its IPv4-mapped IPv6 form.
func to16(ap netip.AddrPort) netip.AddrPort {
	a := ap.Addr()
	if a.Is4() {
		a = netip.AddrFrom16(a.As16())
	}
	return netip.AddrPortFrom(a, ap.Port())
}

// Headers as net/ipv4/tcp_ipv4.c, net/ipv6/tcp_ipv6.c, net/ipv4/udp.c and
// net/ipv6/datagram.c print them. The IPv4 ones are padded with spaces to a
// fixed width like every IPv4 row (seq_setwidth/seq_pad); the IPv6 ones are
// not.
const (
	tcpHeader  = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
	tcp6Header = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
	udpHeader  = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops"
	udp6Header = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops"
	// Row widths of the IPv4 tables (TMPSZ-1 in tcp_ipv4.c, 127 in udp.c).
	tcpWidth = 149
	udpWidth = 127
)

func formatTable(name string, rows []row) []byte {
	var b bytes.Buffer
	switch name {
	case "tcp":
		b.WriteString(pad(tcpHeader, tcpWidth))
	case "tcp6":
		b.WriteString(tcp6Header + "\n")
	case "udp":
		b.WriteString(pad(udpHeader, udpWidth))
	case "udp6":
		b.WriteString(udp6Header + "\n")
	}
	for i, r := range rows {
		switch name {
		case "tcp":
			b.WriteString(pad(tcpRow(i, hex4(r.local), hex4(r.remote), r), tcpWidth))
		case "tcp6":
			b.WriteString(tcpRow(i, hex6(r.local), hex6(r.remote), r) + "\n")
		case "udp":
			b.WriteString(pad(udpRow(i, hex4(r.local), hex4(r.remote), r), udpWidth))
		case "udp6":
			b.WriteString(udpRow(i, hex6(r.local), hex6(r.remote), r) + "\n")
		}
	}
	return b.Bytes()
}

// pad right-pads line with spaces to width and ends it, like seq_pad.
func pad(line string, width int) string {
	if n := width - len(line); n > 0 {
		line += strings.Repeat(" ", n)
	}
	return line + "\n"
}

// tcpRow follows get_tcp4_sock/get_tcp6_sock; a TIME_WAIT row follows
// get_timewait4_sock, which has no uid, inode or congestion columns. The
// kernel pointer prints as zeros, as it does under kptr_restrict.
func tcpRow(sl int, local, remote string, r row) string {
	if r.state == tcpStates["TIME_WAIT"] {
		return fmt.Sprintf("%4d: %s %s %02X %08X:%08X %02X:%08X %08X %5d %8d %d %d %016x",
			sl, local, remote, r.state, 0, 0, 3, 0x1770, 0, 0, 0, r.inode, 3, 0)
	}
	ssthresh := -1
	if r.state == tcpStates["LISTEN"] {
		ssthresh = 0
	}
	return fmt.Sprintf("%4d: %s %s %02X %08X:%08X %02X:%08X %08X %5d %8d %d %d %016x %d %d %d %d %d",
		sl, local, remote, r.state, 0, 0, 0, 0, 0, r.uid, 0, r.inode, 1, 0, 100, 0, 0, 10, ssthresh)
}

// udpRow follows udp4_format_sock/__ip6_dgram_sock_seq_show.
func udpRow(sl int, local, remote string, r row) string {
	return fmt.Sprintf("%5d: %s %s %02X %08X:%08X %02X:%08X %08X %5d %8d %d %d %016x %d",
		sl, local, remote, r.state, 0, 0, 0, 0, 0, r.uid, 0, r.inode, 2, 0, 0)
}

// hex4 prints an IPv4 endpoint as the kernel does: the address as the
// host-order (little-endian) u32 of its network-order bytes, the port in
// plain big-endian hex.
func hex4(ap netip.AddrPort) string {
	a := ap.Addr().As4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
}

// hex6 prints an IPv6 endpoint as four little-endian u32 words.
func hex6(ap netip.AddrPort) string {
	a := ap.Addr().As16()
	var b strings.Builder
	for w := 0; w < 16; w += 4 {
		fmt.Fprintf(&b, "%02X%02X%02X%02X", a[w+3], a[w+2], a[w+1], a[w])
	}
	fmt.Fprintf(&b, ":%04X", ap.Port())
	return b.String()
}

// writeAddrs writes fib_trie (IPv4 LOCAL routes, where Linux lists the
// host's own IPv4 addresses) and if_inet6 (the IPv6 addresses).
func (h *Host) writeAddrs(root string) error {
	if err := writeAddrsIn(filepath.Join(root, "proc", "net"), h.Addresses); err != nil {
		return err
	}
	for ns, addrs := range h.NetNSAddresses {
		pid := h.nsLeader(ns)
		if pid == 0 {
			return fmt.Errorf("fakehost: netns_addresses: no process is in netns %d", ns)
		}
		dir := filepath.Join(root, "proc", strconv.Itoa(pid), "net")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := writeAddrsIn(dir, addrs); err != nil {
			return err
		}
	}
	return nil
}

func writeAddrsIn(dir string, addresses []string) error {
	v4 := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	v6 := []netip.Addr{netip.IPv6Loopback()}
	for _, s := range addresses {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("fakehost: address: %w", err)
		}
		a = a.WithZone("")
		if a.Is4() || a.Is4In6() {
			v4 = append(v4, a.Unmap())
		} else {
			v6 = append(v6, a)
		}
	}
	sortAddrs := func(s []netip.Addr) []netip.Addr {
		sort.Slice(s, func(i, j int) bool { return s[i].Less(s[j]) })
		return slices.Compact(s)
	}
	v4, v6 = sortAddrs(v4), sortAddrs(v6)

	if err := os.WriteFile(filepath.Join(dir, "fib_trie"), fibTrie(v4), 0o444); err != nil {
		return err
	}
	var b bytes.Buffer
	for _, a := range v6 {
		// Columns: address, ifindex, prefix length, scope, flags, name.
		ifindex, plen, scope, flags, name := 2, 0x40, 0x00, 0x80, "eth0"
		switch {
		case a.IsLoopback():
			ifindex, plen, scope, name = 1, 0x80, 0x10, "lo"
		case a.IsLinkLocalUnicast():
			scope = 0x20
		}
		fmt.Fprintf(&b, "%x %02x %02x %02x %02x %8s\n", a.As16(), ifindex, plen, scope, flags, name)
	}
	return os.WriteFile(filepath.Join(dir, "if_inet6"), b.Bytes(), 0o444)
}

// fibTrie prints a flattened but well-formed fib_trie: a Main and a Local
// table (the kernel prints both, identical, while no policy rule splits
// them), each with a default route, the loopback network and broadcast
// entries a parser must skip, and one "/32 host LOCAL" leaf per address.
func fibTrie(addrs []netip.Addr) []byte {
	var b bytes.Buffer
	for _, table := range []string{"Main", "Local"} {
		fmt.Fprintf(&b, "%s:\n", table)
		fmt.Fprintf(&b, "  +-- 0.0.0.0/0 3 0 %d\n", len(addrs)+3)
		b.WriteString("     |-- 0.0.0.0\n        /0 universe UNICAST\n")
		b.WriteString("     |-- 127.0.0.0\n        /8 host LOCAL\n")
		for _, a := range addrs {
			fmt.Fprintf(&b, "     |-- %s\n        /32 host LOCAL\n", a)
		}
		b.WriteString("     |-- 127.255.255.255\n        /32 link BROADCAST\n")
	}
	return b.Bytes()
}

// writeStat writes /proc/stat in the kernel's layout; readers need the cpu
// lines and btime.
func (h *Host) writeStat(root string) error {
	var b bytes.Buffer
	b.WriteString("cpu  25897 0 6542 30685 164 0 59 23 0 0\n")
	b.WriteString("cpu0 13024 0 3096 15522 21 0 12 9 0 0\n")
	b.WriteString("cpu1 12873 0 3446 15163 142 0 47 13 0 0\n")
	b.WriteString("intr 1361463 9 0 0 0 0 0 0 0 0\n")
	b.WriteString("ctxt 2815937\n")
	fmt.Fprintf(&b, "btime %d\n", h.bootTime())
	fmt.Fprintf(&b, "processes %d\n", len(h.Processes)+1)
	b.WriteString("procs_running 1\n")
	b.WriteString("procs_blocked 0\n")
	b.WriteString("softirq 512345 0 123 1 2000 300 0 40 5000 0 4000\n")
	return os.WriteFile(filepath.Join(root, "proc", "stat"), b.Bytes(), 0o444)
}

// comm returns the task name the kernel would show for p.
func (p *Process) comm() string {
	c := p.Comm
	if c == "" {
		switch {
		case p.Exe != "":
			c = filepath.Base(p.Exe)
		case len(p.Args) > 0:
			c = filepath.Base(p.Args[0])
		}
	}
	if len(c) > commLen {
		c = c[:commLen]
	}
	return c
}

func writeProcess(dir string, p *Process) error {
	if err := os.MkdirAll(dir, 0o555); err != nil {
		return err
	}
	comm := p.comm()
	files := map[string]string{
		"stat":    procStat(p, comm),
		"comm":    comm + "\n",
		"cmdline": cmdline(p.Args),
		"status":  procStatus(p, comm),
		// go-sysinfo's Environment reads it; an empty one is valid.
		"environ": "",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o444); err != nil {
			return err
		}
	}
	if p.Cgroup != "" {
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte("0::"+p.Cgroup+"\n"), 0o444); err != nil {
			return err
		}
	}
	if p.NetNS != 0 {
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o555); err != nil {
			return err
		}
		if err := symlink(fmt.Sprintf("net:[%d]", p.NetNS), filepath.Join(dir, "ns", "net")); err != nil {
			return err
		}
	}
	for name, target := range map[string]string{"exe": p.Exe, "cwd": p.Cwd} {
		if target == "" {
			continue
		}
		if err := symlink(target, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	if p.Unreadable {
		return nil
	}
	fd := filepath.Join(dir, "fd")
	if err := os.MkdirAll(fd, 0o500); err != nil {
		return err
	}
	// Standard streams that are not sockets come first, as in a real
	// daemon, so a reader must skip fds whose target is not socket:[N].
	targets := []string{"/dev/null", "pipe:[99]", "anon_inode:[eventpoll]"}
	for _, inode := range p.Sockets {
		targets = append(targets, fmt.Sprintf("socket:[%d]", inode))
	}
	for i, t := range targets {
		if err := symlink(t, filepath.Join(fd, strconv.Itoa(i))); err != nil {
			return err
		}
	}
	return nil
}

// symlink replaces any existing link so that Write can run twice on one root.
func symlink(target, name string) error {
	if err := os.Remove(name); err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.Symlink(target, name)
}

// cmdline joins args as the kernel stores argv: each one NUL-terminated.
func cmdline(args []string) string {
	var b strings.Builder
	for _, a := range args {
		b.WriteString(a)
		b.WriteByte(0)
	}
	return b.String()
}

// procStat prints the 52 fields of /proc/<pid>/stat (fs/proc/array.c,
// do_task_stat); starttime is field 22.
func procStat(p *Process, comm string) string {
	f := []any{
		p.PID, "(" + comm + ")", "S", p.PPID, // 1-4 pid comm state ppid
		p.PID, p.PID, 0, -1, 4194560, // 5-9 pgrp session tty_nr tpgid flags
		1520, 0, 12, 0, // 10-13 minflt cminflt majflt cmajflt
		7, 3, 0, 0, // 14-17 utime stime cutime cstime
		20, 0, 1, 0, // 18-21 priority nice num_threads itrealvalue
		p.StartTicks,                           // 22 starttime
		11063296, 1174, "18446744073709551615", // 23-25 vsize rss rsslim
		1, 1, 0, 0, 0, // 26-30 startcode endcode startstack kstkesp kstkeip
		0, 0, 4096, 17411, // 31-34 signal blocked sigignore sigcatch
		0, 0, 0, 17, 0, // 35-39 wchan nswap cnswap exit_signal processor
		0, 0, 0, 0, 0, // 40-44 rt_priority policy delayacct_blkio_ticks guest_time cguest_time
		0, 0, 0, 0, 0, 0, 0, 0, // 45-52 start_data end_data start_brk arg_start arg_end env_start env_end exit_code
	}
	parts := make([]string, len(f))
	for i, v := range f {
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, " ") + "\n"
}

// procStatus prints the head of /proc/<pid>/status (fs/proc/array.c); the
// Uid line holds real, effective, saved and filesystem uid.
func procStatus(p *Process, comm string) string {
	u := p.UID
	return fmt.Sprintf("Name:\t%s\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t%d\nNgid:\t0\nPid:\t%d\nPPid:\t%d\nTracerPid:\t0\n"+
		"Uid:\t%d\t%d\t%d\t%d\nGid:\t0\t0\t0\t0\nFDSize:\t64\nGroups:\t\nThreads:\t1\n",
		comm, p.PID, p.PID, p.PPID, u, u, u, u)
}

func (h *Host) writeEtc(root string) error {
	dir := filepath.Join(root, "etc")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	users := h.users()
	uids := make([]int, 0, len(users))
	for uid := range users {
		uids = append(uids, uid)
	}
	sort.Ints(uids)
	var passwd, group bytes.Buffer
	for _, uid := range uids {
		// Each user gets a same-numbered group, as useradd does by default.
		home := "/home/" + users[uid]
		if uid == 0 {
			home = "/root"
		}
		fmt.Fprintf(&passwd, "%s:x:%d:%d::%s:/bin/sh\n", users[uid], uid, uid, home)
		fmt.Fprintf(&group, "%s:x:%d:\n", users[uid], uid)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), passwd.Bytes(), 0o644); err != nil {
		return err
	}
	if h.MachineID != "" {
		if err := os.WriteFile(filepath.Join(dir, "machine-id"), []byte(h.MachineID+"\n"), 0o444); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "group"), group.Bytes(), 0o644)
}
