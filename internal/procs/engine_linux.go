//go:build linux

package procs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/elastic/go-sysinfo"
	"golang.org/x/sys/unix"
)

// linuxEngine reads <root>/proc: socket tables from proc/net, owners from
// proc/<pid>/fd, details through go-sysinfo (which honours the host FS
// root). It keeps reusable buffers and, across rescans, the socket inodes
// each process held (see resolveOwners for the exact rule), so a rescan
// re-reads the fd tables only of processes whose fd count changed.
type linuxEngine struct {
	root string // host_path
	proc string // root/proc

	mu      sync.Mutex // one Sockets call at a time owns everything below
	buf     []byte
	linkBuf []byte
	dents   []byte // getdents buffer
	nameBuf []byte // NUL-terminated PID for openat
	diagBuf []byte // sock_diag receive buffer
	// useDiag: read socket tables through NETLINK_SOCK_DIAG instead of the
	// text files (host_path "/" only, where both show this namespace).
	useDiag  bool
	byInode  map[uint64]int
	pids     []int
	fds      map[int]*procFds
	orphans  map[uint64]struct{}
	walkGen  uint64
	lastFull time.Time
	// fdCounts: proc is a real procfs whose fd/ directories report the
	// number of open descriptors as their size (Linux 6.2 and later; older
	// kernels and fake trees do not, which disables the incremental walk).
	fdCounts bool
	now      func() time.Time

	stats engineStats

	ns nsState // network namespaces: netns_linux.go

	users passwdCache
}

// engineStats counts the owner walk's work, for benchmarks and tests.
type engineStats struct {
	rescans   uint64 // Sockets calls
	fullWalks uint64 // rescans that re-read every process's fd table
	fallbacks uint64 // incremental walks that had to become full walks
	reread    uint64 // fd tables read
	trusted   uint64 // fd tables reused from the previous rescan
	readlinks uint64 // fd links read
}

// procFds is what a process held the last time its fd table was read.
type procFds struct {
	ino    uint64   // inode of /proc/<pid>: the process instance, to procfs
	start  uint64   // /proc/<pid>/stat starttime: the process instance
	nfds   int64    // size of /proc/<pid>/fd when read; -1 if unknown
	inodes []uint64 // socket inodes among its fds
	seen   uint64   // walk generation in which the PID was last listed
	// trusted: this walk reused inodes instead of reading fd/.
	trusted bool
}

// fullWalkEvery bounds how long an incremental walk may trust fd tables
// whose size did not change; see resolveOwners.
const fullWalkEvery = 30 * time.Second

// NewEngine returns the engine for host_path root ("" or "/" for this host).
// It fails if root/proc/net/tcp cannot be read, naming the path, so a wrong
// host_path is reported at startup instead of as silent misses.
func NewEngine(root string) (Engine, error) {
	if root == "" {
		root = "/"
	}
	e := &linuxEngine{
		root:    root,
		proc:    filepath.Join(root, "proc"),
		buf:     make([]byte, 0, 64<<10),
		linkBuf: make([]byte, 256),
		dents:   make([]byte, 32<<10),
		byInode: map[uint64]int{},
		fds:     map[int]*procFds{},
		orphans: map[uint64]struct{}{},
		now:     time.Now,
		users:   passwdCache{path: filepath.Join(root, "etc", "passwd")},
	}
	if _, err := os.Stat(filepath.Join(e.proc, "net", "tcp")); err != nil {
		return nil, fmt.Errorf("host_path %q: cannot read the socket table: %w (set host_path to the directory that holds the host's proc/)", root, err)
	}
	e.useDiag = filepath.Clean(root) == "/" && os.Getenv("NETPROCBEAT_PROCNET_TEXT") == ""
	var fs unix.Statfs_t
	var st unix.Stat_t
	e.fdCounts = unix.Statfs(e.proc, &fs) == nil && fs.Type == unix.PROC_SUPER_MAGIC &&
		unix.Stat(filepath.Join(e.proc, "self", "fd"), &st) == nil && st.Size > 0
	return e, nil
}

var procNetFiles = []struct {
	name     string
	t        Transport
	optional bool // IPv6 tables are absent when IPv6 is disabled
}{
	{"tcp", TCP, false},
	{"tcp6", TCP, true},
	{"udp", UDP, false},
	{"udp6", UDP, true},
}

