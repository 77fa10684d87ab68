//go:build linux

package procs

// Reading one process's fd table (or a live thread's, when its main thread
// exited) for the socket inodes it holds, and the PIDs of /proc.

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// readTaskFds reads the fd table of pid through its first live thread other
// than the (exited) main thread, and returns that thread's ID (0 when none
// has one). viaTask is false when pid has no task directory to read.
func (e *linuxEngine) readTaskFds(dirfd, pid int, inodes []uint64, fdNums []int32) (_ []uint64, _ []int32, tid int32, viaTask bool) {
	var others []int32 // a thread's table is re-read on every walk: no delta reads
	taskfd, err := openatZ(dirfd, taskName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return inodes, fdNums, 0, false
	}
	defer unix.Close(taskfd)
	var tids []int
	_ = eachDirent(taskfd, e.dents, func(name []byte, _ byte) {
		if v, ok := parseDecUint(bytes.TrimSuffix(name, []byte{0})); ok && v > 0 && int(v) != pid && len(tids) < 64 {
			tids = append(tids, int(v))
		}
	})
	for _, tid := range tids {
		e.pathBuf = append(append(strconv.AppendInt(e.pathBuf[:0], int64(tid), 10), "/fd"...), 0)
		got, nums, _, ok := e.readFds(taskfd, e.pathBuf, inodes[:0], fdNums[:0], others[:0])
		if ok && len(nums) > 0 {
			return got, nums, int32(tid), true
		}
		inodes, fdNums = got[:0], nums[:0]
	}
	return inodes, fdNums, 0, true
}

var (
	fdName   = []byte("fd\x00")
	statName = []byte("stat\x00")
	taskName = []byte("task\x00")
)

// readFds appends the socket inodes among the links of dirfd's directory
// fdDir (NUL-terminated) to inodes, their descriptor numbers to fdNums, and
// the numbers of the other descriptors to others (so that Resolve's owner
// search can read only the descriptors a process opened since: see
// findOwner).
func (e *linuxEngine) readFds(dirfd int, fdDir []byte, inodes []uint64, fdNums, others []int32) ([]uint64, []int32, []int32, bool) {
	fdfd, err := openatZ(dirfd, fdDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return inodes, fdNums, others, false
	}
	defer unix.Close(fdfd)
	e.stats.reread++
	err = eachDirent(fdfd, e.dents, func(name []byte, typ byte) {
		if name[0] == '.' || (typ != unix.DT_LNK && typ != unix.DT_UNKNOWN) {
			return
		}
		e.stats.readlinks++
		n, isNum := parseDecUint(name[:len(name)-1])
		if inode, ok := e.socketInode(fdfd, name); ok {
			if isNum && n < 1<<31 {
				inodes = append(inodes, inode)
				fdNums = append(fdNums, int32(n))
			}
		} else if isNum && n < 1<<31 {
			others = append(others, int32(n))
		}
	})
	return inodes, fdNums, others, err == nil
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

// startKeyAt reads dirfd's stat: the start time and whether the process
// (its main thread) is a zombie.
func (e *linuxEngine) startKeyAt(dirfd int) (start uint64, zombie, ok bool) {
	fd, err := openatZ(dirfd, statName, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return 0, false, false
	}
	defer unix.Close(fd)
	data, err := e.readAll(fdReader(fd))
	if err != nil {
		return 0, false, false
	}
	start, err = ParseStatStart(data)
	if err != nil {
		return 0, false, false
	}
	if i := bytes.LastIndexByte(data, ')'); i >= 0 && i+2 < len(data) {
		zombie = data[i+2] == 'Z'
	}
	return start, zombie, true
}
