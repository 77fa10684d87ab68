//go:build linux

package procs

import (
	"context"
	"fmt"
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
	fdNums []int32  // fdNums[j] is the descriptor that held inodes[j]
	others []int32  // its other descriptors (not sockets), ascending
	seen   uint64   // walk generation in which the PID was last listed
	// readGen and readAt: the walk generation and time of the last read of
	// its fd table.
	readGen uint64
	readAt  time.Time
	// checkedAt: the last read or verification (see verifyEvery); epoch:
	// the change clock's reading for the PID then.
	checkedAt time.Time
	epoch     uint32
	// trusted: this walk reused inodes instead of reading fd/.
	trusted bool
	// viaTask: the main thread has exited, so fd/ is empty and the table
	// was read through a live thread's task/<tid>/fd; such a process is
	// re-read on every walk (the leader's fd count says nothing).
	viaTask bool
	// task: the thread whose task/<tid>/fd listed the descriptors when
	// viaTask (0 otherwise), so that an answer is verified through it.
	task int32
}

// fullWalkEvery bounds how long an incremental walk may trust a process's
// fd table without reading it again; see resolveOwners.
const fullWalkEvery = 30 * time.Second

// verifyEvery bounds how long a rescan may trust a process's socket
// descriptors without re-checking them (one readlinkat each, ~5-10 µs on
// /proc/<pid>/fd: re-checking 12k sockets on every rescan cost +45 ms per
// rescan, docs/benchmarks.md). Answers are verified when given
// (docs/add_network_process.md, "When an answer is given"), so a process
// that gave its socket away is never named for it; this bound is how long
// the snapshot may offer the old owner, and with the tracker's change
// clock an unchanged process epoch proves the check unnecessary at once.
// Single-socket walks (Resolve) always check.
const verifyEvery = 2 * time.Second

// resolveOwners sets each socket's PID to the lowest PID holding its inode,
// and Shared when more than one process holds it.
//
// The rule: every rescan lists /proc and, for each process, stats
// /proc/<pid> (procfs gives each process instance its own inode number, so a
// reused PID shows a new one) and /proc/<pid>/fd (whose size procfs reports
// as the number of open descriptors). A process's socket inodes are re-read
// from fd/ (with its stat's start time, through one pinned directory fd)
// when it is new, its /proc inode changed, its descriptor count changed or
// is unknown, its last read is fullWalkEvery old, a full walk is pending
// that it has not been read in, or its main thread has exited; otherwise the
// inodes read last time are reused ("trusted"), after one readlinkat per
// descriptor that held a socket of the current table confirms it still
// holds the same socket (a process that closed a socket and opened another
// descriptor keeps its count but fails this check and is re-read). Owners
// are then assigned in ascending PID order over all processes: PID is the
// lowest holder among what was read or trusted, and every other holder
// marks the socket Shared.
//
// A walk is full (nothing trusted) on the first rescan, when forced (a zero
// lastFull), when proc is not a procfs (a fake tree or a kernel before 6.2
// gives no descriptor count), and as the fallback: when an incremental walk
// leaves an inode in the table without an owner and that inode was not
// already ownerless after the last full walk (so a socket no process holds
// does not force a full walk on every rescan), the trusted processes are
// re-read and owners assigned again from scratch.
//
// Walks are resumable: when the rescan budget (ctx) runs out, what was read
// stays, and the next attempt trusts those processes without the readlinkat
// check (they were read during this unfinished walk) and reads on where the
// last attempt stopped, so a walk longer than one budget still completes.
//
// What trusting can still miss, for at most fullWalkEvery: a process that
// closed a non-socket descriptor and opened (or inherited) a connected
// socket that another process also holds, so that the socket looks held
// by one process. (A new socket with no holder found, and a new listener,
// trigger the fallback.)
//
// wholeTable is false when socks is not the whole socket table (Resolve):
// the walk then neither records ownerless inodes nor completes a full walk.
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
	e.walkGen++
	e.walkWhole = wholeTable
	if e.fullFrom == 0 && (e.lastFull.IsZero() || !e.fdCounts) {
		e.fullFrom = e.walkGen
	}
	if e.chainFrom == 0 {
		e.chainFrom = e.walkGen
	}
	e.recheckLeft = maxRechecksPerWalk
	for n, pid := range pids {
		if err := ctx.Err(); err != nil {
			e.stats.cutShort++
			return fmt.Errorf("rescan budget exhausted after reading %d of %d processes (%d sockets; the next rescan goes on from there): %w", n, len(pids), want, err)
		}
		e.visit(procfd, pid, now, false)
	}
	for pid, p := range e.fds {
		if p.seen != e.walkGen {
			delete(e.fds, pid)
		}
	}
	e.chainFrom = 0
	full := e.fullFrom != 0
	unresolved := 0
	if want > 0 {
		unresolved = e.assign(pids, socks)
	}
	if !full && (unresolved > 0 && e.unexplained(socks) || wholeTable && e.newListener(socks)) {
		// Fallback: something new has no owner among the processes read,
		// or a listener is new (a pre-fork master or a socket activator
		// may hold it beside the process found: a trusted process keeps
		// its count when it closes one descriptor and opens another); one
		// of the trusted ones may have opened it.
		e.stats.fallbacks++
		e.fallbackInodes = e.fallbackInodes[:0]
		for i := range socks {
			if socks[i].Inode != 0 && socks[i].PID == 0 {
				if _, ok := e.orphans[socks[i].Inode]; !ok && len(e.fallbackInodes) < 16 {
					e.fallbackInodes = append(e.fallbackInodes, socks[i].Inode)
				}
			}
		}
		for _, pid := range pids {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("rescan budget exhausted during a full walk of %d processes (%d sockets): %w", len(pids), want, err)
			}
			if p := e.fds[pid]; p != nil && p.seen == e.walkGen && p.trusted {
				e.visit(procfd, pid, now, true)
			}
		}
		for i := range socks {
			socks[i].PID, socks[i].StartKey, socks[i].Shared = 0, 0, false
		}
		unresolved = e.assign(pids, socks)
		full = true
	}
	if full && wholeTable {
		e.stats.fullWalks++
		e.lastFull = now
		e.fullFrom = 0
		clear(e.orphans)
		if unresolved > 0 {
			for i := range socks {
				if socks[i].Inode != 0 && socks[i].PID == 0 {
					e.orphans[socks[i].Inode] = struct{}{}
				}
			}
		}
	}
	if wholeTable {
		clear(e.listeners)
		for i := range socks {
			if socks[i].Listen && socks[i].Inode != 0 {
				e.listeners[socks[i].Inode] = struct{}{}
			}
		}
		e.publishView()
	}
	return nil
}

