//go:build linux

package procs

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Network namespaces. /proc/net shows only the reader's own namespace, so
// sockets of containers with their own network would never resolve. Each
// rescan groups processes by /proc/<pid>/ns/net and reads every other
// namespace's tables once, through its lowest PID's /proc/<pid>/net. Socket
// inodes are unique across namespaces, so the owner walk needs no change.
// The host namespace is PID 1's; its sockets win where an endpoint exists in
// several namespaces, and an event without container context is never
// answered with another namespace's loopback socket (index.go, gate.go).

// nsState is what the engine knows of namespaces; guarded by its mu, except
// reps, which LocalAddrs also reads (under repsMu).
type nsState struct {
	own, host uint64 // the reader's namespace (proc/self), PID 1's

	byPID    map[int]nsPID // cached namespace of each PID
	gen      uint64
	lastFull time.Time

	repsMu sync.Mutex
	reps   map[uint64]int // foreign namespace → its lowest PID, last rescan

	// Copies of own and host for Process, which must not wait for a rescan
	// holding the engine's lock.
	ownAt, hostAt atomic.Uint64
}

type nsPID struct {
	ns   uint64
	seen uint64
}

// nsRediscoverEvery bounds how long a PID's cached namespace is trusted: a
// process may move (setns, unshare) and a PID may be reused.
const nsRediscoverEvery = 30 * time.Second

// nsOf returns the inode of name's network namespace from the link
// "<proc>/<name>/ns/net" -> "net:[4026531840]", 0 if unreadable. readlink,
// not stat, so a fake tree's dangling links work the same.
func (e *linuxEngine) nsOf(name string) uint64 {
	n, err := unix.Readlink(filepath.Join(e.proc, name, "ns", "net"), e.linkBuf)
	if err != nil || n <= 0 {
		return 0
	}
	return parseNSLink(e.linkBuf[:n])
}

func parseNSLink(b []byte) uint64 {
	const prefix = "net:["
	if !bytes.HasPrefix(b, []byte(prefix)) || b[len(b)-1] != ']' {
		return 0
	}
	v, ok := parseDecUint(b[len(prefix) : len(b)-1])
	if !ok {
		return 0
	}
	return v
}

// hostNetNS is the host's namespace as of the last rescan (0 before it).
func (e *linuxEngine) hostNetNS() uint64 { return e.ns.hostAt.Load() }

// appendNamespaces marks dst[ownStart:] (the reader's own tables) with its
// namespace and appends the sockets of every other namespace. It returns
// the number of malformed rows skipped.
func (e *linuxEngine) appendNamespaces(dst []Socket, ownStart int) ([]Socket, int) {
	ns := &e.ns
	ns.own = e.nsOf("self")
	ns.host = e.nsOf("1")
	switch {
	case ns.own == 0:
		ns.own = ns.host
	case ns.host == 0:
		ns.host = ns.own
	}
	ns.ownAt.Store(ns.own)
	ns.hostAt.Store(ns.host)
	for i := ownStart; i < len(dst); i++ {
		dst[i].NetNS, dst[i].Foreign = ns.own, ns.own != ns.host
	}

	procfd, err := unix.Open(e.proc, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return dst, 0
	}
	pids, err := e.listPIDs(procfd)
	unix.Close(procfd)
	if err != nil {
		return dst, 0
	}
	now := e.now()
	full := ns.byPID == nil || now.Sub(ns.lastFull) >= nsRediscoverEvery
	if full {
		ns.byPID = make(map[int]nsPID, len(pids))
		ns.lastFull = now
	}
	ns.gen++
	reps := map[uint64]int{}
	for _, pid := range pids {
		c, ok := ns.byPID[pid]
		if !ok {
			c.ns = e.nsOf(strconv.Itoa(pid))
		}
		c.seen = ns.gen
		ns.byPID[pid] = c
		if c.ns == 0 || c.ns == ns.own {
			continue
		}
		if _, ok := reps[c.ns]; !ok {
			reps[c.ns] = pid // pids ascend: the lowest
		}
	}
	for pid, c := range ns.byPID {
		if c.seen != ns.gen {
			delete(ns.byPID, pid)
		}
	}
	ns.repsMu.Lock()
	ns.reps = reps
	ns.repsMu.Unlock()

	bad := 0
	for id, pid := range reps {
		start := len(dst)
		for _, f := range procNetFiles {
			data, err := e.readFile(filepath.Join(e.proc, strconv.Itoa(pid), "net", f.name))
			if err != nil {
				continue // exited, or IPv6 off in that namespace
			}
			var n int
			dst, n = ParseProcNet(data, f.t, dst)
			bad += n
		}
		for i := start; i < len(dst); i++ {
			dst[i].NetNS, dst[i].Foreign = id, id != ns.host
		}
	}
	return dst, bad
}

// foreignAddrs lists the interface addresses of the other namespaces seen
// at the last rescan.
func (e *linuxEngine) foreignAddrs() ([]netip.Addr, error) {
	e.ns.repsMu.Lock()
	reps := make([]int, 0, len(e.ns.reps))
	for _, pid := range e.ns.reps {
		reps = append(reps, pid)
	}
	e.ns.repsMu.Unlock()
	var out []netip.Addr
	var errs []error
	for _, pid := range reps {
		addrs, err := readAddrs(filepath.Join(e.proc, strconv.Itoa(pid), "net"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		out = append(out, addrs...)
	}
	return out, errors.Join(errs...)
}

// readAddrs parses fib_trie and if_inet6 in dir (a proc/net directory).
func readAddrs(dir string) ([]netip.Addr, error) {
	var out []netip.Addr
	var errs []error
	for _, f := range []struct {
		name     string
		parse    func(r *os.File) ([]netip.Addr, error)
		optional bool
	}{
		{"fib_trie", func(r *os.File) ([]netip.Addr, error) { return ParseFibTrie(r) }, false},
		{"if_inet6", func(r *os.File) ([]netip.Addr, error) { return ParseIfInet6(r) }, true}, // absent: IPv6 off
	} {
		path := filepath.Join(dir, f.name)
		fh, err := os.Open(path)
		if err != nil {
			if !(f.optional && errors.Is(err, os.ErrNotExist)) {
				errs = append(errs, err)
			}
			continue
		}
		addrs, err := f.parse(fh)
		fh.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("parsing %s: %w", path, err))
		}
		out = append(out, addrs...)
	}
	return out, errors.Join(errs...)
}