func (e *linuxEngine) Sockets(ctx context.Context, dst []Socket) ([]Socket, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stats.rescans++
	var bad int
	ownStart := len(dst)
	for _, f := range procNetFiles {
		if e.useDiag {
			family, proto := uint8(unix.AF_INET), uint8(unix.IPPROTO_TCP)
			if f.name == "tcp6" || f.name == "udp6" {
				family = unix.AF_INET6
			}
			if f.t == UDP {
				proto = unix.IPPROTO_UDP
			}
			n := len(dst)
			var err error
			if dst, err = e.diagDump(family, proto, f.t, dst); err == nil {
				continue
			}
			// The kernel refused (e.g. no udp_diag): read this table as
			// text, dropping the rows of the failed dump.
			dst = dst[:n]
		}
		path := filepath.Join(e.proc, "net", f.name)
		data, err := e.readFile(path)
		if err != nil {
			if f.optional && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return dst, fmt.Errorf("reading %s: %w", path, err)
		}
		var n int
		dst, n = ParseProcNet(data, f.t, dst)
		bad += n
	}
	var nsBad int
	dst, nsBad = e.appendNamespaces(dst, ownStart)
	bad += nsBad

	clear(e.byInode)
	for i := range dst {
		if dst[i].Inode != 0 {
			e.byInode[dst[i].Inode] = i
		}
	}
	if err := e.resolveOwners(ctx, dst, true); err != nil {
		return dst, err
	}
	if bad > 0 {
		return dst, &PartialError{Msg: fmt.Sprintf("%d malformed rows skipped in %s/net tables", bad, e.proc)}
	}
	return dst, nil
}

// resolveOwners sets each socket's PID to the lowest PID holding its inode.
//
// The rule: every rescan lists /proc and, for each process, stats
// /proc/<pid> (procfs gives each process instance its own inode number, so a
// reused PID shows a new one) and /proc/<pid>/fd (whose size procfs reports
// as the number of open descriptors). A process's socket inodes are re-read
// from fd/ (with its stat's start time, through one pinned directory fd)
// when it is new, its /proc inode changed, its descriptor count changed or
// is unknown, or the walk is full; otherwise the inodes read last time are
// reused ("trusted"). Owners are then assigned in ascending PID order over
// all processes, so the answer is the lowest holder among what was read or
// trusted.
//
// A walk is full (nothing trusted) on the first rescan, when proc is not a
// procfs (a fake tree or a kernel before 6.2 gives no descriptor count),
// when the last full walk is fullWalkEvery old, and as the fallback: when
// an incremental walk leaves an inode in the table without an owner and that
// inode was not already ownerless after the last full walk (so a socket no
// process holds does not force a full walk on every rescan), the trusted
// processes are re-read and owners assigned again from scratch.
//
// What trusting can get wrong, for at most fullWalkEvery: a process that
// closed and opened descriptors in equal numbers since its last read may
// hold a socket that the walk attributes to a higher PID also holding it
// (a new socket with no other holder is never missed: it triggers the
// fallback), or be reported for a socket it closed while another process
// still holds it.
//
// wholeTable is false when socks is not the whole socket table (Resolve):
// the walk then neither records ownerless inodes nor counts as the periodic
// full walk.
func (e *linuxEngine) resolveOwners(ctx context.Context, socks []Socket, wholeTable bool) error {
	want := len(e.byInode)
	procfd, err := unix.Open(e.proc, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", e.proc, err)
	}
	defer unix.Close(procfd)
	pids, err := e.listPIDs(procfd)
	if err != nil {
		return err
	}
	now := e.now()
	full := !e.fdCounts || e.lastFull.IsZero() || now.Sub(e.lastFull) >= fullWalkEvery
	e.walkGen++
	for n, pid := range pids {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("rescan budget exhausted after reading %d of %d processes (%d sockets): %w", n, len(pids), want, err)
		}
		e.visit(procfd, pid, full)
	}
	for pid, p := range e.fds {
		if p.seen != e.walkGen {
			delete(e.fds, pid)
		}
	}
	if want == 0 {
		return nil
	}
	unresolved := e.assign(pids, socks)
	if !full && unresolved > 0 && e.unexplained(socks) {
		// Fallback: something new has no owner among the processes read;
		// one of the trusted ones may have replaced a descriptor.
		e.stats.fallbacks++
		for _, pid := range pids {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("rescan budget exhausted during a full walk of %d processes (%d sockets): %w", len(pids), want, err)
			}
			if p := e.fds[pid]; p != nil && p.seen == e.walkGen && p.trusted {
				e.visit(procfd, pid, true)
			}
		}
		for i := range socks {
			socks[i].PID, socks[i].StartKey = 0, 0
		}
		unresolved = e.assign(pids, socks)
		full = true
	}
	if full && wholeTable {
		e.stats.fullWalks++
		e.lastFull = now
		clear(e.orphans)
		if unresolved > 0 {
			for i := range socks {
				if socks[i].Inode != 0 && socks[i].PID == 0 {
					e.orphans[socks[i].Inode] = struct{}{}
				}
			}
		}
	}
	return nil
}

