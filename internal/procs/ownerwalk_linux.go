//go:build linux

package procs

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// procFds is what a process held the last time its fd table was read.
type procFds struct {
	ino    uint64   // inode of /proc/<pid>: the process instance, to procfs
	start  uint64   // /proc/<pid>/stat starttime: the process instance
	nfds   int64    // size of /proc/<pid>/fd when read; -1 if unknown
	inodes []uint64 // socket inodes among its fds
	fds    []int32  // the descriptor of each of inodes, for OwnerVerifier
	seen   uint64   // walk generation in which the PID was last listed
	// trusted: this walk reused inodes instead of reading fd/.
	trusted bool
}

// fullWalkEvery bounds how long an incremental walk may trust fd tables
// whose size did not change; see resolveOwners.
const fullWalkEvery = 30 * time.Second

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
		for j, inode := range p.inodes {
			i, ok := e.byInode[inode]
			if !ok || socks[i].PID != 0 {
				continue
			}
			socks[i].PID = pid
			socks[i].StartKey = p.start
			socks[i].FD = p.fds[j]
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

// visit refreshes what e.fds knows of pid: it reuses the previous read when
// the walk is incremental and the process's instance and descriptor count
// did not change, and re-reads its fd table otherwise. Processes that exit or whose stat or fds cannot be
// read are dropped: their sockets stay unowned rather than guessed.
func (e *linuxEngine) visit(procfd, pid int, full bool) {
	p := e.fds[pid]
	drop := func() { delete(e.fds, pid) }
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
			return
		}
	}
	// Opening the directory pins this process instance: if the PID exits
	// and is reused, reads through dirfd fail instead of describing the
	// newcomer, so stat and fd always belong to the same process.
	dirfd, err := openatZ(procfd, e.nameBuf, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		drop()
		return
	}
	defer unix.Close(dirfd)
	var dst unix.Stat_t
	if err := unix.Fstat(dirfd, &dst); err != nil {
		drop()
		return
	}
	if dst.Ino != ino {
		// Not the instance the stats above saw (or no stats): never trust
		// this read.
		size = -1
	}
	start, ok := e.startKeyAt(dirfd)
	if !ok {
		drop()
		return
	}
	if p == nil {
		p = &procFds{}
	}
	inodes, fds, ok := e.readFds(dirfd, p.inodes[:0], p.fds[:0])
	if !ok {
		drop()
		return
	}
	p.ino, p.start, p.nfds, p.inodes, p.fds, p.seen, p.trusted = dst.Ino, start, size, inodes, fds, e.walkGen, false
	e.fds[pid] = p
}

var (
	fdName   = []byte("fd\x00")
	statName = []byte("stat\x00")
)

// readFds appends the socket inodes among dirfd's fd/ links to dst, and
// their descriptor numbers to fds.
func (e *linuxEngine) readFds(dirfd int, dst []uint64, fds []int32) ([]uint64, []int32, bool) {
	fdfd, err := openatZ(dirfd, fdName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return dst, fds, false
	}
	defer unix.Close(fdfd)
	e.stats.reread++
	err = eachDirent(fdfd, e.dents, func(name []byte, typ byte) {
		if name[0] == '.' || (typ != unix.DT_LNK && typ != unix.DT_UNKNOWN) {
			return
		}
		e.stats.readlinks++
		if inode, ok := e.socketInode(fdfd, name); ok {
			fd, _ := parseDecUint(name[:len(name)-1])
			dst = append(dst, inode)
			fds = append(fds, int32(fd))
		}
	})
	return dst, fds, err == nil
}

// listPIDs lists the numeric entries of procfd in ascending order.
func (e *linuxEngine) listPIDs(procfd int) ([]int, error) {
	e.pids = e.pids[:0]
	err := eachDirent(procfd, e.dents, func(name []byte, _ byte) {
		if v, ok := parseDecUint(bytes.TrimSuffix(name, []byte{0})); ok && v > 0 && v <= 1<<31 {
			e.pids = append(e.pids, int(v))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", e.proc, err)
	}
	slices.Sort(e.pids)
	return e.pids, nil
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
	start, err := ParseStatStart(data)
	return start, err == nil
}
