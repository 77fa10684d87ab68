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
	others     []int32  // other descriptors, ascending
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
	mu     sync.Mutex
	dents  []byte
	link   []byte
	name   []byte
	fdname []byte
	diag   []byte
	pids   []int
	// unknown: processes the view does not know; listLater: changed
	// processes whose probes missed (findOwner's order).
	unknown, listLater []int

	// Counters, under mu: fd tables read whole, descriptors read, processes
	// skipped because their descriptor count had not changed.
	fullReads, readlinks, unchanged uint64
}

// sockHolder is one process found holding a socket: its PID, start key, and
// the descriptor (of thread task, when not 0) it holds it at.
type sockHolder struct {
	pid   int
	start uint64
	fd    int32
	task  int32
}

// findOwner returns a process that holds socket inode, and shared when it
// found another process holding it too; the zero sockHolder when none is found.
// A hint (not 0) is searched first, its whole fd table if need be.
//
// The rule, against the last walk's ownerView. First the processes the
// view knows, in ascending PID order: one with the same /proc/<pid> inode
// (the same instance) and the same descriptor count is not read (it holds
// the inode if the walk saw it hold it: a socket it has closed since fails
// the answer's verification); one whose count changed has the descriptor
// the walk saw hold the inode re-read, or else the descriptor numbers
// where new descriptors land probed (the kernel gives the lowest free
// number: the first numbers the view did not list, as many as the count
// grew by and a few more). Then the processes the view does not know
// (started since the walk: a child forked after accept is one) have their
// whole fd tables read. Last, the changed processes whose probes missed
// (they closed descriptors too) have the descriptors the view did not list
// read from a listing of fd/. The search does not stop at the first
// sockHolder: a second one makes the socket shared, and a shared socket
// answers nothing (docs/add_network_process.md, "When an answer is
// given"), so it stops there instead. A search cut short by ctx after a
// sockHolder was found returns the error: uniqueness was not shown. What is
// missed: a new socket at a descriptor number that the walk saw hold
// another file (the process closed that one since and the kernel gave its
// number to the new socket, as a process that churns connections does all
// the time), in a process whose descriptor count came back to the walk's;
// the miss then takes the rescan path, whose walk re-reads the process.
//
// Listing a procfs fd/ directory costs ~4 µs per descriptor (procfs builds
// a dentry for each: 40 ms for a proxy's 10k connections), stats and
// probes a few µs each, so a new connection of a busy process resolves in
// a few milliseconds.
func (e *linuxEngine) findOwner(ctx context.Context, s *ownerSearch, inode uint64, hint int) (h sockHolder, shared bool, err error) {
	if s.dents == nil {
		s.dents = make([]byte, 32<<10)
		s.link = make([]byte, 256)
	}
	procfd, err := unix.Open(e.proc, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return h, false, fmt.Errorf("opening %s: %w", e.proc, err)
	}
	defer unix.Close(procfd)
	s.pids = s.pids[:0]
	if err := eachDirent(procfd, s.dents, func(name []byte, _ byte) {
		if v, ok := parseDecUint(name[:len(name)-1]); ok && v > 0 && v <= 1<<31 {
			s.pids = append(s.pids, int(v))
		}
	}); err != nil {
		return h, false, fmt.Errorf("listing %s: %w", e.proc, err)
	}
	slices.Sort(s.pids)
	var view map[int]procView
	if v := e.view.Load(); v != nil {
		view = v.procs
	}
	cut := func() error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("searching the holders of socket %d: %w", inode, err)
		}
		return nil
	}
	// found records a sockHolder; it reports true once a second process is
	// found (the socket is shared: the search is over).
	found := func(pid int, start uint64, fd int32) bool {
		switch {
		case h.pid == 0:
			h = sockHolder{pid: pid, start: start, fd: fd}
		case h.pid != pid:
			return true
		}
		return false
	}
	hintDone := 0
	if hint > 0 && slices.Contains(s.pids, hint) {
		// The likely owner (ResolveHinted): its whole table if need be.
		// (One the walk saw hold it is found by the loop below.)
		s.name = append(strconv.AppendInt(s.name[:0], int64(hint), 10), 0)
		if pv, known := view[hint]; !known || !slices.Contains(pv.inodes, inode) {
			hintDone = hint
			if n, res := e.searchProcess(ctx, procfd, s, inode, procView{}, searchAll, -1); res == searchFound {
				if st, ok := e.startOf(procfd, s); ok {
					found(hint, st, n)
				}
			}
		}
	}
	s.unknown, s.listLater = s.unknown[:0], s.listLater[:0]
	for _, p := range s.pids {
		if err := cut(); err != nil {
			return sockHolder{}, false, err
		}
		if p == hintDone {
			continue
		}
		pv, known := view[p]
		if !known || !e.fdCounts || pv.viaTask || pv.nfds < 0 {
			s.unknown = append(s.unknown, p)
			continue
		}
		s.name = append(strconv.AppendInt(s.name[:0], int64(p), 10), 0)
		var st unix.Stat_t
		if unix.Fstatat(procfd, string(s.name[:len(s.name)-1]), &st, 0) != nil || st.Ino != pv.ino {
			s.unknown = append(s.unknown, p) // another instance (or gone)
			continue
		}
		size := int64(-1)
		if unix.Fstatat(procfd, string(s.name[:len(s.name)-1])+"/fd", &st, 0) == nil {
			size = st.Size
		}
		if j := slices.Index(pv.inodes, inode); j >= 0 {
			// Held when the walk read it; re-read that descriptor if the
			// process changed since, so that one that closed it does not
			// make a socket look shared.
			if size == pv.nfds || e.stillHolds(procfd, s, inode, pv.fdNums[j]) {
				if found(p, pv.start, pv.fdNums[j]) {
					return h, true, nil
				}
				continue
			}
		}
		if size == pv.nfds {
			s.unchanged++
			continue
		}
		switch n, res := e.searchProcess(ctx, procfd, s, inode, pv, searchProbe, size); res {
		case searchFound:
			if found(p, pv.start, n) {
				return h, true, nil
			}
		case searchMissed:
			s.listLater = append(s.listLater, p)
		}
	}
	for _, p := range s.unknown {
		if err := cut(); err != nil {
			return sockHolder{}, false, err
		}
		s.name = append(strconv.AppendInt(s.name[:0], int64(p), 10), 0)
		if n, res := e.searchProcess(ctx, procfd, s, inode, procView{}, searchAll, -1); res == searchFound {
			if st, ok := e.startOf(procfd, s); ok && found(p, st, n) {
				return h, true, nil
			}
		}
	}
	for _, p := range s.listLater {
		if err := cut(); err != nil {
			return sockHolder{}, false, err
		}
		s.name = append(strconv.AppendInt(s.name[:0], int64(p), 10), 0)
		pv := view[p]
		if n, res := e.searchProcess(ctx, procfd, s, inode, pv, searchList, -1); res == searchFound && found(p, pv.start, n) {
			return h, true, nil
		}
	}
	if err := cut(); err != nil {
		return sockHolder{}, false, err // the last table was cut short
	}
	return h, false, nil
}