// assign gives each socket the lowest PID whose fd table lists its inode,
// and returns how many sockets with an inode have none.
func (e *linuxEngine) assign(pids []int, socks []Socket) int {
	left := len(e.byInode)
	for _, pid := range pids {
		p := e.fds[pid]
		if p == nil || p.seen != e.walkGen {
			continue
		}
		for _, inode := range p.inodes {
			i, ok := e.byInode[inode]
			if !ok || socks[i].PID != 0 {
				continue
			}
			socks[i].PID = pid
			socks[i].StartKey = p.start
			left--
		}
		if left == 0 {
			break
		}
	}
	return left
}

// unexplained reports whether a socket with an inode has no owner and was
// not ownerless after the last full walk.
func (e *linuxEngine) unexplained(socks []Socket) bool {
	for i := range socks {
		if socks[i].Inode != 0 && socks[i].PID == 0 {
			if _, ok := e.orphans[socks[i].Inode]; !ok {
				return true
			}
		}
	}
	return false
}

// visit refreshes what e.fds knows of pid and reports whether it trusted
// the previous read. Processes that exit or whose stat or fds cannot be
// read are dropped: their sockets stay unowned rather than guessed.
func (e *linuxEngine) visit(procfd, pid int, full bool) (trusted bool) {
	p := e.fds[pid]
	drop := func() bool {
		delete(e.fds, pid)
		return false
	}
	e.nameBuf = append(strconv.AppendInt(e.nameBuf[:0], int64(pid), 10), 0)
	// Two stats through procfd: the /proc/<pid> inode (procfs gives a new
	// process instance a new one) and the number of descriptors. They are
	// taken the same way whether or not the read is then reused, so the
	// count never includes a directory this walk opened (which made our own
	// process look changed on every walk).
	ino, size := uint64(0), int64(-1)
	if e.fdCounts {
		name := string(e.nameBuf[:len(e.nameBuf)-1])
		var st unix.Stat_t
		if unix.Fstatat(procfd, name, &st, 0) == nil {
			ino = st.Ino
			if unix.Fstatat(procfd, name+"/fd", &st, 0) == nil {
				size = st.Size
			}
		}
		if p != nil && !full && size >= 0 && ino == p.ino && size == p.nfds {
			p.seen, p.trusted = e.walkGen, true
			e.stats.trusted++
			return true
		}
	}
	// Opening the directory pins this process instance: if the PID exits
	// and is reused, reads through dirfd fail instead of describing the
	// newcomer, so stat and fd always belong to the same process.
	dirfd, err := openatZ(procfd, e.nameBuf, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return drop()
	}
	defer unix.Close(dirfd)
	var dst unix.Stat_t
	if err := unix.Fstat(dirfd, &dst); err != nil {
		return drop()
	}
	if dst.Ino != ino {
		// Not the instance the stats above saw (or no stats): never trust
		// this read.
		size = -1
	}
	start, ok := e.startKeyAt(dirfd)
	if !ok {
		return drop()
	}
	if p == nil {
		p = &procFds{}
	}
	inodes, ok := e.readFds(dirfd, p.inodes[:0])
	if !ok {
		return drop()
	}
	p.ino, p.start, p.nfds, p.inodes, p.seen, p.trusted = dst.Ino, start, size, inodes, e.walkGen, false
	e.fds[pid] = p
	return false
}

