//go:build linux

package procs

// Resolve's owner search: which process holds one socket inode, without
// the rescan's lock and without reading the fd tables that the last walk
// already read. It is what keeps a cold lookup at a few milliseconds on a
// host with 200k sockets, where a rescan takes most of rescan_timeout and a
// search that waited for it (or re-read a 10k-descriptor fd table) would
// not.

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// ownerView is what the last whole-table walk knew of each process. It is
// immutable once published: the walk gives a process it re-reads new
// slices (visit), so the view's stay as they were.
type ownerView struct {
	procs map[int]procView
}

// procView is one process of an ownerView.
type procView struct {
	ino, start uint64
	nfds       int64    // -1 if unknown
	inodes     []uint64 // socket inodes; fdNums[j] held inodes[j]
	fdNums     []int32  // socket descriptors, ascending
	others     []int32 // other descriptors, ascending
	viaTask    bool
}

// publishView makes the walk's per-process knowledge available to
// Resolve; e.mu must be held.
func (e *linuxEngine) publishView() {
	v := &ownerView{procs: make(map[int]procView, len(e.fds))}
	for pid, p := range e.fds {
		v.procs[pid] = procView{ino: p.ino, start: p.start, nfds: p.nfds, inodes: p.inodes, fdNums: p.fdNums, others: p.others, viaTask: p.viaTask}
	}
	e.view.Store(v)
}

// ownerSearch is Resolve's own scratch space, apart from the rescan's, so
// that the two run at once. mu serialises searches.
type ownerSearch struct {
	mu    sync.Mutex
	dents []byte
	link  []byte
	name  []byte
	diag  []byte
	pids  []int

	// Counters, under mu: fd tables read whole, descriptors read, processes
	// skipped because their descriptor count had not changed.
	fullReads, readlinks, unchanged uint64
}

// findOwner returns the lowest PID, among the processes it reads, that
// holds socket inode, with the process's start key and the descriptor (fd,
// and thread task when not the main thread's table) it holds it at; pid 0
// when none does.
//
// The rule, against the last walk's ownerView, in ascending PID order: a
// process the view knows, with the same /proc/<pid> inode (the same
// instance) and the same descriptor count, is not read: it answers if the
// walk saw it hold the inode, and is skipped otherwise (a new socket adds
// a descriptor; a descriptor closed and re-opened at the same count is the
// walk's business, within its own bounds); one with another count has
// only the descriptors the view did not list read (its fd/ listing is
// cheap, a readlinkat of each of 10k descriptors is not); any other
// process has its whole fd table read. The first holder found answers.
// The answer is verified when given (docs/add_network_process.md), so a
// skipped process can cost a miss, never a wrong answer.
func (e *linuxEngine) findOwner(ctx context.Context, s *ownerSearch, inode uint64) (pid int, start uint64, fd, task int32, err error) {
	if s.dents == nil {
		s.dents = make([]byte, 32<<10)
		s.link = make([]byte, 256)
	}
	procfd, err := unix.Open(e.proc, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, 0, 0, fmt.Errorf("opening %s: %w", e.proc, err)
	}
	defer unix.Close(procfd)
	s.pids = s.pids[:0]
	if err := eachDirent(procfd, s.dents, func(name []byte, _ byte) {
		if v, ok := parseDecUint(name[:len(name)-1]); ok && v > 0 && v <= 1<<31 {
			s.pids = append(s.pids, int(v))
		}
	}); err != nil {
		return 0, 0, 0, 0, fmt.Errorf("listing %s: %w", e.proc, err)
	}
	slices.Sort(s.pids)
	var view map[int]procView
	if v := e.view.Load(); v != nil {
		view = v.procs
	}
	for _, p := range s.pids {
		if err := ctx.Err(); err != nil {
			return 0, 0, 0, 0, fmt.Errorf("searching the owner of socket %d: %w", inode, err)
		}
		s.name = append(strconv.AppendInt(s.name[:0], int64(p), 10), 0)
		pv, known := view[p]
		if known && e.fdCounts && !pv.viaTask && pv.nfds >= 0 {
			var st unix.Stat_t
			if unix.Fstatat(procfd, string(s.name[:len(s.name)-1]), &st, 0) == nil && st.Ino == pv.ino {
				nameFd := string(s.name[:len(s.name)-1]) + "/fd"
				if unix.Fstatat(procfd, nameFd, &st, 0) == nil && st.Size == pv.nfds {
					// Unchanged: it holds what the walk read, and nothing
					// new (a socket it held then is found here; one it
					// closed shows as a failed verification).
					s.unchanged++
					if j := slices.Index(pv.inodes, inode); j >= 0 {
						return p, pv.start, pv.fdNums[j], 0, nil
					}
					continue
				}
			} else {
				known = false // another instance, or gone
			}
		}
		got, fdn, ok := e.searchProcess(procfd, s, inode, pv, known && !pv.viaTask)
		if ok {
			return p, got, fdn, 0, nil
		}
	}
	return 0, 0, 0, 0, nil
}