// stillHolds re-reads descriptor fd of process s.name and reports whether
// it is still socket inode.
func (e *linuxEngine) stillHolds(procfd int, s *ownerSearch, inode uint64, fd int32) bool {
	dirfd, err := openatZ(procfd, s.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return false
	}
	defer unix.Close(dirfd)
	fdfd, err := openatZ(dirfd, fdName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return false
	}
	defer unix.Close(fdfd)
	s.fdname = append(strconv.AppendInt(s.fdname[:0], int64(fd), 10), 0)
	return s.holds(fdfd, s.fdname, inode)
}

// How searchProcess reads a process's fd table.
type searchMode uint8

const (
	searchProbe searchMode = iota // probe where new descriptors land (probe)
	searchList                    // list fd/, read the descriptors pv does not list
	searchAll                     // list fd/, read every descriptor
)

// searchResult is what searchProcess found.
type searchResult uint8

const (
	searchFound  searchResult = iota
	searchMissed              // read, not found
	searchGone                // the process (that instance) could not be read
	searchCut                 // the deadline came before the whole table was read
)

// searchProcess reads the fd table of process s.name for inode as mode
// says, through a directory descriptor of /proc/<pid> that pins the
// instance (checked against pv's, except for searchAll); size is the
// process's descriptor count now.
func (e *linuxEngine) searchProcess(ctx context.Context, procfd int, s *ownerSearch, inode uint64, pv procView, mode searchMode, size int64) (int32, searchResult) {
	dirfd, err := openatZ(procfd, s.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return 0, searchGone
	}
	defer unix.Close(dirfd)
	if mode != searchAll {
		var st unix.Stat_t
		if unix.Fstat(dirfd, &st) != nil || st.Ino != pv.ino {
			return 0, searchGone
		}
	}
	fdfd, err := openatZ(dirfd, fdName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return 0, searchGone
	}
	defer unix.Close(fdfd)
	if mode == searchProbe {
		if n, ok := s.probe(fdfd, inode, pv, size); ok {
			return n, searchFound
		}
		return 0, searchMissed
	}
	if mode == searchAll {
		s.fullReads++
	}
	// Both of pv's lists and procfs's listing are in ascending descriptor
	// order: one merge tells which descriptors are new.
	i, j := 0, 0
	match := int32(-1)
	seen, cut := 0, false
	_ = eachDirentWhile(fdfd, s.dents, func(name []byte, typ byte) bool {
		if seen++; seen%64 == 0 && ctx.Err() != nil {
			// A table of tens of thousands of descriptors takes longer
			// than a lookup may wait: stop at the deadline.
			cut = true
			return false
		}
		if name[0] == '.' || (typ != unix.DT_LNK && typ != unix.DT_UNKNOWN) {
			return true
		}
		v, ok := parseDecUint(name[:len(name)-1])
		if !ok || v >= 1<<31 {
			return true
		}
		n := int32(v)
		if mode == searchList && pv.lists(n, &i, &j) {
			return true
		}
		if s.holds(fdfd, name, inode) {
			match = n
			return false
		}
		return true
	})
	switch {
	case match >= 0:
	case cut:
		return 0, searchCut
	default:
		return 0, searchMissed
	}
	return match, searchFound
}