var (
	fdName   = []byte("fd\x00")
	statName = []byte("stat\x00")
)

// readFds appends the socket inodes among dirfd's fd/ links to dst.
func (e *linuxEngine) readFds(dirfd int, dst []uint64) ([]uint64, bool) {
	fdfd, err := openatZ(dirfd, fdName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return dst, false
	}
	defer unix.Close(fdfd)
	e.stats.reread++
	for {
		n, err := unix.Getdents(fdfd, e.dents)
		if err != nil {
			return dst, false
		}
		if n <= 0 {
			return dst, true
		}
		for b := e.dents[:n]; len(b) >= direntNameOff; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < direntNameOff || reclen > len(b) {
				return dst, false
			}
			name := b[direntNameOff:reclen] // NUL-terminated, then padding
			typ := b[18]
			b = b[reclen:]
			if name[0] == '.' || (typ != unix.DT_LNK && typ != unix.DT_UNKNOWN) {
				continue
			}
			e.stats.readlinks++
			if inode, ok := e.socketInode(fdfd, name); ok {
				dst = append(dst, inode)
			}
		}
	}
}

// direntNameOff is the offset of d_name in struct linux_dirent64.
const direntNameOff = 19

// listPIDs lists the numeric entries of procfd in ascending order.
func (e *linuxEngine) listPIDs(procfd int) ([]int, error) {
	e.pids = e.pids[:0]
	for {
		n, err := unix.Getdents(procfd, e.dents)
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", e.proc, err)
		}
		if n <= 0 {
			break
		}
		for b := e.dents[:n]; len(b) >= direntNameOff; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < direntNameOff || reclen > len(b) {
				return nil, fmt.Errorf("listing %s: malformed directory entry", e.proc)
			}
			name := b[direntNameOff:reclen]
			b = b[reclen:]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if v, ok := parseDecUint(name); ok && v > 0 && v <= 1<<31 {
				e.pids = append(e.pids, int(v))
			}
		}
	}
	slices.Sort(e.pids)
	return e.pids, nil
}

// openatZ and readlinkatZ take NUL-terminated names, so the walk does not
// allocate a C string per process or per descriptor.
func openatZ(dirfd int, name []byte, flags int) (int, error) {
	r, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])), uintptr(flags), 0, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