// searchProcess reads the process s.name's fd table for inode: only the
// descriptors pv does not list when delta, all of them otherwise. It
// returns the process's start key and the descriptor.
func (e *linuxEngine) searchProcess(procfd int, s *ownerSearch, inode uint64, pv procView, delta bool) (start uint64, fd int32, found bool) {
	// The directory descriptor pins the instance: start and fd/ are read
	// through it, so both are of the same process even if the PID is reused.
	dirfd, err := openatZ(procfd, s.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return 0, 0, false
	}
	defer unix.Close(dirfd)
	if delta {
		var st unix.Stat_t
		if unix.Fstat(dirfd, &st) != nil || st.Ino != pv.ino {
			delta = false
		} else if j := slices.Index(pv.inodes, inode); j >= 0 {
			return pv.start, pv.fdNums[j], true // held when the walk read it
		}
	}
	fdfd, err := openatZ(dirfd, fdName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return 0, 0, false
	}
	defer unix.Close(fdfd)
	if !delta {
		s.fullReads++
	}
	// Both of pv's lists and procfs's listing are in ascending descriptor
	// order: one merge tells which descriptors are new.
	i, j := 0, 0
	match := int32(-1)
	_ = eachDirent(fdfd, s.dents, func(name []byte, typ byte) {
		if match >= 0 || name[0] == '.' || (typ != unix.DT_LNK && typ != unix.DT_UNKNOWN) {
			return
		}
		v, ok := parseDecUint(name[:len(name)-1])
		if !ok || v >= 1<<31 {
			return
		}
		n := int32(v)
		if delta {
			for i < len(pv.fdNums) && pv.fdNums[i] < n {
				i++
			}
			for j < len(pv.others) && pv.others[j] < n {
				j++
			}
			if (i < len(pv.fdNums) && pv.fdNums[i] == n) || (j < len(pv.others) && pv.others[j] == n) {
				return
			}
		}
		s.readlinks++
		k, err := readlinkatZ(fdfd, name, s.link)
		if err != nil || k <= 0 || k >= len(s.link) {
			return
		}
		if got, ok := socketLinkInode(s.link[:k]); ok && got == inode {
			match = n
		}
	})
	if match < 0 {
		return 0, 0, false
	}
	if delta {
		return pv.start, match, true
	}
	st, ok := statStartAt(dirfd)
	if !ok {
		return 0, 0, false
	}
	return st, match, true
}

// socketLinkInode parses a descriptor's link text "socket:[<inode>]".
func socketLinkInode(link []byte) (uint64, bool) {
	const prefix = "socket:["
	n := len(link)
	if n < len(prefix)+2 || string(link[:len(prefix)]) != prefix || link[n-1] != ']' {
		return 0, false
	}
	return parseDecUint(link[len(prefix) : n-1])
}