// lists reports whether pv lists descriptor n; i and j are merge cursors
// into fdNums and others for ascending n.
func (pv *procView) lists(n int32, i, j *int) bool {
	for *i < len(pv.fdNums) && pv.fdNums[*i] < n {
		*i++
	}
	for *j < len(pv.others) && pv.others[*j] < n {
		*j++
	}
	return (*i < len(pv.fdNums) && pv.fdNums[*i] == n) || (*j < len(pv.others) && pv.others[*j] == n)
}

// holds reads descriptor nameZ (NUL-terminated) of fdfd and reports
// whether it is socket inode.
func (s *ownerSearch) holds(fdfd int, nameZ []byte, inode uint64) bool {
	s.readlinks++
	k, err := readlinkatZ(fdfd, nameZ, s.link)
	if err != nil || k <= 0 || k >= len(s.link) {
		return false
	}
	got, ok := socketLinkInode(s.link[:k])
	return ok && got == inode
}

// startOf reads the start key of process s.name, for a process the view
// does not know.
func (e *linuxEngine) startOf(procfd int, s *ownerSearch) (uint64, bool) {
	dirfd, err := openatZ(procfd, s.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return 0, false
	}
	defer unix.Close(dirfd)
	return statStartAt(dirfd)
}

// maxProbes bounds the probes of one process.
const maxProbes = 64

// probe readlinks the first descriptor numbers pv does not list, in
// ascending order, as many as the count grew by plus 8 (at most
// maxProbes): where the kernel put the process's new descriptors if it
// closed none since the walk.
func (s *ownerSearch) probe(fdfd int, inode uint64, pv procView, size int64) (int32, bool) {
	want := min(max(size-pv.nfds, 0)+8, maxProbes)
	i, j := 0, 0
	for n := int32(0); want > 0; n++ {
		if pv.lists(n, &i, &j) {
			continue
		}
		want--
		s.fdname = append(strconv.AppendInt(s.fdname[:0], int64(n), 10), 0)
		if s.holds(fdfd, s.fdname, inode) {
			return n, true
		}
	}
	return 0, false
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