func readlinkatZ(dirfd int, name, buf []byte) (int, error) {
	r, _, errno := unix.Syscall6(unix.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func (e *linuxEngine) socketInode(dirfd int, name []byte) (uint64, bool) {
	n, err := readlinkatZ(dirfd, name, e.linkBuf)
	if err != nil || n <= 0 || n >= len(e.linkBuf) {
		return 0, false
	}
	link := e.linkBuf[:n]
	const prefix = "socket:["
	if len(link) < len(prefix)+2 || string(link[:len(prefix)]) != prefix || link[n-1] != ']' {
		return 0, false
	}
	return parseDecUint(link[len(prefix) : n-1])
}

func (e *linuxEngine) startKeyAt(dirfd int) (uint64, bool) {
	fd, err := openatZ(dirfd, statName, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	data, err := e.readAll(fdReader(fd))
	if err != nil {
		return 0, false
	}
	_, _, start, err := ParseStatStart(data)
	return start, err == nil
}

// fdReader reads a raw descriptor without os.File's allocation and poller
// registration.
type fdReader int

func (f fdReader) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(int(f), b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 && len(b) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// readFile reads path into the engine's reusable buffer.
func (e *linuxEngine) readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return e.readAll(f)
}

func (e *linuxEngine) readAll(r io.Reader) ([]byte, error) {
	b := e.buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			e.buf = b
			return nil, err
		}
	}
	e.buf = b
	return b, nil
}

func (e *linuxEngine) Process(pid int, startKey uint64) (*Process, error) {
	sp, err := sysinfo.Process(pid, sysinfo.WithHostFS(e.root))
	if err != nil {
		return nil, err
	}
	info, err := sp.Info()
	if err != nil {
		return nil, err
	}
	p := &Process{
		PID:              info.PID,
		PPID:             info.PPID,
		Name:             procName(info.Name, info.Args),
		Args:             info.Args,
		Executable:       info.Exe,
		WorkingDirectory: info.CWD,
		Start:            info.StartTime.UTC(),
		StartKey:         startKey,
		JoinedArgs:       strings.Join(info.Args, " "),
	}
	if u, err := sp.User(); err == nil {
		p.UID = u.UID
		p.UserName = e.users.name(u.UID)
	}
	p.ContainerID = e.containerID(pid)
	p.NetNS, p.Foreign = e.processNS(pid)
	// go-sysinfo read the files by path, not through a pinned dirfd: check
	// the PID still names the same process instance afterwards.
	stat, err := os.ReadFile(filepath.Join(e.proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, err
	}
	if _, _, now, err := ParseStatStart(stat); err != nil || (startKey != 0 && now != startKey) {
		return nil, fmt.Errorf("PID %d was reused by another process during the read (start %d, want %d)", pid, now, startKey)
	}
	return p, nil
}

// LocalAddrs lists the addresses of the reader's namespace and of every
// other namespace seen at the last rescan (a container's own IP is local).
func (e *linuxEngine) LocalAddrs() ([]netip.Addr, error) {
	out, err := readAddrs(filepath.Join(e.proc, "net"))
	more, ferr := e.foreignAddrs()
	return append(out, more...), errors.Join(err, ferr)
}

// passwdCache maps UIDs to user names from the host's etc/passwd, re-read
// when the file changes. A missing file just leaves user.name empty.
type passwdCache struct {
	path  string
	mu    sync.Mutex
	mtime int64
	size  int64
	names map[string]string
}

func (c *passwdCache) name(uid string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	fi, err := os.Stat(c.path)
	if err != nil {
		return ""
	}
	if c.names == nil || fi.ModTime().UnixNano() != c.mtime || fi.Size() != c.size {
		f, err := os.Open(c.path)
		if err != nil {
			return ""
		}
		c.names = parsePasswd(f)
		f.Close()
		c.mtime, c.size = fi.ModTime().UnixNano(), fi.Size()
	}
	return c.names[uid]
}

func parsePasswd(r io.Reader) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := bytes.SplitN(sc.Bytes(), []byte(":"), 4)
		if len(f) < 3 || len(f[0]) == 0 || f[0][0] == '#' {
			continue
		}
		if _, dup := m[string(f[2])]; !dup {
			m[string(f[2])] = string(f[0])
		}
	}
	return m
}

// Resolve finds the socket of one connection, local to remote, without
// listing every socket: one sock_diag exact lookup (no dump) gives its
// inode, and the owner walk of resolveOwners, with the same rule, finds the
// lowest PID holding it. found is false when the kernel has no such socket.
// It serves a cold lookup in a few milliseconds where a rescan has to dump
// the whole table first (~1 µs of kernel time per socket); the watcher does
// not call it yet (docs/benchmarks.md). host_path "/" only.
func (e *linuxEngine) Resolve(ctx context.Context, t Transport, local, remote netip.AddrPort) (s Socket, found bool, err error) {
	if !e.useDiag {
		return s, false, ErrUnsupported
	}
	// A rescan in flight holds the engine and will list this socket anyway:
	// do not queue a lookup behind it.
	if !e.mu.TryLock() {
		return s, false, errEngineBusy
	}
	defer e.mu.Unlock()
	proto := uint8(unix.IPPROTO_TCP)
	if t == UDP {
		proto = unix.IPPROTO_UDP
	}
	l, r := local.Addr().Unmap(), remote.Addr().Unmap()
	var one []Socket
	if l.Is4() && r.Is4() {
		one, err = e.diagExact(unix.AF_INET, proto, t, l.As16(), local.Port(), r.As16(), remote.Port(), true)
		if err == nil && len(one) == 0 {
			// An IPv4 peer of a dual-stack IPv6 socket.
			one, err = e.diagExact(unix.AF_INET6, proto, t, l.As16(), local.Port(), r.As16(), remote.Port(), false)
		}
	} else {
		one, err = e.diagExact(unix.AF_INET6, proto, t, l.As16(), local.Port(), r.As16(), remote.Port(), false)
	}
	if err != nil || len(one) == 0 {
		return s, false, err
	}
	clear(e.byInode)
	if one[0].Inode != 0 {
		e.byInode[one[0].Inode] = 0
		if err := e.resolveOwners(ctx, one, false); err != nil {
			return one[0], true, err
		}
	}
	return one[0], true, nil
}

