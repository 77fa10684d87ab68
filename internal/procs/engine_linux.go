//go:build linux

package procs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

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
	// hostID is the host's unique ID for entity IDs and bootTime the
	// host's boot time for parents' start times, each read once.
	hostID   func() string
	bootTime func() time.Time
	// describeParents: Process describes the parent too (Config.DescribeParents).
	describeParents atomic.Bool

	mu      sync.Mutex // one Sockets call at a time owns everything below
	buf     []byte
	linkBuf []byte
	dents   []byte // getdents buffer
	nameBuf []byte // NUL-terminated PID for openat
	pathBuf []byte // NUL-terminated names for openat/readlinkat
	diagBuf []byte // sock_diag receive buffer
	// useDiag: read socket tables through NETLINK_SOCK_DIAG instead of the
	// text files (host_path "/" only, where both show this namespace).
	useDiag bool
	byInode map[uint64]int
	pids    []int
	fds     map[int]*procFds
	orphans map[uint64]struct{}
	// listeners: the listening sockets' inodes after the last whole-table
	// walk; a listener not among them makes an incremental walk re-read
	// the processes it trusted (resolveOwners).
	listeners map[uint64]struct{}
	walkGen   uint64
	lastFull  time.Time
	// fullFrom is nonzero while a full walk is pending: processes last read
	// before that walk generation must be read again. chainFrom is the
	// generation of the first attempt of a walk that has not finished (a
	// rescan that ran out of budget); what was read since is trusted
	// without verification. See resolveOwners.
	fullFrom, chainFrom uint64
	// walkWhole: the walk in progress covers the whole table (not Resolve).
	walkWhole bool
	// clock, if set, is the watcher's Config.Changes (setChangeClock).
	clock ChangeClock
	// fallbackInodes: up to 16 ownerless inodes that made the last
	// incremental walk fall back to a full one (for tests).
	fallbackInodes []uint64
	// fdCounts: proc is a real procfs whose fd/ directories report the
	// number of open descriptors as their size (Linux 6.2 and later; older
	// kernels and fake trees do not, which disables the incremental walk).
	fdCounts bool
	now      func() time.Time
	// recheckLeft is what the walk in progress may still spend on
	// re-checks (maxRechecksPerWalk).
	recheckLeft int

	// view is what the last whole-table walk knew of each process, for
	// Resolve's owner search, which runs beside a rescan (ownersearch_linux.go).
	view   atomic.Pointer[ownerView]
	search ownerSearch

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
	verified  uint64 // socket descriptors of trusted processes re-checked
	// verifyFailed: re-checks that found another file at the descriptor
	// (the process was then re-read).
	verifyFailed uint64
	cutShort     uint64 // walks stopped by the rescan budget (resumed by the next)
	// verifySkipped: trusted processes whose re-check was skipped (checked
	// within verifyEvery, or an unchanged change-clock epoch).
	verifySkipped uint64
	// recheckDeferred: trusted processes whose due re-check waited for a
	// later walk (maxRechecksPerWalk).
	recheckDeferred uint64
}

// setChangeClock gives the owner walk the tracker's change counters: a
// process whose epoch did not change since its descriptors were checked
// needs no re-check. The Watcher calls it from New; the clock is read only
// under e.mu.
func (e *linuxEngine) setChangeClock(c ChangeClock) {
	e.mu.Lock()
	e.clock = c
	e.mu.Unlock()
}

// NewEngine returns the engine for host_path root ("" or "/" for this host).
// It fails if root/proc/net/tcp cannot be read, naming the path, so a wrong
// host_path is reported at startup instead of as silent misses.
func NewEngine(root string) (Engine, error) {
	if root == "" {
		root = "/"
	}
	e := &linuxEngine{
		root:      root,
		proc:      filepath.Join(root, "proc"),
		buf:       make([]byte, 0, 64<<10),
		linkBuf:   make([]byte, 256),
		dents:     make([]byte, 32<<10),
		byInode:   map[uint64]int{},
		fds:       map[int]*procFds{},
		orphans:   map[uint64]struct{}{},
		listeners: map[uint64]struct{}{},
		now:       time.Now,
		users:     passwdCache{path: filepath.Join(root, "etc", "passwd")},
		hostID:    sync.OnceValue(func() string { return machineID(root) }),
	}
	e.bootTime = sync.OnceValue(func() time.Time { return readBootTime(e.proc) })
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

// LocalAddrs lists the addresses of the reader's namespace and of every
// other namespace seen at the last rescan (a container's own IP is local).
func (e *linuxEngine) LocalAddrs() ([]netip.Addr, error) {
	out, err := readAddrs(filepath.Join(e.proc, "net"))
	more, ferr := e.foreignAddrs()
	return append(out, more...), errors.Join(err, ferr)
}