// newListener reports whether a listening socket with an inode was not in
// the table at the last whole-table walk.
func (e *linuxEngine) newListener(socks []Socket) bool {
	for i := range socks {
		if socks[i].Listen && socks[i].Inode != 0 {
			if _, ok := e.listeners[socks[i].Inode]; !ok {
				return true
			}
		}
	}
	return false
}

// assign gives each socket the lowest PID whose fd table lists its inode,
// marks it Shared when another process's table lists it too, and returns
// how many sockets with an inode have none. Every process is looked at:
// a socket's other holders are what tell a pre-forked worker's listener
// from its master's.
func (e *linuxEngine) assign(pids []int, socks []Socket) int {
	left := len(e.byInode)
	for _, pid := range pids {
		p := e.fds[pid]
		if p == nil || p.seen != e.walkGen {
			continue
		}
		for j, inode := range p.inodes {
			i, ok := e.byInode[inode]
			if !ok {
				continue
			}
			if socks[i].PID != 0 {
				if socks[i].PID != pid {
					socks[i].Shared = true
				}
				continue
			}
			socks[i].PID = pid
			socks[i].StartKey = p.start
			socks[i].FD, socks[i].Task = p.fdNums[j], p.task
			left--
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
// the rules of resolveOwners allow (force: never), and re-reads its fd table
// otherwise. Processes that exit or whose stat or fds cannot be read are
// dropped: their sockets stay unowned rather than guessed.
func (e *linuxEngine) visit(procfd, pid int, now time.Time, force bool) {
	p := e.fds[pid]
	drop := func() { delete(e.fds, pid) }
	e.nameBuf = append(strconv.AppendInt(e.nameBuf[:0], int64(pid), 10), 0)
	// Two stats through procfd: the /proc/<pid> inode (procfs gives a new
	// process instance a new one) and the number of descriptors. They are
	// taken the same way whether or not the read is then reused, so the
	// count never includes a directory this walk opened (which made our own
	// process look changed on every walk).
	// The epoch is read before anything is checked, so a change during the
	// check shows as a different epoch next time.
	ep := e.procEpoch(pid)
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
		if p != nil && !force && !p.viaTask && size >= 0 && ino == p.ino && size == p.nfds &&
			p.readGen >= e.fullFrom && now.Sub(p.readAt) < fullWalkEvery {
			ok := true
			switch {
			case p.readGen >= e.chainFrom: // read during this unfinished walk
			case e.checkedRecently(pid, p, now):
			case e.recheckLeft <= 0:
				// This walk has spent its re-check budget: the check waits
				// for a later walk (answers are verified when given).
				e.stats.recheckDeferred++
			default:
				if ok = e.verify(procfd, pid, p); ok {
					p.checkedAt, p.epoch = now, ep
				}
			}
			if ok {
				p.seen, p.trusted = e.walkGen, true
				e.stats.trusted++
				return
			}
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
	start, zombie, ok := e.startKeyAt(dirfd)
	if !ok {
		drop()
		return
	}
	if p == nil {
		p = &procFds{}
	}
	// Fresh slices, not p's: the owner view of the last walk (published
	// for Resolve, which reads it without e.mu) may still hold p's.
	inodes, fdNums, others, ok := e.readFds(dirfd, fdName, make([]uint64, 0, len(p.inodes)), make([]int32, 0, len(p.fdNums)), make([]int32, 0, len(p.others)))
	if !ok {
		drop()
		return
	}
	viaTask, tid := false, int32(0)
	if zombie && len(inodes) == 0 {
		// The main thread has exited (pthread_exit) while other threads
		// live: fd/ reads empty, a live thread's task/<tid>/fd does not.
		inodes, fdNums, tid, viaTask = e.readTaskFds(dirfd, pid, inodes, fdNums)
		others = nil
	}
	p.ino, p.start, p.nfds, p.inodes, p.fdNums, p.others, p.seen, p.trusted = dst.Ino, start, size, inodes, fdNums, others, e.walkGen, false
	p.readGen, p.readAt, p.viaTask, p.task = e.walkGen, now, viaTask, tid
	p.checkedAt, p.epoch = now, ep
	e.fds[pid] = p
}