var errEngineBusy = errors.New("the engine is busy with a rescan")

// diagExact asks sock_diag for the one socket with this 4-tuple. a16 and
// b16 are 16-byte addresses; for AF_INET only their last 4 bytes are used,
// for AF_INET6 IPv4 addresses are sent in their mapped form.
func (e *linuxEngine) diagExact(family, proto uint8, t Transport, a16 [16]byte, aport uint16, b16 [16]byte, bport uint16, v4 bool) ([]Socket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var req [sizeofNlMsghdr + sizeofInetDiagReqV2]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], 1)
	req[16], req[17] = family, proto
	ne.PutUint32(req[20:], 0xffffffff)
	id := req[24:]
	binary.BigEndian.PutUint16(id[0:], aport)
	binary.BigEndian.PutUint16(id[2:], bport)
	if v4 {
		copy(id[4:8], a16[12:])
		copy(id[20:24], b16[12:])
	} else {
		copy(id[4:20], a16[:])
		copy(id[20:36], b16[:])
	}
	ne.PutUint32(id[40:], 0xffffffff) // INET_DIAG_NOCOOKIE
	ne.PutUint32(id[44:], 0xffffffff)
	if err := unix.Sendto(fd, req[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	var buf [4096]byte
	for {
		n, _, err := unix.Recvfrom(fd, buf[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		b := buf[:n]
		if len(b) < sizeofNlMsghdr {
			return nil, errors.New("sock_diag: truncated reply")
		}
		l := int(ne.Uint32(b[0:]))
		if l < sizeofNlMsghdr || l > len(b) {
			return nil, errors.New("sock_diag: truncated reply")
		}
		msg := b[sizeofNlMsghdr:l]
		switch ne.Uint16(b[4:]) {
		case unix.NLMSG_ERROR:
			if len(msg) >= 4 {
				switch errno := unix.Errno(-int32(ne.Uint32(msg))); errno {
				case 0:
					return nil, nil
				case unix.ENOENT:
					return nil, nil
				default:
					return nil, fmt.Errorf("sock_diag: %w", errno)
				}
			}
			return nil, errors.New("sock_diag: error")
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(msg) < sizeofInetDiagMsg {
				return nil, errors.New("sock_diag: short reply")
			}
			return []Socket{diagSocket(msg, t)}, nil
		}
	}
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

// diagDump appends the sockets of one family and protocol to dst.
func (e *linuxEngine) diagDump(family uint8, proto uint8, t Transport, dst []Socket) ([]Socket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return dst, err
	}
	defer unix.Close(fd)
	var req [sizeofNlMsghdr + sizeofInetDiagReqV2]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1) // seq
	req[16] = family
	req[17] = proto
	ne.PutUint32(req[20:], 0xffffffff) // every state
	if err := unix.Sendto(fd, req[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return dst, err
	}
	if cap(e.diagBuf) == 0 {
		e.diagBuf = make([]byte, 256<<10)
	}
	buf := e.diagBuf[:cap(e.diagBuf)]
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return dst, err
		}
		for b := buf[:n]; len(b) >= sizeofNlMsghdr; {
			l := int(ne.Uint32(b[0:]))
			typ := ne.Uint16(b[4:])
			if l < sizeofNlMsghdr || l > len(b) {
				return dst, errors.New("sock_diag: truncated message")
			}
			msg := b[sizeofNlMsghdr:l]
			// The kernel pads every message to 4 bytes; a last message
			// without its padding must not slice past the buffer.
			b = b[min((l+3)&^3, len(b)):]
			switch typ {
			case unix.NLMSG_DONE:
				return dst, nil
			case unix.NLMSG_ERROR:
				if len(msg) >= 4 {
					if errno := int32(ne.Uint32(msg)); errno != 0 {
						return dst, fmt.Errorf("sock_diag: %w", unix.Errno(-errno))
					}
				}
				return dst, errors.New("sock_diag: error")
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(msg) < sizeofInetDiagMsg {
					continue
				}
				dst = append(dst, diagSocket(msg, t))
			}
			if len(b) < sizeofNlMsghdr {
				break
			}
		}
	}
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
	return s
}
